"""Every source hands the pipeline the same pixel layout: H x W x 3 uint8 BGR."""

from __future__ import annotations

import cv2
import numpy as np

from edge.camera.errors import CameraError


def to_bgr(pixels: np.ndarray, what: str) -> np.ndarray:
    """Grey, BGRA or 16-bit frames exist (some V4L2 modes, some clips); convert or refuse."""
    if pixels.dtype != np.uint8:
        raise CameraError(f"{what}: frames of type {pixels.dtype} are not supported")
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return pixels
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    raise CameraError(f"{what}: frames of shape {pixels.shape} are not supported")
