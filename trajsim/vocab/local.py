"""The open vocabulary: code systems beyond the curated table, and the local codes of a source.

Ingest keeps every code a source holds. Codes of standard systems trajsim does not curate (ICD-9-CM,
NDC, CPT, ...) keep their `SYSTEM/CODE` form; anything else becomes a *local code*
`LOCAL/<scheme>/<code>`, where the scheme names the source's own code list (`MEDS-LAB`,
`mimiciv_meas_chart`, the last segment of a FHIR system URI). Descriptions, kinds and the FHIR system
URI of such codes live in a codes table written beside the events (`events.codes.parquet`, schema
CODES_SCHEMA); `with_codes` extends the shipped vocabulary with them so the exporter can name them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from trajsim.vocab import DOMAINS, SYSTEM_URIS, Concept, Vocabulary

LOCAL = "LOCAL"
# FHIR code-system URIs of the standard systems outside the curated table (HL7 terminology pages).
EXTRA_SYSTEM_URIS: dict[str, str] = {
    "ICD9CM": "http://hl7.org/fhir/sid/icd-9-cm",
    "ICD9PCS": "http://www.cms.gov/Medicare/Coding/ICD9",
    "ICD10PCS": "http://www.cms.gov/Medicare/Coding/ICD10",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "CPT4": "http://www.ama-assn.org/go/cpt",
    "HCPCS": "urn:oid:2.16.840.1.113883.6.285",
    "ATC": "http://www.whocc.no/atc",
}
ALL_SYSTEM_URIS = {**SYSTEM_URIS, **EXTRA_SYSTEM_URIS}
LOCAL_URI_PREFIX = "urn:trajsim:local:"
CODES_SCHEMA: dict[str, pl.DataType] = {
    "code": pl.String(),          # as in the events: SYSTEM/CODE or LOCAL/<scheme>/<code>
    "description": pl.String(),   # the source's name for it (MEDS codes.parquet, OMOP concept_name, FHIR display)
    "domain": pl.String(),        # one of trajsim.vocab.DOMAINS, or null when the source does not say
    "system_uri": pl.String(),    # FHIR system URI the exporter writes
    "source_codes": pl.List(pl.String()),  # the source's own codes behind it (MEDS code, OMOP concept ids)
    "events": pl.UInt64(),        # how many events carry it
}


def local_code(scheme: str, code: str) -> str:
    """`LOCAL/<scheme>/<code>`; the scheme may not contain `/` (it is replaced by `-`)."""
    return f"{LOCAL}/{scheme.replace('/', '-')}/{code}"


def local_codes(scheme: pl.Expr, code: pl.Expr) -> pl.Expr:
    """`local_code` column-wise."""
    return pl.lit(LOCAL + "/") + scheme.str.replace_all("/", "-") + "/" + code


def system_and_code(code: str) -> tuple[str, str]:
    """(FHIR system URI, code) for any SYSTEM/CODE or LOCAL/<scheme>/<code>."""
    system, rest = code.split("/", 1)
    if system == LOCAL:
        scheme, _, local = rest.partition("/")
        return LOCAL_URI_PREFIX + scheme, local
    return ALL_SYSTEM_URIS[system], rest


def read_codes(path: Path) -> pl.DataFrame:
    """The codes table written beside an events file (empty with the schema if there is none)."""
    if not Path(path).is_file():
        return pl.DataFrame(schema=CODES_SCHEMA)
    return pl.read_parquet(path).select([pl.col(n).cast(t) for n, t in CODES_SCHEMA.items()])


CODES_SUFFIX = ".codes.parquet"


def codes_path(events: Path) -> Path:
    """Where the codes table of the events file `events` lives: `<stem>.codes.parquet` beside it."""
    events = Path(events)
    return events.with_name(events.name.removesuffix(".parquet") + CODES_SUFFIX)


def with_codes(vocabulary: Vocabulary, codes: pl.DataFrame) -> Vocabulary:
    """`vocabulary` plus a concept for each code of `codes` it lacks (display = the description, else
    the code), so the exporter writes ingested codes with their source's names and kinds."""
    added = {
        row["code"]: Concept(row["code"], row["description"] or row["code"],
                             row["domain"] if row["domain"] in DOMAINS else "", None)
        for row in codes.iter_rows(named=True) if row["code"] not in vocabulary
    }
    return Vocabulary({**{concept.code: concept for concept in vocabulary}, **added})
