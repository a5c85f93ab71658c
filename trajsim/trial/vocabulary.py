"""Descendants of a code, for code sets that name a parent ("any diabetes mellitus") and mean its
children too. They come from an OMOP vocabulary (as downloaded from Athena, or inside an OMOP CDM
export): CONCEPT gives each concept's SYSTEM/CODE, CONCEPT_ANCESTOR its descendants at any depth.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import polars as pl

from trajsim.trial import TrialError

SYSTEMS = {"SNOMED": "SNOMED", "LOINC": "LOINC", "RxNorm": "RXNORM", "ICD10CM": "ICD10CM", "CVX": "CVX"}
TABLES = {"concept": ("concept_id", "vocabulary_id", "concept_code"),
          "concept_ancestor": ("ancestor_concept_id", "descendant_concept_id")}


def _read(data: bytes, name: str, columns: tuple[str, ...], where: str) -> pl.DataFrame:
    """An OMOP vocabulary table, tab-separated (Athena) or comma-separated (CDM exports)."""
    tabbed = b"\t" in data.split(b"\n", 1)[0]
    frame = pl.read_csv(io.BytesIO(data), separator="\t" if tabbed else ",", quote_char=None if tabbed else '"',
                        infer_schema=False)
    frame = frame.rename({c: c.lower() for c in frame.columns})
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TrialError(f"{where}: {name.upper()}.csv lacks column(s) {', '.join(missing)}")
    return frame.select(columns)


def _table_bytes(source: Path, name: str) -> bytes:
    wanted = f"{name}.csv"
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():
                if Path(member).name.lower() == wanted and "__macosx" not in member.lower():
                    return archive.read(member)
    elif source.is_dir():
        for path in source.iterdir():
            if path.name.lower() == wanted:
                return path.read_bytes()
    raise TrialError(f"{source}: no {wanted.upper()} found; pass a folder or zip of OMOP vocabulary tables")


def omop_descendants(source: Path) -> dict[str, frozenset[str]]:
    """SYSTEM/CODE -> the codes of all its descendants (not itself), for the systems trajsim uses."""
    source = Path(source)
    if not source.exists():
        raise TrialError(f"{source}: no such vocabulary folder or zip")
    tables = {name: _read(_table_bytes(source, name), name, columns, str(source)) for name, columns in TABLES.items()}
    concepts = (tables["concept"].filter(pl.col("vocabulary_id").is_in(list(SYSTEMS)))
                .select("concept_id", (pl.col("vocabulary_id").replace_strict(SYSTEMS) + "/" + pl.col("concept_code"))
                        .alias("code")))
    pairs = (tables["concept_ancestor"].filter(pl.col("ancestor_concept_id") != pl.col("descendant_concept_id"))
             .join(concepts.rename({"concept_id": "ancestor_concept_id", "code": "ancestor"}), on="ancestor_concept_id")
             .join(concepts.rename({"concept_id": "descendant_concept_id", "code": "descendant"}), on="descendant_concept_id")
             .group_by("ancestor").agg(pl.col("descendant").unique().sort()))
    return {row[0]: frozenset(row[1]) for row in pairs.iter_rows()}
