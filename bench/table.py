"""The result table: each figure against its goal, as text and as Markdown, and the
facts of the machine it was measured on."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from collections.abc import Sequence

from .harness import ROOT, Row, database_version

_GOAL_RE = re.compile(r"^\s*(>=|<=|<|>)\s*([\d,._]+)")
_BOUNDS = {
    ">=": lambda figure, bound: figure >= bound,
    "<=": lambda figure, bound: figure <= bound,
    ">": lambda figure, bound: figure > bound,
    "<": lambda figure, bound: figure < bound,
}


def goal_met(row: Row) -> str:
    """``yes``/``no`` when the goal is a bound (``>= <= > <``) on a numeric figure."""
    match = _GOAL_RE.match(row.goal)
    if not match or not isinstance(row.figure, int | float):
        return ""
    bound = float(match.group(2).replace(",", "").replace("_", ""))
    return "yes" if _BOUNDS[match.group(1)](row.figure, bound) else "no"


def format_figure(figure: float | int | str) -> str:
    if isinstance(figure, str):
        return figure
    if abs(figure) >= 100:
        return f"{figure:,.0f}"
    return f"{figure:.3g}"


HEADER = ("benchmark", "figure", "unit", "goal", "met", "note")


def table_cells(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    return [(r.name, format_figure(r.figure), r.unit, r.goal, goal_met(r), r.note) for r in rows]


def table_text(rows: Sequence[Row]) -> str:
    cells = [HEADER, *table_cells(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    right = {1}  # figures align right

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()

    return "\n".join([line(cells[0]), line(tuple("-" * w for w in widths)), *map(line, cells[1:])])


def table_markdown(rows: Sequence[Row]) -> str:
    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    separator = "|" + "|".join("---:" if i == 1 else "---" for i in range(len(HEADER))) + "|"
    return "\n".join([line(HEADER), separator, *(line(r) for r in table_cells(rows))])


def machine_facts(database_url: str) -> dict[str, str]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": (commit or "?") + (" (with local changes)" if dirty else ""),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "postgresql": database_version(database_url),
    }
