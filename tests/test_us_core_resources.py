"""The US Core resources that follow from a record beside its facts: the order and specimen behind
every lab result, the pharmacy fills of a prescription, the care team and guideline goals of a
chronic condition, and a minor's parent or guardian. Each points at what it follows from."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from fhir_export.dispenses import PICKUP_DELAY, fill_times
from fhir_export.guardian import adulthood
from fhir_export.lab_orders import specimen_type
from fhir_export.terminology import MEDICATION_CATEGORIES

SPECIMEN_TYPES = {"119297000": "Blood specimen", "119364003": "Serum specimen", "119361006": "Plasma specimen",
                  "122575003": "Urine specimen"}
NEW_TYPES = ("Specimen", "ServiceRequest", "MedicationDispense", "CareTeam", "Goal", "RelatedPerson")


@pytest.fixture(scope="module")
def cohort(cohort_dir: Path) -> dict[str, dict[str, dict]]:
    """The cohort's NDJSON resources: type -> "Type/id" -> resource."""
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for path in (cohort_dir / "fhir" / "ndjson").glob("*.ndjson"):
        for line in path.read_bytes().splitlines():
            resource = orjson.loads(line)
            out[resource["resourceType"]][f"{resource['resourceType']}/{resource['id']}"] = resource
    return out


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z"))


def test_every_lab_result_names_its_order_and_specimen(cohort):
    labs = [o for o in cohort["Observation"].values()
            if o["meta"]["profile"][0].endswith("us-core-observation-lab")]
    assert len(labs) > 100
    for observation in labs:
        specimen = cohort["Specimen"][observation["specimen"]["reference"]]
        order = cohort["ServiceRequest"][observation["basedOn"][0]["reference"]]
        assert specimen["subject"] == order["subject"] == observation["subject"]
        assert specimen["request"] == [{"reference": f"ServiceRequest/{order['id']}"}]
        assert order["specimen"] == [observation["specimen"]]
        assert order["encounter"] == observation["encounter"]
        assert specimen["collection"]["collectedDateTime"] == observation["effectiveDateTime"]
        coding = specimen["type"]["coding"][0]
        assert coding["system"] == "http://snomed.info/sct" and SPECIMEN_TYPES[coding["code"]] == coding["display"]


@pytest.mark.parametrize("test_name, specimen", [
    ("Hemoglobin A1c/Hemoglobin.total in Blood", "Blood specimen"),
    ("Cholesterol in HDL [Mass/volume] in Serum or Plasma", "Serum specimen"),
    ("Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay", "Serum specimen"),
    ("Microalbumin/Creatinine [Mass Ratio] in Urine", "Urine specimen"),
    ("INR in Platelet poor plasma by Coagulation assay", "Plasma specimen"),
    ("Urinalysis macro (dipstick) panel - Urine", "Urine specimen"),
    ("CBC W Auto Differential panel - Blood", "Blood specimen"),
    ("A test trajsim has never seen", "Specimen"),
])
def test_the_specimen_is_what_the_loinc_name_says_was_tested(test_name, specimen):
    assert specimen_type(test_name)["coding"][0]["display"] == specimen


def test_a_panel_is_one_order_reported_once_on_one_specimen(cohort):
    reports = [r for r in cohort["DiagnosticReport"].values()
               if r["meta"]["profile"][0].endswith("us-core-diagnosticreport-lab")]
    assert reports and len(reports) == len(cohort["ServiceRequest"]) == len(cohort["Specimen"])
    lipid_orders = 0
    for report in reports:
        order = cohort["ServiceRequest"][report["basedOn"][0]["reference"]]
        assert report["code"] == order["code"] and report["specimen"] == order["specimen"]
        results = [cohort["Observation"][r["reference"]] for r in report["result"]]
        assert all(r["basedOn"] == report["basedOn"] for r in results)
        if order["code"]["coding"][0]["code"] == "57698-3":  # the lipid panel: four results, one serum draw
            lipid_orders += 1
            assert len(results) > 1
            assert cohort["Specimen"][report["specimen"][0]["reference"]]["type"]["text"] == "Serum specimen"
    assert lipid_orders > 0


