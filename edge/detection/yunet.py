"""YuNet face detection: any frame size, boxes and landmarks in source pixels.

Why not a fixed 640x640 letterbox: the prepared graph has symbolic height and width, so a 16:9
frame runs at 640x384 (the long side at ``input_size``, the short side padded up to a multiple of
32). That is 40% less work than a square and no resolution is thrown away on padding.

Decoding follows the model's head: for each stride s in (8, 16, 32) and each grid cell (row r,
column c), score = sqrt(cls * obj); the box centre is (c + dx, r + dy) * s and its size
exp(dw, dh) * s; landmark k is (c + kx, r + ky) * s.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.config import DetectionConfig
from edge.face import Face
from edge.inference import InferenceSession

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Candidates:
    """Raw detections before NMS, in the coordinates of the image given to the network."""

    boxes: np.ndarray  # (n, 4) x, y, w, h
    scores: np.ndarray  # (n,)
    landmarks: np.ndarray  # (n, 5, 2)

    @staticmethod
    def empty() -> Candidates:
        return Candidates(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                          np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)


def concat(parts: list[Candidates]) -> Candidates:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Candidates.empty()
    return Candidates(np.concatenate([p.boxes for p in parts]),
                      np.concatenate([p.scores for p in parts]),
                      np.concatenate([p.landmarks for p in parts]))


def network_size(width: int, height: int, input_size: int) -> tuple[float, int, int, int, int]:
    """(scale, resized w, resized h, padded w, padded h) for a frame of ``width`` x ``height``.

    Images smaller than ``input_size`` run at their own size (never upscaled here: the rescue
    pass decides when upscaling is worth it).
    """
    long_side = max(width, height)
    scale = min(1.0, input_size / long_side)
    rw, rh = max(1, round(width * scale)), max(1, round(height * scale))
    pw, ph = max(32, -(-rw // 32) * 32), max(32, -(-rh // 32) * 32)
    return scale, rw, rh, pw, ph


class YuNet:
    """Runs the prepared YuNet graph; stateless apart from a per-shape anchor cache."""

    def __init__(self, session: InferenceSession, config: DetectionConfig) -> None:
        self.session = session
        self.config = config
        self._input = session.input_names[0]
        self._outputs = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        self._grids: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}

    def _grid(self, pw: int, ph: int) -> list[tuple[np.ndarray, np.ndarray]]:
        key = (pw, ph)
        if key not in self._grids:
            grids = []
            for s in STRIDES:
                rows, cols = ph // s, pw // s
                cc, rr = np.meshgrid(np.arange(cols, dtype=np.float32),
                                     np.arange(rows, dtype=np.float32))
                grids.append((cc.ravel(), rr.ravel()))
            self._grids[key] = grids
        return self._grids[key]

    def raw(self, image: np.ndarray, input_size: int | None = None,
            score_threshold: float | None = None) -> Candidates:
        """Candidates above the score threshold, in ``image`` pixels, before NMS."""
        h, w = image.shape[:2]
        scale, rw, rh, pw, ph = network_size(w, h, input_size or self.config.input_size)
        # INTER_AREA even at awkward ratios, where it is slow (4.4 ms for a 1200 px photo on
        # one core): a block average then a bilinear finish took a third of that, but moved
        # enrollment photos' embeddings (cosine down to 0.96) and lost a deepface pair.
        resized = image if (rw, rh) == (w, h) else cv2.resize(
            image, (rw, rh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :rh, :rw] = resized.transpose(2, 0, 1)
        outs = dict(zip(self._outputs, self.session.run({self._input: blob}, self._outputs),
                        strict=True))
        threshold = self.config.score_threshold if score_threshold is None else score_threshold
        parts = []
        for s, (cx, cy) in zip(STRIDES, self._grid(pw, ph), strict=False):
            cls = np.clip(outs[f"cls_{s}"][0, :, 0], 0.0, 1.0)
            obj = np.clip(outs[f"obj_{s}"][0, :, 0], 0.0, 1.0)
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score >= threshold)[0]
            if keep.size == 0:
                continue
            bbox = outs[f"bbox_{s}"][0, keep]
            kps = outs[f"kps_{s}"][0, keep].reshape(-1, 5, 2)
            gx, gy = cx[keep], cy[keep]
            centre_x, centre_y = (gx + bbox[:, 0]) * s, (gy + bbox[:, 1]) * s
            bw, bh = np.exp(bbox[:, 2]) * s, np.exp(bbox[:, 3]) * s
            boxes = np.stack([centre_x - bw / 2, centre_y - bh / 2, bw, bh], axis=1)
            lms = np.empty_like(kps)
            lms[:, :, 0] = (kps[:, :, 0] + gx[:, None]) * s
            lms[:, :, 1] = (kps[:, :, 1] + gy[:, None]) * s
            parts.append(Candidates(boxes / scale, score[keep], lms / scale))
        return concat(parts)

    def nms(self, cands: Candidates, image_size: tuple[int, int]) -> list[Face]:
        """Greedy NMS, clipping to the image, best ``max_faces`` kept."""
        if not len(cands):
            return []
        keep = cv2.dnn.NMSBoxes(cands.boxes.tolist(), cands.scores.tolist(),
                                self.config.score_threshold, self.config.nms_threshold,
                                top_k=self.config.max_faces * 4)
        keep = np.asarray(keep, dtype=np.int64).ravel()[: self.config.max_faces]
        w, h = image_size
        faces = []
        for i in keep:
            x, y, bw, bh = cands.boxes[i]
            x0, y0 = max(0.0, float(x)), max(0.0, float(y))
            x1, y1 = min(float(w), float(x + bw)), min(float(h), float(y + bh))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            faces.append(Face(box=np.array([x0, y0, x1 - x0, y1 - y0], np.float32),
                              score=float(cands.scores[i]),
                              landmarks=cands.landmarks[i].astype(np.float32)))
        return faces
