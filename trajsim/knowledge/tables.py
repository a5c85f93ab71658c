"""The knowledge tables: typed rows, the checked loader every clinical CSV goes through, and
`load_knowledge()`, which reads `data/*.csv` into one `Knowledge` and checks its codes against the
vocabulary.

A clinical table is a CSV file whose rows cite their `source`. `read_table` is the one way such a
file is read (here, by the exporter for its tables and by the stream for its case mix), so a
ragged row or an uncited one fails at load time with the file and line, not later as a wrong figure.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from functools import cache, cached_property, wraps
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TypeVar

import networkx as nx
import numpy as np

from trajsim.clock import DAYS_PER_YEAR, day_number
from trajsim.events import ENCOUNTER_CLASSES
from trajsim.knowledge.hazards import Epidemiology
from trajsim.vocab import load_vocabulary

DATA = resources.files("trajsim.knowledge").joinpath("data")


class TableError(ValueError):
    """A clinical table that does not have the columns, values or citations its reader needs."""


def keyed_pairs(name: str, key: str, label: str, number: str) -> dict[str, tuple[tuple[str, float], ...]]:
    """A shipped table read as `key` -> its rows' (`label`, `number`) pairs, in table order."""
    found: dict[str, list[tuple[str, float]]] = {}
    for r in read_table(DATA.joinpath(name), (key, label, number)):
        found.setdefault(r[key], []).append((r[label], float(r[number])))
    return {k: tuple(pairs) for k, pairs in found.items()}


