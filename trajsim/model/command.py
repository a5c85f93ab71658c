"""`trajsim train`: fit a sequence model to an event table and write a model folder."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import TextColumn
from rich.table import Table

from trajsim.atomic import folder_problem
from trajsim.console import console, fail, progress_bar
from trajsim.model.gpt import GPTConfig
from trajsim.model.train import CHECKPOINT, TrainConfig, train

DEFAULTS = TrainConfig()


def _model_config(n_layer: int | None, n_embd: int | None, block_size: int | None) -> GPTConfig | None:
    """The sizes the user set, the others at GPTConfig's defaults; None when none is set (sized for the data)."""
    chosen = {k: v for k, v in {"n_layer": n_layer, "n_embd": n_embd, "block_size": block_size}.items() if v is not None}
    return replace(GPTConfig(), **chosen) if chosen else None


def train_command(
    events: Path = typer.Option(..., "--events", "-e", help="Event table: canonical Parquet file or folder of parts (e.g. out/events), or records in any format `trajsim ingest` reads."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (weights, tokenizer.json, MODEL_CARD.md)."),
    seed: int = typer.Option(DEFAULTS.seed, help="Random seed (split, initial weights, batches)."),
    max_steps: int = typer.Option(DEFAULTS.max_steps, help="Training steps at most (early stopping may end sooner)."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, help="Patients per training step."),
    eval_every: int = typer.Option(DEFAULTS.eval_every, help="Steps between validation (and checkpoints)."),
    min_count: int = typer.Option(DEFAULTS.min_count, help="Codes seen fewer times fold into a rare-code token."),
    n_layer: int | None = typer.Option(None, help="Transformer layers [default: from the data, 2 or 4]."),
    n_embd: int | None = typer.Option(None, help="Embedding width [default: from the vocabulary, 64 to 192]."),
    block_size: int | None = typer.Option(None, help="Context in tokens [default: holds nine records in ten, 128 to 1024; "
                                                       "longer records are learned and written in windows]."),
    description: str = typer.Option("", help="What the training data is, for the model card."),
    restart: bool = typer.Option(False, "--restart", help="Ignore a checkpoint left in --out and train afresh."),
    engine_schedules: str = typer.Option(
        "", help="Kinds of fact the events got from trajsim's own schedules, comma-separated ('well visits,"
                 "immunizations': a cohort of the reference simulator); the engine writes them when the model runs."),
) -> None:
    """Train a sequence model on an event table (resumes an interrupted run in the same folder)."""
    from trajsim.ingest import IngestError, load_events

    if problem := folder_problem(out):
        raise fail(problem)
    try:
        table = load_events(events)
    except (IngestError, FileNotFoundError, OSError) as exc:
        raise fail(str(exc)) from None
    config = TrainConfig(seed=seed, max_steps=max_steps, batch_size=batch_size, eval_every=eval_every,
                         min_count=min_count,
                         model=_model_config(n_layer, n_embd, block_size))
    if (out / CHECKPOINT).exists() and not restart:
        console.print(f"Resuming from {out / CHECKPOINT}", markup=False)
    started = time.perf_counter()
    progress = progress_bar(TextColumn("loss {task.fields[loss]:.3f}  val {task.fields[val]}"))
    with progress:
        task = progress.add_task("Training", total=max_steps, loss=float("nan"), val="-")

        def on_step(step: int, loss: float, val_loss: float | None) -> None:
            fields = {"val": f"{val_loss:.3f}"} if val_loss is not None else {}
            progress.update(task, completed=step, loss=loss, **fields)

        try:
            result = train(table, out, config, description or f"Events from `{events}`.", on_step, restart,
                           [kind.strip() for kind in engine_schedules.split(",") if kind.strip()])
        except ValueError as exc:
            raise fail(f"{events}: {exc}") from None
    summary = Table(title=f"{escape(str(out))}: trained in {time.perf_counter() - started:.0f} s")
    summary.add_column("what")
    summary.add_column("value", justify="right")
    for label, value in (("patients (train / validation)", f"{result.train_patients:,} / {result.val_patients:,}"),
                         ("training tokens", f"{result.train_tokens:,}"), ("steps", f"{result.steps:,}"),
                         ("best validation loss", f"{result.best_val_loss:.4f} (step {result.best_step:,})"),
                         ("stopped early", "yes" if result.stopped_early else "no")):
        summary.add_row(label, value)
    console.print(summary)
