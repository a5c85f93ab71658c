"""Code systems: display names, domains and units for every code trajsim emits.

One curated table (`data/codes.csv`) with the source of each display name. The FHIR exporter looks
up displays here; the knowledge loaders check that every code they use is known here. What kind of
fact a code records (`domain_of`) is answered here for every stage, so the engine, the exporter,
the rules and the model agree on it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

import polars as pl

SYSTEM_URIS: dict[str, str] = {
    "SNOMED": "http://snomed.info/sct",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "LOINC": "http://loinc.org",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CVX": "http://hl7.org/fhir/sid/cvx",
}
DOMAINS = ("condition", "encounter_type", "vital", "lab", "medication", "immunization", "procedure", "allergy",
           "social", "survey")
# The domain of a code the vocabulary does not know (e.g. learned from a user's data), by its system.
DOMAIN_BY_SYSTEM = {"LOINC": "lab", "RXNORM": "medication", "CVX": "immunization", "SNOMED": "condition",
                    "ICD10CM": "condition"}


@dataclass(frozen=True)
class Concept:
    """One coded concept: `code` is SYSTEM/CODE; `unit` is UCUM for measurements, else None."""

    code: str
    display: str
    domain: str
    unit: str | None

    @property
    def system(self) -> str:
        return self.code.split("/", 1)[0]

    @property
    def local_code(self) -> str:
        return self.code.split("/", 1)[1]


class UnknownCodeError(KeyError):
    """A code that the vocabulary does not know."""


class Vocabulary:
    """Lookup of concepts by SYSTEM/CODE."""

    def __init__(self, concepts: dict[str, Concept]) -> None:
        self._concepts = concepts

    def __contains__(self, code: str) -> bool:
        return code in self._concepts

    def __iter__(self):
        return iter(self._concepts.values())

    def __getitem__(self, code: str) -> Concept:
        try:
            return self._concepts[code]
        except KeyError:
            raise UnknownCodeError(f"unknown code {code!r}: add it to trajsim/vocab/data/codes.csv") from None

    def display(self, code: str) -> str:
        return self[code].display

    def get(self, code: str) -> Concept | None:
        return self._concepts.get(code)


@cache
def load_vocabulary() -> Vocabulary:
    """The shipped vocabulary (read once per process)."""
    text = resources.files(__package__).joinpath("data/codes.csv").read_text(encoding="utf-8")
    concepts: dict[str, Concept] = {}
    for row in csv.DictReader(text.splitlines()):
        if row["domain"] not in DOMAINS:
            raise ValueError(f"codes.csv: {row['code']}: domain {row['domain']!r} not one of {DOMAINS}")
        concepts[row["code"]] = Concept(row["code"], row["display"], row["domain"], row["unit"] or None)
    return Vocabulary(concepts)


@cache
def _known_domains() -> dict[str, str]:
    return {concept.code: concept.domain for concept in load_vocabulary()}


@lru_cache(maxsize=1 << 16)  # asked for every fact the engine records
def domain_of(code: str) -> str | None:
    """The kind of fact a SYSTEM/CODE records (one of `DOMAINS`): the vocabulary's domain when it
    knows the code, else the usual one of its code system; None for structural codes."""
    known = _known_domains().get(code)
    return known if known is not None else DOMAIN_BY_SYSTEM.get(code.split("/", 1)[0])


def in_domain(codes: pl.Expr, domain: str) -> pl.Expr:
    """Whether `domain_of` each code of a column is `domain`, as one polars expression for whole
    event tables (null for a null code). It tests the code system and looks up only the codes the
    vocabulary files under another domain than their system's, so it costs about a prefix test."""
    systems = [system for system, usual in DOMAIN_BY_SYSTEM.items() if usual == domain]
    by_system = codes.str.contains(f"^({'|'.join(systems)})(/|$)") if systems else pl.lit(False)
    joining, leaving = [], []  # known codes in `domain` from another system's; known codes out of it
    for code, known in _known_domains().items():
        usual = DOMAIN_BY_SYSTEM.get(code.split("/", 1)[0]) == domain
        if (known == domain) != usual:
            (leaving if usual else joining).append(code)
    return (by_system & ~codes.is_in(leaving)) | codes.is_in(joining)
