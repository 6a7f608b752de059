"""Faces followed across frames, embedded only when useful, decided once per track.

Typical use per frame::

    update = tracker.update(faces, frame.t_capture)
    decider.refresh(update.tracks, frame.t_capture)
    for face, track in zip(faces, update.tracks):
        if passes_quality(face) and tracker.needs_embedding(track, q, now):
            tracker.mark_embedded(track, q, now)
            decision = decider.add(track, matcher(embed(face)), now)
"""

from __future__ import annotations

from edge.tracking.cooldown import Cooldown
from edge.tracking.decision import MatchResult, TrackDecider, TrackDecision
from edge.tracking.errors import TrackingError
from edge.tracking.iou import greedy_assign, iou_matrix
from edge.tracking.track import Track, Vote
from edge.tracking.tracker import Detection, IouTracker, TrackUpdate

__all__ = [
    "Cooldown",
    "Detection",
    "IouTracker",
    "MatchResult",
    "Track",
    "TrackDecider",
    "TrackDecision",
    "TrackUpdate",
    "TrackingError",
    "Vote",
    "greedy_assign",
    "iou_matrix",
]
