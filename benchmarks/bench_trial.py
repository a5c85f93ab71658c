"""Time to a synthetic control arm: the shipped type 2 diabetes scenario (scenarios/t2d_control_arm.toml)
grown to a 1,000-patient arm, then its statistics and report; and how much conditioning the scenario
on the criteria raises the yield over simulating the scenario as written.

    python benchmarks/bench_trial.py [ARM_SIZE] [WORKERS]     (defaults: 1000 patients, 2 workers)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from trajsim.runner import Shard, scenario_source
from trajsim.scenario import load_scenario, with_overrides
from trajsim.trial.report import summarise, write_report
from trajsim.trial.synthetic import screen_batch, synthetic_arm

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "t2d_control_arm.toml"
BLIND_SAMPLE = 300  # patients simulated as the scenario is written, to measure the blind yield


def main(arm_size: int = 1000, workers: int = 2) -> None:
    scenario = with_overrides(load_scenario(SCENARIO), "benchmark", **{"trial.target_size": arm_size})
    started = time.perf_counter()
    arm = synthetic_arm(scenario, workers=workers)
    built = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        write_report(summarise("benchmark", scenario.trial, {"synthetic": arm.table}, []), Path(out))
        reported = time.perf_counter() - started
    conditioned_yield = arm.table.height / arm.screened
    started = time.perf_counter()
    blind, *_ = screen_batch(scenario, Shard(0, 0, BLIND_SAMPLE), scenario_source(scenario))
    blind_seconds = time.perf_counter() - started
    blind_yield = blind.height / BLIND_SAMPLE
    print(f"scenario            {scenario.name} ({scenario.period.start} to {scenario.period.end}), {workers} worker(s)")
    print(f"arm                 {arm.table.height:,} patients from {arm.screened:,} simulated "
          f"(yield {100 * conditioned_yield:.1f}%)")
    print(f"time to arm         {built:.1f} s  ({arm.table.height / built:.1f} arm patients/s, "
          f"{arm.screened / built:.0f} simulated patients/s)")
    print(f"statistics+report   {reported:.2f} s (Table 1, Kaplan-Meier, rates, power, HTML)")
    print(f"blind yield         {100 * blind_yield:.1f}% of {BLIND_SAMPLE} patients simulated as written "
          f"({BLIND_SAMPLE / blind_seconds:.0f} patients/s in one process)")
    if blind_yield:
        print(f"conditioning gain   {conditioned_yield / blind_yield:.1f}x the yield")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
