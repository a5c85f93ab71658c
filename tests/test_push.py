"""`trajsim push` loads a generated cohort into a real FHIR server (SEKMET on loopback), which then
answers searches with each patient's record; what the server refuses is reported in its own words,
and failures that are the network's or the server's are retried, a bounded number of times."""

from __future__ import annotations

import base64
import shutil
from collections import Counter
from datetime import date
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner, Result

from fhir_export.push import find_bundles, push_bundles
from tests.conftest import small_scenario
from tests.fhir_server import free_port
from trajsim.cli import app
from trajsim.generate import generate

runner = CliRunner(env={"COLUMNS": "250"})
PATIENTS = 100


@pytest.fixture(scope="session")
def loaded_cohort(tmp_path_factory: pytest.TempPathFactory, fhir_server: str) -> tuple[Path, Result]:
    """100 patients over two years, pushed through the CLI: the output folder and the command's result."""
    out = tmp_path_factory.mktemp("pushed")
    generate(small_scenario(PATIENTS, seed=11, **{"period.start": date(2023, 1, 1), "output.formats": ["bundle"]}), out)
    return out, runner.invoke(app, ["push", str(out), "--server", fhir_server, "--concurrency", "4"])


def resources_of(bundle_path: Path) -> list[dict]:
    return [entry["resource"] for entry in orjson.loads(bundle_path.read_bytes())["entry"]]


@pytest.fixture(scope="session")
def search_total(fhir_server: str):
    """How many resources of a type the server finds for the search parameters given."""
    with httpx.Client(base_url=fhir_server, timeout=30) as client:
        def total(resource_type: str, **params: str) -> int:
            response = client.get(f"/{resource_type}", params={**params, "_summary": "count"})
            response.raise_for_status()
            return response.json()["total"]
        yield total


def test_every_generated_patient_is_accepted(loaded_cohort):
    out, result = loaded_cohort
    assert result.exit_code == 0, result.output
    assert f"accepted all {PATIENTS} bundles" in result.output
    assert len(find_bundles(out)) == PATIENTS


def test_searching_the_server_returns_each_patients_conditions_and_observations(loaded_cohort, search_total):
    out, _ = loaded_cohort
    for bundle in find_bundles(out):
        resources = resources_of(bundle)
        patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
        observation_codes = Counter(
            f"{r['code']['coding'][0]['system']}|{r['code']['coding'][0]['code']}"
            for r in resources if r["resourceType"] == "Observation")
        conditions = sum(r["resourceType"] == "Condition" for r in resources)
        assert search_total("Condition", patient=patient) == conditions, bundle.name
        assert search_total("Observation", patient=patient) == observation_codes.total(), bundle.name
        if observation_codes:
            code, count = observation_codes.most_common(1)[0]
            assert search_total("Observation", patient=patient, code=code) == count, (bundle.name, code)


def test_every_resource_of_the_cohort_is_stored(loaded_cohort, search_total):
    out, _ = loaded_cohort
    sent = {(r["resourceType"], r["id"]) for bundle in find_bundles(out) for r in resources_of(bundle)}
    by_type = Counter(resource_type for resource_type, _ in sent)  # a provider shared by patients counts once
    for resource_type, count in by_type.items():
        assert search_total(resource_type) == count, resource_type


def test_a_rejected_bundle_is_reported_with_the_servers_operation_outcome(loaded_cohort, fhir_server, tmp_path):
    out, _ = loaded_cohort
    good, other = find_bundles(out)[:2]
    shutil.copy(good, tmp_path / good.name)
    bundle = orjson.loads(other.read_bytes())
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    patient["birthDate"] = "last spring"
    (tmp_path / "broken.json").write_bytes(orjson.dumps(bundle))
    result = runner.invoke(app, ["push", str(tmp_path), "--server", fhir_server])
    assert result.exit_code == 1, result.output
    rejected = next(line for line in result.output.splitlines() if line.startswith("rejected:"))
    assert "broken.json" in rejected and "HTTP 400" in rejected and "Patient.birthDate" in rejected
    assert "1 of 2 bundle(s) were not accepted" in result.output
    listed = [orjson.loads(line) for line in (tmp_path / "push-rejected.ndjson").read_bytes().splitlines()]
    assert [(Path(r["bundle"]).name, r["status"]) for r in listed] == [("broken.json", 400)]


