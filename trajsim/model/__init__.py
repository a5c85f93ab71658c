"""The sequence model: tokenizer, transformer, training and batched sampling, and the model as the
engine's trajectory source. Heavy modules (torch) load only when used."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# Package data, so a wheel install runs the default scenario too: `default` here is a link to the
# repository's `models/default` (one copy in git) that the build follows.
DEFAULT_MODEL = Path(str(resources.files(__package__).joinpath("default")))
REFERENCE = "reference"  # the scenario's `model` value for the rule-based simulator


def model_folder(model: str) -> Path | None:
    """The model folder a scenario's `model` names ("default" is the shipped model); None for the
    rule-based reference simulator."""
    if model == REFERENCE:
        return None
    return DEFAULT_MODEL if model == "default" else Path(model)
