"""The financial side of a chart, as Synthea users expect it: the patient's insurance over time
(Coverage, with the payer as an Organization) and, for every encounter, a Claim and the payer's
ExplanationOfBenefit, whose lines bill the visit, its procedures, lab orders (a panel is one
line, as its CPT code is), immunizations and prescriptions and say what the payer and the patient
paid.

It reads the resources a patient's build made (never the events), so it works for any source, and
draws the plan from the patient's identity, like a name or an address. Plans and prices are data:
`trajsim.knowledge.insurance` and `trajsim.knowledge.costs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache, lru_cache
from typing import Any, Literal

from fhir_export.demographics import address, draw_place, phone
from fhir_export.identity import IdMinter, stable_random, stable_uuid
from fhir_export.resources import PatientResources, Resource
from fhir_export.tables import load_table
from fhir_export.terminology import IDENTIFIER_TYPE, ORGANIZATION_TYPE, TRAJSIM_IDENTIFIERS, concept, profile
from trajsim.knowledge.costs import fee, patient_shares
from trajsim.knowledge.insurance import (
    CoverageSpan, birthday, coverage_history, entitling_conditions, programs, span_at,
)
from trajsim.vocab import SYSTEM_URIS
from trajsim.vocab.local import system_and_code

Insurance = Literal["claims", "coverage", "none"]  # what `add_insurance` writes (the scenario's output.insurance)

PAYMENT_TYPOLOGY = "urn:oid:2.16.840.1.113883.3.221.5"  # PHDSC Source of Payment Typology
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
CARIN_ADJUDICATION = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication"
INFORMATION_CATEGORY = concept("http://terminology.hl7.org/CodeSystem/claiminformationcategory", "info", "Information")
NORMAL_PRIORITY = concept("http://terminology.hl7.org/CodeSystem/processpriority", "normal", "Normal")
COMPLETE_PAYMENT = concept("http://terminology.hl7.org/CodeSystem/ex-paymenttype", "complete", "Complete")
RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
PLAN_CLASS = concept("http://terminology.hl7.org/CodeSystem/coverage-class", "plan", "Plan")
MEMBER_NUMBER = concept(IDENTIFIER_TYPE, "MB", "Member Number")
SUBMITTED = concept(ADJUDICATION, "submitted", "Submitted Amount")
BENEFIT = concept(ADJUDICATION, "benefit", "Benefit Amount")
PAID_BY_PATIENT = concept(CARIN_ADJUDICATION, "paidbypatient", "Paid by patient")
ORGANIZATION_TYPES = {"govt": "Government", "pay": "Payer"}
CHILD_AGE = 19  # a child on a private plan is a dependent on a parent's policy
PREFIX_OF_SYSTEM = {uri: prefix for prefix, uri in SYSTEM_URIS.items()}


@dataclass(frozen=True)
class Payer:
    plan: str
    name: str
    type_code: str
    type_display: str
    organization_type: str
    weight: float


@cache
def payers() -> dict[str, tuple[Payer, ...]]:
    """Plan -> the payers that offer it (fhir_export/data/payers.csv)."""
    columns = ("plan", "name", "type_code", "type_display", "organization_type", "weight")
    out: dict[str, list[Payer]] = {}
    for row in load_table("payers", columns):
        out.setdefault(row["plan"], []).append(Payer(*(row[c] for c in columns[:-1]), float(row["weight"])))
    return {plan: tuple(rows) for plan, rows in out.items()}


@cache
def payer_organization(payer: Payer) -> Resource:
    """The payer's Organization, one id per name, shared by every patient (do not modify); its
    office is a fictional address and a 555-01xx phone, like a provider's."""
    key = f"trajsim/payer/{payer.name}"
    kind = payer.organization_type
    rng = stable_random(key)
    office = draw_place(rng)
    return {"resourceType": "Organization", "id": stable_uuid(key), "meta": profile("us-core-organization"),
            "identifier": [{"system": TRAJSIM_IDENTIFIERS + "payer-id", "value": payer.name.lower().replace(" ", "-")}],
            "active": True, **({"type": [concept(ORGANIZATION_TYPE, kind, ORGANIZATION_TYPES[kind])]} if kind else {}),
            "name": payer.name, "telecom": [{"system": "phone", "value": phone(rng, office), "use": "work"}],
            "address": [address(rng, office) | {"use": "work"}]}


@lru_cache(maxsize=4096)  # fees repeat; the dict is shared, never modified
def _money(amount: int) -> dict[str, Any]:
    return {"value": amount / 100, "currency": "USD"}


