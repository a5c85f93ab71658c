"""Conditions behind leading causes of US visits, admissions and deaths, read as a physician reads
them: an anaemic patient's blood count is microcytic with empty iron stores and iron is ordered and
works; a cirrhotic liver panel is raised with the AST above the ALT; gout raises the urate and
allopurinol brings it below target; an enlarged prostate is a man's from 40 and is treated; a
cellulitis gets a short antistreptococcal course."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tests.conftest import small_scenario
from tests.test_lab_panels import CBC, CMP, CREATININE, person, vetted
from trajsim.engine import Fact, ReferenceSource, Visit, simulate
from trajsim.engine.prescriptions import Prescriber
from trajsim.engine.schedules import Schedule
from trajsim.engine.source import FactKind
from trajsim.events import BIRTH, SEX_MALE, events_frame
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.labs import lab_panels, reference_interval
from trajsim.knowledge.physiology import ALBUMIN, BILIRUBIN, DIRECT_BILIRUBIN, HEMOGLOBIN, MCV
from trajsim.rules import find_violations

IRON_DEFICIENCY_ANEMIA, CIRRHOSIS, GOUT = "SNOMED/87522002", "SNOMED/19943007", "SNOMED/90560007"
PROSTATE_ENLARGEMENT, CELLULITIS = "SNOMED/266569009", "SNOMED/128045006"
FERROUS_SULFATE, ALLOPURINOL, TAMSULOSIN, CEPHALEXIN = "RXNORM/310325", "RXNORM/197319", "RXNORM/863669", "RXNORM/309114"
FERRITIN, URATE, RDW = "LOINC/2276-4", "LOINC/3084-1", "LOINC/788-0"
HEPATIC_PANEL, AST, ALT, PLATELETS = "LOINC/24325-3", "LOINC/1920-8", "LOINC/1742-6", "LOINC/777-3"


def median_values(patients, *codes: str) -> dict[str, float]:
    """The median of each result over the patients' visits ordering `codes`."""
    visits = [vetted(p, *codes) for p in patients]
    return {code: float(np.median([v[code].value for v in visits])) for code in visits[0]}


def taking(patient, drug: str):
    patient.medications[drug] = patient.now + 1000
    return patient


def test_iron_deficiency_anaemia_shows_on_the_blood_count_and_the_ferritin():
    """Microcytic, hypochromic anaemia with a wide RDW and a ferritin below 15 ng/mL (Camaschella,
    NEJM 2015), against women of the same age without it."""
    anaemic = median_values([person(30, "F", s, (IRON_DEFICIENCY_ANEMIA,)) for s in range(40)], CBC, FERRITIN)
    healthy = median_values([person(30, "F", s) for s in range(40)], CBC, FERRITIN)
    assert anaemic[HEMOGLOBIN] < reference_interval(HEMOGLOBIN, "F", 30).low < healthy[HEMOGLOBIN]
    assert anaemic[MCV] < 80 < healthy[MCV]
    assert anaemic[RDW] > 14.5 > healthy[RDW]
    assert anaemic[FERRITIN] < 15 < healthy[FERRITIN]


def test_iron_is_ordered_for_iron_deficiency_anaemia_and_restores_the_hemoglobin():
    patient = person(30, "F", 1, (IRON_DEFICIENCY_ANEMIA,))
    visit = Visit(patient.now, "AMB", 0.02, [Fact("SNOMED/390906007")])
    Prescriber(load_knowledge()).vet(patient, visit)
    assert FERROUS_SULFATE in {f.code for f in visit.facts}
    treated = median_values([taking(person(30, "F", s, (IRON_DEFICIENCY_ANEMIA,)), FERROUS_SULFATE)
                             for s in range(40)], CBC)
    assert treated[HEMOGLOBIN] >= reference_interval(HEMOGLOBIN, "F", 30).low


