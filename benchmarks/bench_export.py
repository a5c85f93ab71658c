"""FHIR export throughput without the simulation: a cohort is simulated once and kept in memory, then
timed through events -> FHIR resources (`ResourceBuilder.build`) -> transaction bundles and bulk
NDJSON on disk, with the resources per patient of each type, the lab tests and reports by panel,
imaging studies by modality, implants and supplies by type and procedures by code beside Synthea's (its SMART sample of bundles in the reference data, when present). Then the
validators' throughput on part of that output, and the rate at which a real FHIR server on loopback
(SEKMET) loads it through `push_bundles`.

    python benchmarks/bench_export.py [PATIENTS] [VALIDATED_PATIENTS] [PUSHED_PATIENTS]
    python benchmarks/bench_export.py --write-path [PATIENTS]
    python benchmarks/bench_export.py --procedures [PATIENTS]
    python benchmarks/bench_export.py --codes [PATIENTS]

`--write-path` measures only the exporter as `generate` runs it: the same cohort's events through
`ShardWriter.write` (resources, notes, insurance and claims, transaction bundles, NDJSON) per CPU
second of this process, with the share of each stage; the simulation is not timed. `--procedures`
prints only the procedures table (distinct codes, per patient, with a reason, by code) for a cohort;
`--codes` only the distinct codes of each clinical resource type, beside Synthea's.
"""

from __future__ import annotations

import csv
import gzip
import sys
import tempfile
import time
from collections import Counter
from functools import cache
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fhir_server

import fhir_export.resources as resources_module  # noqa: E402
from fhir_export import NdjsonWriter, write_bundle  # noqa: E402
from fhir_export.push import find_bundles, push_bundles  # noqa: E402
from fhir_export.validate import R4Schema, model_problems, validate_directory  # noqa: E402
from fhir_export.providers import SHARED_TYPES  # noqa: E402
from refdata import REFDATA  # noqa: E402
from tests.fhir_server import sekmet_server  # noqa: E402
from trajsim.engine import ReferenceSource, simulate  # noqa: E402
from fhir_export.claims import add_insurance  # noqa: E402
from trajsim.output import CohortOutput, collection_paused, default_builder, fhir_namespace  # noqa: E402
from trajsim.scenario import Scenario, with_overrides  # noqa: E402
from trajsim.vocab import load_vocabulary  # noqa: E402

SYNTHEA_BUNDLES = REFDATA / "synthea_fhir_r4_smart615" / "bundles"  # Synthea of 2017: no USCDI v3 classes
SYNTHEA_CSV = REFDATA / "synthea_csv_dbt27" / "csv"  # a recent Synthea's CSV export, a small sample
# The USCDI observations by the LOINC codes that name them (Synthea codes pulse oximetry 2708-6).
USCDI_OBSERVATIONS = {"pulse oximetry": ("59408-5", "2708-6"), "BMI-for-age percentile": ("59576-9",),
                      "weight-for-length percentile": ("77606-2",), "head circumference": ("9843-4",),
                      "head circumference percentile": ("8289-1",), "PHQ-2 total score": ("55758-7",),
                      "PHQ-9 total score": ("44261-6",), "pregnancy status": ("82810-3",),
                      "smoking status": ("72166-2",)}


def rate(count: float, seconds: float) -> str:
    return f"{count / max(seconds, 1e-9):>12,.0f}"


def simulated(patients: int) -> tuple[Scenario, list[list]]:
    """The default scenario's first `patients` records (reference source), simulated once, untimed."""
    scenario = with_overrides(Scenario(), "benchmark", **{"population.size": patients})
    started = time.perf_counter()
    records = [record.events for record in simulate(scenario, ReferenceSource())]
    print(f"patients                {patients:,} simulated once in {time.perf_counter() - started:.1f} s (not timed below)")
    return scenario, records


