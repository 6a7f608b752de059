"""The SQLite outbox: durable before publish, FIFO, bounded, and intact after kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.config import load_config
from edge.events.outbox import Outbox, OutboxError, default_outbox_path

REPO = Path(__file__).resolve().parents[1]


def _fill(outbox: Outbox, n: int, start: int = 0) -> list[str]:
    ids = [f"ev-{i:05d}" for i in range(start, start + n)]
    for event_id in ids:
        outbox.put("edge-face/d/events/unknown", b'{"event_id":"%s"}' % event_id.encode(), event_id)
    return ids


def test_fifo_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with Outbox(path) as outbox:
        ids = _fill(outbox, 10)
        head = outbox.peek(limit=3)
        assert [e.event_id for e in head] == ids[:3]
        assert outbox.remove(head[0].seq) and not outbox.remove(head[0].seq)
        assert [e.event_id for e in outbox.peek(after_seq=head[1].seq, limit=2)] == ids[2:4]
        assert outbox.remove_many([head[1].seq, head[2].seq]) == 2
    with Outbox(path) as reopened:
        assert reopened.depth() == 7
        assert [e.event_id for e in reopened.peek(limit=100)] == ids[3:]
        # seq never goes back, even after the head was removed: order survives restarts.
        new_seq = reopened.put("t", b"{}", "ev-new")
        assert new_seq > max(e.seq for e in reopened.peek(limit=6))
        assert reopened.integrity_check() == "ok"


def test_wal_and_full_sync(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        _fill(outbox, 1)
        con = sqlite3.connect(tmp_path / "o.sqlite3")
        try:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            con.close()
        assert (tmp_path / "o.sqlite3-wal").exists()


def test_count_bound_drops_oldest_and_counts(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(tmp_path / "o.sqlite3", max_events=5) as outbox:
        ids = _fill(outbox, 8)
        assert outbox.depth() == 5
        assert [e.event_id for e in outbox.peek()] == ids[3:]
        assert outbox.dropped == 3
    drops = [r for r in caplog.records if r.getMessage().startswith("outbox full")]
    assert sum(r.dropped for r in drops) == 3  # type: ignore[attr-defined]
    assert {r.reason for r in drops} == {"count"}  # type: ignore[attr-defined]


def test_age_bound_drops_oldest(tmp_path: Path) -> None:
    now = time.time()
    with Outbox(tmp_path / "o.sqlite3", max_age_s=3600) as outbox:
        outbox.put("t", b"{}", "old-1", created=now - 7200)  # dropped at once: already too old
        assert outbox.depth() == 0 and outbox.dropped == 1
        outbox.put("t", b"{}", "fresh", created=now - 600)
        assert outbox.prune(now=now + 3000 + 1) == 1  # 3601 s old by then
        outbox.put("t", b"{}", "newest")
        assert [e.event_id for e in outbox.peek()] == ["newest"]
        assert outbox.dropped == 2


def test_bounds_apply_when_reopened_with_smaller_limits(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    with Outbox(path) as outbox:
        ids = _fill(outbox, 6)
    with Outbox(path, max_events=2) as smaller:
        assert [e.event_id for e in smaller.peek()] == ids[4:]
        assert smaller.dropped == 4


def test_bad_entries_are_refused(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite3") as outbox:
        outbox.put("t", b"{}", "dup")
        with pytest.raises(OutboxError, match="already in the outbox"):
            outbox.put("t", b"{}", "dup")
        with pytest.raises(OutboxError, match="topic"):
            outbox.put("", b"{}", "x1")
        with pytest.raises(OutboxError, match="bytes"):
            outbox.put("t", "text", "x2")  # type: ignore[arg-type]
        with pytest.raises(OutboxError, match="exceeds"):
            outbox.put("t", b"x" * 70_000, "x3")
        with pytest.raises(OutboxError, match="event_id"):
            outbox.put("t", b"{}", "")
        assert outbox.depth() == 1  # the refusals lost nothing that was there
    with pytest.raises(OutboxError, match="closed"):
        outbox.depth()
    with pytest.raises(OutboxError, match="max_events"):
        Outbox(tmp_path / "o2.sqlite3", max_events=0)


def test_corrupt_or_foreign_file_is_refused_not_replaced(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="not a usable outbox database"):
        Outbox(garbage)
    assert garbage.read_bytes().startswith(b"this is not sqlite")  # nothing destroyed

    foreign = tmp_path / "foreign.sqlite3"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE outbox (id INTEGER, body TEXT)")
    con.commit()
    con.close()
    with pytest.raises(OutboxError, match="unexpected columns"):
        Outbox(foreign)

    newer = tmp_path / "newer.sqlite3"
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(OutboxError, match="newer"):
        Outbox(newer)


def test_default_location_is_the_data_dir(tmp_path: Path) -> None:
    config = load_config(env={"EDGE_FACE_STORAGE__DATA_DIR": str(tmp_path / "data"),
                              "EDGE_FACE_EVENTS__OUTBOX_MAX_EVENTS": "3"})
    assert default_outbox_path(config.storage) == tmp_path / "data" / "outbox.sqlite3"
    with Outbox.from_config(config) as outbox:
        _fill(outbox, 4)
        assert outbox.path == tmp_path / "data" / "outbox.sqlite3"
        assert outbox.depth() == 3


_WRITER = """
import sys
from edge.events.outbox import Outbox
outbox = Outbox(sys.argv[1])
i = 0
while True:
    event_id = "kill-%06d" % i
    outbox.put("edge-face/d/events/unknown", b'{"event_id":"%s"}' % event_id.encode(), event_id)
    print(event_id, flush=True)
    i += 1
"""


def test_kill_9_loses_no_committed_event(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    reported = [proc.stdout.readline().strip() for _ in range(300)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with Outbox(path) as outbox:
        assert outbox.integrity_check() == "ok"
        stored = [e.event_id for e in outbox.peek(limit=100_000)]
    # Every id the writer reported was committed before it was printed.
    assert stored[:len(reported)] == reported
    assert len(stored) >= len(reported)
