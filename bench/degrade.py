"""A door camera's bad days, applied to a clean photo: seeded, so every run sees the same pixels.

Why synthetic degradations: the benchmark photos are press portraits, sharp and well lit, and a
door camera almost never sees a face like that. Each condition below imitates one thing that goes
wrong at a door (distance, motion, a dim corridor, a window behind the visitor, a cheap encoder,
a tilted head, a low-resolution stream) so that the engine and the peer can be compared where the
product actually lives. A condition is a pure function of (image, face box, seed): the benchmark
derives the seed from the condition and the file name, so both engines get identical inputs and a
rerun reproduces them bit for bit.

Every degraded condition first brings the photo to a camera's resolution (long side at most 1280,
a 720p sensor): noise, blur and JPEG blocks are then in camera pixels, not in the pixels of a
4600-pixel press photo that the detector would average away.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import cv2
import numpy as np

#: The long side of a door camera's frame (720p) and of its low-resolution stream (240p).
CAMERA_SIDE = 1280
FRAME_SIZE = (1280, 720)
LOW_RES_SIZE = (426, 240)

#: Face width range for the "far away" condition, in frame pixels.
SMALL_FACE_PX = (20.0, 30.0)

Degrader = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def seed_for(condition: str, name: str, base: int = 0) -> int:
    """A stable seed per (condition, file): crc32 does not change between runs like hash()."""
    return zlib.crc32(f"{base}:{condition}:{name}".encode())


def camera_frame(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo at a 720p camera's resolution (never upscaled) and the face box with it."""
    h, w = image.shape[:2]
    scale = min(1.0, CAMERA_SIDE / max(h, w))
    if scale == 1.0:
        return image, box
    out = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return out, box * scale


def _corridor(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A plain, faceless background: a wall-like gradient with low-frequency texture."""
    w, h = size
    ramp = np.linspace(70, 150, h, dtype=np.float32)[:, None, None]
    tint = rng.uniform(0.9, 1.1, size=(1, 1, 3)).astype(np.float32)
    texture = cv2.resize(rng.normal(0, 10, size=(9, 16)).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC)[..., None]
    return np.clip(ramp * tint + texture, 0, 255).astype(np.uint8)


def small(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Far down the corridor: the face 20-30 px wide, somewhere in a 1280x720 frame."""
    target = rng.uniform(*SMALL_FACE_PX)
    factor = min(1.0, target / max(float(box[2]), 1.0))
    h, w = image.shape[:2]
    tiny = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))),
                      interpolation=cv2.INTER_AREA)
    fw, fh = FRAME_SIZE
    th, tw = tiny.shape[:2]
    if tw > fw or th > fh:  # a face tiny within a huge photo: keep the part around it
        cx, cy = (box[:2] + box[2:] / 2) * factor
        x0 = int(np.clip(cx - fw / 2, 0, max(0, tw - fw)))
        y0 = int(np.clip(cy - fh / 2, 0, max(0, th - fh)))
        tiny = tiny[y0:y0 + fh, x0:x0 + fw]
        th, tw = tiny.shape[:2]
    frame = _corridor(rng, FRAME_SIZE)
    x = int(rng.integers(0, fw - tw + 1))
    y = int(rng.integers(0, fh - th + 1))
    frame[y:y + th, x:x + tw] = tiny
    return frame


def motion_blur(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A visitor walking past: a straight blur of 10% of the face width, in a random direction."""
    image, box = camera_frame(image, box)
    length = max(5, round(0.10 * float(box[2]))) | 1
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length), flags=cv2.INTER_LINEAR)
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def dim(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dim corridor at night: 10-18% of the light, then the sensor's noise at high gain."""
    image, _ = camera_frame(image, box)
    gain = rng.uniform(0.10, 0.18)
    dark = image.astype(np.float32) * gain
    noisy = dark + rng.normal(0.0, 3.0, size=dark.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def backlit(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bright window behind the visitor: an underexposed face in a burnt-out surround, glare."""
    image, box = camera_frame(image, box)
    h, w = image.shape[:2]
    face = 255.0 * (image.astype(np.float32) / 255.0) ** 2.2 * rng.uniform(0.25, 0.35)
    centre = box[:2] + box[2:] / 2
    radius = max(float(box[2:].max()) / 2, 1.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.hypot(xx - centre[0], yy - centre[1]) / radius
    window = np.clip((dist - 1.0) / 1.2, 0.0, 1.0)[..., None]
    out = face * (1.0 - window) + 250.0 * window
    sigma = max(radius * 0.6, 1.0)
    glare = cv2.GaussianBlur(window[..., 0], (0, 0), sigma)[..., None]
    out = out * (1.0 - 0.3 * glare) + 255.0 * 0.3 * glare
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def jpeg10(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A cheap camera's encoder at quality 10: blocks, ringing and smeared colour."""
    image, _ = camera_frame(image, box)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 10])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _roll(image: np.ndarray, box: np.ndarray, rng: np.random.Generator,
          degrees: float) -> np.ndarray:
    """The whole frame rotated (the head tilts one way or the other) on a canvas that fits it."""
    image, _ = camera_frame(image, box)
    angle = degrees if rng.random() < 0.5 else -degrees
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(114, 114, 114))


def roll30(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _roll(image, box, rng, 30.0)


def roll60(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _roll(image, box, rng, 60.0)


def low_res(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 240p stream: the photo fitted inside 426x240, as the camera would have sent it."""
    h, w = image.shape[:2]
    scale = min(LOW_RES_SIZE[0] / w, LOW_RES_SIZE[1] / h, 1.0)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def clean(image: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return image


#: Every condition, in report order; "clean" is the untouched photo.
CONDITIONS: dict[str, Degrader] = {
    "clean": clean,
    "small": small,
    "motion_blur": motion_blur,
    "dim": dim,
    "backlit": backlit,
    "jpeg10": jpeg10,
    "roll30": roll30,
    "roll60": roll60,
    "240p": low_res,
}

#: Conditions the issue calls hard (where the engine must beat the peer, not only match it).
HARD: frozenset[str] = frozenset({"small", "dim", "backlit", "roll60", "240p", "motion_blur"})


def degrade(image: np.ndarray, condition: str, box: np.ndarray, seed: int) -> np.ndarray:
    """``image`` (BGR uint8) under ``condition``; ``box`` is its face [x, y, w, h] in pixels."""
    try:
        fn = CONDITIONS[condition]
    except KeyError:
        known = ", ".join(CONDITIONS)
        raise ValueError(f"unknown condition {condition!r} (known: {known})") from None
    out = fn(image, np.asarray(box, np.float32), np.random.default_rng(seed))
    return np.ascontiguousarray(out)