def read_table(path: Traversable, columns: Iterable[str]) -> list[dict[str, str]]:
    """The rows of a clinical CSV table as {column: text}, once the table is known to have
    `columns`, one value per column in every row and, where it has a `source` column, a source on
    every row; otherwise a `TableError` naming the file and line."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [column for column in columns if column not in header]
        if missing:
            raise TableError(f"{path}: missing column(s) {', '.join(missing)}; the header is {','.join(header)}")
        rows = []
        for values in reader:
            if not values:
                continue
            if len(values) != len(header):
                raise TableError(f"{path} line {reader.line_num}: {len(values)} values for {len(header)} columns")
            row = dict(zip(header, values))
            if "source" in row and not row["source"].strip():
                raise TableError(f"{path} line {reader.line_num}: no source; cite where the figures come from")
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Condition:
    """A condition and how it presents: chronic conditions persist, acute ones resolve."""

    key: str
    code: str
    icd10cm: str
    course: str  # "chronic" | "acute"
    visit_class: str  # encounter class of the visit that diagnoses an acute episode
    visit_type: str  # SNOMED encounter type of that visit (follow-up visits for chronic ones)
    duration_days: float | None
    stay_days: float | None
    follow_up_days: float | None
    first_day: float | None  # engine day (days since 1970-01-01) before which it cannot occur, e.g. COVID-19


@dataclass(frozen=True)
class AgeBand:
    """A figure that applies to one sex (or "any") over ages [age_min, age_max) in years."""

    sex: str
    age_min: float
    age_max: float
    value: float

    def covers(self, sex: str, age: float) -> bool:
        return self.sex in ("any", sex) and self.age_min <= age < self.age_max


@dataclass(frozen=True)
class Medication:
    """A first-line drug for an indication; chronic drugs are renewed every `refill_days`.

    Drugs of one `group` are alternatives (one is chosen by `weight`); each group is prescribed."""

    condition: str
    code: str
    group: str
    weight: float
    course_days: float | None
    refill_days: float | None


@dataclass(frozen=True)
class Monitoring:
    """A lab (or panel) repeated every `interval_days` while a condition is active, at visits of the
    encounter classes in `settings` (empty: any visit); 0 days orders it at every such visit."""

    condition: str
    code: str
    interval_days: float
    settings: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Measurement:
    """A lab or vital: its category, UCUM unit, reporting precision and physiological bounds."""

    code: str
    category: str
    unit: str
    decimals: int
    low: float
    high: float


@dataclass(frozen=True)
class ValueDistribution:
    """Normal distribution of a measurement for a sex/age band, optionally given a condition."""

    condition: str | None
    band: AgeBand
    mean: float
    sd: float


DOSE_COLUMNS = ("series", "code", "dose", "age_days", "interval_days", "min_age_days", "min_interval_days",
                "max_age_days", "repeat_days", "uptake", "before_entry", "routine", "max_age_limit",
                "available_from", "recommended_from", "recommended_until", "family")


@dataclass(frozen=True)
class Dose:
    """Dose `dose` of a vaccine series (ACIP schedule and its minimum ages and intervals, Table 3-1).

    Recommended at `age_days` and at least `interval_days` after the previous dose; valid from
    `min_age_days` and `min_interval_days` after the previous dose; not given from `max_age_days`
    (None: no limit), which is where catch-up stops or, if `max_age_limit`, the ACIP maximum age from
    which a dose is invalid (rotavirus); nor before `available_from_day` (engine day; None: always),
    when the vaccine was licensed (or authorized: COVID-19). A series is started by the routine
    schedule only from `recommended_from_day` to `recommended_until_day` (None: from licensing, still
    recommended), the years ACIP recommended it; series of one `family` are alternative regimens
    (PPSV23, PCV13 then PPSV23, PCV20), of which a patient starts one. The last dose of a series with `repeat_days` recurs
    at that interval (boosters, the yearly influenza shot). `uptake` is the chance a patient accepts
    the series when first offered (None: by age, from `<series>_uptake.csv`), and on a later dose
    below 1 the chance, decided once, that an accepting patient takes that dose and its recurrences
    (adult Td boosters); `before_entry` says whether a dose
    due before the record began was `given` elsewhere or is `offered` at the first visit. A dose
    not `routine` is valid but not given by the routine schedule (HPV dose 3 of a late start)."""

    series: str
    code: str
    dose: int
    age_days: float
    interval_days: float | None
    min_age_days: float
    min_interval_days: float | None
    max_age_days: float | None
    repeat_days: float | None
    uptake: float | None
    before_entry: str
    routine: bool
    max_age_limit: bool
    available_from_day: float | None
    recommended_from_day: float | None
    recommended_until_day: float | None
    family: str


@dataclass(frozen=True)
class Restriction:
    """A code that only fits one sex (`sex` None: either) and ages [age_min, age_max) in years."""

    code: str
    sex: str | None
    age_min: float
    age_max: float


# Preventive care due every year or more is not repeated sooner than its interval less a month:
# Medicare pays a screening mammography once 11 full months have passed after the month of the last
# (42 CFR 410.34(c)), a screening Pap smear after 23 (42 CFR 410.56(b)), a screening colonoscopy
# after 119 (42 CFR 410.37(e)), and a subsequent annual wellness visit 12 months after the last
# (42 CFR 410.15(a)), which CMS counts as 11 full months.
REPEAT_GRACE_DAYS = DAYS_PER_YEAR / 12


@dataclass(frozen=True)
class Screening:
    """A screening procedure (or laboratory panel) due every `interval_years` at ages
    [age_min, age_max), taken up with probability `uptake` each time it falls due (`sex` None:
    either; `condition` set: only while that condition is active)."""

    code: str
    sex: str | None
    age_min: float
    age_max: float
    interval_years: float
    uptake: float
    condition: str | None = None

    def applies(self, sex: str, age: float) -> bool:
        """Whether this row's ages and sex take in a patient of `sex` at `age` years."""
        return self.sex in (None, sex) and self.age_min <= age < self.age_max

    @property
    def repeat_after_days(self) -> float:
        """The fewest days after the last one that this screening is done again: its interval less a month."""
        return self.interval_years * DAYS_PER_YEAR - REPEAT_GRACE_DAYS


@dataclass(frozen=True)
class Allergy:
    """An allergy present from childhood or adulthood at the cited prevalence; drugs it rules out."""

    code: str
    category: str  # FHIR AllergyIntolerance category: food, medication, environment, biologic
    criticality: str
    prevalence_child: float
    prevalence_adult: float
    contraindicates: frozenset[str]


