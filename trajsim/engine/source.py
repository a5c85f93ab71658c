"""The contract between the engine and a trajectory source, and who writes which kind of fact.

The engine owns the clock, the rules, death and the patient's state; a source proposes each
patient's visits and declares the kinds of fact it authors (`TrajectorySource.authors`). Every kind
has exactly one author per run: the engine's scheduled care (`schedules.py`) writes only the kinds
the source does not author. The rule-based reference simulator and the learned sequence model both
implement `TrajectorySource`, so either can drive the same engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from types import MappingProxyType
from typing import Generic, TypeVar

import numpy as np

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import (
    CONDITION_END,
    DEATH,
    MEDICATION_END,
    VISIT_END,
    VISIT_START_PREFIX,
    WELL_ADULT,
    WELL_CHILD,
)
from trajsim.vocab import load_vocabulary

ACTIVE = float("inf")  # end day of something still ongoing
NEVER_RECORDED = float("-inf")  # end day of something never recorded (days before 1970 are negative)


class FactKind(Enum):
    """The kinds of clinical fact, each written by one author per run."""

    VISITS = "visits"  # the source's own sick, follow-up and acute visits: encounters and their types
    WELL_VISITS = "well visits"  # preventive visits on the periodicity schedule (well child, well adult)
    DIAGNOSES = "diagnoses"  # condition onsets (complications included) and ends
    PRESCRIPTIONS = "prescriptions"  # orders and stops (renewals and guideline therapy are the Prescriber's)
    MEASUREMENTS = "measurements"  # vital signs and labs with their values
    IMMUNIZATIONS = "immunizations"  # scheduled doses and seasonal shots
    PROCEDURES = "procedures"  # screenings and the procedures a chart calls for
    ALLERGIES = "allergies"
    SOCIAL_HISTORY = "social history"  # smoking and pregnancy status, screening answers: what the patient reports
    DEATHS = "deaths"


# Who the patient is, drawn when the patient is created, and the death draw: always the engine's.
ENGINE_KINDS = frozenset({FactKind.ALLERGIES, FactKind.SOCIAL_HISTORY, FactKind.DEATHS})
# The kinds whose whole schedule the engine holds as data (the Bright Futures periodicity schedule,
# the ACIP schedules), which a source may leave to it (`TrajectorySource.defers`).
DEFERRABLE_KINDS = frozenset({FactKind.WELL_VISITS, FactKind.IMMUNIZATIONS})
_DOMAIN_KINDS = {"condition": FactKind.DIAGNOSES, "medication": FactKind.PRESCRIPTIONS, "vital": FactKind.MEASUREMENTS,
                 "lab": FactKind.MEASUREMENTS, "immunization": FactKind.IMMUNIZATIONS,
                 "procedure": FactKind.PROCEDURES, "allergy": FactKind.ALLERGIES, "encounter_type": FactKind.VISITS,
                 "social": FactKind.SOCIAL_HISTORY, "survey": FactKind.SOCIAL_HISTORY}
_STRUCTURAL_KINDS = {CONDITION_END: FactKind.DIAGNOSES, MEDICATION_END: FactKind.PRESCRIPTIONS,
                     DEATH: FactKind.DEATHS, VISIT_END: FactKind.VISITS}


@cache
def _vocabulary_kinds() -> dict[str, FactKind]:
    kinds = {concept.code: _DOMAIN_KINDS[concept.domain] for concept in load_vocabulary()}
    return kinds | {WELL_CHILD: FactKind.WELL_VISITS, WELL_ADULT: FactKind.WELL_VISITS} | _STRUCTURAL_KINDS


def fact_kind(code: str) -> FactKind | None:
    """The kind of fact a code records; None for what is no one's fact (birth, sex). A visit's start
    counts as VISITS: whether it is a well visit is said by its type code."""
    if code.startswith(VISIT_START_PREFIX):
        return FactKind.VISITS
    return _vocabulary_kinds().get(code)


@dataclass(frozen=True, slots=True)
class Fact:
    """One clinical fact of a visit, `offset_days` after the visit starts.

    `code` is SYSTEM/CODE or a TRAJSIM structural code. For a medication `text` names its
    indication, for a procedure the condition it is done for; for a CONDITION_END or MEDICATION_END
    `text` names the code that ends.
    """

    code: str
    offset_days: float = 0.0
    value: float | None = None
    unit: str | None = None
    text: str | None = None
    # a stop recorded even in a chart that records none (`TrajectorySource.records_stops`): a drug a
    # pregnancy or a lab value rules out is stopped where a reader sees it
    always_recorded: bool = False


@dataclass(slots=True)
class Visit:
    """A proposed visit. `encounter_class` None means facts recorded outside any encounter
    (e.g. a condition diagnosed before the simulated period began, or a refill)."""

    day: float
    encounter_class: str | None
    duration_days: float
    facts: list[Fact]


StateT = TypeVar("StateT")


@dataclass(slots=True)
class PatientState(Generic[StateT]):
    """Everything the engine knows about one simulated patient. Days count from 1970-01-01.

    `conditions` and `medications` map a code to the day it ends (ACTIVE while ongoing); the engine
    updates them from recorded facts. `source_state` is the source's own record of the patient
    (`TrajectorySource.new_state`), kept by the engine and read by no one else.
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
    # drugs stopped whose stop the chart does not show (a source that records no stops): a reader of
    # the chart takes them as still taken
    unrecorded_stops: set[str] = field(default_factory=set)
    source_state: StateT | None = None
    height_z: float = 0.0  # height in standard deviations from the growth-chart median
    weight_factor: float = 1.0  # weight relative to the growth-chart median for height
    smoking_draws: tuple[float, float] = (1.0, 1.0)  # fixed draws of the smoking history (knowledge/smoking.py)
    # The record starts at entry (a patient drawn from a model's population summary, whose records
    # start there), rather than entering a period with a history a source may write before it.
    record_starts_at_entry: bool = False
    death_settled: bool = False  # a terminal encounter leading to `death_day` is dated: the day no longer moves

    @property
    def exit_day(self) -> float:
        """When the record stops: death or the end of the simulated period."""
        return self.end_day if self.death_day is None else min(self.death_day, self.end_day)

    def age_at(self, day: float) -> float:
        return (day - self.birth_day) / DAYS_PER_YEAR

    def active_conditions(self, day: float) -> set[str]:
        return {code for code, end in self.conditions.items() if end > day}


