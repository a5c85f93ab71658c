"""Clinical coherence, read as a physician would: every rule's rate and a chart profile for the
default cohort (the shipped model), the rule-based reference source and the Synthea records in
../shared/refdata, side by side over the same ten-year window.

    python benchmarks/bench_clinical.py [PATIENTS]

Rules run on each whole record (history included, so an indication diagnosed before the window
counts); a violation counts when it is dated inside the window. A rate is the share of patients with
at least one violation. The profile counts what is not a rule but a physician notices (orders and
acute care per person-year, where and of what patients die).
"""

from __future__ import annotations

import sys
import tempfile
from datetime import datetime
from pathlib import Path

import polars as pl

from trajsim.events import DEATH, VISIT_END, VISIT_START_PREFIX
from trajsim.generate import generate
from trajsim.ingest import read_events
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.therapy import guideline_therapies
from trajsim.rules import RULES, find_violations
from trajsim.scenario import Scenario, with_overrides
from trajsim.vocab import in_domain

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "refdata" / "synthea_fhir_r4_smart615" / "bundles"
CAUSE_OF_DEATH = "LOINC/69453-9"  # Synthea records the cause as an Observation after death; trajsim on the death event
HOSPITAL_DEATH_WINDOW = pl.duration(hours=25)  # Synthea discharges a patient who dies in hospital a day before death
US_RATES = ("US: ~0.43 ED visits (NHAMCS 2019) and ~0.10 stays (HCUP 2019) per person-year for all reasons, of which "
            "trajsim models a part (docs/knowledge.md, 'Where care happens'); ~30% of deaths in hospital (NCHS)")


def generated_events(patients: int, model: str, out: Path) -> pl.DataFrame:
    scenario = with_overrides(Scenario(), "clinical", **{"population.size": patients, "model": model,
                                                          "output.formats": ["events"]})
    generate(scenario, out)
    return pl.read_parquet(out / "events" / "*.parquet")


def rule_rates(events: pl.DataFrame, start: datetime, end: datetime) -> dict[str, float]:
    """Share of patients with at least one violation of each rule dated inside the window."""
    patients = events["subject_id"].n_unique()
    found = find_violations(events).filter(pl.col("time").is_between(start, end, closed="left"))
    per_rule = dict(found.group_by("rule").agg(pl.col("subject_id").n_unique()).iter_rows())
    return {rule: per_rule.get(rule, 0) / patients for rule in RULES}


def chart_profile(events: pl.DataFrame, start: datetime, end: datetime) -> dict[str, float]:
    """Orders, acute care, deaths and breadth of coding inside the window."""
    code, time = pl.col("code"), pl.col("time")
    inside = events.filter(time.is_between(start, end, closed="left"))
    spans = (events.group_by("subject_id")
             .agg(first=time.min(), last=time.max(), death=time.filter(code == DEATH).min())
             .with_columns(first=pl.max_horizontal("first", pl.lit(start)),
                           last=pl.min_horizontal(pl.coalesce("death", "last"), pl.lit(end)))
             .filter(pl.col("last") > pl.col("first")))
    years = float(((spans["last"] - spans["first"]).dt.total_seconds() / (365.25 * 86400)).sum())
    visits = inside.filter(code.str.starts_with(VISIT_START_PREFIX))
    stays = (visits.filter(code == VISIT_START_PREFIX + "IMP").select("subject_id", "encounter_id", start_=time)
             .join(events.filter(code == VISIT_END).select("subject_id", "encounter_id", end_=time),
                   on=["subject_id", "encounter_id"], how="left"))
    deaths = inside.filter(code == DEATH).select("subject_id", "text", death=time)
    in_hospital = (deaths.join(stays, on="subject_id")
                   .filter((pl.col("start_") <= pl.col("death"))
                           & (pl.col("end_").fill_null(pl.col("death")) >= pl.col("death") - HOSPITAL_DEATH_WINDOW))
                   ["subject_id"].n_unique())
    recent = (deaths.join(events.filter(code.str.starts_with(VISIT_START_PREFIX)).select("subject_id", visit=time), on="subject_id")
              .filter(pl.col("visit").is_between(pl.col("death") - pl.duration(days=30), pl.col("death")))
              ["subject_id"].n_unique())
    orders = inside.filter(in_domain(code, "medication"))
    first_visit = (events.filter(code.str.starts_with(VISIT_START_PREFIX)).group_by("subject_id")
                   .agg(first_visit=time.min()))
    early = (events.filter(in_domain(code, "medication")).join(first_visit, on="subject_id", how="left")
             .filter(pl.col("first_visit").is_null() | (time < pl.col("first_visit"))))
    same_day = orders.group_by("subject_id", "code", time.dt.date()).len().filter(pl.col("len") > 1)["len"].sum()
    decedents = deaths.height
    certified = inside.filter(code == CAUSE_OF_DEATH)["subject_id"].unique()
    with_cause = deaths.filter(pl.col("text").is_not_null() | pl.col("subject_id").is_in(certified.implode())).height
    return {
        "medication orders per person-year": orders.height / years,
        "orders repeated on the same day (share of orders)": (same_day or 0) / max(orders.height, 1),
        "orders outside any encounter (share)": orders["encounter_id"].null_count() / max(orders.height, 1),
        "orders dated before the record's first encounter (share of all)": early.height / max(
            events.filter(in_domain(code, "medication")).height, 1),
        "ED visits per person-year": visits.filter(code == VISIT_START_PREFIX + "EMER").height / years,
        "inpatient stays per person-year": stays.height / years,
        "deaths per 1,000 person-years": 1000 * decedents / years,
        "decedents with no encounter in their last 30 days": 1 - recent / decedents if decedents else 0.0,
        "deaths in (or within a day of) a hospital stay": in_hospital / decedents if decedents else 0.0,
        "deaths with a recorded cause": with_cause / decedents if decedents else 0.0,
        "distinct measured codes (a LOINC code with a value)": float(
            inside.filter(code.str.starts_with("LOINC/") & pl.col("numeric_value").is_not_null())["code"].n_unique()),
    }


