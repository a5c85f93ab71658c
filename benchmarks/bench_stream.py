"""Sustained request rate of `trajsim stream` against a real FHIR server (SEKMET) on loopback, by
requests in flight; the sender's own ceiling (an in-process server that answers instantly); how
closely `--rate` holds a target; and how fast the hospital simulation makes requests.

    python benchmarks/bench_stream.py [SIMULATED_HOURS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fhir_server import sekmet_server  # noqa: E402
from trajsim.engine.hospital import Hospital  # noqa: E402
from trajsim.scenario import StreamScenario  # noqa: E402
from trajsim.stream.messages import interactions  # noqa: E402
from trajsim.stream.run import StreamOptions, StreamRun, run_stream  # noqa: E402

IN_FLIGHT = (1, 4, 8, 16)
TARGET_RATE = 40.0


def report(label: str, run: StreamRun) -> None:
    stats = run.stats
    latency = stats.latency_percentiles()
    print(f"{label:<34} {stats.acknowledged:>6,} acknowledged  {stats.acknowledged / run.seconds:>8,.1f} req/s  "
          f"latency p50 {latency['p50']:>6.1f} ms  p99 {latency['p99']:>7.1f} ms  dead-lettered {len(stats.undelivered)}")


def main(hours: float = 16.0) -> None:
    scenario = StreamScenario(hours=hours)
    started = time.perf_counter()
    requests = sum(1 for _ in interactions(Hospital(scenario)))
    seconds = time.perf_counter() - started
    print(f"hospital simulation                {requests:,} requests for {hours:g} simulated hours in {seconds:.2f} s "
          f"({requests / seconds:,.0f} requests/s)")

    def instant(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []})

    report("in-process server, 16 in flight", run_stream(
        scenario, StreamOptions("http://stub/fhir", speed=None, rate=0, in_flight=16),
        transport=httpx.MockTransport(instant)))

    with tempfile.TemporaryDirectory() as scratch, sekmet_server(Path(scratch)) as url:
        for in_flight in IN_FLIGHT:
            report(f"SEKMET loopback, {in_flight:>2} in flight", run_stream(
                StreamScenario(hours=hours, seed=in_flight), StreamOptions(url, speed=None, rate=0, in_flight=in_flight)))
        paced = run_stream(StreamScenario(hours=hours / 2, seed=99), StreamOptions(url, speed=None, rate=TARGET_RATE))
        report(f"SEKMET loopback, --rate {TARGET_RATE:g}", paced)
        print(f"  achieved {paced.stats.acknowledged / paced.seconds:.1f} of {TARGET_RATE:g} req/s target "
              f"({paced.stats.acknowledged / paced.seconds / TARGET_RATE:.0%})")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 16.0)
