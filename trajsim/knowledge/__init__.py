"""Clinical knowledge as data: what medicine is, separate from how the engine simulates it.

Each table in `data/` is a small CSV with a `source` column citing where its figures come from.
The loaders here turn them into typed, read-only objects and check every code against the
vocabulary, so adding a condition is a data edit plus a test, not new branches in code.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from functools import cache, cached_property
from importlib import resources

import networkx as nx
import numpy as np

from trajsim.clock import DAYS_PER_YEAR, day_number
from trajsim.vocab import load_vocabulary

OPEN_BAND_END = 85.0


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
    """A lab repeated every `interval_days` while a condition is active."""

    condition: str
    code: str
    interval_days: float


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


@dataclass(frozen=True)
class Dose:
    """A scheduled vaccine dose at `age_days`; repeating ones recur every `repeat_days`."""

    code: str
    age_days: float
    repeat_days: float | None
    season_uptake: float | None


@dataclass(frozen=True)
class Restriction:
    """A code that only fits one sex (`sex` None: either) and ages [age_min, age_max) in years."""

    code: str
    sex: str | None
    age_min: float
    age_max: float


@dataclass(frozen=True)
class Screening:
    """A screening procedure due every `interval_years` at ages [age_min, age_max), taken up with
    probability `uptake` each time it falls due (`sex` None: either)."""

    code: str
    sex: str | None
    age_min: float
    age_max: float
    interval_years: float
    uptake: float


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
class Knowledge:
    conditions: dict[str, Condition]
    prevalence: dict[str, list[AgeBand]]
    episode_rates: dict[str, list[AgeBand]]
    medications: dict[str, list[Medication]]
    monitoring: dict[str, list[Monitoring]]
    measurements: dict[str, Measurement]
    values: dict[str, list[ValueDistribution]]
    growth: dict[str, np.ndarray]  # sex -> rows of (age_years, height_cm, weight_kg)
    doses: list[Dose]
    well_visit_days: list[float]
    well_visit_repeat_days: float
    mortality: np.ndarray  # rows of (age_min, age_max, annual hazard)
    restrictions: dict[str, Restriction]  # by code; a condition's ICD-10-CM code shares its SNOMED one's
    complications: nx.DiGraph  # condition -> complication, edge attribute relative_risk
    mortality_hazard_ratios: dict[str, float]  # condition -> all-cause hazard ratio
    screenings: list[Screening]
    allergies: list[Allergy]

    def prevalence_factor(self, sex: str, age: float, ratios: dict[str, float]) -> float:
        """Mean of 1 + sum of (ratio - 1) over the conditions a person of this age has, by prevalence.

        Excess risks are additive: a person with conditions C has risk baseline * (1 + sum over C of
        (ratio - 1)), and baseline = population figure / this factor keeps the population figure."""
        return 1.0 + sum(self.prevalence_at(key, sex, age) * (ratio - 1.0) for key, ratio in ratios.items()
                         if key in self.prevalence)

    @cached_property
    def chronic(self) -> list[Condition]:
        """The chronic conditions, in the order of the arrays `chronic_changes` returns."""
        return [c for c in self.conditions.values() if c.course == "chronic"]

    @cached_property
    def risk_ratios(self) -> dict[str, dict[str, float]]:
        """Condition -> {condition that raises its risk: relative risk}."""
        return {target: {parent: data["relative_risk"] for parent, _, data in self.complications.in_edges(target, data=True)}
                for target in self.complications}

    @cached_property
    def _prevalence_grid(self) -> dict[str, np.ndarray]:
        # Every knot of `prevalence_knots` lies on a half-year, so interpolating this grid is exact.
        ages = np.arange(0.0, 120.5, 0.5)
        return {sex: np.array([[self.prevalence_at(c.key, sex, age) for age in ages] for c in self.chronic])
                for sex in ("F", "M")}

    @cached_property
    def _excess_risk(self) -> np.ndarray:
        """[k, j] = relative risk of chronic condition k given chronic condition j, minus 1."""
        index = {c.key: i for i, c in enumerate(self.chronic)}
        excess = np.zeros((len(index), len(index)))
        for parent, target, data in self.complications.edges(data=True):
            excess[index[target], index[parent]] = data["relative_risk"] - 1.0
        return excess

    def chronic_prevalence(self, sex: str, age: float) -> np.ndarray:
        """Prevalence of each chronic condition at this age (see `prevalence_at`)."""
        grid = self._prevalence_grid[sex]
        x = min(max(age, 0.0), 120.0) * 2
        i = min(int(x), grid.shape[1] - 2)
        return grid[:, i] + (grid[:, i + 1] - grid[:, i]) * (x - i)

    def chronic_changes(self, sex: str, age_from: float, age_to: float) -> tuple[np.ndarray, np.ndarray]:
        """For each chronic condition between two ages: the cumulative onset hazard for someone with
        none of the conditions that raise its risk, and the chance it resolves if present.

        Onset follows the rise in prevalence, P = 1 - (1 - prev(to)) / (1 - prev(from)), rescaled by
        `prevalence_factor` at the middle age; resolution follows a fall, 1 - prev(to) / prev(from)."""
        key = (sex, age_from, age_to)
        if self._last_changes.get("key") != key:  # the source and the schedule ask the same at a visit
            self._last_changes.update(key=key, value=self._chronic_changes(sex, age_from, age_to))
        return self._last_changes["value"]

    @cached_property
    def _last_changes(self) -> dict:
        return {}

    def _chronic_changes(self, sex: str, age_from: float, age_to: float) -> tuple[np.ndarray, np.ndarray]:
        """The uncached `chronic_changes`."""
        middle = (age_from + age_to) / 2
        before, after = self.chronic_prevalence(sex, age_from), self.chronic_prevalence(sex, age_to)
        prevalence = self.chronic_prevalence(sex, middle)
        onset = np.clip(1.0 - (1.0 - after) / (1.0 - before), 0.0, 1.0 - 1e-12)
        # People with a condition that raises the death hazard die sooner, which would lower its
        # prevalence among the living; onset makes up for them: prevalence x excess death rate.
        band = min(int(np.searchsorted(self.mortality[:, 1], middle, side="right")), len(self.mortality) - 1)
        excess_deaths = self.mortality[band, 2] / self._death_normalisers[sex][band] * (self._chronic_hazard_ratios - 1.0)
        hazard = -np.log1p(-onset) + prevalence * excess_deaths * max(age_to - age_from, 0.0)
        factor = 1.0 + self._excess_risk @ prevalence
        remission = np.clip(1.0 - after / np.where(before > 0, before, 1.0), 0.0, 1.0)
        return hazard / factor, np.where(before > 0, remission, 0.0)

    @cached_property
    def _chronic_hazard_ratios(self) -> np.ndarray:
        return np.array([self.mortality_hazard_ratios.get(c.key, 1.0) for c in self.chronic])

    @cached_property
    def _death_normalisers(self) -> dict[str, np.ndarray]:
        middles = np.minimum((self.mortality[:, 0] + self.mortality[:, 1]) / 2, OPEN_BAND_END)
        return {sex: np.array([self.prevalence_factor(sex, age, self.mortality_hazard_ratios) for age in middles])
                for sex in ("F", "M")}

    def death_hazards(self, sex: str, active: set[str]) -> np.ndarray:
        """Annual death hazard per life-table band for someone with these active conditions (keys):
        the life table scaled by 1 + their excess hazard, over the population mean of that factor."""
        ratios = self.mortality_hazard_ratios
        excess = sum(ratios[key] - 1.0 for key in active if key in ratios)
        return self.mortality[:, 2] * (1.0 + excess) / self._death_normalisers[sex]

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
    def dose_schedule(self) -> list[tuple[float, str]]:
        """Every routine (non-seasonal) dose over a 120-year life as (age in days, code), in order."""
        lifetime = 120 * DAYS_PER_YEAR
        due = []
        for dose in (d for d in self.doses if d.season_uptake is None):
            age = dose.age_days
            while age <= lifetime:
                due.append((age, dose.code))
                if not dose.repeat_days:
                    break
                age += dose.repeat_days
        return sorted(due)

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

    def prevalence_knots(self, condition: str, sex: str) -> tuple[list[float], list[float]]:
        """The ages and values `prevalence_at` interpolates: each band's value at its middle (an
        open last band taken to end at 85, near the mean age of such bands), extended to the
        first band's lower age along the first segment's slope (flat for a single band, never
        below zero), and zero before it."""
        bands = [b for b in self.prevalence[condition] if b.sex in ("any", sex)]
        if not bands:
            return [0.0], [0.0]
        ages = [(b.age_min + max(b.age_min, min(b.age_max, OPEN_BAND_END))) / 2 for b in bands]
        values = [b.value for b in bands]
        start = values[0]
        if len(bands) > 1 and ages[1] > ages[0]:
            slope = (values[1] - values[0]) / (ages[1] - ages[0])
            start = min(max(values[0] - slope * (ages[0] - bands[0].age_min), 0.0), values[0])
        return [bands[0].age_min, *ages], [start, *values]

    def prevalence_at(self, condition: str, sex: str, age: float) -> float:
        """Prevalence at an exact age: linear between the knots of `prevalence_knots`, flat after
        the last one."""
        ages, values = self.prevalence_knots(condition, sex)
        return 0.0 if age < ages[0] else float(np.interp(age, ages, values))

    def episode_rate(self, condition: str, sex: str, age: float) -> float:
        """Acute episodes per person-year at this age."""
        for band in self.episode_rates[condition]:
            if band.covers(sex, age):
                return band.value / 1000.0
        return 0.0

    def value_distribution(self, code: str, sex: str, age: float, active: set[str]) -> ValueDistribution | None:
        """The distribution for a measurement: a condition-specific one if the patient has that
        condition, else the baseline; None when the measurement is not taken at this age."""
        baseline = None
        for dist in self.values.get(code, ()):
            if not dist.band.covers(sex, age):
                continue
            if dist.condition is None:
                baseline = baseline or dist
            elif dist.condition in active:
                return dist
        return baseline

    def growth_at(self, sex: str, age: float) -> tuple[float, float]:
        """Median height (cm) and weight (kg) at this age."""
        table = self.growth[sex]
        return float(np.interp(age, table[:, 0], table[:, 1])), float(np.interp(age, table[:, 0], table[:, 2]))


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files(__package__).joinpath(f"data/{name}").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def _number(value: str) -> float | None:
    return float(value) if value.strip() else None


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
            day_number(date.fromisoformat(r["first_date"])) if r["first_date"] else None,
        )
        for r in _rows("conditions.csv")
    }
    prevalence: dict[str, list[AgeBand]] = defaultdict(list)
    episode_rates: dict[str, list[AgeBand]] = defaultdict(list)
    for r in _rows("condition_rates.csv"):
        target = prevalence if r["measure"] == "prevalence" else episode_rates
        target[r["condition"]].append(_band(r, float(r["value"])))
    medications: dict[str, list[Medication]] = defaultdict(list)
    for r in _rows("medications.csv"):
        medications[r["condition"]].append(
            Medication(r["condition"], r["code"], r["group"], float(r["weight"]), _number(r["course_days"]), _number(r["refill_days"]))
        )
    monitoring: dict[str, list[Monitoring]] = defaultdict(list)
    for r in _rows("monitoring.csv"):
        monitoring[r["condition"]].append(Monitoring(r["condition"], r["code"], float(r["interval_days"])))
    measurements = {
        r["code"]: Measurement(r["code"], r["category"], vocabulary[r["code"]].unit or "1", int(r["decimals"]),
                               float(r["low"]), float(r["high"]))
        for r in _rows("measurements.csv")
    }
    values: dict[str, list[ValueDistribution]] = defaultdict(list)
    for r in _rows("measurement_values.csv"):
        values[r["code"]].append(
            ValueDistribution(r["condition"] or None, _band(r, 0.0), float(r["mean"]), float(r["sd"]))
        )
    growth = {
        sex: np.array([[float(r["age_years"]), float(r["height_cm"]), float(r["weight_kg"])]
                       for r in _rows("growth.csv") if r["sex"] == sex])
        for sex in ("F", "M")
    }
    doses = [Dose(r["code"], float(r["age_days"]), _number(r["repeat_days"]), _number(r["season_uptake"]))
             for r in _rows("immunizations.csv")]
    well = _rows("well_visits.csv")
    mortality = np.array([[float(r["age_min"]), float(r["age_max"]), float(r["deaths_per_100k"]) / 1e5]
                          for r in _rows("mortality.csv")])
    knowledge = Knowledge(
        conditions, dict(prevalence), dict(episode_rates), dict(medications), dict(monitoring), measurements,
        dict(values), growth, doses, [float(r["age_days"]) for r in well], float(well[-1]["repeat_days"]), mortality,
        _restrictions(conditions), _complications(),
        {r["condition"]: float(r["hazard_ratio"]) for r in _rows("mortality_hazards.csv")},
        [Screening(r["code"], r["sex"] or None, float(r["age_min"]), float(r["age_max"]), float(r["interval_years"]),
                   float(r["uptake"])) for r in _rows("screenings.csv")],
        [Allergy(r["code"], r["category"], r["criticality"], float(r["prevalence_child"]), float(r["prevalence_adult"]),
                 frozenset(filter(None, r["contraindicates"].split(";")))) for r in _rows("allergies.csv")],
    )
    _check_codes(knowledge)
    return knowledge


def _complications() -> nx.DiGraph:
    graph = nx.DiGraph()
    for r in _rows("complications.csv"):
        graph.add_edge(r["condition"], r["complication"], relative_risk=float(r["relative_risk"]))
    if not nx.is_directed_acyclic_graph(graph):
        raise ValueError(f"complications.csv: the complication links form a cycle: {nx.find_cycle(graph)}")
    return graph


def _restrictions(conditions: dict[str, Condition]) -> dict[str, Restriction]:
    icd10cm = {c.code: c.icd10cm for c in conditions.values()}
    restrictions = {}
    for r in _rows("restrictions.csv"):
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
    unknown = sorted({c for c in codes if c not in vocabulary})
    if unknown:
        raise ValueError(f"knowledge tables use codes missing from the vocabulary: {', '.join(unknown)}")
    named = set(knowledge.prevalence) | set(knowledge.episode_rates) | set(knowledge.medications) | set(knowledge.monitoring)
    named |= {d.condition for ds in knowledge.values.values() for d in ds if d.condition}
    named |= set(knowledge.complications) | set(knowledge.mortality_hazard_ratios)
    stray = sorted(named - set(knowledge.conditions))
    if stray:
        raise ValueError(f"knowledge tables name conditions not in conditions.csv: {', '.join(stray)}")