def cents(money: dict[str, Any]) -> int:
    """A Money amount in whole cents."""
    return round(money["value"] * 100)


def plan_of(coverage: Resource) -> str:
    """The program a Coverage stands for (a plan of trajsim.knowledge.insurance.PLANS; a
    dual-eligible person has one Coverage for Medicare and one for Medicaid)."""
    return coverage["class"][0]["value"]


def _adjudication(submitted: int, by_patient: int) -> list[dict[str, Any]]:
    """An amount billed, split into what the patient and the payer paid (cents)."""
    return [{"category": SUBMITTED, "amount": _money(submitted)},
            {"category": PAID_BY_PATIENT, "amount": _money(by_patient)},
            {"category": BENEFIT, "amount": _money(submitted - by_patient)}]


@lru_cache(maxsize=4096)
def _day(text: str) -> date:
    return datetime.fromisoformat(text.removesuffix("Z")).date()


def _code_of(concept_: dict[str, Any]) -> str:
    """SYSTEM/CODE of a CodeableConcept's first coding (the form the fee table uses)."""
    coding = concept_["coding"][0]
    return f"{PREFIX_OF_SYSTEM.get(coding['system'], coding['system'])}/{coding['code']}"


@dataclass
class _Line:
    """One billed service of a visit: what it is, when, its amount and the resource it bills."""

    product: dict[str, Any]
    when: dict[str, Any]  # servicedDate or servicedPeriod
    quantity: int
    unit_cents: int
    billed: Resource | None = None  # None for the visit line
    slot: str | None = None  # "procedure" or "supportingInfo": where the Claim lists `billed`

    @property
    def cents(self) -> int:
        return self.quantity * self.unit_cents


@dataclass(frozen=True)
class _Plan:
    """A plan (trajsim.knowledge.insurance.PLANS) as written: (Coverage, payer) per program, first payer first."""

    plan: str
    parts: list[tuple[Resource, Resource]]


@dataclass
class _Visit:
    encounter: Resource
    diagnoses: list[Resource] = field(default_factory=list)
    lines: list[_Line] = field(default_factory=list)


