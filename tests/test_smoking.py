"""Smoking status: asked at well visits from age 13, answered from a smoking history each patient
keeps for life (never -> smoker -> ex-smoker, never back), at the survey's prevalence by age and sex,
and exported as US Core smoking-status Observations."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import orjson
import pytest

from trajsim.knowledge.smoking import CURRENT, FORMER, NEVER, smoking_curve

ORDER = {NEVER: 0, CURRENT: 1, FORMER: 2}


@pytest.fixture(scope="module")
def statuses(cohort_dir) -> dict[str, list[tuple[str, str, str]]]:
    """Per patient: (when, SNOMED answer, birth date) of every recorded smoking status, in time order."""
    births = {p["id"]: p["birthDate"] for p in map(orjson.loads, (cohort_dir / "fhir" / "ndjson" / "Patient.ndjson")
                                                   .read_bytes().splitlines())}
    found = defaultdict(list)
    for line in (cohort_dir / "fhir" / "ndjson" / "Observation.ndjson").read_bytes().splitlines():
        observation = orjson.loads(line)
        if observation["code"]["coding"][0]["code"] == "72166-2":
            patient = observation["subject"]["reference"].removeprefix("Patient/")
            answer = "SNOMED/" + observation["valueCodeableConcept"]["coding"][0]["code"]
            found[patient].append((observation["effectiveDateTime"], answer, births[patient]))
    return {patient: sorted(rows) for patient, rows in found.items()}


def test_smoking_status_is_recorded_from_age_13_as_us_core_asks(statuses):
    assert len(statuses) > 20
    ages = [int(when[:4]) - int(birth[:4]) for rows in statuses.values() for when, _, birth in rows]
    assert min(ages) >= 13 - 1  # a birthday later in the year than the visit: 12 by calendar years


def test_a_patients_smoking_status_only_moves_forward(statuses):
    for rows in statuses.values():
        steps = [ORDER[answer] for _, answer, _ in rows]
        assert steps == sorted(steps), rows


def test_the_cohort_smokes_at_the_surveyed_prevalence_by_age():
    curve, rng = smoking_curve(), np.random.default_rng(5)
    draws = [tuple(pair) for pair in rng.random((20_000, 2))]
    for age, current, former in ((35, 0.126, 0.181), (55, 0.149, 0.244), (75, 0.083, 0.376)):
        answers = [curve.status(sex, age, pair) for sex, pair in zip("FM" * 10_000, draws)]
        # NHIS 2021: current smokers; former = current x quit ratio / (1 - quit ratio)
        assert answers.count(CURRENT) / len(answers) == pytest.approx(current, abs=0.01)
        assert answers.count(FORMER) / len(answers) == pytest.approx(former, abs=0.015)
    men = [curve.status("M", 55, pair) for pair in draws].count(CURRENT)
    women = [curve.status("F", 55, pair) for pair in draws].count(CURRENT)
    assert men > women * 1.2  # 13.1% of men and 10.1% of women smoke


def test_a_smoking_status_is_a_us_core_observation_with_a_snomed_answer(cohort_dir):
    for line in (cohort_dir / "fhir" / "ndjson" / "Observation.ndjson").read_bytes().splitlines():
        observation = orjson.loads(line)
        if observation["code"]["coding"][0]["code"] == "72166-2":
            break
    assert observation["meta"]["profile"] == ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-smokingstatus"]
    assert observation["category"][0]["coding"][0]["code"] == "social-history"
    answer = observation["valueCodeableConcept"]["coding"][0]
    assert answer["system"] == "http://snomed.info/sct"
    assert (answer["code"], answer["display"]) in {("266919005", "Never smoked tobacco"), ("8517006", "Ex-smoker"),
                                                   ("77176002", "Smoker")}


def test_smoking_doubles_the_rate_of_a_first_infarction_while_the_population_keeps_its_rate():
    from datetime import datetime

    from trajsim.clock import DAYS_PER_YEAR, day_number
    from trajsim.engine import PatientState
    from trajsim.engine.acute import EmergencyKeeper
    from trajsim.knowledge import load_knowledge
    from trajsim.knowledge.acute import event_rate

    knowledge, age = load_knowledge(), 60.0
    keeper, now = EmergencyKeeper(knowledge), day_number(datetime(2015, 1, 1).date())

    def rate(draws: tuple[float, float]) -> float:
        patient = PatientState(1, "M", now - age * DAYS_PER_YEAR, now, now + 10 * DAYS_PER_YEAR, None,
                               np.random.default_rng(1), now=now, smoking_draws=draws)
        return keeper._onset_rate(patient, "myocardial_infarction", set())

    smoker, never = rate((0.0, 0.9999)), rate((0.9999, 0.0))
    assert smoker == pytest.approx(2.0 * never)  # Mons et al. 2015: hazard ratio about 2
    share = smoking_curve().current_share("M", age)
    assert 0.1 < share < 0.3  # NHIS 2021: about 15-20% of men around 60 smoke
    # the baseline (a never smoker with no risk condition) is the published rate over the population's
    # mean excess, smoking's included, so the cohort keeps the published rate
    mean_factor = knowledge.risk_normaliser("myocardial_infarction", "M", age) + (2.0 - 1.0) * share
    assert never * mean_factor == pytest.approx(event_rate("myocardial_infarction", "M", age), rel=1e-6)
