"""Population realism at scale: a lifetime cohort (records from birth, US 2020 age mix) generated
end to end with the rule-based reference source (`model = "reference"`; engine, clinical-rule check, FHIR bulk NDJSON and events),
then set against the cited tables it was built from.

Reports patients/s, peak memory of a fresh process at the small and the large size (it should stay
about flat: output streams to disk chunk by chunk), rule violations (must be 0), the prevalence of
the 15 most common chronic conditions by cited age band (must be within +-25% of the table where
the sample is big enough for that to be decidable), and life expectancy at birth from the
cohort's own death rates (must be within 2 years of the life table).

    python benchmarks/bench_population.py [LARGE] [SMALL]        (default 10000 1000)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import datetime, time
from pathlib import Path

import polars as pl

from trajsim.evaluate.calibration import death_rates, life_expectancy, most_common, prevalence_by_band
from trajsim.knowledge import load_knowledge
from trajsim.scenario import Scenario, with_overrides

TOLERANCE = 0.25  # relative, on prevalence
DECIDABLE_SE = 0.08  # a band is judged when 25% is >= 3 binomial standard errors of the cited figure
LIFE_EXPECTANCY_YEARS = 2.0

CHILD = """
import json, resource, sys, time
from trajsim.generate import generate
from trajsim.scenario import Scenario, with_overrides
patients, out = int(sys.argv[1]), sys.argv[2]
scenario = with_overrides(Scenario(), "benchmark", **{
    "population.size": patients, "period.start": "birth", "model": "reference", "output.formats": ("ndjson", "events")})
started = time.perf_counter()
summary = generate(scenario, out)
print(json.dumps({"seconds": time.perf_counter() - started, "events": summary.events,
                  "resources": sum(summary.resources.values()), "violations": dict(summary.violations),
                  "cpu_seconds": resource.getrusage(resource.RUSAGE_SELF).ru_utime,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def lifetime_scenario(patients: int) -> Scenario:
    return with_overrides(Scenario(), "benchmark", **{"population.size": patients, "period.start": "birth",
                                                       "model": "reference"})


def generate_in_fresh_process(patients: int, out: Path) -> dict:
    """Generate in a new interpreter so its peak RSS is this run's alone."""
    result = subprocess.run([sys.executable, "-c", CHILD, str(patients), str(out)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.splitlines()[-1])


def main(large: int = 10_000, small: int = 1_000) -> int:
    knowledge = load_knowledge()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {size: generate_in_fresh_process(size, Path(tmp) / str(size)) for size in (small, large)}
        events = pl.scan_parquet(Path(tmp) / str(large) / "events" / "*.parquet")
        end = datetime.combine(lifetime_scenario(large).period.end, time())
        prevalence = most_common(prevalence_by_band(events, end, knowledge), 15)
        rates = death_rates(events, end, knowledge)
    run = runs[large]
    print(f"lifetime cohort     {large:,} patients from birth, ending {end.date()} (one process)")
    print(f"patients/s          {large / run['seconds']:,.1f} wall, {large / run['cpu_seconds']:,.1f} per CPU-second "
          f"({run['seconds']:.0f} s; {run['events'] / large:,.0f} events and {run['resources'] / large:,.0f} FHIR "
          f"resources per patient, NDJSON + events written)")
    print(f"peak RSS            {runs[small]['peak_rss_mb']:,.0f} MB at {small:,} vs {run['peak_rss_mb']:,.0f} MB at {large:,} "
          f"patients ({run['peak_rss_mb'] / runs[small]['peak_rss_mb']:.2f}x)")
    violations = sum(run["violations"].values())
    print(f"rule violations     {violations}  {run['violations'] or ''}")

    decidable = pl.col("relative_standard_error") <= DECIDABLE_SE
    judged = prevalence.with_columns(
        verdict=pl.when(~decidable).then(pl.lit("too few to judge"))
        .when(pl.col("relative_error").abs() <= TOLERANCE).then(pl.lit("ok")).otherwise(pl.lit("OUT")))
    with pl.Config(tbl_rows=100, tbl_width_chars=160, tbl_hide_dataframe_shape=True, float_precision=3):
        print(judged.select("condition", "sex", "age_min", "age_max", "patients", "cited", "expected", "simulated",
                            "relative_error", "relative_standard_error", "verdict"))
    out_of_tolerance = judged.filter(pl.col("verdict") == "OUT").height
    print(f"prevalence          {judged.filter(decidable).height} decidable bands of the 15 most common conditions, "
          f"{out_of_tolerance} outside +-{TOLERANCE:.0%}")

    simulated, table = life_expectancy(rates), life_expectancy(knowledge.mortality)
    print(f"life expectancy     {simulated:.1f} years simulated vs {table:.1f} from the life table "
          f"({simulated - table:+.1f}; {int(rates[:, 3].sum()):,} deaths over {rates[:, 4].sum():,.0f} person-years)")
    failed = violations > 0 or out_of_tolerance > 0 or abs(simulated - table) > LIFE_EXPECTANCY_YEARS
    print("result              " + ("FAILED" if failed else "all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:3]]
    sys.exit(main(*sizes))
