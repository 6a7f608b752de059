"""The last few events this process queued, in memory, for the operator page's live feed.

Why not read the outbox: a row leaves the outbox as soon as the broker acknowledges it, so on a
healthy device it is empty and the feed would show nothing. Why in memory only: the feed is a
window for a person watching, not a record; the audit log and the MQTT consumers are the record.

What is kept is a whitelist of the event's scalar fields: ids, type, time, decision and numbers.
A label (present when ``[events] include_label`` is on) is left out, so the feed names nobody;
events never carry images or templates in the first place (``edge.events.schema``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

#: Events kept; a door sees a few a minute, so this is the last hour or more of a busy one.
DEFAULT_CAPACITY = 200
#: The fields the feed shows; anything else in a payload stays out of it.
FEED_FIELDS = ("event_id", "type", "time", "camera_id", "track_id", "person_id", "similarity",
               "decision", "votes", "latency_ms", "state", "attempts")


class RecentEvents:
    """A bounded, thread-safe ring of event summaries keyed by the outbox ``seq``."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._ring: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, seq: int, payload: Mapping[str, Any]) -> None:
        entry: dict[str, Any] = {"seq": int(seq)}
        entry.update((k, payload[k]) for k in FEED_FIELDS if k in payload)
        with self._lock:
            self._ring.append(entry)

    def after(self, after: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """The newest ``limit`` events with ``seq > after``, oldest first, and whether older
        ones that also matched were left out (the poller fell behind by more than ``limit``).

        A first poll (``after`` 0) asks for the latest, not for everything: nothing it did
        not get counts as skipped, or every page load would say events were lost."""
        with self._lock:
            newer = [dict(e) for e in self._ring if e["seq"] > after]
        return newer[-max(1, limit):], after > 0 and len(newer) > limit
