"""The rules a sampler can enforce before a code is drawn: which codes each patient may receive next."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from trajsim.clock import DAYS_PER_YEAR
from trajsim.knowledge import Knowledge, load_knowledge
from trajsim.knowledge.lifecycles import lifecycles

if TYPE_CHECKING:  # the mask reads a patient's state; checking tables must not load the engine
    from trajsim.engine.source import PatientState

# The rules a next-code mask can enforce; the others concern values and visit timing, which the
# engine guarantees itself.
MASK_RULES = ("sex_specific_code", "age_specific_code", "before_birth", "after_death",
              "medication_without_indication", "medication_contraindicated_by_allergy", "duplicate_active_condition",
              "code_before_valid_date", "onset_age_outside_window")


class RuleMask:
    """Which of a fixed list of candidate codes (e.g. a tokenizer's vocabulary) each patient may
    receive next. Per-code attributes are tabulated once, so a batch's mask is a few numpy ops.

    Codes the knowledge base says nothing about (structural or time tokens) are always allowed
    while the patient is alive."""

    def __init__(self, codes: Sequence[str], knowledge: Knowledge | None = None,
                 indications: Mapping[str, Sequence[str]] | None = None) -> None:
        """`indications`: drug -> the conditions it may be ordered for (`therapy.drug_indications`,
        a trained model's); a drug is judged only if the knowledge lists it (None: as listed)."""
        knowledge = knowledge or load_knowledge()
        self.codes = list(codes)
        conditions = sorted({code for c in knowledge.conditions.values() for code in (c.code, c.icd10cm)})
        self._condition_column = {code: j for j, code in enumerate(conditions)}
        restrictions = [knowledge.restrictions.get(code) for code in self.codes]
        self._sex_allowed = np.array([[r is None or r.sex in (None, sex) for r in restrictions] for sex in ("F", "M")])
        self._age_min = np.array([r.age_min if r else -math.inf for r in restrictions])
        self._age_max = np.array([r.age_max if r else math.inf for r in restrictions])
        lives = [lifecycles(knowledge).get(code) for code in self.codes]
        episodic = np.array([life is not None and life.episodic for life in lives])
        # Column of each chronic code in the active-condition matrix; -1 points at an always-False column.
        # (An acute episode's end is the engine's EpisodeKeeper's to date, so a model writing ahead cannot
        # know when it ends: the keeper, not the mask, keeps it from being diagnosed again meanwhile.)
        self._chronic_column = np.array([self._condition_column[code] if code in knowledge.chronic_codes else -1
                                         for code in self.codes])
        # Lifecycles: no code before it existed; a first diagnosis (every episode of an acute condition)
        # only at the ages the condition starts at.
        self._valid_from = np.array([life.valid_from if life and life.valid_from is not None else -math.inf
                                     for life in lives])
        self._onset_min = np.array([life.onset_age_min if life else -math.inf for life in lives])
        self._onset_max = np.array([life.onset_age_max if life else math.inf for life in lives])
        self._first_age_min = np.maximum(self._age_min, self._onset_min)  # ages a first diagnosis may be made at
        self._first_age_max = np.minimum(self._age_max, self._onset_max)
        # the always-False column for episodic codes (every episode is an onset) and codes of no condition
        self._onset_column = np.where(episodic, -1, np.array([self._condition_column.get(code, -1) for code in self.codes]))
        # Which known conditions indicate each code, and which allergies contraindicate it; a patient's
        # few conditions and allergies pick their rows, so a mask never multiplies whole matrices.
        self._indicates = np.zeros((len(conditions) + 1, len(self.codes)), dtype=bool)  # + the all-False column
        indications = knowledge.indications if indications is None else indications
        for i, code in enumerate(self.codes):
            for condition in indications.get(code, ()) if code in knowledge.indications else ():
                self._indicates[self._condition_column[condition], i] = True
        self._needs_no_indication = ~self._indicates.any(axis=0)
        allergies = sorted({a.code for a in knowledge.allergies})
        self._allergy_column = {code: j for j, code in enumerate(allergies)}
        self._contraindicated = np.array([[allergy in knowledge.contraindications.get(code, ()) for code in self.codes]
                                          for allergy in allergies], dtype=bool).reshape(len(allergies), len(self.codes))

    def active_conditions(self, patients: Sequence[PatientState], days: np.ndarray,
                          ever: bool = False) -> np.ndarray:
        """Bool matrix patients x known condition codes (active at `days`, or `ever` recorded), plus a
        trailing all-False column."""
        active = np.zeros((len(patients), len(self._condition_column) + 1), dtype=bool)
        for row, (patient, day) in enumerate(zip(patients, days)):
            for code, end in patient.conditions.items():
                column = self._condition_column.get(code)
                if column is not None and (ever or end > day):
                    active[row, column] = True
        return active

    def allowed(self, patients: Sequence[PatientState], day: float | Sequence[float],
                until: float | Sequence[float] | None = None) -> np.ndarray:
        """Bool array patients x codes: True where the code may be recorded for that patient at `day`
        (one day for all, or one per patient), and at `until` too when given (a fact that may fall
        anywhere in between)."""
        allowed = self._sex_allowed[[0 if p.sex == "F" else 1 for p in patients]]
        births = np.array([p.birth_day for p in patients])
        alive_from, alive_to = births, np.array([math.inf if p.death_day is None else p.death_day for p in patients])
        # a condition not yet diagnosed may start only within its onset ages
        diagnosed = self.active_conditions(patients, births, ever=True)[:, self._onset_column]
        youngest = np.where(diagnosed, self._age_min, self._first_age_min)
        oldest = np.where(diagnosed, self._age_max, self._first_age_max)
        for row, patient in enumerate(patients):
            if patient.allergies:
                allowed[row] &= ~self._contraindicated[[self._allergy_column[a] for a in patient.allergies]].any(axis=0)
        for moment in (day,) if until is None else (day, until):
            days = np.asarray(moment, dtype=float)
            days = np.full(len(patients), float(days)) if days.ndim == 0 else days
            ages = (days - births)[:, None] / DAYS_PER_YEAR
            allowed &= (ages >= youngest) & (ages < oldest)
            allowed &= days[:, None] >= self._valid_from
            allowed &= ((days >= alive_from) & (days <= alive_to))[:, None]
            active = self.active_conditions(patients, days)
            allowed &= ~active[:, self._chronic_column]
            indicated = np.zeros_like(allowed)
            for row in np.flatnonzero(active.any(axis=1)):
                indicated[row] = self._indicates[active[row]].any(axis=0)
            allowed &= indicated | self._needs_no_indication
        return allowed
