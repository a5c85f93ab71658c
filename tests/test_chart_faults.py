"""The chart faults a physician still found reading generated charts: a screening three times in one
visit, an empty ED visit, a 3-year-old at 128/58 mm Hg, a course drug stopped twice, a newborn's
birth stay months after birth. Each is a rule that catches a record breaking it, and the engine
keeps every chart clear of it whichever source proposes the visits."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from tests.conftest import ScriptedSource, small_scenario
from tests.test_rules import HYPERTENSION, PENICILLIN, at, rules_found, valid_record
from trajsim.engine import Fact, PatientState, ReferenceSource, Visit, simulate
from trajsim.engine.source import FactKind
from trajsim.events import BIRTH, CONDITION_END, MEDICATION_END, SEX_FEMALE, VISIT_END, Event, events_frame, visit_start_code
from trajsim.knowledge import child_blood_pressure
from trajsim.knowledge.acute import NEWBORN_STAY
from trajsim.knowledge.physiology import SYSTOLIC, VITAL_SIGNS
from trajsim.rules import find_violations
from trajsim.vocab import domain_of

DEPRESSION_SCREENING, ED_VISIT, HEART_RATE = "SNOMED/171207006", "SNOMED/50849002", "LOINC/8867-4"
SICK_VISIT = "SNOMED/185345009"  # Encounter for symptom


def ed_visit(encounter: int, years: float, *facts: tuple[str, float | None, str | None]) -> list[Event]:
    """An ED visit of the valid record's patient at age `years` holding `facts` (code, value, text)."""
    start = at(years)
    return [Event(1, start, encounter, visit_start_code("EMER")), Event(1, start, encounter, ED_VISIT),
            *(Event(1, start, encounter, code, value, None, text) for code, value, text in facts),
            Event(1, start + timedelta(hours=3), encounter, VISIT_END)]


def child(born: datetime, *events: tuple[float, int | None, str, float | None]) -> list[Event]:
    """A girl born at `born` with office visits' facts (age in years, encounter, code, value)."""
    record = [Event(2, born, None, BIRTH), Event(2, born, None, SEX_FEMALE)]
    for years, encounter, code, value in events:
        record.append(Event(2, born + timedelta(days=years * 365.25), encounter, code, value))
    return record


def test_a_procedure_recorded_twice_in_one_visit_is_found():
    record = valid_record() + [Event(1, at(50), 1, DEPRESSION_SCREENING)] * 3
    assert rules_found(record) == {"duplicate_procedure": 2}


@pytest.mark.parametrize("code, age", [("SNOMED/24623002", 27), ("SNOMED/90226004", 18), (DEPRESSION_SCREENING, 9)])
def test_a_screening_before_any_guideline_starts_it_is_found(code, age):
    """Screening mammography at 27, cervical cytology at 18 and a depression screening at 9 (the
    shipped model wrote the first two) are screenings no guideline does at those ages."""
    record = valid_record(sex=SEX_FEMALE) + [Event(1, at(age), 5, code)]
    assert rules_found(record) == {"age_specific_code": 1}
    assert rules_found(valid_record(sex=SEX_FEMALE) + [Event(1, at(52), 5, code)]) == {}


def test_an_ed_visit_with_no_reason_and_no_vital_signs_is_found():
    record = valid_record() + ed_visit(3, 58, ("LOINC/59408-5", 97.0, None))
    assert rules_found(record) == {"emergency_visit_without_reason": 1, "emergency_visit_without_vitals": 1}


def test_an_ed_visit_for_a_known_condition_it_names_with_vital_signs_is_valid():
    record = valid_record() + ed_visit(3, 58, (ED_VISIT, None, HYPERTENSION), (HEART_RATE, 88.0, None))
    assert rules_found(record) == {}


def test_a_birth_stay_months_after_birth_is_found_and_one_at_birth_is_not():
    born = datetime(2020, 5, 1)
    at_birth = child(born, (0, 1, visit_start_code("IMP"), None), (0, 1, NEWBORN_STAY, None), (0.005, 1, VISIT_END, None))
    late = child(born, (0.2, 1, visit_start_code("IMP"), None), (0.2, 1, NEWBORN_STAY, None), (0.205, 1, VISIT_END, None))
    assert rules_found(at_birth) == {}
    assert rules_found(late) == {"newborn_stay_not_at_birth": 1}


