"""Split one patient's transaction bundle into parts a server will take: many servers cap the entries
of a transaction (Medplum at 50).

Parts are posted in order. Entries are ordered so that each comes after what it references; a
reference to an entry of an earlier part is rewritten from its `urn:uuid:` full URL to the
`Type/id` that part created (the exporter PUTs every resource at `Type/id`), while references within
a part keep their full URLs, which the server resolves inside the transaction.

`batch_parts` turns the same bundle into batches, whose entries a server handles one by one, each on
its own: every reference is then the `Type/id` of its target and entries come after what they
reference. Resources that reference each other are sent twice, first without the references inside
their cycle and then whole, so a server that checks each reference as the entry arrives finds every
target already stored.
"""

from __future__ import annotations

from typing import Any

import networkx as nx


def split_bundle(bundle: dict[str, Any], max_entries: int | None) -> list[dict[str, Any]]:
    """The bundle as transactions of at most `max_entries` entries (itself when it fits or when None).
    Resources that reference each other (an Encounter and the Condition it was for) stay in one
    part, which may then hold more (a cycle cannot be split)."""
    entries = bundle.get("entry", [])
    if max_entries is None or len(entries) <= max_entries:
        return [bundle]
    targets = _targets(entries)
    chunks: list[list[dict[str, Any]]] = [[]]
    for unit in _dependency_units(entries, targets):
        if chunks[-1] and len(chunks[-1]) + len(unit) > max_entries:
            chunks.append([])
        chunks[-1] += unit
    parts, created = [], set()
    for chunk in chunks:
        parts.append({"resourceType": "Bundle", "type": bundle["type"],
                      "entry": [_rewritten(entry, targets, created) for entry in chunk]})
        created |= {e.get("fullUrl") for e in chunk}
    return parts


def batch_parts(bundle: dict[str, Any], max_entries: int | None) -> list[dict[str, Any]]:
    """The bundle as batches of at most `max_entries` entries (one batch when None), to be sent in
    order, whose entries need nothing from each other: references as `Type/id`, each entry after what
    it references, the members of a reference cycle first without their references to each other and
    then whole."""
    entries = bundle.get("entry", [])
    targets = _targets(entries)
    ordered: list[dict[str, Any]] = []
    for unit in _dependency_units(entries, targets):
        if len(unit) > 1:
            inside = {e.get("fullUrl") for e in unit}
            ordered += [{**e, "resource": _without_references(e.get("resource"), inside)} for e in unit]
        ordered += unit
    every = set(targets)
    batch = [{key: value for key, value in _rewritten(e, targets, every).items() if key != "fullUrl"} for e in ordered]
    size = max_entries or max(len(batch), 1)
    return [{"resourceType": "Bundle", "type": "batch", "entry": batch[start:start + size]}
            for start in range(0, max(len(batch), 1), size)]


def _targets(entries: list[dict[str, Any]]) -> dict[str, str]:
    """Full URL -> the `Type/id` an entry is PUT at."""
    return {e["fullUrl"]: e["request"]["url"] for e in entries
            if isinstance(e.get("fullUrl"), str) and e.get("request", {}).get("method") == "PUT"}


def _without_references(node: Any, urls: set[str]) -> Any:
    """`node` without its references to `urls`: a Reference held by a key goes with the key (a
    Condition's encounter), one inside a list item takes the whole item (an Encounter's diagnosis
    with its condition), and a list or object left empty goes too."""
    if isinstance(node, dict):
        kept = {}
        for key, value in node.items():
            if isinstance(value, dict) and value.get("reference") in urls:
                continue
            value = _without_references(value, urls)
            if value not in ([], {}):
                kept[key] = value
        return kept
    if isinstance(node, list):
        return [_without_references(item, urls) for item in node if not set(_references(item)) & urls]
    return node


def _dependency_units(entries: list[dict[str, Any]], targets: dict[str, str]) -> list[list[dict[str, Any]]]:
    """Entries grouped into units that must travel together (references in a cycle), each unit after
    every unit it references, otherwise in bundle order."""
    position = {url: i for i, e in enumerate(entries) if (url := e.get("fullUrl")) in targets}
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(entries)))
    graph.add_edges_from((position[url], i) for i, e in enumerate(entries)
                         for url in _references(e.get("resource")) if url in position and position[url] != i)
    units = nx.condensation(graph)
    order = nx.lexicographical_topological_sort(units, key=lambda u: min(units.nodes[u]["members"]))
    return [[entries[i] for i in sorted(units.nodes[u]["members"])] for u in order]


def _references(node: Any) -> list[str]:
    """Every `reference` string in a resource, however deep."""
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [ref for key, value in node.items() if key != "reference" for ref in _references(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _references(item)]
    return []


def _rewritten(entry: dict[str, Any], targets: dict[str, str], created: set[str]) -> dict[str, Any]:
    """The entry with references to already created resources as `Type/id`."""
    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: (targets[value] if key == "reference" and value in created and value in targets
                          else rewrite(value)) for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    return {**entry, "resource": rewrite(entry.get("resource"))}
