"""Payers, coverage, claims and costs: every encounter is billed once, totals add up, the plan
follows age, income and entitlement, and what the payer paid follows the plan."""

from datetime import date, datetime

import orjson
import pytest
from typer.testing import CliRunner

from fhir_export.claims import add_insurance, cents, plan_of
from fhir_export.identity import stable_random
from fhir_export.validate import R4_SCHEMA, validate_directory
from tests.conftest import small_scenario
from tests.test_validate import r4_schema  # noqa: F401  (the session's FHIR R4 JSON schema)
from trajsim.cli import app
from trajsim.events import BIRTH, SEX_MALE, VISIT_END, Event, visit_start_code
from trajsim.generate import generate
from trajsim.knowledge.costs import fee
from trajsim.knowledge.insurance import birthday, coverage_history, insurance_stages, span_at
from trajsim.knowledge.labs import lab_panels
from trajsim.output import default_builder
from trajsim.scenario import ScenarioError

NAMESPACE = "test/1"
ESRD = "SNOMED/46177005"


def chart(subject: int, born: date, visits: list[tuple[datetime, list[tuple[str, float | None, str | None]]]],
          insurance: str = "claims") -> dict[str, list[dict]]:
    """A patient's resources by type, with `visits` of (start, [(code, value, unit), ...])."""
    events = [Event(subject, datetime(born.year, born.month, born.day), None, BIRTH, None, None, None),
              Event(subject, datetime(born.year, born.month, born.day), None, SEX_MALE, None, None, None)]
    for number, (start, facts) in enumerate(visits, 1):
        events.append(Event(subject, start, number, visit_start_code("AMB"), None, None, None))
        events += [Event(subject, start, number, code, value, unit, None) for code, value, unit in facts]
        events.append(Event(subject, start.replace(hour=start.hour + 1), number, VISIT_END, None, None, None))
    patient = default_builder(NAMESPACE).build(events)
    add_insurance(patient, f"{NAMESPACE}/{subject}", insurance)
    out: dict[str, list[dict]] = {}
    for resource in patient.resources:
        out.setdefault(resource["resourceType"], []).append(resource)
    return out


def subject_with_plan(plan: str, age: int, born: date, later: str | None = None) -> int:
    """The first subject number whose drawn plan at `age` is `plan` (and from 65, `later`)."""
    for subject in range(1, 2000):
        spans = coverage_history(stable_random(f"{NAMESPACE}/{subject}/insurance"), born)
        if span_at(spans, birthday(born, age)).plan == plan and later in (None, spans[-1].plan):
            return subject
    raise AssertionError(f"no subject with {plan} at {age}")


def bundles(cohort_dir):
    for path in sorted((cohort_dir / "fhir" / "bundles").glob("*.json")):
        yield [entry["resource"] for entry in orjson.loads(path.read_bytes())["entry"]]


def test_every_encounter_has_exactly_one_claim_and_one_explanation_of_benefit(cohort_dir):
    encounters = 0
    for resources in bundles(cohort_dir):
        ids = {f"urn:uuid:{r['id']}" for r in resources if r["resourceType"] == "Encounter"}
        claimed = [r["item"][0]["encounter"][0]["reference"] for r in resources if r["resourceType"] == "Claim"]
        explained = [r["item"][0]["encounter"][0]["reference"] for r in resources
                     if r["resourceType"] == "ExplanationOfBenefit"]
        assert sorted(claimed) == sorted(ids) == sorted(explained)
        encounters += len(ids)
    assert encounters > 100


def test_claim_totals_equal_the_sum_of_their_lines_and_payer_plus_patient_is_the_bill(cohort_dir):
    for resources in bundles(cohort_dir):
        for resource in resources:
            if resource["resourceType"] == "Claim":
                assert cents(resource["total"]) == sum(cents(item["net"]) for item in resource["item"])
            if resource["resourceType"] == "ExplanationOfBenefit":
                totals = {t["category"]["coding"][0]["code"]: cents(t["amount"]) for t in resource["total"]}
                assert totals["submitted"] == totals["benefit"] + totals["paidbypatient"]
                assert cents(resource["payment"]["amount"]) == totals["benefit"]


def test_every_70_year_old_is_covered_by_medicare_first():
    for subject in range(1, 21):
        resources = chart(subject, date(1950, 3, 10), [(datetime(2020, 6, 1, 9), [])])
        medicare = next(c for c in resources["Coverage"] if c["type"]["coding"][0]["code"] == "1")  # SOPT: MEDICARE
        payer = next(o for o in resources["Organization"] if o["name"] == "Medicare")
        assert medicare["payor"][0]["reference"] == f"urn:uuid:{payer['id']}"
        focal = next(i for i in resources["Claim"][0]["insurance"] if i["focal"])
        assert focal["coverage"]["reference"] == f"urn:uuid:{medicare['id']}"


