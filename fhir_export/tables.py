"""The exporter's small data tables (`fhir_export/data/*.csv`, each row citing its source)."""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources


@cache
def load_table(name: str) -> tuple[dict[str, str], ...]:
    """Rows of `data/<name>.csv` as dicts (cached; treat as read-only)."""
    text = resources.files(__package__).joinpath(f"data/{name}.csv").read_text(encoding="utf-8")
    return tuple(csv.DictReader(text.splitlines()))
