"""Prescribing knowledge as data: the therapy a guideline expects for an active condition
(`data/guideline_therapy.csv`) and the products children get instead of adult tablets
(`data/pediatric_formulations.csv`), and the lab values below which a drug must not be taken
(`data/drug_lab_limits.csv`: metformin at an eGFR below 30).

A therapy is named by a `group` of `medications.csv`: every drug listed in that group for any
indication counts (a statin ordered for hyperlipidemia covers coronary disease), and so do the
children's products of those drugs and the `also_codes`, other products of the class that real
records use (Synthea's simvastatin 10 mg, penicillin V 500 mg). The engine's `Prescriber` and the `prescribing` rules read
these tables, so what the engine prescribes and what the checker demands are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from trajsim.knowledge.tables import DATA, Knowledge, per_knowledge, read_table
from trajsim.vocab import load_vocabulary

RENEWAL_DAYS = 365.0  # US state pharmacy laws keep a prescription for a non-controlled drug valid for a year


@dataclass(frozen=True)
class Formulation:
    """An adult product and the children's product given instead at ages [child_age_min,
    adult_age_min) in years; under `child_age_min` neither is ordered."""

    adult_code: str
    child_code: str
    child_age_min: float
    adult_age_min: float


@dataclass(frozen=True)
class GuidelineTherapy:
    """A group of drugs expected while `condition` (a knowledge key) is active at ages [age_min,
    age_max); `rule` names the violation when a patient seen with the condition has none of `codes`.
    A chronic condition's therapy is the office's, unless `ed_starts` and the ED diagnosed it."""

    rule: str
    condition: str
    group: str
    codes: frozenset[str]
    age_min: float = 0.0
    age_max: float = math.inf
    ed_starts: bool = False  # the ED starts it when it diagnoses the condition (secondary prevention), not the office

    def applies(self, age: float) -> bool:
        return self.age_min <= age < self.age_max


@cache
def formulations() -> dict[str, Formulation]:
    """The pediatric formulation table by adult code, its codes checked against the vocabulary."""
    rows = read_table(DATA.joinpath("pediatric_formulations.csv"),
                      ("adult_code", "child_code", "child_age_min", "adult_age_min"))
    found = {r["adult_code"]: Formulation(r["adult_code"], r["child_code"], float(r["child_age_min"]),
                                          float(r["adult_age_min"])) for r in rows}
    vocabulary = load_vocabulary()
    unknown = sorted({c for f in found.values() for c in (f.adult_code, f.child_code) if c not in vocabulary})
    if unknown:
        raise ValueError(f"pediatric_formulations.csv uses codes missing from the vocabulary: {', '.join(unknown)}")
    return found


def product_for_age(code: str, age: float) -> str | None:
    """The product of drug `code` to order at `age` years: the children's product below the adult
    age, None below the children's product's age, and any drug without a children's product as is."""
    form = formulations().get(code)
    if form is None or age >= form.adult_age_min:
        return code
    return form.child_code if age >= form.child_age_min else None


def adult_product(code: str) -> str:
    """The adult product of a children's product (any other code as is)."""
    return _adult_products().get(code, code)


@cache
def _adult_products() -> dict[str, str]:
    """Children's product -> its adult product (the first formulation naming it)."""
    found: dict[str, str] = {}
    for form in formulations().values():
        found.setdefault(form.child_code, form.adult_code)
    return found


@per_knowledge
def supply_days(knowledge: Knowledge) -> dict[str, float]:
    """Long-term drug (children's products included) -> days one dispense lasts."""
    found = dict(knowledge.refill_days)
    found.update({f.child_code: found[f.adult_code] for f in formulations().values() if f.adult_code in found})
    return found


@per_knowledge
def drug_groups(knowledge: Knowledge) -> dict[str, frozenset[str]]:
    """Drug code (children's products included) -> the `medications.csv` groups it belongs to."""
    found: dict[str, set[str]] = {}
    for medication in (m for ms in knowledge.medications.values() for m in ms):
        found.setdefault(medication.code, set()).add(medication.group)
    for form in formulations().values():
        found.setdefault(form.child_code, set()).update(found.get(form.adult_code, ()))
    return {code: frozenset(groups) for code, groups in found.items()}


@cache
def guideline_rows() -> tuple[dict[str, str], ...]:
    """The rows of `guideline_therapy.csv` as read."""
    return tuple(read_table(DATA.joinpath("guideline_therapy.csv"),
                            ("rule", "condition", "group", "also_codes", "age_min", "age_max", "ed_starts")))


@cache
def therapy_ages() -> dict[tuple[str, str], tuple[float, float]]:
    """(condition key, group) -> the ages [min, max) a guideline limits that therapy to."""
    return {(r["condition"], r["group"]): (float(r["age_min"] or 0), float(r["age_max"] or math.inf))
            for r in guideline_rows()}


@per_knowledge
def guideline_therapies(knowledge: Knowledge) -> tuple[GuidelineTherapy, ...]:
    """The expected therapies, each with every drug code of its group."""
    groups = drug_groups(knowledge)
    ages = therapy_ages()
    therapies = tuple(GuidelineTherapy(r["rule"], r["condition"], r["group"],
                                       frozenset(code for code, named in groups.items() if r["group"] in named)
                                       | frozenset(filter(None, r["also_codes"].split(";"))),
                                       *ages[r["condition"], r["group"]], ed_starts=r["ed_starts"] == "1")
                      for r in guideline_rows())
    vocabulary = load_vocabulary()
    stray = sorted(t.rule for t in therapies if t.condition not in knowledge.conditions or t.group not in
                   {g for named in groups.values() for g in named} or any(c not in vocabulary for c in t.codes))
    if stray:
        raise ValueError(f"guideline_therapy.csv: unknown condition, group or code in {', '.join(stray)}")
    return therapies


@dataclass(frozen=True)
class DrugLabLimit:
    """Drugs of `group` are not started, and are stopped, once the latest `lab` value is below `below`."""

    group: str
    lab: str
    below: float
    codes: frozenset[str]  # the group's drugs, children's products included


@cache
def _lab_limit_rows() -> tuple[dict[str, str], ...]:
    return tuple(read_table(DATA.joinpath("drug_lab_limits.csv"), ("group", "code", "below")))


@per_knowledge
def drug_lab_limits(knowledge: Knowledge) -> tuple[DrugLabLimit, ...]:
    """The lab limits of `drug_lab_limits.csv`, each with its group's drug codes."""
    groups = drug_groups(knowledge)
    limits = tuple(DrugLabLimit(r["group"], r["code"], float(r["below"]),
                                frozenset(code for code, named in groups.items() if r["group"] in named))
                   for r in _lab_limit_rows())
    stray = sorted(f"{limit.group}/{limit.lab}" for limit in limits
                   if not limit.codes or limit.lab not in knowledge.measurements)
    if stray:
        raise ValueError(f"drug_lab_limits.csv: unknown group or measurement in {', '.join(stray)}")
    return limits
