"""Rules of prescribing, read from `guideline_therapy.csv` and `pediatric_formulations.csv`: an order
is written once a day at an encounter, a long-term drug the patient takes is renewed at an office visit,
not in the emergency department, a child gets a children's product, and a patient seen while a
condition is active gets the therapy its guideline expects (statin in coronary disease, PPI in GERD,
heart-failure GDMT, an antibiotic in strep throat).

A drug counts as taken from its order until the first medication_end naming it, so a statin ordered
for hyperlipidemia before coronary disease was diagnosed covers it; a condition never seen at an
encounter while active is not judged (no one had the chance to prescribe), and a chronic condition
seen only in the emergency department is not either (its long-term therapy is the office's) unless
the ED diagnosed it and the therapy is one the ED starts (`ed_starts`: coronary disease found at a
chest-pain visit starts its statin there), nor a
spell in which a lab value ruled the therapy out (metformin once the eGFR is below 30).
"""

from __future__ import annotations

import math

import polars as pl

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import BIRTH, MEDICATION_END, VISIT_START_PREFIX
from trajsim.knowledge import Knowledge
from trajsim.knowledge.therapy import drug_lab_limits, formulations, guideline_rows, guideline_therapies, supply_days
from trajsim.rules.base import VIOLATION_SCHEMA, as_measured, violation
from trajsim.rules.record import _condition_spells
from trajsim.vocab import in_domain

ED_VISIT_LONGEST = pl.duration(days=1)  # a diagnosis this soon after an ED visit starts is the ED's

RULES: dict[str, str] = {
    "duplicate_order_same_day": "the same drug ordered more than once on one day",
    "medication_stopped_twice": "a drug stopped again with no new order since its last stop (a course's end "
                                "dated twice)",
    "order_outside_encounter": "a drug ordered outside any encounter (a refill or a history written as a new order)",
    "renewal_at_emergency_visit": "a long-term drug (refill_days in medications.csv) ordered again at an emergency "
                                  "visit while an earlier order of it is still taken (a statin renewed at an ankle-sprain "
                                  "ED visit); renewals belong to the office",
    "drug_ruled_out_by_lab": "a drug ordered while the latest value of a lab is below its limit "
                             "(drug_lab_limits.csv: metformin at an eGFR below 30, FDA label)",
    "adult_formulation_in_child": "an adult product ordered below the age it is for, when a children's product "
                                  "exists (amlodipine 5 mg or acetaminophen 325 mg tablets for an infant)",
    **{r["rule"]: f"a patient seen while {r['condition'].replace('_', ' ')} is active"
                  + (f" at ages {r['age_min']}-{r['age_max']}" if r["age_min"] else "")
                  + f" who neither takes nor is ordered a drug of the group {r['group']} (guideline_therapy.csv)"
       for r in guideline_rows()},
}


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    orders = facts.filter(in_domain(pl.col("code"), "medication"))
    return [_same_day(orders), _stopped_twice(facts, orders), _outside_encounters(orders), _emergency_renewals(facts, orders, knowledge),
            _ruled_out_by_labs(facts, orders, knowledge), _adult_products(facts, orders),
            _missing_therapy(facts, orders, knowledge)]


def _same_day(orders: pl.LazyFrame) -> pl.LazyFrame:
    day = pl.col("time").dt.date()
    again = (orders.sort("subject_id", "time")
             .with_columns(order=pl.int_range(pl.len()).over("subject_id", "code", day), day=day)
             .filter(pl.col("order") > 0))
    return violation(again, "duplicate_order_same_day", pl.format("order number {} on {}", pl.col("order") + 1, "day"))


