"""Tracking, embedding policy and per-track decisions, on synthetic boxes and matcher results.

Everything here is the real tracker and decider; the "detections" and "matcher results" are
small stand-ins with the attributes the detector's ``Face`` and the matcher's result have.
"""

from __future__ import annotations

import gc
import math
import weakref
from dataclasses import dataclass

import numpy as np
import pytest

from edge.config import load_config
from edge.errors import ConfigError
from edge.tracking import (
    Cooldown,
    IouTracker,
    TrackDecider,
    TrackingError,
    greedy_assign,
    iou_matrix,
)

FPS = 30.0
THRESHOLD = 0.363


@dataclass
class Det:
    box: tuple[float, float, float, float]


@dataclass
class Result:
    person_id: str | None
    similarity: float
    decision: str


def match(person: str, similarity: float = 0.45) -> Result:
    return Result(person, similarity, "match")


def no_match(similarity: float = 0.2) -> Result:
    return Result(None, similarity, "unknown")


def decider(camera: str = "cam0", cooldown: Cooldown | None = None, **kw: object) -> TrackDecider:
    args: dict[str, object] = {"threshold": THRESHOLD, "votes_needed": 2, "max_attempts": 4,
                               "instant_margin": 0.15}
    args.update(kw)
    return TrackDecider(camera, cooldown=cooldown or Cooldown(30.0), **args)  # type: ignore[arg-type]


def new_track(tracker: IouTracker, now: float = 0.0, box=(100.0, 100.0, 80.0, 80.0)):
    return tracker.update([Det(box)], now).tracks[0]


# -- geometry ------------------------------------------------------------------------------------


def test_iou_matrix_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [50, 50, 5, 5]], dtype=float)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    assert m[0, 0] == pytest.approx(1.0)
    assert m[0, 1] == pytest.approx(50 / 150)  # half overlap: 50 / (100 + 100 - 50)
    assert m[0, 2] == 0.0
    assert not m[1].any()
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_greedy_assign_takes_best_pairs_once_and_respects_threshold() -> None:
    iou = np.array([[0.9, 0.8], [0.85, 0.2], [0.1, 0.05]])
    pairs = greedy_assign(iou, 0.3)
    assert sorted(pairs) == [(0, 0)]  # row 1's only good column is taken; row 2 below threshold
    assert greedy_assign(iou, 0.15) == [(0, 0), (1, 1)]
    assert greedy_assign(iou, 0.05) == [(0, 0), (1, 1)]  # row 2's columns are both taken
    assert greedy_assign(np.zeros((0, 3)), 0.3) == []


# -- tracking ------------------------------------------------------------------------------------


def test_two_faces_crossing_keep_their_ids() -> None:
    """Fast faces crossing: matching on the predicted box keeps identities where plain
    last-box IoU swaps them (checked while writing this test: it does at this speed)."""
    tracker = IouTracker(iou_threshold=0.3, max_missed_frames=3)
    seen: set[tuple[int, int]] = set()
    speed = 24.0
    for f in range(17):
        a = (speed * f, 100.0, 80.0, 80.0)
        b = (406.0 - speed * f, 110.0, 80.0, 80.0)
        dets = [Det(b), Det(a)] if f % 2 else [Det(a), Det(b)]  # order must not matter
        update = tracker.update(dets, f / FPS)
        ia = 0 if dets[0].box == a else 1
        seen.add((update.tracks[ia].id, update.tracks[1 - ia].id))
    assert seen == {(1, 2)}
    a_track = next(t for t in tracker.tracks if t.id == 1)
    assert a_track.velocity[0] == pytest.approx(speed)
    assert a_track.hits == 17 and a_track.first_seen == 0.0


def test_track_survives_short_miss_and_expires_after_max_missed() -> None:
    tracker = IouTracker(iou_threshold=0.3, max_missed_frames=3)
    box = (100.0, 100.0, 80.0, 80.0)
    first = new_track(tracker, 0.0, box)
    for f in range(1, 4):  # three misses: still alive
        assert tracker.update([], f / FPS).ended == []
    back = tracker.update([Det(box)], 4 / FPS).tracks[0]
    assert back is first and back.missed == 0 and back.first_seen == 0.0

    ended: list[int] = []
    for f in range(5, 9):  # the fourth consecutive miss ends it
        ended += tracker.update([], f / FPS).ended
    assert ended == [first.id] and tracker.tracks == []
    again = tracker.update([Det(box)], 9 / FPS).tracks[0]
    assert again.id != first.id and again.first_seen == pytest.approx(9 / FPS)


