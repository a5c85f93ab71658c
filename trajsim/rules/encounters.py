"""Rules about what one encounter holds, read as a clinician reads a visit note: a procedure done
once (three mammographies in one visit are a charting error), an emergency visit with a reason and
vital signs (triage takes them at every ED visit), a newborn's birth stay at birth, and a medication
reconciliation where, and only where, there are drugs to reconcile.

An emergency visit's reason is a condition diagnosed in it, a drug ordered in it for a condition,
or the condition its visit-type fact names in `text` (an exacerbation of a known heart failure, the
illness a patient comes in dying of). An ED visit not yet ended (a live feed cut off mid-visit) is
not judged: its triage and diagnosis may be still to come.
"""

from __future__ import annotations

import polars as pl

from trajsim.events import BIRTH, VISIT_END, VISIT_START_PREFIX
from trajsim.knowledge import Knowledge
from trajsim.knowledge.acute import NEWBORN_STAY
from trajsim.knowledge.physiology import VITAL_SIGNS
from trajsim.knowledge.procedures import indicated_procedures
from trajsim.rules.base import drug_spells, violation
from trajsim.vocab import in_domain

RULES: dict[str, str] = {
    "duplicate_procedure": "the same procedure recorded more than once in one encounter",
    "emergency_visit_without_reason": "an ED visit with no condition diagnosed, treated or named as its reason",
    "emergency_visit_without_vitals": "an ED visit with none of the vital signs (blood pressure, heart rate, "
                                      "respiratory rate, temperature)",
    "newborn_stay_not_at_birth": "an infant's birth stay (Hospital admission, SNOMED 32485007, in the first "
                                 "year) that starts more than a day after birth",
    "reconciliation_without_medications": "a medication reconciliation (procedures.csv, at 'medications') in an "
                                          "encounter where the patient neither takes nor is ordered any drug (a "
                                          "healthy newborn's birth stay)",
    "stay_without_reconciliation": "an encounter of a reconciliation's settings (procedures.csv, at 'medications': "
                                   "a hospital stay) ended before the record's end, where the patient takes or is "
                                   "ordered a drug and no medication reconciliation is recorded",
}
_VISIT = ["subject_id", "encounter_id"]


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    return [_duplicate_procedures(facts), *_emergency_visits(facts), _newborn_stays(facts), *_reconciliations(facts)]


def _duplicate_procedures(facts: pl.LazyFrame) -> pl.LazyFrame:
    again = (facts.filter(in_domain(pl.col("code"), "procedure") & pl.col("encounter_id").is_not_null())
             .sort("subject_id", "time")
             .with_columns(order=pl.int_range(pl.len()).over(*_VISIT, "code"),
                           first=pl.col("time").first().over(*_VISIT, "code"))
             .filter(pl.col("order") > 0))
    return violation(again, "duplicate_procedure", pl.format("recorded {} times; first at {}",
                                                              pl.col("order") + 1, "first"))


def _emergency_visits(facts: pl.LazyFrame) -> list[pl.LazyFrame]:
    ended = facts.filter(pl.col("code") == VISIT_END).select(_VISIT)
    visits = (facts.filter((pl.col("code") == VISIT_START_PREFIX + "EMER") & pl.col("encounter_id").is_not_null())
              .join(ended, on=_VISIT, how="semi"))
    inside = facts.filter(pl.col("encounter_id").is_not_null())
    named = in_domain(pl.col("text"), "condition").fill_null(False)
    reasons = inside.filter(in_domain(pl.col("code"), "condition") | named).select(_VISIT)
    vitals = inside.filter(pl.col("code").is_in(VITAL_SIGNS) & pl.col("numeric_value").is_not_null()).select(_VISIT)
    return [
        violation(visits.join(reasons, on=_VISIT, how="anti"), "emergency_visit_without_reason",
                  pl.format("encounter {} has no reason", "encounter_id")),
        violation(visits.join(vitals, on=_VISIT, how="anti"), "emergency_visit_without_vitals",
                  pl.format("encounter {} has no vital signs", "encounter_id")),
    ]


def _newborn_stays(facts: pl.LazyFrame) -> pl.LazyFrame:
    births = facts.filter(pl.col("code") == BIRTH).group_by("subject_id").agg(pl.col("time").min().alias("birth"))
    late = (facts.filter(pl.col("code") == NEWBORN_STAY).join(births, on="subject_id")
            .filter((pl.col("time") > pl.col("birth") + pl.duration(days=1))
                    & (pl.col("time") < pl.col("birth") + pl.duration(days=365))))
    return violation(late, "newborn_stay_not_at_birth", pl.format(
        "starts {} days after birth", (pl.col("time") - pl.col("birth")).dt.total_days()))


def _reconciliations(facts: pl.LazyFrame) -> list[pl.LazyFrame]:
    """Medication reconciliations in encounters with no drug taken at their start nor ordered in
    them, and encounters of their settings ended before the record with drugs and no reconciliation."""
    rows = [p for p in indicated_procedures() if p.due_at == "medications"]
    done = facts.filter(pl.col("code").is_in(sorted({p.code for p in rows})) & pl.col("encounter_id").is_not_null())
    starts = facts.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX)).select(
        *_VISIT, start=pl.col("time"), encounter_class=pl.col("code").str.strip_prefix(VISIT_START_PREFIX))
    ends = facts.filter(pl.col("code") == VISIT_END).group_by(_VISIT).agg(pl.col("time").max().alias("end"))
    visits = starts.join(ends, on=_VISIT, how="left")
    orders = facts.filter(in_domain(pl.col("code"), "medication"))
    with_drugs = (visits.join(drug_spells(facts, orders), on="subject_id")
                  # an order at the moment a stay ends is the stay's only if made in it (not the next visit's)
                  .filter(((pl.col("ordered") < pl.col("end").fill_null(pl.col("start")))
                           | (pl.col("ordered") == pl.col("end").fill_null(pl.col("start")))
                           & (pl.col("order_encounter").is_null() | (pl.col("order_encounter") == pl.col("encounter_id"))))
                          & (pl.col("stopped").is_null() | (pl.col("stopped") > pl.col("start"))))
                  .select(_VISIT).unique())
    # a stay ending with the record (cut off by its end, or by a death in hospital) has no discharge to reconcile at
    last = facts.group_by("subject_id").agg(pl.col("time").max().alias("last"))
    stays = (visits.filter(pl.col("encounter_class").is_in(sorted({c for p in rows for c in p.settings})))
             .join(last, on="subject_id").filter(pl.col("end") < pl.col("last")))
    missing = stays.join(with_drugs, on=_VISIT, how="semi").join(done, on=_VISIT, how="anti")
    return [violation(done.join(with_drugs, on=_VISIT, how="anti"), "reconciliation_without_medications",
                      pl.format("encounter {}: no drug taken or ordered", "encounter_id")),
            violation(missing.select(*_VISIT, time="start", code=pl.lit(VISIT_START_PREFIX) + pl.col("encounter_class")),
                      "stay_without_reconciliation", pl.format("encounter {}: drugs and no reconciliation", "encounter_id"))]
