"""Who the simulated patients are: sex, birth date and (from the life table) date of death.

Patient `i` of a scenario draws everything from its own random stream, seeded by (seed, i), so a
patient is the same whichever chunk, process or machine simulates it.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from trajsim.clock import DAYS_PER_YEAR, day_number
from trajsim.engine.draws import pick
from trajsim.engine.source import PatientState
from trajsim.knowledge import Knowledge
from trajsim.model import model_folder
from trajsim.model.population import PopulationSummary, read_summary
from trajsim.scenario import Population, Scenario

SMOKING_STREAM = 1  # SeedSequence([seed, index, SMOKING_STREAM]): the smoking history's own draws


def patient_rng(seed: int, index: int) -> np.random.Generator:
    """The independent random stream of patient `index` under `seed`."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def draw_sex_and_age(population: Population, rng: np.random.Generator) -> tuple[str, float]:
    """Sex and age in years of one person of the population, from its female fraction and age mix:
    the draws every simulated patient starts with, whether a cohort member or an ED arrival."""
    sex = "F" if rng.random() < population.female_fraction else "M"
    weights = np.array([g.weight for g in population.age_mix])
    group = population.age_mix[pick(rng, weights / weights.sum())]
    return sex, float(rng.uniform(group.min, group.max))


def draw_patient(scenario: Scenario, index: int, knowledge: Knowledge) -> PatientState:
    """Patient number `index` (0-based) of the scenario's cohort."""
    rng = patient_rng(scenario.seed, index)
    if scenario.population.drawn_from == "model":
        sex, birth_day, entry_day, end_day = model_population(scenario.model).draw(rng)
    else:
        sex, birth_day, entry_day, end_day = _draw_from_age_mix(scenario, rng)
    death_day = draw_death_day(knowledge, rng, sex, birth_day, entry_day, end_day)
    height_z, weight_factor = rng.normal(), float(np.exp(rng.normal(0, 0.12)))
    # a stream of its own, so a smoking history changes no other draw of the patient
    smoking = np.random.default_rng(np.random.SeedSequence([scenario.seed, index, SMOKING_STREAM])).random(2)
    smoking_draws = (float(smoking[0]), float(smoking[1]))
    return PatientState(index + 1, sex, float(birth_day), float(entry_day), end_day, death_day, rng,
                        height_z=height_z, weight_factor=weight_factor, smoking_draws=smoking_draws,
                        record_starts_at_entry=scenario.population.drawn_from == "model")


def _draw_from_age_mix(scenario: Scenario, rng: np.random.Generator) -> tuple[str, float, float, float]:
    """Sex, birth, entry and end day from the scenario's age mix and period."""
    period = scenario.period
    sex, age_at_end = draw_sex_and_age(scenario.population, rng)
    end_day = day_number(period.end)
    birth_day = math.floor(end_day - age_at_end * DAYS_PER_YEAR)
    entry_day = birth_day if period.start == "birth" else max(birth_day, day_number(period.start))
    return sex, float(birth_day), float(entry_day), end_day


@cache
def model_population(model: str) -> PopulationSummary:
    """The population summary saved with the trained model a scenario names (validated to exist)."""
    summary = read_summary(model_folder(model))
    assert summary is not None, "Scenario validation guarantees a population summary"
    return summary


def draw_death_day(knowledge: Knowledge, rng: np.random.Generator, sex: str, birth_day: float,
                   from_day: float, end_day: float, active: set[str] = frozenset()) -> float | None:
    """Day of death after `from_day` under the life table's piecewise-constant hazard, scaled for the
    active conditions (keys); None if alive at `end_day`. Redrawing from the current day whenever the
    conditions change is exact because the residual of an exponential clock is again exponential."""
    hazards = knowledge.death_hazards(sex, active)
    target = rng.exponential()  # cumulative hazard at which death occurs
    day = from_day
    for (age_min, age_max, _), hazard in zip(knowledge.mortality, hazards):
        band_end = birth_day + age_max * DAYS_PER_YEAR
        if band_end <= day:
            continue
        span = min(band_end, end_day) - day
        if target <= hazard * span / DAYS_PER_YEAR:
            return float(day + target / hazard * DAYS_PER_YEAR)
        target -= hazard * span / DAYS_PER_YEAR
        day += span
        if day >= end_day:
            break
    return None
