"""`trajsim stream` plays a hospital against a real FHIR server (SEKMET on loopback): every request
is acknowledged and the server ends up holding each patient's ED visit as it finally stood. The
patients are engine patients whose records pass the rules, and what is sent is what `generate`'s
builder renders from their events. A surge shows in the summary as more arrivals and longer
waits; bad scenarios end in one sentence."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import simpy
from rich.console import Console
from typer.testing import CliRunner

from tests.browser import CHROMIUM, drawn_widths
from tests.fhir_server import free_port, sekmet_server
from tests.test_stream_resilience import valid_answer
from trajsim.cli import app
from trajsim.engine.capacity import CareUnit
from trajsim.engine.hospital import Hospital
from trajsim.rules import find_violations
from trajsim.events import events_frame
from trajsim.output import default_builder, fhir_namespace
from trajsim.knowledge import load_knowledge
from trajsim.scenario import StreamScenario, load_stream_scenario, presentations, with_overrides
from trajsim.stream.clock import Pacer
from trajsim.stream.dashboard import dashboard
from trajsim.stream.hl7v2 import AdtFeed
from trajsim.stream.messages import Interaction, interactions
from trajsim.stream.run import StreamOptions, run_stream
from trajsim.stream.sender import DeliveryStats
from trajsim.stream.summary import stream_summary, summary_html, write_dead_letter, write_summary

runner = CliRunner(env={"COLUMNS": "250"})
REPO = Path(__file__).resolve().parents[1]
HOURS, SEED = 3, 5


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory):
    """Three simulated hours streamed through the CLI, as fast as the server answers, to a server
    of this module's own (the session's shared one counts other tests' resources)."""
    out = tmp_path_factory.mktemp("stream")
    with sekmet_server(tmp_path_factory.mktemp("sekmet-stream")) as url:
        result = runner.invoke(app, ["stream", "--server", url, "--rate", "0", "--hours", str(HOURS),
                                     "--seed", str(SEED), "--out", str(out), "--no-dashboard"])
        yield url, out, result


def expected_requests():
    return list(interactions(Hospital(StreamScenario(hours=HOURS, seed=SEED))))


def last_sent(requests) -> dict[str, dict]:
    """Each resource as it was last sent (PUT on its own or inside a transaction), by Type/id."""
    state = {}
    for r in requests:
        body = orjson.loads(r.request.body)
        entries = [e["resource"] for e in body["entry"]] if r.request.method == "POST" else [body]
        state.update({f"{e['resourceType']}/{e['id']}": e for e in entries})
    return state


def count(url: str, resource_type: str, **params: str) -> int:
    response = httpx.get(f"{url}/{resource_type}", params={**params, "_summary": "count"}, timeout=30)
    response.raise_for_status()
    return response.json()["total"]


def test_every_request_is_acknowledged_by_the_server(streamed):
    _, out, result = streamed
    assert result.exit_code == 0, result.output
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["requests"]["submitted"] == summary["requests"]["acknowledged"] == len(expected_requests())
    assert summary["requests"]["dead_lettered"] == 0 and (out / "dead-letter.ndjson").read_bytes() == b""
    assert "<h1>trajsim stream: hospital</h1>" in (out / "summary.html").read_text()


def test_the_server_holds_every_patient_and_their_visit_as_it_last_stood(streamed):
    url, _, _ = streamed
    requests = expected_requests()
    kinds = Counter(r.kind for r in requests)
    visits_opened = Counter(r.kind for r in requests if r.request.url.startswith("Encounter/"))  # beside a minor's guardian
    state = last_sent(requests)
    types = Counter(path.split("/")[0] for path in state)
    assert count(url, "Patient") == types["Patient"] == kinds["register"]
    assert count(url, "Encounter") == types["Encounter"] == visits_opened["arrive"] + visits_opened["admit"]
    assert count(url, "Encounter", status="finished") == sum(
        e["status"] == "finished" for path, e in state.items() if path.startswith("Encounter/"))
    for resource_type in ("Observation", "Condition", "MedicationRequest", "DocumentReference"):
        assert count(url, resource_type) == types[resource_type] > 0, resource_type
    for path, encounter in state.items():
        if path.startswith("Encounter/"):
            stored = httpx.get(f"{url}/{path}", timeout=30).json()
            assert (stored["status"], stored["class"]["code"]) == (encounter["status"], encounter["class"]["code"]), path