def write_path(patients: int = 300) -> None:
    """Resources/s per CPU second of `generate`'s write path alone, then the same steps one by one,
    the notes among the resources, and orjson serialising the same resources once (the ceiling)."""
    scenario, records = simulated(patients)
    scenario = scenario.model_copy(update={"output": scenario.output.model_copy(update={"formats": ("bundle", "ndjson")})})
    with tempfile.TemporaryDirectory() as scratch:
        output = CohortOutput(Path(scratch), scenario)
        output.clear()
        started = time.process_time()
        with output.shard(0, 0) as writer:
            for events in records:
                writer.write(events)
        seconds = time.process_time() - started
    resources = sum(writer.summary.patient_resources.values())
    print(f"write path              {resources:,} resources ({resources / patients:,.0f} per patient, shared providers "
          f"not counted) in {seconds:.2f} CPU s:{rate(resources, seconds)} resources/s per core, "
          f"{patients / seconds:,.0f} patients/s")
    stages = _stages(records, scenario, output.namespace)
    total = sum(seconds for stage, seconds in stages.items() if not stage.startswith(" "))
    print(f"{'stage, alone':<28}{'CPU s':>8}{'share':>8}{'resources/s':>14}")
    for stage in ("resources and notes", "  of which notes", "insurance and claims", "transaction bundles",
                  "bulk NDJSON", "  orjson alone, once"):
        print(f"{stage:<28}{stages[stage]:>8.2f}{stages[stage] / total:>8.0%}{rate(resources, stages[stage])}")


def _stages(records: list[list], scenario: Scenario, namespace: str) -> Counter:
    """CPU seconds of each step `ShardWriter.write` takes, timed one by one (the notes are timed inside
    the resources, and orjson's single pass over the resources beside them)."""
    builder = default_builder(namespace)
    stages: Counter = Counter()
    writes_note = resources_module.write_note

    def timed_note(*args):
        started = time.process_time()
        try:
            return writes_note(*args)
        finally:
            stages["  of which notes"] += time.process_time() - started

    resources_module.write_note = timed_note
    try:
        with tempfile.TemporaryDirectory() as scratch:
            ndjson = NdjsonWriter(Path(scratch) / "ndjson")
            for events in records:
                with collection_paused():
                    started = time.process_time()
                    patient = builder.build(events)
                    built = time.process_time()
                    add_insurance(patient, f"{namespace}/{events[0].subject_id}", scenario.output.insurance)
                    insured = time.process_time()
                    write_bundle(Path(scratch) / f"patient-{events[0].subject_id:07d}.json", patient)
                    bundled = time.process_time()
                    ndjson.write(patient)
                    written = time.process_time()
                    for resource in patient.resources:
                        orjson.dumps(resource)
                    stages.update({"resources and notes": built - started, "insurance and claims": insured - built,
                                   "transaction bundles": bundled - insured, "bulk NDJSON": written - bundled,
                                   "  orjson alone, once": time.process_time() - written})
            started = time.process_time()
            ndjson.close()
            stages["bulk NDJSON"] += time.process_time() - started
    finally:
        resources_module.write_note = writes_note
    return stages


