"""Where shards run: in this process, in a local process pool, or as Ray tasks on a local or
existing cluster. Every backend runs the same `write_shard`, so output does not depend on it.

Workers build their trajectory source once (a model's weights load once per worker, not per shard).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

from trajsim.engine import TrajectorySource
from trajsim.generate import GenerationSummary, Shard, scenario_source, write_shard
from trajsim.scenario import Scenario

BACKENDS = ("local", "ray")
RAY_TASK_RETRIES = 2  # a shard whose worker dies is retried alone


@cache
def _worker_source(scenario_json: str) -> TrajectorySource:
    return scenario_source(Scenario.model_validate_json(scenario_json))


def _run_in_worker(scenario_json: str, shard: Shard, out_dir: str) -> GenerationSummary:
    scenario = Scenario.model_validate_json(scenario_json)
    return write_shard(scenario, shard, Path(out_dir), _worker_source(scenario_json))


def run_shards(scenario: Scenario, shards: list[Shard], out_dir: Path, source: TrajectorySource | None,
               backend: str, workers: int, ray_address: str | None,
               on_progress: Callable[[int], None] | None) -> Iterator[GenerationSummary]:
    """Run every shard and yield each one's summary as it finishes (in any order)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (got {workers})")
    if backend == "local" and workers == 1:
        source = source or scenario_source(scenario)
        for shard in shards:
            yield write_shard(scenario, shard, out_dir, source, on_progress)
        return
    runner = _run_on_ray if backend == "ray" else _run_in_pool
    for summary in runner(scenario.model_dump_json(), shards, str(out_dir), workers, ray_address):
        if on_progress is not None:
            on_progress(summary.patients)
        yield summary


def _run_in_pool(scenario_json: str, shards: list[Shard], out_dir: str, workers: int,
                 ray_address: str | None) -> Iterator[GenerationSummary]:
    # spawn, not fork: torch and SimPy state must not be inherited half-initialised
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_run_in_worker, scenario_json, shard, out_dir) for shard in shards]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _run_on_ray(scenario_json: str, shards: list[Shard], out_dir: str, workers: int,
                ray_address: str | None) -> Iterator[GenerationSummary]:
    try:
        import ray
    except ImportError:
        raise ValueError("the ray backend needs Ray: pip install 'trajsim[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ray_address, num_cpus=None if ray_address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=RAY_TASK_RETRIES)(_run_in_worker)
        pending = [task.remote(scenario_json, shard, out_dir) for shard in shards]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()
