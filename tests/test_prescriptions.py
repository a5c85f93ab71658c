"""Prescriptions a physician can read: orders at encounters, renewals instead of refill spam, the
children's product for a child, and the guideline therapy of the chart's active conditions, for
both shipped sources; and the prescribing rules catch a chart that breaks them."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from tests.conftest import small_scenario
from trajsim.clock import to_datetime
from trajsim.engine import ReferenceSource, simulate
from trajsim.events import BIRTH, MEDICATION_END, SEX_MALE, VISIT_END, Event, events_frame, visit_start_code
from trajsim.model import DEFAULT_MODEL
from trajsim.output import default_builder
from trajsim.rules import find_violations, prescribing
from trajsim.vocab import in_domain

CHILDREN_AND_ADULTS = ({"min": 0, "max": 12, "weight": 1.0}, {"min": 40, "max": 90, "weight": 1.0})
CHILD_PRODUCTS = {"RXNORM/308189", "RXNORM/313820", "RXNORM/197803"}  # amoxicillin, acetaminophen, ibuprofen


def sources():
    from trajsim.model.source import ModelSource

    return {"reference": ReferenceSource(), "default model": ModelSource(DEFAULT_MODEL)}


@pytest.fixture(scope="module", params=["reference", "default model"])
def cohort(request):
    """200 patients, half children, half adults, of one shipped source."""
    model = "default" if request.param == "default model" else "reference"  # the source's own care, as generate runs it
    scenario = small_scenario(200, seed=3, model=model, **{"population.age_mix": CHILDREN_AND_ADULTS})
    records = list(simulate(scenario, sources()[request.param]))
    return request.param, records, events_frame(e for r in records for e in r.events)


def test_no_prescribing_rule_is_broken(cohort):
    name, _, events = cohort
    found = find_violations(events).filter(pl.col("rule").is_in([*prescribing.RULES, "medication_without_indication"]))
    assert found.is_empty(), (name, found.head(10))


def test_orders_are_prescribing_decisions_not_refills(cohort):
    """Synthea writes about 0.5 MedicationRequests per person-year; refills were 5 per person-year."""
    name, records, events = cohort
    years = sum(r.patient.exit_day - r.patient.entry_day for r in records) / 365.25
    orders = events.filter(in_domain(pl.col("code"), "medication"))
    assert orders.height / years < 2.0, name
    entry = {r.subject_id: to_datetime(r.patient.entry_day) for r in records}
    early = orders.filter(pl.col("time") < pl.col("subject_id").replace_strict(entry, return_dtype=pl.Datetime("us")))
    assert early.is_empty(), name  # nothing ordered before the record starts


def test_children_get_childrens_products(cohort):
    name, _, events = cohort
    assert set(events.filter(pl.col("code").is_in(CHILD_PRODUCTS))["code"]), name


def test_every_medication_request_references_an_encounter_and_long_term_ones_carry_repeats(cohort):
    name, records, _ = cohort
    builder, requests = default_builder("test"), []
    for record in records[:60]:
        requests += [r for r in builder.build(record.events).resources if r["resourceType"] == "MedicationRequest"]
    assert requests and all("encounter" in r for r in requests), name
    long_term = [r for r in requests if "dispenseRequest" in r]
    for request in long_term:  # the first fill and its repeats last until the order must be renewed
        dispense = request["dispenseRequest"]
        assert (dispense["numberOfRepeatsAllowed"] + 1) * dispense["expectedSupplyDuration"]["value"] >= 365, name
    assert long_term, name


def _chart(*facts: tuple[float, str, int | None, str | None]) -> pl.DataFrame:
    """One man born in 1960, with facts (days after 2015-01-01, code, encounter, text)."""
    start = datetime(2015, 1, 1)
    events = [Event(1, datetime(1960, 1, 1), None, BIRTH), Event(1, datetime(1960, 1, 1), None, SEX_MALE)]
    events += [Event(1, start + timedelta(days=day), encounter, code, None, None, text) for day, code, encounter, text in facts]
    return events_frame(sorted(events, key=lambda e: e.time))


def _visit(day: float, encounter: int, *facts: tuple[str, str | None],
           encounter_class: str = "AMB") -> list[tuple[float, str, int | None, str | None]]:
    return [(day, visit_start_code(encounter_class), encounter, None), *((day, code, encounter, text) for code, text in facts),
            (day + 0.02, VISIT_END, encounter, None)]


def _rules(events: pl.DataFrame) -> set[str]:
    return set(find_violations(events).filter(pl.col("rule").is_in(list(prescribing.RULES)))["rule"])


CAD, GERD, STREP = "SNOMED/53741008", "SNOMED/235595009", "SNOMED/43878008"


def test_the_rules_catch_a_chart_that_breaks_them():
    chart = _chart(
        *_visit(0, 1, (CAD, None), (GERD, None), ("RXNORM/243670", CAD), ("RXNORM/243670", CAD)),
        (30, "RXNORM/243670", None, CAD),  # a refill written as a new order
        *_visit(60, 2, (STREP, None)),
    )
    assert _rules(chart) == {"duplicate_order_same_day", "order_outside_encounter", "statin_missing_in_coronary_disease",
                             "ppi_missing_in_gerd", "antibiotic_missing_in_strep"}
    diabetic = _chart(*_visit(0, 1, ("SNOMED/44054006", None), ("RXNORM/860975", "SNOMED/44054006")))  # aged 55
    assert _rules(diabetic) == {"statin_missing_in_diabetes"}
    on_statin_only = _chart(*_visit(0, 1, ("SNOMED/44054006", None), ("RXNORM/312961", "SNOMED/44054006")))
    assert _rules(on_statin_only) == {"metformin_missing_in_diabetes"}
    child = _chart(*_visit(20000, 1, ("SNOMED/59621000", None), ("RXNORM/197361", "SNOMED/59621000")))  # amlodipine 5 mg
    child = child.with_columns(time=pl.when(pl.col("code") == BIRTH).then(datetime(2064, 1, 1)).otherwise("time"))
    assert "adult_formulation_in_child" in _rules(child.sort("time"))


def test_therapy_taken_from_before_the_diagnosis_counts_and_a_stop_ends_it():
    statin = [("RXNORM/312961", "SNOMED/55822004")]
    taken = _chart(*_visit(0, 1, ("SNOMED/55822004", None), *statin), *_visit(200, 2, (CAD, None)))
    assert "statin_missing_in_coronary_disease" not in _rules(taken)
    stopped = _chart(*_visit(0, 1, ("SNOMED/55822004", None), *statin), (100, MEDICATION_END, None, "RXNORM/312961"),
                     *_visit(200, 2, (CAD, None)))
    assert "statin_missing_in_coronary_disease" in _rules(stopped)


def test_a_drug_in_a_stay_is_ordered_when_its_indication_is_diagnosed_and_runs_its_course():
    """A source may write a stay's antibiotic days before the diagnosis it treats, and stop it at
    once: the order follows the diagnosis and the course keeps its length."""
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.knowledge import load_knowledge

    strep, penicillin = "SNOMED/43878008", "RXNORM/834061"
    p = patient(age=40.0)
    stay = Visit(p.now, "IMP", 10.0, [Fact("SNOMED/183452005"), Fact(penicillin, text=strep),
                                      Fact(MEDICATION_END, text=penicillin), Fact(strep, offset_days=6.0)])
    Prescriber(load_knowledge()).vet(p, stay)
    (order,) = [f for f in stay.facts if f.code == penicillin]
    (stop,) = [f for f in stay.facts if f.code == MEDICATION_END]
    assert order.offset_days == 6.0 and stop.text == penicillin and stop.offset_days > order.offset_days + 3


def test_a_statin_is_renewed_at_the_office_not_at_an_emergency_visit():
    hyperlipidemia, statin, sprain = "SNOMED/55822004", ("RXNORM/312961", "SNOMED/55822004"), ("SNOMED/44465007", None)
    started = _visit(0, 1, (hyperlipidemia, None), statin)
    in_the_ed = _chart(*started, *_visit(400, 2, sprain, statin, encounter_class="EMER"))
    assert _rules(in_the_ed) == {"renewal_at_emergency_visit"}
    at_the_office = _chart(*started, *_visit(400, 2, statin))
    assert "renewal_at_emergency_visit" not in _rules(at_the_office)
    restarted = _chart(*started, (200, MEDICATION_END, None, "RXNORM/312961"),
                       *_visit(400, 2, sprain, statin, encounter_class="EMER"))  # a new start, not a renewal
    assert "renewal_at_emergency_visit" not in _rules(restarted)


def test_a_chronic_condition_seen_only_in_the_ed_is_left_to_the_office_but_strep_is_not():
    diabetes = ("SNOMED/44054006", None)
    assert not _rules(_chart(*_visit(0, 1, diabetes, encounter_class="EMER")))
    assert _rules(_chart(*_visit(0, 1, (STREP, None), encounter_class="EMER"))) == {"antibiotic_missing_in_strep"}


def test_coronary_disease_found_in_the_ed_starts_its_statin_there():
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.knowledge import load_knowledge

    # known coronary disease seen at an ED visit is the office's; found there, the ED starts the statin
    known = _chart((1, CAD, None, None), *_visit(30, 2, ("SNOMED/44465007", None), encounter_class="EMER"))  # a sprain
    assert not _rules(known)
    assert _rules(_chart(*_visit(0, 1, (CAD, None), encounter_class="EMER"))) == {"statin_missing_in_coronary_disease"}
    p = patient(age=60.0)
    found = Visit(p.now, "EMER", 0.15, [Fact("SNOMED/50849002"), Fact(CAD, offset_days=0.05)])
    Prescriber(load_knowledge()).vet(p, found)
    (statin,) = [f for f in found.facts if f.code == "RXNORM/259255"]
    assert statin.text == CAD and statin.offset_days == 0.05


@pytest.mark.parametrize("egfr", ["LOINC/98979-8", "LOINC/33914-3"])  # CKD-EPI 2021, and MDRD as Synthea codes it
def test_metformin_is_not_ordered_once_the_egfr_is_below_30_and_is_then_not_expected(egfr):
    """FDA label: metformin is contraindicated with an eGFR below 30."""
    diabetes, metformin = "SNOMED/44054006", ("RXNORM/860975", "SNOMED/44054006")
    statin = ("RXNORM/312961", "SNOMED/44054006")  # aged 55: the diabetic's statin, so only metformin is judged

    def chart(value: float, *drugs: tuple[str, str]) -> pl.DataFrame:
        events = _chart(*_visit(0, 1, (diabetes, None), *drugs))
        low = events_frame([Event(1, datetime(2015, 1, 1), 1, egfr, value, "mL/min/{1.73_m2}")])
        return pl.concat([events, low]).sort("time")

    assert _rules(chart(25.0, metformin, statin)) == {"drug_ruled_out_by_lab"}
    assert not _rules(chart(25.0, statin))  # no metformin expected at an eGFR of 25
    assert _rules(chart(60.0, statin)) == {"metformin_missing_in_diabetes"}
    assert not _rules(chart(60.0, metformin, statin))


def test_a_drug_the_knowledge_does_not_list_is_kept_without_an_indication():
    """A learned model writes its source's formulary (Synthea's simvastatin 10 mg) with no indication
    the rules can judge: the order stands; a listed drug without an active indication does not."""
    from tests.test_episodes import patient
    from trajsim.engine import Fact, Visit
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.knowledge import load_knowledge

    unlisted, amoxicillin = "RXNORM/316672", "RXNORM/308182"
    knowledge = load_knowledge()
    assert unlisted not in knowledge.indications and amoxicillin in knowledge.indications
    visit = Visit(patient(age=50.0).now, "AMB", 0.02, [Fact(unlisted), Fact(amoxicillin)])
    Prescriber(knowledge).vet(patient(age=50.0), visit)
    assert [f.code for f in visit.facts] == [unlisted]
