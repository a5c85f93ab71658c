"""Pregnancy as a process: conception starts a gestation clock; the first prenatal visit records the
pregnancy (dated at conception), prenatal visits follow the ACOG schedule, and the pregnancy ends
with a delivery admission (vaginal or cesarean) or a first-trimester loss. Figures are in
`trajsim/knowledge/data/pregnancy.csv`. Gestational weeks count from the last menstrual period,
two weeks before conception.

The course after the first visit is the engine's, whichever source records the pregnancy: the
`PregnancyKeeper` plans it there, dates the delivery or the loss (and with the engine's care the
prenatal visits), and keeps obstetric care inside pregnancies (a learned model wrote deliveries and
prenatal visits with no pregnancy, and pregnancies that ended with no birth).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from trajsim.clock import MINUTES_PER_DAY
from trajsim.engine.chart import ChartKeeper
from trajsim.engine.schedules import active_keys, office_hours, vitals
from trajsim.engine.source import NEVER_RECORDED, Fact, PatientState, Visit
from trajsim.events import CONDITION_END, FOLLOW_UP_VISIT
from trajsim.knowledge import Knowledge
from trajsim.knowledge.acute import EMERGENCY_ADMISSION, NEWBORN_STAY
from trajsim.knowledge.lifecycles import (
    CESAREAN, FETAL_PROCEDURES, LMP_TO_CONCEPTION_DAYS, MISCARRIAGE, NORMAL_DELIVERY, OBSTETRIC_ADMISSION, PREGNANCY, PRENATAL,
    PRENATAL_INITIAL, lifecycles, pregnancy_figures, same_condition,
)

SYMPTOM_VISIT = "SNOMED/185345009"
PROBLEM_VISIT = "SNOMED/185347001"
_OUTCOMES = frozenset({NORMAL_DELIVERY, CESAREAN, MISCARRIAGE})
_WEEK = 7.0


def office_visit_type(patient: PatientState, day: float) -> str:
    """The type of an office visit that is neither prenatal nor preventive: the follow-up of the
    patient's active conditions, or an encounter for a problem when there are none."""
    return FOLLOW_UP_VISIT if patient.active_conditions(day) else PROBLEM_VISIT


def conception_factor() -> float:
    """Pregnancies recognised per birth: the cited rates count births, some pregnancies end in a loss."""
    return 1.0 / (1.0 - pregnancy_figures()["first_trimester_loss"])


@dataclass(slots=True)
class Pregnancy:
    """One pregnancy's plan: its visits still to come, in order, and when and how it ends."""

    conception_day: float
    end_day: float  # birth or loss
    outcome: str  # NORMAL_DELIVERY, CESAREAN or MISCARRIAGE
    visits: deque[tuple[float, str]]  # (day, PRENATAL_INITIAL | PRENATAL | OBSTETRIC_ADMISSION | MISCARRIAGE)


def first_visit_day(rng: np.random.Generator, conception_day: float) -> float:
    """The day of the first prenatal visit of a pregnancy conceived on `conception_day`, in the
    first trimester (`first_visit_weeks_min`-`_max`)."""
    f = pregnancy_figures()
    return conception_day - LMP_TO_CONCEPTION_DAYS + rng.uniform(f["first_visit_weeks_min"], f["first_visit_weeks_max"]) * _WEEK


def plan(rng: np.random.Generator, conception_day: float, first_day: float) -> Pregnancy:
    """The rest of a pregnancy recorded at a first prenatal visit on `first_day`: a loss in the first
    trimester (only if it is not over by then), or the prenatal visits of the ACOG schedule and the
    delivery admission, at least a week after the first visit."""
    f = pregnancy_figures()
    lmp = conception_day - LMP_TO_CONCEPTION_DAYS
    if first_day < lmp + 12 * _WEEK and rng.random() < f["first_trimester_loss"]:
        loss = rng.uniform(first_day + _WEEK, lmp + 13 * _WEEK)
        return Pregnancy(conception_day, loss, MISCARRIAGE, deque([(loss, MISCARRIAGE)]))
    weeks = min(max(rng.normal(f["delivery_weeks_mean"], f["delivery_weeks_sd"]), 24.0), f["delivery_weeks_max"])
    admission = max(lmp + weeks * _WEEK, first_day + _WEEK)
    outcome = CESAREAN if rng.random() < f["cesarean_share"] else NORMAL_DELIVERY
    visits: deque[tuple[float, str]] = deque()
    week = math.floor((first_day - lmp) / _WEEK)
    while True:
        week += 4 if week < f["monthly_until_weeks"] else 2 if week < f["fortnightly_until_weeks"] else 1
        visit = lmp + week * _WEEK
        if visit >= admission - 2.0:
            break
        visits.append((visit, PRENATAL))
    labour_hours = rng.uniform(4, 16) if outcome == NORMAL_DELIVERY else rng.uniform(1, 6)
    visits.append((admission, OBSTETRIC_ADMISSION))
    return Pregnancy(conception_day, admission + labour_hours / 24, outcome, visits)