def test_each_arrival_is_an_engine_patient_whose_record_passes_the_rules():
    hospital = Hospital(StreamScenario(hours=24, seed=SEED))
    steps = list(hospital.steps())
    events = [event for record in hospital.records for event in record.events]
    assert {s.record.subject_id for s in steps} == {r.subject_id for r in hospital.records}
    assert {e.code for e in events} >= {"TRAJSIM/visit/EMER", "TRAJSIM/visit/IMP", "TRAJSIM/visit_end"}
    assert find_violations(events_frame(events)).is_empty()


def test_what_is_sent_is_what_generate_renders_from_the_patients_events():
    """For each patient gone home within the window, every resource as last sent equals the
    resource `generate`'s builder writes from the patient's finished record."""
    scenario = StreamScenario(hours=HOURS, seed=SEED)
    hospital = Hospital(scenario)
    requests = list(interactions(hospital))
    registered = last_sent(r for r in requests if r.kind == "register")  # sent with urn:uuid links
    state = last_sent(r for r in requests if r.kind != "register")
    builder = default_builder(fhir_namespace(f"stream-{scenario.name}", scenario.seed))
    home = [r for r in hospital.records if r.events[-1].code == "TRAJSIM/visit_end"]
    assert home
    for record in home:
        batch = builder.build(record.events)
        batch.use_relative_references()
        for resource in batch.resources:
            path = f"{resource['resourceType']}/{resource['id']}"
            if path in registered:
                assert path not in state, path
            elif resource["resourceType"] != "Provenance":  # the record of a live stream is never complete
                # nor is it ever last updated: the receiving server stamps meta.lastUpdated itself
                meta = {k: v for k, v in resource.get("meta", {}).items() if k != "lastUpdated"}
                finished = {k: v for k, v in resource.items() if k != "meta"} | ({"meta": meta} if meta else {})
                assert state[path] == finished, path


def instant_server(seen: list[httpx.Request] | None = None, refuse: str = "") -> httpx.MockTransport:
    """An in-process FHIR server that answers every write at once as a server that stored it does,
    except writes whose URL starts with `refuse` (answered 400); `seen` collects every request."""
    def answer(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.method == "GET":
            return httpx.Response(200, json={"resourceType": "CapabilityStatement"})
        if refuse and request.url.path.removeprefix("/fhir/").startswith(refuse):
            return httpx.Response(400, json={"resourceType": "OperationOutcome", "issue": []})
        return httpx.Response(200, json=valid_answer(request.method, request.content))

    return httpx.MockTransport(answer)


def summary_of(scenario: StreamScenario, **options) -> dict:
    """The summary of a run against an instant in-process server."""
    options = StreamOptions("http://stub/fhir", **{"speed": None, "rate": 0, "in_flight": 32, **options})
    return stream_summary(run_stream(scenario, options, transport=instant_server()))


def test_a_surge_raises_arrivals_and_waits():
    scenario = load_stream_scenario(REPO / "scenarios" / "stream" / "ed_surge.toml")
    calm = with_overrides(scenario, "test", surges=[s for s in scenario.surges if s.name == "flu season"])
    surged, baseline = summary_of(scenario)["hospital"], summary_of(calm)["hospital"]
    pile_up = next(s for s in surged["surges"] if s["name"] == "highway pile-up")
    assert surged["arrivals"] > baseline["arrivals"]
    assert surged["door_to_room_minutes"]["mean"] > baseline["door_to_room_minutes"]["mean"]
    assert pile_up["during"]["arrivals_per_hour"] > 2 * pile_up["outside"]["arrivals_per_hour"]
    assert pile_up["during"]["door_to_room_minutes"]["mean"] > 2 * pile_up["outside"]["door_to_room_minutes"]["mean"]


def test_same_seed_same_requests():
    def requests(seed: int) -> list[tuple[float, str, str, bytes]]:
        return [(i.minute, i.request.method, i.request.url, i.request.body)
                for i in interactions(Hospital(StreamScenario(hours=2, seed=seed)))]

    assert requests(1) == requests(1)
    assert requests(1) != requests(2)


def test_nobody_presents_with_a_condition_too_young_for_it():
    birth_dates, onsets = {}, []
    for interaction in interactions(Hospital(StreamScenario(hours=48, seed=8))):
        body = orjson.loads(interaction.request.body)
        if interaction.kind == "register":
            patient = next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "Patient")
            birth_dates[f"Patient/{patient['id']}"] = date.fromisoformat(patient["birthDate"])
        elif interaction.request.url.startswith("Condition/"):
            onsets.append((body["subject"]["reference"], body["code"]["coding"][0]["code"], body["onsetDateTime"][:10]))
    youngest = {load_knowledge().conditions[c.condition].code.split("/")[1]: c.age_min for c in presentations().values()}
    assert onsets
    for patient, code, onset in onsets:
        age = (date.fromisoformat(onset) - birth_dates[patient]).days / 365.25
        assert age >= youngest[code] - 1 / 365, (code, age)


