"""The sequence model as the engine's trajectory source.

When patients first ask for a visit, the model writes each one's whole record (from its start year
to the end of its record) in one batched, KV-cached pass: one row per patient, one token per step.
At every step the grammar of the token language and the engine's clinical rules (`RuleMask`) decide
which tokens each row may draw next; everything else gets -inf logits. Rules are re-evaluated at the
start of each visit against the patient's conditions so far, and within a visit a new diagnosis
unlocks its first-line drugs and locks itself. The engine then receives the planned visits one by
one. The model authors every kind of fact its vocabulary holds (it learned them from full charts:
visits and well visits, diagnoses, prescriptions with their refills and stops, measurements,
immunizations, screenings), so the engine adds none of those; it keeps the clock, allergies, smoking
status and deaths, and adds a kind the model never learned only when the scenario asks for the
engine's care (`care = "engine"`). A model whose training records got their well visits and vaccines
from trajsim's own schedules (`Tokenizer.engine_schedules`: the shipped model, trained on the
reference simulator's cohort) leaves those to the engine: its well visits are dropped as its records
are planned, their findings carried to the engine's next well visit, and its vaccines dropped.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trajsim.clock import MINUTES_PER_DAY, calendar_date, office_slot
from trajsim.engine.assessments import answered_codes
from trajsim.engine.schedules import active_keys, vitals
from trajsim.engine.source import (
    ACTIVE, ENGINE_KINDS, NEVER_RECORDED, WELL_ADULT, WELL_CHILD, Fact, FactKind, PatientState, TrajectorySource, Visit,
    fact_kind,
)
from trajsim.events import CONDITION_END, DEATH, MEDICATION_END, VISIT_START_PREFIX
from trajsim.knowledge import Knowledge, load_knowledge
from trajsim.model.draws import row_seeds
from trajsim.knowledge.acute import NEWBORN_STAY
from trajsim.knowledge.physiology import SAME_MEASUREMENT
from trajsim.knowledge.therapy import drug_indications, judged_drugs
from trajsim.model.sample import generate, one_thread
from trajsim.model.tokenizer import (
    BOS, END, ENDED, EOS, HEADS, NO_VISIT, SEXES, CodedFact, Segment, Tokenizer, birth_band, gap_days, year_start_day,
)
from trajsim.model.train import load_model
from trajsim.rules import RuleMask
from trajsim.vocab import domain_of

# The longest an emergency visit (boarding included) and a hospital stay may run as a model writes
# them: sources hold slips of years (Synthea's ingested ED encounters run up to 55 years) that a
# model would otherwise learn; MIMIC-IV's ED stays reach 3 days and its longest stays in the demo 45.
LONGEST_VISIT_DAYS = {"EMER": 3.0, "IMP": 180.0}
MAX_RECORD_CONTEXTS = 8  # a written record may run to eight contexts' worth of tokens before it is cut,
LONGEST_RECORDS = 2  # or to twice its model's longest training record, if that is longer



@dataclass(slots=True)
class ModelPlan:
    """The visits the model wrote for one patient that the engine has not taken yet, and the
    findings of its well visits left to the engine's (day, facts), for the engine's next well visit."""

    visits: deque[Visit]
    well_findings: deque[tuple[float, list[Fact]]] = dataclasses.field(default_factory=deque)


class TokenGrammar:
    """Per-token facts the sampler needs, as arrays over the vocabulary."""

    def __init__(self, tokenizer: Tokenizer, knowledge: Knowledge) -> None:
        vocab = tokenizer.vocab
        self.size = len(vocab)
        self.base_codes = [t.partition("#")[0] for t in vocab]
        self.gap = np.array([gap_days(t) or 0 for t in vocab])
        self.is_gap = self.gap > 0
        self.gaps = np.flatnonzero(self.is_gap)
        self.is_head = np.isin(vocab, HEADS)
        # Rare-code categories decode to a code drawn outside the rules, so the engine never gets them;
        # nor a code of a kind only the engine writes (allergies), except the questions the engine
        # answers: where its source asked the smoking status the model asks it, and the engine answers.
        answered = answered_codes()
        self.is_code = np.array([tokenizer.is_code(t) and t not in tokenizer.folded
                                 and (fact_kind(t.partition("#")[0]) not in ENGINE_KINDS or t.partition("#")[0] in answered)
                                 for t in vocab])
        self.is_ended = np.isin(vocab, ENDED)
        systems = np.array([t.split("/", 1)[0] for t in self.base_codes])
        plain = self.is_code & np.array(["#" not in t for t in vocab])
        # What condition_end / medication_end may name: the codes of the knowledge's systems, and the
        # codes of no kind a rule judges that the training records ended so (a source's local drugs)
        domains = [domain_of(code) for code in self.base_codes]
        local = plain & np.array([domain is None for domain in domains])
        learned = {tokenizer.index[end]: local & np.isin(self.base_codes, codes)
                   for end, codes in tokenizer.ended_codes.items()}
        self.condition_end = tokenizer.index[CONDITION_END]
        self.endable = {self.condition_end: plain & np.isin(systems, ["SNOMED", "ICD10CM"]),
                        tokenizer.index[MEDICATION_END]: plain & (systems == "RXNORM")}
        for token, codes in learned.items():
            self.endable[token] = self.endable[token] | codes
        self.learned_condition_ends = learned.get(self.condition_end, np.zeros(self.size, dtype=bool))
        self.year = np.full(self.size, -1)
        year_tokens = tokenizer.year_tokens()
        self.year[list(year_tokens.values())] = list(year_tokens)
        self.year_marks = tokenizer.year_marks
        marks = sorted((int(self.year[i]), i) for i in np.flatnonzero(self.year >= 0))
        self.mark_years = np.array([year for year, _ in marks])
        self.mark_starts = np.array([year_start_day(year) for year, _ in marks])
        self.mark_tokens = np.array([token for _, token in marks])
        # the record's end year, written after its start year (tokenizers with `record_end`)
        self.until = tokenizer.until_tokens()
        self.end, self.eos = tokenizer.index[END], tokenizer.index[EOS]
        self.token_of = tokenizer.index
        conditions = {code for c in knowledge.conditions.values() for code in (c.code, c.icd10cm)}
        self.is_condition = np.isin(self.base_codes, sorted(conditions))
        self.chronic = knowledge.chronic_codes
        # how long a visit opened by each head may run (0: within its day)
        self.longest = np.array([LONGEST_VISIT_DAYS.get(token.removeprefix(VISIT_START_PREFIX), 0.0)
                                 if token.startswith(VISIT_START_PREFIX) else 0.0 for token in vocab])
        self.between_visits = self.is_gap | self.is_head
        # an end token that could name no code would only close its visit unfinished: it is not written
        nameless = [token for token, codes in self.endable.items() if not codes.any()]
        self.in_visit = (self.is_gap | (self.is_ended & ~np.isin(np.arange(self.size), nameless))
                         | (np.arange(self.size) == self.end))
        self.in_visit_fixed = self.in_visit & ~self.is_gap  # what a visit may hold whatever its length so far
        self.shortest_gap = int(self.gap[self.gaps].min())
        # Outside visits only diagnoses, prescriptions and their ends are recorded: measurements and
        # vaccinations need an encounter. A history before the record keeps only those (what is still
        # true). Codes of no kind the vocabulary knows (a source's local lab and drug codes: MIMIC's
        # outpatient labs) are written outside visits where the source recorded them there: no rule
        # judges them.
        self.history = (self.in_visit & ~self.is_gap) | (plain & np.isin(domains, ["condition", "medication"]))
        unjudged = np.array([domain is None for domain in domains]) & np.isin(self.base_codes, tokenizer.recorded_outside)
        self.outside_visit = self.history | (self.is_code & unjudged)
        self.encounter_types = np.flatnonzero(np.isin(domains, ["encounter_type"]))
        self.is_encounter_type = np.isin(np.arange(self.size), self.encounter_types)
        self.no_visit = tokenizer.index[NO_VISIT]


class RecordWriter:
    """The sampling constraint for one batch: follows each row's record as it is written and says
    which tokens may come next."""

    def __init__(self, grammar: TokenGrammar, rules: RuleMask, patients: Sequence[PatientState]) -> None:
        self.g, self.rules = grammar, rules
        # The rule mask reads conditions from a private copy, updated as the model writes.
        self.state = [dataclasses.replace(p, conditions=dict(p.conditions), medications=dict(p.medications),
                                          source_state=None) for p in patients]
        rows = len(patients)
        self.day = np.zeros(rows, dtype=np.int64)
        self.offset = np.zeros(rows, dtype=np.int64)
        self.started = np.zeros(rows, dtype=bool)  # start year drawn
        self.marked = np.full(rows, -1)  # the last year marked (tokenizers with year marks)
        self.in_visit = np.zeros(rows, dtype=bool)
        self.longest = np.zeros(rows)  # days the open visit may run
        self.outside = np.zeros(rows, dtype=bool)  # in a segment of facts outside any visit
        self.ending = np.full(rows, -1)  # the condition_end / medication_end token awaiting its code
        self.done = np.zeros(rows, dtype=bool)
        self.visit_codes = np.zeros((rows, grammar.size), dtype=bool)
        self.touched = np.zeros((rows, grammar.size), dtype=bool)  # codes that may not recur this visit
        self.exit_day = np.array([p.exit_day for p in patients])
        # the token naming the year each record ends in (the engine's end: death or the period's end)
        last_year = max(grammar.until, default=0)
        self.until = np.array([grammar.until.get(min(calendar_date(p.exit_day - 1e-6).year, last_year), -1)
                               for p in patients]) if grammar.until else np.full(rows, -1)
        self.until_due = np.zeros(rows, dtype=bool)
        self.birth_day = np.array([p.birth_day for p in patients])
        # the year a record starts: any from birth to entry, when the patient enters with a history;
        # the entry year, when the record starts there (as the records of the model's source did)
        births = np.array([calendar_date(p.birth_day).year for p in patients])
        entries = np.array([calendar_date(p.entry_day).year for p in patients])
        births = np.where([p.record_starts_at_entry for p in patients], entries, births)
        self.years = (grammar.year[None, :] >= births[:, None]) & (grammar.year[None, :] <= entries[:, None])

    def __call__(self, tokens: torch.Tensor) -> np.ndarray:
        if tokens.shape[1] > 3:
            self._advance(tokens[:, -1].numpy())
        g = self.g
        # In a visit: its codes and structural tokens; a time gap only while the visit may still run
        # that long (most visits end within their day, so no gap). Between visits: gaps and heads.
        allowed = self.visit_codes | g.in_visit_fixed
        allowed[~self.in_visit] = g.between_visits
        running = np.flatnonzero(self.in_visit & (self.offset + g.shortest_gap <= self.longest))
        allowed[np.ix_(running, g.gaps)] = self.offset[running, None] + g.gap[g.gaps] <= self.longest[running, None]
        allowed[self.in_visit & self.outside] &= g.outside_visit
        # a condition ends between visits, never in the visit that may treat it
        allowed[self.in_visit & ~self.outside, g.condition_end] = False
        allowed[self.in_visit & (self.day + self.offset < self.birth_day)] &= ~g.is_ended
        for token, endable in g.endable.items():
            allowed[self.ending == token] = endable
        for row in np.flatnonzero(self.ending == g.condition_end):
            allowed[row] &= self._endable_conditions(row)
        allowed[~self.started] = self.years[~self.started]
        if g.year_marks:  # between visits, the clock passing into a new year is marked before all else
            index = np.searchsorted(g.mark_starts, self.day, side="right") - 1
            due = self.started & ~self.in_visit & ~self.done & (index >= 0) & (g.mark_years[index.clip(0)] > self.marked)
            rows = np.flatnonzero(due)
            allowed[rows] = False
            allowed[rows, g.mark_tokens[index[rows]]] = True
        rows = np.flatnonzero(self.until_due)  # right after the start year: the year the record ends
        allowed[rows] = False
        allowed[rows, self.until[rows]] = True
        # nothing left to name (e.g. condition_end with no condition to end): close the segment,
        # which drops the unfinished fact
        allowed[~allowed.any(axis=1), g.end] = True
        allowed[self.done] = False
        allowed[self.done, g.eos] = True
        return allowed

    def _advance(self, last: np.ndarray) -> None:
        g = self.g
        year = g.year[last]
        starting = (year >= 0) & ~self.started
        self.day[starting] = [year_start_day(int(y)) for y in year[starting]]
        self.started |= starting
        self.until_due = starting & (self.until >= 0)
        self.marked = np.where(year >= 0, year, self.marked)
        gap = g.gap[last]
        self.day += np.where(self.in_visit, 0, gap)
        self.offset += np.where(self.in_visit, gap, 0)
        self.in_visit &= last != g.end
        # the record ends where the engine ends it: at death or the end of the period
        self.done |= (last == g.eos) | (self.started & ~self.in_visit & (self.day >= self.exit_day))
        ended_code = self.ending >= 0
        self.ending = np.where(g.is_ended[last], last, -1)
        opening = g.is_head[last] & ~self.done
        self.offset[opening] = 0
        self.in_visit |= opening
        self.touched[opening] = False
        self.longest = np.where(opening, g.longest[last], self.longest)
        self.outside = np.where(opening, last == g.no_visit, self.outside)
        # Rules are checked again whenever the day or the patient's conditions change in a visit.
        stale = opening | (self.in_visit & (gap > 0))
        typed = np.flatnonzero(self.in_visit & g.is_encounter_type[last])  # a visit has one type
        self.touched[np.ix_(typed, g.encounter_types)] = True
        self.visit_codes[np.ix_(typed, g.encounter_types)] = False
        for row in np.flatnonzero(self.in_visit & g.is_condition[last]):
            stale[row] |= self._record(row, int(last[row]), bool(ended_code[row]))
        if stale.any():
            rows = np.flatnonzero(stale)
            states, days = [self.state[r] for r in rows], self.day[rows] + self.offset[rows]
            # a visit's facts fall somewhere within its day: the codes must be allowed all day long
            allowed = self.rules.allowed(states, days, until=days + 1.0)
            # a visit's type, or a condition begun or ended in it, does not recur
            self.visit_codes[rows] = allowed & g.is_code & ~self.touched[rows]

    def _endable_conditions(self, row: int) -> np.ndarray:
        """Codes condition_end may name: a known acute condition active since before this visit
        (known chronic ones do not resolve), or a code no rule judges that the source ended so."""
        endable = self.g.learned_condition_ends.copy()
        day = self.day[row] + self.offset[row]
        for code, end in self.state[row].conditions.items():
            token = self.g.token_of.get(code)
            if token is not None and end > day and not self.touched[row, token] and code not in self.g.chronic:
                endable[token] = True
        return endable

    def _record(self, row: int, token: int, ended: bool) -> bool:
        """Keep the row's conditions current; True when they changed."""
        conditions, code = self.state[row].conditions, self.g.base_codes[token]
        self.touched[row, token] = True
        if ended:
            if code not in conditions:
                return False
            conditions[code] = float(self.day[row] + self.offset[row])
        else:
            conditions[code] = ACTIVE
        return True