def test_a_three_year_old_at_128_58_is_stage_2_hypertension_and_at_100_58_is_not():
    born = datetime(2018, 1, 1)
    visit = [(3.5, 1, visit_start_code("AMB"), None), (3.501, 1, VISIT_END, None)]
    high = child(born, *visit, (3.5, 1, SYSTOLIC, 128.0), (3.5, 1, "LOINC/8462-4", 58.0))
    normal = child(born, *visit, (3.5, 1, SYSTOLIC, 100.0), (3.5, 1, "LOINC/8462-4", 58.0))
    assert rules_found(high) == {"child_bp_stage2_without_hypertension": 1}
    assert rules_found(normal) == {}


def test_a_course_stopped_twice_is_found():
    stop = at(55) + timedelta(days=5)
    record = valid_record() + [Event(1, stop, None, MEDICATION_END, text=PENICILLIN),
                               Event(1, stop + timedelta(days=2), None, MEDICATION_END, text=PENICILLIN)]
    assert rules_found(record) == {"medication_stopped_twice": 1}  # the strep throat's penicillin
    local = "LOCAL/MIMICIV-drug_exposure/00904404073"  # a source's own drug code: its orders are not known as orders
    assert rules_found(valid_record() + [Event(1, stop, None, MEDICATION_END, text=local),
                                         Event(1, stop + timedelta(days=2), None, MEDICATION_END, text=local)]) == {}


def test_the_aap_2017_table_reads_a_childs_percentiles_and_stage_2():
    # Flynn et al. 2017, Table 4: a 3-year-old boy at the 50th height percentile, 90/47 median and
    # 107/62 at the 95th percentile; stage 2 from the 95th + 12 mm Hg, and 140/90 from 13 if lower
    assert child_blood_pressure.level("M", "systolic", 3.4, 50, 50) == 90
    assert child_blood_pressure.stage2_threshold("M", "systolic", 3.4, 50) == 107 + 12
    assert child_blood_pressure.stage2_threshold("M", "systolic", 17.2, 95) == 140
    mean, sd = child_blood_pressure.distribution("F", "diastolic", 8.0, 50)
    assert mean == 59 and sd == pytest.approx((74 - 59) / 1.6449)


@pytest.fixture(scope="module")
def children() -> pl.DataFrame:
    scenario = small_scenario(150, seed=15, **{"population.age_mix": ({"min": 2, "max": 12, "weight": 1.0},)})
    return events_frame(e for r in simulate(scenario, ReferenceSource()) for e in r.events)


def test_childrens_blood_pressure_follows_the_aap_tables(children):
    births = children.filter(pl.col("code") == BIRTH).select("subject_id", birth="time")
    readings = (children.filter(pl.col("code") == SYSTOLIC).join(births, on="subject_id")
                .with_columns(age=(pl.col("time") - pl.col("birth")).dt.total_days() / 365.25)
                .filter(pl.col("age") < 12))
    assert readings.height > 200
    # the tables' medians at the 50th height percentile: about 90-102 mm Hg from 3 to 11 years
    medians = [child_blood_pressure.level("F", "systolic", age, 50, 50) for age in readings["age"]]
    assert abs(float(np.mean(readings["numeric_value"].to_numpy() - np.array(medians)))) < 3
    assert find_violations(children).filter(pl.col("rule") == "child_bp_stage2_without_hypertension").is_empty()


def empty_emergencies(p: PatientState, n: int) -> Visit | None:
    """ED visits with nothing in them and a screening three times at an office visit, as the shipped
    model proposed."""
    if n > 4:
        return None
    if n % 2:
        return Visit(p.now + 40, "EMER", 0.1, [Fact(ED_VISIT)])
    return Visit(p.now + 40, "AMB", 0.02, [Fact(SICK_VISIT)] + [Fact(DEPRESSION_SCREENING)] * 3)


