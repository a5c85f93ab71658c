"""Named code sets (`@hypertension`, `@statins`): real codes with the names their sources give them,
the project's own codes inside the matching set, and criteria that select as the codes they list."""

from __future__ import annotations

import polars as pl
import pytest
import simple_icd_10_cm as icd
from pydantic import ValidationError

from trajsim.ingest import load_events
from trajsim.knowledge import load_knowledge
from trajsim.knowledge.code_sets import named_code_sets
from trajsim.scenario import Trial
from trajsim.trial.arm import build_arm
from trajsim.trial.criteria import eligible
from trajsim.trial.stats import table_one
from trajsim.vocab import load_vocabulary

CONDITIONS = {"hypertension": "hypertension", "type2_diabetes": "type2_diabetes", "hyperlipidemia": "hyperlipidemia",
              "ckd": "chronic_kidney_disease", "heart_failure": "heart_failure", "coronary_disease": "coronary_disease",
              "mi": "myocardial_infarction", "stroke": "stroke", "copd": "copd", "asthma": "asthma",
              "atrial_fibrillation": "atrial_fibrillation", "depression": "depression", "obesity": "obesity"}
# Drug class -> the group names of trajsim's medications.csv whose products belong to it.
DRUG_GROUPS = {"statins": {"statin"}, "metformin": {"biguanide"}, "beta_blockers": {"beta_blocker"},
               "anticoagulants": {"anticoagulant"}, "ssris": {"ssri"}}


def _trial(**changes: object) -> Trial:
    spec = {"age": {"min": 30, "max": 80},
            "index": {"codes": ["TRAJSIM/visit/AMB"], "window": {"start": "2012-01-01", "end": "2024-01-01"}},
            "endpoints": [{"name": "death", "codes": ["TRAJSIM/death"]}]}
    return Trial.model_validate({**spec, **changes})


def test_the_common_conditions_and_drug_classes_are_named():
    wanted = {*CONDITIONS, "diabetes", "statins", "ace_inhibitors", "arbs", "beta_blockers", "metformin", "insulins",
              "anticoagulants"}
    assert wanted <= set(named_code_sets())


def test_every_icd10cm_code_is_real_and_named_as_in_the_classification():
    codes = [(code, display) for named in named_code_sets().values() for code, display in named.displays.items()
             if code.startswith("ICD10CM/")]
    assert len(codes) > 40
    for code, display in codes:
        local = code.removeprefix("ICD10CM/")
        assert icd.is_valid_item(local) and icd.get_description(local) == display, code


def test_codes_trajsim_knows_carry_its_display():
    vocabulary = load_vocabulary()
    shared = [(code, display) for named in named_code_sets().values() for code, display in named.displays.items()
              if code in vocabulary]
    assert len(shared) > 30
    assert [(code, vocabulary[code].display) for code, _ in shared] == shared


def test_each_condition_set_holds_the_codes_trajsim_records_for_it():
    knowledge, sets = load_knowledge(), named_code_sets()
    for name, key in CONDITIONS.items():
        condition = knowledge.conditions[key]
        assert {condition.code, condition.icd10cm} <= set(sets[name].codes), name
    assert set(sets["type2_diabetes"].codes) < set(sets["diabetes"].codes)


def test_each_drug_class_holds_the_products_trajsim_prescribes_in_it():
    sets = named_code_sets()
    for name, groups in DRUG_GROUPS.items():
        products = {m.code for ms in load_knowledge().medications.values() for m in ms if m.group in groups}
        assert products and products <= set(sets[name].codes), name


def test_a_named_set_selects_the_patients_its_codes_select(refdata):
    events = load_events(refdata / "synthea_csv_dbt27" / "csv", format="synthea-csv")
    named = eligible(events, _trial(require=[{"codes": ["@hypertension"]}]))
    listed = eligible(events, _trial(code_sets={"htn": list(named_code_sets()["hypertension"].codes)},
                                     require=[{"codes": ["htn"]}]))
    assert named.height > 0 and named.equals(listed)


def test_a_scenario_set_may_include_named_sets():
    trial = _trial(code_sets={"mace": ["@mi", "@stroke", "TRAJSIM/death"]})
    sets = named_code_sets()
    assert trial.resolve(("mace",)) == sorted({*sets["mi"].codes, *sets["stroke"].codes, "TRAJSIM/death"})


def test_an_unknown_name_is_refused_listing_the_known_ones():
    with pytest.raises(ValidationError) as caught:
        _trial(require=[{"codes": ["@hypertensoin"]}])
    message = str(caught.value)
    assert "require[0].codes: '@hypertensoin' is not a named code set; the known ones are @hypertension," in message
    assert "@statins" in message
    with pytest.raises(ValidationError, match="code_sets.mace: '@infarct' is not a named code set"):
        _trial(code_sets={"mace": ["@infarct"]})


def test_baseline_history_of_a_named_set_reads_as_its_label():
    events = pl.DataFrame({"subject_id": [1, 1, 1, 1], "code": ["TRAJSIM/birth", "TRAJSIM/sex/F", "ICD10CM/I10",
                                                               "TRAJSIM/visit/AMB"]})
    times = pl.Series("time", ["1960-01-01", "1960-01-01", "2015-03-01", "2016-03-01"]).str.to_datetime()
    events = events.with_columns(times, numeric_value=pl.lit(None, pl.Float64), unit=pl.lit(None, pl.String),
                                 encounter_id=pl.lit(None, pl.UInt64), text=pl.lit(None, pl.String))
    trial = _trial(baseline=["@hypertension", "@ckd"])
    arm = build_arm(events, trial, events["time"].max())
    assert arm["history_hypertension"].to_list() == [True] and arm["history_ckd"].to_list() == [False]
    table = table_one({"synthetic": arm}, trial).rows_by_key("characteristic", unique=True)
    assert table["History of hypertension, n (%)"] == ("1 (100.0%)",)
    assert "History of chronic kidney disease, n (%)" in table
