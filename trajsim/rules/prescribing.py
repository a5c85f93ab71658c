"""Rules of prescribing, read from `guideline_therapy.csv` and `pediatric_formulations.csv`: an order
is written once a day at an encounter, a long-term drug the patient takes is renewed at an office visit,
not in the emergency department, a child gets a children's product, and a patient seen while a
condition is active gets the therapy its guideline expects (statin in coronary disease, PPI in GERD,
heart-failure GDMT, an antibiotic in strep throat); a therapy with thresholds (`therapy_thresholds.csv`)
is judged at each visit with a reading reaching one instead (an adult with a diagnosed hypertension at
140/90 mm Hg or higher takes an antihypertensive, or is ordered one at that visit).

A drug counts as taken from its order until the first medication_end naming it, so a statin ordered
for hyperlipidemia before coronary disease was diagnosed covers it; a condition never seen at an
encounter while active is not judged (no one had the chance to prescribe), and a chronic condition
seen only in the emergency department is not either (its long-term therapy is the office's) unless
the ED diagnosed it and the therapy is one the ED starts (`ed_starts`: coronary disease found at a
chest-pain visit starts its statin there), nor a
spell in which a lab value ruled the therapy out (metformin once the eGFR is below 30), nor a visit
during a pregnancy that rules out every drug of the therapy (a statin, a RAAS inhibitor).

A pregnancy is known to the chart from the encounter that records it (the first prenatal visit),
or for one recorded outside any encounter from its first encounter: a drug it rules out
(`pregnancy_drugs.csv`) taken past then, or ordered during the pregnancy, is a violation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import polars as pl

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import BIRTH, MEDICATION_END, VISIT_END, VISIT_START_PREFIX
from trajsim.knowledge import Knowledge
from trajsim.knowledge.lifecycles import PREGNANCY, same_condition
from trajsim.knowledge.therapy import (
    drug_groups, drug_lab_limits, formulations, guideline_rows, guideline_therapies, pregnancy_drugs, step_ups,
    step_up_rows, supply_days, therapy_thresholds,
)
from trajsim.rules.base import VIOLATION_SCHEMA, as_measured, drug_spells, violation
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
    "drug_contraindicated_in_pregnancy": "a drug a pregnancy rules out (pregnancy_drugs.csv: ACE inhibitors, ARBs, "
                                         "statins, warfarin) taken past the pregnancy's first encounter, or ordered "
                                         "during the pregnancy",
    **{r["rule"]: f"a patient seen while {r['condition'].replace('_', ' ')} is active"
                  + (f" at ages {r['age_min']}-{r['age_max']}" if r["age_min"] else "")
                  + (" with a reading of " + " or ".join(f"{code} >= {at_least:g}" for code, at_least in
                                                         therapy_thresholds()[r["rule"]])
                     + " who neither takes nor is ordered at that visit"
                     if r["rule"] in therapy_thresholds() else " who neither takes nor is ordered")
                  + f" a drug of the group {r['group']} (guideline_therapy.csv)"
       for r in guideline_rows()},
    **{r["rule"]: f"an adult seen at the office with {r['condition'].replace('_', ' ')} active and a reading of "
                  + " or ".join(f"{code} >= {at_least:g}" for code, at_least in pairs)
                  + f" on one drug of the group {r['group']} for {r['after_days']} days or more, and no drug of "
                  + f"the group {r['add_group']} added (step_up_therapy.csv)"
       for r, pairs in step_up_rows()},
}


def check(facts: pl.LazyFrame, knowledge: Knowledge) -> list[pl.LazyFrame]:
    """The violations of this family's rules."""
    orders = facts.filter(in_domain(pl.col("code"), "medication"))
    return [_same_day(orders), _stopped_twice(facts, orders), _outside_encounters(orders), _emergency_renewals(facts, orders, knowledge),
            _ruled_out_by_labs(facts, orders, knowledge), _adult_products(facts, orders),
            _in_pregnancy(facts, orders, knowledge), _missing_therapy(facts, orders, knowledge),
            _untreated_readings(facts, orders, knowledge), _not_stepped_up(facts, orders, knowledge)]


def _same_day(orders: pl.LazyFrame) -> pl.LazyFrame:
    day = pl.col("time").dt.date()
    again = (orders.sort("subject_id", "time")
             .with_columns(order=pl.int_range(pl.len()).over("subject_id", "code", day), day=day)
             .filter(pl.col("order") > 0))
    return violation(again, "duplicate_order_same_day", pl.format("order number {} on {}", pl.col("order") + 1, "day"))


