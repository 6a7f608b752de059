"""Where the matcher's threshold and margin defaults come from: open-set 1:N on real photos.

Identities are the connected components of the "Yes" pairs in deepface/master.csv. For every
identity left out in turn (the stranger), the others are enrolled with one photo each and all
remaining photos are probed: a genuine probe should match its own person, a stranger's probe
must match nobody. Reported per (threshold, margin): true-match rate, wrong-person rate and
stranger false-accept rate. Run: .venv/bin/python bench/bench_threshold.py [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.config import load_config  # noqa: E402
from edge.engine import FaceEngine  # noqa: E402


def identities(csv_path: Path) -> dict[str, int]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    with csv_path.open() as fh:
        for row in csv.DictReader(fh):
            a, b = find(row["file_x"]), find(row["file_y"])
            if row["Decision"].strip().lower() == "yes":
                parent[a] = b
    roots = sorted({find(x) for x in parent})
    return {x: roots.index(find(x)) for x in parent}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    args = ap.parse_args()
    folder = args.data / "deepface"
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not found (pass --data)")
    ident = identities(folder / "master.csv")
    engine = FaceEngine(load_config(None, env={}))
    names, embs, ids = [], [], []
    for name, pid in sorted(ident.items()):
        faces = engine.analyze_file(folder / name).faces
        if faces:
            names.append(name)
            embs.append(faces[0].embedding)
            ids.append(pid)
    emb, ids_arr = np.stack(embs), np.array(ids)
    people = sorted(set(ids))
    print(f"{len(names)} photos with a face, {len(people)} identities")
    grid_t = [0.30, 0.33, 0.363, 0.40, 0.45, 0.50]
    grid_m = [0.0, 0.02, 0.05, 0.10]
    print("| threshold | margin | true match | wrong person | stranger accepted |")
    print("| --- | --- | --- | --- | --- |")
    for t in grid_t:
        for m in grid_m:
            tm = wp = sa = genuine = strangers = 0
            for stranger in people:
                gallery = {p: int(np.nonzero(ids_arr == p)[0][0]) for p in people if p != stranger}
                g_rows = list(gallery.values())
                g_ids = np.array(list(gallery.keys()))
                for i in range(len(names)):
                    if i in g_rows:
                        continue
                    sims = emb[g_rows] @ emb[i]
                    order = np.argsort(-sims)
                    best, second = sims[order[0]], sims[order[1]] if len(order) > 1 else -1.0
                    match = best >= t and best - second >= m
                    who = g_ids[order[0]]
                    if ids_arr[i] == stranger:
                        strangers += 1
                        sa += int(match)
                    else:
                        genuine += 1
                        tm += int(match and who == ids_arr[i])
                        wp += int(match and who != ids_arr[i])
            print(f"| {t:.3f} | {m:.2f} | {tm / genuine:.3f} | {wp / genuine:.4f} | "
                  f"{sa / strangers:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
