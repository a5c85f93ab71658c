"""Write an arm: its table as Parquet and CSV, and (for a synthetic arm) its patients' records through
the output module `trajsim generate` writes with: same layout, rule check and manifest."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from trajsim.atomic import atomic_writer
from trajsim.output import CohortOutput, OutputSummary
from trajsim.scenario import Scenario


def write_table(frame: pl.DataFrame, stem: Path) -> list[Path]:
    """`frame` as <stem>.parquet and <stem>.csv, each written atomically."""
    paths = [stem.with_suffix(".parquet"), stem.with_suffix(".csv")]
    with atomic_writer(paths[0]) as handle:
        frame.write_parquet(handle, compression="zstd")
    with atomic_writer(paths[1]) as handle:
        frame.write_csv(handle)
    return paths


def write_records(events: pl.DataFrame, scenario: Scenario, out_dir: Path) -> OutputSummary:
    """The arm's patients (in patient order) in the scenario's output formats under out_dir, replacing
    an earlier run's; returns what was written, rule violations included. An arm is written whole
    from memory, so it is never resumed: it is one shard."""
    output = CohortOutput(out_dir, scenario)
    output.clear()
    with output.shard(0, first=0) as writer:
        writer.write_frame(events)
    return output.finish([writer.summary])
