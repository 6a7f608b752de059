"""Second chances for frames where the first pass found no face.

A door camera lives in bad conditions: a visitor far down the corridor is a few dozen pixels, a
bright window behind them turns the face into a silhouette, a tilted head leaves YuNet's comfort
zone. Each rescue view is a transformed copy of the frame with the affine map back to source
pixels; views run in order of cost and the first that finds a face wins, so a clean frame pays
nothing and an empty frame pays a bounded, predictable amount.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from edge.detection.yunet import Candidates


@dataclass(frozen=True)
class View:
    name: str
    image: np.ndarray
    to_source: np.ndarray  # 2x3 affine: view pixels -> source pixels
    input_size: int | None = None


def _identity() -> np.ndarray:
    return np.array([[1, 0, 0], [0, 1, 0]], np.float32)


def normalise_contrast(image: np.ndarray) -> np.ndarray:
    """CLAHE on the lightness channel: lifts dim and backlit faces without shifting colours."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def rotated(image: np.ndarray, degrees: float) -> View:
    """The whole frame rotated about its centre on an enlarged canvas (no corner is cut off)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    out = cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return View(f"rotate{degrees:+.0f}", out, cv2.invertAffineTransform(m).astype(np.float32))


def tiles(image: np.ndarray, input_size: int) -> Iterator[View]:
    """2x2 overlapping tiles, each run at full network size: faces appear about twice as big."""
    h, w = image.shape[:2]
    tw, th = int(w * 0.6), int(h * 0.6)
    for y0 in (0, h - th):
        for x0 in (0, w - tw):
            m = _identity()
            m[0, 2], m[1, 2] = x0, y0
            yield View(f"tile{x0},{y0}", image[y0:y0 + th, x0:x0 + tw], m, input_size)


def upscaled(image: np.ndarray, factor: float) -> View:
    out = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    m = _identity()
    m[0, 0] = m[1, 1] = 1.0 / factor
    return View(f"upscale{factor:g}", out, m, max(out.shape[:2]))


def views(image: np.ndarray, input_size: int) -> Iterator[View]:
    """Rescue views in order of cost; the caller stops at the first that finds a face."""
    h, w = image.shape[:2]
    yield View("contrast", normalise_contrast(image), _identity())
    if max(h, w) > input_size * 1.25:
        yield from tiles(image, input_size)
    elif max(h, w) * 2 <= input_size * 1.25:
        yield upscaled(image, 2.0)
    for degrees in (35.0, -35.0, 70.0, -70.0):
        yield rotated(image, degrees)


def to_source(cands: Candidates, m: np.ndarray) -> Candidates:
    """Map view candidates back: landmarks exactly; boxes keep their centre and size.

    A face found upright in a rotated view is tilted in the source; its box there is the same
    face-sized square about the mapped centre (the bounds of the rotated corners would be
    up to 40% too large and would hurt IoU tracking and size gates).
    """
    if not len(cands):
        return cands
    a, t = m[:, :2], m[:, 2]
    lms = cands.landmarks @ a.T + t
    scale = float(np.sqrt(abs(np.linalg.det(a))))
    centre = (cands.boxes[:, :2] + cands.boxes[:, 2:] / 2) @ a.T + t
    size = cands.boxes[:, 2:] * scale
    boxes = np.concatenate([centre - size / 2, size], axis=1).astype(np.float32)
    return Candidates(boxes, cands.scores, lms.astype(np.float32))
