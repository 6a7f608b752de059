"""Logging: JSON lines, journald detection by dev:inode, and redaction of bulky values."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.config import LoggingConfig
from edge.log import REDACTED, journal_stream_matches, setup_logging


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_json_lines_with_structured_fields() -> None:
    buf = io.StringIO()
    assert setup_logging(LoggingConfig(level="debug", format="json"), stream=buf) == "json"
    log = logging.getLogger("edge.test")
    log.info("event queued %s", "ev-1", extra={"event_id": "ev-1", "seq": 3, "ratio": 0.5})
    log.debug("debug line")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"msg_extra": "x"})
    first, second, third = _lines(buf)
    assert first["msg"] == "event queued ev-1" and first["level"] == "info"
    assert first["logger"] == "edge.test"
    assert first["event_id"] == "ev-1" and first["seq"] == 3 and first["ratio"] == 0.5
    assert first["time"].endswith("Z")
    assert second["level"] == "debug"
    assert "ValueError: boom" in third["exc"]


def test_level_filters() -> None:
    buf = io.StringIO()
    setup_logging(LoggingConfig(level="warning", format="json"), stream=buf)
    logging.getLogger("edge.test").info("hidden")
    logging.getLogger("edge.test").warning("shown")
    assert [r["msg"] for r in _lines(buf)] == ["shown"]


def test_redaction_of_templates_images_and_vectors() -> None:
    buf = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=buf)
    log = logging.getLogger("edge.test")
    embedding = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    log.info("match", extra={
        "template": embedding,
        "crop": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "vector": [float(x) for x in embedding[:17]],
        "bbox": [10, 20, 30, 40],  # short list of numbers: a value, kept
        "names": ["a"] * 20,  # long list of strings: not a vector, kept
        "similarity": np.float32(0.5),  # numpy scalar: kept
    })
    log.info("arg %s", embedding)
    log.info(embedding)
    rec, arg_line, msg_line = _lines(buf)
    assert rec["template"] == REDACTED and rec["crop"] == REDACTED and rec["vector"] == REDACTED
    assert rec["bbox"] == [10, 20, 30, 40]
    assert rec["names"] == ["a"] * 20
    assert rec["similarity"] == 0.5
    assert arg_line["msg"] == f"arg {REDACTED}"
    assert msg_line["msg"] == REDACTED
    out = buf.getvalue()
    assert not any(repr(float(x))[:7] in out for x in embedding)  # no value of the template


def test_text_format() -> None:
    buf = io.StringIO()
    assert setup_logging(LoggingConfig(format="text"), stream=buf) == "text"
    logging.getLogger("edge.test").warning("camera lost", extra={"attempts": 2})
    line = buf.getvalue().strip()
    assert "WARNING edge.test: camera lost attempts=2" in line


def test_auto_picks_journal_only_for_the_matching_stream(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("w+") as real, (tmp_path / "other").open("w+") as other:
        st = os.fstat(real.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal_stream_matches(real, env)
        assert not journal_stream_matches(other, env)
        assert not journal_stream_matches(io.StringIO(), env)
        assert not journal_stream_matches(real, {})

        # Inherited variable but redirected elsewhere: JSON, not journal.
        assert setup_logging(LoggingConfig(format="auto"), stream=other, environ=env) == "json"
        assert setup_logging(LoggingConfig(format="auto"), stream=real, environ=env) == "journal"
        log = logging.getLogger("edge.test")
        log.error("broker refused", extra={"reason": "Not authorized", "blob": b"\x00" * 64})
        log.info("two\nlines")
        real.flush()
        real.seek(0)
        lines = real.read().splitlines()
    # Without systemd-python (not importable here), journald's SyslogLevelPrefix lines.
    assert lines[0].startswith("<3>edge.test: broker refused")
    assert 'reason="Not authorized"' in lines[0] and f"blob={REDACTED}" in lines[0]
    assert lines[1:] == ["<6>edge.test: two", "<6>lines"]


def test_setup_twice_replaces_its_own_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=first)
    setup_logging(LoggingConfig(format="json"), stream=second)
    logging.getLogger("edge.test").warning("once")
    assert first.getvalue() == "" and len(_lines(second)) == 1


def test_uvicorns_coloured_copy_of_the_message_is_dropped() -> None:
    buf = io.StringIO()
    setup_logging(LoggingConfig(format="json"), stream=buf)
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
    (line,) = _lines(buf)
    assert line["msg"] == "Started server process [42]" and "color_message" not in line
    assert "\x1b" not in buf.getvalue() and "\\u001b" not in buf.getvalue()