@dataclass(frozen=True)
class Knowledge(Epidemiology):
    """The knowledge base: the population figures (see `Epidemiology`) and the tables of care."""

    medications: dict[str, list[Medication]]
    monitoring: dict[str, list[Monitoring]]
    measurements: dict[str, Measurement]
    doses: list[Dose]
    well_visit_days: list[float]
    well_visit_repeat_days: float  # from the last age of the periodicity schedule, a well visit every this many days
    restrictions: dict[str, Restriction]  # by code; a condition's ICD-10-CM code shares its SNOMED one's
    screenings: list[Screening]
    allergies: list[Allergy]

    @property
    def well_visit_repeat_after_days(self) -> float:
        """The fewest days between two yearly well visits: the repeat less a month (`REPEAT_GRACE_DAYS`)."""
        return self.well_visit_repeat_days - REPEAT_GRACE_DAYS

    @staticmethod
    def well_visit_spread_days(age_days: float) -> float:
        """How far a well visit falls after its age on the periodicity schedule (the scale of a
        half-normal): about a tenth of the child's age, at most 20 days (an assumption)."""
        return min(20.0, 0.1 * age_days)

    @cached_property
    def indications(self) -> dict[str, frozenset[str]]:
        """Drug code -> the condition codes (SNOMED and ICD-10-CM) it is first-line for."""
        found: dict[str, set[str]] = defaultdict(set)
        for key, medications in self.medications.items():
            condition = self.conditions[key]
            for medication in medications:
                found[medication.code] |= {condition.code, condition.icd10cm}
        return {code: frozenset(codes) for code, codes in found.items()}

    @cached_property
    def conditions_by_code(self) -> dict[str, Condition]:
        """Conditions by SNOMED code and by ICD-10-CM code."""
        return {code: c for c in self.conditions.values() for code in (c.icd10cm, c.code)}

    @cached_property
    def refill_days(self) -> dict[str, float]:
        """Long-term drug -> days between refills (the shortest over its indications)."""
        found: dict[str, float] = {}
        for medication in (m for ms in self.medications.values() for m in ms if m.refill_days):
            found[medication.code] = min(found.get(medication.code, math.inf), medication.refill_days)
        return found

    @cached_property
    def contraindications(self) -> dict[str, frozenset[str]]:
        """Drug code -> allergy codes that rule it out."""
        ruled_out: dict[str, set[str]] = defaultdict(set)
        for allergy in self.allergies:
            for drug in allergy.contraindicates:
                ruled_out[drug].add(allergy.code)
        return {drug: frozenset(allergies) for drug, allergies in ruled_out.items()}

    @cached_property
    def chronic_codes(self) -> frozenset[str]:
        """SNOMED and ICD-10-CM codes of the chronic conditions."""
        return frozenset(code for c in self.conditions.values() if c.course == "chronic" for code in (c.code, c.icd10cm))


Built = TypeVar("Built")


def per_knowledge(build: Callable[[Knowledge], Built]) -> Callable[[Knowledge], Built]:
    """`build` computed once per knowledge base and shared: what the engine derives from the tables
    for each patient's keepers is the same for every patient. (A `Knowledge` holds dicts, so it is
    not hashable; it is kept by identity, and held so its identity is not reused.)"""
    built: dict[int, tuple[Knowledge, Built]] = {}

    @wraps(build)
    def cached(knowledge: Knowledge) -> Built:
        entry = built.get(id(knowledge))
        if entry is None or entry[0] is not knowledge:
            entry = built[id(knowledge)] = (knowledge, build(knowledge))
        return entry[1]

    return cached


def _rows(name: str, columns: Iterable[str]) -> list[dict[str, str]]:
    return read_table(DATA.joinpath(name), columns)


def _number(value: str) -> float | None:
    return float(value) if value.strip() else None


def _date_day(value: str, field: str) -> float | None:
    """The engine day of an ISO date (None when blank), or a `TableError` naming the field."""
    if not value:
        return None
    try:
        return day_number(date.fromisoformat(value))
    except ValueError:
        raise TableError(f"{field}: {value!r} is not a date; write YYYY-MM-DD or leave it blank") from None


def _band(row: dict[str, str], value: float) -> AgeBand:
    return AgeBand(row.get("sex") or "any", float(row["age_min"]), float(row["age_max"]), value)


