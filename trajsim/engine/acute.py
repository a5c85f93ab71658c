"""The chart keeper of acute care, whichever source proposes the visits.

Acute events happen on their own day, not at the next scheduled visit: between visits the keeper
dates first myocardial infarctions and strokes (age and sex rates raised by the patient's risk
factors), injuries by age (`acute_rates.csv`: contusions, head injuries, lacerations and fractures
from falls, most common in the old and the very young; whiplash from road crashes) and emergency
visits for acute illness (the NHAMCS rate of all ED visits by age times
each reason's share of them, `emergency_reasons.csv`: a sore throat or a UTI is mostly an office
visit, so only its ED share comes through here), each as an ED visit followed by an admission when
the condition needs one, and the stays chronic conditions
lead to (`admissions.csv`: a planned knee or hip replacement admitted directly, a cataract operated on
as an outpatient, a heart-failure or COPD exacerbation through the ED); a record that starts at birth starts with the newborn's stay. A visit a source proposes with the
onset of a condition treated through the ED (appendicitis in an office visit) becomes that ED visit,
with the procedure that treats it, and admitted or kept under observation (for about a day) at its
cited shares (`acute_care.csv`: an MI always; chest and abdominal pain now and then). Every ED visit, whoever proposes it, takes the triage vital signs
and has a reason: a new diagnosis, the known condition its visit-type fact names (a heart-failure
exacerbation), or else one of the ED reasons by its share. Before a death the keeper dates the
terminal encounter: an admission or ED visit ending at death, for the condition driving the death,
or an office visit in the last month for it, with a referral to hospice. It does so whatever the
scenario's `care`, since the day of death is the engine's and no source can learn when it falls.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from trajsim.clock import DAYS_PER_YEAR, MINUTES_PER_DAY
from trajsim.engine.chart import ChartKeeper
from trajsim.engine.draws import pick
from trajsim.engine.hospital import ED_VISIT, TYPICAL_STAY_DAYS, fits
from trajsim.engine.mortality import NATURAL_DEATH, cause_of_death
from trajsim.engine.pregnancy import newborn_stay
from trajsim.engine.schedules import TRIAGE_VITAL_SIGNS, active_keys, office_hours, prescribe, workup
from trajsim.engine.source import NEVER_RECORDED, Fact, PatientState, Visit
from trajsim.events import CONDITION_END, ENCOUNTER_CLASSES, MEDICATION_END, VISIT_END, visit_start_code
from trajsim.knowledge import Knowledge
from trajsim.knowledge.physiology import VITAL_SIGNS, measured_at
from trajsim.knowledge.smoking import CURRENT, smoking_curve, smoking_risks
from trajsim.knowledge.therapy import formulations
from trajsim.knowledge.acute import (
    EMERGENCY_ADMISSION, EMERGENCY_VISIT, HOSPICE_CARE, NEWBORN_STAY, OBSERVATION_LONGEST, OBSERVATION_STAY, Admission,
    admissions, emergency_shares, event_rate, stay_type, sudden_onsets, treatments,
)
from trajsim.scenario import Presentation, presentations
from trajsim.vocab import domain_of

ED_STAY = (150.0, 0.4)  # minutes, lognormal (median, spread): CMS measure OP-18b, median ED stay 2.5 h
ED_LONGEST = 1.0  # days: a longer ED visit is a source's slip, cut to a drawn ED stay
STAY_SPREAD = 0.5
# Where people die: about 30% in hospital (inpatient, ED or outpatient), 31% at home, 21% in nursing
# facilities (Cross and Warraich, N Engl J Med 2019;381:2369-70, US death certificates 2017).
DIES_ADMITTED, DIES_IN_ED = 0.25, 0.05
TERMINAL_STAY = (4.0, 0.8)  # days, lognormal: terminal admissions last a few days (approximate)
# An observation stay mostly ends within 24 hours (CMS, as `OBSERVATION_LONGEST`); days, lognormal
# (median, spread), its far tail cut at the 48 hours past which a patient is admitted
OBSERVATION_DAYS = (0.9, 0.3)
# Most decedents see a clinician in their last month (Teno et al., JAMA 2018;320:264-71: Medicare
# decedents, about half hospitalised in the last 30 days; approximate share of the rest seen).
SEEN_LAST_MONTH = 0.6
LAST_MONTH_DAYS = 30.0
SICK_VISIT = "SNOMED/185345009"  # Encounter for symptom
# A decedent seen in the last month for the condition driving the death is referred to hospice
# (`HOSPICE_CARE`): about half of US Medicare decedents use hospice (NHPCO Facts and Figures 2020:
# 51.6% in 2019). The referral is the keeper's alone: a source's own (the shipped model wrote them for
# patients who lived on for years) is dropped.


@dataclass(slots=True)
class _Terminal:
    """The terminal encounter planned for one drawn day of death (None: none is planned)."""

    death_day: float
    visit: Visit | None
    taken: bool = False


class EmergencyKeeper(ChartKeeper):
    """Sends acute onsets through the ED and dates the terminal encounter before the engine's day of
    death (no source knows that day); with `dates_events`, also dates acute events and emergency
    visits at published rates (a source that learned its records' emergencies dates them itself)."""

    def __init__(self, knowledge: Knowledge, dates_events: bool = True, measured: frozenset[str] | None = None) -> None:
        self.k, self.dates_events = knowledge, dates_events
        # triage takes the vital signs the source records (all of them if it records none)
        self.triage = tuple(c for c in TRIAGE_VITAL_SIGNS if measured is None or c in measured) or TRIAGE_VITAL_SIGNS
        self.treatments = treatments()
        self.treated_codes = {knowledge.conditions[key].code for key in self.treatments}
        self.sudden = sorted(sudden_onsets())
        self.shares = emergency_shares()
        self.cases: list[Presentation] = [c for c in presentations().values() if c.condition in self.shares
                                          and knowledge.conditions[c.condition].course == "acute"]
        self.waiting: list[Visit] = []  # an admission from the ED, taken next
        self.terminal: _Terminal | None = None
        self.admitted: Counter[Admission] = Counter()  # stays so far, for those a patient has a few of at most
        self.birth_dated = False  # whether a record from birth has had its newborn stay
        self.smoking_at: tuple[tuple, bool, float] | None = None  # (whose age, smokes, share of smokers): `_smoking`

    # --- visits a source proposes ----------------------------------------------------------------
    def vet(self, patient: PatientState, visit: Visit) -> None:
        """An onset of a condition treated through the ED makes the visit an ED visit, with each such
        onset's procedure in it or in the one admission that follows; an ED visit gets its triage.
        A hospice referral is kept only at the terminal visit the keeper plans; an observation stay
        a source kept past 48 hours is an admission."""
        if self.terminal is None or visit is not self.terminal.visit:
            visit.facts[:] = [f for f in visit.facts if f.code != HOSPICE_CARE]
        visit.facts[:] = [replace(f, code=stay_type(f.code, visit.duration_days)) if f.code == OBSERVATION_STAY else f
                          for f in visit.facts]
        if visit.encounter_class is None:
            return
        onsets = [f for f in visit.facts if f.code in self.treated_codes
                  and patient.conditions.get(f.code, NEVER_RECORDED) <= visit.day + f.offset_days]
        if onsets:
            self._through_emergency(patient, visit, onsets)
        if visit.encounter_class == "EMER":
            drawn = self._triage(patient, visit)
            if drawn is not None and drawn.code in self.treated_codes:  # a syncope drawn gets its ECG and disposition
                self._through_emergency(patient, visit, [drawn])

    def _triage(self, patient: PatientState, visit: Visit) -> Fact | None:
        """The vital signs triage takes, unless the visit has them, and a reason for a visit without
        one: a new diagnosis (one already active is dropped by the episode keeper, a drug renewal by the
        prescriber) or the known condition its visit-type fact names, if it still holds (an episode
        may have ended since the visit was planned: the visit then gets another reason). Returns the
        reason it drew, if it drew one."""
        holding = patient.active_conditions(visit.day)
        visit.facts[:] = [Fact(f.code, f.offset_days, f.value, f.unit, None)
                          if _is_condition(f.text) and f.text not in holding and domain_of(f.code) == "encounter_type"
                          else f for f in visit.facts]
        active = active_keys(self.k, patient, visit.day, visit.facts)
        age = patient.age_at(visit.day)
        # a vital sign the body does not take at this age (a source's BP of an infant) is no triage
        if not any(f.code in VITAL_SIGNS and measured_at(self.k, f.code, patient.sex, age, active) for f in visit.facts):
            taken = [code for code in self.triage if measured_at(self.k, code, patient.sex, age, active)]
            taken = taken or [code for code in TRIAGE_VITAL_SIGNS if measured_at(self.k, code, patient.sex, age, active)]
            visit.facts += [Fact(code) for code in taken]  # a young child's BP is not taken: the others are
        new = [f for f in visit.facts if _is_condition(f.code)
               and patient.conditions.get(f.code, NEVER_RECORDED) <= visit.day + f.offset_days]
        if not new and not any(_is_condition(f.text) for f in visit.facts if domain_of(f.code) == "encounter_type"):
            case = self._draw_case(patient, visit.day, active)
            if case is not None:
                condition, reason = self.k.conditions[case.condition], Fact(self.k.conditions[case.condition].code)
                visit.facts += [reason, *prescribe(self.k, condition, patient), *workup(self.k, condition.key, "EMER")]
                return reason
        return None

    def _through_emergency(self, patient: PatientState, visit: Visit, onsets: list[Fact]) -> None:
        if visit.encounter_class != "EMER" or visit.duration_days > ED_LONGEST:
            visit.encounter_class = "EMER"
            visit.duration_days = _draw_days(patient.rng, ED_STAY[0] / MINUTES_PER_DAY, ED_STAY[1])
            # what was recorded at the visit stays in the shortened one; ends keep their own dates
            visit.facts = [Fact(ED_VISIT)] + [f if f.code in (CONDITION_END, MEDICATION_END)
                                              else replace(f, offset_days=min(f.offset_days, visit.duration_days))
                                              for f in visit.facts if domain_of(f.code) != "encounter_type"]
        admitted, stays, observed, admitted_for = [], [], None, None
        for onset in onsets:
            condition = self.k.conditions_by_code[onset.code]
            treatment = self.treatments[condition.key]
            procedure = ([Fact(treatment.procedure, offset_days=min(onset.offset_days, visit.duration_days))]
                         if treatment.procedure else [])
            if treatment.always_admitted:  # the stay starts the drugs the condition needs (after an MI: DAPT, statin, beta-blocker)
                admitted += [*procedure, *prescribe(self.k, condition, patient)]
                stays += [condition.stay_days] if condition.stay_days else []
                continue
            visit.facts += procedure
            disposition = patient.rng.random() if treatment.admitted or treatment.observed else 1.0
            if disposition < treatment.admitted:  # its workup finds a cause to keep the patient for
                admitted_for = admitted_for or condition.code
                stays += [condition.stay_days] if condition.stay_days else []
            elif disposition < treatment.admitted + treatment.observed:
                observed = condition.code
        if admitted or admitted_for:  # one stay, as long as the longest of its reasons
            # a stay for the symptom itself (no treated condition's) names it as its principal diagnosis
            reason = None if admitted else admitted_for
            self.waiting.append(self._admission(patient, visit, max(stays, default=None), admitted, reason))
        elif observed is not None:  # kept under observation until the workup rules the danger out
            stay = min(_draw_days(patient.rng, *OBSERVATION_DAYS), OBSERVATION_LONGEST)
            self.waiting.append(Visit(visit.day + visit.duration_days, "IMP", stay, [Fact(OBSERVATION_STAY, text=observed)]))

    def _admission(self, patient: PatientState, ed: Visit, stay_days: float | None, facts: list[Fact],
                   reason: str | None = None) -> Visit:
        """The admission that follows an ED visit, for a stay around `stay_days` (`reason`: the
        condition code it is for, when none of `facts` names it)."""
        stay = _draw_days(patient.rng, stay_days or TYPICAL_STAY_DAYS, STAY_SPREAD)
        return Visit(ed.day + ed.duration_days, "IMP", max(stay, 0.5), [Fact(EMERGENCY_ADMISSION, text=reason), *facts])

    # --- visits the keeper dates ---------------------------------------------------------------
    def follow_on(self, patient: PatientState) -> Visit | None:
        return self.waiting.pop(0) if self.waiting else None

    def unplanned_visit(self, patient: PatientState, until: float) -> Visit | None:
        if self.dates_events and not self.birth_dated:  # a model keeping its own care learned the stay
            self.birth_dated = True
            if patient.entry_day == patient.birth_day:  # about 98% of US births are in hospital
                return newborn_stay(patient)
        terminal = self._terminal(patient)
        if terminal is not None and terminal.visit is not None and not terminal.taken:
            if terminal.visit.day < until:
                terminal.taken = patient.death_settled = True  # a hospice referral or a dying stay: death stays put
                if terminal.visit.encounter_class != "AMB":  # it lasts until death (the engine moves
                    terminal.visit.day = max(terminal.visit.day, patient.now)  # an office visit to a slot)
                    terminal.visit.duration_days = terminal.death_day - terminal.visit.day
                return terminal.visit
            until = min(until, terminal.visit.day)
        return self._acute_event(patient, min(until, patient.exit_day)) if self.dates_events else None

    def _acute_event(self, patient: PatientState, until: float) -> Visit | None:
        """The next acute event if it comes before `until`: the rates are memoryless, so drawing
        afresh at each decision is exact."""
        now, rng = patient.now, patient.rng
        active = active_keys(self.k, patient, now)
        age = patient.age_at(now)
        events: list[tuple[str | Admission, float]] = [(key, self._onset_rate(patient, key, active)) for key in self.sudden]
        events.append((EMERGENCY_VISIT, event_rate(EMERGENCY_VISIT, patient.sex, age) * sum(self.shares.values())))
        events += [(a, a.rate) for a in admissions() if a.condition in active and a.applies(age)
                   and (a.max_per_patient is None or self.admitted[a] < a.max_per_patient)]
        total = sum(rate for _, rate in events)
        if total <= 0:
            return None
        day = now + rng.exponential(1 / total) * DAYS_PER_YEAR
        if day >= until:
            return None
        event = events[pick(rng, [rate / total for _, rate in events])][0]
        if isinstance(event, Admission):
            return self._admission_for(patient, event, day, until)
        ed = Visit(day, "EMER", _draw_days(rng, ED_STAY[0] / MINUTES_PER_DAY, ED_STAY[1]), [Fact(ED_VISIT)])
        if event != EMERGENCY_VISIT:  # `vet` adds its treatment; the ED its drugs (a fracture's analgesic)
            condition = self.k.conditions[event]
            ed.facts += [Fact(condition.code), *prescribe(self.k, condition, patient)]
            return ed
        return self._emergency_visit(patient, ed, active)

    def _admission_for(self, patient: PatientState, admission: Admission, day: float, until: float) -> Visit | None:
        """A stay a chronic condition leads to: planned ones start on a weekday morning with their
        procedure (an outpatient operation ends the same day); emergencies come through the ED, with
        the lab that confirms them, and are admitted. The condition is the visit's and the stay's reason."""
        reason = self.k.conditions[admission.condition].code
        extra = [Fact(code) for code in (admission.procedure, admission.lab) if code]
        if admission.elective:
            day = office_hours(patient, day)
            if day >= until:  # drawn again from the next decision on (the rate is memoryless)
                return None
            self.admitted[admission] += 1
            stay = _draw_days(patient.rng, admission.stay_days, STAY_SPREAD)
            if admission.encounter_class == "IMP":
                stay = max(stay, 0.5)
            return Visit(day, admission.encounter_class, stay, [Fact(admission.admission, text=reason), *extra])
        self.admitted[admission] += 1
        ed = Visit(day, "EMER", _draw_days(patient.rng, ED_STAY[0] / MINUTES_PER_DAY, ED_STAY[1]),
                   [Fact(ED_VISIT, text=reason), *extra])
        self.waiting.append(self._admission(patient, ed, admission.stay_days, [], reason))
        return ed

    def _onset_rate(self, patient: PatientState, key: str, active: set[str]) -> float:
        """First events per person-year: a baseline raised by each active risk factor's excess
        relative risk (complications.csv; current smoking, smoking_risks.csv), as the schedule raises complications. The baseline is the
        population rate over the mean of that factor at this age, so the published rate stays the
        population's while a hypertensive diabetic's rate is raised as the pooled cohort equations'."""
        if key in active:
            return 0.0
        excess = sum(ratio - 1.0 for parent, ratio in self.k.risk_ratios.get(key, {}).items() if parent in active)
        age = patient.age_at(patient.now)
        smokes, smoking_share = self._smoking(patient, age)
        smoking = smoking_risks().get(key, 1.0) - 1.0  # current smokers' excess, over its mean at this age
        if smokes:
            excess += smoking
        normaliser = self.k.risk_normaliser(key, patient.sex, age) + smoking * smoking_share
        return event_rate(key, patient.sex, age) * (1.0 + excess) / normaliser

    def _smoking(self, patient: PatientState, age: float) -> tuple[bool, float]:
        """Whether the patient smokes at `age`, and the share of people of that sex and age who do
        (the same for every sudden event of one decision, so worked out once for it)."""
        key = (age, patient.sex, patient.smoking_draws)
        if self.smoking_at is None or self.smoking_at[0] != key:
            curve = smoking_curve()
            self.smoking_at = (key, curve.status(patient.sex, age, patient.smoking_draws) == CURRENT,
                               curve.current_share(patient.sex, age))
        return self.smoking_at[1], self.smoking_at[2]

    def _draw_case(self, patient: PatientState, day: float, active: set[str]) -> Presentation | None:
        """One of the ED reasons the patient may present with, by its share of ED visits."""
        cases = [c for c in self.cases if c.condition not in active and fits(self.k, c, patient, day)]
        if not cases:
            return None
        weights = np.array([self.shares[c.condition] for c in cases])
        return cases[pick(patient.rng, weights / weights.sum())]

    def _emergency_visit(self, patient: PatientState, ed: Visit, active: set[str]) -> Visit | None:
        """An ED visit for one of the reasons by its share of ED visits, admitted as often as it is
        (None when no reason fits the patient)."""
        case = self._draw_case(patient, ed.day, active)
        if case is None:
            return None
        condition = self.k.conditions[case.condition]
        ed.facts += [Fact(condition.code), *prescribe(self.k, condition, patient)]
        # a reason with a treatment in acute_care.csv (syncope) has its disposition drawn by `vet`
        if case.condition not in self.treatments and patient.rng.random() < case.admit_probability:
            self.waiting.append(self._admission(patient, ed, case.stay_days or condition.stay_days, [], condition.code))
        return ed

    def _terminal(self, patient: PatientState) -> _Terminal | None:
        """The terminal encounter of the current day of death, drawn once per drawn day."""
        death = patient.death_day
        if death is None or death > patient.end_day:
            return None
        if self.terminal is None or self.terminal.death_day != death:
            self.terminal = _Terminal(death, self._draw_terminal(patient, death))
        return self.terminal

    def _draw_terminal(self, patient: PatientState, death: float) -> Visit | None:
        rng, draw = patient.rng, patient.rng.random()
        cause = cause_of_death(self.k, patient, death)
        reason = None if cause == NATURAL_DEATH else cause  # the condition the patient comes in dying of
        if draw < DIES_ADMITTED:
            stay = _draw_days(rng, *TERMINAL_STAY)
            return Visit(death - stay, "IMP", stay, [Fact(EMERGENCY_ADMISSION, text=reason)])
        if draw < DIES_ADMITTED + DIES_IN_ED:
            stay = _draw_days(rng, ED_STAY[0] / MINUTES_PER_DAY, ED_STAY[1])
            return Visit(death - stay, "EMER", stay, [Fact(ED_VISIT, text=reason)])
        if draw < DIES_ADMITTED + DIES_IN_ED + (1 - DIES_ADMITTED - DIES_IN_ED) * SEEN_LAST_MONTH:
            day = office_hours(patient, death - rng.uniform(1.0, LAST_MONTH_DAYS))
            if day < death:
                facts = [Fact(SICK_VISIT, text=reason), *([Fact(HOSPICE_CARE)] if reason else [])]
                return Visit(day, "AMB", rng.uniform(15, 40) / MINUTES_PER_DAY, facts)
        return None


def keeper_codes(knowledge: Knowledge) -> frozenset[str]:
    """Every code the keeper may write whatever the source: its visits with their triage vital
    signs, the conditions it dates with their drugs and treatments. They are the engine's acute care, beside the kinds a source
    authors, as the end of an episode is the episode keeper's."""
    keeper = EmergencyKeeper(knowledge)
    conditions = {*keeper.sudden, *(c.condition for c in keeper.cases), *keeper.treatments}
    drugs = {m.code for key in conditions for m in knowledge.medications.get(key, ())}
    drugs |= {formulations()[code].child_code for code in drugs if code in formulations()}  # children's products
    visits = ({visit_start_code(c) for c in ENCOUNTER_CLASSES}
              | {VISIT_END, ED_VISIT, EMERGENCY_ADMISSION, SICK_VISIT, NEWBORN_STAY, HOSPICE_CARE, OBSERVATION_STAY})
    stays = {code for a in admissions() for code in (a.admission, a.procedure, a.lab) if code}
    return frozenset({knowledge.conditions[key].code for key in conditions} | drugs | visits | stays | {MEDICATION_END}
                     | set(TRIAGE_VITAL_SIGNS)
                     | {t.procedure for t in keeper.treatments.values() if t.procedure})


def _is_condition(code: str | None) -> bool:
    return code is not None and domain_of(code) == "condition"


def _draw_days(rng: np.random.Generator, median: float, spread: float) -> float:
    """A lognormal duration in days."""
    return float(rng.lognormal(math.log(median), spread))
