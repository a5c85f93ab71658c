"""A minor's parent or guardian (RelatedPerson), named and reached at the patient's home: the
contact an EHR keeps for a child. Who it is follows the living arrangements of US children
(`data/guardians.csv`, Census CPS 2022)."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from itertools import accumulate
from typing import Any

from fhir_export.demographics import draw_name
from fhir_export.identity import stable_random
from fhir_export.tables import load_table
from fhir_export.terminology import ROLE_CODE, concept, profile

Resource = dict[str, Any]
ADULT_AGE = 18


@cache
def _guardians() -> tuple[list[dict[str, str]], list[float]]:
    rows = list(load_table("guardians", ("relationship", "display", "sex", "share")))
    return rows, list(accumulate(float(row["share"]) for row in rows))


def adulthood(birth: datetime) -> datetime:
    """The 18th birthday (1 March for a 29 February birth)."""
    try:
        return birth.replace(year=birth.year + ADULT_AGE)
    except ValueError:
        return birth.replace(year=birth.year + ADULT_AGE, month=3, day=1)


def guardian(person_id: str, patient_key: str, patient: Resource, subject: dict[str, str], birth: datetime) -> Resource:
    """The RelatedPerson `person_id`: the parent or guardian of `patient` from birth, sharing the
    patient's family name, phone and address (`end_guardianship` closes it at the 18th birthday)."""
    rng = stable_random(f"{patient_key}/guardian")
    rows, cumulative = _guardians()
    row = rng.choices(rows, cum_weights=cumulative)[0]
    name = draw_name(rng, row["sex"]) | {"family": patient["name"][0]["family"]}
    return {"resourceType": "RelatedPerson", "id": person_id, "meta": profile("us-core-relatedperson"), "active": True,
            "patient": subject, "relationship": [concept(ROLE_CODE, row["relationship"], row["display"])],
            "name": [name], "telecom": patient["telecom"], "address": patient["address"],
            "gender": "female" if row["sex"] == "F" else "male",
            "period": {"start": birth.date().isoformat()}}


def end_guardianship(person: Resource, birth: datetime, record_end: datetime) -> None:
    """A patient adult by the record's end has outgrown the guardian: no longer active, and
    the relationship's period ends at the 18th birthday."""
    grown = adulthood(birth)
    if grown <= record_end:
        person["active"] = False
        person["period"]["end"] = grown.date().isoformat()
