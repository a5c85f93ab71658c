"""Clinical knowledge is honest: real codes with official names, a cited source on every row,
and figures that reproduce what they cite."""

import math
import re
import shutil
from pathlib import Path

import pytest
import simple_icd_10_cm as icd

from trajsim.knowledge import TableError, load_knowledge, read_table
from trajsim.vocab import load_vocabulary

ROOT = Path(__file__).resolve().parents[1]


def test_every_icd10cm_code_is_real_and_named_as_in_the_classification():
    codes = [c for c in load_vocabulary() if c.system == "ICD10CM"]
    assert codes
    for concept in codes:
        assert icd.is_valid_item(concept.local_code), concept.code
        assert concept.display == icd.get_description(concept.local_code)


def test_every_condition_has_snomed_and_icd10cm_codes():
    for condition in load_knowledge().conditions.values():
        assert condition.code.startswith("SNOMED/") and condition.icd10cm.startswith("ICD10CM/")


def test_every_data_row_cites_a_source():
    tables = sorted([*(ROOT / "trajsim").glob("*/data/*.csv"), *(ROOT / "fhir_export").glob("data/*.csv")])
    assert len(tables) >= 20
    for table in tables:
        assert read_table(table, ("source",)), table


def _table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doses.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_ragged_row_is_refused_naming_file_and_line(tmp_path):
    path = _table(tmp_path, "code,age_days,source\nCVX/08,0,ACIP\nCVX/20,61,7,ACIP\n")
    with pytest.raises(TableError, match=re.escape(f"{path} line 3: 4 values for 3 columns")):
        read_table(path, ("code", "age_days"))


def test_a_row_without_a_source_is_refused(tmp_path):
    path = _table(tmp_path, "code,age_days,source\nCVX/08,0,ACIP\nCVX/20,61, \n")
    with pytest.raises(TableError, match="line 3: no source"):
        read_table(path, ("code", "age_days"))


def test_a_missing_column_is_named(tmp_path):
    path = _table(tmp_path, "code,source\nCVX/08,ACIP\n")
    with pytest.raises(TableError, match="missing column.s. age_days"):
        read_table(path, ("code", "age_days"))


def test_rows_are_read_as_text_by_column(tmp_path):
    path = _table(tmp_path, 'code,age_days,source\nCVX/08,0,"ACIP, 2024"\n\n')
    assert read_table(path, ("code",)) == [{"code": "CVX/08", "age_days": "0", "source": "ACIP, 2024"}]


def test_measurements_have_ucum_units():
    vocabulary = load_vocabulary()
    for code in load_knowledge().measurements:
        assert vocabulary[code].unit, code


def test_life_table_reproduces_us_life_expectancy():
    """NCHS reports US life expectancy at birth of 78.8 years for 2019."""
    expectancy, surviving = 0.0, 1.0
    for age_min, age_max, hazard in load_knowledge().mortality:
        span = age_max - age_min
        expectancy += surviving * (1 - math.exp(-hazard * span)) / hazard
        surviving *= math.exp(-hazard * span)
    assert abs(expectancy - 78.8) < 2.0


def test_deaths_in_a_window_are_set_against_the_life_table_at_the_cohorts_own_ages():
    """A woman of 65 followed ten years and a man dead at 30 after five: the table expects ten years
    of its 65-75 hazard and five of its 25-35 one; the deaths before the window do not count."""
    from datetime import datetime

    import polars as pl

    from trajsim.evaluate.calibration import deaths_over_life_table
    from trajsim.events import BIRTH, DEATH, SEX_FEMALE, SEX_MALE, Event, events_frame

    knowledge = load_knowledge()
    start, end = datetime(2015, 1, 1), datetime(2025, 1, 1)
    events = events_frame([
        Event(1, datetime(1950, 1, 1), None, BIRTH), Event(1, datetime(1950, 1, 1), None, SEX_FEMALE),
        Event(2, datetime(1990, 1, 1), None, BIRTH), Event(2, datetime(1990, 1, 1), None, SEX_MALE),
        Event(2, datetime(2020, 1, 1), None, DEATH),
        Event(3, datetime(1930, 1, 1), None, BIRTH), Event(3, datetime(1930, 1, 1), None, SEX_MALE),
        Event(3, datetime(2010, 1, 1), None, DEATH)])
    hazard = {(row[0], row[1]): row[2] for row in knowledge.mortality}
    expected = 10 * hazard[(65, 75)] + 5 * hazard[(25, 35)]
    ratio = deaths_over_life_table(pl.LazyFrame(events), start, end, knowledge)
    assert math.isclose(ratio, 1 / expected, rel_tol=1e-3)


def test_prevalence_curve_passes_through_the_cited_band_values():
    knowledge = load_knowledge()
    for condition, bands in knowledge.prevalence.items():
        for sex in ("F", "M"):
            ages, values = knowledge.prevalence_knots(condition, sex)
            for age, value in zip(ages[1:], values[1:]):
                assert math.isclose(knowledge.prevalence_at(condition, sex, age), value, rel_tol=1e-9)
            cited = sorted(b.value for b in bands if b.sex in ("any", sex))
            assert sorted(values[1:]) == cited


def test_a_monitoring_row_for_an_unknown_visit_class_names_the_allowed_ones(tmp_path, monkeypatch):
    from trajsim.knowledge import tables

    data = tmp_path / "data"
    shutil.copytree(str(tables.DATA), data)
    monitoring = data / "monitoring.csv"
    monitoring.write_text(monitoring.read_text().replace(",EMER;IMP,", ",EMER;ICU,", 1))
    monkeypatch.setattr(tables, "DATA", data)
    with pytest.raises(TableError, match=r"monitoring.csv: settings 'EMER;ICU' of sepsis .*allowed: encounter classes AMB, EMER, IMP"):
        tables.load_knowledge.__wrapped__()


def test_one_point_interpolation_is_numpys_to_the_bit():
    import numpy as np

    from trajsim.knowledge.hazards import interpolate

    rng = np.random.default_rng(3)
    for _ in range(3000):
        knots = np.sort(np.round(rng.random(int(rng.integers(1, 12))) * 100, 1))  # repeated knots too
        values = rng.random(len(knots))
        x = float(rng.choice(knots)) if rng.random() < 0.3 else float(rng.random() * 110 - 5)
        assert interpolate(x, knots.tolist(), values.tolist()) == float(np.interp(x, knots, values))


def test_age_bands_found_by_bisection_say_what_scanning_them_says():
    from trajsim.knowledge.hazards import band_segments

    knowledge = load_knowledge()
    for code, dists in knowledge.values.items():
        for sex in ("F", "M"):
            for age in [a / 4 for a in range(-4, 480)]:
                for active in (set(), {d.condition for d in dists if d.condition}):
                    in_band = [d for d in dists if d.band.covers(sex, age)]
                    expected = next((d for d in in_band if d.condition in active), None) or next(
                        (d for d in in_band if d.condition is None), None)
                    assert knowledge.value_distribution(code, sex, age, active) == expected, (code, sex, age)
    segments = band_segments([(0.0, 18.0, "child"), (18.0, math.inf, "adult"), (65.0, math.inf, "older")],
                             lambda items: tuple(items))
    assert segments.at(-1.0) == () and segments.at(17.99) == ("child",) and segments.at(18.0) == ("adult",)
    assert segments.at(70.0) == ("adult", "older")
