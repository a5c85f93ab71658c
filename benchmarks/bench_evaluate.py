"""Benchmark `trajsim evaluate`: 10,000 real against 10,000 synthetic patients (plus 5,000 training
records for the privacy metrics), all simulated by the engine with different seeds, timed per metric
family (each including its plots) and for writing the report files.

    python benchmarks/bench_evaluate.py [patients]
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import polars as pl

from trajsim.engine import ReferenceSource, simulate
from trajsim.evaluate import evaluate
from trajsim.evaluate.report import write_report
from trajsim.events import events_frame
from trajsim.scenario import Scenario, with_overrides


def cohort(size: int, seed: int) -> pl.DataFrame:
    scenario = with_overrides(Scenario(), "benchmark", **{"population.size": size, "seed": seed})
    return events_frame(event for record in simulate(scenario, ReferenceSource()) for event in record.events)


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    started = time.perf_counter()
    sizes = {"real": (size, 1), "synthetic": (size, 2), "train": (size // 2, 3)}
    with ProcessPoolExecutor(max_workers=2) as pool:  # cohorts are independent; two cores in CI
        tables = dict(zip(sizes, pool.map(cohort, *zip(*sizes.values()))))
    print(f"simulated {', '.join(f'{n:,} {name}' for name, (n, _) in sizes.items())} patients "
          f"({sum(t.height for t in tables.values()):,} events) in {time.perf_counter() - started:.1f} s")
    timings: dict[str, float] = {}
    evaluation = evaluate(**tables, on_family=lambda name, seconds: timings.__setitem__(name, seconds))
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        write_report(evaluation, Path(out))
        timings["report"] = time.perf_counter() - started
        html_mb = (Path(out) / "report.html").stat().st_size / 1e6
    for name, seconds in timings.items():
        print(f"{name:>9}: {seconds:6.1f} s")
    print(f"    total: {sum(timings.values()):6.1f} s for {size:,} vs {size:,} patients "
          f"({size / sum(timings.values()):,.0f} real patients/s); report.html {html_mb:.1f} MB")
    for section in evaluation.sections:
        for headline in section.headlines:
            print(f"  {section.name}: {headline.label} = {headline.value}")


if __name__ == "__main__":
    main()
