"""The maths that turns the cited population figures into one person's chances and values.

The tables say what is true of a population (prevalence by age band, episode rates, a life table,
relative risks, lab distributions, growth medians); the engine needs a person's onset and death
hazards between two ages and the distribution a measurement is drawn from. `Epidemiology` holds
the figures those calculations read and does them, so the loaders in `tables.py` stay plain data.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Generic, TypeVar

import networkx as nx
import numpy as np

if TYPE_CHECKING:
    from trajsim.knowledge.tables import AgeBand, Condition, ValueDistribution

OPEN_BAND_END = 85.0


def interpolate(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """`np.interp(x, xs, ys)` at one point, to the bit, without numpy's per-call cost (the engine
    asks a few knots at a time, at every visit): linear between the knots around `x` (the last of
    equal knots), the end values beyond them."""
    if x < xs[0]:
        return float(ys[0])
    if x >= xs[-1]:
        return float(ys[-1])
    j = bisect_right(xs, x) - 1
    return float((ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]) * (x - xs[j]) + ys[j])


Item, Summary = TypeVar("Item"), TypeVar("Summary")


class AgeSegments(Generic[Summary]):
    """A function of age that changes only where an age band starts or ends, worked out once for
    each stretch of ages between two such edges and found by bisection: the engine asks the tables'
    bands at every visit."""

    def __init__(self, edges: Iterable[float], value_at: Callable[[float], Summary]) -> None:
        """`value_at(age)` may change only at `edges`, from the edge on (bands cover [start, end))."""
        self.edges = sorted(set(edges))
        self.summaries = [value_at(start) for start in (-math.inf, *self.edges)]

    def at(self, age: float) -> Summary:
        return self.summaries[bisect_right(self.edges, age)]


def band_segments(bands: Iterable[tuple[float, float, Item]], summary: Callable[[list[Item]], Summary]) -> AgeSegments[Summary]:
    """What age bands (age_min, age_max, item), in table order, say at any age: `summary` of the
    items of the bands covering it, in that order."""
    bands = list(bands)
    return AgeSegments((edge for low, high, _ in bands for edge in (low, high)),
                       lambda age: summary([item for low, high, item in bands if low <= age < high]))


@dataclass(frozen=True)
class Epidemiology:
    """The population figures and the per-person hazards, prevalences and values computed from them."""

    conditions: dict[str, Condition]
    prevalence: dict[str, list[AgeBand]]
    episode_rates: dict[str, list[AgeBand]]
    values: dict[str, list[ValueDistribution]]
    growth: dict[str, np.ndarray]  # sex -> rows of (age_years, height_cm, weight_kg)
    mortality: np.ndarray  # rows of (age_min, age_max, annual hazard)
    complications: nx.DiGraph  # condition -> complication, edge attribute relative_risk
    mortality_hazard_ratios: dict[str, float]  # condition -> all-cause hazard ratio

    def prevalence_factor(self, sex: str, age: float, ratios: dict[str, float]) -> float:
        """Mean of 1 + sum of (ratio - 1) over the conditions a person of this age has, by prevalence.

        Excess risks are additive: a person with conditions C has risk baseline * (1 + sum over C of
        (ratio - 1)), and baseline = population figure / this factor keeps the population figure."""
        return 1.0 + sum(self.prevalence_at(key, sex, age) * (ratio - 1.0) for key, ratio in ratios.items()
                         if key in self.prevalence)

    def risk_normaliser(self, condition: str, sex: str, age: float) -> float:
        """`prevalence_factor` of the risk factors of `condition` (complications.csv) at this age,
        rounded to a whole year (prevalences change little within one): what a population rate is
        divided by to give the rate of someone with none of them."""
        key = (condition, sex, round(age))
        if key not in self._risk_normalisers:
            self._risk_normalisers[key] = self.prevalence_factor(sex, float(key[2]), self.risk_ratios.get(condition, {}))
        return self._risk_normalisers[key]

    @cached_property
    def _risk_normalisers(self) -> dict[tuple[str, str, int], float]:
        return {}

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
    def _prevalence_steps(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The grid by half-year (rows) and its rise to the next half-year, contiguous per age."""
        return {sex: (np.ascontiguousarray(grid.T), np.ascontiguousarray(np.diff(grid, axis=1).T))
                for sex, grid in self._prevalence_grid.items()}

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
        values, rises = self._prevalence_steps[sex]
        x = min(max(age, 0.0), 120.0) * 2
        i = min(int(x), len(values) - 2)
        return values[i] + rises[i] * (x - i)

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
        onset = np.minimum(np.maximum(1.0 - (1.0 - after) / (1.0 - before), 0.0), 1.0 - 1e-12)  # np.clip, cheaper
        # People with a condition that raises the death hazard die sooner, which would lower its
        # prevalence among the living; onset makes up for them: prevalence x excess death rate.
        band = min(bisect_right(self._band_ends, middle), len(self.mortality) - 1)
        hazard = -np.log1p(-onset) + prevalence * self._excess_deaths[sex][band] * max(age_to - age_from, 0.0)
        factor = 1.0 + self._excess_risk @ prevalence
        present = before > 0
        remission = np.minimum(np.maximum(1.0 - after / np.where(present, before, 1.0), 0.0), 1.0)
        return hazard / factor, np.where(present, remission, 0.0)

    @cached_property
    def _excess_deaths(self) -> dict[str, list[np.ndarray]]:
        """By sex and life-table band, each chronic condition's excess death rate over the population's."""
        return {sex: [self.mortality[band, 2] / normalisers[band] * self._chronic_excess_hazards
                      for band in range(len(self.mortality))] for sex, normalisers in self._death_normalisers.items()}

    @cached_property
    def _band_ends(self) -> list[float]:
        """The upper ages of the life table's bands."""
        return self.mortality[:, 1].tolist()

    @cached_property
    def _chronic_excess_hazards(self) -> np.ndarray:
        """Each chronic condition's death hazard ratio minus 1."""
        return np.array([self.mortality_hazard_ratios.get(c.key, 1.0) for c in self.chronic]) - 1.0

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

    def prevalence_knots(self, condition: str, sex: str) -> tuple[list[float], list[float]]:
        """The knots `prevalence_at` interpolates (see `_prevalence_knots`), computed once."""
        key = (condition, sex)
        if key not in self._knots:
            self._knots[key] = self._prevalence_knots(condition, sex)
        return self._knots[key]

    @cached_property
    def _knots(self) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
        return {}

    def _prevalence_knots(self, condition: str, sex: str) -> tuple[list[float], list[float]]:
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
        return 0.0 if age < ages[0] else interpolate(age, ages, values)

    def episode_rate(self, condition: str, sex: str, age: float) -> float:
        """Acute episodes per person-year at this age (the first band of the table covering it)."""
        key = (condition, sex)
        if key not in self._episode_segments:
            self._episode_segments[key] = band_segments(
                ((b.age_min, b.age_max, b.value) for b in self.episode_rates[condition] if b.sex in ("any", sex)),
                lambda values: values[0] / 1000.0 if values else 0.0)
        return self._episode_segments[key].at(age)

    @cached_property
    def _episode_segments(self) -> dict[tuple[str, str], AgeSegments[float]]:
        return {}

    def value_distribution(self, code: str, sex: str, age: float, active: set[str]) -> ValueDistribution | None:
        """The distribution for a measurement: a condition-specific one if the patient has that
        condition (the first in table order), else the baseline (the first without a condition);
        None when the measurement is not taken at this age."""
        by_code = self._values_by_sex.get(sex) or self._values_of(sex)
        segments = by_code.get(code)
        if segments is None:
            return None
        baseline, specific = segments.summaries[bisect_right(segments.edges, age)]  # `at`, inline: asked most
        for condition, dist in specific:
            if condition in active:
                return dist
        return baseline

    def _values_of(self, sex: str) -> dict[str, AgeSegments[tuple[ValueDistribution | None,
                                                                   tuple[tuple[str, ValueDistribution], ...]]]]:
        """By measurement, the distributions `value_distribution` may pick for this sex at any age:
        the baseline and the condition-specific ones in table order (tabulated once: it is asked at
        every measurement)."""
        if sex not in self._values_by_sex:
            self._values_by_sex[sex] = {code: band_segments(((d.band.age_min, d.band.age_max, d) for d in dists
                                                           if d.band.sex in ("any", sex)), _baseline_and_specific)
                                        for code, dists in self.values.items()}
        return self._values_by_sex[sex]

    @cached_property
    def _values_by_sex(self) -> dict[str, dict[str, AgeSegments]]:
        return {}

    def growth_at(self, sex: str, age: float) -> tuple[float, float]:
        """Median height (cm) and weight (kg) at this age."""
        ages, heights, weights = self._growth_columns[sex]
        return interpolate(age, ages, heights), interpolate(age, ages, weights)

    @cached_property
    def _growth_columns(self) -> dict[str, tuple[tuple[float, ...], ...]]:
        """Each sex's growth table as columns of plain floats (ages, heights, weights)."""
        return {sex: tuple(tuple(column) for column in table.T.tolist()) for sex, table in self.growth.items()}


def _baseline_and_specific(dists: list[ValueDistribution]) -> tuple[ValueDistribution | None,
                                                                    tuple[tuple[str, ValueDistribution], ...]]:
    """The first distribution without a condition, and the (condition, distribution) of the others."""
    baseline = next((d for d in dists if d.condition is None), None)
    return baseline, tuple((d.condition, d) for d in dists if d.condition is not None)
