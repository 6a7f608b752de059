"""The peer: OpenCV's own DNN face API (YuNet + SFace) on the same source model files.

Why this exists: the issue's targets are relative ("not below the peer", "2x the peer's
throughput"), so the peer must do the same work a careful OpenCV user would do, no more and no
less: decode, detect with the long side at ``input_size`` (never upscaled, like our engine, so
both detectors see the same pixels), map the faces back to source pixels, align each face on the
full-resolution image with ``alignCrop`` and embed it with ``feature``. It depends on OpenCV and
numpy only, not on ``edge``, so it cannot borrow any of the engine's work.

As a command it prints the same JSON lines as ``edge-face embed --json`` (``quality`` is empty:
OpenCV has no quality measure), so the benchmark can time both processes from start to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
RECOGNIZER_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
STAGES = ("decode", "detect", "align", "embed")


def default_models_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "edge-face" / "models" / "source"


@dataclass
class PeerFace:
    box: np.ndarray  # [x, y, w, h] in source pixels
    score: float
    landmarks: np.ndarray  # (5, 2) in source pixels
    embedding: np.ndarray | None = None

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "quality": {},
        }
        if self.embedding is not None:
            out["embedding"] = [float(v) for v in self.embedding]
        return out


@dataclass
class StageTimes:
    """Seconds spent per stage, summed over the images analysed."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - start
        return now


class OpenCVPeer:
    """``cv2.FaceDetectorYN`` + ``cv2.FaceRecognizerSF`` with OpenCV's default backend."""

    def __init__(self, models_dir: Path | None = None, input_size: int = 640,
                 score_threshold: float = 0.6, nms_threshold: float = 0.3) -> None:
        models = models_dir or default_models_dir()
        det, rec = models / DETECTOR_FILE, models / RECOGNIZER_FILE
        for path in (det, rec):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: source model missing (run `edge-face models fetch`)")
        self.input_size = input_size
        self.detector = cv2.FaceDetectorYN.create(str(det), "", (320, 320), score_threshold,
                                                  nms_threshold, 5000)
        self.recognizer = cv2.FaceRecognizerSF.create(str(rec), "")

    def detect(self, image: np.ndarray) -> list[PeerFace]:
        """Faces of ``image`` (BGR), largest first, detected with the long side at input_size."""
        h, w = image.shape[:2]
        scale = min(1.0, self.input_size / max(h, w))
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        small = image if scale == 1.0 else cv2.resize(image, (rw, rh),
                                                      interpolation=cv2.INTER_AREA)
        self.detector.setInputSize((rw, rh))
        _, rows = self.detector.detect(small)
        faces = []
        for row in rows if rows is not None else []:
            faces.append(PeerFace(box=(row[:4] / scale).astype(np.float32),
                                  score=float(row[14]),
                                  landmarks=(row[4:14].reshape(5, 2) / scale).astype(np.float32)))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def align(self, image: np.ndarray, faces: list[PeerFace]) -> list[np.ndarray]:
        crops = []
        for face in faces:
            row = np.concatenate([face.box, face.landmarks.ravel(), [face.score]])
            crops.append(self.recognizer.alignCrop(image, row.astype(np.float32)[None, :]))
        return crops

    def embed(self, faces: list[PeerFace], crops: list[np.ndarray]) -> None:
        for face, crop in zip(faces, crops, strict=True):
            vec = self.recognizer.feature(crop).ravel().astype(np.float32)
            face.embedding = vec / max(float(np.linalg.norm(vec)), 1e-12)

    def analyze(self, image: np.ndarray, times: StageTimes | None = None) -> list[PeerFace]:
        t = time.perf_counter()
        faces = self.detect(image)
        if times:
            t = times.add("detect", t)
        crops = self.align(image, faces)
        if times:
            t = times.add("align", t)
        self.embed(faces, crops)
        if times:
            times.add("embed", t)
        return faces

    def analyze_file(self, path: str, times: StageTimes | None = None) -> list[PeerFace]:
        t = time.perf_counter()
        image = read_image(path)
        if times:
            times.add("decode", t)
        return self.analyze(image, times)


def read_image(path: str) -> np.ndarray:
    """cv2.imread (which honours EXIF orientation), with an error instead of ``None``."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot read as an image")
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OpenCV's YuNet + SFace, JSON like edge-face")
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--json", action="store_true", help="one JSON object per input per line")
    parser.add_argument("--models", type=Path, default=None, help="dir of the source .onnx files")
    parser.add_argument("--input-size", type=int, default=640)
    args = parser.parse_args(argv)
    try:
        peer = OpenCVPeer(args.models, args.input_size)
    except FileNotFoundError as exc:
        print(f"peer_opencv: error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.paths:
        try:
            faces = peer.analyze_file(path)
        except ValueError as exc:
            failed += 1
            print(json.dumps({"path": path, "error": str(exc)}), flush=True)
            continue
        if args.json:
            print(json.dumps({"path": path, "faces": [f.to_json() for f in faces]}), flush=True)
        else:
            print(f"{path}: {len(faces)} face(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
