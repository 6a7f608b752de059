"""Timestamps as fixed-width UTC strings.

Why strings of one fixed format: SQLite has no time type, and a fixed-width ``...Z`` text sorts
like the instant it names, so consent expiry can be compared inside SQL (``expires_at > ?``)
without parsing every row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from edge.gallery.errors import GalleryInputError

Clock = Callable[[], datetime]

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def to_iso(moment: datetime) -> str:
    """Render an aware datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


def parse_iso(text: str, what: str = "time") -> datetime:
    """Parse ISO 8601 from a user or a bundle; a time without an offset is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise GalleryInputError(
            f"{what}: {text!r} is not an ISO 8601 time (e.g. 2026-12-31T23:59:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
