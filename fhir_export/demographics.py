"""Who a patient is beyond the clinical record: name, address, phone, race and ethnicity, language
drawn from national frequency tables and fixed by the patient's identity.

Race and ethnicity use the US Core extensions with CDC race and ethnicity codes. Phone numbers are
in the 555-0100..555-0199 range that the North American Numbering Plan reserves for fiction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from itertools import accumulate
from typing import Any

from fhir_export.identity import stable_random
from fhir_export.tables import load_table
from fhir_export.terminology import (
    CDC_RACE_ETHNICITY, LANGUAGE, US_CORE, coding, concept,
)

SPANISH_SPEAKING_HISPANIC_SHARE = 0.72  # Pew Research Center (2023): 72% of US Hispanics speak Spanish at home


@dataclass(frozen=True)
class Place:
    city: str
    state: str
    postal_code: str
    area_code: str


@cache
def places(state: str | None = None, city: str | None = None) -> tuple[list[Place], list[float]]:
    """The US cities of at least 15,000 people (in `state`, and named `city`, when given) with their
    populations, the weights of a home drawn at random."""
    rows = [r for r in load_table("places", ("city", "state", "postal_code", "area_code", "population"))
            if state in (None, r["state"]) and city in (None, r["city"])]
    return ([Place(r["city"], r["state"], r["postal_code"], r["area_code"]) for r in rows],
            [float(r["population"]) for r in rows])


def unknown_home(state: str | None, city: str | None) -> str | None:
    """Why no patient could live at this state and city, or None when some city matches."""
    if state is not None and not places(state)[0]:
        states = sorted({p.state for p in places()[0]})
        return f"state {state!r} is not a two-letter US state code; allowed: {', '.join(states)}"
    if city is not None and not places(state, city)[0]:
        where = f" in {state}" if state else ""
        return f"city {city!r}: no US city of at least 15,000 people of that name{where} (names as GeoNames writes them, e.g. 'St. Louis')"
    return None


@cache
def _shares(kind: str) -> tuple[list[dict[str, str]], list[float]]:
    rows = [row for row in load_table("race_ethnicity", ("kind", "code", "display", "share")) if row["kind"] == kind]
    return rows, [float(row["share"]) for row in rows]


@cache
def _names(kind: str) -> tuple[list[str], list[float]]:
    rows = [row for row in load_table("names", ("kind", "name", "share")) if row["kind"] == kind]
    return [row["name"] for row in rows], list(accumulate(float(row["share"]) for row in rows))


def _draw(rng: random.Random, kind: str) -> str:
    names, cumulative = _names(kind)
    return rng.choices(names, cum_weights=cumulative)[0]


def draw_name(rng: random.Random, sex: str, prefix: str | None = None) -> dict[str, Any]:
    """An official HumanName drawn by the frequency of each name in the national lists."""
    name = {"use": "official", "family": _draw(rng, "family"), "given": [_draw(rng, f"given_{sex}")]}
    return name | ({"prefix": [prefix]} if prefix else {})


def draw_place(rng: random.Random, state: str | None = None, city: str | None = None) -> Place:
    """A home city, weighted by population, within `state` and `city` when given."""
    cities, weights = places(state, city)
    return rng.choices(cities, weights)[0]


def phone(rng: random.Random, place: Place) -> str:
    return f"({place.area_code}) 555-01{rng.randrange(100):02d}"


def address(rng: random.Random, place: Place) -> dict[str, Any]:
    street = rng.choice(load_table("streets", ("street",)))["street"]
    return {"use": "home", "line": [f"{rng.randrange(1, 9999)} {street}"], "city": place.city,
            "state": place.state, "postalCode": place.postal_code, "country": "US"}


def _category_extension(url: str, row: dict[str, str], omb: bool = True) -> dict[str, Any]:
    part = "ombCategory" if omb else "detailed"
    return {"url": US_CORE + url, "extension": [
        {"url": part, "valueCoding": coding(CDC_RACE_ETHNICITY, row["code"], row["display"])},
        {"url": "text", "valueString": row["display"]},
    ]}


def patient_details(key: str, sex: str, state: str | None = None, city: str | None = None) -> tuple[dict[str, Any], Place]:
    """Patient fields (name, telecom, address, communication, US Core extensions) for
    the patient identified by `key`, and the patient's home place (in `state` and `city` if given)."""
    rng = stable_random(f"{key}/demographics")
    place = draw_place(rng, state, city)
    race_rows, race_weights = _shares("race")
    race = rng.choices(race_rows, race_weights)[0]
    ethnicity_rows, ethnicity_weights = _shares("ethnicity")
    ethnicity = rng.choices(ethnicity_rows, ethnicity_weights)[0]
    hispanic = ethnicity["display"] == "Hispanic or Latino"
    spanish = hispanic and rng.random() < SPANISH_SPEAKING_HISPANIC_SHARE
    language = ("es", "Spanish") if spanish else ("en-US", "English (United States)")
    details = {
        "extension": [
            _category_extension("us-core-race", race, omb=race["code"] != "2131-1"),  # "Other Race" is not an OMB category
            _category_extension("us-core-ethnicity", ethnicity),
            {"url": US_CORE + "us-core-birthsex", "valueCode": sex},
        ],
        "name": [draw_name(rng, sex)],
        "telecom": [{"system": "phone", "value": phone(rng, place), "use": "home"}],
        "address": [address(rng, place)],
        "communication": [{"language": concept(LANGUAGE, *language), "preferred": True}],
    }
    return details, place
