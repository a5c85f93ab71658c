"""The sequence model: tokenizer, transformer, training and batched sampling, and the model as the
engine's trajectory source. Heavy modules (torch) load only when used."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
REFERENCE = "reference"  # the scenario's `model` value for the rule-based simulator


def model_folder(model: str) -> Path | None:
    """The model folder a scenario's `model` names ("default" is the shipped model); None for the
    rule-based reference simulator."""
    if model == REFERENCE:
        return None
    return DEFAULT_MODEL if model == "default" else Path(model)