def test_an_unreachable_server_exits_2_naming_the_url(tmp_path):
    (tmp_path / "patient.json").write_bytes(b'{"resourceType": "Bundle", "type": "transaction", "entry": []}')
    url = f"http://127.0.0.1:{free_port()}/fhir"
    result = runner.invoke(app, ["push", str(tmp_path), "--server", url])
    assert result.exit_code == 2
    assert f"cannot reach the FHIR server at {url}" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("make_folder, expected", [
    (lambda tmp: tmp / "missing", "no such folder"),
    (lambda tmp: tmp, "no FHIR bundles (*.json) found"),
    (lambda tmp: (tmp / "Patient.ndjson").write_text("{}") and tmp, "holds bulk NDJSON, which push does not post"),
])
def test_a_folder_without_bundles_exits_2(tmp_path, make_folder, expected):
    result = runner.invoke(app, ["push", str(make_folder(tmp_path)), "--server", "http://127.0.0.1:9/fhir"])
    assert result.exit_code == 2
    assert expected in result.output


def flaky_server(answers: list[int | type[Exception]]) -> tuple[httpx.MockTransport, list[int]]:
    """A stub server answering POSTs with `answers` in turn (a status, or an exception to raise)."""
    posts: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"resourceType": "CapabilityStatement"})
        answer = answers[min(len(posts), len(answers) - 1)]
        posts.append(1)
        if not isinstance(answer, int):
            raise answer("stub", request=request)
        if answer == 200:
            entries = orjson.loads(request.content).get("entry", [])
            return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response",
                                             "entry": [{"response": {"status": "201 Created"}}] * len(entries)})
        return httpx.Response(answer, json={"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "exception", "diagnostics": f"stub answered {answer}"}]})

    return httpx.MockTransport(handle), posts


@pytest.mark.parametrize("answers, accepted, attempts", [
    ([503, 502, 200], True, 3),  # server errors are retried until it accepts
    ([httpx.ReadTimeout, httpx.ConnectError, 200], True, 3),  # so are timeouts and dropped connections
    ([429, 200], True, 2),  # "too many requests" asks to come back later
    ([400, 200], False, 1),  # the server has judged the bundle: no retry
    ([500], False, 4),  # bounded: the first try and --retries 3 more
])
def test_retries_follow_the_kind_of_failure(tmp_path, answers, accepted, attempts):
    (tmp_path / "patient.json").write_bytes(b'{"resourceType": "Bundle", "type": "transaction", "entry": []}')
    transport, posts = flaky_server(answers)
    summary = push_bundles([tmp_path / "patient.json"], "http://stub/fhir", retries=3, backoff=0.001,
                           transport=transport)
    outcome = summary.outcomes[0]
    assert (outcome.accepted, outcome.attempts, len(posts)) == (accepted, attempts, attempts)
    if not accepted:
        assert "stub answered" in outcome.diagnostics


def test_a_batch_with_a_refused_entry_is_not_accepted(tmp_path):
    two = [{"request": {"method": "PUT", "url": f"Patient/{n}"}, "resource": {"resourceType": "Patient"}} for n in "ab"]
    (tmp_path / "patient.json").write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": two}))
    refused = {"status": "422 Unprocessable Entity", "outcome": {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "invalid", "diagnostics": "unknown code", "expression": ["Observation.code"]}]}}
    answer = {"resourceType": "Bundle", "type": "batch-response",
              "entry": [{"response": {"status": "201 Created"}}, {"response": refused}]}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer if request.method == "POST" else {}))
    outcome = push_bundles([tmp_path / "patient.json"], "http://stub/fhir", transport=transport).outcomes[0]
    assert not outcome.accepted
    assert outcome.diagnostics == "entry 1: 422 Unprocessable Entity (error: unknown code [Observation.code])"


