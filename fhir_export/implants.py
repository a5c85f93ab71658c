"""The device an implant procedure leaves in the patient: a US Core Implantable Device with the unique
device identifier (UDI) printed on its label, so a receiving EHR's implant list and an MRI safety
check can find it. Which procedure implants what is data in `data/implants.csv`.

The UDI follows the GS1 system the FDA accredits: a GTIN-14 device identifier with its check digit,
and the production identifiers (manufacture date, expiry, lot, serial) in the human-readable form
"(01)<GTIN>(11)<YYMMDD>(17)<YYMMDD>(10)<lot>(21)<serial>". All parts are drawn from the device's id."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from typing import Any

from fhir_export.identity import stable_random
from fhir_export.tables import load_table
from fhir_export.terminology import concept, profile
from trajsim.vocab import SYSTEM_URIS

Resource = dict[str, Any]
GS1_DI = "http://hl7.org/fhir/NamingSystem/gs1-di"
FDA_UDI = "http://hl7.org/fhir/NamingSystem/fda-udi"
LOT_CHARACTERS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
# An implant is made some weeks to a year before it is used, and sterile packaging is labelled
# for about five years from manufacture.
MADE_BEFORE_DAYS = (30, 365)
SHELF_LIFE_DAYS = 5 * 365


@cache
def implanted_devices() -> dict[str, dict[str, Any]]:
    """SNOMED procedure code (`SNOMED/...`) -> the SNOMED CT type of the device it implants."""
    return {row["procedure"]: concept(SYSTEM_URIS["SNOMED"], row["device"].removeprefix("SNOMED/"),
                                      row["device_display"])
            for row in load_table("implants", ("procedure", "device", "device_display"))}


def gtin_check_digit(digits: str) -> str:
    """The GS1 check digit of the 13 digits before it: weights 3 and 1 alternate from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str(-total % 10)


def implant(device_id: str, device_type: dict[str, Any], subject: dict[str, str], implanted: datetime) -> Resource:
    """The active implant `device_id` of type `device_type`, placed in `subject` at `implanted`."""
    draw = stable_random(f"udi/{device_id}")
    body = "0" + "".join(str(draw.randrange(10)) for _ in range(12))
    gtin = body + gtin_check_digit(body)
    made = (implanted - timedelta(days=draw.randint(*MADE_BEFORE_DAYS))).date()
    expires = made + timedelta(days=SHELF_LIFE_DAYS)
    lot = "".join(draw.choice(LOT_CHARACTERS) for _ in range(8))
    serial = str(draw.randrange(10**9, 10**10))
    label = f"(01){gtin}(11){made:%y%m%d}(17){expires:%y%m%d}(10){lot}(21){serial}"
    return {"resourceType": "Device", "id": device_id, "meta": profile("us-core-implantable-device"),
            "udiCarrier": [{"deviceIdentifier": gtin, "issuer": GS1_DI, "jurisdiction": FDA_UDI,
                            "carrierHRF": label, "entryType": "barcode"}],
            "status": "active",
            "manufactureDate": made.isoformat(), "expirationDate": expires.isoformat(),
            "lotNumber": lot, "serialNumber": serial,
            "deviceName": [{"name": device_type["text"], "type": "user-friendly-name"}],
            "type": device_type, "patient": subject}