def test_the_engine_gives_an_empty_ed_visit_its_triage_and_a_reason_and_drops_repeated_procedures():
    scenario = small_scenario(20, seed=4, **{"population.age_mix": ({"min": 20, "max": 60, "weight": 1.0},)})
    events = events_frame(e for r in simulate(scenario, ScriptedSource(empty_emergencies)) for e in r.events)
    visits = events.filter(pl.col("code") == visit_start_code("EMER")).select("subject_id", "encounter_id")
    assert visits.height >= 20
    inside = events.join(visits, on=["subject_id", "encounter_id"])
    per_visit = inside.group_by("subject_id", "encounter_id").agg(
        vitals=pl.col("code").is_in(VITAL_SIGNS).sum(),
        reasons=pl.col("code").map_elements(lambda c: domain_of(c) == "condition", return_dtype=pl.Boolean).sum())
    assert (per_visit["vitals"] >= 4).all() and (per_visit["reasons"] >= 1).all()
    screenings = events.filter(pl.col("code") == DEPRESSION_SCREENING)
    assert screenings.height > 0 and screenings.group_by("subject_id", "encounter_id").len()["len"].max() == 1


@pytest.fixture(scope="module")
def adults() -> pl.DataFrame:
    scenario = small_scenario(200, seed=16, **{"population.age_mix": ({"min": 20, "max": 80, "weight": 1.0},)})
    return events_frame(e for r in simulate(scenario, ReferenceSource()) for e in r.events)


def infant_blood_pressures(p: PatientState, n: int) -> Visit | None:
    """ED visits of infants with a blood pressure, which the body does not take under 3 years, as
    their only vital sign (a Synthea model wrote one)."""
    return Visit(p.now + 30, "EMER", 0.1, [Fact(ED_VISIT), Fact(SYSTOLIC)]) if n <= 3 else None


def test_an_infants_ed_visit_with_only_a_blood_pressure_gets_the_triage_an_infant_gets():
    infants = {"population.age_mix": ({"min": 0, "max": 1, "weight": 1.0},), "period.start": "birth"}
    events = events_frame(e for r in simulate(small_scenario(10, seed=3, **infants), ScriptedSource(infant_blood_pressures))
                          for e in r.events)
    assert events.filter(pl.col("code") == visit_start_code("EMER")).height >= 20
    assert events.filter(pl.col("code") == SYSTOLIC).is_empty()
    assert "emergency_visit_without_vitals" not in set(find_violations(events)["rule"])


def test_an_ed_visit_for_chest_pain_gets_an_ecg_a_troponin_and_its_diagnosis(adults):
    chest_pain, ecg, troponin = "SNOMED/29857009", "SNOMED/29303009", "LOINC/10839-9"
    visits = adults.filter(pl.col("code") == chest_pain).select("subject_id", "encounter_id")
    assert visits.height > 10
    inside = adults.join(visits, on=["subject_id", "encounter_id"])
    per_visit = inside.group_by("subject_id", "encounter_id").agg(
        emergency=(pl.col("code") == visit_start_code("EMER")).any(), ecg=(pl.col("code") == ecg).any(),
        troponin=(pl.col("code") == troponin).any())
    assert per_visit["emergency"].all() and per_visit["ecg"].all() and per_visit["troponin"].all()
    # no acute coronary syndrome: the troponin stays below the assays' 99th percentile (about 0.04 ng/mL)
    assert inside.filter(pl.col("code") == troponin)["numeric_value"].max() < 0.05


def test_the_common_ed_reasons_bring_ed_visits_towards_the_us_rate(adults):
    starts = adults.filter(pl.col("code").str.starts_with("TRAJSIM/visit/"))
    spans = starts.group_by("subject_id").agg(first=pl.col("time").min()).join(
        adults.group_by("subject_id").agg(last=pl.col("time").max()), on="subject_id")
    years = float(((spans["last"] - spans["first"]).dt.total_seconds() / (365.25 * 86_400)).sum())
    emergency = starts.filter(pl.col("code") == visit_start_code("EMER")).height / years
    assert 0.12 < emergency < 0.45  # NHAMCS 2019: about 0.4 ED visits per adult-year, for all reasons
    assert find_violations(adults).is_empty()


