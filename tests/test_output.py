"""The one write path: records handed to the output module come out in generate's layout, with the
rule check of every chunk and a manifest, whoever hands them over."""

from tests.conftest import small_scenario
from tests.test_generate import file_hashes
from trajsim.engine import ReferenceSource, simulate
from trajsim.events import events_frame
from trajsim.generate import generate
from trajsim.output import CohortOutput

FORMATS = {"output.formats": ["bundle", "collection", "ndjson", "events"]}


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
