"""Immunization on the ACIP schedule: the series of each vaccine, what is due at a visit, and the
chart keeper that holds any source to the schedule's minimum ages, minimum intervals and dose counts.

The series come from `immunizations.csv` (CDC/ACIP 2024 child, adolescent and adult schedules;
minimum ages and intervals from the ACIP General Best Practice Guidelines, Table 3-1). A dose is
given at the visit for its recommended age, which may fall a little before it (an infant's
2-month visit at 8 weeks): a dose is due from one spread of well-visit timing before its
recommended age, or at its recommended interval after the previous dose, whichever is later, and
never before its minimum age and interval. A child behind schedule catches up one dose per series
per visit until the series' catch-up upper age; a dose past an ACIP maximum age (rotavirus) is
never given. A fixed series is never exceeded; a repeating one (Td every ten years) recurs after
its last dose; a vaccine is not given before it was licensed (COVID-19 from its authorization in
December 2020, at the uptake by age of the CDC COVID Data Tracker), and an adult series is started
only in the years ACIP recommended it: PPSV23 from 65, then PCV13 and PPSV23 a year later from
September 2014, then PCV20 from October 2021 (one of these regimens per patient); zoster vaccine
live from 60 until RZV from 50 replaced it in January 2018. Adults take the Td boosters at the NHIS
uptake, decided once; influenza is offered once a season at the
age-specific uptake of CDC FluVaxView, with a second dose 4 weeks later in a child's first season
under 9; Tdap is offered once in each pregnancy at 27-36 weeks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property

from trajsim.clock import DAYS_PER_YEAR, calendar_date
from trajsim.engine.chart import ChartKeeper
from trajsim.engine.source import Fact, PatientState, Visit
from trajsim.knowledge import Dose, Knowledge
from trajsim.knowledge.lifecycles import LMP_TO_CONCEPTION_DAYS, PREGNANCY, pregnancy_figures
from trajsim.knowledge.tables import DATA, per_knowledge, read_table
from trajsim.rules.immunization import (
    FLOOR_DAYS, INFLUENZA, TWO_FLU_DOSES_UNDER_YEARS, VACCINE_SYSTEM, flu_doses_allowed, flu_season,
)

FLU_SEASON_MONTHS = (9, 10, 11, 12, 1, 2, 3)
PRIOR_CARE_DAYS = 30.0  # a dose due this long before the record began was given elsewhere
VISIT_LEAD_SPREADS = 1.0  # a dose is due this many spreads of well-visit timing before its recommended age
PREGNANCY_TDAP = "CVX/115"


@dataclass(frozen=True)
class Series:
    """The doses of one vaccine series in order; the last recurs if it has `repeat_days`."""

    name: str
    doses: tuple[Dose, ...]

    @cached_property
    def repeats(self) -> bool:
        return self.doses[-1].repeat_days is not None

    @cached_property
    def family(self) -> str:
        """The regimens a patient starts one of (the adult pneumococcal vaccines); else the series."""
        return self.doses[0].family

    def recommended_on(self, day: float) -> bool:
        """Whether the routine schedule starts the series on `day`: licensed and within the years
        ACIP recommended it."""
        first = self.doses[0]
        start = max(first.available_from_day or -math.inf, first.recommended_from_day or -math.inf)
        return start <= day < (first.recommended_until_day or math.inf)

    @cached_property
    def max_age_days(self) -> float:
        """The age from which no dose of the series is given (inf: none)."""
        return self.doses[-1].max_age_days or float("inf")

    def dose(self, number: int) -> Dose | None:
        """Dose `number` (from 1); past the end, the last dose again if the series repeats, else None."""
        if number <= len(self.doses):
            return self.doses[number - 1]
        return self.doses[-1] if self.repeats else None


@cache
def _series(doses: tuple[Dose, ...]) -> dict[str, Series]:
    names = dict.fromkeys(d.series for d in doses)
    return {name: Series(name, tuple(sorted((d for d in doses if d.series == name), key=lambda d: d.dose)))
            for name in names}


@per_knowledge
def vaccine_series(knowledge: Knowledge) -> dict[str, Series]:
    """Every vaccine series by name, in the order of the table."""
    return _series(tuple(knowledge.doses))


@per_knowledge
def series_by_code(knowledge: Knowledge) -> dict[str, Series]:
    """The series each scheduled vaccine code belongs to: the first that holds it (PCV13 is the
    childhood series', which also judges an adult's dose; PPSV23 the adult series of PPSV23 alone)."""
    by_code: dict[str, Series] = {}
    for series in vaccine_series(knowledge).values():
        for dose in series.doses:
            by_code.setdefault(dose.code, series)
    return by_code


@cache
def uptake_by_age(series: str) -> tuple[tuple[float, float, float], ...]:
    """(age_min, age_max, uptake) bands of a series whose uptake depends on age, from
    `<series>_uptake.csv` (influenza: CDC FluVaxView; COVID-19: CDC COVID Data Tracker)."""
    rows = read_table(DATA.joinpath(f"{series}_uptake.csv"), ("age_min", "age_max", "uptake"))
    return tuple((float(r["age_min"]), float(r["age_max"]), float(r["uptake"])) for r in rows)


def age_uptake(series: str, age_years: float) -> float:
    """The share of people of this age who accept the series (0 outside its bands)."""
    return next((uptake for low, high, uptake in uptake_by_age(series) if low <= age_years < high), 0.0)


class DoseRecord:
    """The doses of each series a patient has had, and whether another would be valid."""

    def __init__(self) -> None:
        self.given: dict[str, list[float]] = {}

    def add(self, series: Series, day: float) -> None:
        self.given.setdefault(series.name, []).append(day)

    def fault(self, series: Series, birth_day: float, day: float) -> str | None:
        """Why a dose of `series` on `day` would break the schedule (None: it would not)."""
        given = self.given.get(series.name, [])
        age_days = day - birth_day
        in_window = sum(1 for d in given if d - birth_day < series.max_age_days)
        if not series.repeats and age_days < series.max_age_days and in_window >= len(series.doses):
            return "beyond the series"
        dose = series.dose(len(given) + 1) or series.doses[-1]
        if age_days < dose.min_age_days:
            return "below the minimum age"
        if dose.max_age_limit and age_days >= dose.max_age_days:
            return "from the maximum age"
        if dose.available_from_day is not None and day < dose.available_from_day:
            return "before the vaccine was available"
        if given and dose.min_interval_days is not None and day - given[-1] < dose.min_interval_days:
            return "within the minimum interval"
        if series.name == INFLUENZA and sum(flu_season(d) == flu_season(day) for d in given) >= flu_doses_allowed(
                age_days / DAYS_PER_YEAR):
            return "beyond the season's doses"
        return None


class Immunizer:
    """One patient's scheduled vaccines: the doses due at each clinic visit."""

    def __init__(self, knowledge: Knowledge, patient: PatientState) -> None:
        self.patient = patient
        self.series = [s for s in vaccine_series(knowledge).values() if s.name != INFLUENZA]
        self.influenza = vaccine_series(knowledge).get(INFLUENZA)
        self.record = DoseRecord()
        self._due: dict[tuple[str, int], tuple[float, Dose] | None] = {}  # (series, doses given) -> `_due_day`
        self.accepted: dict[str, bool] = {}  # family, or series/dose of a dose decided on its own -> taken
        self.flu_seasons: set[int] = set()
        self.spread = knowledge.well_visit_spread_days
        self.conception_day: float | None = None  # of the current pregnancy, once a visit records it
        self.pregnancy_tdap_decided: set[float] = set()  # conception days of pregnancies offered Tdap
        self.tetanus = series_by_code(knowledge).get(PREGNANCY_TDAP)
        for series in self.series:
            if series.doses[0].before_entry == "given":
                self._take_prior_doses(series)

    def _due_day(self, series: Series) -> tuple[float, Dose] | None:
        """The first day the next dose of `series` is due and valid, with that dose (None: no more);
        kept until a dose is given (doses are only added), as it is asked at every clinic visit."""
        key = (series.name, len(self.record.given.get(series.name, ())))
        if key not in self._due:
            self._due[key] = self._next_due_day(series)
        return self._due[key]

    def _next_due_day(self, series: Series, licensed: bool = True) -> tuple[float, Dose] | None:
        """As `_due_day`; with `licensed` False, not held to the vaccine's licensing date (a dose given
        elsewhere before the record, with the product of its day: Td before Tdap)."""
        given = self.record.given.get(series.name, [])
        dose = series.dose(len(given) + 1)
        if dose is None or not dose.routine:
            return None
        birth = self.patient.birth_day
        due = birth + dose.age_days - VISIT_LEAD_SPREADS * self.spread(dose.age_days)
        if licensed and dose.available_from_day is not None:
            due = max(due, dose.available_from_day)
        if not given and dose.recommended_from_day is not None:
            due = max(due, dose.recommended_from_day)
        if given:
            after = dose.repeat_days if len(given) >= len(series.doses) else dose.interval_days
            due = max(due, given[-1] + (after or 0.0), given[-1] + (dose.min_interval_days or 0.0))
        return max(due, birth + dose.min_age_days), dose

    def _take_prior_doses(self, series: Series) -> None:
        """Doses due well before the record began were given elsewhere, on their due days; they are
        not charted, so they stand for whatever product their day had."""
        p = self.patient
        while (due := self._next_due_day(series, licensed=False)) is not None and due[0] < p.entry_day - PRIOR_CARE_DAYS:
            if due[0] - p.birth_day >= (due[1].max_age_days or float("inf")):
                return
            self.record.add(series, due[0])

    def due(self, day: float, visit_facts: Sequence[Fact] = ()) -> list[Fact]:
        """The doses to give at a clinic visit on `day` whose own facts are `visit_facts`: at most
        one per series, the flu shot, and Tdap in pregnancy."""
        p, facts = self.patient, []
        for series in self.series:
            due = self._due_day(series)
            if due is None or day < due[0] or day - p.birth_day >= (due[1].max_age_days or float("inf")):
                continue
            if series.name not in self.record.given and not self._may_start(series, day):
                continue
            if self._accepts(series, due[1], day):
                facts.append(Fact(due[1].code))
                self.record.add(series, day)
        return facts + self._flu_shot(day) + self._pregnancy_tdap(day, visit_facts)

    def _may_start(self, series: Series, day: float) -> bool:
        """A series is started while ACIP recommends it, unless another regimen of its family was."""
        return series.recommended_on(day) and not any(
            other.family == series.family and other.name in self.record.given for other in self.series)

    def _accepts(self, series: Series, dose: Dose, day: float) -> bool:
        """Whether the patient takes this dose: the family is accepted or declined when first
        offered (at its uptake, or by age); a later dose with an uptake below 1 once on its own."""
        p = self.patient
        own = dose.dose > 1 and dose.uptake is not None and dose.uptake < 1
        key = f"{series.name}/{dose.dose}" if own else series.family
        if key not in self.accepted:
            uptake = dose.uptake if own else series.doses[0].uptake
            if uptake is None:
                uptake = age_uptake(series.name, p.age_at(day))
            self.accepted[key] = uptake >= 1 or bool(p.rng.random() < uptake)
        return self.accepted[key]

    def _flu_shot(self, day: float) -> list[Fact]:
        """One influenza decision per season, taken at the first clinic visit in it; a child's
        second dose of the season at a later visit, if due."""
        season = flu_season(day)
        series, p = self.influenza, self.patient
        if series is None or calendar_date(int(day)).month not in FLU_SEASON_MONTHS:
            return []
        if season in self.flu_seasons:
            if not self._second_flu_dose_due(series, season, day):
                return []
        else:
            self.flu_seasons.add(season)
            if self.record.fault(series, p.birth_day, day) or p.rng.random() >= age_uptake(series.name, p.age_at(day)):
                return []
        self.record.add(series, day)
        return [Fact(series.doses[0].code)]

    def _second_flu_dose_due(self, series: Series, season: int, day: float) -> bool:
        """ACIP: a child under 9 with fewer than two doses before this season needs two, 4 weeks
        apart. Known only for a child whose record holds every season since 6 months of age."""
        p = self.patient
        given = self.record.given.get(series.name, [])
        this_season = sum(1 for d in given if flu_season(d) == season)
        followed = p.entry_day - p.birth_day <= series.doses[0].min_age_days
        return (followed and this_season == 1 and len(given) - this_season < 2
                and p.age_at(day) < TWO_FLU_DOSES_UNDER_YEARS and self.record.fault(series, p.birth_day, day) is None)

    def _pregnancy_tdap(self, day: float, visit_facts: Sequence[Fact]) -> list[Fact]:
        """Tdap offered once in each pregnancy, at a visit in its weeks 27-36 (`pregnancy.csv`)."""
        p, f = self.patient, pregnancy_figures()
        onset = next((fact.offset_days for fact in visit_facts if fact.code == PREGNANCY), None)
        if onset is not None:
            self.conception_day = day + onset
        conception = self.conception_day
        if conception is None or PREGNANCY not in p.active_conditions(day) or conception in self.pregnancy_tdap_decided:
            return []
        weeks = (day - conception + LMP_TO_CONCEPTION_DAYS) / 7.0
        if not f["tdap_weeks_min"] <= weeks < f["tdap_weeks_max"] + 1:
            return []
        self.pregnancy_tdap_decided.add(conception)
        if self.tetanus is None or self.record.fault(self.tetanus, p.birth_day, day) or p.rng.random() >= f["tdap_uptake"]:
            return []  # a tetanus dose within 4 weeks (a booster due at this visit) stands in for it
        self.record.add(self.tetanus, day)
        return [Fact(PREGNANCY_TDAP)]


class ImmunizationKeeper(ChartKeeper):
    """Drops a proposed dose the schedule forbids: before its minimum age, from an ACIP maximum age,
    before the vaccine existed, within its minimum interval after the previous dose, beyond a series
    that does not repeat, or beyond a season's influenza doses. A vaccine outside
    the schedule's table is held to the rules' floor: not the same vaccine twice within 21 days."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.by_code = series_by_code(knowledge)
        self.record = DoseRecord()
        self.last_unscheduled: dict[str, float] = {}  # vaccine outside the table -> day of its last dose

    def vet(self, patient: PatientState, visit: Visit) -> None:
        kept = []
        for fact in visit.facts:
            series, day = self.by_code.get(fact.code), visit.day + fact.offset_days
            if series is not None:
                if self.record.fault(series, patient.birth_day, day):
                    continue
                self.record.add(series, day)
            elif fact.code.startswith(VACCINE_SYSTEM):
                if day - self.last_unscheduled.get(fact.code, -math.inf) < FLOOR_DAYS:
                    continue
                self.last_unscheduled[fact.code] = day
            kept.append(fact)
        visit.facts[:] = kept
