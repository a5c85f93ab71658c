"""One write path for simulated patients: `generate`, `trial` and `stream` all hand finished records
to this module, so every run's output has the same layout, the same rule check and a manifest.

Layout under an output folder:
    fhir/bundles/patient-<n>.json      one FHIR R4 transaction bundle per patient (to load into a server)
    fhir/collections/patient-<n>.json  the same as a collection bundle (to read)
    fhir/ndjson/<Type>.ndjson          bulk NDJSON, one file per resource type, each shared provider once
    events/part-<k>.parquet            the canonical event table, one part per chunk of 256 patients
    manifest.json                      what was written (scenario, counts, rule violations), written last

Patients are written in shards (fixed ranges of patient numbers, see `trajsim.runner`). A shard writes
its bundles and event parts in place and its NDJSON under `.shards/`, then a summary that marks it
done; `CohortOutput.finish` merges the shards' NDJSON in patient order. So the bytes do not depend on
how a run was split, and an interrupted run of the same scenario keeps the shards it finished. Files
of an earlier, different run in those folders are replaced.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson
import polars as pl

from fhir_export import NdjsonWriter, ResourceBuilder, write_bundles
from fhir_export.claims import add_insurance
from fhir_export.providers import SHARED_TYPES
from trajsim.atomic import atomic_writer, folder_problem, temporary_path, write_bytes_atomic
from trajsim.rules import RULES, find_violations, violation_counts
from trajsim.engine.simulate import CHUNK_SIZE
from trajsim.events import DEATH, VISIT_START_PREFIX, Event, events_frame
from trajsim.knowledge import load_knowledge
from trajsim.scenario import Scenario
from trajsim.vocab import load_vocabulary

BUNDLE_FOLDERS = {"bundle": ("bundles", "transaction"), "collection": ("collections", "collection")}
FHIR_FORMATS = frozenset({*BUNDLE_FOLDERS, "ndjson"})  # the formats that need a patient's resources built
STALE_PATTERNS = ("fhir/bundles/patient-*.json", "fhir/collections/patient-*.json", "fhir/ndjson/*.ndjson",
                  "events/part-*.parquet", "manifest.json")
PARTIAL_PATTERNS = (".*.tmp", "fhir/*/.*.tmp", "events/.*.tmp")  # files an interrupted write left (trajsim.atomic)
SHARDS = ".shards"
WRITTEN_FOLDERS = ("fhir", "fhir/bundles", "fhir/collections", "fhir/ndjson", "events", SHARDS)


class OutputError(ValueError):
    """An output folder that cannot be written safely; the message names the path and the fix."""


def fhir_namespace(name: str, seed: int) -> str:
    """Identity of a run's patients: the same name and seed give the same resource ids."""
    return f"{name}/{seed}"


def default_builder(namespace: str, home: tuple[str | None, str | None] = (None, None)) -> ResourceBuilder:
    """FHIR builder with the shipped vocabulary, SNOMED -> ICD-10-CM codings of known conditions, the
    chronic ones kept on the problem list, and the kinds of allergies; ids are minted in `namespace`,
    patients live in `home` (state, city; None for anywhere)."""
    knowledge = load_knowledge()
    conditions = knowledge.conditions.values()
    crosswalk = {c.code: c.icd10cm for c in conditions}
    chronic = frozenset(c.code for c in conditions if c.course == "chronic")
    allergy_kinds = {a.code: (a.category, a.criticality) for a in knowledge.allergies}
    return ResourceBuilder(namespace, load_vocabulary(), crosswalk, chronic, allergy_kinds, home)


@contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block. A patient's FHIR build allocates thousands of
    dicts that reference counting frees once written; the collector's passes over them (and over
    everything else alive in the process) find nothing to free and cost 13-27% of the export
    (docs/performance.md)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class OutputSummary:
    """What a run (or one shard of it) wrote, for the CLI's closing table and the manifest."""

    patients: int = 0
    deaths: int = 0
    encounters: int = 0
    events: int = 0
    patient_resources: Counter = field(default_factory=Counter)  # by type, resources of one patient each
    providers: set[str] = field(default_factory=set)  # Type/id of the shared providers the patients use
    bytes_written: int = 0
    seconds: float = 0.0
    violations: Counter = field(default_factory=Counter)  # rule -> count (trajsim.rules)
    plans: Counter = field(default_factory=Counter)  # plan at the record's end -> patients
    costs: Counter = field(default_factory=Counter)  # "billed", "payer_paid", "patient_paid" -> cents

    def add(self, other: OutputSummary) -> None:
        for name in ("patients", "deaths", "encounters", "events", "bytes_written"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("patient_resources", "violations", "plans", "costs"):
            getattr(self, name).update(getattr(other, name))
        self.providers |= other.providers

    @property
    def resources(self) -> Counter:
        """Resources by type as the NDJSON holds them: a provider every bundle carries counts once."""
        return self.patient_resources + Counter(provider.split("/", 1)[0] for provider in self.providers)

    def to_json(self) -> bytes:
        return orjson.dumps(vars(self) | {"providers": sorted(self.providers)})

    @classmethod
    def from_json(cls, data: bytes) -> OutputSummary:
        fields = orjson.loads(data)
        return cls(**fields | {name: Counter(fields[name]) for name in ("patient_resources", "violations", "plans", "costs")}
                   | {"providers": set(fields["providers"])})


class CohortOutput:
    """The output folder of one run of `scenario`: its formats, its patients' FHIR identity, and the
    bookkeeping that lets an interrupted run resume. Cheap to build, so each worker builds its own."""

    def __init__(self, out_dir: Path, scenario: Scenario) -> None:
        self.out_dir = Path(out_dir)
        self.scenario = scenario
        self.formats = frozenset(scenario.output.formats)
        self.namespace = fhir_namespace(scenario.name, scenario.seed)

    def check(self) -> None:
        """Refuse a folder that is a file, lies under one, or holds a symbolic link where trajsim
        writes or deletes: nothing outside `out_dir` is ever written or removed."""
        if problem := folder_problem(self.out_dir):
            raise OutputError(problem)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        shards = self.out_dir / SHARDS
        inside = [self.out_dir / name for name in WRITTEN_FOLDERS]
        inside += [path for pattern in ("shard-*", "shard-*/ndjson") for path in shards.glob(pattern)]
        for path in inside:
            if path.is_symlink():
                raise OutputError(f"{path}: is a symbolic link (to {os.readlink(path)}); trajsim writes only inside "
                                  "the output folder and never through a link: remove it or choose another --out")
            if path.exists() and not path.is_dir():
                raise OutputError(f"{path}: is a file where trajsim writes a folder; remove it or choose another --out")

    def resume(self, shard_size: int) -> dict[int, OutputSummary]:
        """The summaries (by shard index) of shards an interrupted run of this same scenario and shard
        size finished; otherwise the folder is cleared of any earlier run and this run's identity
        recorded."""
        self.check()
        identity = orjson.dumps({"generator": version("trajsim"), "scenario": self.scenario.model_dump(mode="json"),
                                 "shard_size": shard_size})
        run_file = self.out_dir / SHARDS / "run.json"
        if run_file.exists() and run_file.read_bytes() == identity:
            self._remove("manifest.json", *PARTIAL_PATTERNS)  # the run is not complete until finish()
            return {int(path.parent.name.removeprefix("shard-")): OutputSummary.from_json(path.read_bytes())
                    for path in (self.out_dir / SHARDS).glob("shard-*/summary.json")}
        self.clear()
        write_bytes_atomic(run_file, identity)
        return {}

    def clear(self) -> None:
        """Remove the files of any earlier run (for output written whole, never resumed)."""
        self.check()
        shutil.rmtree(self.out_dir / SHARDS, ignore_errors=True)
        self._remove(*STALE_PATTERNS, *PARTIAL_PATTERNS)

    def _remove(self, *patterns: str) -> None:
        for pattern in patterns:
            for stale in self.out_dir.glob(pattern):
                stale.unlink()

    def shard(self, index: int, first: int) -> ShardWriter:
        """A writer for shard `index`, whose first patient has number `first` (a multiple of 256, so
        its event parts fall on the same grid whatever the shard size)."""
        return ShardWriter(self, index, first)

    def finish(self, shards: Iterable[OutputSummary]) -> OutputSummary:
        """Merge the finished shards' NDJSON, drop the bookkeeping and write the manifest, last, so a
        folder with a manifest holds a complete run; returns the run's total."""
        total = OutputSummary()
        for summary in shards:
            total.add(summary)
        if "ndjson" in self.formats:
            total.bytes_written += self._merge_ndjson()
        shutil.rmtree(self.out_dir / SHARDS, ignore_errors=True)
        self._write_manifest(total)
        return total

    def _merge_ndjson(self) -> int:
        """Concatenate the shards' NDJSON in patient order, each shared provider once; returns bytes."""
        final_dir = self.out_dir / "fhir" / "ndjson"
        final_dir.mkdir(parents=True, exist_ok=True)
        parts = sorted((self.out_dir / SHARDS).glob("shard-*/ndjson"))  # zero-padded: sorted is patient order
        written = 0
        for resource_type in sorted({path.stem for folder in parts for path in folder.glob("*.ndjson")}):
            final = final_dir / f"{resource_type}.ndjson"
            present = [part for part in (folder / f"{resource_type}.ndjson" for folder in parts) if part.exists()]
            if len(present) == 1 and resource_type not in SHARED_TYPES:  # nothing to merge: move, not copy
                os.replace(present[0], final)
                written += final.stat().st_size
                continue
            seen: set[bytes] = set()
            with open(temporary_path(final), "wb") as merged:
                for part in present:
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

    def _write_manifest(self, summary: OutputSummary) -> None:
        """A record of the run without timings, so identical runs write identical manifests."""
        manifest = {
            "generator": f"trajsim {version('trajsim')}",
            "scenario": self.scenario.model_dump(mode="json"),
            "patients": summary.patients,
            "deaths": summary.deaths,
            "encounters": summary.encounters,
            "events": summary.events,
            "resources": dict(sorted(summary.resources.items())),
            "plans": dict(sorted(summary.plans.items())),
            "costs": {name: summary.costs[name] / 100 for name in ("billed", "payer_paid", "patient_paid")},
            "violations": {rule: summary.violations[rule] for rule in RULES if summary.violations[rule]},
        }
        write_bytes_atomic(self.out_dir / "manifest.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


class ShardWriter:
    """Writes one shard's patients, in patient order, as they finish: FHIR at once, events and the
    rule check per chunk of 256. Used as a context manager: leaving the block normally marks the
    shard done (its `summary`); an exception discards its unfinished NDJSON."""

    def __init__(self, output: CohortOutput, index: int, first: int) -> None:
        self.output = output
        population = output.scenario.population
        self.builder = default_builder(output.namespace, (population.state, population.city))
        self.summary = OutputSummary()
        self._dir = output.out_dir / SHARDS / f"shard-{index:05d}"
        shutil.rmtree(self._dir, ignore_errors=True)  # leftovers of an interrupted attempt
        self._ndjson = NdjsonWriter(self._dir / "ndjson") if "ndjson" in output.formats else None
        self._part = first // CHUNK_SIZE
        self._chunk: list[Event] = []
        self._chunk_patients = 0

    def write(self, events: Sequence[Event]) -> None:
        """Write one patient's finished record (time-ordered events of one subject)."""
        with collection_paused():
            self._write(events)

    def _write(self, events: Sequence[Event]) -> None:
        summary = self.summary
        summary.patients += 1
        summary.events += len(events)
        summary.deaths += any(e.code == DEATH for e in events)
        summary.encounters += sum(e.code.startswith(VISIT_START_PREFIX) for e in events)
        if not self.output.formats.isdisjoint(FHIR_FORMATS):  # the event table alone builds no resources
            self._write_fhir(events)
        self._chunk.extend(events)
        self._chunk_patients += 1
        if self._chunk_patients == CHUNK_SIZE:
            self._finish_chunk()

    def _write_fhir(self, events: Sequence[Event]) -> None:
        """The patient's resources, with insurance and claims, in the bundle and NDJSON formats asked for."""
        summary = self.summary
        patient = self.builder.build(events)
        finances = add_insurance(patient, f"{self.builder.namespace}/{events[0].subject_id}",
                                 self.output.scenario.output.insurance)
        if finances is not None:
            summary.plans[finances.plan] += 1
            summary.costs.update(billed=finances.billed, payer_paid=finances.payer_paid,
                                 patient_paid=finances.billed - finances.payer_paid)
        for resource in patient.resources:
            if resource["resourceType"] in SHARED_TYPES:
                summary.providers.add(f"{resource['resourceType']}/{resource['id']}")
            else:
                summary.patient_resources[resource["resourceType"]] += 1
        name = f"patient-{events[0].subject_id:07d}.json"
        bundles = {bundle_type: self.output.out_dir / "fhir" / folder / name
                   for output_format, (folder, bundle_type) in BUNDLE_FOLDERS.items() if output_format in self.output.formats}
        if bundles:
            summary.bytes_written += write_bundles(bundles, patient)
        if self._ndjson is not None:
            self._ndjson.write(patient)

    def write_frame(self, events: pl.DataFrame) -> None:
        """Write the patients of a canonical event table, in the order they first appear."""
        for _, patient in events.group_by("subject_id", maintain_order=True):
            self.write([Event(*row) for row in patient.iter_rows()])

    def _finish_chunk(self) -> None:
        """Check a chunk of patients against the clinical rules and write its event table part."""
        frame = events_frame(self._chunk)
        self.summary.violations.update(violation_counts(find_violations(frame)))
        if "events" in self.output.formats:
            path = self.output.out_dir / "events" / f"part-{self._part:05d}.parquet"
            with atomic_writer(path) as handle:
                frame.write_parquet(handle, compression="zstd")
            self.summary.bytes_written += path.stat().st_size
        self._part, self._chunk, self._chunk_patients = self._part + 1, [], 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            if kind is None:
                if self._chunk_patients:
                    self._finish_chunk()
                if self._ndjson is not None:
                    self._ndjson.close()
                write_bytes_atomic(self._dir / "summary.json", self.summary.to_json())
        finally:
            if self._ndjson is not None:
                self._ndjson.abort()  # discards whatever close() did not move into place