def test_new_face_beside_an_existing_one_gets_its_own_track() -> None:
    tracker = IouTracker()
    a = new_track(tracker, 0.0, (0.0, 0.0, 50.0, 50.0))
    update = tracker.update([Det((300.0, 0.0, 50.0, 50.0)), Det((2.0, 1.0, 50.0, 50.0))], 0.1)
    assert update.tracks[1] is a
    assert update.tracks[0].id not in (a.id,)
    assert len(tracker.tracks) == 2


@pytest.mark.parametrize("box", [(0, 0, 0, 10), (0, 0, 10, -1), (math.nan, 0, 10, 10),
                                 (0, 0, 10), ("a", 0, 10, 10)])
def test_bad_detection_box_is_a_clear_error(box: tuple) -> None:
    tracker = IouTracker()
    with pytest.raises(TrackingError, match="detection 1"):
        tracker.update([Det((0.0, 0.0, 10.0, 10.0)), Det(box)], 0.0)  # type: ignore[arg-type]
    assert tracker.tracks == []  # nothing half-applied


def test_detection_without_box_is_a_clear_error() -> None:
    with pytest.raises(TrackingError, match="detection 0"):
        IouTracker().update([object()], 0.0)  # type: ignore[list-item]


# -- embedding policy ----------------------------------------------------------------------------


def test_needs_embedding_new_better_recheck_and_never_after_decision() -> None:
    tracker = IouTracker(recheck_s=1.0, quality_margin=0.05)
    track = new_track(tracker)
    assert tracker.needs_embedding(track, 0.5, 0.0)  # new
    tracker.mark_embedded(track, 0.5, 0.0)
    assert not tracker.needs_embedding(track, 0.5, 0.1)
    assert not tracker.needs_embedding(track, 0.54, 0.1)  # within the margin
    assert tracker.needs_embedding(track, 0.56, 0.1)  # clearly better
    assert not tracker.needs_embedding(track, 0.3, 0.9)
    assert tracker.needs_embedding(track, 0.3, 1.0)  # re-check due
    tracker.mark_embedded(track, 0.3, 1.0)
    assert track.best_quality == 0.5 and track.embeddings == 2
    assert not tracker.needs_embedding(track, 0.3, 1.5)

    d = decider(votes_needed=1, max_attempts=1)
    assert d.add(track, match("p1"), 1.0) is not None
    assert not tracker.needs_embedding(track, 0.99, 5.0)


def test_needs_embedding_refuses_nan_quality() -> None:
    tracker = IouTracker()
    track = new_track(tracker)
    with pytest.raises(TrackingError, match="quality"):
        tracker.needs_embedding(track, math.nan, 0.0)
    with pytest.raises(TrackingError, match="quality"):
        tracker.mark_embedded(track, math.inf, 0.0)


# -- decisions -----------------------------------------------------------------------------------


def test_votes_agreeing_on_a_person_recognise() -> None:
    track = new_track(IouTracker(), now=5.0)
    d = decider()
    assert d.add(track, match("p1", 0.40), 5.1) is None
    assert d.add(track, match("p2", 0.41), 5.2) is None  # disagreement does not decide
    out = d.add(track, match("p1", 0.45), 5.3)
    assert out is not None
    assert (out.decision, out.person_id, out.votes, out.attempts) == ("recognized", "p1", 2, 3)
    assert out.reason == "votes"
    assert out.similarity == pytest.approx(0.45)
    assert out.first_seen_monotonic == 5.0 and out.decided_monotonic == 5.3
    assert out.emit and out.track_id == track.id and out.camera_id == "cam0"


def test_attempts_without_agreement_end_unknown() -> None:
    track = new_track(IouTracker())
    d = decider(max_attempts=4)
    results = [no_match(0.2), match("p1", 0.40), no_match(0.31), match("p2", 0.39)]
    outs = [d.add(track, r, 0.1 * i) for i, r in enumerate(results)]
    assert outs[:3] == [None, None, None]
    out = outs[3]
    assert out is not None
    assert (out.decision, out.person_id, out.attempts, out.votes) == ("unknown", None, 4, 4)
    assert out.reason == "attempts" and out.similarity == pytest.approx(0.40) and out.emit


