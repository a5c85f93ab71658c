"""Clinical validity rules, used two ways from one rule list (`RULES`):

- `find_violations` lists every violation in an event table, simulated or ingested from real records;
- `RuleMask` tells a sampler which codes a patient may receive next, so a learned model cannot
  propose what the checker would reject.

Rules about what a code means (sex, age, indication, chronicity, bounds) read the knowledge base;
rules about the shape of a record (birth, death, visits) read the structural codes of `events.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from trajsim.clock import DAYS_PER_YEAR
from trajsim.events import BIRTH, CONDITION_END, DEATH, SEX_FEMALE, SEX_MALE, VISIT_END, VISIT_START_PREFIX
from trajsim.knowledge import Knowledge, load_knowledge
from trajsim.vocab import in_domain

if TYPE_CHECKING:  # the mask reads a patient's state; checking tables must not load the engine
    from trajsim.engine.source import PatientState

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
}
# The rules a next-code mask can enforce; the others concern values and visit timing, which the
# engine guarantees itself.
MASK_RULES = ("sex_specific_code", "age_specific_code", "before_birth", "after_death",
              "medication_without_indication", "medication_contraindicated_by_allergy", "duplicate_active_condition")

VIOLATION_SCHEMA = {"rule": pl.String(), "subject_id": pl.UInt64(), "time": pl.Datetime("us"),
                    "code": pl.String(), "detail": pl.String()}
_MICROSECONDS_PER_YEAR = DAYS_PER_YEAR * 86_400e6


def find_violations(events: pl.DataFrame, knowledge: Knowledge | None = None) -> pl.DataFrame:
    """Every rule violation in a canonical event table: one row per offending fact, with columns
    `rule, subject_id, time, code, detail`, sorted; empty when the table is clinically valid."""
    knowledge = knowledge or load_knowledge()
    facts = events.lazy().select("subject_id", "time", "encounter_id", "code", "numeric_value", "text")
    checks = [
        _demographics(facts, knowledge), _deaths(facts), _indications(facts, knowledge), _allergies(facts, knowledge),
        _bounds(facts, knowledge), _duplicates(facts, knowledge), _visits(facts),
    ]
    found = pl.concat([check.select(list(VIOLATION_SCHEMA)).cast(VIOLATION_SCHEMA) for check in checks])
    return found.sort("rule", "subject_id", "time", "code", "detail").collect()


def violation_counts(violations: pl.DataFrame) -> dict[str, int]:
    """Violations per rule, in the order of `RULES`, leaving out rules with none."""
    counts = dict(violations.group_by("rule").len().iter_rows())
    return {rule: counts[rule] for rule in RULES if rule in counts}


def _violation(frame: pl.LazyFrame, rule: str, detail: pl.Expr) -> pl.LazyFrame:
    return frame.select(pl.lit(rule).alias("rule"), "subject_id", "time", "code", detail.alias("detail"))


def _demographics(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    """Sex- and age-specific codes and facts before birth (birth and sex from the structural codes)."""
    code = pl.col("code")
    people = facts.group_by("subject_id").agg(
        birth=pl.col("time").filter(code == BIRTH).min(),
        sex=code.filter(code.is_in([SEX_FEMALE, SEX_MALE])).first().replace_strict(
            {SEX_FEMALE: "F", SEX_MALE: "M"}, default=None, return_dtype=pl.String),
    )
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
        _violation(wrong_sex, "sex_specific_code", pl.format("applies to sex {} only; patient is {}", "only_sex", "sex")),
        _violation(wrong_age, "age_specific_code", pl.format(
            "applies at ages {}-{}; patient is {}", "age_min", "age_max", pl.col("age").round(2))),
        _violation(dated.filter(pl.col("time") < pl.col("birth")), "before_birth",
                   pl.format("dated before birth at {}", "birth")),
    ])


def _deaths(facts: pl.LazyFrame) -> pl.LazyFrame:
    deaths = facts.filter(pl.col("code") == DEATH).with_columns(
        order=pl.col("time").rank("ordinal").over("subject_id"),
        first_death=pl.col("time").min().over("subject_id"),
    )
    after = facts.join(deaths.filter(pl.col("order") == 1).select("subject_id", "first_death"), on="subject_id")
    return pl.concat([
        _violation(after.filter(pl.col("time") > pl.col("first_death")), "after_death",
                   pl.format("dated after death at {}", "first_death")),
        _violation(deaths.filter(pl.col("order") > 1), "multiple_deaths",
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
    return _violation(unindicated, "medication_without_indication", pl.format("no active {}", "condition"))


def _allergies(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    ruled_out = pl.LazyFrame([(drug, allergy) for drug, allergies in knowledge.contraindications.items()
                              for allergy in sorted(allergies)], schema={"code": pl.String, "allergy": pl.String},
                             orient="row")
    onsets = (facts.join(ruled_out.select(pl.col("allergy").alias("code")).unique(), on="code")
              .group_by("subject_id", "code").agg(pl.col("time").min().alias("onset"))
              .rename({"code": "allergy"}))
    given = facts.join(ruled_out, on="code").join(onsets, on=["subject_id", "allergy"])
    return _violation(given.filter(pl.col("time") >= pl.col("onset")), "medication_contraindicated_by_allergy",
                      pl.format("recorded after {} on {}", "allergy", "onset"))


def _bounds(facts: pl.LazyFrame, knowledge: Knowledge) -> pl.LazyFrame:
    bounds = pl.LazyFrame([(m.code, m.low, m.high) for m in knowledge.measurements.values()],
                          schema={"code": pl.String, "low": pl.Float64, "high": pl.Float64}, orient="row")
    value = pl.col("numeric_value")
    outside = facts.join(bounds, on="code").filter((value < pl.col("low")) | (value > pl.col("high")))
    return _violation(outside, "value_out_of_bounds", pl.format("{} outside [{}, {}]", value, "low", "high"))


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
    return _violation(again.rename({"recorded": "code", "start": "time"}), "duplicate_active_condition",
                      pl.format("already active since {}", "earlier_start"))


def _visits(facts: pl.LazyFrame) -> pl.LazyFrame:
    starts = facts.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX) & pl.col("encounter_id").is_not_null())
    ends = (facts.filter(pl.col("code") == VISIT_END).group_by("subject_id", "encounter_id")
            .agg(pl.col("time").max().alias("end")))
    visits = (starts.join(ends, on=["subject_id", "encounter_id"], how="left")
              .with_columns(end=pl.coalesce("end", "time"))
              .sort("subject_id", "time", "encounter_id")
              .with_columns(previous_end=pl.col("end").cum_max().shift(1).over("subject_id")))
    return pl.concat([
        _violation(visits.filter(pl.col("end") < pl.col("time")), "visit_end_before_start",
                   pl.format("encounter {} ends at {}", "encounter_id", "end")),
        _violation(visits.filter(pl.col("time") < pl.col("previous_end")), "overlapping_visits",
                   pl.format("encounter {} starts before the previous visit ends at {}", "encounter_id", "previous_end")),
    ])


class RuleMask:
    """Which of a fixed list of candidate codes (e.g. a tokenizer's vocabulary) each patient may
    receive next. Per-code attributes are tabulated once, so a batch's mask is a few numpy ops.

    Codes the knowledge base says nothing about (structural or time tokens) are always allowed
    while the patient is alive."""

    def __init__(self, codes: Sequence[str], knowledge: Knowledge | None = None) -> None:
        knowledge = knowledge or load_knowledge()
        self.codes = list(codes)
        conditions = sorted({code for c in knowledge.conditions.values() for code in (c.code, c.icd10cm)})
        self._condition_column = {code: j for j, code in enumerate(conditions)}
        restrictions = [knowledge.restrictions.get(code) for code in self.codes]
        self._sex_allowed = np.array([[r is None or r.sex in (None, sex) for r in restrictions] for sex in ("F", "M")])
        self._age_min = np.array([r.age_min if r else -math.inf for r in restrictions])
        self._age_max = np.array([r.age_max if r else math.inf for r in restrictions])
        # Column of each chronic code in the active-condition matrix; -1 points at an always-False column.
        self._chronic_column = np.array([self._condition_column[code] if code in knowledge.chronic_codes else -1
                                         for code in self.codes])
        self._indication = np.zeros((len(conditions), len(self.codes)), dtype=np.float32)
        for i, code in enumerate(self.codes):
            for condition in knowledge.indications.get(code, ()):
                self._indication[self._condition_column[condition], i] = 1.0
        self._needs_indication = self._indication.any(axis=0)
        allergies = sorted({a.code for a in knowledge.allergies})
        self._allergy_column = {code: j for j, code in enumerate(allergies)}
        self._contraindicated = np.array([[allergy in knowledge.contraindications.get(code, ()) for code in self.codes]
                                          for allergy in allergies], dtype=np.float32).reshape(len(allergies), len(self.codes))

    def active_conditions(self, patients: Sequence[PatientState], days: np.ndarray) -> np.ndarray:
        """Bool matrix patients x known condition codes, plus a trailing all-False column."""
        active = np.zeros((len(patients), len(self._condition_column) + 1), dtype=bool)
        for row, (patient, day) in enumerate(zip(patients, days)):
            for code, end in patient.conditions.items():
                column = self._condition_column.get(code)
                if column is not None and end > day:
                    active[row, column] = True
        return active

    def allowed(self, patients: Sequence[PatientState], day: float | Sequence[float]) -> np.ndarray:
        """Bool array patients x codes: True where the code may be recorded for that patient at `day`
        (one day for all, or one per patient)."""
        days = np.broadcast_to(np.asarray(day, dtype=float), (len(patients),))
        births = np.array([p.birth_day for p in patients])
        deaths = np.array([math.inf if p.death_day is None else p.death_day for p in patients])
        ages = (days - births)[:, None] / DAYS_PER_YEAR
        allowed = self._sex_allowed[[0 if p.sex == "F" else 1 for p in patients]]
        allowed &= (ages >= self._age_min) & (ages < self._age_max)
        active = self.active_conditions(patients, days)
        allowed &= ~active[:, self._chronic_column]
        indicated = (active[:, :-1].astype(np.float32) @ self._indication) > 0
        allowed &= indicated | ~self._needs_indication
        allergic = np.zeros((len(patients), len(self._allergy_column)), dtype=np.float32)
        for row, patient in enumerate(patients):
            for code in patient.allergies:
                allergic[row, self._allergy_column[code]] = 1.0
        allowed &= (allergic @ self._contraindicated) == 0
        allowed &= ((days >= births) & (days <= deaths))[:, None]
        return allowed
