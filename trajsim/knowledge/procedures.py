"""Procedures a chart calls for, as data (`data/procedures.csv`): the tests a guideline orders when a
condition is diagnosed (an ECG and an echocardiogram in heart failure), repeats while it lasts
(spirometry in COPD) or does at the visits made for it (a nebulizer in a COPD exacerbation, the
fetal heart at a prenatal visit), and what every stay with drugs to reconcile gets (medication
reconciliation at discharge).
Screenings due by age alone are `screenings.csv`'s; the procedure that treats an acute condition is
`acute_care.csv`'s."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources.abc import Traversable

from trajsim.events import ENCOUNTER_CLASSES
from trajsim.knowledge.tables import DATA, TableError, read_table
from trajsim.vocab import load_vocabulary

# when a procedure is due: at the visit a condition is first recorded, at visits while it is active
# (at most once an interval), at the visits made for it, whose type names it (an exacerbation's), or
# at the visits of its settings where the patient takes or is ordered a drug (a discharge's
# medication reconciliation: with no drug there is no list to reconcile)
DUE_AT = ("diagnosis", "visit", "reason", "medications")
MOMENTS = ("start", "end")  # when in the visit it is done: on arrival, or at discharge


@dataclass(frozen=True)
class IndicatedProcedure:
    """A procedure a condition (None: any visit of the `settings`) calls for at ages from `age_min`,
    done with probability `share` each time it is due."""

    condition: str | None  # key in conditions.csv
    code: str
    due_at: str  # one of DUE_AT
    moment: str  # one of MOMENTS
    settings: frozenset[str]  # encounter classes it is done in (empty: any)
    interval_days: float  # "visit": at most once in this many days (0: every such visit)
    age_min: float
    share: float


@cache
def indicated_procedures() -> tuple[IndicatedProcedure, ...]:
    """The shipped `data/procedures.csv`."""
    return read_indicated_procedures(DATA.joinpath("procedures.csv"))


def read_indicated_procedures(path: Traversable) -> tuple[IndicatedProcedure, ...]:
    """The rows of a procedures table, checked: allowed values, procedure codes the vocabulary knows,
    shares in (0, 1]; otherwise a `TableError` naming the file, line and allowed values."""
    rows = read_table(path, ("condition", "code", "at", "moment", "settings", "interval_days", "age_min", "share"))
    vocabulary = load_vocabulary()
    procedures = []
    for line, r in enumerate(rows, start=2):
        settings = frozenset(filter(None, r["settings"].split(";")))
        numbers = {column: _number(r[column]) for column in ("interval_days", "age_min", "share")}
        problems = [
            *(f"{column} {r[column]!r}; allowed: a number, or empty" for column, value in numbers.items()
              if value is None),
            f"at {r['at']!r}; allowed: {', '.join(DUE_AT)}" if r["at"] not in DUE_AT else "",
            f"moment {r['moment']!r}; allowed: {', '.join(MOMENTS)}" if r["moment"] not in MOMENTS else "",
            f"settings {r['settings']!r}; allowed: encounter classes {', '.join(ENCOUNTER_CLASSES)} separated by "
            f"';', or empty" if settings - set(ENCOUNTER_CLASSES) else "",
            f"code {r['code']!r} is not a procedure in the vocabulary"
            if r["code"] not in vocabulary or vocabulary[r["code"]].domain != "procedure" else "",
            f"condition empty with at {r['at']!r}; allowed only with at 'visit' or 'medications'"
            if not r["condition"] and r["at"] not in ("visit", "medications") else "",
            f"share {r['share']!r}; allowed: a number above 0 and at most 1"
            if numbers["share"] is not None and not 0 < numbers["share"] <= 1 else "",
        ]
        problem = next((p for p in problems if p), None)
        if problem:
            raise TableError(f"{path} line {line}: {problem}")
        procedures.append(IndicatedProcedure(r["condition"] or None, r["code"], r["at"], r["moment"], settings,
                                             numbers["interval_days"], numbers["age_min"], numbers["share"]))
    return tuple(procedures)


def _number(text: str) -> float | None:
    """A table's number (empty: 0), or None for text that is not one."""
    try:
        return float(text or 0)
    except ValueError:
        return None
