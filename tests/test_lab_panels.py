"""A laboratory reports a panel whole and its results agree with each other: whoever orders it, a
comprehensive metabolic panel is fourteen results, a blood count's hematocrit is about three
hemoglobins, urine glucose follows the blood glucose, free T4 follows only an abnormal TSH, and a
child is judged against a child's interval. The `values` rules catch panels that cannot be."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from tests.test_rules import at, rules_found, valid_record
from trajsim.clock import DAYS_PER_YEAR, day_number
from trajsim.engine import Fact, PatientState, Visit
from trajsim.engine.body import BodyKeeper
from trajsim.engine.labs import LabKeeper
from trajsim.engine.schedules import Schedule
from trajsim.engine.source import WELL_CHILD, FactKind
from trajsim.events import Event
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.labs import NEGATIVE, POSITIVE, abnormal, lab_panels, order_of, reference_interval
from trajsim.knowledge.physiology import (
    ALBUMIN, BICARBONATE, BILIRUBIN, CHLORIDE, DIFFERENTIAL, DIRECT_BILIRUBIN, EGFR, EGFR_MDRD, HEMATOCRIT, HEMOGLOBIN,
    NEUTROPHILS, SODIUM, TOTAL_PROTEIN, ckd_epi_2021,
)

CMP, BMP, CBC, LIPIDS, URINALYSIS = "LOINC/24323-8", "LOINC/51990-0", "LOINC/57021-8", "LOINC/57698-3", "LOINC/24357-6"
CREATININE, ALT, ALP, GLUCOSE = "LOINC/38483-4", "LOINC/1742-6", "LOINC/6768-6", "LOINC/2339-0"
TSH, FREE_T4 = "LOINC/3016-3", "LOINC/3024-7"
URINE_GLUCOSE, LEUKOCYTE_ESTERASE = "LOINC/25428-4", "LOINC/5799-2"
DIABETES, UTI = "SNOMED/44054006", "SNOMED/68566005"


def person(age: float, sex: str = "F", seed: int = 1, conditions: tuple[str, ...] = ()) -> PatientState:
    birth = day_number(at(0).date()) + 40 * DAYS_PER_YEAR - age * DAYS_PER_YEAR
    now = birth + age * DAYS_PER_YEAR
    return PatientState(1, sex, birth, birth, birth + 100 * DAYS_PER_YEAR, None, np.random.default_rng(seed),
                        now=now, conditions={code: now + 1000 for code in conditions})


def vetted(patient: PatientState, *codes: str, encounter_class: str = "AMB",
           body: BodyKeeper | None = None, measurement_codes: dict[str, str] | None = None) -> dict[str, Fact]:
    """The visit's facts, by code, once the laboratory and the body have vetted them."""
    visit = Visit(patient.now, encounter_class, 0.02, [Fact(code) for code in codes])
    LabKeeper(measurement_codes or {}).vet(patient, visit)
    (body or BodyKeeper(load_knowledge(), patient)).vet(patient, visit)
    return {fact.code: fact for fact in visit.facts}


def test_a_comprehensive_metabolic_panel_ordered_reports_its_fourteen_results():
    facts = vetted(person(50), CMP)
    assert len(lab_panels()[CMP]) == 14 + 1  # its 14 tests and the eGFR computed from its creatinine
    assert set(facts) == set(lab_panels()[CMP]) and all(f.value is not None for f in facts.values())


def test_a_panel_completed_for_a_source_that_writes_egfr_with_the_mdrd_code_reports_it_so():
    """A model of Synthea's records knows eGFR only as MDRD (33914-3): the basic panel its creatinine
    brings reports the eGFR under that code, with the body's value, never also as CKD-EPI 2021."""
    facts = vetted(person(50), CREATININE, measurement_codes={EGFR: EGFR_MDRD})
    assert EGFR not in facts and set(facts) == set(lab_panels()[BMP]) - {EGFR} | {EGFR_MDRD}
    assert facts[EGFR_MDRD].value == pytest.approx(float(ckd_epi_2021(facts[CREATININE].value, 50.0, True)), abs=0.5)


def test_a_single_result_proposed_brings_the_rest_of_its_panel():
    """A learned model may name a creatinine alone; the laboratory reports the basic panel it is
    drawn in, and with an ALT beside it the comprehensive one."""
    assert set(vetted(person(50), CREATININE)) == set(lab_panels()[BMP])
    assert set(vetted(person(50), CREATININE, ALT)) == set(lab_panels()[CMP])
    assert order_of(CREATININE, {CREATININE}) == BMP and order_of(CREATININE, {CREATININE, ALT}) == CMP


def test_results_derived_from_others_agree_with_their_panel():
    """Chloride is sodium minus bicarbonate minus the gap, hematocrit hemoglobin over MCHC, the
    differential adds up to 100% and total protein is albumin plus globulin, at any age."""
    for seed in range(60):
        patient = person(age=2 + seed, sex="FM"[seed % 2], seed=seed)
        facts = {code: f.value for code, f in vetted(patient, CMP, CBC).items()}
        assert 3 <= facts[SODIUM] - facts[CHLORIDE] - facts[BICARBONATE] <= 25
        assert 31 <= facts[HEMOGLOBIN] / facts[HEMATOCRIT] * 100 <= 36
        assert sum(facts[c] for c in DIFFERENTIAL) == pytest.approx(100, abs=0.6)
        assert facts[ALBUMIN] < facts[TOTAL_PROTEIN]