def main(patients: int = 1000, validated: int = 100, pushed: int = 50) -> None:
    scenario, records = simulated(patients)
    builder = default_builder(fhir_namespace(scenario.name, scenario.seed))

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        started = time.perf_counter()
        built = [builder.build(events) for events in records]
        build_s = time.perf_counter() - started
        resources = sum(len(patient.resources) for patient in built)

        started = time.perf_counter()
        bundle_bytes = sum(write_bundle(out / "bundles" / f"patient-{n:07d}.json", patient)
                           for n, patient in enumerate(built))
        bundle_s = time.perf_counter() - started

        started = time.perf_counter()
        ndjson = NdjsonWriter(out / "ndjson")
        for patient in built:
            ndjson.write(patient)
        ndjson.close()
        ndjson_s = time.perf_counter() - started

        total_s = build_s + bundle_s + ndjson_s
        print(f"resources               {resources:,} ({resources / patients:,.0f} per patient)")
        uscdi_observations([r for patient in built for r in patient.resources], patients)
        print(f"{'stage':<24}{'seconds':>8}{'resources/s':>14}{'MB/s':>8}")
        print(f"{'events -> FHIR dicts':<24}{build_s:>8.2f}{rate(resources, build_s):>14}")
        print(f"{'transaction bundles':<24}{bundle_s:>8.2f}{rate(resources, bundle_s):>14}"
              f"{bundle_bytes / 1e6 / bundle_s:>8.1f}  ({bundle_bytes / 1e6:,.0f} MB)")
        print(f"{'bulk NDJSON':<24}{ndjson_s:>8.2f}{rate(resources, ndjson_s):>14}"
              f"{ndjson.bytes_written / 1e6 / ndjson_s:>8.1f}  ({ndjson.bytes_written / 1e6:,.0f} MB)")
        print(f"{'export, all three':<24}{total_s:>8.2f}{rate(resources, total_s):>14}"
              f"{(bundle_bytes + ndjson.bytes_written) / 1e6 / total_s:>8.1f}  "
              f"({patients / total_s:,.0f} patients/s)")
        resources_by_type(built, patients)
        laboratory(built, patients)
        images_and_implants(built, patients)
        procedures(built, patients)
        distinct_codes(built)
        del built

        bundles = find_bundles(out)
        sample = out / "sample"
        sample.mkdir()
        for path in bundles[:validated]:
            path.rename(sample / path.name)
        validate_throughput(sample)
        push_throughput(sorted(sample.glob("*.json"))[:pushed], out / "server")


def _per_patient(codes: list[str], patients: int) -> dict[str, float]:
    return {name: sum(code in loinc for code in codes) / max(patients, 1) for name, loinc in USCDI_OBSERVATIONS.items()}


def _bundle_codes(resources: list[dict]) -> list[str]:
    """The first LOINC coding of every Observation."""
    return [r["code"]["coding"][0]["code"] for r in resources if r.get("resourceType") == "Observation"]


def _synthea_columns() -> dict[str, dict[str, float]]:
    """Synthea's observations per patient, for each refdata sample at hand."""
    columns = {}
    if SYNTHEA_BUNDLES.is_dir():
        paths = sorted(SYNTHEA_BUNDLES.glob("*.json.gz"))
        codes = _bundle_codes([entry["resource"] for path in paths
                               for entry in orjson.loads(gzip.decompress(path.read_bytes()))["entry"]])
        columns[f"SMART ({len(paths)})"] = _per_patient(codes, len(paths))
    if SYNTHEA_CSV.is_dir():
        with (SYNTHEA_CSV / "patients.csv").open() as handle:
            patients = sum(1 for _ in csv.DictReader(handle))
        with (SYNTHEA_CSV / "observations.csv").open() as handle:
            codes = [row["CODE"] for row in csv.DictReader(handle)]
        columns[f"CSV ({patients})"] = _per_patient(codes, patients)
    return columns


def uscdi_observations(resources: list[dict], patients: int) -> None:
    """The USCDI observations per patient, beside Synthea's refdata samples where they are at hand."""
    ours, theirs = _per_patient(_bundle_codes(resources), patients), _synthea_columns()
    print(f"\n{'USCDI observation per patient':<32}{'trajsim':>9}" + "".join(f"{'Synthea ' + n:>20}" for n in theirs))
    for name, count in ours.items():
        print(f"{name:<32}{count:>9.2f}" + "".join(f"{column[name]:>20.2f}" for column in theirs.values()))
def synthea_per_patient(bundles: int = 100) -> tuple[Counter, int]:
    """Resources by type in the first `bundles` patients of Synthea's SMART sample, and how many
    patients that was (0 without the reference data)."""
    counts: Counter = Counter()
    paths = sorted(SYNTHEA_BUNDLES.glob("*.json.gz"))[:bundles]
    for path in paths:
        counts.update(entry["resource"]["resourceType"] for entry in orjson.loads(gzip.decompress(path.read_bytes()))["entry"])
    return counts, len(paths)


