"""Checks of caller-supplied values, so bad input fails before any transaction starts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from edge.gallery.crypto import EMBEDDING_DIM
from edge.gallery.errors import GalleryInputError

MAX_LABEL = 200
MAX_TEXT = 500


def text(value: Any, what: str, *, required: bool, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        if required:
            raise GalleryInputError(f"{what} is required")
        return None
    if not isinstance(value, str):
        raise GalleryInputError(f"{what} must be text, got {type(value).__name__}")
    cleaned = value.strip()
    if not cleaned:
        if required:
            raise GalleryInputError(f"{what} must not be empty")
        return None
    if len(cleaned) > limit:
        raise GalleryInputError(f"{what} is longer than {limit} characters")
    if any(ord(ch) < 32 for ch in cleaned):
        raise GalleryInputError(f"{what} must not contain control characters")
    return cleaned


def label(value: Any) -> str | None:
    return text(value, "label", required=False, limit=MAX_LABEL)


def model_id(value: Any, what: str = "model id") -> str:
    cleaned = text(value, what, required=True, limit=100)
    assert cleaned is not None
    return cleaned


def vector(value: Any) -> np.ndarray:
    """A finite, non-zero float32[128]; anything else would poison the matcher."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise GalleryInputError("embedding is not an array of numbers") from None
    if arr.shape != (EMBEDDING_DIM,):
        raise GalleryInputError(f"embedding must have shape ({EMBEDDING_DIM},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise GalleryInputError("embedding contains NaN or infinity")
    if not np.any(arr):
        raise GalleryInputError("embedding is all zeros")
    return np.ascontiguousarray(arr)


def quality(value: Any) -> dict[str, float]:
    """Quality numbers by name; ``score`` (higher is better) is required to rank templates."""
    if not isinstance(value, Mapping):
        raise GalleryInputError("quality must be a mapping of names to numbers")
    out: dict[str, float] = {}
    for key, num in value.items():
        if not isinstance(key, str) or not key:
            raise GalleryInputError(f"quality key {key!r} must be a non-empty string")
        if isinstance(num, bool) or not isinstance(num, (int, float, np.floating, np.integer)):
            raise GalleryInputError(f"quality {key!r} must be a number, got {num!r}")
        if not math.isfinite(float(num)):
            raise GalleryInputError(f"quality {key!r} must be finite")
        out[key] = float(num)
    if "score" not in out:
        raise GalleryInputError("quality must include a 'score' (higher is better)")
    return out