def start_at_first_visit(patient: PatientState, segments: Sequence[Segment]) -> None:
    """A record that starts at entry (a patient drawn from the model's population, whose record
    started with its first visit) starts with its first written visit: the model dates a record from
    the first of its start year and the drawn entry day falls anywhere in that year, so a first visit
    written before it would otherwise be history, of which only diagnoses and drugs are kept (MIMIC's
    first ICU stays were lost so). Moving the visits to the entry day instead shifted whole records
    by months (a Synthea model's bigram R2 0.63 -> 0.56)."""
    if not patient.record_starts_at_entry:
        return
    first = next((segment.day for segment in segments if segment.encounter_class is not None), None)
    if first is not None and first < patient.entry_day:
        patient.entry_day = float(max(first, math.ceil(patient.birth_day)))


class ModelSource(TrajectorySource[ModelPlan]):
    """Trajectory source backed by a trained model folder (weights, tokenizer, model card)."""

    def __init__(self, folder: Path, knowledge: Knowledge | None = None, temperature: float = 1.0,
                 top_p: float = 1.0) -> None:
        self.model, self.tokenizer = load_model(folder)
        self.knowledge = knowledge or load_knowledge()
        self.grammar = TokenGrammar(self.tokenizer, self.knowledge)
        # the drugs' indications its records learned beside the knowledge's (a model fitted before
        # them, the shipped one, has the knowledge's alone)
        self.indications = drug_indications(self.knowledge, self.tokenizer.drug_indications)
        # the Prescriber drops a learned drug ordered for none of its indications; masking it at sampling
        # instead steered a Synthea model's records elsewhere (prevalence R2 0.83 against 0.88 dropped)
        self.judged = judged_drugs(self.knowledge, self.tokenizer.drug_indications, self.tokenizer.always_indicated)
        self.rules = RuleMask(self.grammar.base_codes, self.knowledge, self.indications)
        self.temperature, self.top_p = temperature, top_p
        codes = {token.partition("#")[0] for token in self.tokenizer.vocab}
        codes |= {code for folded in self.tokenizer.folded.values() for code in folded}
        self.defers = frozenset(FactKind(kind) for kind in self.tokenizer.engine_schedules)
        self.authors = frozenset({FactKind.VISITS} | {fact_kind(code) for code in codes}) - ENGINE_KINDS - {None} - self.defers
        # the measurements its source recorded, by the body's codes: the engine adds no others
        self.measured = frozenset(SAME_MEASUREMENT.get(code, code) for code in codes if domain_of(code) in ("lab", "vital"))
        # a model of trajsim's own charts (the shipped one) learned the laboratory's whole panels; one of
        # a user's records writes the results its source reported, and no others
        self.whole_panels = bool(self.tokenizer.engine_schedules)
        self.records_stops = self.tokenizer.records_stops
        self.pregnancy_only = frozenset(self.tokenizer.pregnancy_codes)
        # a measurement its source recorded only under another code (Synthea's MDRD eGFR) is written so
        self.measurement_codes = {body: other for other, body in SAME_MEASUREMENT.items()
                                  if other in self.tokenizer.index and body not in self.tokenizer.index}

    def plan(self, patients: Sequence[PatientState[ModelPlan]]) -> None:
        """Write the records of every patient not yet planned, in one batched pass (the engine calls
        this for each chunk before it starts, so patients entering at different times share a batch).
        The history before entry is written together with the rest."""
        unplanned = [p for p in patients if p.source_state is None]
        if unplanned:
            for patient, segments in zip(unplanned, self.write_records(unplanned)):
                patient.source_state = ModelPlan(deque())
                start_at_first_visit(patient, segments)
                for visit in self.plan_visits(patient, segments):
                    self._leave_to_engine(patient.source_state, visit)

    def next_visits(self, patients: Sequence[PatientState[ModelPlan]]) -> list[Visit | None]:
        self.plan(patients)
        return [self._checked(p, p.source_state.visits.popleft()) if p.source_state.visits else None
                for p in patients]

    def _checked(self, patient: PatientState[ModelPlan], visit: Visit) -> Visit:
        """The planned visit without facts the rules now forbid: the patient as the engine recorded
        it can differ from the record the mask followed while writing (the engine redraws the day of
        death as diagnoses accrue); history before entry passes. A drug dated at the very moment its
        indication ends is dropped in any case: it would have none."""
        ending = {(fact.text, fact.offset_days) for fact in visit.facts if fact.code == CONDITION_END}
        visit.facts = [fact for fact in visit.facts if (fact.text, fact.offset_days) not in ending
                       or fact.code == CONDITION_END]
        if patient.now <= patient.entry_day:
            return visit
        state = dataclasses.replace(patient, conditions=dict(patient.conditions), source_state=None)
        day = max(visit.day, patient.now)
        allowed, kept = None, []  # the mask of the conditions so far, evaluated when a code needs it
        for fact in visit.facts:
            token = self.tokenizer.index.get(fact.code)
            if token is not None and self.grammar.is_code[token]:
                if allowed is None:
                    allowed = self.rules.allowed([state], day)[0]
                if not allowed[token]:
                    continue
            kept.append(fact)
            if token is not None and self.grammar.is_condition[token]:
                state.conditions[fact.code] = ACTIVE
                allowed = None
        visit.facts = kept
        return visit

    def _leave_to_engine(self, plan: ModelPlan, visit: Visit) -> None:
        """Plan a written visit without the kinds the engine writes for this model: a well visit
        becomes findings for the engine's next one (but its vital signs, which that visit takes),
        a vaccine is dropped."""
        well = FactKind.WELL_VISITS in self.defers and any(f.code in (WELL_CHILD, WELL_ADULT) for f in visit.facts)
        kept = [f for f in visit.facts if fact_kind(f.code) not in self.defers
                and not (well and domain_of(f.code) == "vital")]
        if well:
            plan.well_findings.append((visit.day, kept))
        else:
            plan.visits.append(dataclasses.replace(visit, facts=kept))

    def complete_visit(self, patient: PatientState[ModelPlan], visit: Visit) -> list[Fact]:
        """At a well visit of the engine's, the vital signs this model's source took at that age and
        the findings of the model's own well visits since the last one."""
        if FactKind.WELL_VISITS not in self.defers or not any(f.code in (WELL_CHILD, WELL_ADULT) for f in visit.facts):
            return []
        k, pending = self.knowledge, patient.source_state.well_findings
        facts = [f for f in vitals(k, patient, visit.day, active_keys(k, patient, visit.day)) if f.code in self.measured]
        while pending and pending[0][0] <= visit.day:
            facts += pending.popleft()[1]
        return facts

    @property
    def max_record_tokens(self) -> int:
        """How long a written record may run before it is cut (the engine ends it well before, at
        death or the end of its period, unless the model runs away)."""
        return max(MAX_RECORD_CONTEXTS * self.model.config.block_size, LONGEST_RECORDS * self.tokenizer.longest_record)

    def write_records(self, patients: Sequence[PatientState]) -> list[list[Segment]]:
        """Each patient's record as the model writes it, one batched pass for all."""
        return [self.tokenizer.segments(row.tolist(), p.rng)[2] for row, p in zip(self.write_tokens(patients), patients)]

    def write_tokens(self, patients: Sequence[PatientState]) -> torch.Tensor:
        """The token rows of `write_records` (EOS-padded)."""
        index = self.tokenizer.index
        prompts = torch.tensor([[index[BOS], index[SEXES.get(f"TRAJSIM/sex/{p.sex}", "SEX/U")],
                                 index[birth_band(calendar_date(p.birth_day).year)]] for p in patients])
        writer = RecordWriter(self.grammar, self.rules, patients)
        with one_thread():
            return generate(self.model, prompts, row_seeds([p.rng for p in patients]), self.max_record_tokens,
                            index[EOS], self.temperature,
                            self.top_p, writer, self.tokenizer.header_length)

    def plan_visits(self, patient: PatientState, segments: list[Segment]) -> list[Visit]:
        """Engine visits from written segments: history before entry becomes one out-of-visit entry
        dated by negative offsets (what a segment before entry dates after it is of no visit the
        record holds, and goes); visits get a time of day and a length typical of their class. A
        record from birth whose first visit is the birth stay has it at birth: the model's first
        time gap is binned too coarsely to place it (it wrote stays weeks to months after birth); a
        birth stay the model writes later than that is not one and is left out."""
        rng, entry = patient.rng, patient.entry_day
        active = dict(patient.conditions)
        history: list[Fact] = []
        visits: list[Visit] = []
        for segment in segments:
            if segment.encounter_class is None and segment.facts and segment.facts[0].code == DEATH:
                continue
            start = float(segment.day) if segment.day < entry else segment.day + self._time_of_day(segment, rng)
            if (not visits and entry == patient.birth_day and segment.encounter_class == "IMP"
                    and any(fact.code == NEWBORN_STAY for fact in segment.facts)):
                start = patient.birth_day
            facts = [self._fact(fact, start + fact.offset_days, active) for fact in segment.facts
                     if fact.code != NEWBORN_STAY or start - patient.birth_day <= 1.0]  # a birth stay is at birth
            if segment.day < entry:  # of visits before the record, only what is still true is kept
                history += [dataclasses.replace(f, offset_days=start + f.offset_days - entry) for f in facts
                            if start + f.offset_days < entry  # a stay running past entry is not history
                            and (f.code in ENDED or self.grammar.history[self.tokenizer.index.get(f.code, 0)])]
            else:
                visits.append(Visit(start, segment.encounter_class, self._duration(segment, rng), facts))
        return ([Visit(entry, None, 0.0, history)] if history else []) + visits

    def _fact(self, fact: CodedFact, day: float, active: dict[str, float]) -> Fact:
        """An engine fact; a drug names an active indication, as the engine's rules expect."""
        text = fact.text
        if fact.code == CONDITION_END and text in active:
            active[text] = day
        elif fact.code in self.indications:
            text = next((c for c in self.indications[fact.code] if active.get(c, NEVER_RECORDED) > day), None)
        elif domain_of(fact.code) == "condition":
            active[fact.code] = ACTIVE
        return Fact(fact.code, float(fact.offset_days), fact.value, fact.unit, text)

    @staticmethod
    def _time_of_day(segment: Segment, rng: np.random.Generator) -> float:
        """Clinics see patients in quarter-hour slots in opening hours; emergencies come at any hour."""
        if segment.encounter_class == "AMB":
            return office_slot(rng)
        return float(rng.uniform(0.0, 1.0)) if segment.encounter_class else 0.5

    @staticmethod
    def _duration(segment: Segment, rng: np.random.Generator) -> float:
        if segment.encounter_class == "AMB":
            return segment.end_offset_days + rng.uniform(15, 40) / MINUTES_PER_DAY
        if segment.encounter_class == "EMER":
            return segment.end_offset_days + rng.uniform(2, 6) / 24
        if segment.encounter_class == "IMP":
            return max(float(segment.end_offset_days), rng.uniform(0.5, 1.0))
        return 0.0

