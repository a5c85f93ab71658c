"""Load generated FHIR into a server: every transaction bundle POSTed to the server's base URL, a few
at a time, with bounded retries for the failures that are the network's or the server's fault
(5xx, 429, timeouts, dropped connections) and none for a 4xx, where the server has judged the
bundle and sending it again would only be judged the same way.
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

BUNDLE_FOLDERS = ("fhir/bundles", "bundles")  # `trajsim generate`'s layout, from its root or its fhir/ folder
LOADABLE_TYPES = ("transaction", "batch")
MAX_BACKOFF_S = 10.0
FHIR_JSON = "application/fhir+json"


class PushError(Exception):
    """A mistake in what the user asked for (no bundles, a server that cannot be reached)."""


@dataclass
class BundleOutcome:
    """How the server answered one bundle file."""

    path: Path
    accepted: bool
    status: int | None = None  # HTTP status of the last attempt; None when no answer came
    resources: int = 0  # entries the server reported on (accepted bundles)
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
    issues = []
    for issue in outcome.get("issue", []):
        words = issue.get("diagnostics") or issue.get("details", {}).get("text") or issue.get("code", "")
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        issues.append(f"{issue.get('severity', 'error')}: {words}" + (f" [{where}]" if where else ""))
    return "; ".join(issues) or "(OperationOutcome without issues)"


def _refused_entries(body: bytes) -> tuple[int, str]:
    """How many entries a transaction-response or batch-response reports, and what the server said
    about those it did not accept (a batch is answered 200 even when some of its entries fail)."""
    try:
        entries = orjson.loads(body).get("entry", [])
    except (orjson.JSONDecodeError, AttributeError):
        return 0, ""
    refused = []
    for index, entry in enumerate(entries):
        answer = entry.get("response") or {}
        if not str(answer.get("status", "200")).startswith("2"):
            said = f" ({_issues(answer['outcome'])})" if isinstance(answer.get("outcome"), dict) else ""
            refused.append(f"entry {index}: {answer['status']}{said}")
    return len(entries), "; ".join(refused)


def _loadable(data: bytes) -> str | None:
    """Why the file cannot be posted as it is, or None when it is a transaction or batch bundle."""
    try:
        bundle = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return "not a FHIR Bundle"
    if bundle.get("type") not in LOADABLE_TYPES:
        return f"a {bundle.get('type')!r} bundle; only transaction or batch bundles can be posted to a server"
    return None


def retry_delay(response: httpx.Response | None, attempt: int, backoff: float) -> float:
    """Seconds to wait before the next attempt: the server's Retry-After when it sent one, otherwise
    exponential backoff; both capped so a run ends in bounded time."""
    header = response.headers.get("retry-after", "") if response is not None else ""
    delay = float(header) if header.isdigit() else backoff * 2 ** attempt
    return min(delay, MAX_BACKOFF_S)


async def _post(client: httpx.AsyncClient, server: str, path: Path, retries: int, backoff: float) -> BundleOutcome:
    outcome = BundleOutcome(path, accepted=False)
    try:
        data = path.read_bytes()
    except OSError as exc:
        outcome.diagnostics = f"cannot be read ({exc.strerror})"
        return outcome
    problem = _loadable(data)
    if problem is not None:
        outcome.diagnostics = problem
        return outcome
    for attempt in range(retries + 1):
        outcome.attempts = attempt + 1
        response = None
        try:
            response = await client.post(server, content=data)
        except httpx.TimeoutException:
            outcome.status, outcome.diagnostics = None, f"no answer within {client.timeout.read} s"
        except httpx.TransportError as exc:
            outcome.status, outcome.diagnostics = None, f"connection failed ({exc.__class__.__name__}: {exc})"
        else:
            outcome.status = response.status_code
            if response.is_success:
                outcome.resources, outcome.diagnostics = _refused_entries(response.content)
                outcome.accepted = not outcome.diagnostics
                return outcome
            outcome.diagnostics = operation_outcome_text(response.content)
            if response.status_code < 500 and response.status_code != 429:
                return outcome
        if attempt < retries:
            await asyncio.sleep(retry_delay(response, attempt, backoff))
    outcome.diagnostics = f"gave up after {outcome.attempts} attempts: {outcome.diagnostics}"
    return outcome


async def _push(paths: list[Path], server: FhirServer, concurrency: int, retries: int, timeout: float,
                backoff: float, on_bundle: Callable[[BundleOutcome], None] | None,
                transport: httpx.AsyncBaseTransport | None) -> list[BundleOutcome]:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal", **server.headers}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, auth=server.auth, timeout=timeout, limits=limits,
                                 transport=transport) as client:
        await check_server(client, server.base)
        slots = asyncio.Semaphore(concurrency)

        async def one(path: Path) -> BundleOutcome:
            async with slots:
                outcome = await _post(client, server.base, path, retries, backoff)
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


def push_bundles(paths: list[Path], server: str, *, token: str | None = None, concurrency: int = 4, retries: int = 3,
                 timeout: float = 60.0, backoff: float = 0.5, on_bundle: Callable[[BundleOutcome], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> PushSummary:
    """POST each bundle file to `server` (a FHIR base URL, user-info in it sent as basic auth, a
    `token` as bearer auth); returns every bundle's outcome, in the order of `paths`. Raises
    PushError when the server cannot be reached at all."""
    if concurrency < 1 or retries < 0 or timeout <= 0:
        raise PushError("--concurrency must be at least 1, --retries at least 0 and --timeout above 0")
    try:
        address = fhir_server(server, token)
    except ServerAddressError as exc:
        raise PushError(str(exc)) from None
    started = time.perf_counter()
    outcomes = asyncio.run(_push(paths, address, concurrency, retries, timeout, backoff, on_bundle, transport))
    return PushSummary(address.base, outcomes, time.perf_counter() - started)
