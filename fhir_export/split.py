"""Split one patient's transaction bundle into parts a server will take: many servers cap the entries
of a transaction (Medplum at 50).

Parts are posted in order. Entries are ordered so that each comes after what it references; a
reference to an entry of an earlier part is rewritten from its `urn:uuid:` full URL to the
`Type/id` that part created (the exporter PUTs every resource at `Type/id`), while references within
a part keep their full URLs, which the server resolves inside the transaction.
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
    targets = {e["fullUrl"]: e["request"]["url"] for e in entries
               if isinstance(e.get("fullUrl"), str) and e.get("request", {}).get("method") == "PUT"}
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
