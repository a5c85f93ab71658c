"""Rules about acute care and death, read from `trajsim/knowledge/data/acute_care.csv`: an acute
event is seen in the emergency department, not at an office visit; a condition with a treating
procedure gets it; every death has a cause (on the death event, or as a cause-of-death observation);
a visit or stay made for a condition (its encounter type's reason: the principal diagnosis of an
admission, an exacerbation's ED visit) is for one the patient has on record by then.

An onset is a condition's first recorded occurrence for the patient; one recorded outside any
encounter (a history before the record starts) is not judged, nor one too close to the end of the
record for its treatment to be seen.
"""

from __future__ import annotations

import polars as pl

from trajsim.events import CAUSE_OF_DEATH, DEATH, VISIT_END, VISIT_START_PREFIX
from trajsim.knowledge import Knowledge
from trajsim.knowledge.acute import (
    HOSPICE_CARE, HOSPICE_SURVIVAL_DAYS, OBSERVATION_LONGEST, OBSERVATION_STAY, treatments,
)
from trajsim.rules.base import violation
from trajsim.vocab import in_domain

RULES: dict[str, str] = {
    "acute_event_in_office_visit": "the onset of a condition that needs the emergency department and an admission "
                                   "(appendicitis, hip fracture, myocardial infarction, stroke) recorded at an office visit",
    "acute_condition_untreated": "the onset of a condition with a treating procedure recorded at a visit with no such "
                                 "procedure within two days (appendicitis without appendectomy, myocardial infarction "
                                 "without coronary intervention)",
    "death_without_cause": "a death with no recorded cause",
    "observation_too_long": "an observation stay (SNOMED 448951000124107) longer than 48 hours, past which a "
                            "patient is admitted (CMS Medicare Benefit Policy Manual, chapter 6, 20.6)",
    "hospice_without_death": "a hospice referral followed by more than a year of record with no death (hospice is "
                             "for a prognosis of six months or less)",
    "visit_for_unrecorded_condition": "a visit or stay whose reason is a condition the patient has no record of by "
                                      "its start (an admission for heart failure in a patient without it)",
}
TREATMENT_WINDOW = pl.duration(days=2)


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    table = _treatment_table(knowledge)
    onsets = _onsets(facts, table)
    return [_in_office(facts, onsets), _untreated(facts, onsets), _deaths(facts), _observation(facts), _hospice(facts),
            _unrecorded_reasons(facts, knowledge)]


def _treatment_table(knowledge: Knowledge) -> pl.LazyFrame:
    """Condition codes (SNOMED and ICD-10-CM) with their treating procedure and whether they are admitted."""
    rows = [(code, t.procedure, t.always_admitted) for t in treatments().values()
            for code in (knowledge.conditions[t.condition].code, knowledge.conditions[t.condition].icd10cm)]
    return pl.LazyFrame(rows, orient="row", schema={"code": pl.String, "procedure": pl.String, "admitted": pl.Boolean})


def _onsets(facts: pl.LazyFrame, table: pl.LazyFrame) -> pl.LazyFrame:
    """The first occurrence of each treated condition per patient, when it is recorded in an encounter."""
    first = (facts.join(table.select("code"), on="code", how="semi")
             .group_by("subject_id", "code")
             .agg(pl.col("encounter_id").sort_by("time").first(), pl.col("time").min()))
    return first.filter(pl.col("encounter_id").is_not_null()).join(table, on="code")


def _in_office(facts: pl.LazyFrame, onsets: pl.LazyFrame) -> pl.LazyFrame:
    office = facts.filter(pl.col("code") == VISIT_START_PREFIX + "AMB").select("subject_id", "encounter_id")
    found = onsets.filter(pl.col("admitted")).join(office, on=["subject_id", "encounter_id"], how="semi")
    return violation(found, "acute_event_in_office_visit", pl.lit("recorded at an office visit"))