def _stopped_twice(facts: pl.LazyFrame, orders: pl.LazyFrame) -> pl.LazyFrame:
    """Stops of a drug that follow an earlier stop of it with no order in between (an order at the
    moment of a stop precedes it)."""
    stops = facts.filter((pl.col("code") == MEDICATION_END) & pl.col("text").is_not_null()).select(
        "subject_id", "time", drug=pl.col("text"), stop=pl.lit(True))
    course = pl.concat([orders.select("subject_id", "time", drug=pl.col("code"), stop=pl.lit(False)), stops])
    again = (course.sort("subject_id", "drug", "time", "stop")
             .with_columns(previous=pl.col("stop").shift(1).over("subject_id", "drug"),
                           previous_time=pl.col("time").shift(1).over("subject_id", "drug"))
             .filter(pl.col("stop") & pl.col("previous").fill_null(False))
             .with_columns(code=pl.lit(MEDICATION_END)))
    return violation(again, "medication_stopped_twice", pl.format("{} already stopped on {}", "drug",
                                                                   pl.col("previous_time").dt.date()))


def _outside_encounters(orders: pl.LazyFrame) -> pl.LazyFrame:
    return violation(orders.filter(pl.col("encounter_id").is_null()), "order_outside_encounter",
                     pl.lit("no encounter"))