@cache
def load_knowledge() -> Knowledge:
    """The shipped knowledge base, checked against the vocabulary (read once per process)."""
    vocabulary = load_vocabulary()
    conditions = {
        r["condition"]: Condition(
            r["condition"], r["code"], r["icd10cm"], r["course"], r["visit_class"], r["visit_type"],
            _number(r["duration_days"]), _number(r["stay_days"]), _number(r["follow_up_days"]),
            _date_day(r["first_date"], "conditions.csv first_date"),
        )
        for r in _rows("conditions.csv", ("condition", "code", "icd10cm", "course", "visit_class", "visit_type",
                                          "duration_days", "stay_days", "follow_up_days", "first_date"))
    }
    prevalence: dict[str, list[AgeBand]] = defaultdict(list)
    episode_rates: dict[str, list[AgeBand]] = defaultdict(list)
    for r in _rows("condition_rates.csv", ("condition", "sex", "age_min", "age_max", "measure", "value")):
        target = prevalence if r["measure"] == "prevalence" else episode_rates
        target[r["condition"]].append(_band(r, float(r["value"])))
    medications: dict[str, list[Medication]] = defaultdict(list)
    for r in _rows("medications.csv", ("condition", "code", "group", "weight", "course_days", "refill_days")):
        medications[r["condition"]].append(
            Medication(r["condition"], r["code"], r["group"], float(r["weight"]), _number(r["course_days"]), _number(r["refill_days"]))
        )
    monitoring: dict[str, list[Monitoring]] = defaultdict(list)
    for r in _rows("monitoring.csv", ("condition", "code", "interval_days", "settings")):
        settings = frozenset(filter(None, r["settings"].split(";")))
        if settings - set(ENCOUNTER_CLASSES):
            raise TableError(f"monitoring.csv: settings {r['settings']!r} of {r['condition']} {r['code']}; "
                             f"allowed: encounter classes {', '.join(ENCOUNTER_CLASSES)} separated by ';', or empty")
        monitoring[r["condition"]].append(Monitoring(r["condition"], r["code"], float(r["interval_days"]), settings))
    measurements = {
        r["code"]: Measurement(r["code"], r["category"], vocabulary[r["code"]].unit or "1", int(r["decimals"]),
                               float(r["low"]), float(r["high"]))
        for r in _rows("measurements.csv", ("code", "category", "decimals", "low", "high"))
    }
    values: dict[str, list[ValueDistribution]] = defaultdict(list)
    for r in _rows("measurement_values.csv", ("code", "condition", "sex", "age_min", "age_max", "mean", "sd")):
        values[r["code"]].append(
            ValueDistribution(r["condition"] or None, _band(r, 0.0), float(r["mean"]), float(r["sd"]))
        )
    growth_rows = _rows("growth.csv", ("sex", "age_years", "height_cm", "weight_kg"))
    growth = {
        sex: np.array([[float(r["age_years"]), float(r["height_cm"]), float(r["weight_kg"])]
                       for r in growth_rows if r["sex"] == sex])
        for sex in ("F", "M")
    }
    well = _rows("well_visits.csv", ("age_days", "repeat_days"))
    knowledge = Knowledge(
        conditions=conditions,
        prevalence=dict(prevalence),
        episode_rates=dict(episode_rates),
        values=dict(values),
        growth=growth,
        mortality=np.array([[float(r["age_min"]), float(r["age_max"]), float(r["deaths_per_100k"]) / 1e5]
                            for r in _rows("mortality.csv", ("age_min", "age_max", "deaths_per_100k"))]),
        complications=_complications(),
        mortality_hazard_ratios={r["condition"]: float(r["hazard_ratio"])
                                 for r in _rows("mortality_hazards.csv", ("condition", "hazard_ratio"))},
        medications=dict(medications),
        monitoring=dict(monitoring),
        measurements=measurements,
        doses=[Dose(r["series"], r["code"], int(r["dose"]), float(r["age_days"]), _number(r["interval_days"]),
                    float(r["min_age_days"]), _number(r["min_interval_days"]), _number(r["max_age_days"]),
                    _number(r["repeat_days"]), _number(r["uptake"]), r["before_entry"], r["routine"] == "1",
                    r["max_age_limit"] == "1", _date_day(r["available_from"], "immunizations.csv available_from"),
                    _date_day(r["recommended_from"], "immunizations.csv recommended_from"),
                    _date_day(r["recommended_until"], "immunizations.csv recommended_until"), r["family"] or r["series"])
               for r in _rows("immunizations.csv", DOSE_COLUMNS)],
        well_visit_days=[float(r["age_days"]) for r in well],
        well_visit_repeat_days=float(well[-1]["repeat_days"]),
        restrictions=_restrictions(conditions),
        screenings=[Screening(r["code"], r["sex"] or None, float(r["age_min"]), float(r["age_max"]),
                              float(r["interval_years"]), float(r["uptake"]))
                    for r in _rows("screenings.csv", ("code", "sex", "age_min", "age_max", "interval_years", "uptake"))],
        allergies=[Allergy(r["code"], r["category"], r["criticality"], float(r["prevalence_child"]),
                           float(r["prevalence_adult"]), frozenset(filter(None, r["contraindicates"].split(";"))))
                   for r in _rows("allergies.csv", ("code", "category", "criticality", "prevalence_child",
                                                    "prevalence_adult", "contraindicates"))],
    )
    _check_codes(knowledge)
    return knowledge


