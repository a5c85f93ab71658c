"""The orders behind lab results: a ServiceRequest for each panel or single test ordered at a visit,
and the Specimen drawn for it, so a receiving EHR can link every result to what was ordered and what
was tested. The specimen's type is read from the System part of the order's LOINC name
("... in Serum or Plasma" for a test, "... panel - Urine" for a panel), mapped to SNOMED CT in
`data/specimen_types.csv`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from fhir_export.tables import load_table
from fhir_export.terminology import TRAJSIM_IDENTIFIERS, concept, profile
from trajsim.vocab import SYSTEM_URIS

Resource = dict[str, Any]
LAB_ORDER_CATEGORY = [concept(SYSTEM_URIS["SNOMED"], "108252007", "Laboratory procedure")]


@dataclass
class LabOrder:
    """One ordered panel or test: its ServiceRequest, its Specimen, and the results reported on it."""

    request: Resource
    specimen: Resource
    results: list[Resource] = field(default_factory=list)


@cache
def _specimen_types() -> dict[str, dict[str, Any]]:
    """LOINC System (as written in long names; "" for one trajsim does not know) -> SNOMED CT type."""
    return {row["loinc_system"]: concept(SYSTEM_URIS["SNOMED"], row["code"].removeprefix("SNOMED/"), row["display"])
            for row in load_table("specimen_types", ("loinc_system", "code", "display"))}


@lru_cache(maxsize=1024)
def specimen_type(test_name: str) -> dict[str, Any]:
    """The SNOMED CT specimen type of a test or panel, from the System its LOINC long name states
    after the last " in " (and before any " by <method>"), or a panel's after " - ": blood, serum,
    plasma or urine."""
    if " in " in test_name:
        system = test_name.rpartition(" in ")[2].partition(" by ")[0]
    else:
        system = test_name.rpartition(" - ")[2] if " - " in test_name else ""
    types = _specimen_types()
    return types.get(system, types[""])


def order_lab(ids: tuple[str, str], code: dict[str, Any], test_name: str, accession: str, subject: dict[str, str],
              context: dict[str, Any], authored: str, collected: str, requester: dict[str, str],
              reference: Callable[[Resource], dict[str, str]]) -> LabOrder:
    """The completed order (`ids[0]`) of the test or panel `code` and its specimen (`ids[1]`),
    collected at `collected`; `context` holds the visit's encounter reference, if any."""
    request = {"resourceType": "ServiceRequest", "id": ids[0], "meta": profile("us-core-servicerequest"),
               "status": "completed", "intent": "order", "category": LAB_ORDER_CATEGORY, "code": code,
               "subject": subject, **context, "occurrenceDateTime": collected, "authoredOn": authored,
               "requester": requester}
    specimen = {"resourceType": "Specimen", "id": ids[1], "meta": profile("us-core-specimen"),
                "identifier": [{"system": TRAJSIM_IDENTIFIERS + "specimen-id", "value": accession + "/specimen"}],
                "accessionIdentifier": {"system": TRAJSIM_IDENTIFIERS + "accession", "value": accession},
                "status": "unavailable",  # used up by the tests
                "type": specimen_type(test_name), "subject": subject, "request": [reference(request)],
                "collection": {"collectedDateTime": collected}}
    request["specimen"] = [reference(specimen)]
    return LabOrder(request, specimen)
