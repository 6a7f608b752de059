"""Persons, consent, templates, the template cap, change events and the consent sweeper.

Everything runs on a real SQLite file and a real key file in ``tmp_path``. Time is injected
through the store's clock (a plain settable function), so expiry is tested without waiting.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.gallery import (
    ConsentError,
    ConsentInput,
    ConsentSweeper,
    GalleryInputError,
    GalleryStore,
    NewTemplate,
    PersonNotFound,
)
from edge.gallery.ids import is_id

MODEL = "sface-2021dec"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A settable clock for the store (time travel, not a mock of any component)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[GalleryStore]:
    s = GalleryStore(tmp_path / "data", tmp_path / "keys" / "template.key", max_templates=3,
                     clock=clock)
    yield s
    s.close()


def consent(**kw: Any) -> ConsentInput:
    return ConsentInput(kw.pop("given_by", "the person"), kw.pop("purpose", "door access"), **kw)


def test_person_ids_are_random_and_pseudonymous(store: GalleryStore) -> None:
    a = store.add_person("Ann Example", consent())
    b = store.add_person("Ann Example", consent())
    assert a != b
    assert is_id(a, "p") and is_id(b, "p")
    assert "ann" not in a.lower()


def test_person_roundtrip_and_listing(store: GalleryStore, clock: Clock) -> None:
    pid = store.add_person("  Bo  ", consent(expires_at=T0 + timedelta(days=30),
                                              evidence="form 42"))
    anon = store.add_person(None, consent())
    person = store.get_person(pid)
    assert person.label == "Bo"
    assert person.consent == "active"
    (c,) = person.consents
    assert (c.given_by, c.purpose, c.evidence) == ("the person", "door access", "form 42")
    assert c.expires_at == "2026-03-31T12:00:00.000000Z"
    listed = {p.id: p for p in store.list_persons()}
    assert set(listed) == {pid, anon}
    assert listed[anon].label is None and listed[pid].templates == 0
    clock.now = T0 + timedelta(days=31)
    assert store.get_person(pid).consent == "expired"


@pytest.mark.parametrize("bad", [
    {"given_by": "  "}, {"purpose": ""}, {"expires_at": T0 - timedelta(seconds=1)},
    {"expires_at": T0}, {"evidence": "line\nbreak"},
])
def test_bad_consent_is_refused_and_nothing_written(store: GalleryStore, bad: dict) -> None:
    with pytest.raises((GalleryInputError, ConsentError)):
        store.add_person("X", consent(**bad))
    assert store.list_persons() == []
    assert store.verify_audit().entries == 0


@pytest.mark.parametrize("pid", ["p_aaaaaaaaaaaaaaaaaaaaaaaaaa", "nonsense", "", "t_x"])
def test_unknown_person_id_is_a_clear_error_everywhere(store: GalleryStore, pid: str) -> None:
    calls = [
        lambda: store.get_person(pid),
        lambda: store.delete_person(pid),
        lambda: store.export_person(pid),
        lambda: store.withdraw_consent(pid),
        lambda: store.grant_consent(pid, consent()),
        lambda: store.add_template(pid, MODEL, "1", unit(0), {"score": 1.0}),
    ]
    for call in calls:
        with pytest.raises(PersonNotFound, match="unknown person id"):
            call()
    assert store.verify_audit().entries == 0


def test_templates_roundtrip_through_encryption(store: GalleryStore) -> None:
    pid = store.add_person("A", consent())
    vectors = [unit(i) for i in range(3)]
    batch = store.add_templates(pid, MODEL, "2021dec",
                                [NewTemplate(v, {"score": 0.5 + i / 10, "blur": 88},
                                             f"img{i}.jpg") for i, v in enumerate(vectors)])
    assert len(batch.added) == 3 and not batch.rejected and not batch.dropped
    got = {tid: vec for tid, _, vec in store.iter_templates(MODEL)}
    for tid, vec in zip(batch.added, vectors, strict=True):
        np.testing.assert_array_equal(got[tid], vec)
    matrix = store.load_templates(MODEL)
    assert matrix.vectors.dtype == np.float32 and matrix.vectors.shape == (3, 128)
    assert matrix.template_ids == list(batch.added) and set(matrix.person_ids) == {pid}
    np.testing.assert_array_equal(matrix.vectors, np.stack(vectors))
    assert list(store.iter_templates("other-model")) == []
    info = store.get_person(pid).templates
    assert info[0].quality == {"blur": 88.0, "score": 0.5}
    assert [t.source for t in info] == ["img0.jpg", "img1.jpg", "img2.jpg"]


@pytest.mark.parametrize("vector, quality, match", [
    (np.zeros(128), {"score": 1}, "all zeros"),
    (np.ones(127), {"score": 1}, "shape"),
    (np.full(128, np.nan), {"score": 1}, "NaN"),
    ("abc", {"score": 1}, "not an array|shape"),
    (np.ones(128), {"blur": 1}, "score"),
    (np.ones(128), {"score": "high"}, "number"),
    (np.ones(128), {"score": float("inf")}, "finite"),
])
def test_bad_template_input_is_refused_and_nothing_written(
        store: GalleryStore, vector: Any, quality: Any, match: str) -> None:
    pid = store.add_person("A", consent())
    good = NewTemplate(unit(1), {"score": 1.0})
    with pytest.raises(GalleryInputError, match=match):
        store.add_templates(pid, MODEL, "1", [good, NewTemplate(vector, quality)])
    assert store.get_person(pid).templates == ()
    assert store.verify_audit().entries == 1


def test_no_template_without_valid_consent(store: GalleryStore, clock: Clock) -> None:
    pid = store.add_person("A", consent(expires_at=T0 + timedelta(hours=1)))
    store.add_template(pid, MODEL, "1", unit(0), {"score": 1.0})
    clock.now = T0 + timedelta(hours=2)
    with pytest.raises(ConsentError, match="no valid consent \\(expired\\)"):
        store.add_template(pid, MODEL, "1", unit(1), {"score": 1.0})
    store.grant_consent(pid, consent())
    assert store.add_template(pid, MODEL, "1", unit(2), {"score": 1.0}).kept


def test_withdrawal_removes_templates_at_once_and_blocks_enrollment(store: GalleryStore) -> None:
    pid = store.add_person("A", consent())
    store.add_templates(pid, MODEL, "1", [NewTemplate(unit(i), {"score": 1.0})
                                          for i in range(2)])
    result = store.withdraw_consent(pid)
    assert result == {"person_id": pid, "consents_withdrawn": 1, "templates_removed": 2}
    assert list(store.iter_templates(MODEL)) == []
    assert store.get_person(pid).consent == "withdrawn"
    with pytest.raises(ConsentError, match="withdrawn"):
        store.add_template(pid, MODEL, "1", unit(3), {"score": 1.0})


def test_cap_keeps_the_best_scores(store: GalleryStore) -> None:
    pid = store.add_person("A", consent())
    scores = [0.5, 0.9, 0.7]
    first = store.add_templates(pid, MODEL, "1", [NewTemplate(unit(i), {"score": s})
                                                  for i, s in enumerate(scores)])
    by_score = dict(zip(scores, first.added, strict=True))
    low = store.add_template(pid, MODEL, "1", unit(10), {"score": 0.1})
    assert not low.kept and low.dropped == ()
    high = store.add_template(pid, MODEL, "1", unit(11), {"score": 0.95})
    assert high.kept and high.dropped == (by_score[0.5],)
    kept = {t.id: t.quality["score"] for t in store.get_person(pid).templates}
    assert kept == {by_score[0.9]: 0.9, by_score[0.7]: 0.7, high.template_id: 0.95}
    # another model has its own cap
    store.add_template(pid, "other-model", "1", unit(12), {"score": 0.0})
    assert len(store.get_person(pid).templates) == 4
    actions = [e.action for e in store.audit_entries(pid)]
    assert actions.count("template_dropped") == 2  # the 0.1 newcomer and the old 0.5


def test_listener_events_follow_commits(store: GalleryStore) -> None:
    events: list[tuple] = []
    sface: list[tuple] = []
    store.add_listener(events.append)
    store.add_listener(sface.append, model_id=MODEL)
    pid = store.add_person("A", consent())
    res = store.add_template(pid, MODEL, "1", unit(0), {"score": 1.0})
    other = store.add_template(pid, "other-model", "1", unit(1), {"score": 1.0})
    kind, tid, person, vector = events[0]
    assert (kind, tid, person) == ("template_added", res.template_id, pid)
    np.testing.assert_array_equal(vector, unit(0))
    assert [e[1] for e in sface if e[0] == "template_added"] == [res.template_id]
    assert events[1][:2] == ("template_added", other.template_id)
    with pytest.raises(GalleryInputError):  # a failed write delivers nothing
        store.add_template(pid, MODEL, "1", np.zeros(128), {"score": 1.0})
    assert len(events) == 2
    store.withdraw_consent(pid)
    removed = {tuple(e[2]) for e in events[2:]}
    assert removed == {(res.template_id,), (other.template_id,)}
    assert sface[-1] == ("templates_removed", pid, [res.template_id])
    store.delete_person(pid)
    assert events[-1] == ("person_removed", pid)
    store.remove_listener(events.append)
    store.add_person("B", consent())
    assert events[-1] == ("person_removed", pid)


def test_a_failing_listener_does_not_undo_the_commit(store: GalleryStore) -> None:
    def boom(event: tuple) -> None:
        raise RuntimeError("listener bug")

    store.add_listener(boom)
    pid = store.add_person("A", consent())
    assert store.add_template(pid, MODEL, "1", unit(0), {"score": 1.0}).kept
    assert len(list(store.iter_templates(MODEL))) == 1


def test_sweep_removes_lapsed_consent_only(store: GalleryStore, clock: Clock) -> None:
    expiring = store.add_person("E", consent(expires_at=T0 + timedelta(hours=1)))
    forever = store.add_person("F", consent())
    renewed = store.add_person("R", consent(expires_at=T0 + timedelta(hours=1)))
    store.grant_consent(renewed, consent(expires_at=T0 + timedelta(days=365)))
    for i, pid in enumerate((expiring, forever, renewed)):
        store.add_template(pid, MODEL, "1", unit(i), {"score": 1.0})
    assert store.sweep_consent() == []
    events: list[tuple] = []
    store.add_listener(events.append)
    swept = store.sweep_consent(T0 + timedelta(hours=2))
    assert swept == [{"person_id": expiring, "reason": "expired", "templates_removed": 1}]
    assert events and events[0][:2] == ("templates_removed", expiring)
    assert {pid for _, pid, _ in store.iter_templates(MODEL)} == {forever, renewed}
    (entry,) = [e for e in store.audit_entries(expiring) if e.action == "consent_lapsed"]
    assert entry.actor == "system:consent-sweeper"
    assert entry.details == {"reason": "expired", "templates_removed": 1,
                             "template_ids": [events[0][2][0]]}
    entries = store.verify_audit().entries
    assert store.sweep_consent(T0 + timedelta(hours=3)) == []
    assert store.verify_audit().entries == entries  # nothing to do, nothing logged


def test_sweeper_thread_sweeps_at_start(store: GalleryStore, clock: Clock) -> None:
    pid = store.add_person("E", consent(expires_at=T0 + timedelta(hours=1)))
    store.add_template(pid, MODEL, "1", unit(0), {"score": 1.0})
    clock.now = T0 + timedelta(hours=2)
    sweeper = ConsentSweeper(store, interval_s=3600)
    sweeper.start()
    try:
        assert sweeper.runs >= 1
        assert list(store.iter_templates(MODEL)) == []
    finally:
        sweeper.stop(timeout=5)


def test_export_person_holds_everything_but_embeddings(store: GalleryStore) -> None:
    pid = store.add_person("Cleo Subject", consent(evidence="paper form 7"))
    other = store.add_person("Other", consent())
    store.add_templates(pid, MODEL, "1", [NewTemplate(unit(i), {"score": 0.8, "blur": 120.5},
                                                      "cam") for i in range(2)])
    store.add_template(other, MODEL, "1", unit(9), {"score": 1.0})
    out = store.export_person(pid, actor="cli:op")
    assert out["person"]["label"] == "Cleo Subject" and out["person"]["id"] == pid
    assert out["consents"][0]["evidence"] == "paper form 7"
    assert out["templates"]["count"] == 2
    assert [t["quality"] for t in out["templates"]["items"]] == [{"blur": 120.5, "score": 0.8}] * 2
    assert {e["target_id"] for e in out["audit"]} == {pid}
    assert [e["action"] for e in out["audit"]] == ["person_added", "template_added",
                                                   "template_added", "person_exported"]
    text = json.dumps(out)
    for _, _, vec in store.iter_templates(MODEL):
        assert str(float(vec[0])) not in text
    assert "vector" not in text and "ciphertext" not in text and "Other" not in text


def test_concurrent_writers_in_one_process(store: GalleryStore) -> None:
    pids = [store.add_person(f"P{i}", consent()) for i in range(4)]
    errors: list[BaseException] = []

    def work(pid: str, base: int) -> None:
        try:
            for j in range(10):
                store.add_template(pid, MODEL, "1", unit(base + j), {"score": float(j)})
                store.list_persons()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(pid, 100 * i)) for i, pid in enumerate(pids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.templates for p in store.list_persons()) == [3, 3, 3, 3]
    assert store.verify_audit().ok


def apply(state: dict[str, tuple[str, bytes]], event: tuple) -> None:
    """A consumer as the matcher glue is meant to be: unknown removals are no-ops."""
    if event[0] == "template_added":
        state[event[1]] = (event[2], event[3].tobytes())
    elif event[0] == "templates_removed":
        for tid in event[2]:
            state.pop(tid, None)
    elif event[0] == "person_removed":
        for tid in [t for t, (pid, _) in state.items() if pid == event[1]]:
            del state[tid]


def as_state(store: GalleryStore) -> dict[str, tuple[str, bytes]]:
    return {tid: (pid, vec.tobytes()) for tid, pid, vec in store.iter_templates(MODEL)}


def test_attach_loads_then_listens_with_nothing_in_between(store: GalleryStore) -> None:
    pid = store.add_person("A", consent())
    store.add_templates(pid, MODEL, "1", [NewTemplate(unit(i), {"score": 1.0}) for i in range(2)])
    loaded = []
    events: list[tuple] = []
    seq = store.attach(MODEL, loaded.append, events.append)
    assert seq == store.verify_audit().entries == 3
    assert len(loaded) == 1 and loaded[0].vectors.shape == (2, 128) and events == []
    store.add_template(pid, MODEL, "1", unit(5), {"score": 1.0})
    assert [e[0] for e in events] == ["template_added"]


def test_changes_since_follows_another_process(tmp_path: Path, clock: Clock) -> None:
    """Two store objects on one database stand for the daemon and the CLI process."""
    data, key = tmp_path / "data", tmp_path / "key"
    with GalleryStore(data, key, max_templates=2, clock=clock) as daemon, \
            GalleryStore(data, key, max_templates=2, clock=clock) as cli:
        stay = cli.add_person("Stay", consent())
        cli.add_template(stay, MODEL, "1", unit(0), {"score": 0.5})
        state: dict[str, tuple[str, bytes]] = {}
        seq = daemon.attach(MODEL, lambda m: state.update(
            {t: (p, v.tobytes()) for t, p, v in zip(m.template_ids, m.person_ids, m.vectors,
                                                   strict=True)}))
        gone = cli.add_person("Gone", consent())
        cli.add_templates(gone, MODEL, "1", [NewTemplate(unit(i), {"score": 1.0})
                                             for i in range(1, 3)])
        cli.add_template(stay, "other-model", "1", unit(9), {"score": 1.0})
        cli.add_templates(stay, MODEL, "1", [NewTemplate(unit(i), {"score": 0.9})
                                             for i in range(3, 5)])  # evicts the 0.5 one
        lapsing = cli.add_person("Lapsing", consent(expires_at=T0 + timedelta(hours=1)))
        cli.add_template(lapsing, MODEL, "1", unit(7), {"score": 1.0})
        withdrawn = cli.add_person("Withdrawn", consent())
        cli.add_template(withdrawn, MODEL, "1", unit(8), {"score": 1.0})
        cli.delete_person(gone)
        cli.withdraw_consent(withdrawn)
        cli.sweep_consent(T0 + timedelta(hours=2))
        seq2, events = daemon.changes_since(seq, MODEL)
        assert seq2 == cli.verify_audit().entries > seq
        for event in events:
            apply(state, event)
        assert state == as_state(daemon)
        assert {pid for pid, _ in state.values()} == {stay}
        assert daemon.changes_since(seq2, MODEL) == (seq2, [])