def resources_by_type(built: list, patients: int) -> None:
    """Resources per patient by type (shared providers as each bundle carries them), beside Synthea."""
    ours = Counter(resource["resourceType"] for patient in built for resource in patient.resources)
    synthea, synthea_patients = synthea_per_patient()
    print(f"\n{'resources per patient':<24}{'trajsim':>8}{'Synthea':>9}"
          + (f"  (Synthea: SMART sample, {synthea_patients} patients)" if synthea_patients else "  (no reference data)"))
    for kind in sorted(ours.keys() | synthea.keys()):
        theirs = f"{synthea[kind] / synthea_patients:>9.1f}" if synthea_patients else f"{'':>9}"
        note = "  shared provider" if kind in SHARED_TYPES else ""
        print(f"{kind:<24}{ours[kind] / patients:>8.1f}{theirs}{note}")


@cache
def synthea_resources() -> tuple[list[dict], int]:
    """Every resource of Synthea's SMART sample and how many patients it holds (none without the
    reference data)."""
    paths = sorted(SYNTHEA_BUNDLES.glob("*.json.gz"))
    return [entry["resource"] for path in paths
            for entry in orjson.loads(gzip.decompress(path.read_bytes()))["entry"]], len(paths)


def _procedures(resources) -> tuple[Counter, int]:
    """Procedures by SNOMED code, and how many name a reason (reasonReference or reasonCode)."""
    procedures = [r for r in resources if r["resourceType"] == "Procedure"]
    return (Counter(r["code"]["coding"][0]["code"] for r in procedures),
            sum(bool(r.get("reasonReference") or r.get("reasonCode")) for r in procedures))


def procedures(built: list, patients: int, shown: int = 25) -> None:
    """Distinct procedure codes, procedures per patient and the share with a reason, then the most
    frequent procedures per 100 patients, beside Synthea's SMART sample."""
    ours, ours_reasoned = _procedures(r for patient in built for r in patient.resources)
    resources, synthea_patients = synthea_resources()
    theirs, theirs_reasoned = _procedures(resources)
    per = max(synthea_patients, 1)
    print(f"\n{'procedures':<48}{'trajsim':>8}{'Synthea':>9}")
    print(f"{'distinct procedure codes':<48}{len(ours):>8}{len(theirs):>9}")
    print(f"{'procedures per patient':<48}{ours.total() / patients:>8.1f}{theirs.total() / per:>9.1f}")
    print(f"{'share with a reason':<48}{ours_reasoned / max(ours.total(), 1):>8.0%}"
          f"{theirs_reasoned / max(theirs.total(), 1):>9.0%}")
    print(f"{'per 100 patients, by code':<48}")
    displays = {c["code"]: c.get("display", "") for r in [*resources, *(r for p in built for r in p.resources)]
                if r["resourceType"] == "Procedure" for c in r["code"]["coding"][:1]}
    for code in sorted(ours.keys() | theirs.keys(), key=lambda k: -(ours[k] / patients + theirs[k] / per))[:shown]:
        name = f"{code} {displays[code]}"[:46]
        print(f"  {name:<46}{100 * ours[code] / patients:>8.1f}{100 * theirs[code] / per:>9.1f}")


def procedures_only(patients: int = 300) -> None:
    """The procedures table alone, for a cohort of `patients` (nothing timed)."""
    scenario, records = simulated(patients)
    builder = default_builder(fhir_namespace(scenario.name, scenario.seed))
    procedures([builder.build(events) for events in records], patients)


# The coded element each clinical resource type is counted by (lab and vital-sign Observations apart).
CODED_ELEMENTS = {"Condition": "code", "Procedure": "code", "MedicationRequest": "medicationCodeableConcept",
                  "Immunization": "vaccineCode", "Encounter": "type", "DiagnosticReport": "code",
                  "ImagingStudy": "procedureCode", "Device": "type", "CarePlan": "category"}


