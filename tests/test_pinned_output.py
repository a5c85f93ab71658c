"""The same seed and scenario give the same bytes across releases unless a change means to alter
what patients look like: a small cohort of each source is pinned by one digest of all its files.
A change that alters output on purpose updates the digest in the same commit and says why.

A Parquet file is digested by its columns and rows, not its bytes: its footer names the version of
the library that wrote it, which changes with every polars release and says nothing of the patients."""

import hashlib
from pathlib import Path

import orjson
import polars as pl
import pytest

from tests.conftest import small_scenario
from trajsim.generate import generate

PINNED = {
    "reference": "cbdae7ff14d61ddc08ea56c39d8e16b4546a19651bf7c19c395688c59cb349cb",
    "default": "aa32455a117d0472b0a8dab40152ab5b6b61980bf44a3b994c7028a1cf1b7075",
}


def cohort_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + content(path))
    return digest.hexdigest()


def content(path: Path) -> bytes:
    """A file's bytes; a Parquet file's column names and rows, whatever wrote it."""
    if path.suffix != ".parquet":
        return path.read_bytes()
    table = pl.read_parquet(path)
    return orjson.dumps([table.columns, table.rows()])


@pytest.mark.parametrize("source", sorted(PINNED))
def test_a_small_cohort_is_byte_identical_to_the_pinned_run(tmp_path, source):
    scenario = small_scenario(12, seed=3, model=source,
                              **{"output.formats": ["bundle", "collection", "ndjson", "events"]})
    generate(scenario, tmp_path)
    assert cohort_digest(tmp_path) == PINNED[source]
