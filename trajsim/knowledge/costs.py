"""What care costs and who pays it, as data: representative national amounts from public fee
schedules by kind of service and code (`data/fees.csv`: CMS Physician Fee Schedule, Clinical
Laboratory Fee Schedule, CDC vaccine prices, NADAC), and each plan's cost sharing by encounter class
(`data/cost_sharing.csv`). Amounts are in whole cents, so a claim's total is exactly its lines' sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from trajsim.knowledge.insurance import PLANS
from trajsim.knowledge.tables import DATA, TableError, read_table

FEE_KINDS = ("encounter", "procedure", "lab", "immunization", "medication")
ANY_CODE = "*"  # the fee of a kind's codes the table does not list
USUAL_CLASS = "AMB"  # prices and cost sharing of an encounter class the tables do not list


@dataclass(frozen=True)
class Fee:
    """A representative amount in cents `per` unit of service (visit, day, test, dose, fill, procedure)."""

    cents: int
    per: str


@dataclass(frozen=True)
class CostSharing:
    """What the patient pays under a plan: a fixed copay on the visit line, then a coinsurance share."""

    copay_cents: int
    coinsurance: float


def _cents(text: str) -> int:
    return round(float(text) * 100)


@cache
def fees() -> dict[tuple[str, str], Fee]:
    """(kind, code) -> Fee; every kind has a `*` row for codes it does not list."""
    rows = read_table(DATA.joinpath("fees.csv"), ("kind", "code", "amount", "per", "source"))
    table = {(row["kind"], row["code"]): Fee(_cents(row["amount"]), row["per"]) for row in rows}
    unknown = sorted({kind for kind, _ in table} - set(FEE_KINDS))
    if unknown:
        raise TableError(f"fees.csv: unknown kind(s) {', '.join(unknown)}; allowed: {', '.join(FEE_KINDS)}")
    missing = [kind for kind in FEE_KINDS if kind != "encounter" and (kind, ANY_CODE) not in table]
    if missing or ("encounter", USUAL_CLASS) not in table:
        raise TableError(f"fees.csv: needs a '{ANY_CODE}' row for {', '.join(missing) or 'every kind'} "
                         f"and an encounter row for {USUAL_CLASS}")
    return table


def fee(kind: str, code: str) -> Fee:
    """The amount of one service: by its code, else the kind's usual amount (an encounter by its
    class, else an ambulatory visit's)."""
    table = fees()
    return table.get((kind, code)) or table[(kind, USUAL_CLASS if kind == "encounter" else ANY_CODE)]


@cache
def cost_sharing() -> dict[tuple[str, str], CostSharing]:
    """(plan, encounter class) -> CostSharing, for every plan."""
    rows = read_table(DATA.joinpath("cost_sharing.csv"), ("plan", "encounter_class", "copay", "coinsurance", "source"))
    table = {(row["plan"], row["encounter_class"]): CostSharing(_cents(row["copay"]), float(row["coinsurance"]))
             for row in rows}
    missing = [plan for plan in PLANS if (plan, USUAL_CLASS) not in table]
    if missing:
        raise TableError(f"cost_sharing.csv: no {USUAL_CLASS} row for plan(s) {', '.join(missing)}")
    return table


def patient_shares(plan: str, encounter_class: str, lines: Sequence[int]) -> list[int]:
    """The patient's part of each line (in cents) of a visit's claim whose first line is the visit
    itself: the copay falls on that line (never more than it), the coinsurance on the rest of every line."""
    table = cost_sharing()
    sharing = table.get((plan, encounter_class)) or table[(plan, USUAL_CLASS)]
    shares = []
    for index, amount in enumerate(lines):
        copay = min(sharing.copay_cents, amount) if index == 0 else 0
        shares.append(copay + round((amount - copay) * sharing.coinsurance))
    return shares