def test_nothing_recorded_ahead_of_time_outlives_a_death():
    """An episode's end recorded when it was planned is void if the death, drawn again since, comes
    first (a depression ended five months after the death in a 3,000-patient reference cohort)."""
    from tests.test_episodes import patient
    from trajsim.engine.patient import PatientRecord

    record = PatientRecord(patient(age=80.0))
    depression = "SNOMED/370143000"
    record.add_fact(record.patient.now, Fact(depression))
    record.add_fact(record.patient.now + 170, Fact("TRAJSIM/condition_end", text=depression))
    record.add_death(record.patient.now + 10, "SNOMED/26929004")
    assert [e.code for e in record.events] == [depression, "TRAJSIM/death"]


def test_a_drug_stopped_for_a_source_that_records_no_stops_ends_unrecorded():
    """A model of Synthea's FHIR bundles, whose orders carry no end, gets no stop in its output, yet
    the course ends for the engine: amoxicillin may be ordered anew for the next infection."""
    from tests.test_episodes import patient
    from trajsim.engine.patient import PatientRecord

    amoxicillin = "RXNORM/308182"
    for records_stops, recorded in ((True, [amoxicillin, MEDICATION_END]), (False, [amoxicillin])):
        record = PatientRecord(patient(age=30.0), records_stops)
        record.add_fact(record.patient.now, Fact(amoxicillin))
        record.add_fact(record.patient.now + 10, Fact(MEDICATION_END, text=amoxicillin))
        assert [e.code for e in record.events] == recorded
        assert record.patient.medications[amoxicillin] == record.patient.now + 10


RECONCILIATION = "SNOMED/430193006"


def test_a_reconciliation_with_no_drug_to_reconcile_is_found_and_one_with_a_drug_is_not():
    born = datetime(2020, 5, 1)
    stay = [(0, 1, visit_start_code("IMP"), None), (0, 1, NEWBORN_STAY, None), (0.005, 1, RECONCILIATION, None),
            (0.005, 1, VISIT_END, None)]
    assert rules_found(child(born, *stay)) == {"reconciliation_without_medications": 1}
    treated = child(born, *stay[:2], (0.001, 1, "RXNORM/308182", None), *stay[2:])  # amoxicillin ordered in the stay
    assert "reconciliation_without_medications" not in rules_found(treated)
    taken = valid_record() + [Event(1, at(56), 9, visit_start_code("IMP")), Event(1, at(56), 9, RECONCILIATION),
                              Event(1, at(56) + timedelta(days=2), 9, VISIT_END)]  # lisinopril taken since 50
    assert "reconciliation_without_medications" not in rules_found(taken)
    stay = [Event(1, at(56), 9, visit_start_code("IMP")), Event(1, at(56) + timedelta(days=2), 9, VISIT_END)]
    later = [Event(1, at(57), 10, visit_start_code("AMB")), Event(1, at(57) + timedelta(minutes=20), 10, VISIT_END)]
    assert rules_found(valid_record() + stay + later) == {"stay_without_reconciliation": 1}  # lisinopril taken, no list
    assert rules_found(valid_record() + stay) == {}  # the record ends with the stay: its discharge is not in it
    # a child's stay with no drug, and an ED visit where amoxicillin is ordered the moment the stay ends
    first = [(0, 1, visit_start_code("IMP"), None), (0, 1, NEWBORN_STAY, None), (0.005, 1, VISIT_END, None),
             (0.005, 2, visit_start_code("EMER"), None), (0.005, 2, "RXNORM/308182", None), (0.006, 2, VISIT_END, None),
             (0.5, 3, visit_start_code("AMB"), None), (0.5, 3, VISIT_END, None)]
    assert "stay_without_reconciliation" not in rules_found(child(born, *first))