def test_a_prescription_is_filled_and_refilled_as_its_supply_runs_out(cohort):
    fills = defaultdict(list)
    for dispense in cohort["MedicationDispense"].values():
        fills[dispense["authorizingPrescription"][0]["reference"]].append(dispense)
    refilled = 0
    deaths = {f"Patient/{p['id']}": _moment(p["deceasedDateTime"]) for p in cohort["Patient"].values()
              if "deceasedDateTime" in p}
    for reference, dispenses in fills.items():
        order = cohort["MedicationRequest"][reference]
        assert order["category"] != MEDICATION_CATEGORIES["IMP"]
        times = sorted(_moment(d["whenHandedOver"]) for d in dispenses)
        assert [d["type"]["coding"][0]["code"] for d in dispenses] == ["FF"] + ["RF"] * (len(dispenses) - 1)
        assert times[0] == _moment(order["authoredOn"]) + PICKUP_DELAY
        assert all(d["medicationCodeableConcept"] == order["medicationCodeableConcept"] for d in dispenses)
        assert all(d["performer"][0]["actor"]["reference"].startswith("Organization/") for d in dispenses)
        if order["subject"]["reference"] in deaths:
            assert times[-1] < deaths[order["subject"]["reference"]]
        request = order.get("dispenseRequest")
        if request is None:
            assert len(dispenses) == 1
            continue
        assert len(dispenses) <= request["numberOfRepeatsAllowed"] + 1
        assert times[-1] < _moment(request["validityPeriod"]["end"])
        supply = timedelta(days=request["expectedSupplyDuration"]["value"])
        assert all(later - earlier == supply for earlier, later in zip(times, times[1:]))
        refilled += len(dispenses) > 1
    assert refilled > 10
    orders_in_hospital = [o for o in cohort["MedicationRequest"].values() if o["category"] == MEDICATION_CATEGORIES["IMP"]]
    assert not any(f"MedicationRequest/{o['id']}" in fills for o in orders_in_hospital)


def test_a_renewal_ends_the_fills_of_the_order_it_replaces():
    order = {"category": MEDICATION_CATEGORIES[None], "authoredOn": "2020-01-01T09:00:00Z",
             "dispenseRequest": {"numberOfRepeatsAllowed": 11, "expectedSupplyDuration": {"value": 30}}}
    start = datetime(2020, 1, 1, 11)
    assert list(fill_times(order, datetime(2020, 4, 10))) == [start + timedelta(days=30 * n) for n in range(4)]
    assert len(list(fill_times(order, datetime(2030, 1, 1)))) == 12  # no more than the repeats allow
    assert list(fill_times(order, datetime(2020, 1, 1, 10))) == []  # died before picking it up


def test_chronic_care_has_the_primary_care_team_and_guideline_goals(cohort):
    teams = {t["subject"]["reference"]: t for t in cohort["CareTeam"].values()}
    assert len(teams) == len(cohort["CareTeam"])  # one per patient
    plans = list(cohort["CarePlan"].values())
    assert plans
    for plan in plans:
        team = teams[plan["subject"]["reference"]]
        assert plan["careTeam"] == [{"reference": f"CareTeam/{team['id']}"}]
        patient = cohort["Patient"][plan["subject"]["reference"]]
        assert team["participant"][0]["member"] == patient["generalPractitioner"][0]
        assert team["participant"][0]["onBehalfOf"] == team["managingOrganization"][0] == patient["managingOrganization"]
        assert team["status"] == ("inactive" if "deceasedDateTime" in patient else "active")
    hypertension = [c for c in cohort["Condition"].values() if c["code"]["coding"][0]["code"] == "59621000"]
    assert hypertension
    goals = {g["addresses"][0]["reference"]: g for g in cohort["Goal"].values()}
    for condition in hypertension:
        goal = goals[f"Condition/{condition['id']}"]
        targets = {t["measure"]["coding"][0]["code"]: (t["detailQuantity"]["comparator"], t["detailQuantity"]["value"])
                   for t in goal["target"]}
        assert targets == {"8480-6": ("<", 130), "8462-4": ("<", 80)}
        plan = next(p for p in plans if p["addresses"] == goal["addresses"])
        assert plan["goal"] == [{"reference": f"Goal/{goal['id']}"}]


def test_a_minor_has_a_parent_or_guardian_who_shares_the_home(cohort):
    guardians = Counter(r["patient"]["reference"] for r in cohort["RelatedPerson"].values())
    assert guardians and max(guardians.values()) == 1
    first_visit = {}
    for encounter in cohort["Encounter"].values():
        subject, start = encounter["subject"]["reference"], _moment(encounter["period"]["start"])
        first_visit[subject] = min(first_visit.get(subject, start), start)
    for reference, patient in cohort["Patient"].items():
        birth = datetime.fromisoformat(patient["birthDate"])
        was_minor = reference in first_visit and first_visit[reference] < adulthood(birth)
        assert (reference in guardians) == was_minor
    for person in cohort["RelatedPerson"].values():
        patient = cohort["Patient"][person["patient"]["reference"]]
        assert person["name"][0]["family"] == patient["name"][0]["family"]
        assert person["address"] == patient["address"]
        assert person["relationship"][0]["coding"][0]["code"] in {"MTH", "FTH", "GRMTH"}
        assert person["active"] == ("end" not in person["period"])


def test_every_reference_of_a_patient_bundle_resolves_inside_it(cohort_dir):
    seen = Counter()
    for path in sorted((cohort_dir / "fhir" / "bundles").glob("patient-*.json")):
        bundle = orjson.loads(path.read_bytes())
        assert bundle["type"] == "transaction"
        inside = {entry["fullUrl"] for entry in bundle["entry"]}
        for entry in bundle["entry"]:
            resource = entry["resource"]
            seen[resource["resourceType"]] += 1
            text = orjson.dumps(resource).decode()
            for reference in text.split('"reference":"')[1:]:
                assert reference.split('"', 1)[0] in inside, (resource["resourceType"], reference[:60])
    assert all(seen[kind] > 0 for kind in NEW_TYPES), seen
