"""Tracking failures: only programming or input mistakes reach here, never a face."""

from __future__ import annotations

from edge.errors import EdgeError


class TrackingError(EdgeError):
    """A detection box, a quality score or a matcher result that cannot be used."""
