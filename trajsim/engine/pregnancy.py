"""Pregnancy as a process: conception starts a gestation clock; the first prenatal visit records the
pregnancy (dated at conception), prenatal visits follow the ACOG schedule, and the pregnancy ends
with a delivery admission (vaginal or cesarean) or a first-trimester loss. Figures are in
`trajsim/knowledge/data/pregnancy.csv`. Gestational weeks count from the last menstrual period,
two weeks before conception.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import cache

import numpy as np

from trajsim.clock import MINUTES_PER_DAY
from trajsim.engine.schedules import active_keys, office_hours, vitals
from trajsim.engine.source import Fact, PatientState, Visit
from trajsim.events import CONDITION_END
from trajsim.knowledge import Knowledge
from trajsim.knowledge.acute import NEWBORN_STAY
from trajsim.knowledge.lifecycles import CESAREAN, MISCARRIAGE, NORMAL_DELIVERY, PREGNANCY, lifecycles
from trajsim.knowledge.tables import DATA, read_table

PRENATAL_INITIAL = "SNOMED/424441002"
PRENATAL = "SNOMED/424619006"
OBSTETRIC_ADMISSION = "SNOMED/183460006"
SYMPTOM_VISIT = "SNOMED/185345009"
_WEEK = 7.0
_LMP_TO_CONCEPTION_DAYS = 14.0


@cache
def figures() -> dict[str, float]:
    """The figures of `pregnancy.csv` by parameter name."""
    return {r["parameter"]: float(r["value"]) for r in read_table(DATA.joinpath("pregnancy.csv"), ("parameter", "value"))}


def conception_factor() -> float:
    """Pregnancies recognised per birth: the cited rates count births, some pregnancies end in a loss."""
    return 1.0 / (1.0 - figures()["first_trimester_loss"])


@dataclass(slots=True)
class Pregnancy:
    """One pregnancy's plan: its visits still to come, in order, and when and how it ends."""

    conception_day: float
    end_day: float  # birth or loss
    outcome: str  # NORMAL_DELIVERY, CESAREAN or MISCARRIAGE
    visits: deque[tuple[float, str]]  # (day, PRENATAL_INITIAL | PRENATAL | OBSTETRIC_ADMISSION | MISCARRIAGE)

    def next_day(self) -> float:
        return self.visits[0][0] if self.visits else math.inf


def conceive(rng: np.random.Generator, day: float) -> Pregnancy:
    """The plan of a pregnancy conceived on `day`."""
    f = figures()
    lmp = day - _LMP_TO_CONCEPTION_DAYS
    first = lmp + rng.uniform(f["first_visit_weeks_min"], f["first_visit_weeks_max"]) * _WEEK
    if rng.random() < f["first_trimester_loss"]:
        loss = rng.uniform(first + _WEEK, lmp + 13 * _WEEK)
        return Pregnancy(day, loss, MISCARRIAGE, deque([(first, PRENATAL_INITIAL), (loss, MISCARRIAGE)]))
    weeks = min(max(rng.normal(f["delivery_weeks_mean"], f["delivery_weeks_sd"]), 24.0), f["delivery_weeks_max"])
    admission = lmp + weeks * _WEEK
    outcome = CESAREAN if rng.random() < f["cesarean_share"] else NORMAL_DELIVERY
    visits = deque([(first, PRENATAL_INITIAL)])
    week = math.floor((first - lmp) / _WEEK)
    while True:
        week += 4 if week < f["monthly_until_weeks"] else 2 if week < f["fortnightly_until_weeks"] else 1
        visit = lmp + week * _WEEK
        if visit >= admission - 2.0:
            break
        visits.append((visit, PRENATAL))
    labour_hours = rng.uniform(4, 16) if outcome == NORMAL_DELIVERY else rng.uniform(1, 6)
    visits.append((admission, OBSTETRIC_ADMISSION))
    return Pregnancy(day, admission + labour_hours / 24, outcome, visits)


def next_visit(knowledge: Knowledge, patient: PatientState, pregnancy: Pregnancy) -> Visit:
    """The pregnancy's next visit (taken off its plan): the first records the pregnancy from
    conception to its planned end; the last is the delivery admission or the visit of the loss. A
    prenatal visit with no office slot before the next planned visit (a weekend before the
    delivery) is skipped rather than pushing the delivery past the pregnancy's recorded end."""
    day, kind = pregnancy.visits.popleft()
    rng = patient.rng
    if kind == OBSTETRIC_ADMISSION:
        stay = figures()["cesarean_stay_days" if pregnancy.outcome == CESAREAN else "vaginal_stay_days"]
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
    if kind == PRENATAL_INITIAL:
        facts += [Fact(PREGNANCY, offset_days=pregnancy.conception_day - day),
                  Fact(CONDITION_END, offset_days=pregnancy.end_day - day, text=PREGNANCY)]
    elif kind == MISCARRIAGE:
        resolved = lifecycles(knowledge)[MISCARRIAGE].draw_duration(rng)
        facts += [Fact(MISCARRIAGE), Fact(CONDITION_END, offset_days=resolved, text=MISCARRIAGE)]
    return Visit(day, "AMB", rng.uniform(15, 30) / MINUTES_PER_DAY, facts)



def newborn_stay(patient: PatientState) -> Visit:
    """The stay of a baby born in hospital, from birth, as long as a healthy term newborn's
    (`newborn_stay_days`); what is measured in it is the source's, like any visit's content."""
    stay = max(1.0, patient.rng.lognormal(math.log(figures()["newborn_stay_days"]), 0.3))
    return Visit(patient.birth_day, "IMP", stay, [Fact(NEWBORN_STAY)])
