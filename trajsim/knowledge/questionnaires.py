"""Screening questionnaires and how their scores relate to the condition they screen for, from the
validation studies cited in `data/questionnaires.csv` (PHQ-2 and PHQ-9 for depression).

A patient with the condition scores at or above the instrument's cutoff with its sensitivity, one
without it with one minus its specificity, so a screened cohort shows the published accuracy. Within
each side of the cutoff scores fall off away from it toward the healthy end (most people without
depression score 0 or 1; most with it score near the cutoff): the square of a uniform draw places
the score, a shape assumed, not measured. A longer instrument that contains a shorter one (PHQ-9
holds the PHQ-2's two items) scores at least the shorter one's score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from trajsim.knowledge.tables import DATA, read_table


@dataclass(frozen=True)
class Questionnaire:
    """One instrument: the screening procedure it answers, its total score's code, range
    0-`max_score`, the cutoff of a positive screen, the condition (conditions.csv key) it screens for
    and the instrument it follows when that one is positive."""

    name: str
    screening: str
    code: str
    max_score: int
    cutoff: int
    condition: str
    positive_with: float  # sensitivity
    positive_without: float  # 1 - specificity
    asked_after: str | None

    def score(self, rng: np.random.Generator, has_condition: bool, at_least: int = 0) -> int:
        """A total score for a patient with or without the condition, not below `at_least` (the
        score of the items it shares with an instrument already answered)."""
        positive = rng.random() < (self.positive_with if has_condition else self.positive_without)
        if positive:
            score = self.cutoff + math.floor(rng.random() ** 2 * (self.max_score - self.cutoff + 1))
        else:
            score = math.floor(rng.random() ** 2 * self.cutoff)
        return min(max(score, at_least), self.max_score)


@cache
def questionnaires() -> tuple[Questionnaire, ...]:
    """The instruments of `data/questionnaires.csv` in table order (a follow-up after the one it follows)."""
    rows = read_table(DATA.joinpath("questionnaires.csv"), ("instrument", "screening", "code", "max_score", "cutoff", "condition",
                                                             "positive_with", "positive_without", "asked_after"))
    return tuple(Questionnaire(r["instrument"], r["screening"], r["code"], int(r["max_score"]), int(r["cutoff"]), r["condition"],
                               float(r["positive_with"]), float(r["positive_without"]), r["asked_after"] or None)
                 for r in rows)
