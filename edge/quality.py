"""Per-face quality numbers that enrollment and the daemon gate on.

Why measure on the aligned crop: it is exactly what the embedder sees, at a fixed size, so the
sharpness and exposure numbers compare across cameras and distances. Size and pose come from the
detection in source pixels, where "too far away" and "looking away" are physical facts.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.config import QualityConfig
from edge.embedding.align import TEMPLATE, similarity_transform


def measure(crop: np.ndarray, box: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    centre = gray[16:104, 16:96]  # the face, not the background the warp pulled in
    sharpness = float(cv2.Laplacian(centre, cv2.CV_32F).var())
    brightness = float(centre.mean())
    contrast = float(centre.std())
    eye_l, eye_r, nose, _mouth_l, _mouth_r = landmarks.astype(np.float64)
    inter_ocular = float(np.hypot(*(eye_r - eye_l)))
    roll = float(np.degrees(np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])))
    # Pose from where the nose lands after alignment: a frontal face puts it on the template's
    # nose; turning the head moves it sideways (yaw) or up/down (pitch) relative to eye spacing.
    m = similarity_transform(landmarks)
    nose_aligned = m[:, :2] @ nose + m[:, 2]
    eye_span = TEMPLATE[1, 0] - TEMPLATE[0, 0]
    yaw = float((nose_aligned[0] - TEMPLATE[2, 0]) / (eye_span / 2))
    pitch = float((nose_aligned[1] - TEMPLATE[2, 1]) / eye_span)
    frontalness = float(np.clip(1.0 - max(abs(yaw), 2.0 * abs(pitch)), 0.0, 1.0))
    size = float(min(box[2], box[3]))
    return {
        "size": size,
        "inter_ocular": inter_ocular,
        "sharpness": sharpness,
        "brightness": brightness,
        "contrast": contrast,
        "roll": roll,
        "yaw": yaw,
        "pitch": pitch,
        "frontalness": frontalness,
    }


def score(q: dict[str, float], cfg: QualityConfig) -> float:
    """One number in [0, 1] to rank crops of the same person (best templates, best track shot)."""
    size = min(1.0, q["size"] / (2.5 * cfg.min_face_px))
    sharp = min(1.0, q["sharpness"] / (4.0 * cfg.min_sharpness))
    mid = (cfg.min_brightness + cfg.max_brightness) / 2
    half = (cfg.max_brightness - cfg.min_brightness) / 2
    exposure = max(0.0, 1.0 - abs(q["brightness"] - mid) / (half * 1.5))
    contrast = min(1.0, q["contrast"] / (3.0 * cfg.min_contrast))
    return float(size * sharp * exposure * contrast * q["frontalness"]) ** 0.2


def reasons(q: dict[str, float], cfg: QualityConfig) -> list[str]:
    """Why a face is not good enough to enroll or to vote; empty when it is."""
    out = []
    if q["size"] < cfg.min_face_px:
        out.append(f"too small ({q['size']:.0f} px < {cfg.min_face_px} px)")
    if q["sharpness"] < cfg.min_sharpness:
        out.append(f"too blurred (sharpness {q['sharpness']:.0f} < {cfg.min_sharpness:g})")
    if q["brightness"] < cfg.min_brightness:
        out.append(f"too dark (brightness {q['brightness']:.0f} < {cfg.min_brightness:g})")
    if q["brightness"] > cfg.max_brightness:
        out.append(f"too bright (brightness {q['brightness']:.0f} > {cfg.max_brightness:g})")
    if q["contrast"] < cfg.min_contrast:
        out.append(f"too little contrast ({q['contrast']:.0f} < {cfg.min_contrast:g})")
    if q["frontalness"] < cfg.min_frontalness:
        out.append(f"not frontal enough ({q['frontalness']:.2f} < {cfg.min_frontalness:g})")
    return out
