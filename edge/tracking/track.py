"""One face followed across frames, and everything known about it, which dies with it.

Privacy principle 2 (no shadow gallery) is enforced here: every per-face datum (votes, quality,
whatever the pipeline parks in ``scratch``) lives on the ``Track`` and nowhere else, and
``forget()`` empties it the moment the track ends, even if some caller still holds the object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.tracking.decision import TrackDecision

Box = tuple[float, float, float, float]  # x, y, w, h in pixels


@dataclass(frozen=True)
class Vote:
    """What the decider keeps of one matcher result: never the embedding itself."""

    person_id: str | None  # only for a "match": the runner-up of an unknown face is not kept
    similarity: float | None  # None when the gallery is empty
    matched: bool


@dataclass(eq=False)
class Track:
    """A face's track. ``first_seen`` is the monotonic capture time of its first frame."""

    id: int
    box: Box
    first_seen: float
    last_seen: float
    missed: int = 0  # consecutive frames without a matching detection
    hits: int = 1  # frames with a matching detection
    age: int = 1  # frames since the track began
    velocity: tuple[float, float] = (0.0, 0.0)  # box centre shift per frame (smoothed)
    best_quality: float = -math.inf
    last_embedded: float | None = None
    embeddings: int = 0
    votes: list[Vote] = field(default_factory=list)
    decision: TrackDecision | None = None
    #: Pipeline's per-track data (an embedding batch, a crop); cleared when the track ends.
    scratch: dict[str, Any] = field(default_factory=dict)
    ended: bool = False

    @property
    def attempts(self) -> int:
        """Matcher results fed to the decider so far."""
        return len(self.votes)

    def predicted_box(self) -> Box:
        """Where the face should be in the next frame, moving at its recent speed."""
        steps = self.missed + 1
        x, y, w, h = self.box
        return (x + self.velocity[0] * steps, y + self.velocity[1] * steps, w, h)

    def forget(self) -> None:
        """Drop every datum about the face; what remains is the id and timestamps."""
        self.votes.clear()
        self.scratch.clear()
        self.decision = None
        self.best_quality = -math.inf
        self.ended = True
