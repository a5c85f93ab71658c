"""A patient's body: the one author of every measured value, whichever source proposes the
measurement, so that a chart's values do not contradict each other.

Height follows the growth chart on the patient's own centile (`height_z`) and stays at the height
reached once growth ends; weight follows the chart's median scaled by the patient's build
(`weight_factor`, more with obesity) and drifts slowly around it; BMI is always the recorded weight
over the recorded height squared. Every other vital and lab is the knowledge table's distribution
for the patient's sex, age and conditions at a patient-level centile plus visit noise; the
diastolic pressure stays a pulse pressure below the systolic and the direct bilirubin within the
total; a child's BP centres on the AAP 2017 median for age, sex and the child's own height
percentile and stays below stage 2 hypertension unless the chart has hypertension
(`knowledge/child_blood_pressure.py`); HbA1c moves slowly around the patient's level (it reflects
months of glycaemia); a drug scales the values it lowers or restores (a statin LDL, oral iron
hemoglobin, each antihypertensive taken the blood pressure, `data/treatment_effects.csv`); eGFR is the creatinine's by CKD-EPI 2021; total
cholesterol is the panel's LDL + HDL + triglycerides/5; the analyser's computed results agree with
the rest of their panel (chloride is sodium - bicarbonate - the anion gap, total protein albumin +
globulin, hematocrit hemoglobin / MCHC, the erythrocytes and MCH the red cell indices', the
neutrophils what the differential leaves of 100%); a urine test strip reads positive by the visit's
own values (glucose above the renal threshold) or a condition's chance (`urine_findings.csv`); an
abnormal TSH brings its free T4 (`lab_reflexes.csv`); a value that implies a diagnosis (a fever,
an HbA1c in the diabetic range) stays below its limit unless one of its conditions is active or
diagnosed at the visit. A child's head circumference keeps the patient's own centile of the CDC
chart, and a child's BMI, weight and head circumference come with their percentiles on the CDC
charts (`knowledge/growth_charts.py`), read from the very values recorded. Figures: `data/body.csv`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

from trajsim.clock import DAYS_PER_YEAR
from trajsim.engine.chart import ChartKeeper
from trajsim.knowledge import child_blood_pressure as child_bp
from trajsim.engine.schedules import active_keys
from trajsim.engine.source import Fact, PatientState, Visit
from trajsim.events import CONDITION_END
from trajsim.knowledge import Knowledge
from trajsim.knowledge.growth_charts import (
    BMI_FOR_AGE, HEAD_FOR_AGE, MONTHS_PER_YEAR, WEIGHT_FOR_LENGTH, LmsChart, growth_chart,
)
from trajsim.knowledge.labs import NEGATIVE, POSITIVE, abnormal, panel_results, reflexes, urine_findings
from trajsim.knowledge.hazards import interpolate
from trajsim.knowledge.physiology import (
    ALBUMIN, ANION_GAP, BICARBONATE, BILIRUBIN, BMI, BMI_PERCENTILE, CHLORIDE, CREATININE, DIASTOLIC, DIFFERENTIAL,
    DIRECT_BILIRUBIN, EGFR, ERYTHROCYTES, GLOBULIN, HBA1C, HDL, HEAD_CIRCUMFERENCE, HEAD_PERCENTILE, HEIGHT, HEMATOCRIT,
    HEMOGLOBIN, LDL, LEUKOCYTES, LYMPHOCYTES, MCH, MCHC, MCV, NEUTROPHILS, NEUTROPHILS_ABSOLUTE, PERCENTILE_OF, SAME_MEASUREMENT,
    SODIUM, SYSTOLIC, TOTAL_CHOLESTEROL, TOTAL_PROTEIN, TRIGLYCERIDES, UREA_CREATININE_RATIO, UREA_NITROGEN, WEIGHT,
    WEIGHT_FOR_LENGTH_PERCENTILE, body_parameters,
    ckd_epi_2021, measured_at, stature_curve, treatment_effects, value_limits,
)
from trajsim.knowledge.therapy import drug_groups

HYPERTENSION = "hypertension"


def measure(knowledge: Knowledge, code: str, value: float) -> Fact:
    """A measurement rounded to its reporting precision and kept within physiological bounds."""
    m = knowledge.measurements[code]
    return Fact(code, 0.0, round(min(max(value, m.low), m.high), m.decimals), m.unit)


class Body:
    """One patient's physiology: patient-level centiles, drawn once, and a weight that drifts."""

    def __init__(self, knowledge: Knowledge, patient: PatientState) -> None:
        self.k, self.patient = knowledge, patient
        self.figures = body_parameters()
        self.stature = stature_curve(knowledge, patient.sex)
        self.centiles: dict[str, float] = {}  # measurement code -> the patient's z-score
        self.weight_state: tuple[float, float] | None = None  # (day, log weight relative to the median)
        self.hba1c_state: tuple[float, float] | None = None  # (day, the patient's HbA1c z-score that day)
        self.groups = drug_groups(knowledge)
        self.visit_noise = math.sqrt(1 - self.figures["within_person_correlation"] ** 2)  # sd of a reading's own part

    def examine(self, day: float, active: set[str]) -> Examination:
        """The body as measured on `day` with the condition keys in `active`."""
        return Examination(self, day, active)

    def height(self, age: float) -> float:
        ages, heights = self.stature
        return interpolate(age, ages, heights) * (1 + self.figures["height_cv"] * self.patient.height_z)

    def weight(self, day: float, age: float, active: set[str]) -> float:
        """The weight on `day`: the median for age times the patient's build, with a deviation that
        reverts to it over `weight_drift_years` (an Ornstein-Uhlenbeck process, so readings days
        apart agree and years apart may differ by the stationary spread)."""
        f, rng = self.figures, self.patient.rng
        target = math.log(self.patient.weight_factor * (f["obesity_weight_factor"] if "obesity" in active else 1.0))
        if self.weight_state is None:
            deviation = target + rng.normal(0, f["weight_sd"])
        else:
            last_day, last = self.weight_state
            keep = math.exp(-abs(day - last_day) / (f["weight_drift_years"] * DAYS_PER_YEAR))
            deviation = target + (last - target) * keep + rng.normal(0, f["weight_sd"] * math.sqrt(1 - keep**2))
        self.weight_state = (day, deviation)
        return self.k.growth_at(self.patient.sex, age)[1] * math.exp(deviation)

    def reading(self, code: str, day: float, age: float, active: set[str]) -> float | None:
        """A vital or lab from its table distribution at the patient's own centile plus visit noise,
        held below a diagnostic limit the chart does not explain; None if not taken at this age.
        HbA1c follows a slowly moving level instead (`hba1c_level`), plus the assay's noise."""
        dist = self.k.value_distribution(code, self.patient.sex, age, active)
        if dist is None:
            return None
        rng, r = self.patient.rng, self.figures["within_person_correlation"]
        measure = child_bp.MEASURES.get(code)
        child = measure is not None and child_bp.covers(age)
        if child:
            mean, sd = child_bp.distribution(self.patient.sex, measure, age, self.height_percentile())
            dist = replace(dist, mean=mean, sd=sd)
        if code == HBA1C:
            value = dist.mean + dist.sd * self.hba1c_level(day) + rng.normal(0, self.figures["hba1c_visit_sd"])
        else:
            z = self.centiles.setdefault(code, float(rng.normal()))
            value = dist.mean + dist.sd * (r * z + self.visit_noise * rng.normal())
        effects = treatment_effects().get(code, ())
        taken = self.drug_groups_taken(day) if effects else {}
        for group, factor in effects:
            value *= factor ** taken.get(group, 0)
        limit = value_limits().get(code)
        if limit is not None and not limit.conditions & active:
            value = min(value, limit.limit - 10 ** -self.k.measurements[code].decimals)
        if child and HYPERTENSION not in active:
            stage2 = child_bp.stage2_threshold(self.patient.sex, measure, age, self.height_percentile())
            value = min(value, math.ceil(stage2) - 1)
        return value

    def height_percentile(self) -> float:
        """The percentile of the patient's own height centile on the growth chart."""
        return 50.0 * (1.0 + math.erf(self.patient.height_z / math.sqrt(2.0)))

    def head_z(self) -> float:
        """The patient's own z-score of head circumference, drawn once and kept: a healthy child's
        head grows along its centile, as its height does."""
        return self.centiles.setdefault(HEAD_CIRCUMFERENCE, float(self.patient.rng.normal()))

    def drug_groups_taken(self, day: float) -> dict[str, int]:
        """The `medications.csv` groups of the drugs the patient takes on `day` (ordered before it), each
        with the number of its drugs taken: a second antihypertensive lowers the pressure again."""
        return Counter(g for code, end in self.patient.medications.items() if end > day for g in self.groups.get(code, ()))

    def hba1c_level(self, day: float) -> float:
        """The patient's HbA1c z-score on `day`: an Ornstein-Uhlenbeck process reverting over
        `hba1c_drift_years`, so readings months apart differ by a few tenths of a percent while the
        population keeps its table distribution (the process is stationary at N(0, 1))."""
        rng = self.patient.rng
        if self.hba1c_state is None:
            level = float(rng.normal())
        else:
            last_day, last = self.hba1c_state
            keep = math.exp(-abs(day - last_day) / (self.figures["hba1c_drift_years"] * DAYS_PER_YEAR))
            level = last * keep + float(rng.normal()) * math.sqrt(1 - keep**2)
        self.hba1c_state = (day, level)
        return level


