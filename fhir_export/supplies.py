"""The supplies chronic care hands a patient beside a drug, as SupplyDelivery resources the way
Synthea's exporter writes them: test strips, lancets and a meter for blood glucose monitoring on
insulin, a spacer and a peak flow meter for asthma inhalers, a nebulizer for a drug it gives.
Which drug (for which indication) brings what, and how much, is data in `data/supplies.csv`, each
row citing its guideline.

A delivery follows an order written at a visit, first order and renewals alike; consumables come
with every order, a device (`per` "patient") only with the first. The exporter derives them from
the orders in the chart: the engine records no supply facts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir_export.tables import load_table
from fhir_export.terminology import concept
from trajsim.vocab import SYSTEM_URIS

Resource = dict[str, Any]
SUPPLY_ITEM_TYPE = "http://terminology.hl7.org/CodeSystem/supply-item-type"
DEVICE = concept(SUPPLY_ITEM_TYPE, "device", "Device")
PER = ("order", "patient")  # a consumable comes with every order, a device once


@dataclass(frozen=True)
class Supply:
    """One supply an order brings: its SNOMED CT item, how many, and whether only once per patient."""

    code: str  # SNOMED/...
    item: dict[str, Any]  # its CodeableConcept
    quantity: int
    once: bool


@cache
def supplies() -> dict[tuple[str, str], tuple[Supply, ...]]:
    """(RxNorm drug code, indication code or "" for any) -> the supplies an order of it brings."""
    table: dict[tuple[str, str], tuple[Supply, ...]] = {}
    for row in load_table("supplies", ("drugs", "indication", "supply", "supply_display", "quantity", "per")):
        if row["per"] not in PER:
            raise ValueError(f"fhir_export/data/supplies.csv: per {row['per']!r} for {row['supply']}; "
                             f"the allowed values are {', '.join(PER)}")
        supply = Supply(row["supply"], concept(SYSTEM_URIS["SNOMED"], row["supply"].removeprefix("SNOMED/"),
                                               row["supply_display"]),
                        int(row["quantity"]), row["per"] == "patient")
        for drug in row["drugs"].split(";"):
            for indication in row["indication"].split(";"):
                table[drug, indication] = table.get((drug, indication), ()) + (supply,)
    return table


def supplies_for(drug: str, indication: str | None, delivered: set[str]) -> Iterator[Supply]:
    """The supplies one order of `drug` for `indication` brings, leaving out the devices the patient
    was already given (their codes in `delivered`, which this adds to)."""
    for supply in supplies().get((drug, ""), ()) + (supplies().get((drug, indication), ()) if indication else ()):
        if supply.once and supply.code in delivered:
            continue
        delivered.add(supply.code)
        yield supply


def supply_delivery(delivery_id: str, supply: Supply, patient: dict[str, str], supplier: dict[str, str],
                    delivered_at: str) -> Resource:
    """The completed SupplyDelivery `delivery_id` of `supply` to `patient` by `supplier` at `delivered_at`."""
    return {"resourceType": "SupplyDelivery", "id": delivery_id, "status": "completed", "patient": patient,
            "type": DEVICE, "suppliedItem": {"quantity": {"value": supply.quantity}, "itemCodeableConcept": supply.item},
            "occurrenceDateTime": delivered_at, "supplier": supplier}
