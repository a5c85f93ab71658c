"""Train a sequence model on an event table: deterministic, resumable, with early stopping.

A model folder holds `model.pt` (config and weights), `tokenizer.json` and `MODEL_CARD.md`.
While training it also holds `checkpoint.pt`, written atomically at every evaluation with the
optimizer and random-generator states, so a run interrupted at any point and started again ends
with exactly the weights an uninterrupted run would have; the checkpoint is removed at the end.
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import torch

from trajsim.atomic import write_bytes_atomic
from trajsim.engine.source import DEFERRABLE_KINDS, FactKind
from trajsim.events import MEDICATION_END
from trajsim.model.population import MIN_CELL, summarize, write_summary
from trajsim.model.gpt import GPT, GPTConfig
from trajsim.model.indications import always_indicated, learned_indications
from trajsim.model.pregnancy import pregnancy_only_codes
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.lifecycles import PREGNANCY, same_condition
from trajsim.model.tokenizer import HEADER, PAD, YEAR_AT, Tokenizer

WEIGHTS, TOKENIZER, CARD, CHECKPOINT = "model.pt", "tokenizer.json", "MODEL_CARD.md", "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything that decides the trained weights (with the data)."""

    seed: int = 0
    min_count: int = 5  # codes seen fewer times fold into a per-system category token
    n_bins: int = 10  # quantile bins per lab/vital code
    val_fraction: float = 0.1
    batch_size: int = 16
    learning_rate: float = 2e-3
    min_learning_rate: float = 2e-4
    warmup_steps: int = 50
    weight_decay: float = 0.01
    max_steps: int = 800
    eval_every: int = 100
    patience: int = 4  # evaluations without improvement before stopping early
    model: GPTConfig | None = None  # None: sized for the data (`sized_for`)


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_val_loss: float
    stopped_early: bool
    train_patients: int
    val_patients: int
    train_tokens: int


# (step, training loss, validation loss or None)
StepCallback = Callable[[int, float, float | None], None]


def split_subjects(subject_ids: list[int], val_fraction: float, seed: int) -> tuple[set[int], set[int]]:
    """A seeded patient-level split into (train, validation) subject ids."""
    ids = sorted(subject_ids)
    # positions, not ids, are permuted: OMOP ids read as unsigned 64-bit reach past 2^63, where numpy
    # would turn them into floats and lose their last digits
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_val = max(1, round(len(order) * val_fraction)) if len(order) > 1 else 0
    return {int(s) for s in order[n_val:]}, {int(s) for s in order[:n_val]}


def sized_for(sequences: list[list[int]], vocab_size: int) -> GPTConfig:
    """A model big enough for its data: a context that holds nine records in ten whole (a power of
    two from 128 to 1024; longer records are learned and written in overlapping windows), width that
    grows with the vocabulary once there are a million tokens to learn it from, and depth with the
    tokens."""
    lengths = np.array([len(ids) for ids in sequences] or [0])
    block_size = int(min(1024, max(128, 2 ** math.ceil(math.log2(max(np.quantile(lengths, 0.9), 1))))))
    tokens = int(lengths.sum())
    # Width for a vocabulary only pays where there are tokens to learn it from: 49 MIMIC patients
    # hold 10,000 codes but 400,000 tokens.
    n_embd = 64 if vocab_size <= 1_000 or tokens < 1_000_000 else 128 if vocab_size <= 5_000 or tokens < 10_000_000 else 192
    n_layer = 2 if tokens < 2_000_000 else 4
    return GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_embd=n_embd)


