"""Load generated FHIR into a server: every transaction bundle POSTed to the server's base URL, a few
at a time, with bounded retries for the failures that are the network's or the server's fault
(5xx, 429, timeouts, dropped connections) and none for a 4xx, where the server has judged the
bundle and sending it again would only be judged the same way. With `batch`, each patient goes as
batch bundles instead (`split.batch_parts`): the server takes or refuses each entry on its own, so
one refused entry costs only itself, and every part is sent whatever became of the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from fhir_export.server import FhirServer, ServerAddressError, fhir_server
from fhir_export.split import batch_parts, split_bundle

BUNDLE_FOLDERS = ("fhir/bundles", "bundles")  # `trajsim generate`'s layout, from its root or its fhir/ folder
LOADABLE_TYPES = ("transaction", "batch")
MAX_BACKOFF_S = 10.0
FHIR_JSON = "application/fhir+json"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a transaction-response of a large patient is a few MB at most


class PushError(Exception):
    """A mistake in what the user asked for (no bundles, a server that cannot be reached)."""


@dataclass
class BundleOutcome:
    """How the server answered one bundle file."""

    path: Path
    accepted: bool
    status: int | None = None  # HTTP status of the last attempt; None when no answer came
    resources: int = 0  # entries the server accepted
    attempts: int = 0
    diagnostics: str = ""  # why it was not accepted, in the server's words where it gave any


@dataclass
class PushSummary:
    server: str  # the base URL without credentials
    outcomes: list[BundleOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accepted(self) -> list[BundleOutcome]:
        return [o for o in self.outcomes if o.accepted]

    @property
    def rejected(self) -> list[BundleOutcome]:
        return [o for o in self.outcomes if not o.accepted]

    @property
    def retried(self) -> int:
        """Attempts beyond the first, over all bundles."""
        return sum(max(o.attempts - 1, 0) for o in self.outcomes)


def find_bundles(directory: Path) -> list[Path]:
    """The bundle files under a `trajsim generate` output folder, or directly in `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PushError(f"{directory}: {'not a folder' if directory.exists() else 'no such folder'}")
    folder = next((directory / sub for sub in BUNDLE_FOLDERS if (directory / sub).is_dir()), directory)
    bundles = sorted(p for p in folder.glob("*.json") if p.name != "manifest.json" and not p.name.startswith("."))
    if not bundles and any(folder.glob("*.ndjson")):
        raise PushError(f"{directory}: holds bulk NDJSON, which push does not post (a server loads it with its own "
                        "bulk $import); push the transaction bundles instead: `trajsim generate --format bundle` "
                        "writes them to fhir/bundles")
    if not bundles:
        raise PushError(f"{directory}: no FHIR bundles (*.json) found in it or in its "
                        f"{' or '.join(BUNDLE_FOLDERS)} folder; generate some with `trajsim generate`")
    return bundles


def operation_outcome_text(body: bytes) -> str:
    """The issues of a FHIR OperationOutcome as one line (severity, diagnostics, where), or the start
    of the body when the server answered with something else."""
    try:
        outcome = orjson.loads(body)
    except orjson.JSONDecodeError:
        outcome = None
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        text = body.decode("utf-8", "replace").strip()
        return text[:300] or "(empty response)"
    return _issues(outcome)


def _issues(outcome: dict) -> str:
    """One line for the issues of an OperationOutcome, however malformed its parts are."""
    issues = []
    listed = outcome.get("issue")
    for issue in listed if isinstance(listed, list) else [listed]:
        if not isinstance(issue, dict):
            issues.append(f"error: {str(issue)[:300]}")
            continue
        details = issue.get("details")
        words = issue.get("diagnostics") or (details.get("text") if isinstance(details, dict) else None) \
            or issue.get("code", "")
        where = issue.get("expression") or issue.get("location") or []
        where = ", ".join(map(str, where)) if isinstance(where, list) else str(where)
        issues.append(f"{issue.get('severity', 'error')}: {words}" + (f" [{where}]" if where else ""))
    return "; ".join(i for i in issues if i) or "(OperationOutcome without issues)"


def judge_response(body: bytes, bundle_type: str, entries: int) -> tuple[bool, int, str]:
    """Whether a 2xx answer to a bundle of `entries` entries accepts every entry: it must be the
    matching transaction-response or batch-response with one entry per request, each with a 2xx
    status. Returns (accepted, entries answered 2xx, what is wrong in the server's words)."""
    expected = f"{bundle_type}-response"
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, 0, f"answered 2xx but not with JSON (starts {body[:80]!r})"
    if not isinstance(answer, dict) or answer.get("resourceType") != "Bundle" or answer.get("type") != expected:
        return False, 0, f"answered 2xx but not with a {expected} Bundle"
    listed = answer.get("entry", [])
    if not isinstance(listed, list) or len(listed) != entries:
        count = len(listed) if isinstance(listed, list) else "no list of"
        return False, 0, f"answered with {count} entries for a bundle of {entries}"
    refused = []
    for index, entry in enumerate(listed):
        response = entry.get("response") if isinstance(entry, dict) else None
        status = str(response.get("status", "")) if isinstance(response, dict) else ""
        if not status.startswith("2"):
            outcome = response.get("outcome") if isinstance(response, dict) else None
            said = f" ({_issues(outcome)})" if isinstance(outcome, dict) else ""
            refused.append(f"entry {index}: {status or 'no response status'}{said}")
    return not refused, len(listed) - len(refused), "; ".join(refused)


def _loadable(data: bytes) -> dict | str:
    """The bundle, or why the file cannot be posted as it is (only transaction and batch bundles can)."""
    try:
        bundle = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return "not a FHIR Bundle"
    if bundle.get("type") not in LOADABLE_TYPES:
        return f"a {bundle.get('type')!r} bundle; only transaction or batch bundles can be posted to a server"
    if not isinstance(bundle.get("entry", []), list):
        return "its entry is not a list"
    return bundle


def retry_delay(response: httpx.Response | None, attempt: int, backoff: float) -> float:
    """Seconds to wait before the next attempt: the server's Retry-After when it sent one, otherwise
    exponential backoff; both capped so a run ends in bounded time."""
    header = response.headers.get("retry-after", "") if response is not None else ""
    delay = float(header) if header.isdigit() else backoff * 2 ** attempt
    return min(delay, MAX_BACKOFF_S)


async def _post(client: httpx.AsyncClient, server: str, path: Path, max_entries: int | None, batch: bool,
                retries: int, backoff: float) -> BundleOutcome:
    """Post one bundle file, as ordered parts of at most `max_entries` entries when given, as batches
    when `batch`; it is accepted when every part is. A refused transaction stops the rest (they may
    reference it); batch parts are all sent, and the refusals of each are listed."""
    outcome = BundleOutcome(path, accepted=False)
    try:
        data = path.read_bytes()
    except OSError as exc:
        outcome.diagnostics = f"cannot be read ({exc.strerror})"
        return outcome
    bundle = _loadable(data)
    if isinstance(bundle, str):
        outcome.diagnostics = bundle
        return outcome
    pieces = batch_parts(bundle, max_entries) if batch else split_bundle(bundle, max_entries)
    refusals = []
    for number, piece in enumerate(pieces, 1):
        body = data if piece is bundle else orjson.dumps(piece)
        accepted, reported = await _post_part(client, server, body, piece, retries, backoff, outcome)
        outcome.resources += reported
        if not accepted:
            refusals.append(f"part {number} of {len(pieces)}: {outcome.diagnostics}" if len(pieces) > 1
                            else outcome.diagnostics)
            if not batch:
                break
    outcome.diagnostics = "; ".join(refusals)
    outcome.accepted = not refusals
    return outcome


async def _post_part(client: httpx.AsyncClient, server: str, body: bytes, bundle: dict, retries: int,
                     backoff: float, outcome: BundleOutcome) -> tuple[bool, int]:
    """POST one bundle with bounded retries; returns (accepted, entries the server reported on) and
    leaves the last status and the server's words on `outcome`."""
    deadline = client.timeout.read
    for attempt in range(retries + 1):
        outcome.attempts += 1
        response = None
        try:
            response = await exchange(client, "POST", server, body, deadline)
        except NoAnswer as exc:
            outcome.status, outcome.diagnostics = None, str(exc)
        else:
            outcome.status = response.status_code
            if response.is_success:
                accepted, reported, outcome.diagnostics = judge_response(
                    response.content, bundle["type"], len(bundle.get("entry", [])))
                return accepted, reported
            outcome.diagnostics = operation_outcome_text(response.content)
            if response.status_code < 500 and response.status_code != 429:
                return False, 0
        if attempt < retries:
            await asyncio.sleep(retry_delay(response, attempt, backoff))
    outcome.diagnostics = f"gave up after {attempt + 1} attempts: {outcome.diagnostics}"
    return False, 0


class NoAnswer(Exception):
    """No complete answer came: `kind` is "timeout", "connection failed" or "answer too large" (a
    failure of the network or the server, worth another try); the message says more."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class _TooLarge(Exception):
    pass


async def exchange(client: httpx.AsyncClient, method: str, url: str, data: bytes, deadline: float,
                   limit: int = MAX_RESPONSE_BYTES) -> httpx.Response:
    """Send one request and read its whole answer within `deadline` seconds, however slowly the
    server trickles it, holding at most `limit` bytes of it; raises NoAnswer otherwise."""
    try:
        return await asyncio.wait_for(_bounded_exchange(client, method, url, data, limit), deadline)
    except (httpx.TimeoutException, TimeoutError):
        raise NoAnswer("timeout", f"no complete answer within {deadline} s") from None
    except _TooLarge:
        raise NoAnswer("answer too large", f"more than {limit:,} bytes") from None
    except httpx.HTTPError as exc:  # dropped connections, but also a garbled status line or encoding
        raise NoAnswer("connection failed", f"{exc.__class__.__name__}: {exc}") from None


async def _bounded_exchange(client: httpx.AsyncClient, method: str, url: str, data: bytes,
                            limit: int) -> httpx.Response:
    async with client.stream(method, url, content=data) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _TooLarge
    decoded = [(k, v) for k, v in response.headers.raw if k.lower() not in (b"content-encoding", b"content-length")]
    return httpx.Response(response.status_code, headers=decoded, content=bytes(body))


async def _push(paths: list[Path], server: FhirServer, max_entries: int | None, batch: bool, concurrency: int,
                retries: int,
                timeout: float, backoff: float, on_bundle: Callable[[BundleOutcome], None] | None,
                transport: httpx.AsyncBaseTransport | None) -> list[BundleOutcome]:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal", **server.headers}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, auth=server.auth, timeout=timeout, limits=limits,
                                 transport=transport) as client:
        await check_server(client, server.base)
        slots = asyncio.Semaphore(concurrency)

        async def one(path: Path) -> BundleOutcome:
            async with slots:
                outcome = await _post(client, server.base, path, max_entries, batch, retries, backoff)
            if on_bundle is not None:
                on_bundle(outcome)
            return outcome

        return list(await asyncio.gather(*(one(path) for path in paths)))


async def check_server(client: httpx.AsyncClient, server: str) -> None:
    """Fail early, naming the URL, when nothing FHIR answers there."""
    url = f"{server}/metadata"
    try:
        response = await client.get(url)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise PushError(f"cannot reach the FHIR server at {server} ({exc.__class__.__name__}: {exc}); "
                        f"is it running, and is the URL its FHIR base?") from None
    if response.status_code != 200:
        raise PushError(f"{url} answered HTTP {response.status_code}, not a CapabilityStatement; "
                        f"is {server} the server's FHIR base URL?")


def push_bundles(paths: list[Path], server: str, *, token: str | None = None, max_entries: int | None = None,
                 batch: bool = False, concurrency: int = 4, retries: int = 3,
                 timeout: float = 60.0, backoff: float = 0.5, on_bundle: Callable[[BundleOutcome], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> PushSummary:
    """POST each bundle file to `server` (a FHIR base URL, user-info in it sent as basic auth, a
    `token` as bearer auth), as batches when `batch`; returns every bundle's outcome, in the order of `paths`. Raises
    PushError when the server cannot be reached at all."""
    if concurrency < 1 or retries < 0 or timeout <= 0:
        raise PushError("--concurrency must be at least 1, --retries at least 0 and --timeout above 0")
    if max_entries is not None and max_entries < 1:
        raise PushError(f"--max-entries must be at least 1, not {max_entries}")
    try:
        address = fhir_server(server, token)
    except ServerAddressError as exc:
        raise PushError(str(exc)) from None
    started = time.perf_counter()
    outcomes = asyncio.run(_push(paths, address, max_entries, batch, concurrency, retries, timeout, backoff, on_bundle,
                                 transport))
    return PushSummary(address.base, outcomes, time.perf_counter() - started)
