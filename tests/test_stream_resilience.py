"""`trajsim stream` against a server that misbehaves: answers 5xx, answers too slowly, drops the
connection. Every request ends acknowledged or in the dead-letter file, with the reason; the counts
add up; one patient's updates reach the server in order; Ctrl-C stops a run with a summary."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest

from trajsim.engine.hospital import Hospital
from trajsim.scenario import StreamScenario
from trajsim.stream.hl7v2 import AdtFeed
from trajsim.stream.messages import interactions
from trajsim.stream.run import StreamOptions, run_stream
from trajsim.stream.summary import stream_summary, write_dead_letter

SLOW_S = 1.0  # a "slow" answer comes after this long, beyond the client's timeout below
CLIENT_TIMEOUT_S = 0.25
ENCOUNTER_STATUSES = ("arrived", "triaged", "in-progress", "finished")


class LoopbackServer:
    """A server on a free loopback port, run by its own event loop in a thread. Each message it
    receives is answered "ok" or, at `failure_rate`, with one of the failure `kinds` (seeded)."""

    def __init__(self, failure_rate: float, kinds: tuple[str, ...], seed: int = 1):
        self.rng = random.Random(seed)
        self.failure_rate, self.kinds = failure_rate, kinds
        self.writes = 0
        self.port = 0

    def answer(self) -> str:
        self.writes += 1
        return self.rng.choice(self.kinds) if self.rng.random() < self.failure_rate else "ok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    @contextmanager
    def running(self) -> Iterator[LoopbackServer]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        stop = asyncio.Event()

        async def serve() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await stop.wait()
            handlers = asyncio.all_tasks() - {asyncio.current_task()}
            for handler in handlers:
                handler.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
        thread.start()
        ready.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()


def valid_answer(method: str, body: bytes) -> dict:
    """What a FHIR server that stored the request answers: a transaction-response with an entry per
    entry, or an OperationOutcome without issues."""
    if method == "POST":
        entries = orjson.loads(body)["entry"]
        return {"resourceType": "Bundle", "type": "transaction-response",
                "entry": [{"response": {"status": "201 Created"}}] * len(entries)}
    return {"resourceType": "OperationOutcome", "issue": []}


MISBEHAVIOURS = {  # a 2xx that is not an answer to the request, or an error answer that is malformed
    "garbage": (200, b"<html>proxy says hi</html>"),
    "huge": (200, b" " * (2 * 1024 * 1024)),
    "wrong resource": (200, b'{"resourceType": "Patient", "id": "someone-else"}'),
    "error outcome": (200, b'{"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "x"}]}'),
    "empty transaction-response": (200, b'{"resourceType": "Bundle", "type": "transaction-response", "entry": []}'),
    "string issue": (500, b'{"resourceType": "OperationOutcome", "issue": "boom"}'),
    "malformed issues": (422, b'{"resourceType": "OperationOutcome", "issue": [1, null, {"details": "x"}]}'),
}


class FlakyServer(LoopbackServer):
    """A FHIR-shaped HTTP/1.1 server. GET answers a CapabilityStatement; a write is answered "ok",
    "503", "400", "slow" (after the client has given up), "drop" (connection closed), "trickle" (a
    200 whose body comes a byte every 0.05 s), "bad gzip" (a body that does not decode), "bad status
    line", or one of the MISBEHAVIOURS. It keeps the writes it acknowledged, in the order it
    acknowledged them."""

    def __init__(self, failure_rate: float = 0.0, kinds: tuple[str, ...] = ("503", "slow", "drop"), seed: int = 1):
        super().__init__(failure_rate, kinds, seed)
        self.acknowledged: list[tuple[str, str, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if method == "GET":
                    await self._reply(writer, 200, orjson.dumps({"resourceType": "CapabilityStatement"}))
                    continue
                action = self.answer()
                if action == "drop":
                    writer.close()
                    return
                if action == "slow":
                    await asyncio.sleep(SLOW_S)
                    writer.close()
                    return
                if action == "trickle":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    for _ in range(100000):
                        writer.write(b" ")
                        await writer.drain()
                        await asyncio.sleep(0.05)
                if action == "bad status line":
                    writer.write(b"HTTP/1.1 two hundred\r\n\r\n")
                    await writer.drain()
                    writer.close()
                    return
                if action == "ok":
                    self.acknowledged.append((method, path.removeprefix("/fhir").lstrip("/"), body))
                    await self._reply(writer, 200, orjson.dumps(valid_answer(method, body)))
                elif action == "bad gzip":
                    await self._reply(writer, 200, b"not gzip at all", b"Content-Encoding: gzip\r\n")
                elif action in MISBEHAVIOURS:
                    await self._reply(writer, *MISBEHAVIOURS[action])
                else:
                    await self._reply(writer, int(action), orjson.dumps({"resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "exception", "diagnostics": f"injected {action}"}]}))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, data: bytes, extra: bytes = b"") -> None:
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/fhir+json\r\n"
                     f"Content-Length: {len(data)}\r\n".encode() + extra + b"\r\n" + data)
        await writer.drain()


class FlakyMllpListener(LoopbackServer):
    """An HL7v2 listener speaking MLLP: a message is answered with an ACK (MSA|AA), a NAK that asks
    to send again later ("AR"), or the connection is dropped ("drop"). It keeps the messages it
    accepted, in order."""

    def __init__(self, failure_rate: float = 0.0, kinds: tuple[str, ...] = ("AR", "drop"), seed: int = 2):
        super().__init__(failure_rate, kinds, seed)
        self.accepted: list[list[str]] = []  # each message's segments

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while frame := await reader.readuntil(b"\x1c\r"):
                segments = frame.strip(b"\x0b\x1c\r").decode().split("\r")
                control_id = segments[0].split("|")[9]
                action = self.answer()
                if action == "drop":
                    writer.close()
                    return
                if action == "ok":
                    self.accepted.append(segments)
                ack = f"MSH|^~\\&|TEST|TEST|||20250101||ACK|{control_id}|P|2.5.1\rMSA|{'AA' if action == 'ok' else action}|{control_id}"
                writer.write(b"\x0b" + ack.encode() + b"\x1c\r")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def fast_options(url: str, retries: int, timeout: float = CLIENT_TIMEOUT_S) -> StreamOptions:
    return StreamOptions(url, speed=None, rate=0, in_flight=8, retries=retries, timeout=timeout, backoff=0.01)


# A server's misbehaviour is told apart from a late "ok" only with time to spare: on a loaded machine
# an answer can take longer than CLIENT_TIMEOUT_S, and a late "ok" the server counted is no failure
PATIENT_TIMEOUT_S, TRICKLE_TIMEOUT_S = 5.0, 1.0


SCENARIO = StreamScenario(hours=4, seed=3)


@pytest.fixture(scope="module")
def flaky_run(tmp_path_factory: pytest.TempPathFactory):
    """Four simulated hours through a server that fails 40% of writes; one retry per request."""
    with FlakyServer(failure_rate=0.4).running() as server:
        run = run_stream(SCENARIO, fast_options(server.url, retries=1))
    dead_letter = tmp_path_factory.mktemp("flaky") / "dead-letter.ndjson"
    write_dead_letter(run, dead_letter)
    return run, server, [orjson.loads(line) for line in dead_letter.read_bytes().splitlines()]


def test_every_request_is_acknowledged_or_dead_lettered(flaky_run):
    run, server, dead = flaky_run
    everything = {i.number: i for i in interactions(Hospital(SCENARIO))}
    dead_numbers = {line["number"] for line in dead}
    assert run.stats.submitted == len(everything)
    assert run.stats.acknowledged + len(dead) == len(everything)
    assert run.stats.acknowledged > 0 and dead, "the injected failure rate should leave some of each"
    stored = {(method, url, body) for method, url, body in server.acknowledged}
    for number, interaction in everything.items():
        request = interaction.request
        sent = (request.method, request.url, request.body) in stored
        assert sent != (number in dead_numbers), (number, interaction.kind)


def test_dead_letters_say_why_and_hold_the_request(flaky_run):
    _, _, dead = flaky_run
    reasons = " ".join(line["reason"] for line in dead)
    for failure in ("HTTP 503: error: injected 503", "timeout", "connection failed"):
        assert failure in reasons
    for line in dead:
        assert line["attempts"] == 2 and line["reason"].startswith("gave up after 2 attempt(s)")
        assert line["method"] in ("PUT", "POST") and isinstance(line["body"], dict)


def test_summary_counts_add_up(flaky_run):
    run, server, dead = flaky_run
    requests = stream_summary(run)["requests"]
    assert requests["acknowledged"] + requests["dead_lettered"] == requests["submitted"]
    assert requests["attempts"] == requests["submitted"] + requests["retries"]
    assert requests["attempts"] == server.writes
    assert sum(requests["errors"].values()) == requests["attempts"] - requests["acknowledged"]
    assert sum(requests["acknowledged_by_kind"].values()) == requests["acknowledged"]


def test_a_patients_encounter_updates_arrive_in_order(flaky_run):
    _, server, _ = flaky_run
    seen: dict[str, list[str]] = defaultdict(list)
    for method, url, body in server.acknowledged:
        if url.startswith("Encounter/"):
            seen[url].append(orjson.loads(body)["status"])
    assert seen
    for url, statuses in seen.items():
        ranks = [ENCOUNTER_STATUSES.index(s) for s in statuses]
        assert ranks == sorted(ranks), (url, statuses)


def test_a_rejected_request_is_not_retried():
    with FlakyServer(failure_rate=1.0, kinds=("400",)).running() as server:
        run = run_stream(StreamScenario(hours=1, seed=3), fast_options(server.url, retries=3))
    assert run.stats.acknowledged == 0 and run.stats.retries == 0
    assert server.writes == run.stats.submitted == len(run.stats.undelivered)


def test_ctrl_c_stops_the_stream_with_a_summary(tmp_path):
    """A run meant to last minutes, interrupted after its first requests: exit 130, summary written,
    every request sent so far acknowledged or dead-lettered."""
    with FlakyServer(failure_rate=0.2, kinds=("503", "slow")).running() as server:
        command = [str(Path(sys.executable).with_name("trajsim")), "stream", "--server", server.url, "--speed", "600",
                   "--hours", "48", "--timeout", "0.5", "--out", str(tmp_path), "--no-dashboard"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env={**os.environ, "COLUMNS": "200"})
        deadline = time.monotonic() + 60
        while server.writes < 20 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    text = output.decode()
    assert process.returncode == 130, text
    assert "Stopped by Ctrl-C" in text and "Traceback" not in text
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    requests = summary["requests"]
    assert summary["interrupted"] and summary["simulated_hours"] < 48
    assert requests["submitted"] > 0
    assert requests["acknowledged"] + requests["dead_lettered"] == requests["submitted"]
    dead = (tmp_path / "dead-letter.ndjson").read_bytes().splitlines()
    assert len(dead) == requests["dead_lettered"]


def test_adt_messages_over_mllp_are_acknowledged_or_dead_lettered_in_order(tmp_path):
    with FlakyServer().running() as server, FlakyMllpListener(failure_rate=0.3).running() as listener:
        options = replace(fast_options(server.url, retries=1), mllp=f"127.0.0.1:{listener.port}")
        run = run_stream(SCENARIO, options)
    adt = run.adt_stats
    feed = AdtFeed(SCENARIO, "TEST")
    expected = Counter(m.kind for i in interactions(Hospital(SCENARIO)) if (m := feed.message(i)) is not None)
    assert run.stats.acknowledged == run.stats.submitted  # the FHIR side is unaffected
    assert adt.submitted == sum(expected.values())
    assert adt.acknowledged + len(adt.undelivered) == adt.submitted and adt.undelivered
    assert adt.acknowledged == len(listener.accepted)
    write_dead_letter(run, tmp_path / "dead-letter.ndjson")
    dead = [orjson.loads(line) for line in (tmp_path / "dead-letter.ndjson").read_bytes().splitlines()]
    assert [line["channel"] for line in dead] == ["hl7v2"] * len(adt.undelivered)
    assert all(line["body"].startswith("MSH|") for line in dead)
    order = ["A04", "A08", "A02", "A01", "A03"]
    events_by_visit: dict[str, list[str]] = defaultdict(list)
    for segments in listener.accepted:
        fields = {segment[:3]: segment.split("|") for segment in segments if segment}
        assert fields["MSH"][8].startswith("ADT^") and fields["PID"][3].endswith("^^^stream-hospital-3^MR")
        events_by_visit[fields["PV1"][19]].append(fields["EVN"][1])
    assert len({fields.split("|")[9] for segments in listener.accepted for fields in segments[:1]}) == adt.acknowledged
    for visit, events in events_by_visit.items():
        assert [order.index(e) for e in events] == sorted(order.index(e) for e in events), (visit, events)


@pytest.mark.parametrize("kind, reason", [
    ("garbage", "invalid answer: answered 2xx but not with JSON"),
    ("huge", "answer too large: more than 1,048,576 bytes"),
    ("wrong resource", "invalid answer: answered 2xx"),
    ("error outcome", "invalid answer: answered 2xx"),
    ("empty transaction-response", "invalid answer: answered"),
    ("string issue", "HTTP 500: error: boom"),
    ("malformed issues", "HTTP 422: error: 1"),
    ("trickle", f"timeout: no complete answer within {TRICKLE_TIMEOUT_S} s"),
    ("bad gzip", "connection failed: DecodingError"),
    ("bad status line", "connection failed: RemoteProtocolError"),
])
def test_a_misbehaving_server_is_not_taken_for_acknowledgement_and_the_counts_add_up(tmp_path, kind, reason):
    scenario = StreamScenario(hours=1, seed=3)
    timeout = TRICKLE_TIMEOUT_S if kind == "trickle" else PATIENT_TIMEOUT_S
    with FlakyServer(failure_rate=0.5, kinds=(kind,)).running() as server:
        run = run_stream(scenario, fast_options(server.url, retries=1, timeout=timeout))
    stats = run.stats
    assert stats.submitted == len(list(interactions(Hospital(scenario))))
    assert stats.acknowledged == len(server.acknowledged) > 0
    assert stats.acknowledged + len(stats.undelivered) == stats.submitted and stats.undelivered
    assert all(reason in item.reason for item in stats.undelivered), {item.reason for item in stats.undelivered}
    requests = stream_summary(run)["requests"]
    assert requests["acknowledged"] + requests["dead_lettered"] == requests["submitted"]
    write_dead_letter(run, tmp_path / "dead-letter.ndjson")
    assert len((tmp_path / "dead-letter.ndjson").read_bytes().splitlines()) == len(stats.undelivered)


def trajsim_stream(server: str, out: Path, *arguments: str) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("trajsim")), "stream", "--server", server, "--out", str(out),
               "--no-dashboard", *arguments]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "COLUMNS": "200"})


def test_sigterm_against_a_trickling_server_stops_within_5_s_with_a_summary(tmp_path):
    """What `timeout`, systemd or Kubernetes do: every answer is trickling in when SIGTERM comes."""
    with FlakyServer(failure_rate=1.0, kinds=("trickle",)).running() as server:
        process = trajsim_stream(server.url, tmp_path, "--rate", "0", "--hours", "48", "--timeout", "60")
        deadline = time.monotonic() + 60
        while server.writes < 8 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        output, _ = process.communicate(timeout=30)
        stopped_in = time.monotonic() - signalled
    text = output.decode()
    assert process.returncode == 143, text
    assert stopped_in < 5.0, stopped_in
    assert "Stopped by SIGTERM" in text and "Traceback" not in text
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    requests = summary["requests"]
    assert summary["interrupted"] and summary["stopped_by"] == "SIGTERM"
    assert requests["submitted"] >= 8 and requests["acknowledged"] == 0
    assert requests["dead_lettered"] == requests["submitted"]
    assert len((tmp_path / "dead-letter.ndjson").read_bytes().splitlines()) == requests["dead_lettered"]
    assert "stopped by SIGTERM" in (tmp_path / "summary.html").read_text()


class SilentMllpListener(LoopbackServer):
    """An HL7v2 listener that accepts connections and reads messages but never answers one."""

    def __init__(self) -> None:
        super().__init__(0.0, ())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            self.writes += 1
        writer.close()


def fhir_write_times(scenario: StreamScenario, options: StreamOptions):
    """The run, and the wall times at which an instant in-process FHIR server got each write."""
    times: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"resourceType": "CapabilityStatement"})
        times.append(time.perf_counter())
        return httpx.Response(200, json=valid_answer(request.method, request.content))

    return run_stream(scenario, options, transport=httpx.MockTransport(answer)), times


def test_an_hl7_listener_outage_does_not_slow_the_fhir_stream():
    scenario = StreamScenario(hours=4, seed=3)  # 135 FHIR requests, 2 s at 60/s
    options = StreamOptions("http://stub/fhir", speed=None, rate=60, retries=1, timeout=0.2, backoff=0.01)
    _, alone = fhir_write_times(scenario, options)
    with SilentMllpListener().running() as listener:
        run, beside_outage = fhir_write_times(scenario, replace(options, mllp=f"127.0.0.1:{listener.port}"))
    rates = [(len(times) - 1) / (times[-1] - times[0]) for times in (alone, beside_outage)]
    assert len(alone) == len(beside_outage) == run.stats.acknowledged == run.stats.submitted
    assert abs(rates[1] - rates[0]) <= 0.1 * rates[0], rates
    adt = run.adt_stats
    assert adt.acknowledged == 0 and adt.submitted == len(adt.undelivered) > 8
    full = [item for item in adt.undelivered if "backlog was full" in item.reason]
    assert full and all(item.attempts == 0 for item in full)