def _distinct_codes(resources) -> dict[str, set[str]]:
    """The distinct first codings of each clinical resource type's coded element, Observations by category."""
    codes: dict[str, set[str]] = {}
    for r in resources:
        kind = r["resourceType"]
        if kind == "Observation":
            category = next((c["code"] for cat in r.get("category", []) for c in cat.get("coding", [])), "")
            kind, element = f"Observation {category}", r.get("code")
        elif kind in CODED_ELEMENTS:
            element = r.get(CODED_ELEMENTS[kind])
            element = element[0] if isinstance(element, list) and element else element
        else:
            continue
        coding = (element or {}).get("coding") or [{}]
        if coding[0].get("code"):
            codes.setdefault(kind, set()).add(f"{coding[0].get('system', '')}|{coding[0]['code']}")
    return codes


def distinct_codes(built: list) -> None:
    """Distinct codes by resource type (the breadth of medicine a cohort shows), beside Synthea's SMART sample."""
    ours = _distinct_codes(r for patient in built for r in patient.resources)
    resources, synthea_patients = synthea_resources()
    theirs = _distinct_codes(resources)
    print(f"\n{'distinct codes':<48}{'trajsim':>8}{'Synthea':>9}"
          + (f"  ({len(built)} patients; Synthea: SMART sample, {synthea_patients})" if synthea_patients
             else "  (no reference data)"))
    for kind in sorted(ours.keys() | theirs.keys()):
        print(f"{kind:<48}{len(ours.get(kind, ())):>8}{len(theirs.get(kind, ())):>9}")


def codes_only(patients: int = 500) -> None:
    """The distinct-codes table alone, for a cohort of `patients` (nothing timed)."""
    scenario, records = simulated(patients)
    builder = default_builder(fhir_namespace(scenario.name, scenario.seed))
    distinct_codes([builder.build(events) for events in records])


def _images_and_implants(resources) -> Counter:
    """ImagingStudy by its first series' modality, Device by its type's text and SupplyDelivery by its item's."""
    def kind(r: dict) -> str:
        if r["resourceType"] == "ImagingStudy":
            return f"ImagingStudy {r['series'][0]['modality']['code']}"
        coded = r["type"] if r["resourceType"] == "Device" else r["suppliedItem"]["itemCodeableConcept"]
        return f"{r['resourceType']} {coded.get('text', coded['coding'][0].get('display'))}"
    return Counter(kind(r) for r in resources if r["resourceType"] in ("ImagingStudy", "Device", "SupplyDelivery"))


def images_and_implants(built: list, patients: int) -> None:
    """Imaging studies by modality, implanted devices and delivered supplies by type, per 100 patients,
    beside Synthea."""
    ours = _images_and_implants(r for patient in built for r in patient.resources)
    resources, synthea_patients = synthea_resources()
    synthea = _images_and_implants(resources)
    print(f"\n{'per 100 patients':<48}{'trajsim':>8}{'Synthea':>9}"
          + (f"  (Synthea: SMART sample, {synthea_patients} patients)" if synthea_patients else "  (no reference data)"))
    for kind in sorted(ours.keys() | synthea.keys()):
        theirs = f"{100 * synthea[kind] / synthea_patients:>9.1f}" if synthea_patients else f"{'':>9}"
        print(f"{kind:<48}{100 * ours[kind] / patients:>8.1f}{theirs}")


