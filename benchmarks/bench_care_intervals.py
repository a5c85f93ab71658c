"""Care a physician expects at its thresholds and intervals, read from the charts of the default
population of the shipped model (`default`) and the reference source and of the Synthea records in
`TRAJSIM_REFDATA` (else ../shared/refdata beside the checkout; whole records, not only the 2015-2025
window):

- hypertensive adults (a BP reading while diagnosed) left untreated more than a year at 140/90 mm Hg
  or higher: two such readings at least a year apart, no BP-lowering drug taken at either; and
  treated ones uncontrolled more than a year (two such readings a year apart, a drug taken at
  both), with the office visits at which a patient still at 140/90 after 3 months on one drug got
  no second (`second_antihypertensive_missing`);
- diabetics on metformin at an HbA1c of 8% or more a year apart, and the visits at which none was
  added after 3 months (`second_glucose_lowering_drug_missing`);
- drugs a pregnancy rules out taken past its first encounter (`drug_contraindicated_in_pregnancy`);
- stays with a medication reconciliation where the patient takes and is ordered no drug, and stays
  with drugs and no reconciliation (`stay_without_reconciliation`);
- adults' general examinations again within 60 and within 330 days, and screenings (screenings.csv,
  done for no condition) again more than 30 days before their USPSTF interval, and laboratory
  screenings (lab_screenings.csv) again before their interval less a month with no condition
  calling for them (`lab_screening_repeated_early`).

    python benchmarks/bench_care_intervals.py [PATIENTS]   (default 200)
"""

from __future__ import annotations

import sys

import polars as pl

from trajsim.engine.procedures import medication_list_procedures
from trajsim.events import BIRTH, VISIT_END, VISIT_START_PREFIX, WELL_ADULT
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.physiology import DIASTOLIC, SYSTOLIC
from trajsim.knowledge.therapy import guideline_therapies
from trajsim.rules import find_violations
from trajsim.rules.base import drug_spells
from trajsim.vocab import in_domain
from bench_clinical import side_by_side

HYPERTENSION = ("SNOMED/59621000", "ICD10CM/I10", "SNOMED/38341003")  # the last is Synthea's
SYNTHEA_HCTZ = "RXNORM/316049"  # hydrochlorothiazide 25 mg, Synthea's antihypertensive
DIABETES, METFORMIN, HBA1C = ("SNOMED/44054006", "ICD10CM/E11.9"), "RXNORM/860975", "LOINC/4548-4"
RULES = ("drug_contraindicated_in_pregnancy", "second_antihypertensive_missing", "second_glucose_lowering_drug_missing",
         "stay_without_reconciliation")


def readings_on_therapy(events: pl.DataFrame, diagnoses: tuple[str, ...], drugs: list[str],
                        high: pl.Expr) -> pl.DataFrame:
    """An adult's readings at encounters while diagnosed (subject_id, encounter_id, time), each
    `high` or not and `treated` (a drug of `drugs` taken) or not."""
    spells = drug_spells(events.lazy(), events.lazy().filter(pl.col("code").is_in(drugs)))
    births = events.filter(pl.col("code") == BIRTH).group_by("subject_id").agg(birth=pl.col("time").min())
    diagnosed = events.filter(pl.col("code").is_in(diagnoses)).group_by("subject_id").agg(dx=pl.col("time").min())
    readings = (events.filter(pl.col("encounter_id").is_not_null())
                .group_by("subject_id", "encounter_id").agg(time=pl.col("time").min(), high=high.any())
                .join(diagnosed, on="subject_id").join(births, on="subject_id")
                .filter((pl.col("time") >= pl.col("dx"))
                        & ((pl.col("time") - pl.col("birth")).dt.total_days() >= 18 * 365.25)))
    treated = (readings.lazy().join(spells, on="subject_id")
               .filter((pl.col("ordered") <= pl.col("time")) & (pl.col("stopped").is_null() | (pl.col("stopped") > pl.col("time"))))
               .select("subject_id", "encounter_id", treated=pl.lit(True)).unique().collect())
    return readings.join(treated, on=["subject_id", "encounter_id"], how="left").with_columns(pl.col("treated").fill_null(False))


def high_for_a_year(readings: pl.DataFrame, treated: bool) -> str:
    """Patients with two high readings a year apart, both treated (or both untreated), of the
    patients treated at a reading (or of all patients measured)."""
    judged = readings.filter(pl.col("treated") == treated)
    long = (judged.filter("high").group_by("subject_id").agg(span=(pl.col("time").max() - pl.col("time").min()).dt.total_days())
            .filter(pl.col("span") >= 365).height)
    patients = (judged if treated else readings)["subject_id"].n_unique()
    return f"{long} of {patients} ({long / max(patients, 1):.1%})"


