"""How the demo shows numbers, durations, paths and tables to a person at a terminal.

Shared by the live progress and the end summary, so both read the same way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


def count(value: int) -> str:
    return f"{value:,}"


def clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def grid(rows: list[list[str]], min_width: int = 0) -> list[str]:
    """Rows as aligned columns: the first left-aligned, the others right-aligned.

    A live block passes `min_width`, so its columns do not shift as the counts grow.
    """
    widths = [max(min_width, *(len(row[i]) for row in rows)) for i in range(len(rows[0]))]
    return [
        "  "
        + row[0].ljust(widths[0])
        + "".join(cell.rjust(w + 2) for cell, w in zip(row[1:], widths[1:], strict=True))
        for row in rows
    ]


def shown(path: Path) -> str:
    """`path` relative to the working directory when it is under it: shorter to read."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)
