"""Where shards run: in this process, in a local process pool, or as Ray tasks on a local or existing
cluster. A shard is a fixed range of patient numbers; what is done with it (simulate and write, or
simulate and screen for a trial) is the caller's job function, run the same way by every backend, so
results do not depend on where they were computed.

Workers build their trajectory source once (a model's weights load once per worker, not per shard).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from trajsim.engine import PatientRecord, ReferenceSource, TrajectorySource, simulate
from trajsim.engine.simulate import CHUNK_SIZE
from trajsim.model import model_folder
from trajsim.scenario import Scenario

BACKENDS = ("local", "ray")
DEFAULT_SHARD_SIZE = 4 * CHUNK_SIZE
RAY_TASK_RETRIES = 2  # a shard whose worker dies is retried alone
PARENT_CHECK_S = 0.5  # how often a pool worker checks that its parent is alive



@dataclass(frozen=True)
class Shard:
    """Patients `first` .. `first + count - 1`; its number fixes where its files go."""

    index: int
    first: int
    count: int


Result = TypeVar("Result")
Progress = Callable[[int], None]  # told how many more patients are done
ShardJob = Callable[[Scenario, Shard, TrajectorySource, Progress | None], Result]


def plan_shards(patients: int, shard_size: int = DEFAULT_SHARD_SIZE, grid: int = CHUNK_SIZE) -> list[Shard]:
    """The fixed patient ranges of a cohort. Shards hold whole `grid`-patient chunks (by default the
    engine's 256, so event parts are the same whatever the shard size)."""
    if shard_size <= 0 or shard_size % grid:
        raise ValueError(f"shard size must be a positive multiple of {grid} (got {shard_size})")
    return [Shard(n, first, min(shard_size, patients - first)) for n, first in enumerate(range(0, patients, shard_size))]


def simulate_shard(scenario: Scenario, shard: Shard, source: TrajectorySource,
                   on_progress: Progress | None = None) -> Iterator[PatientRecord]:
    """The shard's finished patients in order, each reported to `on_progress` as it is handed over."""
    for record in simulate(scenario, source, first=shard.first, count=shard.count):
        yield record
        if on_progress is not None:
            on_progress(1)


def scenario_source(scenario: Scenario) -> TrajectorySource:
    """The trajectory source a scenario asks for: a trained model folder or the reference simulator."""
    folder = model_folder(scenario.model)
    if folder is None:
        return ReferenceSource()
    from trajsim.model.source import ModelSource  # torch loads only when a model is used

    return ModelSource(folder)


class ShardRunner:
    """Runs shard jobs of one scenario on one backend: "local" runs them in this process (workers=1)
    or a process pool, "ray" as Ray tasks. A custom `source` object runs only in this process; the
    others build the scenario's source once per worker. Bad settings are refused here, before any
    shard runs."""

    def __init__(self, scenario: Scenario, source: TrajectorySource | None = None, backend: str = "local",
                 workers: int = 1, ray_address: str | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1 (got {workers})")
        self.here = backend == "local" and workers == 1
        if source is not None and not self.here:
            raise ValueError("a custom trajectory source runs only in one local process (backend local, 1 worker)")
        self.scenario = scenario
        self.source = source
        self.backend = backend
        self.workers = workers
        self.ray_address = ray_address

    def run(self, job: ShardJob[Result], shards: Sequence[Shard], on_progress: Progress | None = None,
            in_order: bool = False) -> Iterator[Result]:
        """`job(scenario, shard, source, on_progress)` for every shard, yielded as each finishes; with
        `in_order`, in shard order and never more than `workers` shards ahead of the consumer, which
        may stop early (closing the iterator cancels what has not started). `job` must be picklable
        (a module-level function or a partial of one) to run in another process."""
        if self.here:
            source = self.source or scenario_source(self.scenario)
            for shard in shards:
                yield job(self.scenario, shard, source, on_progress)
            return
        if not shards:
            return
        pool = (_RayPool if self.backend == "ray" else _ProcessPool)(self.workers, self.ray_address)
        ahead = self.workers if in_order else len(shards)
        scenario_json = self.scenario.model_dump_json()
        waiting = deque(shards)
        running: dict[Any, Shard] = {}  # in submission order, which is shard order
        try:
            while waiting or running:
                while waiting and len(running) < ahead:
                    shard = waiting.popleft()
                    running[pool.submit(job, scenario_json, shard)] = shard
                task = next(iter(running)) if in_order else pool.first_done(list(running))
                result = pool.result(task)
                shard = running.pop(task)
                if on_progress is not None:
                    on_progress(shard.count)
                yield result
        finally:
            pool.close(list(running))


@cache
def _worker_source(scenario_json: str) -> TrajectorySource:
    return scenario_source(Scenario.model_validate_json(scenario_json))


def _run_in_worker(job: ShardJob[Result], scenario_json: str, shard: Shard) -> Result:
    return job(Scenario.model_validate_json(scenario_json), shard, _worker_source(scenario_json), None)


def _die_with(parent: int) -> None:
    """In a pool worker: exit as soon as the process that started it is gone (killed, even with
    SIGKILL), instead of simulating on for nobody."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _ProcessPool:
    """Shards as tasks of a pool of local processes."""

    def __init__(self, workers: int, ray_address: str | None) -> None:
        # spawn, not fork: torch and SimPy state must not be inherited half-initialised
        context = multiprocessing.get_context("spawn")
        self.executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_die_with,
                                                               initargs=(os.getpid(),))

    def submit(self, job: ShardJob[Any], scenario_json: str, shard: Shard) -> concurrent.futures.Future:
        return self.executor.submit(_run_in_worker, job, scenario_json, shard)

    def first_done(self, tasks: Sequence[concurrent.futures.Future]) -> concurrent.futures.Future:
        return next(concurrent.futures.as_completed(tasks))

    def result(self, task: concurrent.futures.Future) -> Any:
        return task.result()

    def close(self, unfinished: Sequence[concurrent.futures.Future]) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class _RayPool:
    """Shards as Ray tasks, on a Ray instance started here (and stopped after) or an existing one."""

    def __init__(self, workers: int, ray_address: str | None) -> None:
        try:
            import ray  # an optional dependency
        except ImportError:
            raise ValueError("the ray backend needs Ray: pip install 'trajsim[ray]'") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            ray.init(address=ray_address, num_cpus=None if ray_address else workers, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        self.task = ray.remote(num_cpus=1, max_retries=RAY_TASK_RETRIES)(_run_in_worker)

    def submit(self, job: ShardJob[Any], scenario_json: str, shard: Shard) -> Any:
        return self.task.remote(job, scenario_json, shard)

    def first_done(self, tasks: Sequence[Any]) -> Any:
        done, _ = self.ray.wait(list(tasks), num_returns=1)
        return done[0]

    def result(self, task: Any) -> Any:
        return self.ray.get(task)

    def close(self, unfinished: Sequence[Any]) -> None:
        for task in unfinished:
            self.ray.cancel(task)
        if self.started_here:
            self.ray.shutdown()