def first_visit(knowledge: Knowledge, patient: PatientState, conception_day: float, day: float) -> Visit:
    """The first prenatal visit, which records the pregnancy from conception (the pregnancy keeper
    plans the rest)."""
    day = office_hours(patient, day)
    facts = [Fact(PRENATAL_INITIAL), *vitals(knowledge, patient, day, active_keys(knowledge, patient, day) | {"pregnancy"}),
             Fact(PREGNANCY, offset_days=conception_day - day)]
    return Visit(day, "AMB", patient.rng.uniform(15, 30) / MINUTES_PER_DAY, facts)


def next_visit(knowledge: Knowledge, patient: PatientState, pregnancy: Pregnancy) -> Visit:
    """The pregnancy's next visit (taken off its plan); the last is the delivery admission or the
    visit of the loss. A prenatal visit with no office slot before the next planned visit (a weekend
    before the delivery) is skipped rather than pushing the delivery past the pregnancy's end."""
    day, kind = pregnancy.visits.popleft()
    rng = patient.rng
    if kind == OBSTETRIC_ADMISSION:
        stay = pregnancy_figures()["cesarean_stay_days" if pregnancy.outcome == CESAREAN else "vaginal_stay_days"]
        birth = pregnancy.end_day - day
        facts = [Fact(OBSTETRIC_ADMISSION), *vitals(knowledge, patient, day, active_keys(knowledge, patient, day)),
                 Fact(pregnancy.outcome, offset_days=birth)]
        return Visit(day, "IMP", birth + max(1.0, rng.lognormal(math.log(stay), 0.3)), facts)
    day = office_hours(patient, day)
    if kind == PRENATAL and pregnancy.visits and day >= pregnancy.visits[0][0]:
        return next_visit(knowledge, patient, pregnancy)  # no slot left before the next: it is skipped
    # a prenatal visit's type names the pregnancy it is made for
    facts = [Fact(SYMPTOM_VISIT if kind == MISCARRIAGE else kind, text=PREGNANCY if kind == PRENATAL else None),
             *vitals(knowledge, patient, day, active_keys(knowledge, patient, day) | {"pregnancy"})]
    if kind == MISCARRIAGE:
        facts += _loss(knowledge, rng, 0.0)
    return Visit(day, "AMB", rng.uniform(15, 30) / MINUTES_PER_DAY, facts)


def _loss(knowledge: Knowledge, rng: np.random.Generator, offset: float) -> list[Fact]:
    """A miscarriage `offset` days into a visit, and its end once it resolves."""
    resolved = lifecycles(knowledge)[MISCARRIAGE].draw_duration(rng)
    return [Fact(MISCARRIAGE, offset_days=offset), Fact(CONDITION_END, offset_days=offset + resolved, text=MISCARRIAGE)]


def newborn_stay(patient: PatientState) -> Visit:
    """The stay of a baby born in hospital, from birth, as long as a healthy term newborn's
    (`newborn_stay_days`); what is measured in it is the source's, like any visit's content."""
    stay = max(1.0, patient.rng.lognormal(math.log(pregnancy_figures()["newborn_stay_days"]), 0.3))
    return Visit(patient.birth_day, "IMP", stay, [Fact(NEWBORN_STAY)])


