"""Procedures a clinician expects in a chart: the tests a guideline orders at a diagnosis, the
nebulizer of an exacerbation, medication reconciliation at every discharge, hearing screening at
well-child visits; each done for its condition (the FHIR Procedure's reasonReference), within its
encounter, billed at its own fee; a delivery needs a pregnancy."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from tests.conftest import small_scenario
from tests.test_episodes import patient
from trajsim.engine import Fact, ReferenceSource, Visit, simulate
from trajsim.engine.procedures import ProcedureKeeper
from trajsim.engine.schedules import Schedule
from trajsim.engine.source import ACTIVE, WELL_CHILD, FactKind
from trajsim.events import BIRTH, SEX_FEMALE, VISIT_END, Event, events_frame, visit_start_code
from trajsim.knowledge import TableError, load_knowledge
from trajsim.knowledge.costs import fees
from trajsim.knowledge.lifecycles import CESAREAN, PREGNANCY
from trajsim.knowledge.procedures import indicated_procedures, read_indicated_procedures
from trajsim.output import default_builder
from trajsim.rules import find_violations
from trajsim.rules.base import drug_spells
from trajsim.vocab import in_domain

HEART_FAILURE, COPD = "SNOMED/84114007", "SNOMED/13645005"
ECG, ECHO, SPIROMETRY, NEBULIZER = "SNOMED/29303009", "SNOMED/433236007", "SNOMED/127783003", "SNOMED/56251003"
MEDICATION_RECONCILIATION, HEARING = "SNOMED/430193006", "SNOMED/398171003"
ED_VISIT = "SNOMED/50849002"
AGE_MIX = ({"min": 0, "max": 12, "weight": 1.0}, {"min": 55, "max": 90, "weight": 2.0})


@pytest.fixture(scope="module")
def exported():
    """160 patients (a third children, the rest older adults) as events and FHIR resources."""
    records = list(simulate(small_scenario(160, seed=5, **{"population.age_mix": AGE_MIX}), ReferenceSource()))
    builder = default_builder("test")
    resources = [r for record in records for r in builder.build(record.events).resources]
    return events_frame(e for record in records for e in record.events), resources


def _schedule(age: float):
    p = patient(age=age, sex="M")
    return p, Schedule(load_knowledge(), p, frozenset({FactKind.PROCEDURES}))


def test_a_heart_failure_diagnosis_gets_an_ecg_and_an_echocardiogram_done_for_it():
    p, schedule = _schedule(70.0)
    facts = schedule.due_at(Visit(p.now, "AMB", 0.02, [Fact("SNOMED/390906007"), Fact(HEART_FAILURE)]))
    assert {(f.code, f.text) for f in facts} >= {(ECG, HEART_FAILURE), (ECHO, HEART_FAILURE)}
    p.conditions[HEART_FAILURE] = ACTIVE
    later = schedule.due_at(Visit(p.now + 90, "AMB", 0.02, [Fact("SNOMED/390906007"), Fact(HEART_FAILURE)]))
    assert ECHO not in {f.code for f in later}  # at the diagnosis, not at every follow-up


def test_copd_gets_yearly_spirometry_and_a_nebulizer_when_it_brings_the_patient_to_the_ed():
    p, schedule = _schedule(65.0)
    p.conditions[COPD] = ACTIVE
    office = [schedule.due_at(Visit(p.now + day, "AMB", 0.02, [Fact("SNOMED/390906007")])) for day in (0, 100, 400)]
    assert [[f.code for f in facts] for facts in office] == [[SPIROMETRY], [], [SPIROMETRY]]
    sprain = schedule.due_at(Visit(p.now + 410, "EMER", 0.2, [Fact(ED_VISIT), Fact("SNOMED/44465007")]))
    exacerbation = schedule.due_at(Visit(p.now + 420, "EMER", 0.2, [Fact(ED_VISIT, text=COPD)]))
    assert NEBULIZER not in {f.code for f in sprain}
    assert [(f.code, f.text) for f in exacerbation] == [(NEBULIZER, COPD)]


def test_each_pregnancy_is_confirmed_and_dated_and_its_prenatal_visits_check_the_fetal_heart():
    from trajsim.engine.pregnancy import PRENATAL, PRENATAL_INITIAL

    p, schedule = _schedule(28.0)
    p.sex = "F"
    # hCG and the dating ultrasound; ABO/Rh type, hepatitis B, HIV, syphilis, rubella and urine culture
    tests = ["SNOMED/252160004", "SNOMED/169230002", "SNOMED/44608003", "SNOMED/47758006", "SNOMED/31676001",
             "SNOMED/269828009", "SNOMED/169690007", "SNOMED/117010004"]
    first = schedule.due_at(Visit(p.now, "AMB", 0.02, [Fact(PRENATAL_INITIAL), Fact(PREGNANCY, offset_days=-50)]))
    assert [(f.code, f.text) for f in first] == [(code, PREGNANCY) for code in tests]
    p.conditions[PREGNANCY] = p.now + 200
    follow_up = schedule.due_at(Visit(p.now + 28, "AMB", 0.02, [Fact(PRENATAL, text=PREGNANCY)]))
    assert [(f.code, f.text) for f in follow_up] == [("SNOMED/225158009", PREGNANCY)]
    p.conditions[PREGNANCY] = p.now + 250  # ended; a second pregnancy two years later is confirmed again
    second = schedule.due_at(Visit(p.now + 730, "AMB", 0.02, [Fact(PRENATAL_INITIAL), Fact(PREGNANCY, offset_days=-50)]))
    assert [f.code for f in second] == tests


def test_a_stay_ends_with_medication_reconciliation_inside_it():
    p, schedule = _schedule(50.0)
    p.medications["RXNORM/314076"] = ACTIVE  # lisinopril: a medication list to reconcile
    stay = Visit(p.now, "IMP", 3.0, [Fact("SNOMED/183452005")])
    stay.facts += schedule.due_at(stay)
    stay.duration_days = 2.5  # a keeper shortens the stay after it was scheduled
    ProcedureKeeper(load_knowledge()).vet(p, stay)
    (reconciliation,) = [f for f in stay.facts if f.code == MEDICATION_RECONCILIATION]
    assert reconciliation.offset_days == 2.5


def test_the_keeper_names_the_pregnancy_a_delivery_ends_as_its_reason():
    p, keeper = patient(age=30.0), ProcedureKeeper(load_knowledge())
    p.conditions[PREGNANCY] = p.now  # ended at this visit's start, by the delivery
    birth = Visit(p.now, "IMP", 2.0, [Fact("SNOMED/183460006"), Fact(CESAREAN)])
    keeper.vet(p, birth)
    assert [(f.code, f.text) for f in birth.facts if f.code == CESAREAN] == [(CESAREAN, PREGNANCY)]


def test_the_rule_catches_a_delivery_without_a_pregnancy():
    start = datetime(2015, 1, 1)

    def chart(*facts: tuple[float, str]) -> pl.DataFrame:
        events = [Event(1, datetime(1985, 1, 1), None, BIRTH), Event(1, datetime(1985, 1, 1), None, SEX_FEMALE)]
        events += [Event(1, start + timedelta(days=day), 1 if code != PREGNANCY else None, code) for day, code in facts]
        return events_frame(sorted(events, key=lambda e: e.time))

    def rules(events: pl.DataFrame) -> set[str]:
        return set(find_violations(events)["rule"])

    birth = [(270, visit_start_code("IMP")), (270.1, CESAREAN), (272, VISIT_END)]
    assert "obstetric_care_outside_pregnancy" in rules(chart(*birth))
    assert "obstetric_care_outside_pregnancy" not in rules(chart((0, PREGNANCY), *birth))
    assert "pregnancy_too_long" in rules(chart((-400, PREGNANCY), *birth))  # no pregnancy lasts that long


def test_procedures_done_for_a_condition_reference_it_and_lie_within_their_encounter(exported):
    _, resources = exported
    by_id = {f"urn:uuid:{r['id']}": r for r in resources}  # references as in a transaction bundle
    procedures = [r for r in resources if r["resourceType"] == "Procedure"]
    screenings = {s.code for s in load_knowledge().screenings}  # a colonoscopy screens, or finds a polyp
    indicated = {p.code.split("/")[1] for p in indicated_procedures() if p.condition and p.code not in screenings}
    with_reason = [r for r in procedures if r["code"]["coding"][0]["code"] in indicated]
    assert len(with_reason) >= 20
    for procedure in with_reason:
        (reason,) = procedure["reasonReference"]
        assert by_id[reason["reference"]]["resourceType"] == "Condition"
    for procedure in procedures:
        period = by_id[procedure["encounter"]["reference"]]["period"]
        assert period["start"] <= procedure["performedDateTime"] <= period["end"]


def test_every_stay_with_drugs_is_reconciled_and_children_have_their_hearing_screened(exported):
    events, _ = exported
    stays = events.filter(pl.col("code") == visit_start_code("IMP")).select("subject_id", "encounter_id", start="time")
    spells = drug_spells(events.lazy(), events.lazy().filter(in_domain(pl.col("code"), "medication"))).collect()
    ends = events.filter(pl.col("code") == VISIT_END).select("encounter_id", end="time")
    with_drugs = set(stays.join(ends, on="encounter_id").join(spells, on="subject_id").filter(
        (pl.col("ordered") <= pl.col("end")) & (pl.col("stopped").is_null() | (pl.col("stopped") > pl.col("start"))))["encounter_id"])
    reconciled = set(events.filter(pl.col("code") == MEDICATION_RECONCILIATION)["encounter_id"])
    assert len(with_drugs) > 5 and with_drugs == reconciled and stays.height > len(with_drugs)
    well_child = events.filter(pl.col("code") == WELL_CHILD)["subject_id"].unique()
    screened = events.filter(pl.col("code") == HEARING)["subject_id"].unique()
    assert screened.len() >= 0.6 * well_child.len()
    assert find_violations(events).is_empty()


def test_procedures_the_chart_calls_for_name_known_conditions_and_each_has_its_own_fee():
    knowledge = load_knowledge()
    for procedure in indicated_procedures():
        assert ("procedure", procedure.code) in fees()
    for screening in knowledge.screenings:
        assert ("procedure", screening.code) in fees()
        assert procedure.condition is None or procedure.condition in knowledge.conditions


def test_a_procedures_table_with_an_unknown_moment_or_a_word_for_a_number_is_refused_naming_the_allowed_values(tmp_path):
    table = tmp_path / "procedures.csv"
    table.write_text("condition,code,at,moment,settings,interval_days,age_min,share,source\n"
                     "copd,SNOMED/127783003,diagnosis,noon,,,40,1.0,a guideline\n")
    with pytest.raises(TableError, match=r"procedures.csv line 2: moment 'noon'; allowed: start, end"):
        read_indicated_procedures(table)
    table.write_text("condition,code,at,moment,settings,interval_days,age_min,share,source\n"
                     "copd,SNOMED/127783003,diagnosis,start,,,forty,1.0,a guideline\n")
    with pytest.raises(TableError, match=r"line 2: age_min 'forty'; allowed: a number, or empty"):
        read_indicated_procedures(table)
