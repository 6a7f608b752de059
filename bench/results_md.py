"""Write one benchmark's section of bench/RESULTS.md, leaving every other section as it is.

Each bench owns one ``## ...`` section; re-running it replaces that section in place, so the file
always shows the latest run of every bench, each with its own command and date.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(section: str, text: str, path: Path = RESULTS) -> None:
    existing = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    lines = existing.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == section), None)
    if start is None:
        new = existing.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        tail = lines[end:]
        new = "\n".join([*lines[:start], text.rstrip("\n"), *(["", *tail] if tail else [])])
        new = new.rstrip("\n") + "\n"
    path.write_text(new, encoding="utf-8")
