"""Prescribing knowledge as data: the therapy a guideline expects for an active condition
(`data/guideline_therapy.csv`) and the products children get instead of adult tablets
(`data/pediatric_formulations.csv`), and the lab values below which a drug must not be taken
(`data/drug_lab_limits.csv`: metformin at an eGFR below 30), and the drugs a pregnancy rules out or
calls for instead (`data/pregnancy_drugs.csv`: no lisinopril, statin or warfarin; labetalol or
nifedipine for hypertension, ACOG 2019), and the therapy a patient still above goal on one drug gets
added (`data/step_up_therapy.csv`: a second antihypertensive at 140/90 mm Hg, a GLP-1 receptor
agonist beside metformin at an HbA1c of 8%, after 3 months). A therapy with thresholds
(`data/therapy_thresholds.csv`) is due only at a visit whose reading reaches one: an antihypertensive
for a diagnosed hypertension once the blood pressure is at stage 2 (140/90 mm Hg), not for every
patient ever diagnosed.

A therapy is named by a `group` of `medications.csv`: every drug listed in that group for any
indication counts (a statin ordered for hyperlipidemia covers coronary disease), and so do the
children's products of those drugs and the `also_codes`, other products of the class that real
records use (Synthea's simvastatin 10 mg, penicillin V 500 mg). The engine's `Prescriber` and the `prescribing` rules read
these tables, so what the engine prescribes and what the checker demands are the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from trajsim.knowledge.tables import DATA, Knowledge, keyed_pairs, per_knowledge, read_table
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
    thresholds: tuple[tuple[str, float], ...] = ()  # (measurement code, at least): due at a reading reaching one

    def applies(self, age: float) -> bool:
        return self.age_min <= age < self.age_max

    def due(self, age: float, readings: Mapping[str, float]) -> bool:
        """Whether the therapy is due at this age at a visit with these readings (code -> highest
        value): always within its ages, unless it has thresholds and no reading reaches one."""
        return self.applies(age) and (not self.thresholds or any(
            readings.get(code, -math.inf) >= at_least for code, at_least in self.thresholds))


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


@cache
def therapy_thresholds() -> dict[str, tuple[tuple[str, float], ...]]:
    """Guideline rule -> the (measurement code, at least) readings that make its therapy due."""
    return keyed_pairs("therapy_thresholds.csv", "rule", "code", "at_least")


@per_knowledge
def guideline_therapies(knowledge: Knowledge) -> tuple[GuidelineTherapy, ...]:
    """The expected therapies, each with every drug code of its group and its thresholds."""
    groups = drug_groups(knowledge)
    ages, thresholds = therapy_ages(), therapy_thresholds()
    therapies = tuple(GuidelineTherapy(r["rule"], r["condition"], r["group"],
                                       frozenset(code for code, named in groups.items() if r["group"] in named)
                                       | frozenset(filter(None, r["also_codes"].split(";"))),
                                       *ages[r["condition"], r["group"]], ed_starts=r["ed_starts"] == "1",
                                       thresholds=thresholds.get(r["rule"], ()))
                      for r in guideline_rows())
    vocabulary = load_vocabulary()
    stray = sorted(t.rule for t in therapies if t.condition not in knowledge.conditions or t.group not in
                   {g for named in groups.values() for g in named} or any(c not in vocabulary for c in t.codes)
                   or any(code not in knowledge.measurements for code, _ in t.thresholds))
    stray += sorted(set(thresholds) - {t.rule for t in therapies})
    if stray:
        raise ValueError(f"guideline_therapy.csv, therapy_thresholds.csv: unknown condition, group, code, "
                         f"measurement or rule in {', '.join(stray)}")
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


@dataclass(frozen=True)
class PregnancyDrugs:
    """Drugs not started, and stopped, while a pregnancy is active (`avoided`, children's products
    included), and the drugs chosen instead for a (condition key, group) during one (`preferred`:
    code -> weight)."""

    avoided: frozenset[str]
    preferred: Mapping[tuple[str, str], Mapping[str, float]]

    def all_avoided(self, codes: frozenset[str]) -> bool:
        """Whether a pregnancy rules out every drug of a therapy (a statin, a RAAS inhibitor)."""
        return bool(codes) and codes <= self.avoided


@per_knowledge
def pregnancy_drugs(knowledge: Knowledge) -> PregnancyDrugs:
    """The drugs of `pregnancy_drugs.csv`, checked against the vocabulary and `medications.csv`."""
    rows = read_table(DATA.joinpath("pregnancy_drugs.csv"), ("code", "use", "condition", "group", "weight"))
    avoided = {r["code"] for r in rows if r["use"] == "avoid"}
    avoided |= {f.child_code for f in formulations().values() if f.adult_code in avoided}
    preferred: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        if r["use"] == "preferred":
            preferred.setdefault((r["condition"], r["group"]), {})[r["code"]] = float(r["weight"])
    listed = {(m.condition, m.group, m.code) for ms in knowledge.medications.values() for m in ms}
    vocabulary = load_vocabulary()
    stray = sorted({r["code"] for r in rows if r["code"] not in vocabulary or r["use"] not in ("avoid", "preferred")
                    or r["use"] == "preferred" and (r["condition"], r["group"], r["code"]) not in listed})
    if stray:
        raise ValueError(f"pregnancy_drugs.csv: unknown code or use, or a preferred drug not listed for its condition "
                         f"and group in medications.csv: {', '.join(stray)}")
    return PregnancyDrugs(frozenset(avoided), {key: dict(codes) for key, codes in preferred.items()})


@dataclass(frozen=True)
class StepUp:
    """A drug of `add_group` added for `condition` (a knowledge key) at a visit with a reading at a
    threshold, once a patient of `age_min` or more has taken exactly one drug of `group` (counting
    `add_group`'s) for `after_days`: a second antihypertensive, metformin's partner."""

    rule: str
    condition: str
    group: str
    add_group: str
    thresholds: tuple[tuple[str, float], ...]
    after_days: float
    age_min: float

    def due(self, age: float, readings: Mapping[str, float]) -> bool:
        """Whether a reading of the visit (code -> highest value) reaches a threshold at this age."""
        return age >= self.age_min and any(readings.get(code, -math.inf) >= at_least for code, at_least in self.thresholds)


@cache
def step_up_rows() -> tuple[tuple[dict[str, str], tuple[tuple[str, float], ...]], ...]:
    """Each rule of `step_up_therapy.csv`: its first row as read, and its (measurement, at least) thresholds."""
    rows = read_table(DATA.joinpath("step_up_therapy.csv"),
                      ("rule", "condition", "group", "add_group", "code", "at_least", "after_days", "age_min"))
    found: dict[str, tuple[dict[str, str], list[tuple[str, float]]]] = {}
    for r in rows:
        found.setdefault(r["rule"], (r, []))[1].append((r["code"], float(r["at_least"])))
    return tuple((first, tuple(pairs)) for first, pairs in found.values())


@per_knowledge
def step_ups(knowledge: Knowledge) -> tuple[StepUp, ...]:
    """The step-ups of `step_up_therapy.csv`, one per rule, checked against `medications.csv`."""
    found = {r["rule"]: StepUp(r["rule"], r["condition"], r["group"], r["add_group"], pairs, float(r["after_days"]),
                               float(r["age_min"])) for r, pairs in step_up_rows()}
    listed = {(m.condition, m.group) for ms in knowledge.medications.values() for m in ms}
    stray = sorted(s.rule for s in found.values() if {(s.condition, s.group), (s.condition, s.add_group)} - listed
                   or any(code not in knowledge.measurements for code, _ in s.thresholds))
    if stray:
        raise ValueError(f"step_up_therapy.csv: a group not listed for its condition in medications.csv, or an "
                         f"unknown measurement, in {', '.join(stray)}")
    return tuple(found.values())


@per_knowledge
def added_only(knowledge: Knowledge) -> frozenset[tuple[str, str]]:
    """(condition key, group) of the drugs only a step-up prescribes, not the first-line therapy at diagnosis."""
    return frozenset((s.condition, s.add_group) for s in step_ups(knowledge) if s.add_group != s.group)


def drug_indications(knowledge: Knowledge, learned: Mapping[str, Sequence[str]] | None = None) -> dict[str, tuple[str, ...]]:
    """Drug code -> the condition codes it is ordered for, in the order a prescriber picks among the
    active ones: those a trained model's records ordered it for (`learned`, most frequent first),
    then the knowledge's first-line indications. Of a drug the knowledge lists (one the engine and
    the rules judge), a learned indication counts only if it is a condition the knowledge knows,
    with both its codes: the rules can see no other active. A drug the knowledge does not list keeps
    what it learned, to name its reason; it is never judged."""
    learned = learned or {}
    by_code = knowledge.conditions_by_code
    table = {drug: tuple(codes) for drug, codes in learned.items() if drug not in knowledge.indications}
    for drug, listed in knowledge.indications.items():
        known = [code for c in learned.get(drug, ()) if c in by_code
                 for code in (c, *sorted({by_code[c].code, by_code[c].icd10cm} - {c}))]
        table[drug] = tuple(dict.fromkeys([*known, *sorted(listed)]))
    return table


def judged_drugs(knowledge: Knowledge, learned: Mapping[str, Sequence[str]] | None = None,
                 always: Sequence[str] = ()) -> frozenset[str]:
    """The drugs ordered only while one of their indications is active: those the knowledge lists,
    and the learned ones a model's records `always` ordered for one of theirs
    (`indications.always_indicated`: Synthea names strep throat for every penicillin V)."""
    learned = learned or {}
    return frozenset(knowledge.indications) | frozenset(drug for drug in always if learned.get(drug))
