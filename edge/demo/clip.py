"""A sample door clip made from the shipped portraits (no third-party footage in the repo).

Each visitor walks in from the side, stands at the door for a while, and leaves; between visits
the corridor is empty, which must produce no event at all.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

FPS = 15
SIZE = (960, 540)


def _background() -> np.ndarray:
    w, h = SIZE
    y = np.linspace(70, 150, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 25, w, dtype=np.float32)[None, :]
    bg = (y + x).astype(np.uint8)
    return np.dstack([bg, bg + 5, bg + 10])


def write_clip(portraits: list[Path], out: Path, seconds_each: float = 2.4,
               gap_s: float = 1.0) -> Path:
    """Write an MJPG AVI with one visit per portrait, in order."""
    w, h = SIZE
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out}")
    bg = _background()
    try:
        for path in portraits:
            img = cv2.imread(str(path))
            if img is None:
                raise RuntimeError(f"cannot read {path}")
            scale = 0.8 * h / img.shape[0]
            person = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            ph, pw = person.shape[:2]
            frames = int(seconds_each * FPS)
            for i in range(frames):
                frame = bg.copy()
                t = i / max(1, frames - 1)
                x = int((w - pw) * (0.15 + 0.5 * min(1.0, t * 2)))
                y = (h - ph) // 2
                frame[y:y + ph, x:x + pw] = person
                writer.write(frame)
            for _ in range(int(gap_s * FPS)):
                writer.write(bg)
    finally:
        writer.release()
    return out