class TrajectorySource(ABC, Generic[StateT]):
    """Proposes visits and authors the fact kinds in `authors`; the engine decides what is recorded
    and when, and writes every other kind itself. All hooks but `next_visits` default to nothing."""

    authors: frozenset[FactKind] = frozenset({FactKind.VISITS})
    # kinds its records hold that it leaves to the engine's schedules, which then write them whatever
    # the scenario's `care`: a model of the reference simulator's charts learned the engine's own
    # periodicity and ACIP schedules, which it can only imitate (`Tokenizer.engine_schedules`)
    defers: frozenset[FactKind] = frozenset()
    # body's code -> the code this source records that measurement under, where they differ (a model
    # of Synthea's records writes eGFR with the MDRD code): a panel the engine completes uses it too
    measurement_codes: Mapping[str, str] = MappingProxyType({})
    # the body's measurement codes this source records (None: every one): a panel the engine
    # completes and an ED triage take only these (a model of Synthea's records never saw a
    # white-cell differential or a triage temperature, and its charts should not gain them)
    measured: frozenset[str] | None = None
    # whether the laboratory completes a panel of which it proposes one result: the reference
    # simulator's charts (and a model of them, the shipped one) report panels whole; a model of a
    # user's records writes the results its source recorded, which whole panels would outnumber
    # (Synthea's blood counts carry no differential)
    whole_panels: bool = True
    # drug -> the conditions a prescriber may name for it, in the order it picks among the active ones
    # (`therapy.drug_indications`; None: the knowledge's first-line indications): a model trained on
    # Synthea keeps its amoxicillin-clavulanate for sinusitis and acetaminophen for bronchitis
    indications: Mapping[str, tuple[str, ...]] | None = None
    # the drugs ordered only while one of their indications is active (`therapy.judged_drugs`; None:
    # those the knowledge lists): a model of Synthea orders penicillin V for strep throat alone
    judged: frozenset[str] | None = None
    # codes its charts hold only during a pregnancy (`Tokenizer.pregnancy_codes`: a model of Synthea's
    # prenatal visits writes fundal heights and prenatal blood tests), kept to pregnancies as the
    # engine's own prenatal procedures are
    pregnancy_only: frozenset[str] = frozenset()
    # whether its charts record when a drug is stopped: Synthea's FHIR orders carry no end, and the
    # engine's ends of courses and of drugs whose indication resolved stop them unrecorded
    records_stops: bool = True

    def new_state(self, patient: PatientState[StateT]) -> StateT | None:
        """The source's own state for a patient just created, which the engine keeps as
        `patient.source_state` (None: the source keeps none, or creates it in `plan`)."""
        return None

    def plan(self, patients: Sequence[PatientState[StateT]]) -> None:
        """Called for each chunk of patients before its simulation starts, so a source that writes
        whole records can write them in one batch."""

    def admit(self, patient: PatientState[StateT]) -> list[Visit]:
        """What is already true when the patient enters the simulation (history before the period)."""
        return []

    @abstractmethod
    def next_visits(self, patients: Sequence[PatientState[StateT]]) -> list[Visit | None]:
        """The next visit of each patient at its `now` (batched: one call for all patients waiting
        at the same simulated instant); None when the source proposes nothing more."""

    def between_visits(self, patient: PatientState[StateT], until: float) -> list[tuple[float, Fact]]:
        """Facts dated before `until` that belong to no visit (e.g. refills), with their days; asked
        when the clock reaches a visit and when the record ends."""
        return []

    def complete_visit(self, patient: PatientState[StateT], visit: Visit) -> list[Fact]:
        """The source's findings at a visit about to be recorded, whoever proposed it."""
        return []

    def recorded(self, patient: PatientState[StateT], visit: Visit) -> None:
        """Told of every visit the engine has recorded (history included), with its findings."""


def engine_kinds(source: TrajectorySource) -> frozenset[FactKind]:
    """The kinds the engine writes beside this source: all those the source does not author."""
    if FactKind.VISITS not in source.authors or source.authors & ENGINE_KINDS:
        raise ValueError(f"{type(source).__name__} must author visits and may not author "
                         f"{', '.join(sorted(k.value for k in ENGINE_KINDS))}, which only the engine writes")
    if source.defers - DEFERRABLE_KINDS or source.defers & source.authors:
        raise ValueError(f"{type(source).__name__} may leave only {', '.join(sorted(k.value for k in DEFERRABLE_KINDS))} "
                         "to the engine, and none it authors")
    return frozenset(FactKind) - source.authors