class _Finances:
    """One pass adding a patient's Coverage, payers, Claims and ExplanationOfBenefits."""

    def __init__(self, patient: PatientResources, key: str) -> None:
        self.patient = patient
        self.key = key
        self.ids = IdMinter(f"{key}/insurance")
        self.person = next(r for r in patient.resources if r["resourceType"] == "Patient")
        self.subject = patient.reference(self.person)
        self.birth = date.fromisoformat(self.person["birthDate"])
        self.history = coverage_history(stable_random(f"{key}/insurance"), self.birth, self._entitlement())
        self.record_end = self._record_end()
        self.coverages: dict[int, _Plan] = {}  # by the index of its span in `history`
        self.billed = self.payer_paid = 0  # cents, over the claims built so far

    def _entitlement(self) -> tuple[date, str] | None:
        """The first diagnosis of a condition that entitles the patient to a plan at any age."""
        entitling = {system_and_code(code): plan for code, plan in entitling_conditions().items()}
        found = [(_day(r["onsetDateTime"]), entitling[(c["system"], c["code"])])
                 for r in self.patient.resources if r["resourceType"] == "Condition" and "onsetDateTime" in r
                 for c in r["code"]["coding"] if (c["system"], c["code"]) in entitling]
        return min(found) if found else None

    def coverage_on(self, day: date) -> _Plan:
        """The plan in effect on `day` with its Coverage and payer per program, built the first time
        it is needed."""
        span = span_at(self.history, day)
        index = self.history.index(span)
        if index not in self.coverages:
            parts = programs(span.plan)
            self.coverages[index] = _Plan(span.plan, [self._coverage(index, span, program, order if len(parts) > 1 else None)
                                                      for order, program in enumerate(parts, 1)])
        return self.coverages[index]

    def _coverage(self, index: int, span: CoverageSpan, program: str, order: int | None) -> tuple[Resource, Resource]:
        """The Coverage of one program of the plan of span `index` (`order` among several) and its payer."""
        suffix = f"-{order}" if order else ""
        options = payers()[program]
        payer = stable_random(f"{self.key}/payer/{index}{suffix}").choices(options, [p.weight for p in options])[0]
        organization = dict(payer_organization(payer))
        member = f"{self.key}/{index + 1}{suffix}"
        period = {"start": span.start.isoformat()}
        death = self.person.get("deceasedDateTime")
        if span.end is not None and span.end <= self.record_end:
            period["end"] = date.fromordinal(span.end.toordinal() - 1).isoformat()
        elif death is not None:
            period["end"] = _day(death).isoformat()
        dependent = program in ("employer", "direct") and span.start < birthday(self.birth, CHILD_AGE)
        coverage = {
            "resourceType": "Coverage", "id": self.ids.next(), "meta": profile("us-core-coverage"),
            "identifier": [{"type": MEMBER_NUMBER, "system": TRAJSIM_IDENTIFIERS + "member-id", "value": member}],
            "status": "active", "type": concept(PAYMENT_TYPOLOGY, payer.type_code, payer.type_display),
            "subscriberId": member, "beneficiary": self.subject,
            "relationship": concept(RELATIONSHIP, "child", "Child") if dependent else concept(RELATIONSHIP, "self", "Self"),
            "period": period, "payor": [self.patient.reference(organization)],
            "class": [{"type": PLAN_CLASS, "value": program, "name": payer.name}],
            **({"order": order} if order else {}),
        }
        return coverage, organization

    # --- visits --------------------------------------------------------------------------------
    def visits(self) -> Iterator[_Visit]:
        """Each encounter with the conditions it diagnosed and its billable lines, in order."""
        by_reference: dict[int, _Visit] = {}
        ordered = []
        for resource in self.patient.resources:
            kind = resource["resourceType"]
            if kind == "Encounter":
                visit = _Visit(resource, lines=[self._visit_line(resource)])
                by_reference[id(self.patient.reference(resource))] = visit
                ordered.append(visit)
                continue
            visit = by_reference.get(id(resource.get("encounter")))
            if visit is None:
                continue
            if kind == "Condition":
                visit.diagnoses.append(resource)
            elif line := self._line(resource):
                visit.lines.append(line)
        return iter(ordered)

    @staticmethod
    def _visit_line(encounter: Resource) -> _Line:
        encounter_class = encounter["class"]["code"]
        price = fee("encounter", encounter_class)
        period = encounter["period"]
        days = (_day(period.get("end", period["start"])) - _day(period["start"])).days
        quantity = max(days, 1) if price.per == "day" else 1
        return _Line(encounter["type"][0], {"servicedPeriod": dict(period)}, quantity, price.cents)

    @staticmethod
    def _line(resource: Resource) -> _Line | None:
        kind = resource["resourceType"]
        if kind == "Procedure":
            product, when, fee_kind, slot = resource["code"], resource["performedDateTime"], "procedure", "procedure"
        elif kind == "ServiceRequest":  # a lab order: the panel or test billed, not each of its results
            product, when, fee_kind, slot = resource["code"], resource["occurrenceDateTime"], "lab", "supportingInfo"
        elif kind == "Immunization":
            product, when, fee_kind, slot = resource["vaccineCode"], resource["occurrenceDateTime"], "immunization", "supportingInfo"
        elif kind == "MedicationRequest":
            product, when = resource["medicationCodeableConcept"], resource["authoredOn"]
            fee_kind, slot = "medication", "supportingInfo"
        else:
            return None
        return _Line(product, {"servicedDate": when[:10]}, 1, fee(fee_kind, _code_of(product)).cents, resource, slot)

    def _lines(self, visit: _Visit) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """The Claim's items, and its `diagnosis`, `procedure` and `supportingInfo` lists the items
        point into by sequence number."""
        reference = self.patient.reference
        listed: dict[str, list[dict[str, Any]]] = {
            "diagnosis": [{"sequence": n, "diagnosisReference": reference(c)} for n, c in enumerate(visit.diagnoses, 1)],
            "procedure": [], "supportingInfo": []}
        items = []
        for sequence, line in enumerate(visit.lines, 1):
            item = {"sequence": sequence, "productOrService": line.product, **line.when,
                    "encounter": [reference(visit.encounter)], "quantity": {"value": line.quantity},
                    "unitPrice": _money(line.unit_cents), "net": _money(line.cents)}
            if line.billed is None:
                if listed["diagnosis"]:
                    item["diagnosisSequence"] = [d["sequence"] for d in listed["diagnosis"]]
            else:
                entries = listed[line.slot]
                entry = {"sequence": len(entries) + 1}
                if line.slot == "procedure":
                    entry |= {"date": line.billed["performedDateTime"], "procedureReference": reference(line.billed)}
                    item["procedureSequence"] = [entry["sequence"]]
                else:
                    entry |= {"category": INFORMATION_CATEGORY, "valueReference": reference(line.billed)}
                    item["informationSequence"] = [entry["sequence"]]
                entries.append(entry)
            items.append(item)
        return items, {slot: entries for slot, entries in listed.items() if entries}

    def claim_and_benefit(self, visit: _Visit) -> tuple[Resource, Resource]:
        """The visit's Claim and the payer's ExplanationOfBenefit of it."""
        encounter, reference = visit.encounter, self.patient.reference
        plan = self.coverage_on(_day(encounter["period"]["start"]))
        (first, payer), *_ = plan.parts
        encounter_class = encounter["class"]["code"]
        kind = ("institutional", "Institutional") if encounter_class in ("EMER", "IMP") else ("professional", "Professional")
        period = encounter["period"]
        items, listed = self._lines(visit)
        common = {"status": "active", "type": concept(CLAIM_TYPE, *kind), "use": "claim", "patient": self.subject,
                  "billablePeriod": dict(period), "created": period.get("end", period["start"]),
                  "provider": encounter["serviceProvider"], "facility": encounter["location"][0]["location"], **listed}
        billed = [line.cents for line in visit.lines]
        claim = {"resourceType": "Claim", "id": self.ids.next(), **common, "priority": NORMAL_PRIORITY,
                 "insurance": [{"sequence": n, "focal": n == 1, "coverage": reference(coverage)}
                               for n, (coverage, _) in enumerate(plan.parts, 1)],
                 "item": items, "total": _money(sum(billed))}
        by_patient = patient_shares(plan.plan, encounter_class, billed)
        self.billed += sum(billed)
        self.payer_paid += sum(billed) - sum(by_patient)
        benefit = {"resourceType": "ExplanationOfBenefit", "id": self.ids.next(), **common,
                   "insurer": reference(payer), "claim": reference(claim), "outcome": "complete",
                   "insurance": [{"focal": coverage is first, "coverage": reference(coverage)} for coverage, _ in plan.parts],
                   "item": [item | {"adjudication": _adjudication(amount, paid)}
                            for item, amount, paid in zip(items, billed, by_patient)],
                   "total": _adjudication(sum(billed), sum(by_patient)),
                   "payment": {"type": COMPLETE_PAYMENT, "amount": _money(sum(billed) - sum(by_patient))}}
        return claim, benefit

    def run(self, insurance: Insurance) -> Finances:
        for resource in self.patient.resources:  # every plan of the record, with or without claims
            if resource["resourceType"] == "Encounter":
                self.coverage_on(_day(resource["period"]["start"]))
        final = self.coverage_on(self.record_end)  # the plan the patient has when the record ends
        bills = [resource for visit in self.visits() for resource in self.claim_and_benefit(visit)] \
            if insurance == "claims" else []
        built = [part for index in sorted(self.coverages) for part in self.coverages[index].parts]
        organizations = {organization["id"]: organization for _, organization in built}
        self._insert([*organizations.values(), *(coverage for coverage, _ in built), *bills])
        return Finances(final.plan, self.billed, self.payer_paid)

    def _record_end(self) -> date:
        death = self.person.get("deceasedDateTime")
        last = self.patient.resources[-1]
        recorded = last.get("recorded") if last["resourceType"] == "Provenance" else None
        return _day(death or recorded or self.person["birthDate"])

    def _insert(self, added: list[Resource]) -> None:
        """Place the new resources before the record's closing Provenance, which then covers them."""
        resources = self.patient.resources
        provenance = resources[-1] if resources[-1]["resourceType"] == "Provenance" else None
        if provenance is None:
            resources.extend(added)
            return
        resources[-1:-1] = added
        provenance["target"] += [self.patient.reference(r) for r in added if r["resourceType"] != "Organization"]


@dataclass(frozen=True)
class Finances:
    """A patient's plan when the record ends and what the claims billed and the payers paid, in cents."""

    plan: str
    billed: int
    payer_paid: int


def add_insurance(patient: PatientResources, key: str, insurance: Insurance = "claims") -> Finances | None:
    """Add to a built patient (whose resources were minted under `key`) the payers and Coverage of
    the plans in effect during the record and, with `insurance="claims"`, a Claim and an
    ExplanationOfBenefit per encounter; returns their totals. "none", or a patient without a birth
    date, adds nothing and returns None."""
    if insurance == "none" or "birthDate" not in next(r for r in patient.resources if r["resourceType"] == "Patient"):
        return None
    return _Finances(patient, key).run(insurance)