def test_speed_and_rate_set_when_requests_are_due():
    assert Pacer(speed=60).due(minute=30, index=99) == 30.0  # an hour a minute: 30 simulated minutes in 30 s
    assert Pacer(rate=20).due(minute=30, index=10) == 0.5
    assert Pacer(rate=0).due(minute=30, index=10) == 0.0


@pytest.mark.parametrize("toml, expected", [
    ("[capacity]\nbeds = 3\n", "capacity.beds: unknown field; allowed here: ed_beds, ward_beds, triage_nurses, "
                               "physicians, ward_occupancy"),
    ('[[surges]]\nname = "x"\nstart_hour = 1\nhours = 2\nmultiplier = 3\ncase_mix = ["zombie_bite"]\n',
     "surges[0].case_mix: unknown condition 'zombie_bite'; allowed: myocardial_infarction"),
    ("hours = -4\n", "hours: Input should be greater than 0 (got -4)"),
    ('[capacity]\ned_beds = "20"\n', "capacity.ed_beds: Input should be a valid integer (got '20')"),
    ("[arrivals]\nhourly = [1, 2]\n", "arrivals.hourly: Tuple should have at least 24 items"),
    ("hours = \n", "not valid TOML"),
])
def test_a_bad_scenario_exits_2_naming_the_file_and_field(tmp_path, toml, expected):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = runner.invoke(app, ["stream", "--scenario", str(path), "--server", "http://127.0.0.1:9/fhir"])
    assert result.exit_code == 2
    assert f"{path}: " in result.output and expected in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("arguments, expected", [
    (["--speed", "60", "--rate", "10"], "give either --speed or --rate, not both"),
    (["--in-flight", "0"], "--in-flight must be at least 1"),
    ([], "cannot reach the FHIR server at http://127.0.0.1:{port}/fhir"),
])
def test_bad_options_or_no_server_exit_2(tmp_path, arguments, expected):
    port = free_port()
    result = runner.invoke(app, ["stream", "--server", f"http://127.0.0.1:{port}/fhir", "--out", str(tmp_path),
                                 *arguments])
    assert result.exit_code == 2, result.output
    assert expected.format(port=port) in result.output and "Traceback" not in result.output


