"""Markdown pieces shared by run reports, summaries and data cards: tables and figures."""

from __future__ import annotations

from typing import Any


def figure(value: Any) -> str:
    """A figure as a report shows it: three decimals for a float, `n/a` for None."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