def test_a_poor_70_year_old_is_dual_eligible_and_medicaid_pays_what_medicare_leaves():
    born = date(1950, 3, 10)
    resources = chart(subject_with_plan("dual", 70, born), born, [(datetime(2020, 6, 1, 9), [])])
    medicare, medicaid = resources["Coverage"]
    assert [(plan_of(c), c["order"]) for c in (medicare, medicaid)] == [("medicare", 1), ("medicaid", 2)]
    assert [(i["sequence"], i["focal"]) for i in resources["Claim"][0]["insurance"]] == [(1, True), (2, False)]
    (benefit,) = resources["ExplanationOfBenefit"]
    totals = {t["category"]["coding"][0]["code"]: cents(t["amount"]) for t in benefit["total"]}
    assert totals["paidbypatient"] == 0 and totals["benefit"] == totals["submitted"]


def test_medicare_starts_on_the_65th_birthday():
    born = date(1955, 8, 20)
    subject = subject_with_plan("employer", 60, born, later="medicare")
    resources = chart(subject, born, [(datetime(2019, 5, 1, 9), []), (datetime(2021, 5, 1, 9), [])])
    before, medicare = resources["Coverage"]
    assert (plan_of(before), plan_of(medicare)) == ("employer", "medicare")
    assert before["period"]["end"] == "2020-08-19" and medicare["period"]["start"] == "2020-08-20"
    first, second = resources["Claim"]
    assert [c["insurance"][0]["coverage"]["reference"] for c in (first, second)] == \
        [f"urn:uuid:{before['id']}", f"urn:uuid:{medicare['id']}"]


def test_end_stage_renal_disease_brings_medicare_before_65():
    born = date(1970, 1, 15)
    subject = subject_with_plan("employer", 50, born)
    resources = chart(subject, born, [(datetime(2019, 3, 1, 9), []), (datetime(2020, 3, 1, 9), [(ESRD, None, None)]),
                                      (datetime(2021, 3, 1, 9), [])])
    assert [plan_of(c) for c in resources["Coverage"]] == ["employer", "medicare"]
    assert resources["Coverage"][1]["period"]["start"] == "2020-03-01"


def test_an_uninsured_patient_pays_everything_and_the_payer_nothing():
    born = date(1985, 4, 2)
    subject = subject_with_plan("uninsured", 35, born)
    resources = chart(subject, born, [(datetime(2020, 6, 1, 9), [("LOINC/4548-4", 6.1, "%")])])
    assert resources["Coverage"][0]["type"]["coding"][0]["code"] == "81"  # Self-pay
    (benefit,) = resources["ExplanationOfBenefit"]
    totals = {t["category"]["coding"][0]["code"]: cents(t["amount"]) for t in benefit["total"]}
    assert cents(benefit["payment"]["amount"]) == 0 == totals["benefit"]
    assert totals["paidbypatient"] == totals["submitted"] == 9200 + 971  # office visit + HbA1c


def test_a_visits_lines_bill_its_lab_immunization_prescription_and_procedure():
    facts = [("LOINC/4548-4", 6.1, "%"), ("CVX/140", None, None), ("RXNORM/860975", None, None),
             ("SNOMED/24623002", None, None)]
    resources = chart(1, date(1960, 1, 1), [(datetime(2020, 6, 1, 9), facts)])
    (claim,) = resources["Claim"]
    billed = {f"urn:uuid:{r['id']}" for kind in ("ServiceRequest", "Immunization", "MedicationRequest")
              for r in resources[kind]}
    assert {info["valueReference"]["reference"] for info in claim["supportingInfo"]} == billed
    assert claim["procedure"][0]["procedureReference"]["reference"] == f"urn:uuid:{resources['Procedure'][0]['id']}"
    assert len(claim["item"]) == 1 + len(facts)
    assert {item["productOrService"]["coding"][0]["code"] for item in claim["item"][1:]} == \
        {"4548-4", "140", "860975", "24623002"}


def test_a_panel_is_billed_once_at_its_own_fee_not_once_per_result():
    """CMS bills a comprehensive metabolic panel under one CPT code (80053), not fourteen tests."""
    members = lab_panels()["LOINC/24323-8"]
    resources = chart(1, date(1960, 1, 1), [(datetime(2020, 6, 1, 9), [(code, 1.0, None) for code in members])])
    (claim,) = resources["Claim"]
    (panel,) = claim["item"][1:]
    assert panel["productOrService"]["coding"][0]["code"] == "24323-8"
    assert cents(panel["net"]) == fee("lab", "LOINC/24323-8").cents == 1056


