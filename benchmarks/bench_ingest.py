"""Ingest throughput per format on the reference data, and peak memory as the input grows.

Each run is a fresh process, so its peak resident memory is its own. Rows are source rows (FHIR
resources, CSV rows, MEDS rows); events are canonical rows written.

    python benchmarks/bench_ingest.py
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import tempfile
from pathlib import Path

import polars as pl
from refdata import REFDATA

INPUTS = {
    "fhir (410 bundles)": ("fhir", REFDATA / "synthea_fhir_r4_smart615" / "bundles"),
    "fhir (bulk ndjson)": ("fhir", REFDATA / "synthea_fhir_r4_bulk_ndjson_10"),
    "omop (Eunomia zip)": ("omop", REFDATA / "omop_cdm54_eunomia_synthea27nj" / "Synthea27Nj_5.4.zip"),
    "synthea-csv (27 patients)": ("synthea-csv", REFDATA / "synthea_csv_dbt27" / "csv"),
}
MEDS_COPIES = (1, 8, 32)  # the 410-bundle events, repeated with fresh subject ids: memory should stay flat


def _run(format: str, source: Path, out: Path) -> tuple[int, int, float, float]:
    from trajsim.ingest import ingest

    report = ingest(format, source, out)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report.rows_read, report.events, report.seconds, peak_mb


def measure(format: str, source: Path, out: Path) -> tuple[int, int, float, float]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_run, (format, source, out))


def _meds_copies(events: pl.DataFrame, copies: int, path: Path) -> None:
    from trajsim.ingest import write_meds

    dense = events.with_columns(pl.col("subject_id").rank("dense").cast(pl.UInt64))
    offset = int(dense["subject_id"].max()) + 1
    write_meds(pl.concat([dense.with_columns(pl.col("subject_id") + k * offset) for k in range(copies)]), path)


def main() -> None:
    if not REFDATA.is_dir():
        sys.exit(f"reference data not found at {REFDATA}")
    print(f"{'input':<28}{'rows':>10}{'events':>11}{'seconds':>9}{'rows/s':>11}{'events/s':>11}{'peak MB':>9}")

    def show(name: str, rows: int, events: int, seconds: float, peak: float) -> None:
        print(f"{name:<28}{rows:>10,}{events:>11,}{seconds:>9.2f}{rows / seconds:>11,.0f}{events / seconds:>11,.0f}"
              f"{peak:>9,.0f}", flush=True)

    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        for number, (name, (format, source)) in enumerate(INPUTS.items()):
            show(name, *measure(format, source, work_dir / f"input-{number}.parquet"))
        bundle_events = pl.read_parquet(work_dir / "input-0.parquet")
        for copies in MEDS_COPIES:
            meds = work_dir / f"meds-{copies}.parquet"
            _meds_copies(bundle_events, copies, meds)
            show(f"meds ({copies}x bundle events)", *measure("meds", meds, work_dir / "meds-out.parquet"))


if __name__ == "__main__":
    main()
