"""What each metric family hands the report: its numbers for metrics.json, the few that lead the
report, and plots with captions saying how to read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Headline:
    """A number that leads the report, with how to read it (e.g. "1 = identical")."""

    label: str
    value: float | None
    reading: str


@dataclass(frozen=True)
class Plot:
    """A rendered PNG and the caption that explains the metric it shows."""

    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Listing:
    """A small table for people (e.g. the codes whose rates differ most), shown under the headlines."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass
class Section:
    """One metric family's result. `metrics` is JSON-ready; `notes` say what was skipped and why."""

    name: str
    summary: str  # what the family measures, for people: paragraphs separated by blank lines
    metrics: dict[str, Any]
    headlines: list[Headline] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    listings: list[Listing] = field(default_factory=list)


def rounded(value: float | None, digits: int = 4) -> float | None:
    """A metric value for JSON: rounded so reports diff cleanly, None when undefined (NaN)."""
    if value is None or value != value:
        return None
    return round(float(value), digits)