def _laboratory(resources) -> tuple[set[str], Counter, int]:
    """Lab results with a value: their distinct LOINC codes, the lab reports by code, and how many."""
    codes, reports, results = set(), Counter(), 0
    for r in resources:
        if r["resourceType"] == "DiagnosticReport" and any(
                c.get("code") == "LAB" for category in r.get("category", []) for c in category.get("coding", [])):
            reports[r["code"]["coding"][0]["code"]] += 1
        elif r["resourceType"] == "Observation" and ("valueQuantity" in r or "valueCodeableConcept" in r) and any(
                c.get("code") == "laboratory" for category in r.get("category", []) for c in category.get("coding", [])):
            codes.add(r["code"]["coding"][0]["code"])
            results += 1
    return codes, reports, results


def laboratory(built: list, patients: int) -> None:
    """Distinct lab tests with a value, lab results per patient and lab reports by panel or test per
    100 patients, beside Synthea's SMART sample."""
    ours = _laboratory(r for patient in built for r in patient.resources)
    resources, synthea_patients = synthea_resources()
    synthea = _laboratory(resources)
    per = max(synthea_patients, 1)
    print(f"\n{'laboratory':<48}{'trajsim':>8}{'Synthea':>9}")
    print(f"{'distinct lab tests with a value':<48}{len(ours[0]):>8}{len(synthea[0]):>9}")
    print(f"{'lab results per patient':<48}{ours[2] / patients:>8.1f}{synthea[2] / per:>9.1f}")
    print(f"{'lab reports per 100 patients, by code':<48}")
    vocabulary = load_vocabulary()
    for code in sorted(ours[1].keys() | synthea[1].keys(), key=lambda k: -(ours[1][k] + synthea[1][k])):
        known = vocabulary.get(f"LOINC/{code}")
        name = f"{code} {known.display if known else ''}"[:46]
        print(f"  {name:<46}{100 * ours[1][code] / patients:>8.1f}{100 * synthea[1][code] / per:>9.1f}")


def validate_throughput(folder: Path) -> None:
    """Each validator on its own over the same resources, then `validate_directory` as the CLI runs it."""
    resources = [entry["resource"] for path in sorted(folder.glob("*.json"))
                 for entry in orjson.loads(path.read_bytes())["entry"]]
    schema = R4Schema.installed()
    checks = [("R4B models", model_problems)] + ([("R4 JSON schema", schema.problems)] if schema else [])
    print(f"\nvalidation of {len(resources):,} resources ({len(list(folder.glob('*.json')))} patients' bundles)")
    for name, check in checks:
        started = time.perf_counter()
        problems = sum(len(check(resource)) for resource in resources)
        seconds = time.perf_counter() - started
        print(f"{name:<24}{seconds:>8.2f}{rate(len(resources), seconds):>14} resources/s  ({problems} problems)")
    if schema is None:
        print("R4 JSON schema          not installed; see docs/push.md")
    started = time.perf_counter()
    report = validate_directory(folder, schema=schema)
    seconds = time.perf_counter() - started
    print(f"{'trajsim validate':<24}{seconds:>8.2f}{rate(len(resources), seconds):>14} resources/s  "
          f"({report.failure_count} problems)")


def push_throughput(bundles: list[Path], workdir: Path, concurrency: int = 4) -> None:
    with sekmet_server(workdir) as server:
        summary = push_bundles(bundles, server, concurrency=concurrency)
    accepted = summary.accepted
    print(f"\npush to SEKMET on loopback ({concurrency} in flight): {len(accepted)}/{len(bundles)} bundles accepted "
          f"in {summary.seconds:.1f} s: {len(accepted) / summary.seconds:,.2f} patients/s, "
          f"{sum(o.resources for o in accepted) / summary.seconds:,.0f} resources/s")

if __name__ == "__main__":
    if sys.argv[1:2] == ["--write-path"]:
        write_path(*(int(arg) for arg in sys.argv[2:3]))
    elif sys.argv[1:2] == ["--procedures"]:
        procedures_only(*(int(arg) for arg in sys.argv[2:3]))
    elif sys.argv[1:2] == ["--codes"]:
        codes_only(*(int(arg) for arg in sys.argv[2:3]))
    else:
        main(*(int(arg) for arg in sys.argv[1:4]))
