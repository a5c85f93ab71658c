"""Scale-out: patients/s with 1 and 2 local workers (near-linear on 2 cores is the goal), and the
peak memory of one worker at 1,000 vs 10,000 patients (it should stay flat: output streams to disk).

    python benchmarks/bench_scale.py [PATIENTS_FOR_SPEED] [SMALL LARGE]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time

RUN = """
import json, sys, time
from trajsim.generate import generate
from trajsim.scenario import Scenario, with_overrides
patients, workers, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
scenario = with_overrides(Scenario(), "benchmark", **{"population.size": patients})
started = time.perf_counter()
generate(scenario, out, workers=workers, shard_size=256)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def run(patients: int, workers: int) -> tuple[float, float]:
    """(seconds, peak RSS in MB of the largest process) of one generation in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result = subprocess.run([sys.executable, "-c", RUN, str(patients), str(workers), out],
                                check=True, capture_output=True, text=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(result.stdout.splitlines()[-1])["seconds"], max(peak, before) / 1024


def main() -> None:
    speed_patients = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    small, large = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (1000, 10000)
    single, _ = run(speed_patients, 1)
    double, _ = run(speed_patients, 2)
    print(f"patients            {speed_patients:,} (default scenario, shards of 256)")
    print(f"1 worker            {speed_patients / single:,.1f} patients/s")
    print(f"2 workers           {speed_patients / double:,.1f} patients/s ({single / double:.2f}x; "
          f"{speed_patients / double / 2:,.1f} per worker)")
    _, small_peak = run(small, 1)
    _, large_peak = run(large, 1)
    print(f"peak memory, 1 worker: {small:,} patients {small_peak:,.0f} MB; {large:,} patients {large_peak:,.0f} MB "
          f"(ratio {large_peak / small_peak:.2f} for {large / small:.0f}x the patients)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