class Examination:
    """The body's values at one visit, each drawn once, so that values derived from others (BMI,
    eGFR, a diastolic below the systolic) use the very values recorded beside them."""

    def __init__(self, body: Body, day: float, active: set[str]) -> None:
        self.body, self.day, self.active = body, day, active
        self.age = body.patient.age_at(day)
        self.values: dict[str, Fact | None] = {}

    def fact(self, code: str) -> Fact | None:
        """The measurement of `code` with its value, or None if it is not taken at this age."""
        if code not in self.values:
            self.values[code] = self._measure(code)
        return self.values[code]

    @property
    def months(self) -> float:
        return self.age * MONTHS_PER_YEAR

    def _chart(self, chart: str) -> LmsChart:
        return growth_chart(chart, self.body.patient.sex)

    def _value(self, code: str) -> float | None:
        fact = self.fact(code)
        return None if fact is None else fact.value

    def _measure(self, code: str) -> Fact | None:
        body, k = self.body, self.body.k
        if not measured_at(k, code, body.patient.sex, self.age, self.active):
            return None
        if code == HEIGHT:
            value = body.height(self.age)
        elif code == WEIGHT:
            value = body.weight(self.day, self.age, self.active)
        elif code == BMI:
            value = self._value(WEIGHT) / (self._value(HEIGHT) / 100) ** 2
        elif code == EGFR:
            value = float(ckd_epi_2021(self._value(CREATININE), self.age, body.patient.sex == "F"))
        elif code == TOTAL_CHOLESTEROL:  # Friedewald et al., Clin Chem 1972;18:499-502: TC = LDL + HDL + TG/5
            value = self._value(LDL) + self._value(HDL) + self._value(TRIGLYCERIDES) / 5
        elif code in PANEL_DERIVED:
            value = PANEL_DERIVED[code](self._value)
        elif code == HEAD_CIRCUMFERENCE:
            value = self._chart(HEAD_FOR_AGE).value(self.months, body.head_z())
        elif code == BMI_PERCENTILE:
            value = self._chart(BMI_FOR_AGE).percentile(self.months, self._value(BMI))
        elif code == WEIGHT_FOR_LENGTH_PERCENTILE:
            value = self._chart(WEIGHT_FOR_LENGTH).percentile(self._value(HEIGHT), self._value(WEIGHT))
        elif code == HEAD_PERCENTILE:
            value = self._chart(HEAD_FOR_AGE).percentile(self.months, self._value(HEAD_CIRCUMFERENCE))
        else:
            value = body.reading(code, self.day, self.age, self.active)
            if code == DIASTOLIC and (systolic := self._value(SYSTOLIC)) is not None:
                value = min(value, systolic - body.figures["min_pulse_pressure"])
            elif code == DIRECT_BILIRUBIN and (total := self._value(BILIRUBIN)) is not None:
                value = min(value, total)  # the conjugated part of the total bilirubin
            elif code == LYMPHOCYTES:  # the five kinds share a hundred cells, the fewest neutrophils counted among them
                others = (self._value(c) for c in DIFFERENTIAL[2:])
                value = min(value, 100 - k.measurements[NEUTROPHILS].low - sum(v for v in others if v is not None))
        return measure(k, code, value)


    def finding(self, code: str) -> str:
        """A test strip's reading, positive or negative (`urine_findings.csv`): by the visit's own
        marker value (urine glucose by the blood glucose) or by chance with the condition active."""
        for finding in urine_findings().get(code, ()):
            if finding.marker is not None:
                marker = self._value(finding.marker)
                return POSITIVE if marker is not None and marker >= finding.limit else NEGATIVE
            if finding.condition is None or finding.condition in self.active:
                return POSITIVE if self.body.patient.rng.random() < finding.chance else NEGATIVE
        return NEGATIVE

    def follow_ups(self, code: str, value: float) -> list[str]:
        """What a laboratory adds to a result: a child's growth-chart percentile, and the reflex
        test of a result outside its reference interval (free T4 after an abnormal TSH)."""
        extra = [PERCENTILE_OF[code]] if code in PERCENTILE_OF else []
        reflex = reflexes().get(code)
        if reflex is not None and abnormal(code, value, self.body.patient.sex, self.age):
            extra.append(reflex)
        return extra


