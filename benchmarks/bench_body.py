"""Body values, read as a clinician would: for a cohort of each source and the Synthea records in
../shared/refdata, the share of patients breaking each `values` rule, and the findings of issue 15
in the terms it measured them (of adults, of children, of readings, of pairs).

    python benchmarks/bench_body.py [PATIENTS]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import polars as pl

from bench_clinical import SYNTHEA, generated_events
from trajsim.knowledge import load_knowledge
from trajsim.rules import values
from trajsim.rules.base import VIOLATION_SCHEMA
from trajsim.events import BIRTH
from trajsim.ingest import read_events
from trajsim.knowledge.physiology import BMI, CREATININE, EGFR, HEIGHT, SYSTOLIC

TEMPERATURE, HBA1C = "LOINC/8310-5", "LOINC/4548-4"
DIABETES, DIABETES_ICD = "SNOMED/44054006", "ICD10CM/E11.9"


def findings(events: pl.DataFrame) -> dict[str, float]:
    """Each rule's share of patients with a violation, and the issue's denominators where it used others."""
    facts = events.lazy().select("subject_id", "time", "encounter_id", "code", "numeric_value", "unit", "text")
    found = pl.concat([c.select(list(VIOLATION_SCHEMA)) for c in values.check(facts, load_knowledge())]).collect()
    patients = events["subject_id"].n_unique()
    per_patient = dict(found.group_by("rule").agg(pl.col("subject_id").n_unique()).iter_rows())
    rates = {f"{rule} (patients)": per_patient.get(rule, 0) / patients for rule in values.RULES}
    count = dict(found.group_by("rule").len().iter_rows())
    aged = (events.filter(pl.col("code") == HEIGHT)
            .join(events.filter(pl.col("code") == BIRTH).select("subject_id", birth="time"), on="subject_id")
            .with_columns(adult=(pl.col("time") - pl.col("birth")).dt.total_days() >= 20 * 365.25))
    adults = aged.filter("adult")["subject_id"].n_unique() or 1
    children = aged.filter(~pl.col("adult"))["subject_id"].n_unique() or 1
    code, value = pl.col("code"), pl.col("numeric_value")
    def readings(c: str) -> int:
        return events.filter(code == c).height or 1
    diabetic = events.filter(code.is_in([DIABETES, DIABETES_ICD]))["subject_id"].unique()
    hba1c = events.filter((code == HBA1C) & ~pl.col("subject_id").is_in(diabetic.implode()))
    pairs = events.filter(code.is_in([CREATININE, EGFR]) & pl.col("encounter_id").is_not_null()).group_by(
        "encounter_id").agg(code.n_unique()).filter(pl.col("code") == 2).height or 1
    rates["adults whose height varies > 5 cm, of adults"] = per_patient.get("adult_height_change", 0) / adults
    rates["children whose height drops > 3 cm, of children"] = per_patient.get("child_height_drop", 0) / children
    rates["BMI != weight/height^2, of BMI readings"] = count.get("bmi_mismatch", 0) / readings(BMI)
    rates["diastolic >= systolic, of BP readings"] = count.get("diastolic_not_below_systolic", 0) / readings(SYSTOLIC)
    rates["fever without diagnosis, of fevers"] = count.get("fever_without_diagnosis", 0) / (
        events.filter((code == TEMPERATURE) & (value >= 38)).height or 1)
    rates["eGFR inconsistent with creatinine, of pairs"] = count.get("egfr_mismatch", 0) / pairs
    rates["HbA1c >= 6.5%, of non-diabetics' HbA1c"] = hba1c.filter(value >= 6.5).height / (hba1c.height or 1)
    rates["BP panels with two systolic values, of BP panels"] = found.filter(
        (pl.col("rule") == "duplicate_measurement") & (pl.col("code") == SYSTOLIC)).height / readings(SYSTOLIC)
    return rates


def main(patients: int) -> None:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("default", "reference"):
            rows[model] = findings(generated_events(patients, model, Path(tmp) / model))
    if SYNTHEA.is_dir():
        rows["Synthea"] = findings(read_events("fhir", SYNTHEA))
    print(f"{'finding':55}" + "".join(f"{name:>10}" for name in rows))
    for finding in rows["default"]:
        print(f"{finding:55}" + "".join(f"{row[finding]:10.2%}" for row in rows.values()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
