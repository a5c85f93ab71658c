"""Grow a synthetic arm batch by batch until it reaches the target size.

The scenario is first conditioned on what the criteria make certain, so fewer simulated patients are
thrown away: the age mix is cut to the ages that can be eligible in the index window, the sex mix
to the eligible sex, and the period starts early enough for the longest finite look-back. What
cannot be conditioned (diagnoses, lab values) is screened. Generation stops as soon as even an
optimistic yield (the upper 97.5% Clopper-Pearson bound) could not fill the arm within
`trial.max_patients`, so impossible criteria end quickly with a message instead of a long run.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from datetime import time as midnight
from datetime import timedelta
from functools import partial

import polars as pl
from scipy.stats import beta

from trajsim.clock import DAYS_PER_YEAR
from trajsim.engine import TrajectorySource
from trajsim.events import events_frame
from trajsim.runner import Progress, Shard, ShardRunner, plan_shards, simulate_shard
from trajsim.scenario import Scenario, Trial, with_overrides
from trajsim.trial import TrialError
from trajsim.trial.arm import build_arm
from trajsim.trial.criteria import Descendants, attrition


@dataclass
class SyntheticArm:
    """The arm table, the events of its patients, and what it took to get them."""

    table: pl.DataFrame
    events: pl.DataFrame
    scenario: Scenario  # as conditioned and simulated
    screened: int
    seconds: float
    attrition: dict[str, int]  # simulated patients left after each eligibility step, then the target cut


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


def screen_batch(scenario: Scenario, shard: Shard, source: TrajectorySource, on_progress: Progress | None = None,
                 descendants: Descendants = None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Simulate the shard's patients of the (conditioned) scenario; returns the arm rows among them,
    the events of those arm patients and the shard's attrition."""
    data_end = datetime.combine(scenario.period.end, midnight())
    events = events_frame(e for record in simulate_shard(scenario, shard, source, on_progress) for e in record.events)
    trial = require_trial(scenario)
    table = build_arm(events, trial, data_end, descendants)
    flow = attrition(events, trial, descendants)
    return table, events.filter(pl.col("subject_id").is_in(table["subject_id"].implode())), flow


def synthetic_arm(scenario: Scenario, source: TrajectorySource | None = None, descendants: Descendants = None,
                  on_batch: Callable[[int, int], None] | None = None, workers: int = 1, backend: str = "local",
                  ray_address: str | None = None) -> SyntheticArm:
    """The first `trial.target_size` eligible simulated patients (by subject id), or TrialError saying
    how far generation got and what to change. Batches run where `trajsim.runner` puts them: in this
    process, a process pool (`workers` > 1) or Ray (`backend="ray"`)."""
    started = time.perf_counter()
    trial = require_trial(scenario)
    narrowed = conditioned(scenario)
    tables: list[pl.DataFrame] = []
    kept: list[pl.DataFrame] = []
    screened = found = 0
    flow: Counter[str] = Counter()
    runner = ShardRunner(narrowed, source, backend, workers, ray_address)
    batches = plan_shards(trial.max_patients, trial.batch_size, grid=1)
    # In patient order whatever the backend and number of workers, so the arm does not depend on them.
    results = runner.run(partial(screen_batch, descendants=descendants), batches, in_order=True)
    try:
        for batch, (table, events, batch_flow) in zip(batches, results):
            flow.update(batch_flow)
            table = table.head(trial.target_size - found)
            tables.append(table)
            kept.append(events.filter(pl.col("subject_id").is_in(table["subject_id"].implode())))
            screened += batch.count
            found += table.height
            if on_batch is not None:
                on_batch(screened, found)
            if found >= trial.target_size or hopeless(found, screened, trial):
                break
    finally:
        results.close()
    if found < trial.target_size:
        share = f"{found} of {screened} simulated patients ({100 * found / screened:.2g}%)"
        raise TrialError(f"{scenario.name}: only {share} met the trial criteria; at that yield the target of "
                         f"{trial.target_size} would need more than trial.max_patients = {trial.max_patients}, so "
                         "generation stopped; loosen the criteria or raise trial.max_patients")
    flow[f"first {trial.target_size:,} eligible (the target size)"] = found
    return SyntheticArm(pl.concat(tables), pl.concat(kept), narrowed, screened, time.perf_counter() - started,
                        dict(flow))
