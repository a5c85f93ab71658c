"""`push --batch`: each patient as batch bundles, whose entries a server takes or refuses one by one.
References travel as `Type/id`, every entry after what it references (a reference cycle sent first
without its inner references, then whole), so a server that checks each reference on arrival stores
every resource, and one refused entry costs only itself."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import pytest

from fhir_export.push import find_bundles, push_bundles
from fhir_export.split import batch_parts
from tests.conftest import small_scenario
from trajsim.generate import generate

CAP = 50


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("batch")
    generate(small_scenario(8, seed=5, **{"output.formats": ["bundle"]}), out)
    return out


def references(node) -> list[str]:
    return [ref.decode() for ref in re.findall(rb'"reference":"([^"]+)"', orjson.dumps(node))]


class BatchServer:
    """A stub FHIR server that takes batches only (a transaction is refused whole), at most CAP
    entries each, and judges every entry on its own as it arrives: a reference must name a resource
    already stored; resources of a type in `refuses` are refused (422)."""

    def __init__(self, refuses: frozenset[str] = frozenset()) -> None:
        self.stored: dict[str, dict] = {}
        self.refuses = refuses

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"resourceType": "CapabilityStatement"})
        bundle = orjson.loads(request.content)
        if bundle["type"] != "batch" or len(bundle["entry"]) > CAP:
            return httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "not-supported",
                "diagnostics": f"only batches of at most {CAP} entries are supported"}]})
        answers = []
        for entry in bundle["entry"]:
            missing = [ref for ref in references(entry["resource"]) if ref not in self.stored]
            if missing or entry["resource"]["resourceType"] in self.refuses:
                said = f"unresolved {missing[0]}" if missing else "resource type not allowed"
                answers.append({"response": {"status": "422 Unprocessable Entity", "outcome": {
                    "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                                                                   "diagnostics": said}]}}})
            else:
                self.stored[entry["request"]["url"]] = entry["resource"]
                answers.append({"response": {"status": "200 OK"}})
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "batch-response", "entry": answers})


def _sent(bundles: list[Path]) -> dict[str, dict]:
    return {e["request"]["url"]: e["resource"] for b in bundles for e in orjson.loads(b.read_bytes())["entry"]}


def test_a_batch_references_by_type_and_id_and_each_entry_comes_after_its_targets(cohort):
    for path in find_bundles(cohort):
        bundle = orjson.loads(path.read_bytes())
        (batch,) = batch_parts(bundle, None)
        assert batch["type"] == "batch" and all("fullUrl" not in e for e in batch["entry"])
        stored: set[str] = set()
        for entry in batch["entry"]:
            assert all(ref in stored for ref in references(entry["resource"])), (path.name, entry["request"]["url"])
            stored.add(entry["request"]["url"])
        final = {e["request"]["url"]: e["resource"] for e in batch["entry"]}  # the last copy of each
        urls = {e["fullUrl"]: e["request"]["url"] for e in bundle["entry"]}
        assert final == {e["request"]["url"]: orjson.loads(re.sub(
            rb'"reference":"(urn:uuid:[^"]+)"', lambda m: b'"reference":"' + urls[m[1].decode()].encode() + b'"',
            orjson.dumps(e["resource"]))) for e in bundle["entry"]}


def test_a_server_that_takes_only_batches_stores_every_resource_whole(cohort):
    bundles = find_bundles(cohort)
    refused = push_bundles(bundles, "http://batch/fhir", transport=httpx.MockTransport(BatchServer()))
    assert len(refused.rejected) == len(bundles) and "only batches" in refused.rejected[0].diagnostics
    server = BatchServer()
    summary = push_bundles(bundles, "http://batch/fhir", batch=True, max_entries=CAP,
                           transport=httpx.MockTransport(server))
    assert not summary.rejected
    sent = _sent(bundles)
    assert server.stored.keys() == sent.keys()
    cycles = [url for url, resource in sent.items() if resource["resourceType"] == "Encounter" and "reasonReference" in resource]
    assert cycles and all("reasonReference" in server.stored[url] for url in cycles)  # whole after the first pass


def test_a_refused_entry_costs_only_itself(cohort):
    bundles = find_bundles(cohort)
    server = BatchServer(refuses=frozenset({"Provenance"}))
    summary = push_bundles(bundles, "http://batch/fhir", batch=True, max_entries=CAP,
                           transport=httpx.MockTransport(server))
    assert len(summary.rejected) == len(bundles)
    assert "resource type not allowed" in summary.rejected[0].diagnostics and "part " in summary.rejected[0].diagnostics
    sent = _sent(bundles)
    assert server.stored.keys() == {url for url, r in sent.items() if r["resourceType"] != "Provenance"}