def test_a_care_unit_serves_by_priority_and_records_each_wait():
    env = simpy.Environment()
    beds = CareUnit(env, "ED beds", 1)
    served = []

    def patient(name: str, priority: int, arrive: float):
        yield env.timeout(arrive)
        with beds.request(priority=priority) as bed:
            yield bed
            served.append(name)
            yield env.timeout(10)

    for name, priority, arrive in (("first", 3, 0), ("routine", 4, 1), ("urgent", 2, 2)):
        env.process(patient(name, priority, arrive))
    env.run()
    assert served == ["first", "urgent", "routine"]
    assert sorted(beds.stats.waits) == [0, 8, 19] and beds.stats.longest_queue == 2
    assert beds.occupied == beds.queued == 0


@pytest.mark.parametrize("pacing", [{"speed": 36000.0, "rate": None}, {"rate": 0}])
def test_hours_1_streams_exactly_one_simulated_hour(pacing):
    """The window ends at its end, not at its last request (seed 6's is at 0.73 h)."""
    summary = summary_of(StreamScenario(hours=1, seed=6), **pacing)
    assert summary["simulated_hours"] == 1.0
    if "speed" in pacing:
        assert summary["wall_seconds"] >= 0.1  # one simulated hour at 36,000x


def test_the_summary_has_per_second_rates_and_latencies_and_plots_them(tmp_path):
    summary = summary_of(StreamScenario(hours=4, seed=3), rate=100)
    series = summary["requests"]["by_second"]
    seconds = len(series["acknowledged"])
    assert seconds >= 1 and sum(series["acknowledged"]) == summary["requests"]["acknowledged"]
    assert len(series["latency_p50_ms"]) == len(series["latency_p90_ms"]) == seconds
    assert all(p50 is None or 0 <= p50 <= p90 for p50, p90 in zip(series["latency_p50_ms"], series["latency_p90_ms"]))
    page = summary_html(summary)
    for label in ("wall seconds since the start", "acknowledged per second", "latency (ms)", "p90",
                  "simulated hour", "ED arrivals"):
        assert f">{label}</text>" in page, label
    assert page.count("<svg") == 3
    if CHROMIUM is not None:  # and a browser lays the three charts out at full width
        (tmp_path / "summary.html").write_text(page)
        assert [w > 300 for w in drawn_widths(tmp_path / "summary.html", tmp_path, "svg")] == [True] * 3


def test_the_dashboard_rate_is_the_last_ten_seconds_not_the_mean():
    stats = DeliveryStats()
    stats.started -= 60  # a minute in: 600 acknowledged in its first ten seconds, 50 in the last ten
    stats.acknowledged_per_second = [60] * 10 + [0] * 40 + [5] * 10
    assert stats.current_rate() == pytest.approx(5.0, rel=0.1)


def test_credentials_are_sent_but_never_written_or_shown(tmp_path):
    seen: list[httpx.Request] = []
    options = StreamOptions("http://alice:s3cret@stub/fhir", speed=None, rate=0)
    run = run_stream(StreamScenario(hours=1, seed=3), options, transport=instant_server(seen, refuse="Observation"))
    assert {r.headers["authorization"] for r in seen} == {"Basic " + base64.b64encode(b"alice:s3cret").decode()}
    assert run.stats.undelivered, "a refused request should leave a dead letter to check"
    write_summary(stream_summary(run), tmp_path)
    write_dead_letter(run, tmp_path / "dead-letter.ndjson")
    screen = Console(record=True, width=200)
    screen.print(dashboard(run))
    shown = [screen.export_text(), repr(run.options), *(path.read_text() for path in tmp_path.iterdir())]
    assert "http://stub/fhir" in shown[0]
    assert not [text for text in shown if "s3cret" in text or "alice" in text]


def test_a_token_is_sent_as_bearer_auth(monkeypatch):
    seen: list[httpx.Request] = []
    run_stream(StreamScenario(hours=1, seed=3), StreamOptions("http://stub/fhir", speed=None, rate=0, token="t0ken"),
               transport=instant_server(seen))
    monkeypatch.setenv("TRAJSIM_FHIR_TOKEN", "from-the-environment")
    run_stream(StreamScenario(hours=1, seed=3), StreamOptions("http://stub/fhir", speed=None, rate=0),
               transport=instant_server(seen))
    assert {r.headers["authorization"] for r in seen} == {"Bearer t0ken", "Bearer from-the-environment"}