def test_empty_gallery_results_end_unknown_without_similarity() -> None:
    track = new_track(IouTracker())
    d = decider(max_attempts=2)
    assert d.add(track, Result(None, None, "unknown"), 0.0) is None  # type: ignore[arg-type]
    out = d.add(track, Result(None, None, "unknown"), 0.1)  # type: ignore[arg-type]
    assert out is not None and out.decision == "unknown" and out.similarity is None


def test_runner_up_of_an_unknown_face_is_not_kept() -> None:
    track = new_track(IouTracker())
    decider().add(track, Result("p7", 0.30, "unknown"), 0.0)
    assert track.votes[0].person_id is None and not track.votes[0].matched


def test_high_similarity_decides_at_once_and_only_above_the_margin() -> None:
    tracker = IouTracker()
    d = decider()
    fast = new_track(tracker, box=(0.0, 0.0, 50.0, 50.0))
    out = d.add(fast, match("p1", THRESHOLD + 0.16), 0.0)
    assert out is not None and out.votes == 1 and out.decision == "recognized"
    assert out.reason == "instant"

    slow = new_track(tracker, box=(500.0, 0.0, 50.0, 50.0))
    assert d.add(slow, match("p2", THRESHOLD + 0.14), 0.0) is None


def test_exactly_one_decision_per_track() -> None:
    track = new_track(IouTracker())
    d = decider(votes_needed=1)
    first = d.add(track, match("p1"), 0.0)
    assert first is not None
    assert d.add(track, match("p2", 0.9), 0.1) is None
    assert d.add(track, no_match(), 0.2) is None
    assert track.decision is first and track.attempts == 1


def test_cooldown_suppresses_repeat_recognition_but_still_decides() -> None:
    tracker = IouTracker(max_missed_frames=0)
    cool = Cooldown(10.0)
    d = decider(cooldown=cool, votes_needed=1)
    box = (100.0, 100.0, 80.0, 80.0)

    t1 = tracker.update([Det(box)], 0.0).tracks[0]
    assert d.add(t1, match("p1"), 0.0).emit  # type: ignore[union-attr]
    tracker.update([], 0.1)  # track ends

    t2 = tracker.update([Det(box)], 3.0).tracks[0]
    assert t2.id != t1.id
    second = d.add(t2, match("p1"), 3.0)
    assert second is not None and second.decision == "recognized" and not second.emit

    other = decider(camera="cam1", cooldown=cool, votes_needed=1)  # per camera
    t3 = tracker.update([Det(box), Det((400.0, 0.0, 80.0, 80.0))], 3.1).tracks[1]
    assert other.add(t3, match("p1"), 3.1).emit  # type: ignore[union-attr]
    t4 = tracker.update([Det(box), Det((400.0, 0.0, 80.0, 80.0)),
                         Det((700.0, 0.0, 80.0, 80.0))], 3.2).tracks[2]
    assert d.add(t4, match("p2"), 3.2).emit  # type: ignore[union-attr]  # per person

    tracker.end_all()
    t5 = tracker.update([Det(box)], 13.0).tracks[0]  # 10 s after the last p1 sighting on cam0
    assert d.add(t5, match("p1"), 13.0).emit  # type: ignore[union-attr]


def test_cooldown_window_slides_while_recognised_person_stays_in_view() -> None:
    tracker = IouTracker(max_missed_frames=0)
    d = decider(cooldown=Cooldown(10.0), votes_needed=1)
    box = (100.0, 100.0, 80.0, 80.0)
    track = tracker.update([Det(box)], 0.0).tracks[0]
    assert d.add(track, match("p1"), 0.0).emit  # type: ignore[union-attr]
    now = 0.0
    while now < 60.0:  # lingers for a minute on one track
        now += 1.0
        d.refresh(tracker.update([Det(box)], now).tracks, now)
    tracker.update([], now + 0.1)  # track breaks
    again = tracker.update([Det(box)], now + 2.0).tracks[0]
    out = d.add(again, match("p1"), now + 2.0)
    assert out is not None and not out.emit


def test_unknown_tracks_each_decide_and_emit_without_cross_track_memory() -> None:
    tracker = IouTracker(max_missed_frames=0)
    d = decider(max_attempts=2)
    box = (100.0, 100.0, 80.0, 80.0)
    for k in range(3):
        track = tracker.update([Det(box)], float(k)).tracks[0]
        assert d.add(track, no_match(), float(k)) is None
        out = d.add(track, no_match(), float(k))
        assert out is not None and out.decision == "unknown" and out.emit
        tracker.update([], k + 0.5)
    assert d.cooldown.entries == 0  # nothing about unknown faces is kept