# A panel's results the analyser computes from others of the same specimen (Clinical Methods 3rd ed.,
# 1990: chapter 101 for total protein, 152 for the red cell indices; Kraut and Madias 2007 for the
# anion gap), so a chart's chloride, hematocrit and differential agree with the rest of their panel.
PANEL_DERIVED = {
    CHLORIDE: lambda v: v(SODIUM) - v(BICARBONATE) - v(ANION_GAP),
    TOTAL_PROTEIN: lambda v: v(ALBUMIN) + v(GLOBULIN),
    UREA_NITROGEN: lambda v: v(CREATININE) * v(UREA_CREATININE_RATIO),  # a urea nitrogen that follows the kidneys
    HEMATOCRIT: lambda v: v(HEMOGLOBIN) / v(MCHC) * 100,
    ERYTHROCYTES: lambda v: v(HEMATOCRIT) / v(MCV) * 10,
    MCH: lambda v: v(MCV) * v(MCHC) / 100,
    NEUTROPHILS: lambda v: 100 - sum(v(c) for c in DIFFERENTIAL[1:]),
    NEUTROPHILS_ABSOLUTE: lambda v: v(LEUKOCYTES) * v(NEUTROPHILS) / 100,
}


class BodyKeeper(ChartKeeper):
    """Sets the value of every measurement in a visit from the patient's body, whatever the source
    proposed, drops a measurement not taken at the patient's age and a second one of the same code
    (in an encounter; for history outside any visit, on the same day), and adds beside a child's BMI,
    weight and head circumference its growth-chart percentile (and a reflex test beside its
    abnormal result), when its source records that measurement (`measured`; None: every one: a
    model of Synthea's charts never saw a head circumference percentile). A measurement proposed
    under another code for it (eGFR with the MDRD name, as Synthea records it) takes the body's value
    and keeps the proposed code, so a learned chart reads like its source."""

    def __init__(self, knowledge: Knowledge, patient: PatientState, measured: frozenset[str] | None = None) -> None:
        self.k, self.body, self.measured = knowledge, Body(knowledge, patient), measured
        # a panel's results reported as a coded finding rather than a number (a urine test strip's)
        self.findings = panel_results() - knowledge.measurements.keys()

    def vet(self, patient: PatientState, visit: Visit) -> None:
        if not any(self._measured(f.code) or f.code in self.findings for f in visit.facts):
            return
        # an episode the visit ends as it starts (a follow-up finding the infection gone) no longer
        # shapes its values
        by_code = self.k.conditions_by_code
        ended = {by_code[f.text].key for f in visit.facts
                 if f.code == CONDITION_END and f.offset_days <= 0 and f.text in by_code}
        active = active_keys(self.k, patient, visit.day, visit.facts) - ended
        exams: dict[float, Examination] = {}
        kept, seen = [], set()
        for fact in visit.facts:
            code = SAME_MEASUREMENT.get(fact.code, fact.code)
            if not self._measured(code) and code not in self.findings:
                kept.append(fact)
                continue
            day = visit.day if visit.encounter_class is not None else visit.day + fact.offset_days
            if (day, code) in seen:
                continue
            seen.add((day, code))
            exam = exams.get(day) or exams.setdefault(day, self.body.examine(day, active))
            if code in self.findings:
                kept.append(replace(fact, value=None, unit=None, text=exam.finding(code)))
                continue
            measured = exam.fact(code)
            if measured is None:
                continue
            kept.append(Fact(fact.code, fact.offset_days, measured.value, measured.unit, fact.text))
            for added in exam.follow_ups(code, measured.value):
                if self.measured is not None and added not in self.measured:
                    continue
                if (day, added) not in seen and (extra := exam.fact(added)) is not None:
                    seen.add((day, added))
                    kept.append(Fact(added, fact.offset_days, extra.value, extra.unit, fact.text))
        visit.facts[:] = kept

    def _measured(self, code: str) -> bool:
        """Whether the body sets the value of `code` (directly or under another code for it)."""
        return SAME_MEASUREMENT.get(code, code) in self.k.measurements