def windows(ids: list[int], length: int, year_tokens: Collection[int] = (), header: int = HEADER) -> list[list[int]]:
    """A record as training rows of at most `length` tokens: the record itself when it fits, else
    its start and then overlapping continuations, each led by the record's `header` tokens with, in
    place of the start year, the latest of `year_tokens` before it, as the sampler continues a long
    record: a continuation knows the year it has reached even where no year mark falls inside it."""
    if len(ids) <= length:
        return [ids]
    body = ids[header:]
    span = length - header
    stride = max(1, span // 2)
    # the year reached before each body position, in one pass: a record of MIMIC's 36,000 tokens
    # costs its length, not its length times its number of windows
    year = next((t for t in reversed(ids[:header]) if t in year_tokens), ids[YEAR_AT])
    reached = []
    for token in body:
        reached.append(year)
        if token in year_tokens:
            year = token
    lead, tail = ids[:YEAR_AT], ids[YEAR_AT + 1:header]
    return [lead + [reached[start]] + tail + body[start:start + span]
            for start in range(0, max(len(body) - span, 0) + stride, stride) if start < len(body)]


def padded(sequences: list[list[int]], length: int, pad: int) -> torch.Tensor:
    """Rows of token ids cut or padded to `length`."""
    out = torch.full((len(sequences), length), pad, dtype=torch.long)
    for row, ids in enumerate(sequences):
        ids = ids[:length]
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to the minimum at max_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return config.min_learning_rate + 0.5 * (1 + math.cos(math.pi * progress)) * (config.learning_rate - config.min_learning_rate)


@torch.no_grad()
def mean_loss(model: GPT, data: torch.Tensor, pad: int, batch_size: int = 64) -> float:
    """Token-weighted cross-entropy over a whole padded set."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = data[start:start + batch_size]
        batch = batch[:, : int((batch != pad).sum(dim=1).max())]
        targets = int((batch[:, 1:] != pad).sum())
        total += float(model.loss(batch, pad)) * targets
        count += targets
    model.train()
    return total / max(count, 1)


def train(events: pl.DataFrame, out_dir: Path, config: TrainConfig | None = None, data_description: str = "",
          on_step: StepCallback | None = None, restart: bool = False,
          engine_schedules: Sequence[str] = ()) -> TrainResult:
    """Fit tokenizer and model to `events`, writing the model folder; resumes from a checkpoint in
    `out_dir` left by an interrupted run with the same config and data (`restart` ignores it).
    `engine_schedules` names the kinds of fact the events got from trajsim's own schedules, which
    the engine writes when the model runs (`Tokenizer.engine_schedules`)."""
    config = config or TrainConfig()
    out_dir = Path(out_dir)
    subjects = events.get_column("subject_id").unique().to_list()
    if len(subjects) < 2:
        raise ValueError("training needs events of at least two patients (one for validation)")
    train_ids, val_ids = split_subjects(subjects, config.val_fraction, config.seed)
    train_events = events.filter(pl.col("subject_id").is_in(list(train_ids)))
    tokenizer = Tokenizer.fit(train_events, config.min_count, config.n_bins)
    pad = tokenizer.index[PAD]
    train_seqs = [ids for _, ids in tokenizer.encode(train_events)]
    tokenizer.longest_record = max(len(ids) for ids in train_seqs)
    if unknown := [kind for kind in engine_schedules if kind not in {k.value for k in DEFERRABLE_KINDS}]:
        raise ValueError(f"engine schedules {unknown}: the engine schedules only "
                         f"{', '.join(sorted(k.value for k in DEFERRABLE_KINDS))}")
    tokenizer.engine_schedules = [kind.value for kind in FactKind if kind.value in engine_schedules]
    tokenizer.drug_indications = learned_indications(train_events)
    tokenizer.always_indicated = always_indicated(train_events, tokenizer.drug_indications)
    tokenizer.records_stops = bool((train_events["code"] == MEDICATION_END).any())
    tokenizer.pregnancy_codes = pregnancy_only_codes(train_events, same_condition(load_knowledge(), PREGNANCY))
    val_seqs = [ids for _, ids in tokenizer.encode(events.filter(pl.col("subject_id").is_in(list(val_ids))))]
    model_config = (GPTConfig(**{**asdict(config.model), "vocab_size": len(tokenizer.vocab)}) if config.model
                    else sized_for(train_seqs, len(tokenizer.vocab)))
    model_config = replace(model_config, **tokenizer.calendar())
    length = model_config.block_size + 1  # inputs and shifted targets
    years = set(tokenizer.year_tokens().values())
    train_data, val_data = (padded([w for ids in seqs for w in windows(ids, length, years, tokenizer.header_length)], length, pad)
                            for seqs in (train_seqs, val_seqs))
    train_lengths = (train_data != pad).sum(dim=1)
    # windows in length order, ties (the full windows of long records) in a seeded random order: in
    # record order a batch of neighbours was mostly one long record's consecutive windows (MIMIC in
    # OMOP, 100 steps: validation loss 2.73 -> 2.66)
    shuffled = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(config.seed))
    by_length = shuffled[torch.argsort(train_lengths[shuffled], stable=True)]

    torch.manual_seed(config.seed)
    model = GPT(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    batches = torch.Generator().manual_seed(config.seed)
    state = {"step": 0, "best_step": 0, "best_val_loss": math.inf, "since_best": 0,
             "best_weights": copy.deepcopy(model.state_dict())}
    checkpoint_path = out_dir / CHECKPOINT
    data = _fingerprint(tokenizer, train_ids, val_ids)
    if checkpoint_path.exists() and not restart:
        saved = _load_checkpoint(checkpoint_path)
        if saved["config"] != asdict(config):
            raise ValueError(f"{checkpoint_path}: left by a run with other settings; pass --restart to start afresh")
        if saved.get("data") != data:
            raise ValueError(f"{checkpoint_path}: left by a run on other data; pass --restart to start afresh")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        batches.set_state(saved["batches"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]

    model.train()
    stopped_early = False
    while state["step"] < config.max_steps:
        step = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        # a batch of neighbours in length order, so little of it is padding
        first = int(torch.randint(max(1, len(train_data) - config.batch_size + 1), (1,), generator=batches))
        rows = by_length[first:first + config.batch_size]
        batch = train_data[rows, : int(train_lengths[rows].max())]
        loss = model.loss(batch, pad)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state["step"] = step = step + 1
        val_loss = None
        if step % config.eval_every == 0 or step == config.max_steps:
            val_loss = mean_loss(model, val_data, pad)
            if val_loss < state["best_val_loss"]:
                state.update(best_step=step, best_val_loss=val_loss, since_best=0,
                             best_weights=copy.deepcopy(model.state_dict()))
            else:
                state["since_best"] += 1
            _save_checkpoint(checkpoint_path, config, data, model, optimizer, batches, state)
        if on_step is not None:
            on_step(step, loss.item(), val_loss)
        if state["since_best"] >= config.patience:
            stopped_early = True
            break

    model.load_state_dict(state["best_weights"])
    result = TrainResult(state["step"], state["best_step"], state["best_val_loss"], stopped_early,
                         len(train_ids), len(val_ids), int(train_lengths.sum()))
    save_model(out_dir, model, tokenizer)
    if len(train_ids) >= MIN_CELL:  # fewer patients cannot be summarised without revealing one
        write_summary(out_dir, summarize(train_events))
    write_bytes_atomic(out_dir / CARD, model_card(events, tokenizer, model, config, result, data_description).encode())
    checkpoint_path.unlink(missing_ok=True)
    return result


def _fingerprint(tokenizer: Tokenizer, train_ids: set[int], val_ids: set[int]) -> str:
    """Identity of the training data a checkpoint belongs to: its vocabulary and patient split."""
    digest = hashlib.sha256(orjson.dumps([tokenizer.vocab, sorted(train_ids), sorted(val_ids)]))
    return digest.hexdigest()


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint's tensors and numbers; never runs code from the file (weights only)."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as exc:  # a crafted pickle or a corrupt file: refuse, naming it
        raise ValueError(f"{path}: not a trajsim training checkpoint ({type(exc).__name__}); "
                         "pass --restart to start afresh") from None


def _save_checkpoint(path: Path, config: TrainConfig, data: str, model: GPT, optimizer: torch.optim.Optimizer,
                     batches: torch.Generator, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"config": asdict(config), "data": data, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "batches": batches.get_state(), "torch_rng": torch.get_rng_state(), "state": state}, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def save_model(out_dir: Path, model: GPT, tokenizer: Tokenizer) -> None:
    buffer = io.BytesIO()
    torch.save({"config": asdict(model.config), "weights": model.state_dict()}, buffer)
    write_bytes_atomic(Path(out_dir) / WEIGHTS, buffer.getvalue())
    tokenizer.save(Path(out_dir) / TOKENIZER)


def load_model(folder: Path) -> tuple[GPT, Tokenizer]:
    """The model and tokenizer of a model folder, ready for sampling."""
    folder = Path(folder)
    for name in (WEIGHTS, TOKENIZER):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: not a model folder (no {name}); train one with `trajsim train`")
    saved = torch.load(folder / WEIGHTS, weights_only=True)
    model = GPT(GPTConfig(**saved["config"]))
    model.load_state_dict(saved["weights"])
    model.eval()
    return model, Tokenizer.load(folder / TOKENIZER)


def model_card(events: pl.DataFrame, tokenizer: Tokenizer, model: GPT, config: TrainConfig, result: TrainResult,
               data_description: str) -> str:
    """The model card: what the model was trained on, how, how well, and what it is for."""
    times = events.get_column("time")
    folded = sum(len(codes) for codes in tokenizer.folded.values())
    hyper = {k: v for k, v in asdict(config).items() if k != "model"} | asdict(model.config)
    rows = "\n".join(f"| `{k}` | {v} |" for k, v in hyper.items())
    scheduled = (f" Its training records got their {' and '.join(tokenizer.engine_schedules)} from trajsim's own "
                 "schedules, so the engine writes those (the periodicity and ACIP schedules) and drops what the model "
                 "writes of them (a well visit's findings go to the engine's next well visit)."
                 if tokenizer.engine_schedules else "")
    return f"""# Model card

## Training data
{data_description or "An event table given to `trajsim train`."}

- patients: {result.train_patients + result.val_patients:,} ({result.train_patients:,} training, {result.val_patients:,} validation, split by patient)
- events: {events.height:,}, from {times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}
- training tokens: {result.train_tokens:,}; vocabulary: {len(tokenizer.vocab)} tokens
- codes: {len([t for t in tokenizer.vocab if tokenizer.is_code(t) and '#' not in t and not t.startswith('RARE/')])} kept, {folded} rare codes (fewer than {config.min_count} occurrences) folded into {len(tokenizer.folded)} category token(s)
- lab and vital codes with value bins: {len(tokenizer.value_edges)} ({config.n_bins} quantile bins each)

## Model and training
Decoder-only transformer, {model.num_parameters():,} parameters. Training ran {result.steps:,} steps
({"stopped early: validation loss stopped improving" if result.stopped_early else "to the step limit"});
the weights kept are those of step {result.best_step:,}.

| hyper-parameter | value |
|---|---|
{rows}

## Evaluation
- validation loss (mean next-token cross-entropy, nats): **{result.best_val_loss:.4f}**

## Intended use
Proposing visit-level trajectories inside the trajsim engine, to generate synthetic cohorts for
software testing, teaching and method development. The engine's clinical rules mask what the
model may propose; the model authors every kind of fact its vocabulary holds. By default (scenario
`care = "source"`) the engine adds only allergies, smoking status and deaths with their terminal
encounters, and what a rule requires; with `care = "engine"` it also adds its own well visits,
emergencies and renewals, and the kinds the model never learned.{scheduled}

## Limitations
- It can only reproduce patterns present in its training data; a model trained on simulated
  records learns the simulator, not real medicine.
- Birth dates are kept as five-year bands and times at day resolution; values are decoded to a
  random value inside their quantile bin, so within-bin detail and correlations are not kept.
- The context holds {model.config.block_size} tokens ({"chosen for the data: nine records in ten fit whole" if config.model is None else "as set"});
  longer records are learned in overlapping windows led by the record's header (with the year it
  has reached) and written by sliding the context, so what lies more than half a context back is
  not seen when writing; the calendar year and age reached are added at every position.
- Not for clinical decisions or for inferences about real patients.
"""