class PregnancyKeeper(ChartKeeper):
    """Plans a pregnancy a source records (in a visit, or dated at conception outside one or in the
    history before entry) and dates its end and its delivery admission or loss; with the engine's
    care it adds the prenatal visits of the schedule. A source's own delivery, loss and end of a
    pregnancy are dropped, and its prenatal visits and obstetric admissions outside a pregnancy
    become the office visits or admissions they can be, without what only a pregnancy explains
    (procedures on the fetus, and `pregnancy_only`: what the source records only then)."""

    def __init__(self, knowledge: Knowledge, adds_care: bool, pregnancy_only: frozenset[str] = frozenset()) -> None:
        self.k, self.adds_care = knowledge, adds_care
        self.pregnancy_only = FETAL_PROCEDURES | pregnancy_only
        self.lifecycle = lifecycles(knowledge)[PREGNANCY]
        self.codes = frozenset(same_condition(knowledge, PREGNANCY))  # SNOMED CT and ICD-10-CM
        self.recorded = PREGNANCY  # the code the planned pregnancy is recorded under
        self.plan: Pregnancy | None = None
        self.own: Visit | None = None  # the keeper's own visit being recorded

    def vet(self, patient: PatientState, visit: Visit) -> None:
        if visit is self.own or visit.day < patient.entry_day:  # the history before entry is as it was
            return
        kept: list[Fact] = []
        pregnant_until = max(patient.conditions.get(code, NEVER_RECORDED) for code in self.codes)
        for fact in visit.facts:
            day = visit.day + fact.offset_days
            if fact.code in _OUTCOMES or (fact.code == CONDITION_END and fact.text in self.codes):
                continue
            if fact.code in self.codes and pregnant_until <= day and patient.sex == "F" \
                    and self.lifecycle.onset_plausible(patient.age_at(day)):
                seen = visit.day if visit.encounter_class else first_visit_day(patient.rng, day)  # dated at conception
                self.plan, self.recorded = plan(patient.rng, day, seen), fact.code
                pregnant_until = self.plan.end_day
                kept += [fact, Fact(CONDITION_END, offset_days=self.plan.end_day - visit.day, text=fact.code)]
                kept += self._past(patient, visit)
                continue
            kept.append(fact)
        if pregnant_until <= visit.day:
            kept = [self._outside_pregnancy(patient, visit, fact) for fact in kept if fact.code not in self.pregnancy_only]
        visit.facts[:] = kept

    def _past(self, patient: PatientState, visit: Visit) -> list[Fact]:
        """What of the plan is over by `visit` (a pregnancy in the history before entry): its visits
        are not held, and a birth or loss already behind is recorded on its day, outside any visit."""
        pregnancy = self.plan
        pregnancy.visits = deque(v for v in pregnancy.visits if v[0] >= visit.day)
        if pregnancy.visits and pregnancy.visits[-1][1] in (OBSTETRIC_ADMISSION, MISCARRIAGE):
            return []
        self.plan = None
        offset = pregnancy.end_day - visit.day
        if pregnancy.outcome != MISCARRIAGE:
            return [Fact(pregnancy.outcome, offset_days=offset)]
        return _loss(self.k, patient.rng, offset)

    def _outside_pregnancy(self, patient: PatientState, visit: Visit, fact: Fact) -> Fact:
        """A visit type that only a pregnancy explains, as the visit it can be when there is none."""
        if fact.code == OBSTETRIC_ADMISSION:
            return replace(fact, code=EMERGENCY_ADMISSION)
        if fact.code in (PRENATAL, PRENATAL_INITIAL):
            return replace(fact, code=office_visit_type(patient, visit.day))
        return fact

    def unplanned_visit(self, patient: PatientState, until: float) -> Visit | None:
        pregnancy = self.plan
        if pregnancy is not None and abs(patient.conditions.get(self.recorded, NEVER_RECORDED) - pregnancy.end_day) > 1e-6:
            self.plan = None  # not recorded as planned: a death came first
            return None
        while pregnancy is not None and pregnancy.visits and pregnancy.visits[0][0] < until:
            if pregnancy.visits[0][1] == PRENATAL and not self.adds_care:
                pregnancy.visits.popleft()
                continue
            self.own = next_visit(self.k, patient, pregnancy)
            if not pregnancy.visits:
                self.plan = None
            return self.own
        return None