def untreated(events: pl.DataFrame) -> dict[str, float]:
    """Share of the patients ever diagnosed with each guideline therapy's condition who are never
    ordered a drug of its group (the issue's reading; the rules judge only spells seen at a visit)."""
    knowledge, code = load_knowledge(), pl.col("code")
    shares = {}
    for therapy in guideline_therapies(knowledge):
        condition = knowledge.conditions[therapy.condition]
        patients = events.filter(code.is_in([condition.code, condition.icd10cm]))["subject_id"].unique()
        treated = events.filter(code.is_in(list(therapy.codes)) & pl.col("subject_id").is_in(patients.implode()))
        label = f"{therapy.condition.replace('_', ' ')} with no {therapy.group.replace('_', ' ')} ever ordered"
        shares[label] = 1 - treated["subject_id"].n_unique() / patients.len() if patients.len() else 0.0
    return shares


def main(patients: int) -> None:
    scenario = Scenario()
    start = datetime.combine(scenario.period.start, datetime.min.time())
    end = datetime.combine(scenario.period.end, datetime.min.time())
    tables: dict[str, pl.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("default", "reference"):
            tables[f"trajsim {model}"] = generated_events(patients, model, Path(tmp) / model)
    if SYNTHEA.is_dir():
        tables["Synthea"] = read_events("fhir", SYNTHEA)
    else:
        print(f"(Synthea refdata not found at {SYNTHEA}: its column is left out)")
    names = list(tables)
    print(f"window {start:%Y-%m-%d} to {end:%Y-%m-%d}; patients: "
          + ", ".join(f"{name} {table['subject_id'].n_unique():,}" for name, table in tables.items()))
    rates = {name: rule_rates(table, start, end) for name, table in tables.items()}
    profiles = {name: chart_profile(table, start, end) | untreated(table) for name, table in tables.items()}
    width = max(map(len, [*RULES, *profiles[names[0]]])) + 2
    print("\nrule (share of patients with a violation)".ljust(width + 1) + "".join(f"{name:>20}" for name in names))
    for rule in RULES:
        print(f" {rule:<{width}}" + "".join(f"{rates[name][rule]:>19.2%} " for name in names))
    print("\nchart profile".ljust(width + 1) + "".join(f"{name:>20}" for name in names))
    for metric in profiles[names[0]]:
        print(f" {metric:<{width}}" + "".join(f"{profiles[name][metric]:>19.3f} " for name in names))
    print(f"\n({US_RATES})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
