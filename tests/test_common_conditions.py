"""Common conditions of US office visits and operations that the tables lacked (issue 19), read as a
physician reads a chart: migraine is treated with a triptan, chronic sinusitis with a nasal steroid,
eczema with a topical steroid, rheumatoid arthritis with methotrexate and its blood tests, hip
osteoarthritis with an analgesic and, now and then, a planned hip replacement; a cataract is operated
on as an outpatient, at most once per eye; sleep apnea is diagnosed by polysomnography; a colon polyp
is found and removed at a colonoscopy; children's vision is screened at the Bright Futures ages; the
tests a guideline orders at a diagnosis are done at it (a pregnancy's first prenatal tests, a
pneumonia's chest radiograph, a strep throat's culture, an enlarged prostate's rectal exam,
osteoporosis's bone density scan). Each comes at about its cited prevalence in a reference cohort,
and no rule is broken."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import polars as pl
import pytest

from tests.conftest import small_scenario
from tests.test_lab_panels import person
from trajsim.engine import Fact, ReferenceSource, Visit, simulate
from trajsim.engine.prescriptions import Prescriber
from trajsim.engine.schedules import Schedule
from trajsim.engine.source import FactKind
from trajsim.events import BIRTH, SEX_FEMALE, VISIT_END, events_frame, visit_start_code
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.acute import admissions
from trajsim.rules import find_violations

MIGRAINE, HIP_OSTEOARTHRITIS, CATARACT = "SNOMED/37796009", "SNOMED/239872002", "SNOMED/193570009"
CHRONIC_SINUSITIS, FLUTICASONE_NASAL = "SNOMED/40055000", "RXNORM/1797907"
ATOPIC_DERMATITIS, TRIAMCINOLONE_CREAM = "SNOMED/24079001", "RXNORM/1014314"
RHEUMATOID_ARTHRITIS, METHOTREXATE = "SNOMED/69896004", "RXNORM/105585"
CBC, CMP = "LOINC/57021-8", "LOINC/24323-8"
SLEEP_APNEA, POLYSOMNOGRAPHY = "SNOMED/78275009", "SNOMED/60554003"
CATARACT_SURGERY, HIP_REPLACEMENT, VISUAL_ACUITY = "SNOMED/110473004", "SNOMED/52734007", "SNOMED/16830007"
COLON_POLYP, COLONOSCOPY, POLYPECTOMY = "SNOMED/68496003", "SNOMED/73761001", "SNOMED/28939002"
SUMATRIPTAN, HIP_ANALGESICS = "RXNORM/313161", ("RXNORM/198014", "RXNORM/198440")


def cohort(size: int, seed: int, youngest: int, oldest: int) -> pl.DataFrame:
    scenario = small_scenario(size, seed=seed, **{"population.age_mix": ({"min": youngest, "max": oldest, "weight": 1.0},)})
    return events_frame(e for r in simulate(scenario, ReferenceSource()) for e in r.events)


@pytest.fixture(scope="module")
def adults() -> pl.DataFrame:
    """300 reference patients aged 45-85 at entry over the default period."""
    return cohort(300, 19, 45, 85)


@pytest.fixture(scope="module")
def young_adults() -> pl.DataFrame:
    """200 reference patients aged 15-45 at entry (pregnancies, pneumonia, strep throat)."""
    return cohort(200, 5, 15, 45)


@pytest.fixture(scope="module")
def children() -> pl.DataFrame:
    """150 reference patients aged 0-18 at entry."""
    return cohort(150, 3, 0, 18)


def patients_with(events: pl.DataFrame, *codes: str, at_visits: bool = False) -> set[int]:
    found = events.filter(pl.col("code").is_in(codes))
    return set((found.filter(pl.col("encounter_id").is_not_null()) if at_visits else found)["subject_id"])


def ages(events: pl.DataFrame) -> pl.DataFrame:
    """Each patient's sex and ages at the first and last visit of the record (history before it aside)."""
    births = events.filter(pl.col("code") == BIRTH).select("subject_id", pl.col("time").alias("birth"))
    women = patients_with(events, SEX_FEMALE)
    span = (events.filter(pl.col("encounter_id").is_not_null()).group_by("subject_id")
            .agg(pl.col("time").min().alias("first"), pl.col("time").max().alias("last")).join(births, on="subject_id"))
    years = 365.25 * 86400e6
    return span.select("subject_id",
                       pl.col("subject_id").is_in(women).replace_strict({True: "F", False: "M"}).alias("sex"),
                       ((pl.col("first") - pl.col("birth")).dt.total_microseconds() / years).alias("entry_age"),
                       ((pl.col("last") - pl.col("birth")).dt.total_microseconds() / years).alias("exit_age"))


