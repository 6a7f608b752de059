"""Door-camera clips for the daemon benchmark: 720p, 30 fps, faces entering at known frames.

Why generated clips: time to identity is "first frame that holds the face" to "event at the
broker", so the benchmark must know that frame exactly; a recorded clip would need hand labels.
Each visible face is a head-and-shoulders tile cut around a detected face and pasted on a plain
corridor background, swaying a few pixels per frame so consecutive frames differ as they do in
front of a real camera (the tracker and the quality gate see motion, not a still image).
Between visits the corridor is empty, so a visit is a new track and a new decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FPS = 30.0
SIZE = (1280, 720)
#: Horizontal sway of a tile, in pixels, and its period in frames.
SWAY_PX = 6
SWAY_FRAMES = 45


class ClipError(RuntimeError):
    """A clip that cannot be made (a portrait OpenCV cannot read, a writer that will not open)."""


@dataclass(frozen=True)
class Visit:
    """``tiles`` are in view from frame ``start`` (the first frame holding them) to ``end - 1``."""

    start: int
    end: int
    tiles: tuple[int, ...]


@dataclass(frozen=True)
class ClipPlan:
    """What a written clip holds, frame by frame, so the benchmark can score the daemon."""

    path: Path
    fps: float
    size: tuple[int, int]
    frames: int
    visits: tuple[Visit, ...]

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def face_tile(image: np.ndarray, box: Sequence[float], face_px: int) -> np.ndarray:
    """Head and shoulders around ``box`` (x, y, w, h), scaled so the face box is ``face_px`` tall.

    The crop is 1.6 face heights wide and 2.2 tall, centred a little below the face; parts
    outside the photo are filled by replicating its border, so every tile has the same shape.
    """
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0 or face_px <= 0:
        raise ClipError(f"face tile needs a positive box and size, got {box!r}, {face_px}")
    cw, ch = 1.6 * h, 2.2 * h
    cx, cy = x + w / 2, y + h / 2 + 0.25 * h
    x0, y0 = round(cx - cw / 2), round(cy - ch / 2)
    x1, y1 = x0 + round(cw), y0 + round(ch)
    ih, iw = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - iw, y1 - ih)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    scale = face_px / h
    out_size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(crop, out_size, interpolation=interp)


def background(size: tuple[int, int] = SIZE) -> np.ndarray:
    """A corridor-grey gradient: no texture a detector could mistake for a face."""
    w, h = size
    y = np.linspace(70, 150, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 25, w, dtype=np.float32)[None, :]
    bg = (y + x).astype(np.uint8)
    return np.dstack([bg, bg + 5, bg + 10])


def slots(tiles: Sequence[np.ndarray], size: tuple[int, int] = SIZE) -> list[tuple[int, int]]:
    """Top-left corners that spread ``tiles`` evenly across the frame, vertically centred."""
    w, h = size
    n = len(tiles)
    if n == 0:
        return []
    total = sum(t.shape[1] for t in tiles)
    if total + 2 * SWAY_PX * n > w or any(t.shape[0] > h for t in tiles):
        raise ClipError(f"{n} tiles of total width {total} px do not fit a {w}x{h} frame")
    gap = (w - total) / (n + 1)
    out, x = [], gap
    for t in tiles:
        out.append((round(x), (h - t.shape[0]) // 2))
        x += t.shape[1] + gap
    return out


def render(k: int, tiles: Sequence[np.ndarray], corners: Sequence[tuple[int, int]],
           visits: Sequence[Visit], bg: np.ndarray) -> np.ndarray:
    """Frame ``k``: the background plus every tile of a visit that covers ``k``."""
    frame = bg.copy()
    for visit in visits:
        if not visit.start <= k < visit.end:
            continue
        dx = round(SWAY_PX * math.sin(2 * math.pi * (k - visit.start) / SWAY_FRAMES))
        for i in visit.tiles:
            tile = tiles[i]
            x, y = corners[i]
            frame[y:y + tile.shape[0], x + dx:x + dx + tile.shape[1]] = tile
    return frame


def write_clip(out: Path, tiles: Sequence[np.ndarray], visits: Sequence[Visit], frames: int,
               fps: float = FPS, size: tuple[int, int] = SIZE) -> ClipPlan:
    """Write an MJPG AVI (what USB door cameras send) and return its plan."""
    for v in visits:
        if not 0 <= v.start < v.end <= frames or any(not 0 <= i < len(tiles) for i in v.tiles):
            raise ClipError(f"visit {v} does not fit a clip of {frames} frames, {len(tiles)} tiles")
    corners = slots(tiles, size)
    bg = background(size)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise ClipError(f"OpenCV cannot write {out}")
    try:
        for k in range(frames):
            writer.write(render(k, tiles, corners, visits, bg))
    finally:
        writer.release()
    return ClipPlan(out, fps, size, frames, tuple(visits))


def steady_visits(n_tiles: int, frames: int, lead_in: int) -> list[Visit]:
    """All tiles enter together at ``lead_in`` and stay to the end (someone waiting at the door)."""
    return [Visit(lead_in, frames, tuple(range(n_tiles)))]


def repeated_visits(count: int, fps: float, visit_s: float, gap_s: float,
                    lead_s: float, tiles: tuple[int, ...] = (0,)) -> tuple[list[Visit], int]:
    """``count`` visits of ``tiles`` separated by empty gaps; returns the visits and the length.

    The gap must outlast the tracker's expiry (``max_missed_frames``) so each visit is a new
    track; with ``[events] cooldown_s = 0`` each is then a new decision and a new event.
    """
    visit_n, gap_n = round(visit_s * fps), round(gap_s * fps)
    k = round(lead_s * fps)
    out = []
    for _ in range(count):
        out.append(Visit(k, k + visit_n, tiles))
        k += visit_n + gap_n
    return out, k
