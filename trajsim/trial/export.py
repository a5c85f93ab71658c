"""Write an arm: its table as Parquet and CSV, and (for a synthetic arm) its patients' records in the
scenario's output formats through the same FHIR builder and writers as `trajsim generate`."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fhir_export import NdjsonWriter, write_bundle
from trajsim.atomic import atomic_writer
from trajsim.events import Event
from trajsim.output import BUNDLE_FOLDERS, STALE_PATTERNS, default_builder, fhir_namespace
from trajsim.scenario import Scenario


def write_table(frame: pl.DataFrame, stem: Path) -> list[Path]:
    """`frame` as <stem>.parquet and <stem>.csv, each written atomically."""
    paths = [stem.with_suffix(".parquet"), stem.with_suffix(".csv")]
    with atomic_writer(paths[0]) as handle:
        frame.write_parquet(handle, compression="zstd")
    with atomic_writer(paths[1]) as handle:
        frame.write_csv(handle)
    return paths


def write_records(events: pl.DataFrame, scenario: Scenario, out_dir: Path) -> list[Path]:
    """The arm's patients as FHIR bundles and/or bulk NDJSON under out_dir/fhir/, and their events as
    out_dir/events/arm.parquet, as the scenario's output.formats ask (replacing an earlier run's)."""
    for pattern in STALE_PATTERNS:
        for stale in out_dir.glob(pattern):
            stale.unlink()
    formats = set(scenario.output.formats)
    builder = default_builder(fhir_namespace(scenario.name, scenario.seed))
    ndjson = NdjsonWriter(out_dir / "fhir" / "ndjson") if "ndjson" in formats else None
    written: list[Path] = []
    try:
        for (subject_id,), patient_events in events.group_by("subject_id", maintain_order=True):
            patient = builder.build([Event(*row) for row in patient_events.iter_rows()])
            for output_format, (folder, bundle_type) in BUNDLE_FOLDERS.items():
                if output_format in formats:
                    path = out_dir / "fhir" / folder / f"patient-{subject_id:07d}.json"
                    write_bundle(path, patient, bundle_type)
                    written.append(path)
            if ndjson is not None:
                ndjson.write(patient)
        if ndjson is not None:
            ndjson.close()
            written += sorted((out_dir / "fhir" / "ndjson").glob("*.ndjson"))
    except BaseException:
        if ndjson is not None:
            ndjson.abort()
        raise
    if "events" in formats:
        path = out_dir / "events" / "arm.parquet"
        with atomic_writer(path) as handle:
            events.write_parquet(handle, compression="zstd")
        written.append(path)
    return written