@pytest.mark.parametrize("key, code", [("migraine", MIGRAINE), ("hip_osteoarthritis", HIP_OSTEOARTHRITIS),
                                       ("cataract", CATARACT), ("chronic_sinusitis", CHRONIC_SINUSITIS),
                                       ("atopic_dermatitis", ATOPIC_DERMATITIS)])
def test_each_condition_is_recorded_at_about_its_cited_prevalence(adults, key, code):
    """The patients ever recorded with it lie between the prevalence at their last age (for a condition
    that lasts) and the highest prevalence over their record (one that remits, as migraine does after
    50), give or take three binomial standard deviations."""
    knowledge = load_knowledge()
    at_exit, highest = [], []
    for _, sex, entry, exit_age in ages(adults).iter_rows():
        curve = [knowledge.prevalence_at(key, sex, age) for age in np.linspace(entry, exit_age, 12)]
        at_exit.append(curve[-1])
        highest.append(max(curve))
    observed = len(patients_with(adults, code))
    low, high = sum(at_exit), sum(highest)
    spread = 3 * np.sqrt(sum(p * (1 - p) for p in highest))
    assert low - spread <= observed <= high + spread, (observed, low, high)
    assert observed >= 5, "too few to judge"


def test_migraine_gets_a_triptan_hip_osteoarthritis_an_analgesic_and_chronic_sinusitis_a_nasal_steroid(adults):
    """Most patients with it take its first-line drug (AHS 2021; ACR 2019; AAO-HNS 2015), every one
    diagnosed at a visit does, and the triptan is taken for nothing else."""
    for condition, drugs in ((MIGRAINE, (SUMATRIPTAN,)), (HIP_OSTEOARTHRITIS, HIP_ANALGESICS),
                             (CHRONIC_SINUSITIS, (FLUTICASONE_NASAL,)), (ATOPIC_DERMATITIS, (TRIAMCINOLONE_CREAM,))):
        treated = patients_with(adults, *drugs)
        assert patients_with(adults, condition, at_visits=True) <= treated, condition
        assert len(patients_with(adults, condition) & treated) >= 0.7 * len(patients_with(adults, condition)), condition
    assert patients_with(adults, SUMATRIPTAN) <= patients_with(adults, MIGRAINE)


def encounters_of(events: pl.DataFrame, procedure: str) -> pl.DataFrame:
    """The encounters a procedure is done in: class, length in days, patient and the procedure's reason."""
    done = events.filter(pl.col("code") == procedure).select("subject_id", "encounter_id", pl.col("text").alias("reason"))
    starts = events.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).select(
        "encounter_id", pl.col("code").alias("visit"), pl.col("time").alias("start"))
    ends = events.filter(pl.col("code") == VISIT_END).select("encounter_id", pl.col("time").alias("end"))
    return (done.join(starts, on="encounter_id").join(ends, on="encounter_id")
            .with_columns(((pl.col("end") - pl.col("start")).dt.total_seconds() / 86400).alias("days")))


def test_a_cataract_is_operated_on_as_an_outpatient_at_most_once_per_eye(adults):
    operations = encounters_of(adults, CATARACT_SURGERY)
    assert operations.height >= 10
    assert set(operations["visit"]) == {visit_start_code("AMB")} and operations["days"].max() < 1
    assert set(operations["reason"]) == {CATARACT}
    assert operations.group_by("subject_id").len()["len"].max() <= 2
    assert set(operations["subject_id"]) <= patients_with(adults, CATARACT)


def test_a_worn_hip_is_replaced_in_a_planned_stay(adults):
    """Total hip replacement for osteoarthritis (beside those for a hip fracture), in a stay that names it."""
    stays = encounters_of(adults, HIP_REPLACEMENT).filter(pl.col("reason") == HIP_OSTEOARTHRITIS)
    assert stays.height >= 1
    assert set(stays["visit"]) == {visit_start_code("IMP")}
    assert stays.group_by("subject_id").len()["len"].max() <= 2


