"""Measure how a synthetic event table compares with real records: fidelity, privacy, utility and
clinical validity, as metrics.json and a self-contained report.html (see docs/evaluate.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from trajsim.evaluate.section import Headline, Plot, Section
from trajsim.evaluate.trajectories import Views

__all__ = ["Evaluation", "EvaluationError", "Headline", "Plot", "Section", "evaluate"]
FAMILIES = ("comparability", "fidelity", "privacy", "utility", "validity")


class EvaluationError(ValueError):
    """Tables that cannot be compared (e.g. one has no patients); the message says which."""


@dataclass
class Evaluation:
    """Every metric family's section, and what was compared."""

    inputs: dict[str, dict[str, Any]]
    sections: list[Section]

    def metrics(self) -> dict[str, Any]:
        """The JSON document: inputs, the headline numbers, then each family's metrics."""
        return {
            "inputs": self.inputs,
            "headlines": {section.name: {h.label: h.value for h in section.headlines} for section in self.sections},
            **{section.name: section.metrics for section in self.sections},
        }


def evaluate(real: pl.DataFrame, synthetic: pl.DataFrame, train: pl.DataFrame | None = None,
             sources: dict[str, str] | None = None,
             on_family: Callable[[str, float], None] | None = None,
             names: Mapping[str, str] | None = None) -> Evaluation:
    """Compare canonical event tables; `train` (the generator's training records) enables privacy.

    `sources` names each table in the report (e.g. its path); `on_family(name, seconds)` is called
    after each step (view building, then each metric family); `names` are the sources' own names of
    codes the shipped vocabulary lacks (ingested codes tables)."""
    # Imported here so the package attributes `fidelity`, `privacy`, ... stay the modules.
    from trajsim.evaluate.comparability import comparability
    from trajsim.evaluate.fidelity import fidelity
    from trajsim.evaluate.privacy import privacy
    from trajsim.evaluate.utility import utility
    from trajsim.evaluate.validity import validity

    tables = {"real": real, "synthetic": synthetic, **({"train": train} if train is not None else {})}
    started = time.perf_counter()
    views = {name: Views.of(events) for name, events in tables.items()}
    for name, view in views.items():
        if view.patients.height == 0:
            raise EvaluationError(f"the {name} table ({(sources or {}).get(name, name)}) has no patients")
    if on_family is not None:
        on_family("views", time.perf_counter() - started)
    real_views, synthetic_views, train_views = views["real"], views["synthetic"], views.get("train")
    steps: dict[str, Callable[[], Section]] = {
        "comparability": lambda: comparability(real_views, synthetic_views),
        "fidelity": lambda: fidelity(real_views, synthetic_views, names),
        "privacy": lambda: privacy(real_views, synthetic_views, train_views),
        "utility": lambda: utility(real_views, synthetic_views, train_views),
        "validity": lambda: validity(real_views, synthetic_views),
    }
    sections = []
    for name in FAMILIES:
        started = time.perf_counter()
        sections.append(steps[name]())
        if on_family is not None:
            on_family(name, time.perf_counter() - started)
    inputs = {name: {"source": (sources or {}).get(name, name), "patients": view.patients.height,
                     "events": view.events.height, "visits": view.visits.height} for name, view in views.items()}
    return Evaluation(inputs, sections)
