"""Preventive care kept to its intervals: a second general examination 40 days after the first, a
mammography again after 6 months, a colonoscopy after 2 years (the shipped model wrote all three)
break a rule, and the engine keeps every source's charts to the intervals."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.test_episodes import patient
from tests.test_rules import at, rules_found, valid_record
from trajsim.engine import Fact, Visit
from trajsim.engine.preventive import PreventiveKeeper
from trajsim.events import SEX_FEMALE, VISIT_END, WELL_ADULT, Event, visit_start_code
from trajsim.knowledge import load_knowledge

MAMMOGRAPHY, COLONOSCOPY, DEPRESSION_SCREENING = "SNOMED/24623002", "SNOMED/73761001", "SNOMED/171207006"
PHQ2 = "LOINC/55758-7"


def office_visit(encounter: int, years: float, *codes: str, text: str | None = None) -> list[Event]:
    start = at(years)
    return [Event(1, start, encounter, visit_start_code("AMB")), *(Event(1, start, encounter, c, text=text) for c in codes),
            Event(1, start + timedelta(minutes=30), encounter, VISIT_END)]


def test_a_general_examination_again_40_days_later_is_found_and_one_a_year_later_is_not():
    early = valid_record() + office_visit(7, 56, WELL_ADULT) + office_visit(8, 56 + 40 / 365.25, WELL_ADULT)
    assert rules_found(early) == {"well_exam_repeated_early": 1}
    yearly = valid_record() + office_visit(7, 56, WELL_ADULT) + office_visit(8, 56 + 340 / 365.25, WELL_ADULT)
    assert rules_found(yearly) == {}


@pytest.mark.parametrize("code, first, again, early", [
    (MAMMOGRAPHY, 52, 52.5, True), (MAMMOGRAPHY, 52, 54, False),
    (COLONOSCOPY, 51, 53, True), (COLONOSCOPY, 51, 60.95, False),
    (DEPRESSION_SCREENING, 51, 51.3, True), (DEPRESSION_SCREENING, 51, 52, False),
])
def test_a_screening_before_its_uspstf_interval_is_found(code, first, again, early):
    record = valid_record(sex=SEX_FEMALE) + office_visit(7, first, code) + office_visit(8, again, code)
    assert rules_found(record) == ({"screening_repeated_early": 1} if early else {})


def test_a_test_done_for_a_condition_is_no_screening_and_is_not_held_to_the_interval():
    record = (valid_record(sex=SEX_FEMALE) + office_visit(7, 52, COLONOSCOPY)
              + office_visit(8, 53, COLONOSCOPY, text="SNOMED/363406005"))  # for a colorectal cancer
    assert "screening_repeated_early" not in rules_found(record)


def test_the_keeper_drops_an_early_screening_with_its_scores_and_records_an_early_exam_as_an_office_visit():
    keeper, p = PreventiveKeeper(load_knowledge()), patient(age=55.0)
    first = Visit(p.now, "AMB", 0.02, [Fact(WELL_ADULT), Fact(MAMMOGRAPHY), Fact(DEPRESSION_SCREENING)])
    keeper.vet(p, first)
    assert [f.code for f in first.facts] == [WELL_ADULT, MAMMOGRAPHY, DEPRESSION_SCREENING]
    again = Visit(p.now + 60, "AMB", 0.02, [Fact(WELL_ADULT), Fact(MAMMOGRAPHY), Fact(DEPRESSION_SCREENING),
                                            Fact(PHQ2, value=1.0), Fact("LOINC/8480-6")])
    keeper.vet(p, again)
    assert [f.code for f in again.facts] == ["SNOMED/185347001", "LOINC/8480-6"]  # no active condition: a problem visit
    later = Visit(p.now + 400, "AMB", 0.02, [Fact(WELL_ADULT), Fact(DEPRESSION_SCREENING)])
    keeper.vet(p, later)
    assert [f.code for f in later.facts] == [WELL_ADULT, DEPRESSION_SCREENING]  # the mammography is not due yet anyway


def test_past_the_screening_ages_a_screening_keeps_its_interval():
    record = valid_record(sex=SEX_FEMALE) + office_visit(7, 77, MAMMOGRAPHY) + office_visit(8, 77.7, MAMMOGRAPHY)
    assert "screening_repeated_early" in rules_found(record)


TOTAL_CHOLESTEROL, HBA1C, HEMOGLOBIN = ("LOINC/2093-3", 190.0, "mg/dL"), ("LOINC/4548-4", 5.4, "%"), ("LOINC/718-7", 14.0, "g/dL")
HYPERLIPIDEMIA, DIABETES, FEVER = "SNOMED/55822004", "SNOMED/44054006", "SNOMED/386661006"


def lab_visit(encounter: int, years: float, lab: tuple[str, float, str], *codes: str, encounter_class: str = "AMB") -> list[Event]:
    start = at(years)
    return [Event(1, start, encounter, visit_start_code(encounter_class)), Event(1, start, encounter, lab[0], lab[1], lab[2]),
            *(Event(1, start, encounter, c) for c in codes), Event(1, start + timedelta(minutes=30), encounter, VISIT_END)]


def _early_labs(*visits: list[Event]) -> int:
    return rules_found(valid_record() + [e for visit in visits for e in visit]).get("lab_screening_repeated_early", 0)


def test_a_lipid_panel_before_its_five_years_is_found_unless_a_hyperlipidemia_calls_for_it():
    assert _early_labs(lab_visit(7, 52, TOTAL_CHOLESTEROL), lab_visit(8, 54, TOTAL_CHOLESTEROL)) == 1
    assert _early_labs(lab_visit(7, 52, TOTAL_CHOLESTEROL), lab_visit(8, 57, TOTAL_CHOLESTEROL)) == 0
    monitored = lab_visit(7, 52, TOTAL_CHOLESTEROL, HYPERLIPIDEMIA)  # a lipid profile yearly while on treatment
    assert _early_labs(monitored, lab_visit(8, 53, TOTAL_CHOLESTEROL)) == 0
    assert _early_labs(monitored, lab_visit(8, 52.5, TOTAL_CHOLESTEROL)) == 1  # six months: not yet due


def test_an_hba1c_twice_a_year_is_a_diabetics_monitoring_and_early_for_anyone_else():
    assert _early_labs(lab_visit(7, 52, HBA1C, DIABETES), lab_visit(8, 52.5, HBA1C)) == 0
    assert _early_labs(lab_visit(7, 52, HBA1C), lab_visit(8, 52.5, HBA1C)) == 1


def test_a_blood_count_for_a_fever_in_the_ed_is_a_workup_not_an_early_screening():
    office = lab_visit(7, 52, HEMOGLOBIN)
    assert _early_labs(office, lab_visit(8, 52.2, HEMOGLOBIN, FEVER, encounter_class="EMER")) == 0
    assert _early_labs(office, lab_visit(8, 52.2, HEMOGLOBIN)) == 1


def test_the_keeper_drops_an_early_lipid_panel_with_its_results_and_keeps_a_hyperlipidemias():
    from trajsim.engine.preventive import LabScreeningKeeper
    from trajsim.engine.source import ACTIVE

    p, keeper = patient(age=52.0), LabScreeningKeeper(load_knowledge())
    first = Visit(p.now, "AMB", 0.02, [Fact("LOINC/57698-3"), Fact("LOINC/8480-6")])
    keeper.vet(p, first)
    assert [f.code for f in first.facts] == ["LOINC/57698-3", "LOINC/8480-6"]
    again = Visit(p.now + 400, "AMB", 0.02, [Fact("LOINC/2093-3"), Fact("LOINC/2085-9"), Fact("LOINC/8480-6")])
    keeper.vet(p, again)  # a model's total and HDL cholesterol: the lipid panel a year on, for no condition
    assert [f.code for f in again.facts] == ["LOINC/8480-6"]
    p.conditions[HYPERLIPIDEMIA] = ACTIVE
    monitored = Visit(p.now + 420, "AMB", 0.02, [Fact("LOINC/2093-3"), Fact("LOINC/2085-9")])
    keeper.vet(p, monitored)
    assert [f.code for f in monitored.facts] == ["LOINC/2093-3", "LOINC/2085-9"]


def test_a_long_stay_holds_each_screening_lab_to_its_interval_on_its_own_day():
    """A Synthea model wrote a 17-day stay with a blood count on admission and its platelets on
    the last day: the count is due once a year, so the second is dropped, on its own day."""
    from trajsim.engine.preventive import LabScreeningKeeper

    p, keeper = patient(age=40.0), LabScreeningKeeper(load_knowledge())
    stay = Visit(p.now, "IMP", 17.5, [Fact("SNOMED/183452005"), Fact("LOINC/787-2"), Fact("LOINC/785-6"),
                                      Fact("LOINC/777-3", offset_days=17.0), Fact("LOINC/8480-6", offset_days=17.0)])
    keeper.vet(p, stay)
    assert [(f.code, f.offset_days) for f in stay.facts] == [
        ("SNOMED/183452005", 0.0), ("LOINC/787-2", 0.0), ("LOINC/785-6", 0.0), ("LOINC/8480-6", 17.0)]
