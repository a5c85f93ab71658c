"""The supplies that come with a chronic-care drug: strips, lancets and a meter with each insulin
order, a spacer and a peak flow meter with an asthma inhaler, as SupplyDelivery resources."""

from __future__ import annotations

from datetime import datetime

from fhir_export.validate import model_problems
from tests.test_fhir_export import assert_valid_as_bundle_and_ndjson
from trajsim.events import BIRTH, SEX_MALE, VISIT_END, Event, visit_start_code
from trajsim.output import default_builder

INSULIN, METFORMIN, DIABETES = "RXNORM/106892", "RXNORM/860975", "SNOMED/44054006"
ALBUTEROL, FLUTICASONE, ASTHMA = "RXNORM/2123111", "RXNORM/895994", "SNOMED/195967001"
STRIPS, LANCETS, GLUCOSE_METER = "337388004", "1137596000", "337414009"
SPACER, PEAK_FLOW_METER = "464036000", "334990001"


def record(*visits: tuple[str, list[tuple[str, str | None]]]) -> list[Event]:
    """A man born in 1960 with one visit of each (class, [(code, indication)]) a year apart from 2018."""
    events = [Event(1, datetime(1960, 2, 1), None, BIRTH, None, None, None),
              Event(1, datetime(1960, 2, 1), None, SEX_MALE, None, None, None)]
    for n, (encounter_class, facts) in enumerate(visits, start=1):
        when = datetime(2017 + n, 6, 1, 9)
        events += [Event(1, when, n, visit_start_code(encounter_class), None, None, None),
                   *(Event(1, when, n, code, None, None, indication) for code, indication in facts),
                   Event(1, datetime(2017 + n, 6, 1, 10), n, VISIT_END, None, None, None)]
    return events


def built(events: list[Event]) -> dict[str, dict]:
    resources = default_builder("test/1").build(events)
    resources.use_relative_references()
    return {f"{r['resourceType']}/{r['id']}": r for r in resources.resources}


def deliveries(resources: dict[str, dict]) -> list[tuple[str, str, float]]:
    """(item code, occurrence, quantity) of every SupplyDelivery, in chart order."""
    return [(r["suppliedItem"]["itemCodeableConcept"]["coding"][0]["code"], r["occurrenceDateTime"],
             r["suppliedItem"]["quantity"]["value"]) for r in resources.values() if r["resourceType"] == "SupplyDelivery"]


def test_an_insulin_user_gets_test_strips_at_every_order_and_one_meter():
    diabetic = [(DIABETES, None), (INSULIN, DIABETES)]
    resources = built(record(("AMB", diabetic), ("AMB", [(INSULIN, DIABETES)])))
    orders = [r["authoredOn"] for r in resources.values() if r["resourceType"] == "MedicationRequest"]
    got = deliveries(resources)
    assert [when for code, when, _ in got if code == STRIPS] == orders == ["2018-06-01T09:00:00Z", "2019-06-01T09:00:00Z"]
    assert [when for code, when, _ in got if code == LANCETS] == orders
    assert [(when, quantity) for code, when, quantity in got if code == GLUCOSE_METER] == [(orders[0], 1)]
    assert {quantity for code, _, quantity in got if code == STRIPS} == {1200}


def test_an_insulin_order_without_an_indication_brings_each_supply_once():
    resources = built(record(("AMB", [(INSULIN, None)])))
    assert sorted(code for code, _, _ in deliveries(resources)) == sorted([STRIPS, LANCETS, GLUCOSE_METER])


def test_a_delivery_names_the_patient_and_the_ordering_clinic_and_is_completed():
    resources = built(record(("AMB", [(DIABETES, None), (INSULIN, DIABETES)])))
    [encounter] = [r for r in resources.values() if r["resourceType"] == "Encounter"]
    for delivery in (r for r in resources.values() if r["resourceType"] == "SupplyDelivery"):
        assert delivery["status"] == "completed" and delivery["type"]["coding"][0]["code"] == "device"
        assert resources[delivery["patient"]["reference"]]["resourceType"] == "Patient"
        assert delivery["supplier"] == encounter["serviceProvider"]
        assert resources[delivery["supplier"]["reference"]]["resourceType"] == "Organization"


def test_a_diabetic_on_metformin_alone_gets_no_supplies():
    resources = built(record(("AMB", [(DIABETES, None), (METFORMIN, DIABETES)])))
    assert deliveries(resources) == []


def test_insulin_given_during_a_stay_brings_no_home_supplies():
    resources = built(record(("IMP", [(DIABETES, None), (INSULIN, DIABETES)])))
    assert deliveries(resources) == []


def test_asthma_inhalers_bring_one_spacer_and_a_peak_flow_meter_with_the_controller():
    asthma = [(ASTHMA, None), (ALBUTEROL, ASTHMA), (FLUTICASONE, ASTHMA)]
    resources = built(record(("AMB", asthma), ("AMB", [(ALBUTEROL, ASTHMA), (FLUTICASONE, ASTHMA)])))
    assert [code for code, _, _ in deliveries(resources)] == [SPACER, PEAK_FLOW_METER]


def test_synthea_childhood_asthma_inhalers_bring_the_same_supplies():
    childhood = "SNOMED/233678006"
    resources = built(record(("AMB", [(childhood, None), ("RXNORM/745679", childhood), (FLUTICASONE, childhood)])))
    assert [code for code, _, _ in deliveries(resources)] == [SPACER, PEAK_FLOW_METER]


def test_a_nebulized_drug_brings_one_nebulizer_whatever_it_treats():
    copd = "SNOMED/13645005"
    resources = built(record(("AMB", [(copd, None), ("RXNORM/351137", copd)]), ("AMB", [("RXNORM/351137", copd)])))
    assert [(code, quantity) for code, _, quantity in deliveries(resources)] == [("334947002", 1)]


def test_an_inhaler_for_copd_brings_no_asthma_supplies():
    resources = built(record(("AMB", [("SNOMED/13645005", None), (ALBUTEROL, "SNOMED/13645005")])))
    assert deliveries(resources) == []


def test_supply_deliveries_are_valid_r4b_in_bundles_and_ndjson(tmp_path):
    patient = default_builder("test/1").build(record(
        ("AMB", [(DIABETES, None), (INSULIN, DIABETES), (ASTHMA, None), (FLUTICASONE, ASTHMA)])))
    kinds = [r for r in patient.resources if r["resourceType"] == "SupplyDelivery"]
    assert len(kinds) == 5 and all(model_problems(r) == [] for r in kinds)
    assert_valid_as_bundle_and_ndjson(tmp_path, patient)
    assert len((tmp_path / "ndjson" / "SupplyDelivery.ndjson").read_bytes().splitlines()) == 5


def test_a_rebuild_gives_the_same_deliveries():
    events = record(("AMB", [(DIABETES, None), (INSULIN, DIABETES)]))
    first, again = built(events), built(events)
    assert [k for k in first if k.startswith("SupplyDelivery/")] == [k for k in again if k.startswith("SupplyDelivery/")]
    assert deliveries(first) == deliveries(again)
