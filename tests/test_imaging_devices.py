"""What imaging and implant procedures leave in the chart beside the Procedure: the ImagingStudy and
its radiology report, and the implanted Device with its UDI label, each pointing where a receiving
EHR looks for it."""

from __future__ import annotations

import re
from datetime import date, datetime

import orjson
import pytest

from fhir_export.implants import gtin_check_digit
from trajsim.events import BIRTH, SEX_FEMALE, VISIT_END, Event, visit_start_code
from trajsim.output import default_builder

MAMMOGRAPHY, HEAD_CT, STROKE = "SNOMED/24623002", "SNOMED/303653007", "SNOMED/230690007"
IMPLANTS = {"SNOMED/52734007": ("304120007", "Total hip replacement prosthesis"),
            "SNOMED/609588000": ("109228008", "Knee joint prosthesis"),
            "SNOMED/415070008": ("705643001", "Coronary artery stent")}
UDI_LABEL = re.compile(r"\(01\)(\d{14})\(11\)(\d{6})\(17\)(\d{6})\(10\)([0-9A-Z]{1,20})\(21\)([0-9A-Z]{1,20})")


def record(*visits: tuple[str, list[str]], subject: int = 1) -> list[Event]:
    """A woman born in 1955 with one visit of each (class, codes) on successive days of March 2020."""
    events = [Event(subject, datetime(1955, 5, 1), None, BIRTH, None, None, None),
              Event(subject, datetime(1955, 5, 1), None, SEX_FEMALE, None, None, None)]
    for n, (encounter_class, codes) in enumerate(visits, start=1):
        when = datetime(2020, 3, n, 10)
        events += [Event(subject, when, n, visit_start_code(encounter_class), None, None, None),
                   *(Event(subject, when, n, code, None, None, None) for code in codes),
                   Event(subject, datetime(2020, 3, n, 15), n, VISIT_END, None, None, None)]
    return events


def chart(events: list[Event]) -> dict[str, dict]:
    """The built resources by "Type/id", with `Type/id` references."""
    built = default_builder("test/1").build(events)
    built.use_relative_references()
    return {f"{r['resourceType']}/{r['id']}": r for r in built.resources}


def of_type(resources: dict[str, dict], kind: str) -> list[dict]:
    return [r for r in resources.values() if r["resourceType"] == kind]