def test_a_bundle_that_is_not_a_transaction_is_not_sent(tmp_path):
    (tmp_path / "patient.json").write_bytes(b'{"resourceType": "Bundle", "type": "collection", "entry": []}')
    transport, posts = flaky_server([200])
    outcome = push_bundles([tmp_path / "patient.json"], "http://stub/fhir", transport=transport).outcomes[0]
    assert not outcome.accepted and not posts
    assert "only transaction or batch bundles" in outcome.diagnostics


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(tmp_path):
    (tmp_path / "patient.json").write_bytes(b'{"resourceType": "Bundle", "type": "transaction", "entry": []}')
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(200, json={"resourceType": "CapabilityStatement"})
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []})

    summary = push_bundles([tmp_path / "patient.json"], "http://alice:s3cret@stub/fhir",
                           transport=httpx.MockTransport(handle))
    assert summary.server == "http://stub/fhir"
    assert summary.accepted
    assert {r.headers["authorization"] for r in seen} == {"Basic " + base64.b64encode(b"alice:s3cret").decode()}
    assert all("s3cret" not in str(r.url) for r in seen)


def test_a_token_is_sent_as_bearer_auth(tmp_path, monkeypatch):
    (tmp_path / "patient.json").write_bytes(b'{"resourceType": "Bundle", "type": "transaction", "entry": []}')
    transport, _ = flaky_server([200])
    seen: list[str] = []
    handler = transport.handler
    transport.handler = lambda request: seen.append(request.headers.get("authorization")) or handler(request)
    monkeypatch.setenv("TRAJSIM_FHIR_TOKEN", "from-the-environment")
    push_bundles([tmp_path / "patient.json"], "http://stub/fhir", transport=transport)
    push_bundles([tmp_path / "patient.json"], "http://stub/fhir", token="given", transport=transport)
    assert seen == ["Bearer from-the-environment"] * 2 + ["Bearer given"] * 2


def test_a_password_in_the_url_is_not_printed_when_the_server_is_down(tmp_path):
    generate(small_scenario(1), tmp_path)
    result = runner.invoke(app, ["push", str(tmp_path), "--server", "http://alice:s3cret@127.0.0.1:9/fhir"])
    assert result.exit_code == 2
    assert "http://127.0.0.1:9/fhir" in result.output
    assert "s3cret" not in result.output and "alice" not in result.output


def one_patient_bundle(folder: Path) -> Path:
    path = folder / "patient.json"
    entry = {"request": {"method": "PUT", "url": "Patient/a"}, "resource": {"resourceType": "Patient", "id": "a"}}
    path.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [entry]}))
    return path


@pytest.mark.parametrize("status, body, expected", [
    (500, {"resourceType": "OperationOutcome", "issue": "boom"}, "error: boom"),
    (422, {"resourceType": "OperationOutcome", "issue": [{"details": "not an object"}]}, "error: "),
    (200, {"resourceType": "Bundle", "type": "transaction-response", "entry": ["created"]}, "no response status"),
    (200, {"resourceType": "Bundle", "type": "transaction-response", "entry": 3}, "no list of entries"),
    (200, {"resourceType": "Bundle", "type": "transaction-response", "entry": []}, "0 entries for a bundle of 1"),
    (200, {"resourceType": "Patient"}, "not with a transaction-response Bundle"),
    (200, "garbage", "not with JSON"),
])
def test_a_malformed_answer_is_a_rejection_in_words_not_a_crash(tmp_path, status, body, expected):
    content = body.encode() if isinstance(body, str) else orjson.dumps(body)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}) if request.method == "GET"
                                    else httpx.Response(status, content=content))
    outcome = push_bundles([one_patient_bundle(tmp_path)], "http://stub/fhir", retries=0,
                           transport=transport).outcomes[0]
    assert not outcome.accepted
    assert expected in outcome.diagnostics


def test_a_server_that_trickles_its_answer_is_cut_off_at_the_deadline(tmp_path):
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            listener.settimeout(0.2)
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                request = connection.recv(65536)
                if request.startswith(b"GET"):
                    body = b'{"resourceType": "CapabilityStatement"}'
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                for _ in range(40):  # one byte every 0.1 s: no single read ever waits a whole second
                    if stop.is_set():
                        break
                    connection.sendall(b" ")
                    time.sleep(0.1)

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    try:
        started = time.perf_counter()
        summary = push_bundles([one_patient_bundle(tmp_path)], f"http://127.0.0.1:{listener.getsockname()[1]}/fhir",
                               retries=0, timeout=1.0)
        assert time.perf_counter() - started < 3.0
    finally:
        stop.set()
        server.join()
        listener.close()
    outcome = summary.outcomes[0]
    assert not outcome.accepted and "no complete answer within 1.0 s" in outcome.diagnostics