def _stopped_twice(facts: pl.LazyFrame, orders: pl.LazyFrame) -> pl.LazyFrame:
    """Stops of a drug that follow an earlier stop of it with no order in between (an order at the
    moment of a stop precedes it). A source's own drug code (MIMIC's local NDCs) is not judged: its
    orders are not known to be orders."""
    stops = facts.filter((pl.col("code") == MEDICATION_END) & in_domain(pl.col("text"), "medication")).select(
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


def _pregnancies(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Each pregnancy (`pregnant_from`, `pregnant_until`: its end, or the record's while active) with
    `known`: the start of its first encounter that records it or names it (a prenatal visit's type
    names the pregnancy it is for), else of its first encounter (null: none). A pregnancy dated at
    conception by its first prenatal visit is unknown at an office visit in the weeks before."""
    codes = sorted(same_condition(knowledge, PREGNANCY))
    visits = _visit_starts(facts).select("subject_id", "encounter_id", "seen")
    last = facts.group_by("subject_id").agg(pl.col("time").max().alias("last"))
    naming = (facts.filter((pl.col("code").is_in(codes) | pl.col("text").is_in(codes)) & pl.col("encounter_id").is_not_null())
              .join(visits, on=["subject_id", "encounter_id"]).select("subject_id", "seen", names=pl.lit(True)))
    spells = (_condition_spells(facts, knowledge).filter(pl.col("condition") == PREGNANCY)
              .join(last, on="subject_id")
              .select("subject_id", pregnant_from="start", pregnant_until=pl.coalesce("end", "last"))
              .unique().sort("subject_id", "pregnant_from").with_row_index("pregnancy"))
    during = pl.col("seen").is_between("pregnant_from", "pregnant_until", closed="left")
    first = (spells.join(pl.concat([visits.select("subject_id", "seen", names=pl.lit(False)), naming]), on="subject_id")
             .filter(during)
             .group_by("pregnancy").agg(pl.col("seen").filter("names").min().alias("named"),
                                        pl.col("seen").min().alias("first_seen")))
    return spells.join(first, on="pregnancy", how="left").with_columns(known=pl.coalesce("named", "first_seen"))


def _in_pregnancy(facts: pl.LazyFrame, orders: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Spells of a drug a pregnancy rules out that reach past the pregnancy's first encounter."""
    avoided = orders.filter(pl.col("code").is_in(sorted(pregnancy_drugs(knowledge).avoided)))
    taken = (drug_spells(facts, avoided).join(_pregnancies(facts, knowledge), on="subject_id")
             .filter(pl.col("known").is_not_null() & (pl.col("ordered") < pl.col("pregnant_until"))
                     & (pl.col("stopped").is_null() | (pl.col("stopped") > pl.col("known"))))
             .group_by("subject_id", "drug", "pregnancy").agg(pl.col("ordered").max(), pl.first("known")))  # its last order
    return taken.select(pl.lit("drug_contraindicated_in_pregnancy").alias("rule"), "subject_id",
                        pl.max_horizontal("ordered", "known").alias("time"), pl.col("drug").alias("code"),
                        pl.format("ordered {}, taken in the pregnancy known from {}", pl.col("ordered").dt.date(),
                                  pl.col("known").dt.date()).alias("detail"))


def _therapies(knowledge: Knowledge, with_thresholds: bool) -> pl.LazyFrame:
    """One row per guideline therapy (those with thresholds, or those without) and drug of it."""
    in_pregnancy = pregnancy_drugs(knowledge)
    return pl.LazyFrame([(knowledge.conditions[t.condition].code, t.rule, t.group, t.age_min,
                          None if math.isinf(t.age_max) else t.age_max,
                          knowledge.conditions[t.condition].course == "chronic", t.ed_starts,
                          in_pregnancy.all_avoided(t.codes), code)
                         for t in guideline_therapies(knowledge) if bool(t.thresholds) == with_thresholds
                         for code in sorted(t.codes)], orient="row",
                        schema={"condition": pl.String, "rule": pl.String, "group": pl.String,
                                "age_min": pl.Float64, "age_max": pl.Float64, "chronic": pl.Boolean,
                                "ed_starts": pl.Boolean, "ruled_out_in_pregnancy": pl.Boolean, "drug": pl.String})


def _therapy_spells(facts: pl.LazyFrame, knowledge: Knowledge, therapies: pl.LazyFrame) -> pl.LazyFrame:
    """Spells of the therapies' conditions, each numbered (`spell`) and lasting `until` its end or the record's."""
    last = facts.group_by("subject_id").agg(pl.col("time").max().alias("last"))
    return (_condition_spells(facts, knowledge)
            .join(therapies.select("condition", "rule", "group", "age_min", "age_max", "chronic", "ed_starts",
                                   "ruled_out_in_pregnancy").unique(), on="condition")
            .join(last, on="subject_id")
            .with_columns(until=pl.coalesce("end", "last"))
            .sort("subject_id", "rule", "start")  # numbered in one order, however often the plan runs its joins
            .with_row_index("spell"))


def _judged_at(seen: pl.LazyFrame, facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Visits (`seen`, `emergency`) within a spell at which its therapy is judged: within the
    guideline's ages, at an ED visit for a chronic condition only when the ED diagnosed it and
    starts that therapy, and not during a pregnancy that rules out every drug of the therapy."""
    age = (pl.col("seen") - pl.col("birth")).dt.total_seconds() / (DAYS_PER_YEAR * 86_400)
    diagnosed_there = pl.col("start").is_between(pl.col("seen"), pl.col("seen") + ED_VISIT_LONGEST)
    judged = (seen.join(_births(facts), on="subject_id")
              .filter(pl.when(pl.col("emergency") & pl.col("chronic")).then(diagnosed_there & pl.col("ed_starts"))
                      .otherwise(pl.col("seen").is_between(pl.col("start"), pl.col("until")))
                      & (age >= pl.col("age_min")) & (age < pl.col("age_max")).fill_null(True)))
    pregnant = (judged.filter("ruled_out_in_pregnancy")
                .join(_pregnancies(facts, knowledge).select("subject_id", "pregnant_from", "pregnant_until"), on="subject_id")
                .filter(pl.col("seen").is_between("pregnant_from", "pregnant_until", closed="left"))
                .select("subject_id", "rule", "seen").unique())
    return judged.join(pregnant, on=["subject_id", "rule", "seen"], how="anti")


def _visit_starts(facts: pl.LazyFrame) -> pl.LazyFrame:
    return facts.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX) & pl.col("encounter_id").is_not_null()).select(
        "subject_id", "encounter_id", seen=pl.col("time"), emergency=pl.col("code") == VISIT_START_PREFIX + "EMER")


def _missing_therapy(facts: pl.LazyFrame, orders: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Spells of a condition seen at an encounter with no drug of its therapy taken at any time in them."""
    therapies = _therapies(knowledge, with_thresholds=False)
    spells = _therapy_spells(facts, knowledge, therapies)
    seen = _judged_at(spells.join(_visit_starts(facts), on="subject_id"), facts, knowledge).select("spell").unique()
    covered = (spells.join(therapies, on=["condition", "rule", "group"]).join(drug_spells(facts, orders), on=["subject_id", "drug"])
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


def _high_readings(facts: pl.LazyFrame, thresholds: Mapping[str, tuple[tuple[str, float], ...]]) -> pl.LazyFrame:
    """Encounters with a reading reaching a threshold of a rule (rule -> (measurement, at least)):
    subject_id, encounter_id, rule, the `reading`'s code and its highest `numeric_value`."""
    rows = pl.LazyFrame([(rule, code, at_least) for rule, pairs in thresholds.items() for code, at_least in pairs],
                        orient="row", schema={"rule": pl.String, "measured": pl.String, "at_least": pl.Float64})
    return (as_measured(facts).filter(pl.col("encounter_id").is_not_null())
            .join(rows, left_on="code", right_on="measured")
            .filter(pl.col("numeric_value") >= pl.col("at_least"))
            .group_by("subject_id", "encounter_id", "rule")
            .agg(pl.col("code").sort_by("numeric_value").last().alias("reading"), pl.col("numeric_value").max()))


def _not_stepped_up(facts: pl.LazyFrame, orders: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Office visits of an adult with a step-up's condition active and a reading at its threshold,
    taking exactly one drug of its groups, of the first group, for at least `after_days`, and
    ordered no other drug of the group it adds (`step_up_therapy.csv`); not judged during a
    pregnancy that rules out every drug it could add."""
    groups, avoided = drug_groups(knowledge), pregnancy_drugs(knowledge)
    steps = list(step_ups(knowledge))
    drugs = pl.LazyFrame([(s.rule, code, s.group in named, s.add_group in named) for s in steps
                          for code, named in sorted(groups.items()) if {s.group, s.add_group} & named], orient="row",
                         schema={"rule": pl.String, "drug": pl.String, "base": pl.Boolean, "adds": pl.Boolean})
    rules = pl.LazyFrame([(s.rule, knowledge.conditions[s.condition].code, s.after_days, s.age_min,
                           avoided.all_avoided(frozenset(c for c, named in groups.items() if s.add_group in named)))
                          for s in steps], orient="row",
                         schema={"rule": pl.String, "condition": pl.String, "after_days": pl.Float64,
                                 "age_min": pl.Float64, "ruled_out_in_pregnancy": pl.Boolean})
    office = _visit_starts(facts).filter(~pl.col("emergency")).join(
        facts.filter(pl.col("code") == VISIT_START_PREFIX + "AMB").select("subject_id", "encounter_id"),
        on=["subject_id", "encounter_id"], how="semi")
    age = (pl.col("seen") - pl.col("birth")).dt.total_seconds() / (DAYS_PER_YEAR * 86_400)
    judged = (_high_readings(facts, {s.rule: s.thresholds for s in steps}).join(office, on=["subject_id", "encounter_id"])
              .join(rules, on="rule").join(_births(facts), on="subject_id").filter(age >= pl.col("age_min"))
              .join(_condition_spells(facts, knowledge).join(facts.group_by("subject_id").agg(last=pl.col("time").max()),
                                                             on="subject_id"), on=["subject_id", "condition"])
              .filter(pl.col("seen").is_between("start", pl.coalesce("end", "last"), closed="left"))
              .select("subject_id", "encounter_id", "seen", "rule", "reading", "numeric_value", "after_days",
                      "ruled_out_in_pregnancy").unique())
    courses = (drug_spells(facts, orders).group_by("subject_id", "drug", "stopped").agg(pl.col("ordered").min().alias("began"))
               .join(drugs, on="drug"))
    taken = (judged.join(courses, on=["subject_id", "rule"])
             .filter((pl.col("began") < pl.col("seen")) & (pl.col("stopped").is_null() | (pl.col("stopped") > pl.col("seen"))))
             .group_by("subject_id", "encounter_id", "rule")
             .agg(pl.col("drug").n_unique().alias("drugs"), pl.col("drug").first().alias("taken"), pl.col("base").all(),
                  pl.col("began").max()))
    on_one = (judged.join(taken, on=["subject_id", "encounter_id", "rule"])
              .filter((pl.col("drugs") == 1) & pl.col("base")
                      & ((pl.col("seen") - pl.col("began")).dt.total_seconds() / 86_400 >= pl.col("after_days"))))
    added = (orders.join(on_one.select("subject_id", "encounter_id", "rule", "taken"), on=["subject_id", "encounter_id"])
             .join(drugs.filter("adds").select("rule", code="drug"), on=["rule", "code"])
             .filter(pl.col("code") != pl.col("taken"))  # a renewal of the drug taken adds nothing
             .select("subject_id", "encounter_id", "rule").unique())
    pregnant = (on_one.filter("ruled_out_in_pregnancy")
                .join(_pregnancies(facts, knowledge).select("subject_id", "pregnant_from", "pregnant_until"), on="subject_id")
                .filter(pl.col("seen").is_between("pregnant_from", "pregnant_until", closed="left"))
                .select("subject_id", "encounter_id", "rule").unique())
    missing = (on_one.join(added, on=["subject_id", "encounter_id", "rule"], how="anti")
               .join(pregnant, on=["subject_id", "encounter_id", "rule"], how="anti"))
    return missing.select("rule", "subject_id", pl.col("seen").alias("time"), pl.col("reading").alias("code"),
                          pl.format("{} {} at encounter {} on one drug since {}; nothing added", "reading", "numeric_value",
                                    "encounter_id", pl.col("began").dt.date()).alias("detail")).cast(VIOLATION_SCHEMA)


def _untreated_readings(facts: pl.LazyFrame, orders: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Visits within a spell of a condition whose therapy has thresholds (`therapy_thresholds.csv`)
    with a reading reaching one, at which no drug of the therapy is taken or ordered (a diagnosed
    hypertension at 152/94 mm Hg and no antihypertensive), unless a lab value rules the therapy out."""
    therapies = _therapies(knowledge, with_thresholds=True)
    high = _high_readings(facts, therapy_thresholds())
    ends = facts.filter(pl.col("code") == VISIT_END).group_by("subject_id", "encounter_id").agg(pl.col("time").max().alias("left"))
    visits = (high.join(_visit_starts(facts), on=["subject_id", "encounter_id"])
              .join(ends, on=["subject_id", "encounter_id"], how="left").with_columns(left=pl.coalesce("left", "seen")))
    spells = _therapy_spells(facts, knowledge, therapies)
    judged = _judged_at(spells.join(visits, on=["subject_id", "rule"]), facts, knowledge).sort("spell", "seen").with_row_index("judged")
    covered = (judged.join(therapies.select("rule", "drug"), on="rule").join(drug_spells(facts, orders), on=["subject_id", "drug"])
               .filter((pl.col("ordered") <= pl.col("left"))
                       & (pl.col("stopped").is_null() | (pl.col("stopped") > pl.col("seen"))))
               .select("judged").unique())
    ruled_out = (judged.join(_low_values(facts, knowledge), on=["subject_id", "group"])
                 .filter(pl.col("low").is_between(pl.col("start"), pl.col("seen"))).select("judged").unique())
    missing = judged.join(covered, on="judged", how="anti").join(ruled_out, on="judged", how="anti")
    return missing.select(pl.col("rule"), "subject_id", pl.col("seen").alias("time"), pl.col("recorded").alias("code"),
                          pl.format("{} {} at encounter {}; no {} taken or ordered", "reading", "numeric_value",
                                    "encounter_id", "group").alias("detail")).cast(VIOLATION_SCHEMA)
