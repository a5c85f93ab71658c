"""Condition lifecycles as data (`data/lifecycles.csv`): when a code may first be diagnosed, how long
an episode lasts, and from which date the code exists at all.

A row is keyed by a SNOMED CT code; a known condition's ICD-10-CM code shares its row. An acute
condition without a row of its own lasts its `conditions.csv` episode length (no upper bound judged).
The engine's `EpisodeKeeper`, the sampler mask and the `episodes` rules all read this one table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from functools import cache

import numpy as np

from trajsim.clock import day_number
from trajsim.knowledge.tables import DATA, Knowledge, per_knowledge, read_table

PREGNANCY = "SNOMED/72892002"
MISCARRIAGE = "SNOMED/19169002"
# a pregnancy's course: its visit types and the deliveries that end it
PRENATAL_INITIAL = "SNOMED/424441002"
PRENATAL = "SNOMED/424619006"
OBSTETRIC_ADMISSION = "SNOMED/183460006"
NORMAL_DELIVERY = "SNOMED/48782003"
CESAREAN = "SNOMED/11466000"
DELIVERIES = (NORMAL_DELIVERY, CESAREAN)  # the procedures that end a pregnancy with a birth
# procedures on a fetus (fetal heart tones, the viability scan): outside a pregnancy nothing explains them
FETAL_PROCEDURES = frozenset({"SNOMED/225158009", "SNOMED/169230002"})
LMP_TO_CONCEPTION_DAYS = 14.0  # gestational weeks count from the last menstrual period, two weeks before conception
_Z90 = 1.2815515655446004  # the standard normal's 90th percentile


@cache
def pregnancy_figures() -> dict[str, float]:
    """The figures of a pregnancy's course and care (`pregnancy.csv`) by parameter name."""
    return {r["parameter"]: float(r["value"]) for r in read_table(DATA.joinpath("pregnancy.csv"), ("parameter", "value"))}


@dataclass(frozen=True)
class Lifecycle:
    """How one condition code lives: a first diagnosis at ages [onset_age_min, onset_age_max) in years;
    an episode (if `median_days` is set) lasting a lognormal number of days with that median and 90th
    percentile, capped at `max_days` (inf: no bound judged); the code is valid from `valid_from`
    (engine day; None: always)."""

    code: str
    onset_age_min: float = 0.0
    onset_age_max: float = math.inf
    median_days: float | None = None
    p90_days: float | None = None
    max_days: float = math.inf
    valid_from: float | None = None

    @property
    def episodic(self) -> bool:
        return self.median_days is not None

    def draw_duration(self, rng: np.random.Generator) -> float:
        """An episode's length in days (at least one)."""
        sigma = math.log(self.p90_days / self.median_days) / _Z90 if self.p90_days and self.p90_days > self.median_days else 0.0
        return float(min(max(rng.lognormal(math.log(self.median_days), sigma), 1.0), self.max_days))

    def onset_plausible(self, age: float) -> bool:
        return self.onset_age_min <= age < self.onset_age_max


def _number(text: str, default: float | None) -> float | None:
    return float(text) if text.strip() else default


@cache
def _table() -> tuple[Lifecycle, ...]:
    rows = read_table(DATA.joinpath("lifecycles.csv"), ("code", "onset_age_min", "onset_age_max", "duration_median_days",
                                                       "duration_p90_days", "duration_max_days", "valid_from"))
    return tuple(Lifecycle(r["code"], _number(r["onset_age_min"], 0.0), _number(r["onset_age_max"], math.inf),
                           _number(r["duration_median_days"], None), _number(r["duration_p90_days"], None),
                           _number(r["duration_max_days"], math.inf),
                           day_number(date.fromisoformat(r["valid_from"])) if r["valid_from"] else None)
                 for r in rows)


@per_knowledge
def lifecycles(knowledge: Knowledge) -> dict[str, Lifecycle]:
    """Lifecycle by code (SNOMED CT and the ICD-10-CM code of a known condition), built once per knowledge base."""
    found = {row.code: row for row in _table()}
    for condition in knowledge.conditions.values():
        if condition.code not in found and condition.course == "acute" and condition.duration_days:
            found[condition.code] = Lifecycle(condition.code, median_days=condition.duration_days)
    for condition in knowledge.conditions.values():
        if condition.code in found:
            found[condition.icd10cm] = found[condition.code]
    return found


def same_condition(knowledge: Knowledge, code: str) -> tuple[str, ...]:
    """The codes that name the same condition as `code` (its SNOMED CT and ICD-10-CM codes)."""
    condition = knowledge.conditions_by_code.get(code)
    return (condition.code, condition.icd10cm) if condition else (code,)
