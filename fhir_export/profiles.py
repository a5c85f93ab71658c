"""Conformance of resources to the US Core profiles they claim in `meta.profile`, checked against the
published StructureDefinitions (shipped trimmed in `data/us_core/`, see its README).

The R4 validators in `validate.py` check the base resource; this checks what a profile adds on top:
cardinalities (min/max, slices included), fixed and pattern values, and required bindings. Those are
errors. Must-support elements are not required to be present, so they are tallied instead: how
often each is filled where its parent exists, which is what a receiving EHR's test team reads.
FHIRPath invariants and extensible bindings are not evaluated.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
RELEASES = {"us-core-6.1": "6.1.0", "us-core-7.0": "7.0.0"}
DEFAULT_EXTENSION_SLICING = ({"type": "value", "path": "url"},)


@dataclass(frozen=True)
class Rule:
    """One element of a profile: where it sits (its JSON key and slice), and what it requires."""

    id: str
    key: str
    slice: str | None
    min: int
    max: int | None  # None: unbounded
    must_support: bool
    fixed: Any | None
    pattern: Any | None
    binding: str | None
    discriminator: tuple[dict[str, str], ...]
    extension: str | None
    children: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Profile:
    name: str
    resource_type: str
    root: Rule


@dataclass
class ProfileTally:
    """What a run of checks saw beyond its errors. Per (profile, must-support element id): in how many
    resources the element's parent exists (`possible`), and in how many of those it is filled
    (`present`); per required value set that is not shipped, how many values it left unjudged."""

    possible: Counter = field(default_factory=Counter)
    present: Counter = field(default_factory=Counter)
    bindings_not_checked: Counter = field(default_factory=Counter)

    def rows(self) -> Iterator[tuple[str, str, int, int]]:
        """(profile, element, present, possible), by profile then element."""
        for key in sorted(self.possible):
            yield key[0], key[1], self.present[key], self.possible[key]


def _rule(element: dict[str, Any], children: tuple[Rule, ...]) -> Rule:
    last = element["id"].rsplit(".", 1)[-1]
    key, _, slice_name = last.partition(":")
    if key.endswith("[x]") and slice_name.startswith(key[:-3]):
        key, slice_name = slice_name, ""  # a type slice of a choice is that type's JSON key
    fixed = next((v for k, v in element.items() if k.startswith("fixed")), None)
    pattern = next((v for k, v in element.items() if k.startswith("pattern")), None)
    limit = element.get("max", "*")
    return Rule(element["id"], key, slice_name or None, int(element.get("min", 0)), None if limit == "*" else int(limit),
                bool(element.get("mustSupport")), fixed, pattern, element.get("binding"),
                tuple(element.get("discriminator", ())), element.get("extension"), children)


def _tree(elements: list[dict[str, Any]]) -> Rule:
    """The elements (ids like `Observation.category:VSCat.coding.code`) as a tree under the root."""
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for element in elements:
        if "." in element["id"]:
            by_parent.setdefault(element["id"].rsplit(".", 1)[0], []).append(element)

    def build(element: dict[str, Any]) -> Rule:
        return _rule(element, tuple(build(child) for child in by_parent.get(element["id"], [])))
    return build(next(e for e in elements if "." not in e["id"]))


def _codes(value: Any) -> list[tuple[str | None, str]]:
    """The (system, code) pairs a coded value carries: a code, Coding, Quantity or CodeableConcept."""
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value:
        return [pair for coding in value["coding"] for pair in _codes(coding)]
    return [(value.get("system"), value["code"])] if isinstance(value.get("code"), str) else []


def _contains(actual: Any, pattern: Any) -> bool:
    """FHIR pattern matching: every property of the pattern is in the value (lists: each pattern item
    matches some item of the value)."""
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(k in actual and _contains(actual[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(actual, list) and all(any(_contains(a, p) for a in actual) for p in pattern)
    return actual == pattern


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _at(item: Any, key: str) -> list[Any]:
    """The values under one JSON key of an element (a choice `name[x]` matches any of its types)."""
    if not isinstance(item, dict):
        return []
    if key.endswith("[x]"):
        stem = key[:-3]
        return [value for k, v in item.items() if k.startswith(stem) and k[len(stem):][:1].isupper()
                for value in _as_list(v)]
    return _as_list(item.get(key))


class ProfileSet:
    """The profiles and required value sets of one US Core release."""

    def __init__(self, data: dict[str, Any], label: str) -> None:
        self.label = label
        self.profiles = {url: Profile(p["name"], p["type"], _tree(p["elements"]))
                         for url, p in data["profiles"].items()}
        self.value_sets = {url: (None if vs.get("unavailable") else
                                 ({(s, c) for s, c in vs["codes"]}, {c for _, c in vs["codes"]}, set(vs["systems"])))
                           for url, vs in data["valueSets"].items()}

    @classmethod
    def load(cls, name: str) -> ProfileSet:
        """A shipped release by name, e.g. "us-core-6.1"; ValueError naming the choices otherwise."""
        if name not in RELEASES:
            raise ValueError(f"--profile {name!r}: choose one of {', '.join(RELEASES)}")
        return _load_release(RELEASES[name])

    def check(self, resource: dict[str, Any], tally: ProfileTally) -> list[str]:
        """What breaks the US Core profiles `resource` claims, each as `profile element-id: problem`;
        its must-support elements are counted into `tally`."""
        problems: list[str] = []
        for url in resource.get("meta", {}).get("profile", []):
            profile = self.profiles.get(url.split("|")[0])
            if profile is None:
                if url.startswith(US_CORE):
                    problems.append(f"{url}: not a profile of {self.label}")
                continue
            if profile.resource_type != resource.get("resourceType"):
                problems.append(f"{profile.name}: profiles {profile.resource_type}, not {resource.get('resourceType')}")
                continue
            self._visit(profile, profile.root, [resource], problems, tally)
        return problems

    def _visit(self, profile: Profile, rule: Rule, items: list[Any], problems: list[str], tally: ProfileTally) -> None:
        for child in rule.children:
            per_item = [self._slice_values(rule, child, item) for item in items]
            if any(values is None for values in per_item):
                continue  # a slice whose members cannot be told apart is not judged
            for values in per_item:
                self._judge(profile, child, values, problems, tally)
            instances = [value for values in per_item for value in values]
            if child.must_support and items:
                tally.possible[profile.name, child.id] += 1
                tally.present[profile.name, child.id] += bool(instances)
            if child.extension in self.profiles:
                extension = self.profiles[child.extension]
                self._visit(extension, extension.root, instances, problems, tally)
            self._visit(profile, child, instances, problems, tally)

    def _judge(self, profile: Profile, rule: Rule, values: list[Any], problems: list[str], tally: ProfileTally) -> None:
        where = f"{profile.name} {rule.id}"
        if len(values) < rule.min:
            problems.append(f"{where}: required (min {rule.min}), found {len(values)}")
        if rule.max is not None and len(values) > rule.max:
            problems.append(f"{where}: at most {rule.max} allowed, found {len(values)}")
        for value in values:
            if rule.fixed is not None and value != rule.fixed:
                problems.append(f"{where}: is {json.dumps(value)}, the profile fixes {json.dumps(rule.fixed)}")
            if rule.pattern is not None and not _contains(value, rule.pattern):
                problems.append(f"{where}: does not match the profile's pattern {json.dumps(rule.pattern)}")
            if rule.binding is None or rule.slice is not None:
                continue  # a slice's binding decides which values are its members
            member = self._in_value_set(rule.binding, value)
            if member is None:
                tally.bindings_not_checked[rule.binding] += 1
            elif not member:
                codes = ", ".join(f"{s or ''}|{c}" for s, c in _codes(value)) or "no code"
                problems.append(f"{where}: {codes} is not in the required value set {rule.binding}")

    def _in_value_set(self, url: str, value: Any) -> bool | None:
        """Whether a coded value is in a value set; None when the set is not shipped."""
        members = self.value_sets.get(url)
        if members is None:
            return None
        pairs, bare_codes, systems = members
        return any((system, code) in pairs or (system is None and code in bare_codes) or system in systems
                   for system, code in _codes(value))

    def _slice_values(self, parent: Rule, rule: Rule, item: Any) -> list[Any] | None:
        """The values of `rule` in one instance of its parent: all under its key, or a slice's members
        (None when the slice's discriminator cannot be resolved)."""
        values = _at(item, rule.key)
        if rule.slice is None:
            return values
        base = next((r for r in parent.children if r.key == rule.key and r.slice is None), None)
        discriminator = base.discriminator if base is not None and base.discriminator else (
            DEFAULT_EXTENSION_SLICING if rule.key.endswith("xtension") else ())
        if not discriminator:
            return None
        members = []
        for value in values:
            verdicts = [self._matches(rule, part["path"], value) for part in discriminator]
            if None in verdicts:
                return None
            if all(verdicts):
                members.append(value)
        return members

    def _matches(self, rule: Rule, path: str, value: Any) -> bool | None:
        if path == "$this":
            if rule.fixed is not None or rule.pattern is not None:
                return value == rule.fixed if rule.fixed is not None else _contains(value, rule.pattern)
            return self._in_value_set(rule.binding, value) if rule.binding else None
        if path == "url" and rule.extension:
            return isinstance(value, dict) and value.get("url") == rule.extension
        target: Rule | None = rule
        actual = [value]
        for key in path.split("."):
            target = next((r for r in target.children if r.key == key and r.slice is None), None) if target else None
            actual = [v for a in actual for v in _at(a, key)]
        if target is None or (target.fixed is None and target.pattern is None):
            return None
        if target.fixed is not None:
            return target.fixed in actual
        return any(_contains(a, target.pattern) for a in actual)


@cache
def _load_release(version: str) -> ProfileSet:
    text = resources.files(__package__).joinpath(f"data/us_core/us-core-{version}.json").read_text()
    return ProfileSet(json.loads(text), f"US Core {version}")