def test_a_password_in_the_url_is_not_printed_when_the_server_is_down(tmp_path):
    port = free_port()
    result = runner.invoke(app, ["stream", "--server", f"http://alice:s3cret@127.0.0.1:{port}/fhir",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2 and f"http://127.0.0.1:{port}/fhir" in result.output
    assert "s3cret" not in result.output and "alice" not in result.output


def test_no_two_patients_hold_the_same_bed_at_once():
    holding: dict[int, tuple[str, int]] = {}
    places = set()
    for step in Hospital(load_stream_scenario(REPO / "scenarios" / "stream" / "ed_surge.toml")).steps():
        subject = step.record.subject_id
        if step.place is not None:
            assert step.place not in {p for s, p in holding.items() if s != subject}, step
            holding[subject] = step.place
            places.add(step.place)
        if step.kind in ("transfer", "discharge"):
            holding.pop(subject, None)
    assert {unit for unit, _ in places} == {"ED beds", "ward beds"} and len(places) > 20


def adt_messages(**feed_options) -> list[tuple[Interaction, dict[str, list[list[str]]]]]:
    """Each ADT message of 30 simulated hours with the interaction it came from, parsed into
    segments (by name) of fields."""
    scenario = StreamScenario(hours=30, seed=3)
    feed = AdtFeed(scenario, "R1", **feed_options)
    parsed = []
    for interaction in interactions(Hospital(scenario)):
        if (message := feed.message(interaction)) is not None:
            segments = message.request.body.decode().strip("\r").split("\r")
            parsed.append((interaction, {segment[:3]: segment.split("|") for segment in segments}))
    return parsed


def test_adt_messages_carry_send_time_control_id_identifiers_location_doctor_and_service():
    before = datetime.now(UTC).replace(microsecond=0)
    messages = adt_messages()
    start = StreamScenario().start
    assert {m["MSH"][8].split("^")[1] for _, m in messages} == {"A04", "A08", "A02", "A01", "A03"}
    assert len({m["MSH"][9] for _, m in messages}) == len(messages)
    assert all(m["MSH"][9].startswith("R1-") for _, m in messages)
    for interaction, m in messages:
        sent = datetime.strptime(m["MSH"][6], "%Y%m%d%H%M%S%z")
        assert before <= sent <= datetime.now(UTC)  # MSH-7: when it was sent
        happened = datetime.strptime(m["EVN"][6], "%Y%m%d%H%M%S%z").replace(tzinfo=None)
        assert m["EVN"][2] == m["EVN"][6] and abs(happened - (start + timedelta(minutes=interaction.minute))) < \
            timedelta(seconds=1)  # EVN-2 recorded, EVN-6 occurred: in the simulated hospital
        mrn, _, _, authority, kind = m["PID"][3].split("^")
        assert mrn.isdigit() and (authority, kind) == ("stream-hospital-3", "MR")
        visit, _, _, authority, kind = m["PV1"][19].split("^")
        assert visit.isdigit() and (authority, kind) == ("stream-hospital-3", "VN")
        body = orjson.loads(interaction.request.body)
        assert m["PV1"][10] == {"EMER": "EMR", "IMP": "MED"}[body["class"]["code"]]
        assert m["PV1"][7].split("^")[0].isdigit() and m["PV1"][7].endswith("^NPI")  # the attending's NPI
        unit = m["PV1"][3].split("^")
        if interaction.kind in ("arrive", "triage"):
            assert unit == ["ED"]  # waiting for a bed
        else:
            assert unit[0] == {"EMER": "ED", "IMP": "WARD"}[body["class"]["code"]] and unit[1].isdigit()


def test_hl7_simulated_time_puts_the_simulated_time_in_msh_7():
    assert all(m["MSH"][6] == m["EVN"][6] for _, m in adt_messages(simulated_send_time=True))
