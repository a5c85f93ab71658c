"""Run every benchmark in this folder (`bench_*.py`, each a standalone script) one after another,
so `make bench` prints all measured throughputs and ratios in one go. A benchmark that fails is
reported and the rest still run; the exit code says whether all succeeded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    only = set(sys.argv[1:])  # e.g. `python benchmarks/run_all.py generate ingest`
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        if only and name not in only:
            continue
        print(f"\n== {name} ==", flush=True)
        started = time.perf_counter()
        if subprocess.run([sys.executable, str(script)], cwd=here.parent).returncode != 0:
            failed.append(name)
        print(f"({name}: {time.perf_counter() - started:.1f} s wall)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
