"""The recognition engine on real photos, cross-checked against OpenCV's own face API."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.embedding.align import TEMPLATE, align, similarity_transform
from edge.engine import FaceEngine
from edge.errors import ImageError
from edge.models import load_manifest
from edge.models.fetch import source_path
from edge.quality import reasons

THRESHOLD = 0.363
SAME = [("obama", "obama2"), ("obama", "obama3"), ("obama2", "obama3"), ("biden", "biden2")]
DIFFERENT = [(a, b) for a in ("obama", "obama2", "obama3") for b in ("biden", "biden2")]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax1, ay1, ax2, ay2 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx1, by1, bx2, by2 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


@pytest.fixture(scope="module")
def opencv_peer(models_dir: Path):
    """OpenCV's FaceDetectorYN / FaceRecognizerSF on the untouched source model files."""
    manifest = load_manifest()
    det = cv2.FaceDetectorYN.create(str(source_path(models_dir, manifest.model("detector"))),
                                    "", (320, 320), 0.6, 0.3, 5000)
    rec = cv2.FaceRecognizerSF.create(str(source_path(models_dir, manifest.model("embedder"))),
                                      "")
    return det, rec


def _largest(engine: FaceEngine, img: np.ndarray, **kw):
    faces = engine.analyze(img, **kw)
    assert faces, "no face found"
    return faces[0]


def test_matches_opencv_boxes_and_embeddings(engine: FaceEngine, portraits, opencv_peer) -> None:
    det, rec = opencv_peer
    for name, img in portraits.items():
        h, w = img.shape[:2]
        det.setInputSize((w, h))
        _, ref = det.detect(img)
        assert ref is not None, name
        ref_big = max(ref, key=lambda r: r[2] * r[3])
        ours = _largest(engine, img)
        assert iou(ours.box, ref_big[:4]) >= 0.9, name
        ref_emb = rec.feature(rec.alignCrop(img, ref_big)).ravel()
        ref_emb /= np.linalg.norm(ref_emb)
        assert float(ours.embedding @ ref_emb) >= 0.99, name


def test_same_person_above_threshold_different_below(engine: FaceEngine, portraits) -> None:
    emb = {k: _largest(engine, v).embedding for k, v in portraits.items()}
    for a, b in SAME:
        assert float(emb[a] @ emb[b]) >= THRESHOLD, (a, b)
    for a, b in DIFFERENT:
        assert float(emb[a] @ emb[b]) < THRESHOLD, (a, b)


def test_embeddings_are_unit_vectors(engine: FaceEngine, portraits) -> None:
    face = _largest(engine, portraits["obama"])
    assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
    assert float(np.linalg.norm(face.embedding)) == pytest.approx(1.0, abs=1e-5)


def test_batched_embedding_equals_one_by_one(engine: FaceEngine, portraits) -> None:
    crops = [align(img, _largest(engine, img).landmarks) for img in portraits.values()]
    together = engine.embedder.embed(crops)
    for i, crop in enumerate(crops):
        np.testing.assert_allclose(together[i], engine.embedder.embed([crop])[0], atol=1e-4)


def test_several_faces_sorted_largest_first(engine: FaceEngine, portraits) -> None:
    big = portraits["obama"]
    small = cv2.resize(portraits["biden"], None, fx=0.6, fy=0.6)
    canvas = np.full((max(big.shape[0], small.shape[0]), big.shape[1] + small.shape[1] + 40, 3),
                     128, np.uint8)
    canvas[: big.shape[0], : big.shape[1]] = big
    canvas[: small.shape[0], big.shape[1] + 40:] = small
    faces = engine.analyze(canvas)
    assert len(faces) >= 2
    assert faces[0].area >= faces[1].area
    ref = _largest(engine, big).embedding
    assert float(faces[0].embedding @ ref) > 0.9
    assert faces[1].box[0] > big.shape[1]


def test_no_face_in_a_face_free_image(engine: FaceEngine) -> None:
    rng = np.random.default_rng(3)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (9, 9), 0)
    assert engine.analyze(noise) == []
    assert engine.analyze(np.zeros((200, 300, 3), np.uint8)) == []


