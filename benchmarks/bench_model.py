"""Sequence-model benchmark: sampling throughput batched vs one at a time, patients/s of full
generation with the shipped model, and the code-prevalence fit of a model trained briefly on the
shared Synthea FHIR bundles (weights written to a temporary folder, never kept).

    python benchmarks/bench_model.py [--synthea-steps 300] [--patients 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trajsim.engine import simulate
from trajsim.ingest import load_events
from trajsim.model import DEFAULT_MODEL
from trajsim.model.gpt import GPT
from trajsim.model.sample import generate, one_thread
from trajsim.model.source import ModelSource
from trajsim.model.tokenizer import BOS, EOS, Tokenizer
from trajsim.model.train import TrainConfig, load_model, train
from trajsim.scenario import Scenario, with_overrides
from refdata import SYNTHEA_BUNDLES as SYNTHEA



def prompts(tokenizer: Tokenizer, rows: int, seed: int = 0) -> torch.Tensor:
    """Demographic prompts (BOS, sex, birth band) for random adults."""
    rng = np.random.default_rng(seed)
    index = tokenizer.index
    return torch.tensor([[index[BOS], index[rng.choice(["SEX/F", "SEX/M"])], index[f"BIRTH/{rng.integers(190, 201) * 10}"]]
                         for _ in range(rows)])


def tokens_per_second(model: GPT, tokenizer: Tokenizer, rows: int, new_tokens: int) -> float:
    """Unconstrained sampling of `rows` rows at once, each run to `new_tokens` tokens."""
    started = time.perf_counter()
    out = generate(model, prompts(tokenizer, rows), [np.random.default_rng(i) for i in range(rows)], new_tokens,
                   stop_token=-1)  # no stop token: every row runs the full length
    return rows * (out.shape[1] - 3) / (time.perf_counter() - started)


def sampling_speed(new_tokens: int = 200) -> None:
    model, tokenizer = load_model(DEFAULT_MODEL)
    batched = tokens_per_second(model, tokenizer, 256, new_tokens)
    single = np.median([tokens_per_second(model, tokenizer, 1, new_tokens) for _ in range(5)])
    print(f"sampling, default model ({model.num_parameters():,} parameters), one thread, {new_tokens} tokens per row:")
    print(f"  one at a time      {single:10,.0f} tokens/s")
    print(f"  batch of 256       {batched:10,.0f} tokens/s   ({batched / single:.1f}x)")


def generation_speed(patients: int) -> None:
    """Full records through the engine (rules, schedules, deaths) with the shipped model."""
    scenario = with_overrides(Scenario(), "benchmark", **{"population.size": patients, "model": "default"})
    source = ModelSource(DEFAULT_MODEL)
    started = time.perf_counter()
    with one_thread():
        records = list(simulate(scenario, source))
    seconds = time.perf_counter() - started
    events = sum(len(r.events) for r in records)
    print(f"full generation, default scenario, {patients} patients on one core: {patients / seconds:,.1f} patients/s "
          f"({events / patients:,.0f} events per patient, {seconds:.1f} s)")


def code_prevalence(sequences: list[list[int]], tokenizer: Tokenizer) -> dict[str, float]:
    """Share of patients whose sequence holds each code (value bins merged into their code)."""
    counts: dict[str, int] = {}
    for ids in sequences:
        for code in {tokenizer.vocab[i].partition("#")[0] for i in ids if tokenizer.is_code(tokenizer.vocab[i])}:
            counts[code] = counts.get(code, 0) + 1
    return {code: n / len(sequences) for code, n in counts.items()}


def synthea_fidelity(steps: int) -> None:
    if not SYNTHEA.is_dir():
        print(f"Synthea fidelity: skipped, reference data not found at {SYNTHEA}")
        return
    started = time.perf_counter()
    events = load_events(SYNTHEA, "fhir")
    loaded = time.perf_counter() - started
    config = TrainConfig(max_steps=steps, eval_every=100, patience=100)
    with tempfile.TemporaryDirectory() as folder, one_thread():
        result = train(events, Path(folder), config, "Synthea FHIR R4 sample (benchmark only)")
        model, tokenizer = load_model(Path(folder))
    trained = time.perf_counter() - started - loaded
    real = [ids[: model.config.block_size] for _, ids in tokenizer.encode(events)]
    index = tokenizer.index
    rows = torch.tensor([ids[:3] for ids in real])  # the same sexes and birth bands as the real patients
    with one_thread():
        fake = generate(model, rows, [np.random.default_rng(i) for i in range(len(real))], model.config.block_size,
                        index[EOS])
    real_prevalence = code_prevalence(real, tokenizer)
    fake_prevalence = code_prevalence([row.tolist() for row in fake], tokenizer)
    codes = sorted(real_prevalence)
    x = np.array([real_prevalence[c] for c in codes])
    y = np.array([fake_prevalence.get(c, 0.0) for c in codes])
    r2 = np.corrcoef(x, y)[0, 1] ** 2
    print(f"Synthea FHIR bundles: {events['subject_id'].n_unique()} patients, {events.height:,} events "
          f"(ingest {loaded:.0f} s); trained {result.steps} steps in {trained:.0f} s, validation loss {result.best_val_loss:.3f}")
    print(f"  code prevalence, generated vs training patients: Pearson r^2 = {r2:.3f} over {len(codes)} codes "
          f"(target >= 0.8)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=512, help="cohort size for the generation benchmark")
    parser.add_argument("--synthea-steps", type=int, default=300, help="training steps on the Synthea bundles")
    args = parser.parse_args()
    with one_thread():
        sampling_speed()
    generation_speed(args.patients)
    synthea_fidelity(args.synthea_steps)


if __name__ == "__main__":
    main()
