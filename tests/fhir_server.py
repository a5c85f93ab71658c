"""A real FHIR R4 server on loopback for tests and benchmarks: SEKMET (`pip install sekmet-fhir`),
started as a subprocess on a free port with its database in a scratch folder, and stopped after."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def sekmet_server(workdir: Path) -> Iterator[str]:
    """Yields the FHIR base URL of a fresh, empty server; its log is `workdir/server.log`."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    workdir.mkdir(parents=True, exist_ok=True)
    # Its order simulator would answer our MedicationRequests with resources of its own; the traffic
    # log would hold every bundle twice over.
    (workdir / "settings.yaml").write_text(
        f"base_url: {base_url}\nhost: 127.0.0.1\nport: {port}\ndata_dir: {workdir / 'data'}\n"
        "simulator: {enabled: false}\nlog_inbound: false\n")
    sekmet = Path(sys.executable).with_name("sekmet")
    with open(workdir / "server.log", "wb") as log:
        server = subprocess.Popen([str(sekmet), "serve", "--config", str(workdir / "settings.yaml")],
                                  cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_ready(server, base_url, workdir / "server.log")
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_until_ready(server: subprocess.Popen, base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sekmet exited with code {server.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/metadata", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"sekmet did not answer {base_url}/metadata within {STARTUP_TIMEOUT_S:.0f} s")
