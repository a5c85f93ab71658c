"""The shape of a model's training population, saved beside the model as aggregates, so a cohort
generated with the model can look like its source: who (sex, age when the record starts), over which
calendar years and for how long each record runs.

Patients are counted in cells of (age at the record's start, its start year, its length); a cell of
fewer than `MIN_CELL` patients is left out, and when that would drop many patients the cells are made
coarser, so no training record can be read back from the summary.
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
# Record lengths in years, as bins [edge, next edge).
LENGTH_EDGES = (0, 1, 2, 5, 10, 20, 40, 70, 121)
# (age width, start-year width) in years, from finest to coarsest; the first that keeps KEEP_SHARE of
# the patients in cells of at least MIN_CELL is used.
GRAINS = ((5, 1), (10, 2), (10, 5), (20, 5), (20, 10), (40, 20))
KEEP_SHARE = 0.8


@dataclass(frozen=True)
class Cell:
    """Patients aged [age, + age_width) when their record starts in [start_year, + start_width), whose
    record runs [min_years, max_years) years; `weight` is their share of the kept patients."""

    age: int
    start_year: int
    min_years: int
    max_years: int
    weight: float


@dataclass(frozen=True)
class PopulationSummary:
    patients: int  # training patients summarised (kept in cells or not)
    female_fraction: float
    age_width: int
    start_width: int
    cells: tuple[Cell, ...]

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> PopulationSummary:
        raw = orjson.loads(data)
        return cls(**{**raw, "cells": tuple(Cell(**cell) for cell in raw["cells"])})

    def draw(self, rng: np.random.Generator) -> tuple[str, float, float, float]:
        """(sex, birth day, record start day, record end day) of one patient like the source's."""
        sex = "F" if rng.random() < self.female_fraction else "M"
        weights = np.array([cell.weight for cell in self.cells])
        cell = self.cells[int(rng.choice(len(weights), p=weights / weights.sum()))]
        start = year_start_day(cell.start_year) + rng.uniform(0, self.start_width) * DAYS_PER_YEAR
        birth = start - rng.uniform(cell.age, cell.age + self.age_width) * DAYS_PER_YEAR
        end = start + rng.uniform(cell.min_years, cell.max_years) * DAYS_PER_YEAR
        return sex, float(math.floor(birth)), float(math.floor(start)), float(math.floor(end)) + 1.0


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
        .with_columns(age=(pl.col("start") - pl.col("birth")).dt.total_days() / DAYS_PER_YEAR,
                      start_year=pl.col("start").dt.year(),
                      years=(pl.col("end") - pl.col("start")).dt.total_days() / DAYS_PER_YEAR))
    if people.height < MIN_CELL:
        raise ValueError(f"the training data has {people.height} patients; a population summary needs at least {MIN_CELL}")
    sexed = people.filter(pl.col("female") | pl.col("male"))
    female = sexed["female"].mean() if sexed.height else 0.5
    lengths = np.digitize(people["years"].to_numpy(), LENGTH_EDGES[1:-1])
    people = people.with_columns(length=pl.Series(lengths))
    for age_width, start_width in GRAINS:
        counts = (people.group_by(_banded("age", age_width), _banded("start_year", start_width), "length")
                  .len().filter(pl.col("len") >= MIN_CELL).sort("age", "start_year", "length"))
        kept = int(counts["len"].sum() or 0)
        if kept >= KEEP_SHARE * people.height:
            cells = tuple(Cell(a, s, LENGTH_EDGES[n], LENGTH_EDGES[n + 1], round(c / kept, 6))
                          for a, s, n, c in counts.iter_rows())
            return PopulationSummary(people.height, round(float(female), 4), age_width, start_width, cells)
    return _independent(people, round(float(female), 4))


def _banded(column: str, width: int) -> pl.Expr:
    return (pl.col(column) // width * width).cast(pl.Int64).alias(column)


def _independent(people: pl.DataFrame, female: float) -> PopulationSummary:
    """Too few patients for joint cells: age, start year and length each summarised on its own (at
    the finest width that keeps KEEP_SHARE of the patients), and combined as if independent."""
    def shares(column: str, widths: tuple[int, ...]) -> tuple[int, list[tuple[int, float]]]:
        for width in widths:
            counts = people.group_by(_banded(column, width) if width else column).len().filter(pl.col("len") >= MIN_CELL)
            kept = int(counts["len"].sum() or 0)
            if kept >= KEEP_SHARE * people.height or width == widths[-1]:
                if kept == 0:
                    raise ValueError("the training patients are too few to summarise without revealing any of them")
                return width, [(int(v), c / kept) for v, c in counts.sort(column).iter_rows()]
        raise AssertionError("unreachable")

    age_width, ages = shares("age", (5, 10, 20, 40, 130))
    start_width, starts = shares("start_year", (1, 2, 5, 10, 20, 50))
    _, lengths = shares("length", (0,))
    cells = tuple(Cell(a, s, LENGTH_EDGES[n], LENGTH_EDGES[n + 1], round(wa * ws * wn, 6))
                  for a, wa in ages for s, ws in starts for n, wn in lengths)
    return PopulationSummary(people.height, female, age_width, start_width, cells)


def write_summary(folder: Path, summary: PopulationSummary) -> None:
    write_bytes_atomic(Path(folder) / POPULATION, summary.to_json())


def read_summary(folder: Path) -> PopulationSummary | None:
    """The summary saved in a model folder, or None for a model trained before summaries existed."""
    path = Path(folder) / POPULATION
    return PopulationSummary.from_json(path.read_bytes()) if path.is_file() else None
