"""Prove that a prepared graph computes what the source graph computes under OpenCV.

Why: folding rewrites every weight; a silent mistake would still give plausible embeddings. OpenCV
4.x runs the block-quantised sources natively, so it is the independent reference: the prepared
SFace must give the same embedding (cosine >= 0.9999) and the prepared YuNet the same raw outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import ModelError
from edge.models.manifest import ModelSpec

MIN_COSINE = 0.9999
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "faces"


def _probe_images(size: tuple[int, int], count: int = 4) -> list[np.ndarray]:
    """Real portraits when the source checkout has them, plus smooth synthetic images."""
    import cv2

    images: list[np.ndarray] = []
    if FIXTURES.is_dir():
        for path in sorted(FIXTURES.glob("*.jpg"))[:count]:
            img = cv2.imread(str(path))
            if img is not None:
                images.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    rng = np.random.default_rng(20211203)
    for _ in range(max(2, count - len(images))):
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        images.append(cv2.resize(small, size, interpolation=cv2.INTER_CUBIC))
    return images


def _cv2_outputs(source: Path, blob: np.ndarray, names: list[str]) -> list[np.ndarray]:
    import cv2

    net = cv2.dnn.readNetFromONNX(str(source))
    net.setInput(blob)
    return list(net.forward(names))


def _ort_outputs(prepared: Path, input_name: str, blob: np.ndarray,
                 names: list[str]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(prepared), opts, providers=["CPUExecutionProvider"])
    return list(sess.run(names, {input_name: blob}))


def verify_against_opencv(spec: ModelSpec, source: Path, prepared: Path) -> float:
    """Return the worst agreement (cosine for SFace, 1 - max abs diff for YuNet); raise if off."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency
        raise ModelError("opencv-python-headless is needed to verify prepared models") from None
    if spec.role == "embedder":
        worst = 1.0
        for img in _probe_images((112, 112)):
            blob = cv2.dnn.blobFromImage(img, 1.0, (112, 112), (0, 0, 0), swapRB=True)
            ref = _cv2_outputs(source, blob, ["fc1"])[0].ravel()
            got = _ort_outputs(prepared, spec.input_name, blob, ["fc1"])[0].ravel()
            cos = float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got)))
            worst = min(worst, cos)
        if worst < MIN_COSINE:
            raise ModelError(
                f"prepared {spec.prepared_file} disagrees with OpenCV on the source model: "
                f"cosine {worst:.6f} < {MIN_COSINE}"
            )
        return worst
    names = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in (8, 16, 32)]
    worst_diff = 0.0
    for img in _probe_images((640, 640), count=2):
        blob = cv2.dnn.blobFromImage(img, 1.0, (640, 640), (0, 0, 0), swapRB=False)
        ref = _cv2_outputs(source, blob, names)
        got = _ort_outputs(prepared, spec.input_name, blob, names)
        for r, g in zip(ref, got, strict=False):
            scale = max(1.0, float(np.abs(r).max()))
            worst_diff = max(worst_diff, float(np.abs(r - g).max()) / scale)
    if worst_diff > 1e-3:
        raise ModelError(
            f"prepared {spec.prepared_file} disagrees with OpenCV on the source model: "
            f"relative max difference {worst_diff:.2e}"
        )
    return 1.0 - worst_diff