def test_a_toddlers_lymphocyte_predominant_differential_still_adds_up_to_100():
    """Lymphocytes are about 55% of a toddler's leukocytes, 10 points either way (Harriet Lane):
    a count far above that leaves less room for the other kinds, never a negative neutrophil count."""
    vetted(person(age=0.3, conditions=("SNOMED/233604007",)), CBC)  # an infant's pneumonia: lymphocytes alone
    for seed in range(3000):
        facts = {code: f.value for code, f in vetted(person(age=1.5, seed=seed), CBC).items()}
        assert facts[NEUTROPHILS] >= 1, seed
        assert sum(facts[c] for c in DIFFERENTIAL) == pytest.approx(100, abs=0.6), seed


def test_free_t4_follows_only_an_abnormal_tsh():
    reflexed = 0
    for seed in range(80):
        patient = person(55, seed=seed, conditions=("SNOMED/83664006",))  # hypothyroidism: many TSHs off range
        facts = vetted(patient, TSH)
        assert (FREE_T4 in facts) == abnormal(TSH, facts[TSH].value, "F", 55)
        reflexed += FREE_T4 in facts
    assert 0 < reflexed < 80


def test_urine_glucose_is_positive_exactly_when_the_blood_glucose_passes_the_renal_threshold():
    """Glycosuria from a blood glucose of about 180 mg/dL (DeFronzo et al. 2012): the strip reads
    the visit's own glucose, so a diabetic's is sometimes positive and a healthy adult's never."""
    readings = []
    for seed in range(80):
        facts = vetted(person(60, seed=seed, conditions=(DIABETES,)), URINALYSIS, GLUCOSE)
        assert facts[URINE_GLUCOSE].text == (POSITIVE if facts[GLUCOSE].value >= 180 else NEGATIVE)
        assert facts[URINE_GLUCOSE].value is None
        readings.append(facts[URINE_GLUCOSE].text)
    assert POSITIVE in readings and NEGATIVE in readings
    healthy = [vetted(person(40, seed=seed), URINALYSIS)[URINE_GLUCOSE].text for seed in range(40)]
    assert set(healthy) == {NEGATIVE}


def test_a_urinary_infection_turns_the_leukocyte_esterase_positive():
    def positives(conditions: tuple[str, ...]) -> int:
        return sum(vetted(person(30, seed=s, conditions=conditions), URINALYSIS)[LEUKOCYTE_ESTERASE].text == POSITIVE
                   for s in range(100))
    assert positives((UTI,)) > 60 > 20 > positives(())


def test_a_child_has_a_childs_alkaline_phosphatase_and_is_judged_by_a_childs_interval():
    """Growing bone: CALIPER puts a child's alkaline phosphatase at several times an adult's, and a
    laboratory flags it against the child's interval, not the adult one."""
    children = [vetted(person(7, seed=s), CMP)[ALP].value for s in range(30)]
    adults = [vetted(person(45, seed=s), CMP)[ALP].value for s in range(30)]
    assert np.median(children) > 2 * np.median(adults)
    assert abnormal(ALP, 250, "F", 45) and not abnormal(ALP, 250, "F", 7)
    assert reference_interval("LOINC/718-7", "F", 5).low < reference_interval("LOINC/718-7", "F", 30).low


def test_schedules_order_panels_by_condition_setting_and_age():
    """A patient with a urinary infection has a urinalysis at the visit; a sepsis workup happens in
    the emergency department, not at a clinic follow-up; a one-year-old's well visit screens for
    anaemia with a blood count in most children."""
    knowledge = load_knowledge()
    kinds = frozenset(FactKind)

    def due(patient: PatientState, encounter_class: str, *facts: str) -> set[str]:
        visit = Visit(patient.now, encounter_class, 0.02, [Fact(code) for code in facts])
        return {f.code for f in Schedule(knowledge, patient, kinds).due_at(visit)}

    assert URINALYSIS in due(person(30, conditions=(UTI,)), "AMB")
    sepsis = ("SNOMED/91302008",)
    assert {CBC, CMP, URINALYSIS} <= due(person(70, conditions=sepsis), "EMER")
    assert not {CBC, CMP} & due(person(70, conditions=sepsis), "AMB")
    screened = sum(CBC in due(person(1.0, seed=s), "AMB", WELL_CHILD) for s in range(50))
    assert 20 < screened < 50
    assert CBC not in due(person(1.0), "AMB")  # a sick visit is no screening


@pytest.mark.parametrize("values, rule", [
    ({SODIUM: 140.0, CHLORIDE: 120.0, BICARBONATE: 25.0}, "anion_gap_implausible"),
    ({HEMOGLOBIN: 14.0, HEMATOCRIT: 30.0}, "hematocrit_mismatch"),
    (dict(zip(DIFFERENTIAL, (60.0, 30.0, 7.0, 3.0, 5.0))), "differential_not_100"),
    ({ALBUMIN: 4.5, TOTAL_PROTEIN: 4.0}, "albumin_above_total_protein"),
    ({BILIRUBIN: 0.8, DIRECT_BILIRUBIN: 1.2}, "direct_bilirubin_above_total"),
])
def test_the_rules_catch_panel_results_that_cannot_stand_together(values, rule):
    record = valid_record()
    visit = next(e for e in record if e.encounter_id == 1)
    record += [Event(1, visit.time + timedelta(minutes=5), 1, code, value, load_knowledge().measurements[code].unit)
               for code, value in values.items()]
    assert rules_found(record) == {rule: 1}
