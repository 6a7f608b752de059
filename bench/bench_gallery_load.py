"""Gallery store figures: template add throughput, bulk import, and start-up decrypt+load time.

Run: ``.venv/bin/python bench/bench_gallery_load.py [--templates 100000] [--adds 500]``

What it measures, on a real SQLite file and a real key in a temporary directory:
- ``add``: ``add_template`` one at a time (one transaction and one fsync each, as enrollment
  does), persons created with their consent first;
- ``import``: the same number of templates arriving as one fleet-bundle snapshot (one
  transaction), which is how a large gallery reaches a device;
- ``open``: opening the store (``quick_check``, key check);
- ``load``: ``load_templates`` (decrypt all into one matrix) and ``iter_templates``, the two
  ways the matcher can start. The target is 100k templates in under 3 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.gallery import ConsentInput, GalleryStore
from edge.gallery.ids import CONSENT, PERSON, TEMPLATE, new_id
from edge.gallery.records import Consent, SnapshotPerson, SnapshotTemplate
from edge.gallery.times import to_iso, utc_now

MODEL = "sface-2021dec"


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 128)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def bench_add(root: Path, count: int, rng: np.random.Generator) -> dict[str, float]:
    with GalleryStore(root / "add", root / "add.key", max_templates=5) as store:
        pids = [store.add_person(None, ConsentInput("bench", "benchmark")) for _ in range(count)]
        vectors = _unit(rng, count)
        start = time.perf_counter()
        for pid, vec in zip(pids, vectors, strict=True):
            store.add_template(pid, MODEL, "1", vec, {"score": 0.9}, "bench")
        elapsed = time.perf_counter() - start
    return {"adds": count, "seconds": round(elapsed, 3), "per_s": round(count / elapsed, 1)}


def _snapshot(n_templates: int, per_person: int, rng: np.random.Generator
              ) -> list[SnapshotPerson]:
    now = to_iso(utc_now())
    vectors = _unit(rng, n_templates)
    persons = []
    for start in range(0, n_templates, per_person):
        pid = new_id(PERSON)
        consent = Consent(new_id(CONSENT), "bench", "benchmark", now, None, None, None)
        templates = tuple(SnapshotTemplate(new_id(TEMPLATE), MODEL, "1", vectors[i],
                                           {"score": 0.9}, "bench", now)
                          for i in range(start, min(start + per_person, n_templates)))
        persons.append(SnapshotPerson(pid, None, now, now, (consent,), templates))
    return persons


def bench_load(root: Path, n_templates: int, rng: np.random.Generator) -> dict[str, float]:
    data, key = root / "load", root / "load.key"
    persons = _snapshot(n_templates, 5, rng)
    with GalleryStore(data, key, max_templates=5) as store:
        start = time.perf_counter()
        store.import_snapshot(persons, bundle_id=new_id("b"), created_at=to_iso(utc_now()),
                              signer="bench")
        imported = time.perf_counter() - start
    start = time.perf_counter()
    store = GalleryStore(data, key, max_templates=5)
    opened = time.perf_counter() - start
    try:
        start = time.perf_counter()
        matrix = store.load_templates(MODEL)
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        count = sum(1 for _ in store.iter_templates(MODEL))
        iterated = time.perf_counter() - start
    finally:
        store.close()
    assert matrix.vectors.shape == (n_templates, 128) and count == n_templates
    return {"templates": n_templates, "import_s": round(imported, 3),
            "open_s": round(opened, 3), "load_templates_s": round(loaded, 3),
            "iter_templates_s": round(iterated, 3),
            "db_mb": round((data / "gallery.db").stat().st_size / 2 ** 20, 1)}


def bench_enroll(root: Path, rounds: int) -> dict[str, float]:
    """Photos to stored templates through the real service: decode, detect, quality gates,
    duplicate check, embed, encrypt, commit (one transaction per call)."""
    from edge.config import load_config
    from edge.engine import FaceEngine
    from edge.recognition import Recognizer

    fixtures = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "faces"
    photos = [str(fixtures / n) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    cfg_path = root / "enroll.toml"
    cfg_path.write_text(f'[storage]\ndata_dir = "{root / "enroll"}"\n'
                        f'key_file = "{root / "enroll-key" / "k"}"\n')
    cfg = load_config(cfg_path, env={})
    rec = Recognizer(cfg, GalleryStore.from_config(cfg), FaceEngine(cfg))
    pid = rec.store.add_person("bench", ConsentInput("bench", "benchmark", None, None),
                               actor="bench")
    rec.enroll(pid, photos[:1])  # warm-up
    start = time.perf_counter()
    for _ in range(rounds):
        rec.enroll(pid, photos)
    elapsed = time.perf_counter() - start
    return {"photos": rounds * len(photos), "seconds": round(elapsed, 3),
            "photos_per_s": round(rounds * len(photos) / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--templates", type=int, default=100_000)
    parser.add_argument("--adds", type=int, default=500)
    parser.add_argument("--enroll-rounds", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-gallery-") as tmp:
        root = Path(tmp)
        print(json.dumps({"add": bench_add(root, args.adds, rng),
                          "load": bench_load(root, args.templates, rng),
                          "enroll": bench_enroll(root, args.enroll_rounds)}, indent=2))


if __name__ == "__main__":
    main()
