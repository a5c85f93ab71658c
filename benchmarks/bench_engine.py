"""The engine with the reference source alone, without any output: CPU time per patient and per
recorded event of `simulate` for the default scenario (ten-year records) and for lifetime records,
on one core. It is the part of `generate` that no exporter or writer change can speed up (see
docs/performance.md).

    python benchmarks/bench_engine.py [--patients 300] [--lifetime 50] [--rounds 3] [--against DIR]

`--against DIR` times another checkout of trajsim (a folder holding its `trajsim` package) in the
same run, interleaved round by round with this one, and checks that both record the same events:
on a shared machine only runs side by side compare. Each round runs in a fresh interpreter; the
best round of each tree is reported (the least disturbed by other work).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# One simulation in a fresh interpreter: the CPU time of `simulate` alone (the knowledge tables are
# loaded before the clock starts), and a digest of every event recorded, to compare trees by.
RUN = """
import hashlib, json, sys, time
from trajsim.engine.simulate import simulate
from trajsim.knowledge import load_knowledge
from trajsim.runner import scenario_source
from trajsim.scenario import Scenario, with_overrides
patients, start = int(sys.argv[1]), sys.argv[2]
changes = {"population.size": patients, "model": "reference"} | ({"period.start": "birth"} if start == "birth" else {})
scenario = with_overrides(Scenario(), "benchmark", **changes)
load_knowledge()
source = scenario_source(scenario)
cpu = time.process_time()
records = [record.events for record in simulate(scenario, source)]
cpu = time.process_time() - cpu
digest = hashlib.sha256(repr(records).encode()).hexdigest()
print(json.dumps({"cpu": cpu, "events": sum(map(len, records)), "digest": digest}))
"""


def run(tree: Path, patients: int, start: str) -> dict[str, float | str]:
    """One round of `RUN` with the trajsim package of `tree`."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    result = subprocess.run([sys.executable, "-c", RUN, str(patients), start], check=True, capture_output=True,
                            text=True, cwd=tree, env=env)
    return json.loads(result.stdout.splitlines()[-1])


def compare(trees: dict[str, Path], patients: int, start: str, rounds: int) -> None:
    """Rounds of every tree, interleaved, and the best CPU time per patient of each."""
    best: dict[str, dict[str, float | str]] = {}
    for _ in range(rounds):
        for name, tree in trees.items():
            m = run(tree, patients, start)
            if name not in best or m["cpu"] < best[name]["cpu"]:
                best[name] = m
    label = "lifetime records (from birth)" if start == "birth" else "default scenario (ten years)"
    print(f"reference source, {label}, {patients} patients, best of {rounds} rounds:")
    for name, m in best.items():
        print(f"  {name:8s} {1000 * m['cpu'] / patients:7.2f} ms CPU/patient  {m['events'] / m['cpu']:9,.0f} events/s "
              f"({m['events'] / patients:,.0f} events/patient)")
    if len(best) == 2:
        (_, this), (_, other) = best.items()
        same = "the same events" if this["digest"] == other["digest"] else "DIFFERENT events"
        print(f"  speed-up {other['cpu'] / this['cpu']:.2f}x, {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300, help="patients, default scenario")
    parser.add_argument("--lifetime", type=int, default=50, help="patients with lifetime records (0: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each tree")
    parser.add_argument("--against", type=Path, help="another checkout to time side by side")
    args = parser.parse_args()
    trees = {"this": HERE} | ({"against": args.against.resolve()} if args.against else {})
    compare(trees, args.patients, "period", args.rounds)
    if args.lifetime:
        compare(trees, args.lifetime, "birth", args.rounds)


if __name__ == "__main__":
    main()
