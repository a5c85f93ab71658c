"""Fidelity of a model trained on a user's records: for each reference data set, train on half of
its patients, generate as many patients with `generate --model` (demographics and record spans from the
model's population summary), and compare both the generated patients and the other real half with
the held-back patients by `trajsim evaluate`. The real-vs-real row is the floor a generator can reach.

    python benchmarks/bench_fidelity.py [--steps 800] [--sets synthea_fhir,mimic_meds,...] [--keep DIR] [--seeds 3]

One model per data set generates `--seeds` cohorts, each with its own seed: at a few hundred
patients the TSTR AUROC of one cohort moves by 0.1 with the seed alone, so the row reports the mean
and the spread (standard deviation) over the seeds.

The reference data is read from `TRAJSIM_REFDATA`, else `../shared/refdata` beside the checkout.

Goals (issue 16): prevalence R2 >= 0.95 x the floor, co-occurrence R2 >= 0.8, TSTR/TRTR >= 0.95,
membership AUC <= 0.55, no exact copies.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from trajsim.events import BIRTH, SEX_FEMALE, SEX_MALE, VISIT_START_PREFIX
from trajsim.evaluate import evaluate
from trajsim.generate import generate
from trajsim.ingest import load_events
from trajsim.model.train import TrainConfig, train
from trajsim.scenario import Scenario, with_overrides
from refdata import REFDATA

SETS = {
    "synthea_fhir": (REFDATA / "synthea_fhir_r4_smart615" / "bundles", "fhir"),
    "synthea_csv": (REFDATA / "synthea_csv_dbt27" / "csv", "synthea_csv"),
    "mimic_meds": (REFDATA / "mimic_iv_demo_meds_half", "meds"),
    "mimic_omop": (REFDATA / "omop_cdm53_mimic_iv_demo_half" / "csv", "omop"),
}
SHOWN = {  # (section, headline label prefix) -> column title
    ("fidelity", "Code prevalence"): "prevalence R2",
    ("fidelity", "Within-visit co-occurrence"): "co-occur R2",
    ("fidelity", "Next-visit"): "bigram R2",
    ("utility", "TSTR"): "TSTR AUROC",  # on the floor row: trained on real, i.e. TRTR
    ("privacy", "Membership"): "membership AUC",
    ("privacy", "Exact"): "exact copies",
}


def halves(events: pl.DataFrame, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A seeded patient-level split into two halves: training and held back."""
    subjects = events["subject_id"].unique().sort()
    # permute positions, not ids: OMOP's ids are unsigned 64-bit (signed hashes read as unsigned),
    # which numpy would turn into floats
    order = np.random.default_rng(seed).permutation(len(subjects))
    chosen = pl.col("subject_id").is_in(subjects.gather(order[: len(subjects) // 2]).implode())
    return events.filter(chosen), events.filter(~chosen)


def visits_per_record_year(events: pl.DataFrame) -> float:
    """Visits per year of record (first to last fact): how densely a generator writes care."""
    facts = events.filter(~pl.col("code").is_in([BIRTH, SEX_FEMALE, SEX_MALE]))
    years = facts.group_by("subject_id").agg((pl.col("time").max() - pl.col("time").min()).dt.total_days())["time"].sum() / 365.25
    return facts.filter(pl.col("code").str.starts_with(VISIT_START_PREFIX)).height / max(years, 1e-9)


def headline_values(evaluation) -> dict[str, float | None]:
    values = {}
    for section in evaluation.sections:
        for headline in section.headlines:
            for (name, prefix), title in SHOWN.items():
                if section.name == name and prefix in headline.label:
                    values[title] = headline.value
    return values


def trained_cohort(train_events: pl.DataFrame, patients: int, steps: int, folder: Path,
                   model: Path | None = None, seed: int = 0) -> pl.DataFrame:
    """The cohort generated with `seed` by a model trained on `train_events`; with `model`, that
    folder's model when it holds one (trained on the same split and steps), else one trained into it."""
    model = model or folder / "model"
    if not (model / "model.pt").exists():
        started = time.perf_counter()
        result = train(train_events, model, TrainConfig(max_steps=steps), "benchmark split (never kept)")
        print(f"  trained {result.steps} steps in {time.perf_counter() - started:.0f} s "
              f"(validation loss {result.best_val_loss:.3f})", flush=True)
    scenario = with_overrides(Scenario(), "benchmark", **{
        "population.size": patients, "model": str(model), "population.drawn_from": "model",
        "output.formats": ["events"], "seed": seed})
    generate(scenario, folder / f"out-{seed}")
    return pl.read_parquet(folder / f"out-{seed}" / "events" / "*.parquet")


def run(name: str, source: Path, format: str, steps: int, keep: Path | None = None, seeds: int = 3) -> None:
    if not source.exists():
        print(f"{name}: skipped, {source} not found")
        return
    started = time.perf_counter()
    events = load_events(source, format)
    train_events, held_back = halves(events)
    patients = held_back["subject_id"].n_unique()
    print(f"{name}: training on {train_events['subject_id'].n_unique()} patients", flush=True)
    ours = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(seeds):
            synthetic = trained_cohort(train_events, patients, steps, Path(folder), keep / name if keep else None, seed)
            ours.append(headline_values(evaluate(held_back, synthetic, train_events))
                        | {"visits/record-yr": visits_per_record_year(synthetic)})
    floor = headline_values(evaluate(held_back, train_events)) | {"visits/record-yr": visits_per_record_year(train_events)}
    print(f"\n{name}: {events['subject_id'].n_unique()} patients, {events.height:,} events; "
          f"{time.perf_counter() - started:.0f} s; held back: {visits_per_record_year(held_back):.2f} visits/record-yr")
    titles = [*SHOWN.values(), "visits/record-yr"]
    print(f"  {'':>24}" + "".join(f"{title:>17}" for title in titles))
    print(f"  {'real vs real (floor)':>24}" + "".join(f"{_cell([floor.get(t)]):>17}" for t in titles))
    print(f"  {f'trajsim vs real ({seeds} seeds)':>24}" + "".join(f"{_cell([o.get(t) for o in ours]):>17}" for t in titles),
          flush=True)
    print(f"  {'TSTR AUROC by seed':>24}  " + ", ".join(_cell([o.get('TSTR AUROC')]) for o in ours))


def _cell(values: list[float | None]) -> str:
    """The mean of the values, with their standard deviation when there are several."""
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    return f"{np.mean(known):.3f}" + (f" ±{np.std(known, ddof=1):.3f}" if len(known) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800, help="training steps per data set")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of: {', '.join(SETS)}")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each set's model in this folder and reuse it on later runs (measuring engine changes)")
    parser.add_argument("--seeds", type=int, default=3, help="cohorts generated per model, one seed each")
    args = parser.parse_args()
    for name in args.sets.split(","):
        run(name, *SETS[name], args.steps, args.keep, args.seeds)


if __name__ == "__main__":
    main()
