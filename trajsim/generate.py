"""Generate a scenario's cohort to disk: engine -> events -> FHIR, streamed patient by patient.

Output layout under the scenario's output directory:
    fhir/bundles/patient-<n>.json    one FHIR R4 transaction bundle per patient (to load into a server)
    fhir/collections/patient-<n>.json  the same as a collection bundle (to read)
    fhir/ndjson/<Type>.ndjson        bulk NDJSON, one file per resource type
    events/part-<k>.parquet          the canonical event table, one part per chunk of patients
    manifest.json                    what was generated (scenario, seed, counts, files)
Files of an earlier run in those folders are replaced, so the folder always shows one run.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import orjson

from fhir_export import NdjsonWriter, ResourceBuilder, write_bundle
from trajsim.atomic import atomic_writer, write_bytes_atomic
from trajsim.engine import ReferenceSource, TrajectorySource, simulate
from trajsim.engine.rules import RULES, find_violations, violation_counts
from trajsim.engine.simulate import CHUNK_SIZE
from trajsim.events import DEATH, VISIT_START_PREFIX, Event, events_frame
from trajsim.knowledge import load_knowledge
from trajsim.scenario import Scenario
from trajsim.vocab import load_vocabulary

BUNDLE_FOLDERS = {"bundle": ("bundles", "transaction"), "collection": ("collections", "collection")}
STALE_PATTERNS = ("fhir/bundles/patient-*.json", "fhir/collections/patient-*.json", "fhir/ndjson/*.ndjson",
                  "events/part-*.parquet")


@dataclass
class GenerationSummary:
    """What a run produced, for the CLI's closing table and the manifest."""

    patients: int = 0
    deaths: int = 0
    encounters: int = 0
    events: int = 0
    resources: Counter = field(default_factory=Counter)
    bytes_written: int = 0
    seconds: float = 0.0
    violations: Counter = field(default_factory=Counter)  # rule -> count (trajsim.engine.rules)


def fhir_namespace(scenario: Scenario) -> str:
    """Identity of a run's patients: the same scenario and seed give the same resource ids."""
    return f"{scenario.name}/{scenario.seed}"


def default_builder(scenario: Scenario) -> ResourceBuilder:
    """FHIR builder with the shipped vocabulary, SNOMED -> ICD-10-CM codings of known conditions, and
    the chronic ones kept on the problem list."""
    conditions = load_knowledge().conditions.values()
    crosswalk = {c.code: c.icd10cm for c in conditions}
    chronic = frozenset(c.code for c in conditions if c.course == "chronic")
    return ResourceBuilder(fhir_namespace(scenario), load_vocabulary(), crosswalk, chronic)


def generate(scenario: Scenario, out_dir: Path | None = None, source: TrajectorySource | None = None,
             on_patient: Callable[[], None] | None = None) -> GenerationSummary:
    """Simulate the whole cohort and write every requested format; returns the run's summary."""
    started = time.perf_counter()
    out_dir = Path(out_dir or scenario.output.dir)
    formats = set(scenario.output.formats)
    for pattern in STALE_PATTERNS:
        for stale in out_dir.glob(pattern):
            stale.unlink()
    builder = default_builder(scenario)
    ndjson = NdjsonWriter(out_dir / "fhir" / "ndjson") if "ndjson" in formats else None
    summary = GenerationSummary()
    chunk: list[Event] = []
    try:
        for record in simulate(scenario, source or ReferenceSource()):
            events = record.events
            summary.patients += 1
            summary.events += len(events)
            summary.deaths += any(e.code == DEATH for e in events)
            summary.encounters += sum(e.code.startswith(VISIT_START_PREFIX) for e in events)
            patient = builder.build(events)
            summary.resources.update(r["resourceType"] for r in patient.resources)
            for output_format, (folder, bundle_type) in BUNDLE_FOLDERS.items():
                if output_format in formats:
                    path = out_dir / "fhir" / folder / f"patient-{record.subject_id:07d}.json"
                    summary.bytes_written += write_bundle(path, patient, bundle_type)
            if ndjson is not None:
                ndjson.write(patient)
            chunk.extend(events)
            if summary.patients % CHUNK_SIZE == 0:
                _finish_chunk(out_dir, summary.patients // CHUNK_SIZE - 1, chunk, "events" in formats, summary)
                chunk = []
            if on_patient is not None:
                on_patient()
        if chunk:
            _finish_chunk(out_dir, (summary.patients - 1) // CHUNK_SIZE, chunk, "events" in formats, summary)
        if ndjson is not None:
            ndjson.close()
            summary.bytes_written += ndjson.bytes_written
    except BaseException:
        if ndjson is not None:
            ndjson.abort()
        raise
    _write_manifest(out_dir, scenario, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _finish_chunk(out_dir: Path, part: int, events: list[Event], write: bool, summary: GenerationSummary) -> None:
    """Check a chunk of patients against the clinical rules and write its event table part."""
    frame = events_frame(events)
    summary.violations.update(violation_counts(find_violations(frame)))
    if write:
        path = out_dir / "events" / f"part-{part:05d}.parquet"
        with atomic_writer(path) as handle:
            frame.write_parquet(handle, compression="zstd")
        summary.bytes_written += path.stat().st_size


def _write_manifest(out_dir: Path, scenario: Scenario, summary: GenerationSummary) -> None:
    """A record of the run without timings, so identical runs write identical manifests."""
    manifest = {
        "generator": f"trajsim {version('trajsim')}",
        "scenario": scenario.model_dump(mode="json"),
        "patients": summary.patients,
        "deaths": summary.deaths,
        "encounters": summary.encounters,
        "events": summary.events,
        "resources": dict(sorted(summary.resources.items())),
        "violations": {rule: summary.violations[rule] for rule in RULES if summary.violations[rule]},
    }
    write_bytes_atomic(out_dir / "manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