def test_any_aspect_ratio_maps_back_to_source_pixels(engine: FaceEngine, portraits) -> None:
    img = portraits["obama"]
    ref = _largest(engine, img)
    wide = cv2.copyMakeBorder(img, 0, 0, 600, 900, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    tall = cv2.copyMakeBorder(img, 700, 500, 0, 0, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    for shifted, (dx, dy) in ((wide, (600, 0)), (tall, (0, 700))):
        got = _largest(engine, shifted)
        moved = ref.box + np.array([dx, dy, 0, 0], np.float32)
        assert iou(got.box, moved) >= 0.8
        assert float(got.embedding @ ref.embedding) > 0.8


@pytest.mark.parametrize("degrees", [35, -60, 90, -90, 150])
def test_tilted_head_is_found_and_still_matches(engine: FaceEngine, portraits,
                                                degrees: int) -> None:
    """Beyond ~45 degrees YuNet's landmarks go wrong (or, at 90, it finds nothing): the rotated
    rescue views and the orientation sweep must still give an embedding that matches."""
    img = portraits["obama"]
    ref = _largest(engine, img).embedding
    h, w = img.shape[:2]
    side = int(np.hypot(h, w))
    canvas = cv2.copyMakeBorder(img, (side - h) // 2, (side - h) // 2, (side - w) // 2,
                                (side - w) // 2, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    m = cv2.getRotationMatrix2D((canvas.shape[1] / 2, canvas.shape[0] / 2), degrees, 1.0)
    tilted = cv2.warpAffine(canvas, m, canvas.shape[1::-1], borderValue=(128, 128, 128))
    face = _largest(engine, tilted, rescue=True)
    assert float(face.embedding @ ref) >= THRESHOLD


def test_far_away_face_is_found_by_rescue(engine: FaceEngine, portraits) -> None:
    """A visitor down the corridor: a ~17 px face in a 1280x720 frame."""
    img = portraits["obama2"]
    ref = _largest(engine, img).embedding
    small = cv2.resize(img, None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA)
    frame = np.full((720, 1280, 3), 100, np.uint8)
    frame[400:400 + small.shape[0], 900:900 + small.shape[1]] = small
    assert engine.analyze(frame, rescue=False) == []
    face = _largest(engine, frame, rescue=True)
    assert 880 < face.box[0] < 1000
    assert float(face.embedding @ ref) > 0.2  # tiny, but detected and roughly placed
    assert "too small" in " ".join(reasons(face.quality, engine.config.quality))


def test_dark_corridor_face_is_found_and_matches(engine: FaceEngine, portraits) -> None:
    img = portraits["obama"]
    ref = _largest(engine, img).embedding
    dark = np.clip(img.astype(np.float32) * 0.12, 0, 255).astype(np.uint8)
    face = _largest(engine, dark, rescue=True)
    assert float(face.embedding @ ref) >= THRESHOLD
    assert any(r.startswith("too dark") for r in reasons(face.quality, engine.config.quality))


def test_blur_lowers_sharpness_and_fails_the_gate(engine: FaceEngine, portraits) -> None:
    img = portraits["obama"]
    sharp = _largest(engine, img)
    blurred = _largest(engine, cv2.GaussianBlur(img, (0, 0), 6))
    assert blurred.quality["sharpness"] < sharp.quality["sharpness"] / 5
    assert any(r.startswith("too blurred") for r in reasons(blurred.quality,
                                                            engine.config.quality))
    assert not reasons(sharp.quality, engine.config.quality)


def test_cheap_camera_jpeg_still_matches(engine: FaceEngine, portraits) -> None:
    ref = _largest(engine, portraits["obama"]).embedding
    ok, buf = cv2.imencode(".jpg", portraits["obama"], [cv2.IMWRITE_JPEG_QUALITY, 12])
    assert ok
    face = _largest(engine, cv2.imdecode(buf, cv2.IMREAD_COLOR))
    assert float(face.embedding @ ref) >= 0.6


def test_frontalness_drops_for_a_turned_head(engine: FaceEngine, portraits) -> None:
    face = _largest(engine, portraits["obama"])
    lm = face.landmarks.copy()
    lm[2, 0] += 0.45 * (lm[1, 0] - lm[0, 0])  # nose far towards one eye: a yaw of the head
    from edge.quality import measure

    turned = measure(align(portraits["obama"], lm), face.box, lm)
    assert turned["frontalness"] < face.quality["frontalness"]


def test_similarity_transform_recovers_a_known_map() -> None:
    angle, scale, t = np.radians(20), 1.7, np.array([13.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (TEMPLATE - t) @ np.linalg.inv(rot).T
    m = similarity_transform(src)
    np.testing.assert_allclose(src @ m[:, :2].T + m[:, 2], TEMPLATE, atol=1e-6)


def test_analyze_file_reports_source_pixels_after_reduced_decode(engine: FaceEngine,
                                                                 portraits,
                                                                 tmp_path: Path) -> None:
    big = cv2.resize(portraits["obama"], None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    result = engine.analyze_file(path)
    assert result.image.scale > 1.0  # decoded at reduced size
    ref = _largest(engine, portraits["obama"])
    assert iou(result.faces[0].box, ref.box * 8) >= 0.85
    assert float(result.faces[0].embedding @ ref.embedding) > 0.9


@pytest.fixture(scope="module")
def parallel_engine(session_config) -> FaceEngine:
    return FaceEngine(session_config, jobs=2)


def test_parallel_batch_equals_one_by_one_in_input_order(engine: FaceEngine,
                                                          parallel_engine: FaceEngine,
                                                          fixture_dir: Path,
                                                          tmp_path: Path) -> None:
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello", encoding="utf-8")
    paths = [fixture_dir / f"{n}.jpg" for n in ("obama", "biden", "obama2")]
    paths = [paths[0], bad, *paths[1:], paths[0]]
    results = list(parallel_engine.analyze_files(paths))
    assert len(results) == len(paths)
    assert isinstance(results[1], ImageError) and "not-an-image.jpg" in str(results[1])
    for path, got in zip(paths, results, strict=True):
        if path == bad:
            continue
        assert not isinstance(got, ImageError)
        want = engine.analyze_file(path)
        assert len(got.faces) == len(want.faces) >= 1
        for g, w in zip(got.faces, want.faces, strict=True):
            np.testing.assert_allclose(g.box, w.box, atol=1e-3)
            # One thread per model instead of two changes float summation order only.
            assert float(g.embedding @ w.embedding) > 0.99999


def test_parallel_batch_can_be_abandoned_part_way(parallel_engine: FaceEngine,
                                                  fixture_dir: Path) -> None:
    paths = [fixture_dir / "obama.jpg"] * 12
    results = parallel_engine.analyze_files(paths)
    first = next(results)
    assert not isinstance(first, ImageError) and first.faces
    results.close()  # the generator's pool shuts down; queued images are cancelled
    again = list(parallel_engine.analyze_files(paths[:3]))
    assert all(not isinstance(r, ImageError) and r.faces for r in again)


def test_engine_refuses_zero_jobs(session_config) -> None:
    with pytest.raises(ValueError, match="jobs"):
        FaceEngine(session_config, jobs=0)