def test_a_screening_mammogram_is_a_four_view_mg_study_with_a_radiology_report():
    resources = chart(record(("AMB", [MAMMOGRAPHY])))
    [procedure], [study] = of_type(resources, "Procedure"), of_type(resources, "ImagingStudy")
    [report] = [r for r in of_type(resources, "DiagnosticReport") if r["meta"]["profile"][0].endswith("-note")]
    assert study["modality"][0] == {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MG",
                                    "display": "Mammography"}
    [series] = study["series"]
    assert series["bodySite"]["code"] == "76752008" and series["modality"] == study["modality"][0]
    assert study["numberOfInstances"] == series["numberOfInstances"] == len(series["instance"]) == 4
    assert study["started"] == series["started"] == procedure["performedDateTime"]
    assert resources[study["procedureReference"]["reference"]] is procedure
    assert study["encounter"] == procedure["encounter"] and resources[study["referrer"]["reference"]]["resourceType"] == "Practitioner"
    assert "reasonReference" not in study  # a screening is for no condition
    assert resources[report["imagingStudy"][0]["reference"]] is study
    assert report["category"][0]["coding"][0] == {"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}
    assert report["code"]["coding"][0]["code"] == "24606-6" and report["encounter"] == study["encounter"]


def test_a_head_ct_at_a_stroke_visit_gives_the_stroke_as_its_reason():
    resources = chart(record(("EMER", [STROKE, HEAD_CT])))
    [study] = of_type(resources, "ImagingStudy")
    [stroke] = of_type(resources, "Condition")
    assert study["modality"][0]["code"] == "CT" and study["series"][0]["bodySite"]["display"] == "Head structure"
    assert [resources[r["reference"]] for r in study["reasonReference"]] == [stroke]


def test_every_dicom_uid_is_unique_and_well_formed():
    resources = chart(record(("AMB", [MAMMOGRAPHY]), ("EMER", [HEAD_CT])))
    uids = []
    for study in of_type(resources, "ImagingStudy"):
        uids.append(study["identifier"][0]["value"].removeprefix("urn:oid:"))
        for series in study["series"]:
            uids += [series["uid"], *(instance["uid"] for instance in series["instance"])]
    assert len(uids) == len(set(uids)) == 2 + 2 + 4 + 32
    assert all(re.fullmatch(r"2\.25\.(0|[1-9]\d*)", uid) and len(uid) <= 64 for uid in uids)


@pytest.mark.parametrize("procedure_code, device_type", IMPLANTS.items())
def test_an_implant_procedure_points_to_the_device_it_left(procedure_code, device_type):
    resources = chart(record(("IMP", [procedure_code])))
    [procedure], [device] = of_type(resources, "Procedure"), of_type(resources, "Device")
    assert resources[procedure["focalDevice"][0]["manipulated"]["reference"]] is device
    coding = device["type"]["coding"][0]
    assert (coding["system"], coding["code"], coding["display"]) == ("http://snomed.info/sct", *device_type)
    assert device["patient"] == procedure["subject"] and device["status"] == "active"
    assert device["meta"]["profile"] == ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-implantable-device"]


def test_the_udi_label_is_a_valid_gs1_string_that_agrees_with_the_device():
    [device] = of_type(chart(record(("IMP", ["SNOMED/52734007"]))), "Device")
    [carrier] = device["udiCarrier"]
    gtin, made, expires, lot, serial = UDI_LABEL.fullmatch(carrier["carrierHRF"]).groups()
    weighted = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(reversed(gtin)))
    assert weighted % 10 == 0 and gtin == carrier["deviceIdentifier"]
    assert (lot, serial) == (device["lotNumber"], device["serialNumber"])
    made_on, expires_on = (datetime.strptime(d, "%y%m%d").date() for d in (made, expires))
    assert (made_on.isoformat(), expires_on.isoformat()) == (device["manufactureDate"], device["expirationDate"])
    assert made_on < date(2020, 3, 1) < expires_on  # made before it was implanted, in date when used


def test_the_gs1_check_digit_matches_a_published_barcode():
    assert gtin_check_digit("0400638133393") == "1"  # EAN-13 4006381333931, the GS1 worked example


def test_labels_and_uids_depend_only_on_the_patient():
    visits = (("AMB", [MAMMOGRAPHY]), ("IMP", ["SNOMED/609588000"]))
    first, again, other = chart(record(*visits)), chart(record(*visits)), chart(record(*visits, subject=2))
    assert orjson.dumps(list(first.values())) == orjson.dumps(list(again.values()))
    labels = [[d["udiCarrier"][0]["carrierHRF"] for d in of_type(c, "Device")] for c in (first, other)]
    studies = [[s["identifier"][0]["value"] for s in of_type(c, "ImagingStudy")] for c in (first, other)]
    assert labels[0] != labels[1] and studies[0] != studies[1]


def test_every_imaging_procedure_in_a_cohort_has_its_study_and_report(cohort_dir):
    ndjson = cohort_dir / "fhir" / "ndjson"

    def read(kind: str) -> dict[str, dict]:
        path = ndjson / f"{kind}.ndjson"
        rows = [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
        return {f"{kind}/{r['id']}": r for r in rows}

    procedures, studies, reports = read("Procedure"), read("ImagingStudy"), read("DiagnosticReport")
    imaged = {key for key, p in procedures.items() if p["code"]["coding"][0]["code"] in ("24623002", "303653007")}
    assert imaged and {s["procedureReference"]["reference"] for s in studies.values()} == imaged
    notes = [r for r in reports.values() if "imagingStudy" in r]
    assert sorted(r["imagingStudy"][0]["reference"] for r in notes) == sorted(studies)
    for key, device in read("Device").items():
        assert any(p.get("focalDevice") == [{"manipulated": {"reference": key}}] for p in procedures.values())
