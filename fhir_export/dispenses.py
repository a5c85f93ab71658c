"""Pharmacy fills of a prescription: the first fill when it is ordered, then a refill each time
the supply runs out, within the repeats and the expected supply its dispenseRequest allows, until
the order ends (renewed, stopped, the patient's death or the end of the record). A renewal at a
visit is a new MedicationRequest; a refill between visits is a MedicationDispense of the same one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from fhir_export.terminology import ACT_CODE, MEDICATION_CATEGORIES, concept, profile

Resource = dict[str, Any]
FIRST_FILL = concept(ACT_CODE, "FF", "First Fill")
REFILL = concept(ACT_CODE, "RF", "Refill")
# A new prescription is picked up later the same day; a refill is ready on the day the supply runs out.
PICKUP_DELAY = timedelta(hours=2)


def fill_times(order: Resource, until: datetime) -> Iterator[datetime]:
    """When the pharmacy hands over each fill of a community `order` before `until`. Orders given
    in hospital (category inpatient) are administered there, not dispensed to the patient."""
    if order["category"] == MEDICATION_CATEGORIES["IMP"]:
        return
    authored = datetime.fromisoformat(order["authoredOn"].removesuffix("Z"))
    request = order.get("dispenseRequest")
    repeats = request["numberOfRepeatsAllowed"] if request is not None else 0
    supply = timedelta(days=request["expectedSupplyDuration"]["value"]) if request is not None else timedelta(0)
    for fill in range(repeats + 1):
        moment = authored + PICKUP_DELAY + fill * supply
        if moment >= until:
            return
        yield moment


def dispense(dispense_id: str, order: Resource, order_reference: dict[str, str], pharmacy: dict[str, str],
             handed_over: str, first: bool) -> Resource:
    """The completed MedicationDispense `dispense_id` of one fill of `order` by `pharmacy`; the first
    fill belongs to the visit that ordered it."""
    request = order.get("dispenseRequest", {})
    resource = {"resourceType": "MedicationDispense", "id": dispense_id, "meta": profile("us-core-medicationdispense"),
                "status": "completed", "medicationCodeableConcept": order["medicationCodeableConcept"],
                "subject": order["subject"],
                **({"context": order["encounter"]} if first and "encounter" in order else {}),
                "performer": [{"actor": pharmacy}], "authorizingPrescription": [order_reference],
                "type": FIRST_FILL if first else REFILL}
    if "quantity" in request:
        resource["quantity"] = request["quantity"]
    if "expectedSupplyDuration" in request:
        resource["daysSupply"] = request["expectedSupplyDuration"]
    resource["whenPrepared"] = resource["whenHandedOver"] = handed_over
    if "dosageInstruction" in order:
        resource["dosageInstruction"] = order["dosageInstruction"]
    return resource
