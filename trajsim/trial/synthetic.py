"""Grow a synthetic arm batch by batch until it reaches the target size.

The scenario is first conditioned on what the criteria make certain, so fewer simulated patients are
thrown away: the age mix is cut to the ages that can be eligible in the index window, the sex mix
to the eligible sex, and the period starts early enough for the longest finite look-back. What
cannot be conditioned (diagnoses, lab values) is screened. Generation stops as soon as even an
optimistic yield (the upper 97.5% Clopper-Pearson bound) could not fill the arm within
`trial.max_patients`, so impossible criteria end quickly with a message instead of a long run.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from datetime import time as midnight
from datetime import timedelta
from functools import cache

import polars as pl
from scipy.stats import beta

from trajsim.clock import DAYS_PER_YEAR
from trajsim.engine import TrajectorySource, simulate
from trajsim.events import events_frame
from trajsim.runner import scenario_source
from trajsim.scenario import Scenario, with_overrides
from trajsim.trial import TrialError
from trajsim.trial.arm import build_arm
from trajsim.trial.criteria import Descendants
from trajsim.trial.spec import Trial


@dataclass
class SyntheticArm:
    """The arm table, the events of its patients, and what it took to get them."""

    table: pl.DataFrame
    events: pl.DataFrame
    scenario: Scenario  # as conditioned and simulated
    screened: int
    seconds: float


def conditioned(scenario: Scenario) -> Scenario:
    """The scenario narrowed to patients who can meet the trial's age, sex and look-back criteria."""
    trial = require_trial(scenario)
    window, period = trial.index.window, scenario.period
    if window.end > period.end:
        raise TrialError(f"trial.index.window ends {window.end}, after period.end {period.end}: "
                         "the simulation would not reach the whole window")
    # Age on the period's end date (how age_mix is defined) of someone aged trial.age at index.
    youngest = trial.age.min + (period.end - window.end).days / DAYS_PER_YEAR
    oldest = trial.age.max + (period.end - window.start).days / DAYS_PER_YEAR
    groups = []
    for group in scenario.population.age_mix:
        low, high = max(group.min, math.floor(youngest)), min(group.max, math.ceil(oldest))
        if high > low:
            groups.append({"min": low, "max": high, "weight": group.weight * (high - low) / (group.max - group.min)})
    if not groups:
        raise TrialError(f"no group of population.age_mix reaches ages {trial.age.min:g}-{trial.age.max:g} in the "
                         f"index window ({window.start} to {window.end}); widen the age mix or trial.age")
    changes: dict[str, object] = {"population.age_mix": groups, "population.size": trial.max_patients}
    if trial.sex != "any":
        changes["population.female_fraction"] = 1.0 if trial.sex == "F" else 0.0
    lookbacks = [c.lookback_days for c in (*trial.require, *trial.exclude) if c.lookback_days is not None]
    lookbacks += [e.baseline_days for e in trial.endpoints if e.kind == "lab_change"]
    if period.start != "birth" and lookbacks:
        changes["period.start"] = min(period.start, window.start - timedelta(days=max(lookbacks)))
    return with_overrides(scenario, "trial conditioning", **changes)


def require_trial(scenario: Scenario) -> Trial:
    if scenario.trial is None:
        raise TrialError(f"scenario {scenario.name!r} has no trial section; add a `trial` table (see docs/trial.md)")
    return scenario.trial


def hopeless(found: int, screened: int, trial: Trial) -> bool:
    """True when even the optimistic yield would need more than max_patients to fill the arm."""
    optimistic = float(beta.ppf(0.975, found + 1, max(screened - found, 1)))
    return trial.target_size / optimistic > trial.max_patients


def screen_batch(scenario: Scenario, first: int, count: int, source: TrajectorySource,
                 descendants: Descendants = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Simulate patients `first` .. `first + count - 1` of the (conditioned) scenario; returns the arm
    rows among them and the events of those arm patients."""
    data_end = datetime.combine(scenario.period.end, midnight())
    events = events_frame(e for record in simulate(scenario, source, first=first, count=count) for e in record.events)
    table = build_arm(events, require_trial(scenario), data_end, descendants)
    return table, events.filter(pl.col("subject_id").is_in(table["subject_id"].implode()))


@cache
def _worker_source(scenario_json: str) -> TrajectorySource:
    return scenario_source(Scenario.model_validate_json(scenario_json))


def _screen_in_worker(scenario_json: str, first: int, count: int,
                      descendants: Descendants) -> tuple[pl.DataFrame, pl.DataFrame]:
    return screen_batch(Scenario.model_validate_json(scenario_json), first, count, _worker_source(scenario_json),
                        descendants)


def screened_batches(scenario: Scenario, source: TrajectorySource | None, descendants: Descendants,
                     workers: int) -> Iterator[tuple[int, pl.DataFrame, pl.DataFrame]]:
    """(patients screened, arm rows, their events) per batch, in patient order whatever the number of
    workers, so the arm does not depend on it. Up to `workers` batches run ahead in a process pool."""
    trial = require_trial(scenario)
    plan = [(first, min(trial.batch_size, trial.max_patients - first))
            for first in range(0, trial.max_patients, trial.batch_size)]
    if workers == 1:
        source = source or scenario_source(scenario)
        for first, count in plan:
            yield count, *screen_batch(scenario, first, count, source, descendants)
        return
    if source is not None:
        raise ValueError("a custom trajectory source runs only in this process (workers=1)")
    # spawn, not fork: torch and SimPy state must not be inherited half-initialised
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    scenario_json = scenario.model_dump_json()
    try:
        ahead = deque(pool.submit(_screen_in_worker, scenario_json, first, count, descendants)
                      for first, count in plan[:workers])
        for position, (_, count) in enumerate(plan):
            table, events = ahead.popleft().result()
            if position + workers < len(plan):
                first, more = plan[position + workers]
                ahead.append(pool.submit(_screen_in_worker, scenario_json, first, more, descendants))
            yield count, table, events
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def synthetic_arm(scenario: Scenario, source: TrajectorySource | None = None, descendants: Descendants = None,
                  on_batch: Callable[[int, int], None] | None = None, workers: int = 1) -> SyntheticArm:
    """The first `trial.target_size` eligible simulated patients (by subject id), or TrialError saying
    how far generation got and what to change. `workers` > 1 screens batches in a process pool."""
    started = time.perf_counter()
    trial = require_trial(scenario)
    narrowed = conditioned(scenario)
    tables: list[pl.DataFrame] = []
    kept: list[pl.DataFrame] = []
    screened = found = 0
    batches = screened_batches(narrowed, source, descendants, workers)
    try:
        for count, table, events in batches:
            table = table.head(trial.target_size - found)
            tables.append(table)
            kept.append(events.filter(pl.col("subject_id").is_in(table["subject_id"].implode())))
            screened += count
            found += table.height
            if on_batch is not None:
                on_batch(screened, found)
            if found >= trial.target_size or hopeless(found, screened, trial):
                break
    finally:
        batches.close()
    if found < trial.target_size:
        share = f"{found} of {screened} simulated patients ({100 * found / screened:.2g}%)"
        raise TrialError(f"{scenario.name}: only {share} met the trial criteria; at that yield the target of "
                         f"{trial.target_size} would need more than trial.max_patients = {trial.max_patients}, so "
                         "generation stopped; loosen the criteria or raise trial.max_patients")
    return SyntheticArm(pl.concat(tables), pl.concat(kept), narrowed, screened, time.perf_counter() - started)
