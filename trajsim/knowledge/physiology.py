"""The knowledge a patient's body is built from, read once: its parameters (`data/body.csv`), the
growth curve a patient keeps their centile on, the values that imply a diagnosis
(`data/value_limits.csv`: a fever, an HbA1c in the diabetic range) and the CKD-EPI 2021 equation
that turns creatinine into eGFR. The engine's body and the `values` rules read the same figures, so
what the engine writes is what the checker accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from trajsim.knowledge.tables import DATA, Knowledge, keyed_pairs, read_table

HEIGHT, WEIGHT, BMI = "LOINC/8302-2", "LOINC/29463-7", "LOINC/39156-5"
SYSTOLIC, DIASTOLIC = "LOINC/8480-6", "LOINC/8462-4"
# The vital signs every visit takes: blood pressure, heart rate, respiratory rate, temperature.
VITAL_SIGNS = (SYSTOLIC, DIASTOLIC, "LOINC/8867-4", "LOINC/9279-1", "LOINC/8310-5")
CREATININE, EGFR = "LOINC/38483-4", "LOINC/98979-8"  # eGFR by CKD-EPI 2021, the equation the body uses
UREA_NITROGEN, UREA_CREATININE_RATIO = "LOINC/6299-2", "LOINC/3097-3"
# Codes other records give the same measurement under: eGFR coded with the MDRD name (Synthea, the
# shipped model's vocabulary). The body values it as the CKD-EPI 2021 eGFR and the chart keeps the
# code the source proposed; the rules judge it as the eGFR.
EGFR_MDRD = "LOINC/33914-3"
HBA1C = "LOINC/4548-4"
LDL, HDL, TRIGLYCERIDES, TOTAL_CHOLESTEROL = "LOINC/18262-6", "LOINC/2085-9", "LOINC/2571-8", "LOINC/2093-3"
SAME_MEASUREMENT = {EGFR_MDRD: EGFR}
SODIUM, CHLORIDE, BICARBONATE, ANION_GAP = "LOINC/2947-0", "LOINC/2075-0", "LOINC/2028-9", "LOINC/33037-3"
TOTAL_PROTEIN, ALBUMIN, GLOBULIN = "LOINC/2885-2", "LOINC/1751-7", "LOINC/10834-0"
BILIRUBIN, DIRECT_BILIRUBIN = "LOINC/1975-2", "LOINC/1968-7"
HEMOGLOBIN, HEMATOCRIT, ERYTHROCYTES = "LOINC/718-7", "LOINC/4544-3", "LOINC/789-8"
MCV, MCH, MCHC = "LOINC/787-2", "LOINC/785-6", "LOINC/786-4"
LEUKOCYTES, NEUTROPHILS_ABSOLUTE = "LOINC/6690-2", "LOINC/751-8"
NEUTROPHILS, LYMPHOCYTES, MONOCYTES, EOSINOPHILS, BASOPHILS = (
    "LOINC/770-8", "LOINC/736-9", "LOINC/5905-5", "LOINC/713-8", "LOINC/706-2")
DIFFERENTIAL = (NEUTROPHILS, LYMPHOCYTES, MONOCYTES, EOSINOPHILS, BASOPHILS)
BMI_FROM_AGE = 2.0  # CDC BMI-for-age charts start at 2 years
SPO2 = "LOINC/59408-5"  # oxygen saturation by pulse oximetry
HEAD_CIRCUMFERENCE = "LOINC/9843-4"
BMI_PERCENTILE, WEIGHT_FOR_LENGTH_PERCENTILE, HEAD_PERCENTILE = "LOINC/59576-9", "LOINC/77606-2", "LOINC/8289-1"
# The ages (years, from and below) a child's growth chart reports: the CDC BMI-for-age chart from 2
# to 20, weight-for-length under 2 (where the CDC recommends charting length rather than BMI), head
# circumference to 36 months (CDC 2000 growth charts; the US Core pediatric profiles' ranges).
GROWTH_AGES = {BMI_PERCENTILE: (BMI_FROM_AGE, 20.0), WEIGHT_FOR_LENGTH_PERCENTILE: (0.0, 2.0),
               HEAD_CIRCUMFERENCE: (0.0, 3.0), HEAD_PERCENTILE: (0.0, 3.0)}
# US laboratories report a creatinine eGFR from 18 only: CKD-EPI 2021 is validated in adults, and the
# children's (bedside Schwartz, CKiD U25) equations need the height the laboratory does not have, so
# a child's creatinine is reported alone (Miller et al., NKF Laboratory Engagement Working Group,
# Clin Chem 2022;68:511-20; Delgado et al., NKF-ASN Task Force, Am J Kidney Dis 2022;79:268-88).
EGFR_FROM_AGE = 18.0
# computed from the values they depend on
DERIVED = {BMI: (HEIGHT, WEIGHT), EGFR: (CREATININE,), TOTAL_CHOLESTEROL: (LDL, HDL, TRIGLYCERIDES),
           BMI_PERCENTILE: (BMI,), WEIGHT_FOR_LENGTH_PERCENTILE: (WEIGHT, HEIGHT), HEAD_PERCENTILE: (HEAD_CIRCUMFERENCE,),
           # a panel's results that follow from others in it, as the analyser computes them
           CHLORIDE: (SODIUM, BICARBONATE, ANION_GAP), TOTAL_PROTEIN: (ALBUMIN, GLOBULIN),
           UREA_NITROGEN: (CREATININE, UREA_CREATININE_RATIO),
           HEMATOCRIT: (HEMOGLOBIN, MCHC), ERYTHROCYTES: (HEMOGLOBIN, MCHC, MCV), MCH: (MCV, MCHC),
           NEUTROPHILS: DIFFERENTIAL[1:], NEUTROPHILS_ABSOLUTE: (LEUKOCYTES, *DIFFERENTIAL[1:])}
# A measurement a child's chart reports its percentile beside, and that percentile.
PERCENTILE_OF = {BMI: BMI_PERCENTILE, WEIGHT: WEIGHT_FOR_LENGTH_PERCENTILE, HEAD_CIRCUMFERENCE: HEAD_PERCENTILE}


@cache
def body_parameters() -> dict[str, float]:
    """The body's parameters by name (`data/body.csv`)."""
    return {r["parameter"]: float(r["value"]) for r in read_table(DATA.joinpath("body.csv"), ("parameter", "value"))}


