"""A stream scenario describes one hospital and the traffic it produces: when patients arrive (by
hour of day and weekday), how many beds and clinicians there are, and surges (a mass-casualty
event, a flu season) that multiply arrivals for a while and may change who arrives.

Stream scenarios are TOML files of their own (`scenarios/stream/`); a mistake in one becomes the same
one-line `ScenarioError` as in a cohort scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources import files
from pathlib import Path

from pydantic import Field, StrictFloat, StrictInt, StrictStr, field_validator, model_validator

from trajsim.knowledge import read_table
from trajsim.scenario.base import ScenarioName, Seed, StrictModel, load_toml

# Relative ED arrival rate by hour of day, midnight first. An illustrative shape, not a published
# table: US EDs see a trough around 05:00 and a late-morning-to-evening plateau three to four times
# higher (the daily cycle discussed by Hoot and Aronsky, Ann Emerg Med 2008;52:126-136). Replace it
# with your own ED's hourly counts.
DIURNAL_ARRIVALS = (0.55, 0.45, 0.38, 0.33, 0.30, 0.30, 0.38, 0.55, 0.85, 1.15, 1.35, 1.45,
                    1.45, 1.40, 1.38, 1.35, 1.35, 1.35, 1.35, 1.30, 1.20, 1.05, 0.85, 0.70)
# Relative arrival rate Monday..Sunday, also illustrative: Monday is the busiest ED day.
WEEKDAY_ARRIVALS = (1.12, 1.02, 0.99, 0.98, 0.98, 0.95, 0.96)


@dataclass(frozen=True)
class Presentation:
    """Why a patient comes to the ED and what follows: triage level (ESI 1-5), who it happens to,
    how often it ends in admission and for how long, the labs drawn and the medication ordered
    (data/presentations.csv)."""

    condition: str  # key in trajsim.knowledge's conditions
    esi: int
    weight: float
    age_min: float  # youngest age at which it is a plausible ED presentation
    admit_probability: float
    stay_days: float | None
    labs: tuple[str, ...]
    medication: str | None


@cache
def presentations() -> dict[str, Presentation]:
    """The ED case mix, by condition key."""
    rows = read_table(files("trajsim.stream").joinpath("data/presentations.csv"), (
        "condition", "esi", "weight", "age_min", "admit_probability", "stay_days", "labs", "medication"))
    return {row["condition"]: Presentation(
        row["condition"], int(row["esi"]), float(row["weight"]), float(row["age_min"]), float(row["admit_probability"]),
        float(row["stay_days"]) if row["stay_days"] else None, tuple(row["labs"].split()),
        row["medication"] or None) for row in rows}


class Arrivals(StrictModel):
    per_day: StrictFloat = Field(120.0, gt=0, le=100_000)  # mean ED arrivals per day before any surge
    hourly: tuple[StrictFloat, ...] = Field(DIURNAL_ARRIVALS, min_length=24, max_length=24)
    weekday: tuple[StrictFloat, ...] = Field(WEEKDAY_ARRIVALS, min_length=7, max_length=7)

    @field_validator("hourly", "weekday")
    @classmethod
    def _positive(cls, rates: tuple[float, ...]) -> tuple[float, ...]:
        if any(rate < 0 for rate in rates) or not any(rates):
            raise ValueError("relative rates must be zero or more, and not all zero")
        return rates


class Capacity(StrictModel):
    ed_beds: StrictInt = Field(20, ge=1, le=10_000)
    ward_beds: StrictInt = Field(120, ge=1, le=100_000)
    triage_nurses: StrictInt = Field(2, ge=1, le=1_000)
    physicians: StrictInt = Field(3, ge=1, le=1_000)
    ward_occupancy: StrictFloat = Field(0.8, ge=0, le=1)  # share of ward beds taken when the window opens


class Surge(StrictModel):
    """Arrivals multiplied by `multiplier` from `start_hour` for `hours`; with `case_mix`, arrivals
    during the surge present only with those conditions (e.g. injuries after a highway crash)."""

    name: StrictStr = Field(min_length=1)
    start_hour: StrictFloat = Field(ge=0)
    hours: StrictFloat = Field(gt=0)
    multiplier: StrictFloat = Field(gt=0, le=1000)
    case_mix: tuple[StrictStr, ...] = ()

    @field_validator("case_mix")
    @classmethod
    def _known_conditions(cls, case_mix: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in case_mix if c not in presentations()]
        if unknown:
            raise ValueError(f"unknown condition {unknown[0]!r}; allowed: {', '.join(presentations())}")
        return case_mix

    def covers(self, hour: float) -> bool:
        return self.start_hour <= hour < self.start_hour + self.hours


class StreamScenario(StrictModel):
    """The defaults describe a mid-sized community hospital on an ordinary day."""

    name: ScenarioName = "hospital"
    description: StrictStr = "A mid-sized community hospital: 120 ED arrivals a day, 20 ED beds, 120 ward beds"
    seed: Seed = 20261125
    start: datetime = datetime(2025, 1, 6)  # a Monday, midnight
    hours: StrictFloat = Field(24.0, gt=0, le=24 * 366)
    arrivals: Arrivals = Arrivals()
    capacity: Capacity = Capacity()
    surges: tuple[Surge, ...] = ()

    @model_validator(mode="after")
    def _naive_start(self) -> StreamScenario:
        if self.start.tzinfo is not None:
            raise ValueError("start must be a local date-time without a time zone (the simulated clock runs in UTC)")
        return self

    def surges_at(self, hour: float) -> list[Surge]:
        return [surge for surge in self.surges if surge.covers(hour)]


def load_stream_scenario(path: Path) -> StreamScenario:
    """Read and validate a stream scenario TOML file, or raise ScenarioError saying what to fix."""
    return load_toml(path, StreamScenario)
