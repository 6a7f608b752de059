"""The per-input error line that batch commands (``embed``, ``identify``) share.

The contract (docs/cli.md): an unreadable input gives ``{"path": ..., "error": ...}`` on its own
line with ``--json`` (one line per input, in input order, so a reader can zip them with its
inputs), or a message on stderr without; the other inputs still run.
"""

from __future__ import annotations

import json
import sys


def report_refused(path: str, error: Exception, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"path": path, "error": str(error)}), flush=True)
    else:
        print(f"{path}: error: {error}", file=sys.stderr)
