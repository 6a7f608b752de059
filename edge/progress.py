"""How long-running work reports how far it is, without knowing who is watching.

The service layer (enrollment over many photos, a bundle import, model preparation) takes an
optional ``progress(done, total)`` callback and calls it as it goes; the CLI turns that into a
bar on a terminal (``edge.cli.progress``), the API passes nothing. So no library below the CLI
imports a progress-bar package, and a caller that passes nothing pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(done, total)``: ``done`` of ``total`` steps are finished (``total`` may grow once
#: the work knows its size).
Progress = Callable[[int, int], None]


def report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