def blood_pressure_readings(events: pl.DataFrame) -> pl.DataFrame:
    therapy = next(t for t in guideline_therapies(load_knowledge()) if t.thresholds)
    high = (pl.col("code") == SYSTOLIC) & (pl.col("numeric_value") >= 140) | (pl.col("code") == DIASTOLIC) & (pl.col("numeric_value") >= 90)
    readings = readings_on_therapy(events, HYPERTENSION, [*therapy.codes, SYNTHEA_HCTZ], high)
    measured = events.filter(pl.col("code").is_in([SYSTOLIC, DIASTOLIC])).select("subject_id", "encounter_id").unique()
    return readings.join(measured, on=["subject_id", "encounter_id"], how="semi")


def hba1c_readings(events: pl.DataFrame) -> pl.DataFrame:
    readings = readings_on_therapy(events, DIABETES, [METFORMIN], (pl.col("code") == HBA1C) & (pl.col("numeric_value") >= 8))
    measured = events.filter(pl.col("code") == HBA1C).select("subject_id", "encounter_id").unique()
    return readings.join(measured, on=["subject_id", "encounter_id"], how="semi")


def rule_counts(violations: pl.DataFrame, rule: str, by_code: bool = False) -> dict[str, str]:
    """Violations of `rule` (times, patients), per code if `by_code`."""
    found = violations.filter(pl.col("rule") == rule)
    groups = found.partition_by("code", as_dict=True) if by_code else {("",): found}
    return {f"{rule} {key[0]}".strip(): f"{frame.height}, {frame['subject_id'].n_unique()}" for key, frame in sorted(groups.items())}


def empty_reconciliations(events: pl.DataFrame) -> str:
    visit = ["subject_id", "encounter_id"]
    stays = (events.filter(pl.col("code") == VISIT_START_PREFIX + "IMP").select(*visit, start=pl.col("time"))
             .join(events.filter(pl.col("code") == VISIT_END).select(*visit, end=pl.col("time")), on=visit, how="left"))
    reconciled = events.filter(pl.col("code").is_in(sorted(medication_list_procedures()))).select(visit).unique()
    spells = drug_spells(events.lazy(), events.lazy().filter(in_domain(pl.col("code"), "medication"))).collect()
    with_drugs = (stays.join(spells, on="subject_id")
                  .filter((pl.col("ordered") <= pl.col("end").fill_null(pl.col("start")))
                          & (pl.col("stopped").is_null() | (pl.col("stopped") > pl.col("start"))))
                  .select(visit).unique())
    empty = stays.join(reconciled, on=visit, how="semi").join(with_drugs, on=visit, how="anti").height
    return f"{empty} of {stays.height} stays"


def repeats(events: pl.DataFrame) -> dict[str, str]:
    patients = events["subject_id"].n_unique()

    def gaps(frame: pl.DataFrame) -> pl.DataFrame:
        return (frame.select("subject_id", "time").unique().sort("subject_id", "time")
                .with_columns(gap=(pl.col("time") - pl.col("time").shift(1).over("subject_id")).dt.total_days()))

    exams = gaps(events.filter((pl.col("code") == WELL_ADULT) & pl.col("encounter_id").is_not_null()))
    found = {f"general examinations again within {days} days (patients)":
             f"{exams.filter(pl.col('gap') < days)['subject_id'].n_unique() / patients:.1%}" for days in (60, 330)}
    screenings = load_knowledge().screenings
    for code in dict.fromkeys(s.code for s in screenings):
        interval = min(s.interval_years for s in screenings if s.code == code) * 365.25
        done = gaps(events.filter((pl.col("code") == code) & pl.col("text").is_null()))
        early = done.filter(pl.col("gap") < interval - 30)
        found[f"{code} again > 30 days early (times, patients)"] = f"{early.height}, {early['subject_id'].n_unique()}"
    return found


def main(patients: int) -> None:
    tables = side_by_side(patients)
    rows = {}
    for name, table in tables.items():
        pressures, hba1c, violations = blood_pressure_readings(table), hba1c_readings(table), find_violations(table)
        rows[name] = {"hypertensive adults untreated > 1 year at >= 140/90": high_for_a_year(pressures, treated=False),
                      "treated hypertensive adults >= 140/90 for > 1 year": high_for_a_year(pressures, treated=True),
                      "diabetics on metformin at HbA1c >= 8% for > 1 year": high_for_a_year(hba1c, treated=True),
                      **{metric: found for rule in RULES for metric, found in rule_counts(violations, rule).items()},
                      "reconciliations with no drug to reconcile": empty_reconciliations(table), **repeats(table),
                      **rule_counts(violations, "lab_screening_repeated_early", by_code=True)}
    metrics = list(dict.fromkeys(metric for found in rows.values() for metric in found))
    width = max(len(metric) for metric in metrics) + 2
    print(f"{'':<{width}}" + "".join(f"{name:>22}" for name in rows))
    for metric in metrics:
        print(f"{metric:<{width}}" + "".join(f"{found.get(metric, '0, 0'):>22}" for found in rows.values()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