@pytest.mark.parametrize(("result", "message"), [
    (Result("p1", 0.5, "maybe"), "'maybe'"),
    (Result("p1", math.nan, "match"), "not finite"),
    (Result("p1", "high", "match"), "not a number"),  # type: ignore[arg-type]
    (Result(None, 0.5, "match"), "without a person id"),
    (Result("p1", None, "match"), "not a number"),  # type: ignore[arg-type]
])
def test_bad_matcher_result_is_a_clear_error(result: Result, message: str) -> None:
    track = new_track(IouTracker())
    with pytest.raises(TrackingError, match=message):
        decider().add(track, result, 0.0)
    assert track.attempts == 0


def test_result_for_an_ended_track_is_refused() -> None:
    tracker = IouTracker(max_missed_frames=0)
    track = new_track(tracker)
    tracker.update([], 0.1)
    with pytest.raises(TrackingError, match="ended"):
        decider().add(track, match("p1"), 0.2)


def test_votes_needed_above_max_attempts_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        decider(votes_needed=3, max_attempts=2)


def test_decider_and_tracker_follow_config_and_reload(tmp_path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[camera]\nid = "door"\n[tracking]\nvotes_needed = 3\nmax_attempts = 5\n'
                    "instant_margin = 0.3\nquality_margin = 0.2\n[events]\ncooldown_s = 7\n")
    cfg = load_config(path, env={})
    d = TrackDecider.from_config(cfg)
    assert (d.camera_id, d.votes_needed, d.max_attempts, d.instant_margin) == ("door", 3, 5, 0.3)
    assert d.cooldown.seconds == 7.0
    tracker = IouTracker.from_config(cfg.tracking)
    assert tracker.quality_margin == 0.2

    reloaded = load_config(path, env={"EDGE_FACE_TRACKING__VOTES_NEEDED": "1",
                                      "EDGE_FACE_EVENTS__COOLDOWN_S": "2"})
    d.reconfigure(reloaded)
    assert d.votes_needed == 1 and d.cooldown.seconds == 2.0
    with pytest.raises(ConfigError, match="INSTANT_MARGIN"):
        load_config(path, env={"EDGE_FACE_TRACKING__INSTANT_MARGIN": "5"})


# -- privacy: nothing about a face outlives its track ---------------------------------------------


def test_no_datum_of_a_face_outlives_its_track() -> None:
    tracker = IouTracker(max_missed_frames=2)
    d = decider(max_attempts=3)
    track = new_track(tracker)
    embedding = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    result = no_match(0.25)
    track.scratch["embedding"] = embedding
    emb_ref, result_ref = weakref.ref(embedding), weakref.ref(result)
    assert d.add(track, result, 0.0) is None
    del embedding, result
    gc.collect()
    assert result_ref() is None  # the decider keeps a vote, not the matcher's object
    assert emb_ref() is not None  # alive while the track is

    ended: list[int] = []
    for f in range(1, 5):
        ended += tracker.update([], f / FPS).ended
    assert ended == [track.id]
    gc.collect()
    assert emb_ref() is None
    # The caller still holds the Track object: even so, it carries nothing about the face.
    assert track.ended and track.votes == [] and track.scratch == {} and track.decision is None
    assert not math.isfinite(track.best_quality)
    assert tracker.tracks == [] and d.cooldown.entries == 0


def test_end_all_drops_data_like_expiry() -> None:
    tracker = IouTracker()
    track = new_track(tracker)
    big = np.zeros(512, dtype=np.float32)
    track.scratch["e"] = big
    ref = weakref.ref(big)
    del big
    assert tracker.end_all() == [track.id]
    gc.collect()
    assert ref() is None and track.ended


def test_the_pipelines_own_face_and_match_result_types_fit() -> None:
    """The detector's Face (box as a float32 array) and the matcher's MatchResult plug in."""
    from edge.face import Face
    from edge.matching.results import MatchResult

    face = Face(box=np.array([10, 20, 60, 60], np.float32), score=0.9,
                landmarks=np.zeros((5, 2), np.float32))
    tracker = IouTracker()
    track = tracker.update([face], 0.0).tracks[0]
    assert track.box == (10.0, 20.0, 60.0, 60.0)
    result = MatchResult(person_id="p1", template_id="t1", similarity=0.9, second_person_id=None,
                         second_similarity=None, decision="match")
    out = decider().add(track, result, 0.0)
    assert out is not None and out.person_id == "p1" and out.reason == "instant"
