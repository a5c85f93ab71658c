"""End-to-end generation throughput of the default scenario (ten-year records, full FHIR with notes,
bulk NDJSON and events, every patient checked against the rules), with the shipped model and with
the rule-based reference source, compared with the numbers the project must beat.

    python benchmarks/bench_generate.py [PATIENTS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from trajsim.generate import generate
from trajsim.scenario import Scenario, with_overrides

SYNTHEA_PORT_PATIENTS_PER_S = 0.54  # a Python port of Synthea, full FHIR and notes, this machine (project brief)
SYNTHEA_RESOURCES_PER_PATIENT = 2170  # its lifetime records are larger than a ten-year window, so compare resources/s too
TARGET_PATIENTS_PER_S_PER_CORE = 100


def run(patients: int, model: str) -> None:
    scenario = with_overrides(Scenario(), "benchmark", **{"population.size": patients, "model": model})
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        summary = generate(scenario, Path(out))
        seconds = time.perf_counter() - started
    resources = sum(summary.resources.values())
    rate = patients / seconds
    synthea_resources_per_s = SYNTHEA_PORT_PATIENTS_PER_S * SYNTHEA_RESOURCES_PER_PATIENT
    print(f"source              {model} ({patients:,} patients, {scenario.period.start} to {scenario.period.end}, "
          f"one process)")
    print(f"  wall time         {seconds:.2f} s; rule violations {sum(summary.violations.values())}")
    print(f"  patients/s        {rate:,.1f}  (target >= {TARGET_PATIENTS_PER_S_PER_CORE} per core: "
          f"{rate / TARGET_PATIENTS_PER_S_PER_CORE:.2f}x; Synthea port {SYNTHEA_PORT_PATIENTS_PER_S}: "
          f"{rate / SYNTHEA_PORT_PATIENTS_PER_S:,.0f}x)")
    print(f"  resources/patient {resources / patients:,.0f}")
    print(f"  resources/s       {resources / seconds:,.0f}  (Synthea port ~{synthea_resources_per_s:,.0f}: "
          f"{resources / seconds / synthea_resources_per_s:,.0f}x)")
    print(f"  written           {summary.bytes_written / 1e6:,.1f} MB ({summary.bytes_written / 1e6 / seconds:,.1f} MB/s)")


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    for source in ("default", "reference"):
        run(count, source)
