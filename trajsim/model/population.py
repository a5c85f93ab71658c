"""The shape of a model's training population, saved beside the model as aggregates, so a cohort
generated with the model can look like its source: who (sex, age when the record starts), over which
calendar years each record runs, and whether records start at birth.

Patients are counted in cells of (starts at birth or the age at the record's start, its start year,
its end year); a cell of fewer than `MIN_CELL` patients is left out, and when that would drop many
patients the cells are made coarser, so no training record can be read back from the summary. The
end year rather than the length is kept because sources end together (an export date, a study's
close): records drawn from lengths would run past it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from trajsim.atomic import write_bytes_atomic
from trajsim.clock import DAYS_PER_YEAR, year_start_day
from trajsim.events import BIRTH, SEX_FEMALE, SEX_MALE, VISIT_START_PREFIX

POPULATION = "population.json"
MIN_CELL = 5
AT_BIRTH_DAYS = 90  # a record whose first visit comes this soon after birth starts at birth
# (age width, start-year width, end-year width) of the joint cells, from finest to coarsest; the first
# that keeps KEEP_SHARE of the patients in cells of at least MIN_CELL is used (the last keeps what it can).
GRAINS = ((5, 1, 1), (10, 2, 1), (10, 5, 2), (20, 5, 5), (20, 10, 10), (40, 20, 20), (130, 1000, 1000))
MARGINAL_WIDTHS = (1, 2, 5, 10, 20, 50)
KEEP_SHARE = 0.8


@dataclass(frozen=True)
class Cell:
    """Patients whose record starts at birth (`at_birth`, age 0) or aged [age, + age_width) when it
    starts, in [start_year, + start_width), and ends in [end_year, + end_width); `weight` is their
    share of the kept patients."""

    at_birth: bool
    age: int
    start_year: int
    end_year: int
    weight: float


@dataclass(frozen=True)
class Marginal:
    """One variable on its own in bands of `width` from `bins` (band start, share), each of at least
    MIN_CELL patients: inside a coarse cell, values are drawn from it, so a cell twenty years wide
    still ends its records in the years the source's records end."""

    width: int
    bins: tuple[tuple[int, float], ...]

    def band(self, rng: np.random.Generator, low: float, high: float) -> tuple[float, float]:
        """One band that overlaps [low, high), drawn by its share and clipped to it ([low, high)
        itself where none overlaps)."""
        inside = [(start, share) for start, share in self.bins if start < high and start + self.width > low]
        if not inside:
            return low, high
        shares = np.array([share for _, share in inside])
        start = inside[int(rng.choice(len(inside), p=shares / shares.sum()))][0]
        return max(start, low), min(start + self.width, high)

    def draw(self, rng: np.random.Generator, low: float, high: float) -> float:
        """A value in [low, high), from the bands that overlap it (uniform where none does)."""
        return float(rng.uniform(*self.band(rng, low, high)))


@dataclass(frozen=True)
class PopulationSummary:
    patients: int  # training patients summarised (kept in cells or not)
    female_fraction: float
    age_width: int
    start_width: int
    end_width: int
    cells: tuple[Cell, ...]
    ages: Marginal  # of records that do not start at birth
    start_years: Marginal
    end_years: Marginal
    # Years from a record's start to its end. Where the cells are coarse (22 MIMIC patients make one
    # cell a century wide) start and end drawn apart would give records of decades that the source's
    # stays of weeks never had; the length keeps them together (`draw`). Summaries written before it
    # have none.
    spans: Marginal | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> PopulationSummary:
        raw = orjson.loads(data)
        marginals = {key: Marginal(raw[key]["width"], tuple(tuple(b) for b in raw[key]["bins"]))
                     for key in ("ages", "start_years", "end_years", "spans") if raw.get(key) is not None}
        return cls(**{**raw, **marginals, "cells": tuple(Cell(**cell) for cell in raw["cells"])})

    def draw(self, rng: np.random.Generator) -> tuple[str, float, float, float]:
        """(sex, birth day, record start day, record end day) of one patient like the source's."""
        sex = "F" if rng.random() < self.female_fraction else "M"
        weights = np.array([cell.weight for cell in self.cells])
        cell = self.cells[int(rng.choice(len(weights), p=weights / weights.sum()))]
        start_year = self.start_years.draw(rng, cell.start_year, cell.start_year + self.start_width)
        low, high = max(cell.end_year, start_year), max(cell.end_year + self.end_width, start_year)
        # Where the length is known more finely than the end (MIMIC's dates, shifted a patient at a time),
        # the end is drawn among the cell's end years that a record of a source's length reaches; where
        # records end together (Synthea's export date), from the end years alone.
        if self.spans is not None and self.spans.width < self.end_years.width:
            shortest, longest = self.spans.band(rng, low - start_year, high - start_year)
            low, high = start_year + shortest, start_year + longest
        end_year = self.end_years.draw(rng, low, high)
        start = year_start_day(int(start_year)) + (start_year % 1) * DAYS_PER_YEAR
        end = max(year_start_day(int(end_year)) + (end_year % 1) * DAYS_PER_YEAR, start)
        age_days = (rng.uniform(0, AT_BIRTH_DAYS) if cell.at_birth
                    else self.ages.draw(rng, cell.age, cell.age + self.age_width) * DAYS_PER_YEAR)
        return sex, float(math.floor(start - age_days)), float(math.floor(start)), float(math.floor(end)) + 1.0