def test_a_colon_polyp_is_found_at_a_colonoscopy_and_removed_at_it(adults):
    """USMSTF 2020: each polyp in an encounter with a colonoscopy and a polypectomy done for it; the
    colonoscopy is then diagnostic, not a screening held to its ten years."""
    found = adults.filter((pl.col("code") == COLON_POLYP) & pl.col("encounter_id").is_not_null())
    assert found.height >= 10
    for procedure in (COLONOSCOPY, POLYPECTOMY):
        done = adults.filter((pl.col("code") == procedure) & (pl.col("text") == COLON_POLYP))
        assert set(found["encounter_id"]) == set(done["encounter_id"]), procedure
    assert set(encounters_of(adults, POLYPECTOMY)["visit"]) == {visit_start_code("AMB")}


def test_colon_polyps_are_found_at_about_the_cited_rate(adults):
    """Episodes per person-year of the cohort against the rate at each patient's ages, within three
    Poisson standard deviations."""
    knowledge = load_knowledge()
    expected = 0.0
    for _, sex, entry, exit_age in ages(adults).iter_rows():
        steps = np.linspace(entry, exit_age, 24)
        expected += sum(knowledge.episode_rate("colon_polyp", sex, (a + b) / 2) * (b - a) for a, b in pairwise(steps))
    observed = adults.filter((pl.col("code") == COLON_POLYP) & pl.col("encounter_id").is_not_null()).height
    assert abs(observed - expected) <= 3 * np.sqrt(expected), (observed, expected)


def test_sleep_apnea_diagnosed_at_a_visit_is_diagnosed_by_polysomnography():
    """AASM 2017: polysomnography is the diagnostic test of adult OSA; not again at its follow-up,
    and not for a child."""
    knowledge, kinds = load_knowledge(), frozenset(FactKind)

    def due(patient, *facts: Fact) -> set[str]:
        return {f.code for f in Schedule(knowledge, patient, kinds).due_at(Visit(patient.now, "AMB", 0.02, list(facts)))}

    assert POLYSOMNOGRAPHY in due(person(55, "M"), Fact(SLEEP_APNEA))
    assert POLYSOMNOGRAPHY not in due(person(55, "M", conditions=(SLEEP_APNEA,)), Fact("SNOMED/390906007"))
    assert POLYSOMNOGRAPHY not in due(person(10, "M"), Fact(SLEEP_APNEA))


def test_childrens_vision_is_screened_at_the_bright_futures_ages(children):
    """Visual acuity at 3-6, 8, 10, 12 and 15 (AAP 2023), at well visits, most children screened
    when due."""
    screened = children.filter(pl.col("code") == VISUAL_ACUITY)
    born = dict(children.filter(pl.col("code") == BIRTH).select("subject_id", "time").iter_rows())
    at = [(time - born[subject]).days / 365.25 for subject, time in screened.select("subject_id", "time").iter_rows()]
    assert at and 3 <= min(at) and max(at) < 16.5
    spans = ages(children)
    due = set(spans.filter((pl.col("entry_age") < 4) & (pl.col("exit_age") > 6))["subject_id"])
    assert len(due & set(screened["subject_id"])) >= 0.7 * len(due) > 0


PREGNANCY, PRENATAL_INITIAL_VISIT = "SNOMED/72892002", "SNOMED/424441002"
PRENATAL_TESTS = ("SNOMED/44608003", "SNOMED/47758006", "SNOMED/31676001", "SNOMED/269828009", "SNOMED/169690007",
                  "SNOMED/117010004")  # ABO/Rh type, HBsAg, HIV, syphilis, rubella, urine culture


def assert_done_at_diagnosis(events: pl.DataFrame, condition: str, *procedures: str, office_only: bool = False) -> int:
    """Every encounter recording `condition` (only office visits: AMB) holds each of `procedures`,
    named for it; returns how many there are."""
    visits = events.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).select("encounter_id", "code")
    recorded = events.filter((pl.col("code") == condition) & pl.col("encounter_id").is_not_null())
    if office_only:
        recorded = recorded.join(visits.filter(pl.col("code") == visit_start_code("AMB")), on="encounter_id")
    diagnosed = set(recorded["encounter_id"])
    for procedure in procedures:
        done = events.filter((pl.col("code") == procedure) & (pl.col("text") == condition))
        assert diagnosed <= set(done["encounter_id"]), (condition, procedure)
    return len(diagnosed)


