"""What the engine asks of a trajectory source, and what a source answers.

The engine owns the clock and the patient's state; a source only proposes each patient's next
visit. The rule-based reference simulator and the learned sequence model both implement
`TrajectorySource`, so either can drive the same engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from trajsim.clock import DAYS_PER_YEAR

ACTIVE = float("inf")  # end day of something still ongoing


@dataclass(frozen=True, slots=True)
class Fact:
    """One clinical fact of a visit, `offset_days` after the visit starts.

    `code` is SYSTEM/CODE or a TRAJSIM structural code. For a medication `text` names its
    indication; for a CONDITION_END or MEDICATION_END `text` names the code that ends.
    """

    code: str
    offset_days: float = 0.0
    value: float | None = None
    unit: str | None = None
    text: str | None = None


@dataclass(slots=True)
class Visit:
    """A proposed visit. `encounter_class` None means history recorded outside any encounter
    (e.g. a condition diagnosed before the simulated period began)."""

    day: float
    encounter_class: str | None
    duration_days: float
    facts: list[Fact]


@dataclass(slots=True)
class PatientState:
    """Everything the engine knows about one simulated patient. Days count from 1970-01-01.

    `conditions` and `medications` map a code to the day it ends (ACTIVE while ongoing); the engine
    updates them from recorded facts. `memory` is the source's own per-patient scratch space.
    """

    subject_id: int
    sex: str
    birth_day: float
    entry_day: float
    end_day: float
    death_day: float | None
    rng: np.random.Generator
    now: float = 0.0
    conditions: dict[str, float] = field(default_factory=dict)
    medications: dict[str, float] = field(default_factory=dict)
    allergies: set[str] = field(default_factory=set)  # allergy codes recorded so far (allergies do not end)
    memory: dict[str, Any] = field(default_factory=dict)
    height_z: float = 0.0  # height in standard deviations from the growth-chart median
    weight_factor: float = 1.0  # weight relative to the growth-chart median for height

    @property
    def exit_day(self) -> float:
        """When the record stops: death or the end of the simulated period."""
        return self.end_day if self.death_day is None else min(self.death_day, self.end_day)

    def age_at(self, day: float) -> float:
        return (day - self.birth_day) / DAYS_PER_YEAR

    def active_conditions(self, day: float) -> set[str]:
        return {code for code, end in self.conditions.items() if end > day}


class TrajectorySource(Protocol):
    """Proposes visits; the engine decides what is recorded."""

    def admit(self, patient: PatientState) -> list[Visit]:
        """What is already true when the patient enters the simulation (history before the period)."""
        ...

    def next_visits(self, patients: Sequence[PatientState]) -> list[Visit | None]:
        """The next visit of each patient at its `now` (batched: one call for all patients waiting
        at the same simulated instant); None when the source proposes nothing more."""
        ...
