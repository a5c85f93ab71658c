"""The exporter's small data tables (`fhir_export/data/*.csv`, each row citing its source)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from trajsim.knowledge import read_table


@cache
def load_table(name: str, columns: tuple[str, ...]) -> tuple[dict[str, str], ...]:
    """Rows of `data/<name>.csv`, read by the checked clinical-table loader with the `columns` the
    caller uses (cached per process; treat as read-only)."""
    return tuple(read_table(resources.files(__package__).joinpath(f"data/{name}.csv"), columns))
