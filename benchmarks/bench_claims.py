"""Payers and claims of a generated cohort beside the national figures they are drawn from and
beside Synthea's CSV export in the shared reference data: the plan mix at the record's end, what a
claim bills by encounter class and the payer's part, and what adding the claims costs in export time.

    python benchmarks/bench_claims.py [PATIENTS]
"""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhir_export.claims import add_insurance, cents, plan_of  # noqa: E402
from tests.conftest import REFDATA  # noqa: E402
from trajsim.engine import ReferenceSource, simulate  # noqa: E402
from trajsim.knowledge.insurance import programs  # noqa: E402
from trajsim.output import default_builder, fhir_namespace  # noqa: E402
from trajsim.scenario import Scenario, with_overrides  # noqa: E402

SYNTHEA_CSV = REFDATA / "synthea_csv_dbt27" / "csv"
# Census P60-281, Health Insurance Coverage in the United States: 2022 (Table 1, all ages; a person
# may have more than one type, so the shares add to more than 100%).
CENSUS_2022 = {"employer": 54.5, "direct": 9.9, "medicare": 18.7, "medicaid": 18.8, "uninsured": 7.9}


def main(patients: int = 200) -> None:
    scenario = with_overrides(Scenario(), "benchmark", **{"population.size": patients})
    records = [record.events for record in simulate(scenario, ReferenceSource())]
    namespace = fhir_namespace(scenario.name, scenario.seed)
    builder = default_builder(namespace)
    started = time.perf_counter()
    built = [builder.build(events) for events in records]
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    finances = [add_insurance(patient, f"{namespace}/{events[0].subject_id}") for patient, events in zip(built, records)]
    claims_s = time.perf_counter() - started

    plans = Counter(program for f in finances if f is not None for program in programs(f.plan))
    print(f"{patients:,} patients (reference source, {scenario.period.start} to {scenario.period.end})")
    print(f"build {build_s:.2f} s; payers, Coverage, Claims and EOBs {claims_s:.2f} s "
          f"(+{100 * claims_s / build_s:.0f}% export time)")
    print(f"\n{'plan at the record end':<24}{'trajsim %':>10}{'Census 2022 %':>15}  (dual-eligible in both)")
    for plan, census in CENSUS_2022.items():
        print(f"{plan:<24}{100 * plans[plan] / patients:>10.1f}{census:>15.1f}")

    billed: dict[str, list[int]] = defaultdict(list)
    payer: Counter = Counter()
    by_plan: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    coverage_of: dict[str, str] = {}
    for patient in built:
        for resource in patient.resources:
            if resource["resourceType"] == "Coverage":
                coverage_of[resource["id"]] = plan_of(resource)
            if resource["resourceType"] != "ExplanationOfBenefit":
                continue
            totals = {t["category"]["coding"][0]["code"]: cents(t["amount"]) for t in resource["total"]}
            kind = resource["type"]["coding"][0]["code"]
            billed[kind].append(totals["submitted"])
            payer[kind] += totals["benefit"]
            plan = "+".join(coverage_of[i["coverage"]["reference"].rsplit(":", 1)[-1]] for i in resource["insurance"])
            by_plan[plan][0] += totals["submitted"]
            by_plan[plan][1] += totals["benefit"]
    print(f"\n{'claims':<24}{'count':>8}{'mean billed $':>15}{'payer paid %':>14}")
    for kind, amounts in sorted(billed.items()):
        print(f"{kind:<24}{len(amounts):>8,}{sum(amounts) / len(amounts) / 100:>15,.2f}"
              f"{100 * payer[kind] / max(sum(amounts), 1):>14.1f}")
    print(f"\n{'payer paid by plan':<24}{'billed $':>14}{'payer paid %':>14}")
    for plan, (amount, paid) in sorted(by_plan.items()):
        print(f"{plan:<24}{amount / 100:>14,.0f}{100 * paid / max(amount, 1):>14.1f}")
    synthea()


def synthea() -> None:
    """The same figures from Synthea's encounters.csv (its costs include every line of the visit)."""
    path = SYNTHEA_CSV / "encounters.csv"
    if not path.exists():
        print(f"\nSynthea CSV not found at {path}")
        return
    rows = (pl.read_csv(path).group_by("ENCOUNTERCLASS")
            .agg(pl.len().alias("count"), pl.col("TOTAL_CLAIM_COST").mean().alias("mean"),
                 (100 * pl.col("PAYER_COVERAGE").sum() / pl.col("TOTAL_CLAIM_COST").sum()).alias("payer"))
            .sort("ENCOUNTERCLASS"))
    print(f"\nSynthea ({path.parent.parent.name}) {'count':>8}{'mean billed $':>15}{'payer paid %':>14}")
    for kind, count, mean, paid in rows.iter_rows():
        print(f"{kind:<24}{count:>8,}{mean:>15,.2f}{paid:>14.1f}")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:2]))
