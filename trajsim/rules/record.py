"""Rules about what a code means (sex, age, indication, chronicity, bounds), read from the
knowledge base, and about the shape of a record (birth, death, visits), read from the structural
codes of `events.py`."""

from __future__ import annotations

import polars as pl

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import CONDITION_END, DEATH, FOLLOW_UP_VISIT, VISIT_END, VISIT_START_PREFIX
from trajsim.knowledge import Knowledge
from trajsim.knowledge.acute import SAME_STAY_GAP_DAYS
from trajsim.rules.base import people_of, violation
from trajsim.vocab import in_domain

RULES: dict[str, str] = {
    "sex_specific_code": "a code that applies to one sex only, recorded for a patient of the other sex",
    "age_specific_code": "a code recorded outside the ages it applies to",
    "before_birth": "a fact dated before the patient's birth",
    "after_death": "a fact dated after the patient's (first) death",
    "multiple_deaths": "a second death recorded for one patient",
    "medication_without_indication": (
        "a drug recorded while none of its indications is active; the indication is the medication's "
        "`text` when that is a condition code, else any condition the knowledge base lists the drug for; "
        "a condition is active from its diagnosis until its condition_end"
    ),
    "medication_contraindicated_by_allergy": "a drug recorded after an allergy that rules it out (e.g. amoxicillin "
                                             "after an allergy to penicillin)",
    "value_out_of_bounds": "a lab or vital value outside its physiological bounds",
    "duplicate_active_condition": "a chronic condition recorded again while it is still active",
    "visit_end_before_start": "a visit that ends before it starts",
    "overlapping_visits": "a visit that starts before the patient's previous visit has ended",
    "follow_up_without_problem": "a follow-up encounter (SNOMED 390906007) where the patient has no active condition "
                                 "and none is diagnosed: nothing to follow up",
    "stay_after_stay": "a hospital stay that starts within an hour of the end of the patient's previous encounter, "
                       "itself a stay: one stay recorded as two, the patient discharged and admitted again at once "
                       "(trajsim simulates no transfers between hospitals)",
}
RESTAY_WITHIN = pl.duration(seconds=round(SAME_STAY_GAP_DAYS * 86_400))
_MICROSECONDS_PER_YEAR = DAYS_PER_YEAR * 86_400e6


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    return [_demographics(facts, knowledge), _deaths(facts), _indications(facts, knowledge),
            _allergies(facts, knowledge), _bounds(facts, knowledge), _duplicates(facts, knowledge), _visits(facts),
            _follow_ups(facts, knowledge)]


