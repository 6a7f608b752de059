"""Per-track votes -> one ``recognized`` or ``unknown`` decision, and whether to announce it.

One embedding can be unlucky (motion blur that passed the gate, a half-turned head), so a track
is recognised when ``votes_needed`` of its matcher results name the same person; a single
result far above the threshold (``instant_margin``) decides at once, which is what makes an
enrolled person at the door feel instant. A track that gets ``max_attempts`` results without
that is ``unknown``. Each track gets exactly one decision; a later result is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from edge.config import Config
from edge.errors import ConfigError
from edge.tracking.cooldown import Cooldown
from edge.tracking.errors import TrackingError
from edge.tracking.track import Track, Vote


class MatchResult(Protocol):
    """The matcher's answer for one probe embedding."""

    @property
    def person_id(self) -> str | None: ...

    @property
    def similarity(self) -> float | None: ...  # None when the gallery is empty

    @property
    def decision(self) -> str: ...  # "match" or "unknown"


@dataclass(frozen=True)
class TrackDecision:
    """What the event publisher needs; ``emit`` is False when the cooldown holds it back."""

    track_id: int
    camera_id: str
    decision: Literal["recognized", "unknown"]
    reason: Literal["instant", "votes", "attempts"]  # the event's ``decision`` token
    person_id: str | None
    #: recognized: best agreeing vote; unknown: best seen, None if the gallery is empty.
    similarity: float | None
    votes: int  # results naming the person (recognized) or attempts made (unknown)
    attempts: int
    first_seen_monotonic: float
    decided_monotonic: float
    emit: bool


def _vote_of(result: MatchResult, track_id: int) -> Vote:
    decision = getattr(result, "decision", None)
    if decision not in ("match", "unknown"):
        raise TrackingError(f"track {track_id}: matcher decision {decision!r} is not "
                            "'match' or 'unknown'")
    raw = result.similarity
    similarity: float | None = None
    if raw is not None or decision == "match":
        try:
            similarity = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise TrackingError(f"track {track_id}: similarity {raw!r} is not a number") from None
        if not math.isfinite(similarity):
            raise TrackingError(f"track {track_id}: similarity {similarity!r} is not finite")
    person = result.person_id
    if decision == "match" and person is None:
        raise TrackingError(f"track {track_id}: a 'match' result without a person id")
    return Vote(person_id=person if decision == "match" else None, similarity=similarity,
                matched=decision == "match")


class TrackDecider:
    """Decides tracks of one camera; holds no per-track state (that lives on the ``Track``)."""

    def __init__(self, camera_id: str, *, threshold: float = 0.363, votes_needed: int = 2,
                 max_attempts: int = 6, instant_margin: float = 0.15,
                 cooldown: Cooldown | None = None) -> None:
        self.camera_id = camera_id
        self.cooldown = cooldown if cooldown is not None else Cooldown(30.0)
        self._set(threshold, votes_needed, max_attempts, instant_margin)

    def _set(self, threshold: float, votes_needed: int, max_attempts: int,
             instant_margin: float) -> None:
        if votes_needed < 1 or max_attempts < 1:
            raise ConfigError("[tracking] votes_needed and max_attempts must be at least 1")
        if max_attempts < votes_needed:
            raise ConfigError(f"[tracking] max_attempts ({max_attempts}) is below votes_needed "
                              f"({votes_needed}): no track could ever collect enough votes")
        self.threshold = threshold
        self.votes_needed = votes_needed
        self.max_attempts = max_attempts
        self.instant_margin = instant_margin

    @classmethod
    def from_config(cls, config: Config, camera_id: str | None = None) -> TrackDecider:
        tr = config.tracking
        return cls(camera_id if camera_id is not None else config.camera.id,
                   threshold=config.matching.threshold, votes_needed=tr.votes_needed,
                   max_attempts=tr.max_attempts, instant_margin=tr.instant_margin,
                   cooldown=Cooldown(config.events.cooldown_s))

    def reconfigure(self, config: Config) -> None:
        """New thresholds and cooldown (SIGHUP); decided tracks stay decided."""
        tr = config.tracking
        self._set(config.matching.threshold, tr.votes_needed, tr.max_attempts,
                  tr.instant_margin)
        self.cooldown.seconds = config.events.cooldown_s

    def add(self, track: Track, result: MatchResult, now: float) -> TrackDecision | None:
        """Feed one matcher result of ``track``; returns its decision the one time it is made."""
        if track.ended:
            raise TrackingError(f"track {track.id} has ended; its results are gone")
        if track.decision is not None:
            return None
        vote = _vote_of(result, track.id)
        track.votes.append(vote)

        if vote.matched and vote.person_id is not None and vote.similarity is not None:
            if vote.similarity >= self.threshold + self.instant_margin:
                return self._recognized(track, vote.person_id, "instant", now)
            agreeing = sum(1 for v in track.votes if v.matched and v.person_id == vote.person_id)
            if agreeing >= self.votes_needed:
                return self._recognized(track, vote.person_id, "votes", now)
        if track.attempts >= self.max_attempts:
            seen = [v.similarity for v in track.votes if v.similarity is not None]
            decision = TrackDecision(
                track_id=track.id, camera_id=self.camera_id, decision="unknown",
                reason="attempts", person_id=None, similarity=max(seen, default=None),
                votes=track.attempts, attempts=track.attempts,
                first_seen_monotonic=track.first_seen, decided_monotonic=now, emit=True)
            track.decision = decision
            return decision
        return None

    def _recognized(self, track: Track, person_id: str, reason: Literal["instant", "votes"],
                    now: float) -> TrackDecision:
        agreeing = [v.similarity for v in track.votes
                    if v.matched and v.person_id == person_id and v.similarity is not None]
        decision = TrackDecision(
            track_id=track.id, camera_id=self.camera_id, decision="recognized", reason=reason,
            person_id=person_id, similarity=max(agreeing), votes=len(agreeing),
            attempts=track.attempts, first_seen_monotonic=track.first_seen,
            decided_monotonic=now, emit=self.cooldown.allow(self.camera_id, person_id, now))
        track.decision = decision
        return decision

    def refresh(self, tracks: Iterable[Track], now: float) -> None:
        """Call once per frame with the frame's tracks: a recognised person still in view keeps
        their cooldown open, so a track that breaks after minutes is not announced anew."""
        for track in tracks:
            d = track.decision
            if d is not None and d.decision == "recognized" and d.person_id is not None:
                self.cooldown.touch(self.camera_id, d.person_id, now)