def _untreated(facts: pl.LazyFrame, onsets: pl.LazyFrame) -> pl.LazyFrame:
    last = facts.group_by("subject_id").agg(pl.col("time").max().alias("last"))
    judged = (onsets.filter(pl.col("procedure").is_not_null()).join(last, on="subject_id")
              .filter(pl.col("last") >= pl.col("time") + TREATMENT_WINDOW))
    done = facts.select("subject_id", pl.col("code").alias("procedure"), pl.col("time").alias("done"))
    treated = (judged.join(done, on=["subject_id", "procedure"])
               .filter(pl.col("done").is_between(pl.col("time"), pl.col("time") + TREATMENT_WINDOW))
               .select("subject_id", "code"))
    found = judged.join(treated, on=["subject_id", "code"], how="anti")
    return violation(found, "acute_condition_untreated", pl.concat_str(pl.lit("no "), pl.col("procedure"),
                                                                        pl.lit(" within two days")))


def _deaths(facts: pl.LazyFrame) -> pl.LazyFrame:
    certified = facts.filter(pl.col("code") == CAUSE_OF_DEATH).select("subject_id")
    found = facts.filter((pl.col("code") == DEATH) & pl.col("text").is_null()).join(certified, on="subject_id", how="anti")
    return violation(found, "death_without_cause", pl.lit("no cause of death"))


def _observation(facts: pl.LazyFrame) -> pl.LazyFrame:
    """Observation stays that end more than `OBSERVATION_LONGEST` days after they start."""
    visit = ["subject_id", "encounter_id"]
    starts = facts.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX)).select(*visit, start=pl.col("time"))
    ends = facts.filter(pl.col("code") == VISIT_END).select(*visit, end=pl.col("time"))
    found = (facts.filter(pl.col("code") == OBSERVATION_STAY).join(starts, on=visit).join(ends, on=visit)
             .with_columns(hours=(pl.col("end") - pl.col("start")).dt.total_minutes() / 60)
             .filter(pl.col("hours") > OBSERVATION_LONGEST * 24))
    return violation(found, "observation_too_long", pl.format("an observation stay of {} hours", pl.col("hours").round(1)))


def _hospice(facts: pl.LazyFrame) -> pl.LazyFrame:
    """Hospice referrals followed by more than `HOSPICE_SURVIVAL_DAYS` of record before a death or
    with none (a record that stops sooner is not judged)."""
    ends = facts.group_by("subject_id").agg(last=pl.col("time").max(), death=pl.col("time").filter(pl.col("code") == DEATH).min())
    found = (facts.filter(pl.col("code") == HOSPICE_CARE).join(ends, on="subject_id")
             .filter(pl.coalesce("death", "last") > pl.col("time") + pl.duration(days=HOSPICE_SURVIVAL_DAYS)))
    return violation(found, "hospice_without_death", pl.when(pl.col("death").is_null())
                     .then(pl.lit("no death in the record's next year")).otherwise(pl.lit("death over a year later")))


def _unrecorded_reasons(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Encounter types whose reason (text) names a condition not recorded for the patient by then;
    a condition counts under its SNOMED CT or ICD-10-CM code alike."""
    same = {c.icd10cm: c.code for c in knowledge.conditions.values() if c.icd10cm}
    reasons = facts.filter(in_domain(pl.col("code"), "encounter_type") & pl.col("text").is_not_null()
                           & in_domain(pl.col("text"), "condition")).with_columns(condition=pl.col("text").replace(same))
    recorded = (facts.filter(in_domain(pl.col("code"), "condition"))
                .group_by("subject_id", condition=pl.col("code").replace(same)).agg(first=pl.col("time").min()))
    found = (reasons.join(recorded, on=["subject_id", "condition"], how="left")
             .filter(pl.col("first").is_null() | (pl.col("first") > pl.col("time"))))
    return violation(found, "visit_for_unrecorded_condition", pl.concat_str(pl.lit("for "), pl.col("text"),
                                                                            pl.lit(", not on record by then")))