def _complications() -> nx.DiGraph:
    graph = nx.DiGraph()
    for r in _rows("complications.csv", ("condition", "complication", "relative_risk")):
        graph.add_edge(r["condition"], r["complication"], relative_risk=float(r["relative_risk"]))
    if not nx.is_directed_acyclic_graph(graph):
        raise ValueError(f"complications.csv: the complication links form a cycle: {nx.find_cycle(graph)}")
    return graph


def _restrictions(conditions: dict[str, Condition]) -> dict[str, Restriction]:
    icd10cm = {c.code: c.icd10cm for c in conditions.values()}
    restrictions = {}
    for r in _rows("restrictions.csv", ("code", "sex", "age_min", "age_max")):
        age_max = _number(r["age_max"])
        rule = Restriction(r["code"], r["sex"] or None, _number(r["age_min"]) or 0.0, math.inf if age_max is None else age_max)
        restrictions[r["code"]] = rule
        if r["code"] in icd10cm:
            restrictions[icd10cm[r["code"]]] = Restriction(icd10cm[r["code"]], rule.sex, rule.age_min, rule.age_max)
    return restrictions


def _check_codes(knowledge: Knowledge) -> None:
    """Every code a table uses must be a known concept, and every table must name known conditions."""
    vocabulary = load_vocabulary()
    codes = [c.code for c in knowledge.conditions.values()] + [c.icd10cm for c in knowledge.conditions.values()]
    codes += [c.visit_type for c in knowledge.conditions.values()]
    codes += [m.code for ms in knowledge.medications.values() for m in ms]
    codes += [m.code for ms in knowledge.monitoring.values() for m in ms]
    codes += list(knowledge.measurements) + [d.code for d in knowledge.doses] + list(knowledge.restrictions)
    codes += [s.code for s in knowledge.screenings] + [a.code for a in knowledge.allergies]
    codes += [drug for a in knowledge.allergies for drug in a.contraindicates]
    codes += _laboratory_codes()
    unknown = sorted({c for c in codes if c not in vocabulary})
    if unknown:
        raise ValueError(f"knowledge tables use codes missing from the vocabulary: {', '.join(unknown)}")
    named = set(knowledge.prevalence) | set(knowledge.episode_rates) | set(knowledge.medications) | set(knowledge.monitoring)
    named |= {d.condition for ds in knowledge.values.values() for d in ds if d.condition}
    named |= set(knowledge.complications) | set(knowledge.mortality_hazard_ratios)
    named |= _laboratory_conditions()
    stray = sorted(named - set(knowledge.conditions))
    if stray:
        raise ValueError(f"knowledge tables name conditions not in conditions.csv: {', '.join(stray)}")


def _laboratory_codes() -> list[str]:
    """The codes of the laboratory tables (`labs.py`): panels and results, reflexes, findings,
    reference intervals and well-visit screenings."""
    from trajsim.knowledge import labs  # it reads the tables with this module's loader

    codes = [*labs.lab_panels(), *labs.panel_results()]
    codes += [code for pair in labs.reflexes().items() for code in pair]
    codes += [code for fs in labs.urine_findings().values() for f in fs for code in (f.code, f.marker) if code]
    codes += list(labs.reference_intervals()) + [s.code for s in labs.lab_screenings()]
    return codes + [labs.NEGATIVE, labs.POSITIVE]


def _laboratory_conditions() -> set[str]:
    from trajsim.knowledge import labs

    return ({f.condition for fs in labs.urine_findings().values() for f in fs if f.condition}
            | {s.condition for s in labs.lab_screenings() if s.condition})
