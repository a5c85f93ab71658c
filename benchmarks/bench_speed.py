"""Speed per core, counted in FHIR resources as well as patients (patients differ in length): the
default scenario with the shipped model and with the reference source, each generated in a fresh
interpreter on one worker, against the project's goal and against orjson serialising the same
resources (the ceiling no FHIR writer in Python can pass). Also: patient-years/s, MB written per
patient, peak memory, sampled tokens/s against the batch width, and the rate at which one chunk's
whole records are sampled with the rules.

    python benchmarks/bench_speed.py [--patients 1000] [--lifetime 100] [--ten-thousand]

`--lifetime N` adds lifetime records (from birth) of N patients per source (0 to skip);
`--ten-thousand` adds the peak memory of a 10,000-patient reference run (minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from trajsim.engine.population import draw_patient
from trajsim.engine.schedules import Schedule
from trajsim.engine.simulate import CHUNK_SIZE
from trajsim.engine.source import ENGINE_KINDS, engine_kinds
from trajsim.knowledge import load_knowledge
from trajsim.model import DEFAULT_MODEL
from trajsim.model.sample import generate, one_thread
from trajsim.model.source import ModelSource
from trajsim.model.tokenizer import BOS, EOS, SEXES, birth_band
from trajsim.model.train import load_model
from trajsim.scenario import Scenario, with_overrides

GOAL_RESOURCES_PER_S = 100_000  # per core, full records with notes (issue 20)
GOAL_TOKENS_PER_S = 250_000  # per core
SAMPLING_WIDTHS = (1, 16, 64, 256)

# One generation in a fresh interpreter, so its peak memory and CPU time are its own; then the CPU
# time orjson takes to serialise the very resources it wrote. Rates are per CPU second: the machine
# may be shared, and a core's speed is what is measured.
RUN = """
import json, resource, sys, tempfile, time
from pathlib import Path
import orjson, polars as pl
from trajsim.events import BIRTH, DEATH
from trajsim.clock import DAYS_PER_YEAR, EPOCH
from trajsim.generate import generate
from trajsim.scenario import Scenario, with_overrides
patients, model, start = int(sys.argv[1]), sys.argv[2], sys.argv[3]
changes = {"population.size": patients, "model": model} | ({"period.start": "birth"} if start == "birth" else {})
scenario = with_overrides(Scenario(), "benchmark", **changes)
with tempfile.TemporaryDirectory() as out:
    cpu, wall = time.process_time(), time.perf_counter()
    summary = generate(scenario, Path(out))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    events = pl.read_parquet(Path(out) / "events" / "*.parquet")
    period_start = EPOCH if start == "birth" else pl.lit(scenario.period.start).cast(pl.Datetime("us"))
    spans = events.group_by("subject_id").agg(
        born=pl.col("time").filter(pl.col("code") == BIRTH).min(),
        died=pl.col("time").filter(pl.col("code") == DEATH).min())
    entry = pl.max_horizontal("born", period_start) if start != "birth" else pl.col("born")
    exit = pl.min_horizontal(pl.col("died").fill_null(pl.lit(scenario.period.end).cast(pl.Datetime("us"))),
                             pl.lit(scenario.period.end).cast(pl.Datetime("us")))
    years = spans.select(((exit - entry).dt.total_seconds() / 86400 / DAYS_PER_YEAR).clip(0).sum()).item()
    resources = [orjson.loads(line) for path in sorted((Path(out) / "fhir" / "ndjson").glob("*.ndjson"))
                 for line in path.read_bytes().splitlines()]
    serialise = time.process_time()
    for _ in range(3):
        for r in resources:
            orjson.dumps(r)
    orjson_rate = 3 * len(resources) / (time.process_time() - serialise)
print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak_mb, "patients": summary.patients,
                  "resources": sum(summary.resources.values()), "bytes": summary.bytes_written,
                  "patient_years": years, "orjson_rate": orjson_rate}))
"""


def run(patients: int, model: str, start: str = "period") -> dict[str, float]:
    """The measurements of one generation (see RUN) in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", RUN, str(patients), model, start],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.splitlines()[-1])