def test_a_cirrhotic_liver_panel_is_whole_and_raised_with_the_ast_above_the_alt():
    """Kwo et al., ACG 2017: an AST/ALT ratio above 1, a raised bilirubin and a low albumin; the
    platelets fall with portal hypertension. The direct bilirubin is part of the total."""
    cirrhotic = [person(60, "M", s, (CIRRHOSIS,)) for s in range(40)]
    for patient in cirrhotic[:10]:
        facts = vetted(patient, HEPATIC_PANEL)
        assert set(facts) == set(lab_panels()[HEPATIC_PANEL]) and len(facts) == 7
        assert facts[DIRECT_BILIRUBIN].value <= facts[BILIRUBIN].value
    sick = median_values(cirrhotic, HEPATIC_PANEL, CBC)
    well = median_values([person(60, "M", s) for s in range(40)], HEPATIC_PANEL, CBC)
    assert sick[AST] > sick[ALT] and sick[AST] > 1.5 * well[AST]
    assert sick[BILIRUBIN] > reference_interval(BILIRUBIN, "M", 60).high > well[BILIRUBIN]
    assert sick[ALBUMIN] < reference_interval(ALBUMIN, "M", 60).low + 0.2 < well[ALBUMIN]
    assert sick[PLATELETS] < 150 < well[PLATELETS]


def test_a_liver_test_proposed_alone_brings_the_hepatic_panel_and_beside_a_creatinine_the_comprehensive_one():
    assert set(vetted(person(50), ALT)) == set(lab_panels()[HEPATIC_PANEL])
    assert set(vetted(person(50), ALT, CREATININE)) == set(lab_panels()[CMP])


def test_cirrhosis_is_followed_with_a_liver_panel_and_gout_with_the_urate():
    knowledge, kinds = load_knowledge(), frozenset(FactKind)

    def due(patient) -> set[str]:
        return {f.code for f in Schedule(knowledge, patient, kinds).due_at(Visit(patient.now, "AMB", 0.02, []))}

    assert {HEPATIC_PANEL, CBC} <= due(person(60, "M", conditions=(CIRRHOSIS,)))
    assert URATE in due(person(60, "M", conditions=(GOUT,)))
    assert not {HEPATIC_PANEL, URATE} & due(person(60, "M"))


def test_gout_raises_the_urate_and_allopurinol_brings_it_below_target():
    """FitzGerald et al., ACR 2020: gout follows a urate above saturation (6.8 mg/dL); allopurinol
    is titrated to below 6."""
    untreated = median_values([person(60, "M", s, (GOUT,)) for s in range(40)], URATE)[URATE]
    treated = median_values([taking(person(60, "M", s, (GOUT,)), ALLOPURINOL) for s in range(40)], URATE)[URATE]
    well = median_values([person(60, "M", s) for s in range(40)], URATE)[URATE]
    assert treated < 6.0 < well < 6.8 < untreated


def test_a_cirrhotic_chemistry_panel_is_raised_too():
    """A comprehensive panel reads the same liver as a hepatic one."""
    assert median_values([person(60, "M", s, (CIRRHOSIS,)) for s in range(30)], CMP)[AST] > 40


@pytest.fixture(scope="module")
def older_adults() -> pl.DataFrame:
    """120 reference patients aged 45-85 over the default period."""
    scenario = small_scenario(120, seed=5, **{"population.age_mix": ({"min": 45, "max": 85, "weight": 1.0},)})
    return events_frame(e for r in simulate(scenario, ReferenceSource()) for e in r.events)


def test_older_adults_get_these_conditions_treated_and_break_no_rule(older_adults):
    """Every diagnosis made at a visit brings its drug (and gout its urate); an enlarged prostate
    is a man's, first recorded from 40."""
    events = older_adults

    def patients(code: str, at_visits: bool = False) -> set[int]:
        found = events.filter(pl.col("code") == code)
        return set((found.filter(pl.col("encounter_id").is_not_null()) if at_visits else found)["subject_id"])

    assert find_violations(events).is_empty()
    for condition, drug in ((GOUT, ALLOPURINOL), (PROSTATE_ENLARGEMENT, TAMSULOSIN), (CELLULITIS, CEPHALEXIN)):
        assert patients(condition, at_visits=True) and patients(condition, at_visits=True) <= patients(drug), condition
        assert len(patients(condition) & patients(drug)) >= 0.7 * len(patients(condition)), condition
    assert patients(GOUT) & patients(ALLOPURINOL) <= patients(URATE)
    men = set(events.filter(pl.col("code") == SEX_MALE)["subject_id"])
    assert patients(PROSTATE_ENLARGEMENT) <= men
    births = dict(events.filter(pl.col("code") == BIRTH).select("subject_id", "time").iter_rows())
    first = events.filter(pl.col("code") == PROSTATE_ENLARGEMENT).group_by("subject_id").agg(pl.col("time").min())
    assert all((time - births[subject]).days / 365.25 >= 40 for subject, time in first.iter_rows())