def _emergency_renewals(facts: pl.LazyFrame, orders: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Orders of a long-term drug at an ED visit with an earlier order of it not stopped since."""
    emergency = facts.filter(pl.col("code") == VISIT_START_PREFIX + "EMER").select("subject_id", "encounter_id")
    stops = (facts.filter(pl.col("code") == MEDICATION_END)
             .select("subject_id", code=pl.col("text"), stopped=pl.col("time")).sort("stopped"))
    long_term = (orders.filter(pl.col("code").is_in(list(supply_days(knowledge))))
                 .sort("subject_id", "time")
                 .with_columns(previous=pl.col("time").shift(1).over("subject_id", "code"))
                 .join(emergency, on=["subject_id", "encounter_id"], how="semi")
                 .sort("time")
                 .join_asof(stops, left_on="time", right_on="stopped", by=["subject_id", "code"], strategy="backward",
                            check_sortedness=False))
    renewed = long_term.filter(pl.col("previous").is_not_null()
                               & (pl.col("stopped").is_null() | (pl.col("stopped") < pl.col("previous"))))
    return violation(renewed, "renewal_at_emergency_visit", pl.format("ordered before on {}", pl.col("previous").dt.date()))


def _limits(knowledge: Knowledge) -> pl.LazyFrame:
    """One row per drug of a group with a lab limit: drug code, group, lab code, limit."""
    return pl.LazyFrame([(code, limit.group, limit.lab, limit.below) for limit in drug_lab_limits(knowledge)
                         for code in sorted(limit.codes)], orient="row",
                        schema={"code": pl.String, "group": pl.String, "lab": pl.String, "below": pl.Float64})


def _low_values(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Lab values below a drug group's limit: subject, group, time."""
    limits = _limits(knowledge).select("group", "lab", "below").unique()
    return (as_measured(facts).join(limits, left_on="code", right_on="lab")
            .filter(pl.col("numeric_value") < pl.col("below")).select("subject_id", "group", low=pl.col("time")))


def _ruled_out_by_labs(facts: pl.LazyFrame, orders: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Orders of a drug whose group's lab was last measured below its limit."""
    limits = _limits(knowledge)
    labs = (as_measured(facts).join(limits.select("lab").unique(), left_on="code", right_on="lab", how="semi")
            .select("subject_id", lab="code", measured=pl.col("time"), value="numeric_value").sort("measured"))
    latest = (orders.join(limits, on="code").sort("time")
              .join_asof(labs, left_on="time", right_on="measured", by=["subject_id", "lab"], strategy="backward",
                         check_sortedness=False))
    return violation(latest.filter(pl.col("value") < pl.col("below")), "drug_ruled_out_by_lab",
                     pl.format("latest {} was {} (below {})", "lab", "value", "below"))


def _births(facts: pl.LazyFrame) -> pl.LazyFrame:
    return facts.filter(pl.col("code") == BIRTH).group_by("subject_id").agg(pl.col("time").min().alias("birth"))


def _adult_products(facts: pl.LazyFrame, orders: pl.LazyFrame) -> pl.LazyFrame:
    adult = pl.LazyFrame([(f.adult_code, f.child_code, f.adult_age_min) for f in formulations().values()],
                         schema={"code": pl.String, "child_code": pl.String, "adult_age_min": pl.Float64}, orient="row")
    aged = (orders.join(adult, on="code").join(_births(facts), on="subject_id")
            .with_columns(age=(pl.col("time") - pl.col("birth")).dt.total_seconds() / (DAYS_PER_YEAR * 86_400)))
    return violation(aged.filter(pl.col("age") < pl.col("adult_age_min")), "adult_formulation_in_child",
                     pl.format("ordered at age {}; for ages {} and over; children get {}", pl.col("age").round(1),
                               "adult_age_min", "child_code"))


def _missing_therapy(facts: pl.LazyFrame, orders: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Spells of a condition seen at an encounter with no drug of its therapy taken at any time in them."""
    therapies = pl.LazyFrame([(knowledge.conditions[t.condition].code, t.rule, t.group, t.age_min,
                               None if math.isinf(t.age_max) else t.age_max,
                               knowledge.conditions[t.condition].course == "chronic", t.ed_starts, code)
                              for t in guideline_therapies(knowledge) for code in sorted(t.codes)], orient="row",
                             schema={"condition": pl.String, "rule": pl.String, "group": pl.String,
                                     "age_min": pl.Float64, "age_max": pl.Float64, "chronic": pl.Boolean,
                                     "ed_starts": pl.Boolean, "drug": pl.String})
    last = facts.group_by("subject_id").agg(pl.col("time").max().alias("last"))
    spells = (_condition_spells(facts, knowledge)
              .join(therapies.select("condition", "rule", "group", "age_min", "age_max", "chronic", "ed_starts").unique(),
                    on="condition")
              .join(last, on="subject_id")
              .with_columns(until=pl.coalesce("end", "last"))
              .with_row_index("spell"))
    visits = facts.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX) & pl.col("encounter_id").is_not_null())
    age = (pl.col("seen") - pl.col("birth")).dt.total_seconds() / (DAYS_PER_YEAR * 86_400)
    diagnosed_there = pl.col("start").is_between(pl.col("seen"), pl.col("seen") + ED_VISIT_LONGEST)
    seen = (spells.join(visits.select("subject_id", seen=pl.col("time"),
                                      emergency=pl.col("code") == VISIT_START_PREFIX + "EMER"), on="subject_id")
            .join(_births(facts), on="subject_id")
            .filter(pl.when(pl.col("emergency") & pl.col("chronic")).then(diagnosed_there & pl.col("ed_starts"))
                    .otherwise(pl.col("seen").is_between(pl.col("start"), pl.col("until")))
                    & (age >= pl.col("age_min")) & (age < pl.col("age_max")).fill_null(True))
            .select("spell").unique())
    stops = (facts.filter(pl.col("code") == MEDICATION_END)
             .select("subject_id", drug=pl.col("text"), stopped=pl.col("time")).sort("stopped"))
    taken = (orders.select("subject_id", drug=pl.col("code"), ordered=pl.col("time")).sort("ordered")
             .join_asof(stops, left_on="ordered", right_on="stopped", by=["subject_id", "drug"], strategy="forward",
                        check_sortedness=False))
    covered = (spells.join(therapies, on=["condition", "rule", "group"]).join(taken, on=["subject_id", "drug"])
               .filter((pl.col("ordered") <= pl.col("until"))
                       & (pl.col("stopped").is_null() | (pl.col("stopped") > pl.col("start"))))
               .select("spell").unique())
    ruled_out = (spells.join(_low_values(facts, knowledge), on=["subject_id", "group"])
                 .filter(pl.col("low").is_between(pl.col("start"), pl.col("until"))).select("spell").unique())
    missing = (spells.join(seen, on="spell", how="semi").join(covered, on="spell", how="anti")
               .join(ruled_out, on="spell", how="anti"))
    return missing.select(pl.col("rule"), "subject_id", pl.col("start").alias("time"), pl.col("recorded").alias("code"),
                          pl.format("no {} taken or ordered while active", "group").alias("detail")
                          ).cast(VIOLATION_SCHEMA)