def test_the_first_prenatal_visit_tests_blood_type_infections_and_urine(young_adults):
    """ACOG 2017, USPSTF 2018-2019: ABO/Rh typing, hepatitis B, HIV, syphilis, rubella immunity and
    a urine culture at the first prenatal visit of every pregnancy, and at no other visit."""
    first_visits = set(young_adults.filter(pl.col("code") == PRENATAL_INITIAL_VISIT)["encounter_id"])
    assert len(first_visits) >= 5
    for test in PRENATAL_TESTS:
        done = young_adults.filter(pl.col("code") == test)
        assert set(done["encounter_id"]) == first_visits and done.height == len(first_visits), test
        assert set(done["text"]) == {PREGNANCY}


def test_a_pneumonia_gets_a_chest_radiograph_and_a_strep_throat_a_culture(young_adults):
    """ATS/IDSA 2019: the diagnosis of pneumonia rests on a chest radiograph; IDSA 2012: a strep throat
    is confirmed by a test."""
    assert assert_done_at_diagnosis(young_adults, "SNOMED/233604007", "SNOMED/399208008") >= 3
    assert assert_done_at_diagnosis(young_adults, "SNOMED/43878008", "SNOMED/117015009") >= 3


def test_an_enlarged_prostate_gets_a_rectal_exam_and_osteoporosis_a_bone_density_scan(adults):
    """AUA 2021: a digital rectal exam at the initial evaluation in the office; ISCD 2019: osteoporosis
    diagnosed by DXA, repeated no sooner than every two years while it is treated (Endocrine Society 2019)."""
    assert assert_done_at_diagnosis(adults, "SNOMED/266569009", "SNOMED/410006001", office_only=True) >= 1
    assert assert_done_at_diagnosis(adults, "SNOMED/64859006", "SNOMED/312681000", office_only=True) >= 1
    scans = adults.filter(pl.col("code") == "SNOMED/312681000").sort("subject_id", "time")
    gaps = scans.with_columns(gap=pl.col("time").diff().over("subject_id").dt.total_days()).drop_nulls("gap")
    assert gaps.height >= 1 and gaps["gap"].min() >= 700
    assert set(scans["text"]) == {"SNOMED/64859006"}


def test_a_childs_eczema_starts_after_the_first_months_and_is_treated_with_a_topical_steroid(children):
    """Bieber 2008: atopic dermatitis begins in infancy, not at birth; AAD 2014: topical corticosteroids."""
    born = dict(children.filter(pl.col("code") == BIRTH).select("subject_id", "time").iter_rows())
    first = children.filter(pl.col("code") == ATOPIC_DERMATITIS).group_by("subject_id").agg(pl.col("time").min())
    assert first.height >= 5
    assert all((time - born[subject]).days >= 0.25 * 365.25 - 1 for subject, time in first.iter_rows())
    assert len(set(first["subject_id"]) & patients_with(children, TRIAMCINOLONE_CREAM)) >= 0.7 * first.height


def test_rheumatoid_arthritis_gets_methotrexate_and_its_blood_monitoring():
    """ACR 2021: methotrexate first; ACR 2012: a blood count, liver tests and creatinine every 12
    weeks on it (here a CBC and a comprehensive panel at the quarterly follow-up)."""
    knowledge, kinds = load_knowledge(), frozenset(FactKind)
    patient = person(50, "F", conditions=(RHEUMATOID_ARTHRITIS,))
    visit = Visit(patient.now, "AMB", 0.02, [Fact("SNOMED/390906007")])
    Prescriber(knowledge).vet(patient, visit)
    assert METHOTREXATE in {f.code for f in visit.facts}
    due = {f.code for f in Schedule(knowledge, patient, kinds).due_at(Visit(patient.now, "AMB", 0.02, []))}
    assert {CBC, CMP} <= due
    assert not {CBC, CMP} & {f.code for f in Schedule(knowledge, person(50, "F"), kinds).due_at(
        Visit(patient.now, "AMB", 0.02, []))}
    assert knowledge.conditions["rheumatoid_arthritis"].follow_up_days == 91


def test_these_cohorts_break_no_rule(adults, young_adults, children):
    assert find_violations(adults).is_empty()
    assert find_violations(young_adults).is_empty()
    assert find_violations(children).is_empty()


def test_outpatient_surgery_is_a_route_of_its_own():
    """An outpatient operation is a planned ambulatory encounter, a joint replacement a planned stay."""
    routes = {a.condition: (a.elective, a.encounter_class) for a in admissions()}
    assert routes["cataract"] == (True, "AMB")
    assert routes["hip_osteoarthritis"] == routes["knee_osteoarthritis"] == (True, "IMP")
    assert routes["heart_failure"] == (False, "IMP")
