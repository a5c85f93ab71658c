"""What kind of fact a code records: one answer (`domain_of`) for the engine, the exporter, the rules
and the model, and its columnar form for event tables."""

import polars as pl

from trajsim.events import CONDITION_END, DEATH, visit_start_code
from trajsim.vocab import DOMAINS, domain_of, in_domain, load_vocabulary

UNKNOWN = ["SNOMED/999999999", "ICD10CM/Z99.99", "RXNORM/1", "LOINC/0000-0", "CVX/999"]
STRUCTURAL = [DEATH, CONDITION_END, visit_start_code("AMB"), "GAP/3d", "BOS", "RARE/SNOMED"]


def test_the_vocabulary_decides_before_the_code_system():
    vocabulary = load_vocabulary()
    assert all(domain_of(concept.code) == concept.domain for concept in vocabulary)
    assert {domain_of(c.code) for c in vocabulary if c.system == "SNOMED"} > {"condition", "encounter_type"}


def test_an_unknown_code_takes_the_usual_domain_of_its_system():
    assert [domain_of(code) for code in UNKNOWN] == ["condition", "condition", "medication", "lab", "immunization"]


def test_structural_codes_have_no_domain():
    assert [domain_of(code) for code in STRUCTURAL] == [None] * len(STRUCTURAL)


def test_in_domain_agrees_with_domain_of_on_every_code():
    codes = [concept.code for concept in load_vocabulary()] + UNKNOWN + STRUCTURAL
    frame = pl.DataFrame({"code": codes + [None]}, schema={"code": pl.String})
    for domain in DOMAINS:
        flags = frame.select(in_domain(pl.col("code"), domain)).to_series().to_list()
        assert flags[:-1] == [domain_of(code) == domain for code in codes], domain
        assert flags[-1] is None