def test_the_engine_reconciles_medications_only_at_a_stay_with_drugs():
    from tests.test_episodes import patient
    from trajsim.engine.procedures import ProcedureKeeper
    from trajsim.engine.source import ACTIVE
    from trajsim.knowledge import load_knowledge

    keeper, newborn = ProcedureKeeper(load_knowledge()), patient(age=0.0)
    birth_stay = Visit(newborn.now, "IMP", 2.0, [Fact(NEWBORN_STAY), Fact(RECONCILIATION, offset_days=2.0)])
    keeper.vet(newborn, birth_stay)
    assert [f.code for f in birth_stay.facts] == [NEWBORN_STAY]
    adult = patient(age=60.0)
    adult.medications["RXNORM/314076"] = ACTIVE
    stay = Visit(adult.now, "IMP", 3.0, [Fact("SNOMED/183452005"), Fact(RECONCILIATION, offset_days=3.0)])
    keeper.vet(adult, stay)
    assert RECONCILIATION in [f.code for f in stay.facts]
    left_out = Visit(adult.now + 30, "IMP", 4.0, [Fact("SNOMED/183452005")])  # a model's stay with no reconciliation
    keeper.vet(adult, left_out)
    assert [(f.code, f.offset_days) for f in left_out.facts] == [("SNOMED/183452005", 0.0), (RECONCILIATION, 4.0)]
    office = Visit(adult.now + 60, "AMB", 0.02, [Fact("SNOMED/185349003")])
    keeper.vet(adult, office)
    assert RECONCILIATION not in [f.code for f in office.facts]  # a stay's, not an office visit's


def test_a_chart_that_records_no_stops_is_reconciled_for_every_drug_it_shows():
    """A model of Synthea's FHIR orders records no stops: a course of amoxicillin ended for the
    engine, but the chart shows it still taken, so a later stay reconciles it, as the rule reading
    the chart expects; a stop the chart must show (a drug a pregnancy rules out) is recorded."""
    from tests.test_episodes import patient
    from trajsim.engine.procedures import ProcedureKeeper
    from trajsim.knowledge import load_knowledge

    from trajsim.engine.patient import PatientRecord

    amoxicillin = "RXNORM/308182"
    for records_stops, reconciled in ((True, False), (False, True)):
        record = PatientRecord(patient(age=60.0), records_stops)
        adult = record.patient
        record.add_fact(adult.now - 210, Fact(amoxicillin))
        record.add_fact(adult.now - 200, Fact(MEDICATION_END, text=amoxicillin))  # a course that ended
        stay = Visit(adult.now, "IMP", 3.0, [Fact("SNOMED/183452005")])
        ProcedureKeeper(load_knowledge()).vet(adult, stay)
        assert (RECONCILIATION in [f.code for f in stay.facts]) is reconciled
    record.add_fact(adult.now + 5, Fact(amoxicillin))
    record.add_fact(adult.now + 15, Fact(MEDICATION_END, text=amoxicillin, always_recorded=True))  # a recorded stop
    stay = Visit(adult.now + 30, "IMP", 3.0, [Fact("SNOMED/183452005")])
    ProcedureKeeper(load_knowledge()).vet(adult, stay)
    assert RECONCILIATION not in [f.code for f in stay.facts]  # the chart shows it stopped
    assert [e.code for e in record.events] == [amoxicillin, amoxicillin, MEDICATION_END]


def test_a_stay_with_only_a_sources_own_drug_codes_gets_no_reconciliation():
    """MIMIC's local NDCs are drugs no rule knows as drugs: a stay that holds only them gets no
    reconciliation, which the rule would find with no drug to reconcile."""
    from tests.test_episodes import patient
    from trajsim.engine.procedures import ProcedureKeeper
    from trajsim.knowledge import load_knowledge

    adult = patient(age=60.0)
    adult.medications["LOCAL/MIMICIV-drug_exposure/00904224461"] = adult.now + 2  # its planned end
    stay = Visit(adult.now, "IMP", 3.0, [Fact("SNOMED/183452005"), Fact("LOCAL/MIMICIV-drug_exposure/00338004938")])
    ProcedureKeeper(load_knowledge()).vet(adult, stay)
    assert RECONCILIATION not in [f.code for f in stay.facts]


PHARYNGITIS, ACETAMINOPHEN = "SNOMED/195662009", "RXNORM/313782"


