"""One contract for every inference backend that loads on this machine.

Each backend must give the same detections (IoU >= 0.9) and embeddings (cosine >= 0.99) as the
CPU fp32 reference (onnxruntime, no cached graph) on the shipped portraits, for every batch size
1-16, with the reference's names, shapes and dtypes. Here only ``onnxruntime-cpu`` loads; the
GPU backends are skipped with the reason they did not load. On a Jetson::

    .venv/bin/python -m pytest -m jetson -rs

runs this suite (and the CUDA wrapper's device test) for every backend that loads there; the
first run builds the TensorRT engines (minutes), later runs load them from the cache.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge.config import Config
from edge.detection.yunet import YuNet
from edge.doctor import MIN_COSINE, MIN_IOU
from edge.embedding.sface import SFace
from edge.engine import FaceEngine
from edge.errors import BackendError
from edge.inference.backend import AUTO_ORDER, load_backend
from edge.inference.engine_cache import detector_profile, embedder_profile
from edge.inference.ort import OrtSession
from edge.models import load_manifest, resolve_prepared
from edge.tracking.iou import iou_matrix

pytestmark = pytest.mark.jetson


@dataclasses.dataclass
class Loaded:
    name: str
    detector: YuNet
    embedder: SFace


@pytest.fixture(scope="module")
def paths(session_config: Config) -> dict[str, tuple[str, Path]]:
    manifest = load_manifest()
    out = {}
    for role in ("detector", "embedder"):
        spec, path = resolve_prepared(session_config.models.dir, role, manifest)
        out[role] = (spec.input_name, path)
    return out


@pytest.fixture(scope="module")
def reference(paths: dict[str, tuple[str, Path]], session_config: Config) -> Loaded:
    def plain(path: Path) -> OrtSession:
        return OrtSession(path, threads=0, providers=["CPUExecutionProvider"],
                          backend="reference")

    return Loaded("reference", YuNet(plain(paths["detector"][1]), session_config.detection),
                  SFace(plain(paths["embedder"][1])))


@pytest.fixture(scope="module", params=AUTO_ORDER)
def backend(request: pytest.FixtureRequest, paths: dict[str, tuple[str, Path]],
            session_config: Config) -> Loaded:
    name = request.param
    inference = dataclasses.replace(session_config.inference, backend=name)
    det_name, det_path = paths["detector"]
    emb_name, emb_path = paths["embedder"]
    try:
        det = load_backend(name, det_path, inference,
                           profile=detector_profile(det_name,
                                                    session_config.detection.input_size))
        emb = load_backend(name, emb_path, inference, profile=embedder_profile(emb_name))
    except BackendError as exc:
        pytest.skip(f"{name} does not load here: {exc}")
    return Loaded(name, YuNet(det, session_config.detection), SFace(emb))


@pytest.fixture(scope="module")
def crops(engine: FaceEngine, portraits: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Aligned 112x112 crops of every face in the portraits (CPU alignment for all backends)."""
    out: list[np.ndarray] = []
    for image in portraits.values():
        out += engine.measure(image, engine.detect(image, rescue=False))
    assert len(out) >= 5
    return out


def test_names_shapes_and_dtypes_match_the_reference(backend: Loaded, reference: Loaded) -> None:
    for mine, ref in ((backend.detector.session, reference.detector.session),
                      (backend.embedder.session, reference.embedder.session)):
        assert mine.backend == backend.name
        assert mine.input_names == ref.input_names
        assert sorted(mine.output_names) == sorted(ref.output_names)
    blob = np.random.default_rng(0).uniform(0, 255, (1, 3, 384, 640)).astype(np.float32)
    feeds = {reference.detector.session.input_names[0]: blob}
    names = reference.detector.session.output_names
    for mine, ref in zip(backend.detector.session.run(feeds, names),
                         reference.detector.session.run(feeds, names), strict=True):
        assert mine.dtype == ref.dtype == np.float32 and mine.shape == ref.shape
    # The embedder's raw output at the largest batch its profile allows, before normalising.
    faces = np.random.default_rng(1).uniform(0, 255, (16, 3, 112, 112)).astype(np.float32)
    feeds = {reference.embedder.session.input_names[0]: faces}
    (mine,) = backend.embedder.session.run(feeds)
    (ref,) = reference.embedder.session.run(feeds)
    assert mine.dtype == ref.dtype == np.float32 and mine.shape == ref.shape == (16, 128)


def test_detections_match_the_reference(backend: Loaded, reference: Loaded,
                                        portraits: dict[str, np.ndarray]) -> None:
    for stem, image in portraits.items():
        size = (image.shape[1], image.shape[0])
        want = reference.detector.nms(reference.detector.raw(image), size)
        got = backend.detector.nms(backend.detector.raw(image), size)
        assert len(got) == len(want), stem
        for face in want:
            best = float(iou_matrix(face.box, [g.box for g in got]).max())
            assert best >= MIN_IOU, (stem, best)


@pytest.mark.parametrize("batch", range(1, 17))
def test_embeddings_match_the_reference_at_every_batch_size(
        backend: Loaded, reference: Loaded, crops: list[np.ndarray], batch: int) -> None:
    chunk = [crops[i % len(crops)] for i in range(batch)]
    got = backend.embedder.embed(chunk)
    want = reference.embedder.embed(chunk)
    assert got.shape == want.shape == (batch, 128) and got.dtype == np.float32
    cosine = np.sum(got * want, axis=1)
    assert float(cosine.min()) >= MIN_COSINE, cosine
    # A face's embedding must not depend on what else is in its batch.
    alone = backend.embedder.embed(chunk[:1])[0]
    assert float(alone @ got[0]) >= MIN_COSINE


def test_a_gpu_engine_refuses_shapes_outside_its_profile(backend: Loaded) -> None:
    if backend.name != "tensorrt":
        pytest.skip(f"{backend.name} has no fixed optimisation profile: other shapes run")
    blob = np.zeros((17, 3, 112, 112), np.float32)
    with pytest.raises(BackendError):
        backend.embedder.session.run({backend.embedder.session.input_names[0]: blob})