def summarize(events: pl.DataFrame) -> PopulationSummary:
    """The summary of a canonical event table's patients: birth from the birth event, else the first
    fact; the record from its first visit (else its first fact after the instant of birth, which holds
    static facts such as sex; history dated before the first visit does not start a record) to its last fact."""
    code, time = pl.col("code"), pl.col("time")
    people = (events.group_by("subject_id").agg(
        female=(code == SEX_FEMALE).any(), male=(code == SEX_MALE).any(),
        birth=time.filter(code == BIRTH).min(), first=time.min(), end=time.max(),
        visit=time.filter(code.str.starts_with(VISIT_START_PREFIX)).min())
        .with_columns(birth=pl.coalesce("birth", "first"))
        .join(events.select("subject_id", "time"), on="subject_id")
        .filter((pl.col("time") > pl.col("birth")) | (pl.col("first") == pl.col("end")))
        .group_by("subject_id", "female", "male", "birth", "end", "visit").agg(after_birth=pl.col("time").min())
        .with_columns(start=pl.coalesce("visit", "after_birth"))
        .with_columns(age=((pl.col("start") - pl.col("birth")).dt.total_days() / DAYS_PER_YEAR).clip(0),
                      start_year=_fractional_year("start"), end_year=_fractional_year("end")))
    if people.height < MIN_CELL:
        raise ValueError(f"the training data has {people.height} patients; a population summary needs at least {MIN_CELL}")
    sexed = people.filter(pl.col("female") | pl.col("male"))
    female = sexed["female"].mean() if sexed.height else 0.5
    people = people.with_columns(at_birth=pl.col("age") * DAYS_PER_YEAR <= AT_BIRTH_DAYS)
    people = people.with_columns(age=pl.when("at_birth").then(0.0).otherwise("age"))
    marginals = (_marginal(people.filter(~pl.col("at_birth")), "age"), _marginal(people, "start_year"),
                 _marginal(people, "end_year"),
                 _marginal(people.with_columns(span=pl.col("end_year") - pl.col("start_year")), "span"))
    for age_width, start_width, end_width in GRAINS:
        counts = (people.group_by("at_birth", _banded("age", age_width), _banded("start_year", start_width),
                                  _banded("end_year", end_width))
                  .len().filter(pl.col("len") >= MIN_CELL).sort("at_birth", "age", "start_year", "end_year"))
        kept = int(counts["len"].sum() or 0)
        if kept >= KEEP_SHARE * people.height or (age_width, start_width, end_width) == GRAINS[-1] and kept:
            cells = tuple(Cell(b, a, s, e, round(c / kept, 6)) for b, a, s, e, c in counts.iter_rows())
            return PopulationSummary(people.height, round(float(female), 4), age_width, start_width, end_width,
                                     cells, *marginals)
    raise ValueError("the training patients are too few to summarise without revealing any of them")


def _fractional_year(column: str) -> pl.Expr:
    return pl.col(column).dt.year() + (pl.col(column).dt.ordinal_day() - 1) / 366


def _banded(column: str, width: int) -> pl.Expr:
    return (pl.col(column) // width * width).cast(pl.Int64).alias(column)


def _marginal(people: pl.DataFrame, column: str) -> Marginal:
    """`column` in the finest bands that keep KEEP_SHARE of the patients in bands of MIN_CELL or more."""
    for width in MARGINAL_WIDTHS:
        counts = people.group_by(_banded(column, width)).len().filter(pl.col("len") >= MIN_CELL).sort(column)
        kept = int(counts["len"].sum() or 0)
        if kept >= KEEP_SHARE * people.height or width == MARGINAL_WIDTHS[-1]:
            return Marginal(width, tuple((int(v), round(c / max(kept, 1), 6)) for v, c in counts.iter_rows()))
    raise AssertionError("unreachable")


def write_summary(folder: Path, summary: PopulationSummary) -> None:
    write_bytes_atomic(Path(folder) / POPULATION, summary.to_json())


def read_summary(folder: Path) -> PopulationSummary | None:
    """The summary saved in a model folder, or None for a model trained before summaries existed.
    A summary this version cannot read (edited, or written by another version) is an error naming it."""
    path = Path(folder) / POPULATION
    if not path.is_file():
        return None
    try:
        return PopulationSummary.from_json(path.read_bytes())
    except (ValueError, KeyError, TypeError) as exc:  # orjson's decode errors are ValueErrors
        raise ValueError(f"{path}: not a population summary this version of trajsim reads ({exc}); "
                         f"train the model again with `trajsim train`") from None
