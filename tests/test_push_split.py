"""Servers that cap a transaction's entries (Medplum's FHIR engine: 50) still load
every patient: `push --max-entries N` posts each patient as ordered parts whose
references all resolve, and the server ends up holding exactly the files' resources."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from fhir_export.push import find_bundles, push_bundles
from fhir_export.split import split_bundle
from tests.conftest import small_scenario
from tests.fhir_server import sekmet_server
from trajsim.cli import app
from trajsim.generate import generate

runner = CliRunner(env={"COLUMNS": "250"})
CAP = 50
SHARED = ("Organization", "Location", "Practitioner")  # one per provider, in many bundles


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split")
    generate(small_scenario(12, seed=5, **{"output.formats": ["bundle"]}), out)
    assert max(len(orjson.loads(b.read_bytes())["entry"]) for b in find_bundles(out)) > CAP
    return out


def references(node) -> list[str]:
    return re.findall(rb'"reference":"([^"]+)"', orjson.dumps(node))


class CappedServer:
    """A stub FHIR server as strict as Medplum's: at most CAP entries a transaction, and a reference
    must name an entry of the same transaction (by full URL) or a resource already stored."""

    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"resourceType": "CapabilityStatement"})
        bundle = orjson.loads(request.content)
        entries = bundle["entry"]
        if len(entries) > CAP:
            return httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": [{
                "severity": "error", "code": "invalid",
                "diagnostics": "Transaction contains more update operations than allowed"}]})
        local = {e["fullUrl"] for e in entries}
        for entry in entries:
            for ref in references(entry["resource"]):
                if ref.decode() not in local and ref.decode() not in self.stored:
                    return httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": [{
                        "severity": "error", "code": "not-found", "diagnostics": f"unresolved {ref.decode()}"}]})
        for entry in entries:
            self.stored[entry["request"]["url"]] = entry["resource"]
        return httpx.Response(200, json={"resourceType": "Bundle", "type": f"{bundle['type']}-response",
                                         "entry": [{"response": {"status": "201 Created"}}] * len(entries)})


def test_every_part_is_small_and_references_only_what_exists(cohort):
    for path in find_bundles(cohort):
        bundle = orjson.loads(path.read_bytes())
        parts = split_bundle(bundle, CAP)
        assert all(len(p["entry"]) <= CAP for p in parts)
        assert sorted(e["fullUrl"] for p in parts for e in p["entry"]) == sorted(e["fullUrl"] for e in bundle["entry"])
        created: set[str] = set()
        for part in parts:
            here = {e["fullUrl"] for e in part["entry"]}
            for ref in (r.decode() for e in part["entry"] for r in references(e["resource"])):
                assert ref in here or ref in created, (path.name, ref)
            created |= {e["request"]["url"] for e in part["entry"]}


def test_a_capped_server_refuses_whole_patients_and_takes_them_in_parts(cohort):
    bundles = find_bundles(cohort)
    whole = push_bundles(bundles, "http://capped/fhir", transport=httpx.MockTransport(CappedServer()))
    assert whole.rejected and "more update operations than allowed" in whole.rejected[0].diagnostics
    server = CappedServer()
    split = push_bundles(bundles, "http://capped/fhir", max_entries=CAP,
                         transport=httpx.MockTransport(server))
    assert not split.rejected
    sent = {e["request"]["url"]: e["resource"] for b in bundles for e in orjson.loads(b.read_bytes())["entry"]}
    assert server.stored.keys() == sent.keys()


@pytest.mark.parametrize("options", [["--max-entries", "20"], ["--batch", "--max-entries", "40"]],
                         ids=["transactions", "batches"])
def test_a_real_server_takes_parts_and_holds_every_resource_once(tmp_path, options):
    out = tmp_path / "cohort"
    generate(small_scenario(5, seed=21, **{"period.start": date(2022, 1, 1), "output.formats": ["bundle"]}), out)
    sent = Counter(e["resource"]["resourceType"] for b in find_bundles(out) for e in orjson.loads(b.read_bytes())["entry"]
                   if e["resource"]["resourceType"] not in SHARED)
    with sekmet_server(tmp_path / "server") as server:
        result = runner.invoke(app, ["push", str(out), "--server", server, *options])
        assert result.exit_code == 0 and "accepted all 5 bundles" in result.output, result.output
        with httpx.Client(base_url=server, timeout=30) as client:
            for resource_type, count in sent.items():
                stored = client.get(f"/{resource_type}", params={"_summary": "count"}).json()["total"]
                assert stored == count, resource_type


def test_max_entries_below_one_is_refused(cohort):
    result = runner.invoke(app, ["push", str(cohort), "--server", "http://127.0.0.1:9/fhir", "--max-entries", "0"])
    assert result.exit_code == 2 and "--max-entries must be at least 1" in result.output
