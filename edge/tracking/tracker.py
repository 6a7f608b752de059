"""Follow faces across frames by box overlap, and say when a face is worth embedding.

Embedding costs about 6 ms per face on the CPU, detection about as much per frame; embedding
every face on every frame at 30 fps would eat the CPU for nothing new. A track is embedded when
it is new, when its face got clearly better (closer, sharper, more frontal), or when
``recheck_s`` passed without a decision - and never again once it is decided: the decision is
final for the track, and a person who lingers costs detection only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge.config import TrackingConfig
from edge.tracking.errors import TrackingError
from edge.tracking.iou import greedy_assign, iou_matrix
from edge.tracking.track import Box, Track

#: Weight of the newest displacement in the smoothed velocity.
_VELOCITY_GAIN = 0.5


class Detection(Protocol):
    """Anything with a ``box`` (x, y, w, h): the detector's ``Face`` fits."""

    @property
    def box(self) -> Sequence[float]: ...


@dataclass(frozen=True)
class TrackUpdate:
    """``tracks[i]`` is the track of ``detections[i]``; ``ended`` are ids of tracks just gone."""

    tracks: list[Track]
    ended: list[int]


def _box_of(det: Detection, i: int) -> Box:
    try:
        x, y, w, h = (float(v) for v in det.box)
    except (AttributeError, TypeError, ValueError):
        raise TrackingError(f"detection {i}: box must be four numbers (x, y, w, h)") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise TrackingError(f"detection {i}: box {(x, y, w, h)!r} needs finite values and a "
                            "positive width and height")
    return (x, y, w, h)


class IouTracker:
    """Greedy IoU tracker with constant-velocity prediction; tracks live in memory only.

    Matching uses each track's predicted box (last box moved by its recent velocity), which keeps
    identities through two faces crossing and through short misses. A track that goes
    ``max_missed_frames`` frames without a match ends on the next miss; a face that comes back
    after that gets a new track and a new id, with nothing carried over.
    """

    def __init__(self, *, iou_threshold: float = 0.3, max_missed_frames: int = 15,
                 recheck_s: float = 1.0, quality_margin: float = 0.05) -> None:
        self._ids = itertools.count(1)
        self._tracks: list[Track] = []
        self.iou_threshold = iou_threshold
        self.max_missed_frames = max_missed_frames
        self.recheck_s = recheck_s
        self.quality_margin = quality_margin

    @classmethod
    def from_config(cls, tracking: TrackingConfig) -> IouTracker:
        tracker = cls()
        tracker.reconfigure(tracking)
        return tracker

    def reconfigure(self, tracking: TrackingConfig) -> None:
        """Apply new thresholds (SIGHUP); live tracks keep their state."""
        self.iou_threshold = tracking.iou_threshold
        self.max_missed_frames = tracking.max_missed_frames
        self.recheck_s = tracking.recheck_s
        self.quality_margin = tracking.quality_margin

    @property
    def tracks(self) -> list[Track]:
        """The live tracks (a copy of the list; the tracks themselves are shared)."""
        return list(self._tracks)

    def update(self, detections: Sequence[Detection], now: float) -> TrackUpdate:
        """Assign this frame's detections to tracks; ``now`` is the frame's ``t_capture``."""
        boxes = [_box_of(det, i) for i, det in enumerate(detections)]
        live = self._tracks
        predicted = np.array([t.predicted_box() for t in live], dtype=np.float64).reshape(-1, 4)
        pairs = greedy_assign(iou_matrix(predicted, np.array(boxes).reshape(-1, 4)),
                              self.iou_threshold)
        assigned: list[Track | None] = [None] * len(boxes)
        matched_tracks: set[int] = set()
        for ti, di in pairs:
            track = live[ti]
            self._follow(track, boxes[di], now)
            assigned[di] = track
            matched_tracks.add(ti)

        ended: list[int] = []
        survivors: list[Track] = []
        for ti, track in enumerate(live):
            if ti in matched_tracks:
                survivors.append(track)
                continue
            track.missed += 1
            track.age += 1
            if track.missed > self.max_missed_frames:
                ended.append(track.id)
                track.forget()
            else:
                survivors.append(track)

        for di, box in enumerate(boxes):
            if assigned[di] is None:
                track = Track(id=next(self._ids), box=box, first_seen=now, last_seen=now)
                assigned[di] = track
                survivors.append(track)
        self._tracks = survivors
        return TrackUpdate(tracks=[t for t in assigned if t is not None], ended=ended)

    def _follow(self, track: Track, box: Box, now: float) -> None:
        steps = track.missed + 1
        old_cx, old_cy = track.box[0] + track.box[2] / 2, track.box[1] + track.box[3] / 2
        new_cx, new_cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        vx, vy = (new_cx - old_cx) / steps, (new_cy - old_cy) / steps
        if track.hits > 1:
            vx = _VELOCITY_GAIN * vx + (1 - _VELOCITY_GAIN) * track.velocity[0]
            vy = _VELOCITY_GAIN * vy + (1 - _VELOCITY_GAIN) * track.velocity[1]
        track.velocity = (vx, vy)
        track.box = box
        track.last_seen = now
        track.missed = 0
        track.hits += 1
        track.age += 1

    def end_all(self) -> list[int]:
        """End every track (camera lost, shutdown): their data is dropped like on expiry."""
        ended = [t.id for t in self._tracks]
        for track in self._tracks:
            track.forget()
        self._tracks = []
        return ended

    def needs_embedding(self, track: Track, quality_score: float, now: float) -> bool:
        """Should this face (already through the quality gate) be embedded now?

        Yes when the track was never embedded, when ``quality_score`` beats the track's best by
        more than ``quality_margin``, or when ``recheck_s`` passed since its last embedding; no
        once the track has a decision or has ended. Call ``mark_embedded`` when you do embed.
        """
        if not math.isfinite(quality_score):
            raise TrackingError(f"track {track.id}: quality score {quality_score!r} is not finite")
        if track.ended or track.decision is not None:
            return False
        if track.last_embedded is None:
            return True
        if quality_score > track.best_quality + self.quality_margin:
            return True
        return now - track.last_embedded >= self.recheck_s

    def mark_embedded(self, track: Track, quality_score: float, now: float) -> None:
        """Record that the track's face was embedded now, at this quality."""
        if not math.isfinite(quality_score):
            raise TrackingError(f"track {track.id}: quality score {quality_score!r} is not finite")
        track.last_embedded = now
        track.best_quality = max(track.best_quality, quality_score)
        track.embeddings += 1
