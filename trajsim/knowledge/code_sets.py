"""Named code sets for common conditions and drug classes, so a trial planner can write
`@hypertension` or `@statins` instead of hunting for codes in the knowledge tables.

`data/code_sets.csv` lists, per set, the codes trajsim records, the codes Synthea records for the
same idea and common ICD-10-CM codes of real claims and EHR data; drug classes list each ingredient's
RxNorm code (which, with an OMOP vocabulary, stands for every product of it) and the products seen in
trajsim and Synthea records. Each row cites where its code comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from trajsim.knowledge.tables import DATA, read_table

PREFIX = "@"  # how a criterion names a shipped set: "@hypertension"


class UnknownCodeSetError(ValueError):
    """A `@name` that names no shipped set; the message lists the ones there are."""


@dataclass(frozen=True)
class NamedCodeSet:
    """One shipped set: its name (without the @), a label for reports and its codes with displays."""

    name: str
    label: str
    displays: dict[str, str]  # SYSTEM/CODE -> display, in the order of the table

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(self.displays)


@cache
def named_code_sets() -> dict[str, NamedCodeSet]:
    """Every shipped set by name, in the order of `data/code_sets.csv`."""
    rows = read_table(DATA.joinpath("code_sets.csv"), ("set", "label", "code", "display", "source"))
    sets: dict[str, NamedCodeSet] = {}
    for row in rows:
        named = sets.setdefault(row["set"], NamedCodeSet(row["set"], row["label"], {}))
        named.displays[row["code"]] = row["display"]
    return sets


def named_code_set(entry: str) -> NamedCodeSet:
    """The set `entry` ("@name") names, or UnknownCodeSetError with a sentence listing the known names."""
    sets = named_code_sets()
    name = entry.removeprefix(PREFIX)
    if name not in sets:
        raise UnknownCodeSetError(f"{entry!r} is not a named code set; the known ones are "
                       + ", ".join(PREFIX + known for known in sets))
    return sets[name]
