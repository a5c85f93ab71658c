"""Rules about what one encounter holds, read as a clinician reads a visit note: a procedure done
once (three mammographies in one visit are a charting error), an emergency visit with a reason and
vital signs (triage takes them at every ED visit), and a newborn's birth stay at birth.

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
from trajsim.rules.base import violation
from trajsim.vocab import in_domain

RULES: dict[str, str] = {
    "duplicate_procedure": "the same procedure recorded more than once in one encounter",
    "emergency_visit_without_reason": "an ED visit with no condition diagnosed, treated or named as its reason",
    "emergency_visit_without_vitals": "an ED visit with none of the vital signs (blood pressure, heart rate, "
                                      "respiratory rate, temperature)",
    "newborn_stay_not_at_birth": "an infant's birth stay (Hospital admission, SNOMED 32485007, in the first "
                                 "year) that starts more than a day after birth",
}
_VISIT = ["subject_id", "encounter_id"]


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    return [_duplicate_procedures(facts), *_emergency_visits(facts), _newborn_stays(facts)]


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
