"""Progress bars for the long CLI commands: on a terminal only, never with ``--json``.

Why these rules: a bar is for a person watching; a script reading ``--json`` or a log collecting
stderr would get carriage-return noise. The bar goes to stderr (stdout stays the command's
result) and disappears when the work ends, so the final lines read as they always did.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO

from edge.progress import Progress


@contextlib.contextmanager
def progress_bar(desc: str, unit: str, *, enabled: bool = True,
                 stream: TextIO | None = None) -> Iterator[Progress | None]:
    """Yield a ``progress(done, total)`` that draws a bar, or None when no bar is wanted."""
    out = sys.stderr if stream is None else stream
    if not enabled or not out.isatty():
        yield None
        return
    from tqdm import tqdm

    # Made at the first report, when the total is known: no "0it [00:00, ?it/s]" flash first.
    bars: list[tqdm] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc=desc, unit=unit, total=total, file=out, leave=False,
                             dynamic_ncols=True, mininterval=0.1))
        bar = bars[0]
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.refresh()  # the last step is drawn even inside tqdm's redraw interval

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()
