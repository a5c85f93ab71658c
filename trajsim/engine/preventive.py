"""The chart keeper of preventive care, for every source: a screening is not repeated before its
interval (`screenings.csv`, the USPSTF's: mammography every 2 years, cervical cytology every 3,
colonoscopy every 10) less a month, nor an adult's yearly preventive exam before a year less a
month (`REPEAT_GRACE_DAYS`). The reference source's schedule keeps to these by construction; a
learned model, which dates each visit from coarse time tokens, proposes some again weeks or months
later (two general examinations 40 days apart, a second mammography after 6 months).

A screening proposed too soon is dropped, with the questionnaire scores it carries; a preventive
exam proposed too soon keeps its visit and what it holds, recorded as the office visit it is (the
follow-up of the active conditions, or an encounter for a problem). A
screening done for a condition (one whose fact names it) is a diagnostic test, not a screening,
and is not held to the interval.

The `LabScreeningKeeper` holds the laboratory screenings (`lab_screenings.csv`: a lipid panel every
5 years, an HbA1c every 3, an adult's blood count and urinalysis once a year) to the same intervals
less a month, whoever orders them, unless an active condition calls for the test then
(`monitoring.csv`: a diabetic's HbA1c every 182 days, the blood count of a fever in the ED): the
model repeated a lipid panel within 5 years in 46 of the 127 patients it measured without
hyperlipidemia or diabetes. A panel proposed too soon is dropped with all its results, before the
laboratory completes it (`labs.py`)."""

from __future__ import annotations

import dataclasses
import math

from trajsim.engine.chart import ChartKeeper
from trajsim.engine.pregnancy import office_visit_type
from trajsim.engine.schedules import active_keys
from trajsim.engine.source import PatientState, Visit
from trajsim.events import WELL_ADULT
from trajsim.knowledge import Knowledge, Screening
from trajsim.knowledge.labs import LAB_GRACE_DAYS, lab_panels, lab_screenings, visit_orders
from trajsim.knowledge.physiology import SAME_MEASUREMENT
from trajsim.knowledge.questionnaires import questionnaires


def repeat_after_days(screenings: list[Screening], code: str, sex: str, age: float) -> float | None:
    """The fewest days after the last one that screening `code` is done again at this sex and age:
    the shortest of the rows for the age, or of all the rows for the sex outside their ages (a
    colonoscopy at 84, past the screening ages, is no more due every year); None for no row."""
    rows = [s for s in screenings if s.code == code and s.sex in (None, sex)]
    at_age = [s for s in rows if s.applies(sex, age)]
    return min(s.repeat_after_days for s in at_age or rows) if rows else None


class PreventiveKeeper(ChartKeeper):
    """Holds screenings and adults' preventive exams to their intervals."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.k = knowledge
        self.codes = frozenset(s.code for s in knowledge.screenings)
        self.last: dict[str, float] = {}  # screening code, or the preventive exam's -> day last done

    def vet(self, patient: PatientState, visit: Visit) -> None:
        age, kept, dropped = patient.age_at(visit.day), [], set()
        for fact in visit.facts:
            if fact.code == WELL_ADULT and visit.encounter_class is not None:
                if visit.day < self.last.get(WELL_ADULT, -math.inf) + self.k.well_visit_repeat_after_days:
                    fact = dataclasses.replace(fact, code=office_visit_type(patient, visit.day))
                else:
                    self.last[WELL_ADULT] = visit.day
            elif fact.code in self.codes and fact.text is None:
                day = visit.day + fact.offset_days
                interval = repeat_after_days(self.k.screenings, fact.code, patient.sex, age)
                if interval is not None and day < self.last.get(fact.code, -math.inf) + interval:
                    dropped.add(fact.code)
                    continue
                self.last[fact.code] = day
            kept.append(fact)
        scores = {q.code for q in questionnaires() if q.screening in dropped}
        visit.facts[:] = [fact for fact in kept if fact.code not in scores]


def monitored(knowledge: Knowledge, code: str, active: set[str], encounter_class: str | None, gap_days: float) -> bool:
    """Whether an active condition (of the keys `active`) calls for lab `code` at a visit of this
    class `gap_days` after the last one (`monitoring.csv`, within the schedule's `LAB_GRACE_DAYS`)."""
    return any(lab.code == code and (not lab.settings or encounter_class in lab.settings)
               and gap_days + LAB_GRACE_DAYS >= lab.interval_days
               for key in active for lab in knowledge.monitoring.get(key, ()))


class LabScreeningKeeper(ChartKeeper):
    """Holds laboratory screenings to their intervals unless an active condition calls for them."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.k = knowledge
        self.screenings = list(lab_screenings())
        self.codes = frozenset(s.code for s in self.screenings)
        self.last: dict[str, float] = {}  # screening lab -> day last ordered, for any reason

    def vet(self, patient: PatientState, visit: Visit) -> None:
        orders = visit_orders([SAME_MEASUREMENT.get(f.code, f.code) for f in visit.facts], lab_panels())
        ordered = self.codes.intersection(orders)
        if not ordered or visit.encounter_class is None:
            return
        age, active = patient.age_at(visit.day), active_keys(self.k, patient, visit.day, visit.facts)
        # each order on its own day: a stay of weeks may order a blood count at admission and again later
        dated = sorted({(fact.offset_days, order) for fact, order in zip(visit.facts, orders) if order in ordered})
        dropped = set()
        for offset, code in dated:
            gap = visit.day + offset - self.last.get(code, -math.inf)
            if gap < repeat_after_days(self.screenings, code, patient.sex, age) \
                    and not monitored(self.k, code, active, visit.encounter_class, gap):
                dropped.add((offset, code))
            else:
                self.last[code] = visit.day + offset
        visit.facts[:] = [fact for fact, order in zip(visit.facts, orders) if (fact.offset_days, order) not in dropped]
