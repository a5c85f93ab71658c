"""The one write path: records handed to the output module come out in generate's layout, with the
rule check of every chunk and a manifest, whoever hands them over."""

import orjson
import polars as pl

from tests.conftest import small_scenario
from tests.test_generate import file_hashes
from trajsim.engine import ReferenceSource, simulate
from trajsim.rules import find_violations, violation_counts
from trajsim.events import events_frame
from trajsim.generate import generate
from trajsim.output import CohortOutput
from trajsim.trial.export import write_records

METFORMIN, DIABETES = "RXNORM/860975", "SNOMED/44054006"
FORMATS = {"output.formats": ["bundle", "collection", "ndjson", "events"]}


def with_unindicated_metformin(events: pl.DataFrame) -> pl.DataFrame:
    """Records as another tool might hand them over: metformin for everyone at their last visit,
    diabetic or not (the engine itself would not order it)."""
    visits = events.filter(pl.col("code").str.starts_with("TRAJSIM/visit/")).group_by("subject_id").agg(pl.all().last())
    drugs = visits.with_columns(code=pl.lit(METFORMIN), text=pl.lit(DIABETES)).select(events.columns)
    return pl.concat([events, drugs]).sort("subject_id", "time", maintain_order=True)


def test_a_frame_written_as_one_shard_matches_generate_byte_for_byte(tmp_path):
    scenario = small_scenario(6, seed=2, **FORMATS)
    generate(scenario, tmp_path / "generated")
    events = events_frame(e for record in simulate(scenario, ReferenceSource()) for e in record.events)
    output = CohortOutput(tmp_path / "written", scenario)
    output.clear()
    with output.shard(0, first=0) as writer:
        writer.write_frame(events)
    output.finish([writer.summary])
    assert file_hashes(tmp_path / "written") == file_hashes(tmp_path / "generated")


def test_written_records_are_rule_checked_and_counted_in_the_manifest(tmp_path):
    scenario = small_scenario(4, **FORMATS)
    events = with_unindicated_metformin(
        events_frame(e for record in simulate(scenario, ReferenceSource()) for e in record.events))
    summary = write_records(events, scenario, tmp_path)
    assert summary.patients == 4 and summary.violations["medication_without_indication"] > 0
    assert summary.violations == violation_counts(find_violations(events))
    manifest = orjson.loads((tmp_path / "manifest.json").read_bytes())
    assert manifest["patients"] == 4 and manifest["violations"] == dict(summary.violations)
    assert pl.read_parquet(tmp_path / "events" / "*.parquet").equals(events)
    assert not (tmp_path / ".shards").exists()


def test_writing_records_replaces_an_earlier_run(tmp_path):
    generate(small_scenario(8), tmp_path)
    scenario = small_scenario(3)
    write_records(events_frame(e for r in simulate(scenario, ReferenceSource()) for e in r.events), scenario, tmp_path)
    assert len(list((tmp_path / "fhir" / "bundles").glob("*.json"))) == 3
    assert orjson.loads((tmp_path / "manifest.json").read_bytes())["patients"] == 3