def _demographics(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Sex- and age-specific codes and facts before birth (birth and sex from the structural codes)."""
    people = people_of(facts)
    restrictions = pl.LazyFrame(
        [(r.code, r.sex, r.age_min, r.age_max) for r in knowledge.restrictions.values()],
        schema={"code": pl.String, "only_sex": pl.String, "age_min": pl.Float64, "age_max": pl.Float64},
        orient="row",
    )
    dated = facts.join(people, on="subject_id", how="left").with_columns(
        age=(pl.col("time") - pl.col("birth")).dt.total_microseconds() / _MICROSECONDS_PER_YEAR
    )
    restricted = dated.join(restrictions, on="code", how="inner")
    wrong_sex = restricted.filter(pl.col("only_sex").is_not_null() & (pl.col("sex") != pl.col("only_sex")))
    wrong_age = restricted.filter((pl.col("age") < pl.col("age_min")) | (pl.col("age") >= pl.col("age_max")))
    return pl.concat([
        violation(wrong_sex, "sex_specific_code", pl.format("applies to sex {} only; patient is {}", "only_sex", "sex")),
        violation(wrong_age, "age_specific_code", pl.format(
            "applies at ages {}-{}; patient is {}", "age_min", "age_max", pl.col("age").round(2))),
        violation(dated.filter(pl.col("time") < pl.col("birth")), "before_birth",
                   pl.format("dated before birth at {}", "birth")),
    ])


def _deaths(facts: pl.LazyFrame) -> pl.LazyFrame:
    deaths = facts.filter(pl.col("code") == DEATH).with_columns(
        order=pl.col("time").rank("ordinal").over("subject_id"),
        first_death=pl.col("time").min().over("subject_id"),
    )
    after = facts.join(deaths.filter(pl.col("order") == 1).select("subject_id", "first_death"), on="subject_id")
    return pl.concat([
        violation(after.filter(pl.col("time") > pl.col("first_death")), "after_death",
                   pl.format("dated after death at {}", "first_death")),
        violation(deaths.filter(pl.col("order") > 1), "multiple_deaths",
                   pl.format("death number {}; first at {}", "order", "first_death")),
    ])


def _same_condition(code: pl.Expr, knowledge: Knowledge) -> pl.Expr:
    """A known condition's ICD-10-CM code as its SNOMED CT code, so either names the same condition."""
    return code.replace({c.icd10cm: c.code for c in knowledge.conditions.values()})


def _condition_spells(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Each recorded condition with the end of its spell: the first condition_end for that condition
    at or after it (null while still active)."""
    # Sorted by time overall, hence within every (subject, condition) group as the as-of join needs.
    starts = (facts.filter(in_domain(pl.col("code"), "condition"))
              .select("subject_id", _same_condition(pl.col("code"), knowledge).alias("condition"),
                      pl.col("code").alias("recorded"), pl.col("time").alias("start"))
              .sort("start"))
    ends = (facts.filter((pl.col("code") == CONDITION_END) & pl.col("text").is_not_null())
            .select("subject_id", _same_condition(pl.col("text"), knowledge).alias("condition"), pl.col("time").alias("end"))
            .sort("end"))
    return starts.join_asof(ends, left_on="start", right_on="end", by=["subject_id", "condition"],
                            strategy="forward", check_sortedness=False)


def _follow_ups(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Follow-up encounters with no condition active at their start and none recorded in them."""
    visit = ["subject_id", "encounter_id"]
    follow_ups = facts.filter((pl.col("code") == FOLLOW_UP_VISIT) & pl.col("encounter_id").is_not_null())
    active = (follow_ups.select(*visit, "time").join(_condition_spells(facts, knowledge), on="subject_id")
              .filter((pl.col("start") <= pl.col("time")) & (pl.col("end").is_null() | (pl.col("end") >= pl.col("time")))))
    diagnosed = facts.filter(in_domain(pl.col("code"), "condition") & pl.col("encounter_id").is_not_null())
    found = follow_ups.join(active, on=visit, how="anti").join(diagnosed, on=visit, how="anti")
    return violation(found, "follow_up_without_problem", pl.lit("no condition active or diagnosed"))


def _indications(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    known = pl.LazyFrame({"code": list(knowledge.indications),
                          "known": [sorted(codes) for codes in knowledge.indications.values()]},
                         schema={"code": pl.String, "known": pl.List(pl.String)})
    recorded = in_domain(pl.col("text"), "condition").fill_null(False)
    drugs = (facts.filter(in_domain(pl.col("code"), "medication")).with_row_index("drug")
             .join(known, on="code", how="left")
             .with_columns(condition=pl.when(recorded).then(pl.concat_list("text")).otherwise("known"))
             .filter(pl.col("condition").is_not_null()))
    candidates = drugs.explode("condition").with_columns(_same_condition(pl.col("condition"), knowledge)).sort("time").join_asof(
        _condition_spells(facts, knowledge).sort("start"), left_on="time", right_on="start",
        by=["subject_id", "condition"], strategy="backward", check_sortedness=False,
    )
    active = pl.col("start").is_not_null() & (pl.col("end").is_null() | (pl.col("end") > pl.col("time")))
    unindicated = (candidates.group_by("drug")
                   .agg(pl.first("subject_id", "time", "code"), pl.col("condition").unique().sort().str.join(" or "),
                        active.any().alias("indicated"))
                   .filter(~pl.col("indicated")))
    return violation(unindicated, "medication_without_indication", pl.format("no active {}", "condition"))


def _allergies(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    ruled_out = pl.LazyFrame([(drug, allergy) for drug, allergies in knowledge.contraindications.items()
                              for allergy in sorted(allergies)], schema={"code": pl.String, "allergy": pl.String},
                             orient="row")
    onsets = (facts.join(ruled_out.select(pl.col("allergy").alias("code")).unique(), on="code")
              .group_by("subject_id", "code").agg(pl.col("time").min().alias("onset"))
              .rename({"code": "allergy"}))
    given = facts.join(ruled_out, on="code").join(onsets, on=["subject_id", "allergy"])
    return violation(given.filter(pl.col("time") >= pl.col("onset")), "medication_contraindicated_by_allergy",
                      pl.format("recorded after {} on {}", "allergy", "onset"))


def _bounds(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    bounds = pl.LazyFrame([(m.code, m.low, m.high) for m in knowledge.measurements.values()],
                          schema={"code": pl.String, "low": pl.Float64, "high": pl.Float64}, orient="row")
    value = pl.col("numeric_value")
    outside = facts.join(bounds, on="code").filter((value < pl.col("low")) | (value > pl.col("high")))
    return violation(outside, "value_out_of_bounds", pl.format("{} outside [{}, {}]", value, "low", "high"))


def _duplicates(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    spells = (_condition_spells(facts, knowledge).filter(pl.col("condition").is_in(list(knowledge.chronic_codes)))
              .sort("subject_id", "condition", "start"))
    group = ["subject_id", "condition"]
    previous = spells.with_columns(
        earlier=pl.int_range(pl.len()).over(group) > 0,
        earlier_start=pl.col("start").shift(1).over(group),
        earlier_end=pl.col("end").shift(1).over(group),
    )
    again = previous.filter(pl.col("earlier") & (pl.col("earlier_end").is_null() | (pl.col("earlier_end") > pl.col("start"))))
    return violation(again.rename({"recorded": "code", "start": "time"}), "duplicate_active_condition",
                      pl.format("already active since {}", "earlier_start"))


def _visits(facts: pl.LazyFrame) -> pl.LazyFrame:
    starts = facts.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX) & pl.col("encounter_id").is_not_null())
    ends = (facts.filter(pl.col("code") == VISIT_END).group_by("subject_id", "encounter_id")
            .agg(pl.col("time").max().alias("end")))
    visits = (starts.join(ends, on=["subject_id", "encounter_id"], how="left")
              .with_columns(end=pl.coalesce("end", "time"))
              .sort("subject_id", "time", "encounter_id")
              .with_columns(previous_end=pl.col("end").cum_max().shift(1).over("subject_id")))
    stay = VISIT_START_PREFIX + "IMP"
    stays = visits.with_columns(previous_stay_end=pl.when(pl.col("code").shift(1).over("subject_id") == stay)
                                .then(pl.col("end").shift(1).over("subject_id"))).filter(pl.col("code") == stay)
    return pl.concat([
        violation(visits.filter(pl.col("end") < pl.col("time")), "visit_end_before_start",
                   pl.format("encounter {} ends at {}", "encounter_id", "end")),
        violation(visits.filter(pl.col("time") < pl.col("previous_end")), "overlapping_visits",
                   pl.format("encounter {} starts before the previous visit ends at {}", "encounter_id", "previous_end")),
        violation(stays.filter(pl.col("time") < pl.col("previous_stay_end") + RESTAY_WITHIN), "stay_after_stay",
                  pl.format("stay {} starts as the previous stay ends at {}", "encounter_id", "previous_stay_end")),
    ])