@dataclass(frozen=True)
class ValueLimit:
    """A value at or above `limit` of measurement `code` means one of `conditions` (keys of
    conditions.csv) is present; `rule` names the violation of a record that has none."""

    code: str
    limit: float
    conditions: frozenset[str]
    rule: str

    def condition_codes(self, knowledge: Knowledge) -> frozenset[str]:
        """The SNOMED CT and ICD-10-CM codes of the conditions that explain the value."""
        return frozenset(code for key in self.conditions
                         for code in (knowledge.conditions[key].code, knowledge.conditions[key].icd10cm))


@cache
def value_limits() -> dict[str, ValueLimit]:
    """The value limits by measurement code (`data/value_limits.csv`)."""
    rows = read_table(DATA.joinpath("value_limits.csv"), ("code", "limit", "conditions", "rule"))
    return {r["code"]: ValueLimit(r["code"], float(r["limit"]), frozenset(r["conditions"].split(";")), r["rule"])
            for r in rows}


@cache
def treatment_effects() -> dict[str, tuple[tuple[str, float], ...]]:
    """Measurement code -> (drug group of medications.csv, factor its value is multiplied by while a
    drug of the group is taken) (`data/treatment_effects.csv`)."""
    return keyed_pairs("treatment_effects.csv", "code", "group", "factor")


def measured_at(knowledge: Knowledge, code: str, sex: str, age: float, active: set[str]) -> bool:
    """Whether a measurement is taken at this age: height and weight always, BMI from 2, a growth
    chart's measurement and percentile in its ages (`GROWTH_AGES`), eGFR with its creatinine from 18,
    any other where the value tables cover the age (BP from 3)."""
    if code in (HEIGHT, WEIGHT):
        return True
    if code == BMI:
        return age >= BMI_FROM_AGE
    if code in GROWTH_AGES:
        return GROWTH_AGES[code][0] <= age < GROWTH_AGES[code][1]
    if code == EGFR and age < EGFR_FROM_AGE:
        return False
    for needed in DERIVED.get(code, (code,)):
        if knowledge.value_distribution(needed, sex, age, active) is None:
            return False
    return True


def stature_curve(knowledge: Knowledge, sex: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Ages and median heights of a growth curve that never falls: the growth chart's medians to the
    end of growth, then the height reached. (The lower adult means of NHANES mix birth cohorts; a
    person keeps their adult height.)"""
    table = knowledge.growth[sex]
    growing = table[table[:, 0] <= body_parameters()["adult_height_age"]]
    return tuple(growing[:, 0].tolist()), tuple(np.maximum.accumulate(growing[:, 1]).tolist())


def ckd_epi_2021(creatinine: np.ndarray | float, age: np.ndarray | float, female: np.ndarray | bool) -> np.ndarray:
    """eGFR in mL/min/1.73 m2 from serum creatinine in mg/dL by the race-free CKD-EPI 2021 equation
    (Inker et al., N Engl J Med 2021;385:1737-49): 142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x
    0.9938^age (x 1.012 if female), k = 0.7 (female) or 0.9 (male), a = -0.241 (female) or -0.302 (male)."""
    female = np.asarray(female, dtype=bool)
    ratio = np.asarray(creatinine, dtype=float) / np.where(female, 0.7, 0.9)
    alpha = np.where(female, -0.241, -0.302)
    return (142.0 * np.minimum(ratio, 1.0) ** alpha * np.maximum(ratio, 1.0) ** -1.200
            * 0.9938 ** np.asarray(age, dtype=float) * np.where(female, 1.012, 1.0))
