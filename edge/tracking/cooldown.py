"""Once per visit: a person who lingers, or whose track breaks and restarts, is announced once.

The window slides: every recognition of the person on the camera (announced or not), and every
frame on which a recognised track of theirs is still seen, pushes it forward. So an event goes
out again only after the person was absent from this camera for ``cooldown_s``. Only enrolled
people's pseudonymous ids are kept here - never anything about an unknown face.
"""

from __future__ import annotations


class Cooldown:
    """Last-seen time per (camera, person), pruned as entries age out."""

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"cooldown must be 0 or more seconds, got {seconds!r}")
        self.seconds = seconds
        self._last: dict[tuple[str, str], float] = {}

    def allow(self, camera_id: str, person_id: str, now: float) -> bool:
        """True if an event for this person may go out now; records the sighting either way."""
        self._prune(now)
        last = self._last.get((camera_id, person_id))
        self._last[(camera_id, person_id)] = now
        return last is None or now - last >= self.seconds

    def touch(self, camera_id: str, person_id: str, now: float) -> None:
        """The person is still in view: keep the window open."""
        key = (camera_id, person_id)
        self._last[key] = max(now, self._last.get(key, now))

    def _prune(self, now: float) -> None:
        stale = [key for key, t in self._last.items() if now - t >= self.seconds]
        for key in stale:
            del self._last[key]

    @property
    def entries(self) -> int:
        """How many (camera, person) windows are open (for tests and metrics)."""
        return len(self._last)
