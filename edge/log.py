"""Logging set-up: journald under systemd, JSON lines elsewhere, never a template or an image.

Why three outputs: under systemd, stderr is already a journal stream, and priority prefixes
(``<3>``) make ``journalctl -p err`` work without any library; a container or a developer's pipe
wants one JSON object per line that a log shipper can parse; ``text`` is for a human at a
terminal. ``auto`` picks the journal only when ``$JOURNAL_STREAM`` names the very file stderr is
(systemd sets it; a child that inherited the variable but was redirected must not believe it).

Why a redaction filter on every handler: the privacy promise includes logs. A debugging line
that passes an embedding, a crop or raw bytes in ``extra`` must not write it to disk, so bulky
values are replaced by ``"<redacted>"`` before any formatter sees them.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TextIO

from edge.config import LoggingConfig

REDACTED = "<redacted>"
#: A list or tuple of more numbers than this is treated as a vector (an embedding), not a value.
MAX_NUMBERS = 16

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName",
    "color_message",  # uvicorn's copy of msg with ANSI colours: noise in a journal
}
_MARK = "_edge_face_handler"


def _is_bulky(value: Any) -> bool:
    """Bytes, arrays with at least one dimension, and long lists of numbers."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return True
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "__array__") and len(shape) > 0:
        return True  # numpy / tensor arrays; numpy scalars have shape ()
    if isinstance(value, (list, tuple, set, frozenset)) and len(value) > MAX_NUMBERS:
        return all(isinstance(v, numbers.Number) for v in value)
    return False


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a caller passed with ``extra={...}``."""
    return {k: v for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")}


class RedactFilter(logging.Filter):
    """Replace bulky values in ``extra``, in the arguments and in the message itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in extra_fields(record).items():
            if _is_bulky(value):
                setattr(record, key, REDACTED)
        if _is_bulky(record.msg):
            record.msg = REDACTED
        if isinstance(record.args, tuple):
            record.args = tuple(REDACTED if _is_bulky(a) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: REDACTED if _is_bulky(v) else v for k, v in record.args.items()}
        return True


def _json_default(value: Any) -> Any:
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def _timestamp(record: logging.LogRecord) -> str:
    dt = datetime.fromtimestamp(record.created, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``msg``, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            out[key if key not in out else f"extra_{key}"] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=_json_default)


class KeyValueFormatter(logging.Formatter):
    """``logger: message key=value ...`` for humans and for the journal's MESSAGE field."""

    def __init__(self, with_time: bool) -> None:
        super().__init__()
        self._with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{record.name}: {record.getMessage()}"]
        for key, value in extra_fields(record).items():
            shown = value if isinstance(value, str) and " " not in value else json.dumps(
                value, ensure_ascii=False, default=_json_default)
            parts.append(f"{key}={shown}")
        line = " ".join(parts)
        if self._with_time:
            line = f"{_timestamp(record)} {record.levelname} {line}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def syslog_priority(levelno: int) -> int:
    """journald/syslog priority of a logging level (debug 7 ... critical 2)."""
    if levelno <= logging.DEBUG:
        return 7
    if levelno <= logging.INFO:
        return 6
    if levelno <= logging.WARNING:
        return 4
    if levelno <= logging.ERROR:
        return 3
    return 2


class SyslogPrefixFormatter(KeyValueFormatter):
    """Every line prefixed with ``<N>`` (journald's SyslogLevelPrefix), tracebacks included."""

    def __init__(self) -> None:
        super().__init__(with_time=False)  # journald stamps the time itself

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def journal_stream_matches(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``$JOURNAL_STREAM`` (``dev:inode``) is the file behind ``stream``."""
    env = os.environ if environ is None else environ
    expected = env.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False  # StringIO, closed stream: not the journal
    return expected.strip() == f"{st.st_dev}:{st.st_ino}"


def _journal_handler(stream: TextIO) -> logging.Handler:
    try:
        from systemd.journal import JournalHandler  # type: ignore[import-not-found]
    except ImportError:
        handler: logging.Handler = logging.StreamHandler(stream)
        handler.setFormatter(SyslogPrefixFormatter())
        return handler
    handler = JournalHandler(SYSLOG_IDENTIFIER="edge-face")
    handler.setFormatter(KeyValueFormatter(with_time=False))
    return handler


def setup_logging(config: LoggingConfig, *, stream: TextIO | None = None,
                  environ: Mapping[str, str] | None = None) -> str:
    """Configure the root logger once for the process; returns the format chosen.

    Calling it again replaces the handler it installed before (tests, SIGHUP reload) and
    leaves other handlers (pytest's capture, for one) alone.
    """
    out = sys.stderr if stream is None else stream
    mode = config.format
    if mode == "auto":
        mode = "journal" if journal_stream_matches(out, environ) else "json"
    handler: logging.Handler
    if mode == "journal":
        handler = _journal_handler(out)
    else:
        handler = logging.StreamHandler(out)
        handler.setFormatter(JsonFormatter() if mode == "json" else KeyValueFormatter(True))
    handler.addFilter(RedactFilter())
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(_LEVELS[config.level])
    logging.captureWarnings(True)
    return mode
