"""Generate a scenario's cohort to disk: engine -> events -> FHIR, streamed patient by patient and
shard by shard, so memory stays flat however large the cohort.

Output layout under the scenario's output directory:
    fhir/bundles/patient-<n>.json    one FHIR R4 transaction bundle per patient (to load into a server)
    fhir/collections/patient-<n>.json  the same as a collection bundle (to read)
    fhir/ndjson/<Type>.ndjson        bulk NDJSON, one file per resource type
    events/part-<k>.parquet          the canonical event table, one part per chunk of 256 patients
    manifest.json                    what was generated (scenario, seed, counts, files)

A shard is a fixed range of patient numbers. Each shard writes its patients' bundles and event parts
in place and its NDJSON under `.shards/`, then a summary that marks it done; the NDJSON of all shards
is merged in patient order at the end. So the output is the same byte for byte whatever the shard
size, backend or worker count, and an interrupted run, re-run with the same scenario, redoes only
unfinished shards. Files of an earlier, different run in those folders are replaced.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import orjson

from fhir_export import NdjsonWriter, ResourceBuilder, write_bundle
from fhir_export.providers import SHARED_TYPES
from trajsim.atomic import atomic_writer, temporary_path, write_bytes_atomic
from trajsim.engine import ReferenceSource, TrajectorySource, simulate
from trajsim.engine.simulate import CHUNK_SIZE
from trajsim.events import DEATH, VISIT_START_PREFIX, Event, events_frame
from trajsim.knowledge import load_knowledge
from trajsim.model import model_folder
from trajsim.rules import RULES, find_violations, violation_counts
from trajsim.scenario import Scenario
from trajsim.vocab import load_vocabulary

BUNDLE_FOLDERS = {"bundle": ("bundles", "transaction"), "collection": ("collections", "collection")}
STALE_PATTERNS = ("fhir/bundles/patient-*.json", "fhir/collections/patient-*.json", "fhir/ndjson/*.ndjson",
                  "events/part-*.parquet", "manifest.json")
SHARDS = ".shards"
DEFAULT_SHARD_SIZE = 4 * CHUNK_SIZE


@dataclass
class GenerationSummary:
    """What a run (or one shard of it) produced, for the CLI's closing table and the manifest."""

    patients: int = 0
    deaths: int = 0
    encounters: int = 0
    events: int = 0
    resources: Counter = field(default_factory=Counter)
    bytes_written: int = 0
    seconds: float = 0.0
    violations: Counter = field(default_factory=Counter)  # rule -> count (trajsim.rules)

    def add(self, other: GenerationSummary) -> None:
        for name in ("patients", "deaths", "encounters", "events", "bytes_written"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.resources.update(other.resources)
        self.violations.update(other.violations)

    def to_json(self) -> bytes:
        return orjson.dumps(vars(self))

    @classmethod
    def from_json(cls, data: bytes) -> GenerationSummary:
        fields = orjson.loads(data)
        return cls(**fields | {"resources": Counter(fields["resources"]), "violations": Counter(fields["violations"])})


@dataclass(frozen=True)
class Shard:
    """Patients `first` .. `first + count - 1`; its number fixes where its files go."""

    index: int
    first: int
    count: int


def plan_shards(patients: int, shard_size: int = DEFAULT_SHARD_SIZE) -> list[Shard]:
    """The fixed patient ranges of a cohort. Shards hold whole 256-patient chunks, so event parts
    are the same whatever the shard size."""
    if shard_size <= 0 or shard_size % CHUNK_SIZE:
        raise ValueError(f"shard size must be a positive multiple of {CHUNK_SIZE} (got {shard_size})")
    return [Shard(n, first, min(shard_size, patients - first)) for n, first in enumerate(range(0, patients, shard_size))]


def fhir_namespace(scenario: Scenario) -> str:
    """Identity of a run's patients: the same scenario and seed give the same resource ids."""
    return f"{scenario.name}/{scenario.seed}"


def default_builder(scenario: Scenario) -> ResourceBuilder:
    """FHIR builder with the shipped vocabulary, SNOMED -> ICD-10-CM codings of known conditions, the
    chronic ones kept on the problem list, and the kinds of allergies."""
    knowledge = load_knowledge()
    conditions = knowledge.conditions.values()
    crosswalk = {c.code: c.icd10cm for c in conditions}
    chronic = frozenset(c.code for c in conditions if c.course == "chronic")
    allergy_kinds = {a.code: (a.category, a.criticality) for a in knowledge.allergies}
    return ResourceBuilder(fhir_namespace(scenario), load_vocabulary(), crosswalk, chronic, allergy_kinds)


def scenario_source(scenario: Scenario) -> TrajectorySource:
    """The trajectory source a scenario asks for: a trained model folder or the reference simulator."""
    folder = model_folder(scenario.model)
    if folder is None:
        return ReferenceSource()
    from trajsim.model.source import ModelSource  # torch loads only when a model is used

    return ModelSource(folder)


def generate(scenario: Scenario, out_dir: Path | None = None, source: TrajectorySource | None = None,
             on_progress: Callable[[int], None] | None = None, backend: str = "local", workers: int = 1,
             shard_size: int | None = None, ray_address: str | None = None) -> GenerationSummary:
    """Simulate the whole cohort and write every requested format; returns the run's summary.

    `backend` "local" runs shards in this process (workers=1) or a process pool; "ray" runs them as
    Ray tasks. A custom `source` object runs only in this process."""
    from trajsim.backends import run_shards

    started = time.perf_counter()
    out_dir = Path(out_dir or scenario.output.dir)
    shards = plan_shards(scenario.population.size, shard_size or DEFAULT_SHARD_SIZE)
    if source is not None and (backend != "local" or workers > 1):
        raise ValueError("a custom trajectory source runs only in one local process (backend local, 1 worker)")
    summary = GenerationSummary()
    finished = _resume_or_start(out_dir, scenario)
    for done in finished.values():
        summary.add(done)
    pending = [shard for shard in shards if shard.index not in finished]
    if on_progress is not None and summary.patients:
        on_progress(summary.patients)
    for shard_summary in run_shards(scenario, pending, out_dir, source, backend, workers, ray_address, on_progress):
        summary.add(shard_summary)
    if "ndjson" in scenario.output.formats:
        summary.bytes_written += _merge_ndjson(out_dir, shards)
    _write_manifest(out_dir, scenario, summary)
    shutil.rmtree(out_dir / SHARDS, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    return summary


def _shard_dir(out_dir: Path, shard: Shard) -> Path:
    return out_dir / SHARDS / f"shard-{shard.index:05d}"


def _resume_or_start(out_dir: Path, scenario: Scenario) -> dict[int, GenerationSummary]:
    """The summaries of shards an interrupted run of this same scenario finished; otherwise clear
    the folder of any earlier run and start afresh."""
    identity = orjson.dumps({"generator": version("trajsim"), "scenario": scenario.model_dump(mode="json")})
    run_file = out_dir / SHARDS / "run.json"
    if run_file.exists() and run_file.read_bytes() == identity:
        return {int(path.parent.name.removeprefix("shard-")): GenerationSummary.from_json(path.read_bytes())
                for path in (out_dir / SHARDS).glob("shard-*/summary.json")}
    shutil.rmtree(out_dir / SHARDS, ignore_errors=True)
    for pattern in STALE_PATTERNS:
        for stale in out_dir.glob(pattern):
            stale.unlink()
    write_bytes_atomic(run_file, identity)
    return {}


def write_shard(scenario: Scenario, shard: Shard, out_dir: Path, source: TrajectorySource,
                on_patient: Callable[[int], None] | None = None) -> GenerationSummary:
    """Simulate one shard's patients and write them; the shard's summary file marks it done."""
    formats = set(scenario.output.formats)
    builder = default_builder(scenario)
    shard_dir = _shard_dir(out_dir, shard)
    shutil.rmtree(shard_dir, ignore_errors=True)  # leftovers of an interrupted attempt
    ndjson = NdjsonWriter(shard_dir / "ndjson") if "ndjson" in formats else None
    summary = GenerationSummary()
    chunk: list[Event] = []
    part = shard.first // CHUNK_SIZE
    try:
        for record in simulate(scenario, source, first=shard.first, count=shard.count):
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
            if summary.patients % CHUNK_SIZE == 0 or summary.patients == shard.count:
                _finish_chunk(out_dir, part, chunk, "events" in formats, summary)
                part, chunk = part + 1, []
            if on_patient is not None:
                on_patient(1)
        if ndjson is not None:
            ndjson.close()
    except BaseException:
        if ndjson is not None:
            ndjson.abort()
        raise
    write_bytes_atomic(shard_dir / "summary.json", summary.to_json())
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


def _merge_ndjson(out_dir: Path, shards: list[Shard]) -> int:
    """Concatenate the shards' NDJSON in patient order, each shared provider once; returns bytes."""
    final_dir = out_dir / "fhir" / "ndjson"
    final_dir.mkdir(parents=True, exist_ok=True)
    types = sorted({path.stem for shard in shards for path in (_shard_dir(out_dir, shard) / "ndjson").glob("*.ndjson")})
    written = 0
    for resource_type in types:
        final = final_dir / f"{resource_type}.ndjson"
        seen: set[bytes] = set()
        with open(temporary_path(final), "wb") as merged:
            for shard in shards:
                part = _shard_dir(out_dir, shard) / "ndjson" / f"{resource_type}.ndjson"
                if not part.exists():
                    continue
                with open(part, "rb") as lines:
                    if resource_type not in SHARED_TYPES:
                        shutil.copyfileobj(lines, merged)
                        continue
                    for line in lines:
                        key = orjson.loads(line)["id"].encode()
                        if key not in seen:
                            seen.add(key)
                            merged.write(line)
        os.replace(temporary_path(final), final)
        written += final.stat().st_size
    return written


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