def test_insurance_is_the_same_for_the_same_patient_and_differs_between_patients():
    visits = [(datetime(2020, 6, 1, 9), [("LOINC/4548-4", 6.1, "%")])]
    assert orjson.dumps(chart(3, date(1980, 1, 1), visits)) == orjson.dumps(chart(3, date(1980, 1, 1), visits))
    plans = {plan_of(chart(subject, date(1980, 1, 1), visits)["Coverage"][0]) for subject in range(1, 40)}
    assert {"employer", "uninsured"} <= plans


def test_drawn_plans_match_the_cited_national_shares():
    """Census P60-281 (2022): 5.4% of children and 10.8% of adults 19-64 uninsured; about 35% of
    children with Medicaid/CHIP; everyone 65 and over on Medicare, the poor (about 10%) with Medicaid too."""
    born = date(1960, 1, 1)
    histories = [coverage_history(stable_random(f"share/{n}"), born) for n in range(20_000)]
    stages = {stage.age_min: index for index, stage in enumerate(insurance_stages())}

    def share(age_min: int, plan: str) -> float:
        return sum(h[stages[age_min]].plan == plan for h in histories) / len(histories)

    assert share(0, "uninsured") == pytest.approx(0.054, abs=0.01)
    assert share(19, "uninsured") == pytest.approx(0.108, abs=0.01)
    assert share(0, "medicaid") == pytest.approx(0.35, abs=0.02)
    assert share(65, "dual") == pytest.approx(0.10, abs=0.01)
    assert share(65, "medicare") + share(65, "dual") == 1.0


def test_claims_coverage_and_payers_are_valid_fhir(cohort_dir, r4_schema, tmp_path):  # noqa: F811
    for path in sorted((cohort_dir / "fhir" / "bundles").glob("*.json"))[:8]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    report = validate_directory(tmp_path, schema=r4_schema)
    assert R4_SCHEMA in report.validators
    assert report.ok, report.failures
    assert all(report.resources[kind] > 0 for kind in ("Claim", "ExplanationOfBenefit", "Coverage"))


def test_coverage_alone_has_the_same_plans_over_time_as_with_claims():
    born = date(1955, 8, 20)
    subject = subject_with_plan("employer", 60, born, later="medicare")
    visits = [(datetime(2019, 5, 1, 9), []), (datetime(2021, 5, 1, 9), [])]
    alone, with_claims = chart(subject, born, visits, "coverage"), chart(subject, born, visits)
    assert alone["Coverage"] == with_claims["Coverage"] and len(alone["Coverage"]) == 2
    assert "Claim" not in alone and "Claim" not in chart(subject, born, visits, "none")


@pytest.mark.parametrize(("insurance", "expected"), [("none", set()), ("coverage", {"Coverage"}),
                                                     ("claims", {"Coverage", "Claim", "ExplanationOfBenefit"})])
def test_the_scenario_chooses_what_insurance_is_written(tmp_path, insurance, expected):
    summary = generate(small_scenario(4, **{"output.insurance": insurance, "output.formats": ["ndjson"]}), tmp_path)
    financial = {"Coverage", "Claim", "ExplanationOfBenefit"}
    assert financial & set(summary.resources) == expected
    assert orjson.loads((tmp_path / "manifest.json").read_bytes())["scenario"]["output"]["insurance"] == insurance


def test_a_malformed_insurance_choice_names_the_field_and_the_choices():
    with pytest.raises(ScenarioError, match=r"output\.insurance: Input should be 'claims', 'coverage' or 'none'"):
        small_scenario(4, **{"output.insurance": "yes"})


def test_generate_reports_the_plans_and_what_was_billed_and_paid(tmp_path):
    result = CliRunner(env={"COLUMNS": "250"}).invoke(
        app, ["generate", "-n", "6", "--seed", "2", "--model", "reference", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    manifest = orjson.loads((tmp_path / "manifest.json").read_bytes())
    assert sum(manifest["plans"].values()) == 6
    costs = manifest["costs"]
    assert costs["billed"] == pytest.approx(costs["payer_paid"] + costs["patient_paid"]) and costs["billed"] > 0
    assert "plan at record end: " in result.output
    assert f"${costs['billed']:,.0f} (${costs['payer_paid']:,.0f} / ${costs['patient_paid']:,.0f})" in result.output
