"""Conditions that cluster: the prevalence of one is higher in people who have another
(`data/comorbidity.csv`), and lower in those who do not, so that its population prevalence is kept."""

from __future__ import annotations

from functools import cache

from trajsim.knowledge.tables import Knowledge, keyed_pairs


@cache
def comorbidities() -> dict[str, tuple[tuple[str, float], ...]]:
    """Condition key -> (condition it clusters with, ratio of its prevalence among those who have it)."""
    return keyed_pairs("comorbidity.csv", "condition", "given", "prevalence_ratio")


def prevalence_given(knowledge: Knowledge, key: str, sex: str, age: float, present: set[str]) -> float:
    """The prevalence of `key` at this age for someone with the conditions (keys) `present`: the
    population prevalence times the ratio for each condition it clusters with that is present, and
    times (1 - h r) / (1 - h) for each that is absent (h its prevalence), which keeps the mean."""
    prevalence = knowledge.prevalence_at(key, sex, age)
    for given, ratio in comorbidities().get(key, ()):
        h = knowledge.prevalence_at(given, sex, age)
        prevalence *= ratio if given in present else max(1 - h * ratio, 0.0) / (1 - h) if h < 1 else 1.0
    return min(prevalence, 1.0)
