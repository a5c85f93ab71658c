"""Generate a scenario's cohort to disk: engine -> events -> FHIR, streamed patient by patient and
shard by shard, so memory stays flat however large the cohort. Shards run wherever `trajsim.runner`
puts them; what they write, and where, is `trajsim.output`'s.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from trajsim.engine import TrajectorySource
from trajsim.output import CohortOutput, OutputSummary
from trajsim.runner import DEFAULT_SHARD_SIZE, Progress, Shard, ShardRunner, plan_shards, simulate_shard
from trajsim.scenario import Scenario


def generate(scenario: Scenario, out_dir: Path | None = None, source: TrajectorySource | None = None,
             on_progress: Progress | None = None, backend: str = "local", workers: int = 1,
             shard_size: int | None = None, ray_address: str | None = None) -> OutputSummary:
    """Simulate the whole cohort and write every requested format; returns the run's summary. An
    interrupted run of the same scenario into the same folder redoes only its unfinished shards.

    `backend` "local" runs shards in this process (workers=1) or a process pool; "ray" runs them as
    Ray tasks. A custom `source` object runs only in this process."""
    started = time.perf_counter()
    out_dir = Path(out_dir or scenario.output.dir)
    shard_size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
    shards = plan_shards(scenario.population.size, shard_size)
    runner = ShardRunner(scenario, source, backend, workers, ray_address)
    output = CohortOutput(out_dir, scenario)
    finished = output.resume(shard_size)
    if on_progress is not None and finished:
        on_progress(sum(done.patients for done in finished.values()))
    pending = [shard for shard in shards if shard.index not in finished]
    written = runner.run(partial(write_shard, out_dir), pending, on_progress)
    summary = output.finish([*finished.values(), *written])
    summary.seconds = time.perf_counter() - started
    return summary


def write_shard(out_dir: Path, scenario: Scenario, shard: Shard, source: TrajectorySource,
                on_progress: Progress | None = None) -> OutputSummary:
    """Simulate one shard's patients and write them into `out_dir`; returns the shard's summary."""
    with CohortOutput(out_dir, scenario).shard(shard.index, shard.first) as writer:
        for record in simulate_shard(scenario, shard, source, on_progress):
            writer.write(record.events)
    return writer.summary