def report(label: str, m: dict[str, float]) -> None:
    # "per core": the run's CPU time, so a machine shared with other work does not count against it
    per_core = m["resources"] / m["cpu"]
    print(f"{label}: {m['patients']:,} patients, {m['resources'] / m['patients']:,.0f} resources/patient, "
          f"{m['wall']:.1f} s wall, {m['cpu']:.1f} s CPU")
    print(f"  resources/s per core  {per_core:10,.0f}  (goal {GOAL_RESOURCES_PER_S:,}: {per_core / GOAL_RESOURCES_PER_S:.2f}x; "
          f"orjson alone {m['orjson_rate']:,.0f}: {per_core / m['orjson_rate']:.3f} of it)")
    print(f"  patients/s per core   {m['patients'] / m['cpu']:10,.1f}")
    print(f"  patient-years/s       {m['patient_years'] / m['cpu']:10,.0f}  ({m['patient_years'] / m['patients']:.1f} years/patient)")
    print(f"  MB per patient        {m['bytes'] / 1e6 / m['patients']:10.3f}")
    print(f"  peak memory           {m['peak_mb']:10,.0f} MB")


def sampling_rates() -> None:
    """Unconstrained sampling with the shipped model on one thread, 200 new tokens a row."""
    model, tokenizer = load_model(DEFAULT_MODEL)
    prompt = [tokenizer.index[token] for token in (BOS, SEXES["TRAJSIM/sex/F"], birth_band(1960))]
    print("sampled tokens/s per core, shipped model, one thread:")
    with one_thread():
        for width in SAMPLING_WIDTHS:
            prompts = torch.tensor([prompt] * width)
            started = time.process_time()
            out = generate(model, prompts, np.arange(width, dtype=np.uint64), 200, stop_token=-1)
            rate = width * (out.shape[1] - len(prompt)) / (time.process_time() - started)
            print(f"  batch {width:4d}  {rate:10,.0f} tokens/s  (goal {GOAL_TOKENS_PER_S:,}: {rate / GOAL_TOKENS_PER_S:.2f}x)")


def record_sampling_rate(patients: int = CHUNK_SIZE) -> None:
    """Sampling as the model source does it: one chunk's whole records of the default scenario, one
    row a patient, the grammar and the rules' masks included, contexts up to the model's 1,024."""
    scenario = with_overrides(Scenario(), "benchmark", **{"population.size": patients, "model": "default"})
    knowledge, source = load_knowledge(), ModelSource(DEFAULT_MODEL)
    states = [draw_patient(scenario, i, knowledge) for i in range(patients)]
    for state in states:  # as the engine prepares a chunk: allergies drawn, the source's state set
        Schedule(knowledge, state, engine_kinds(source) & ENGINE_KINDS)
        state.source_state = source.new_state(state)
    started = time.process_time()
    rows = source.write_tokens(states)
    elapsed = time.process_time() - started
    tokens = int((rows != source.tokenizer.index[EOS]).sum()) - 3 * patients  # drawn, not the prompts
    print(f"whole records of {patients} patients, rules included: {tokens:,} tokens in {rows.shape[1]:,} steps, "
          f"{tokens / elapsed:,.0f} tokens/s per core, {patients / elapsed:.1f} records/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000, help="patients per source, default scenario")
    parser.add_argument("--lifetime", type=int, default=100, help="patients per source with lifetime records (0: skip)")
    parser.add_argument("--ten-thousand", action="store_true", help="also the peak memory of 10,000 patients")
    args = parser.parse_args()
    for source in ("default", "reference"):
        report(f"{source} source, default scenario (ten years)", run(args.patients, source))
    if args.lifetime:
        for source in ("default", "reference"):
            report(f"{source} source, lifetime records (from birth)", run(args.lifetime, source, "birth"))
    if args.ten_thousand:
        small, large = run(1000, "reference"), run(10_000, "reference")
        print(f"peak memory, reference source: 1,000 patients {small['peak_mb']:,.0f} MB, 10,000 patients "
              f"{large['peak_mb']:,.0f} MB (ratio {large['peak_mb'] / small['peak_mb']:.2f})")
    sampling_rates()
    record_sampling_rate()


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