def weekend_follow_up(p: PatientState, n: int) -> Visit | None:
    """A sore throat treated on a Monday, the drug's end on Saturday at noon, a follow-up renewing
    the drug that Saturday morning (the clinic is closed: it moves to Monday) and the illness's end
    on Sunday, dated before the visit that now treats it, as the shipped model wrote one."""
    monday = math.floor(p.entry_day) + 40
    monday += -(monday + 3) % 7  # day 0 (1 January 1970) was a Thursday
    script = {1: Visit(monday + 0.4, "AMB", 0.02, [Fact(SICK_VISIT), Fact(PHARYNGITIS), Fact(ACETAMINOPHEN)]),
              2: Visit(monday + 5.5, None, 0.0, [Fact(MEDICATION_END, text=ACETAMINOPHEN)]),
              3: Visit(monday + 5.35, "AMB", 0.02, [Fact(SICK_VISIT), Fact(PHARYNGITIS), Fact(ACETAMINOPHEN)]),
              4: Visit(monday + 6.5, None, 0.0, [Fact(CONDITION_END, text=PHARYNGITIS)])}
    return script.get(n)


def test_an_illness_the_source_ends_before_a_visit_moved_past_the_weekend_ends_after_it():
    source = ScriptedSource(weekend_follow_up)
    source.authors = frozenset({FactKind.VISITS, FactKind.DIAGNOSES, FactKind.PRESCRIPTIONS})
    scenario = small_scenario(10, seed=2, **{"population.age_mix": ({"min": 25, "max": 60, "weight": 1.0},)})
    events = events_frame(e for r in simulate(scenario, source) for e in r.events)
    monday_visits = events.filter((pl.col("code") == visit_start_code("AMB"))
                                  & (pl.col("time").dt.weekday() == 1) & (pl.col("time").dt.hour() == 8))
    assert monday_visits["subject_id"].n_unique() >= 8  # the follow-up, at the clinic's first slot on Monday
    ends = events.filter((pl.col("code") == CONDITION_END) & (pl.col("text") == PHARYNGITIS))
    assert ends.filter((pl.col("time").dt.weekday() == 7) & (pl.col("time").dt.hour() == 12)).is_empty()
    after = ends.join(monday_visits.select("subject_id", follow_up=pl.col("time")), on="subject_id").filter(
        pl.col("time").is_between(pl.col("follow_up"), pl.col("follow_up") + pl.duration(days=1)))
    assert after["subject_id"].n_unique() >= 8  # the source's end, dated once the follow-up is over
    assert "medication_without_indication" not in set(find_violations(events)["rule"])


HYPOTHYROIDISM_ICD, LEVOTHYROXINE = "ICD10CM/E03.9", "RXNORM/966222"


def discharge_diagnosis(p: PatientState, n: int) -> Visit | None:
    """A stay, then its diagnosis of hypothyroidism written outside visits and dated before the stay
    started (as a MIMIC MEDS model writes discharge diagnoses), then an office visit a month later."""
    day = math.floor(p.entry_day) + 40
    return {1: Visit(day + 0.9, "IMP", 1.0, [Fact("SNOMED/183452005")]),
            2: Visit(day + 0.5, None, 0.0, [Fact(HYPOTHYROIDISM_ICD)]),
            3: Visit(day + 30.4, "AMB", 0.02, [Fact(SICK_VISIT)])}.get(n)


def test_a_diagnosis_a_source_dates_before_a_stay_it_wrote_first_is_dated_after_it_and_then_treated():
    source = ScriptedSource(discharge_diagnosis)
    source.authors = frozenset({FactKind.VISITS, FactKind.DIAGNOSES, FactKind.PRESCRIPTIONS})
    scenario = small_scenario(8, seed=4, **{"population.age_mix": ({"min": 30, "max": 60, "weight": 1.0},)})
    events = events_frame(e for r in simulate(scenario, source) for e in r.events)
    stays = events.filter(pl.col("code") == visit_start_code("IMP")).select("subject_id", stay=pl.col("time"))
    diagnoses = events.filter(pl.col("code") == HYPOTHYROIDISM_ICD).join(stays, on="subject_id")
    assert diagnoses.height >= 6 and (diagnoses["time"] > diagnoses["stay"]).all()  # not before the stay that never saw it
    treated = events.filter(pl.col("code") == LEVOTHYROXINE)["subject_id"].n_unique()
    assert treated == diagnoses["subject_id"].n_unique()  # at the office visit that follows
    assert "thyroid_hormone_missing_in_hypothyroidism" not in set(find_violations(events)["rule"])
