"""The engine's authority over every chart, whichever source proposes its visits.

A source proposes; before a visit is recorded each `ChartKeeper` of the patient vets it (sets the
values the patient's body gives, drops what the chart's rules forbid), and between visits the
keepers date what follows from the chart itself (the end of an acute episode) and the visits the
chart itself calls for (an acute event, the terminal encounter). Keepers are the
engine's, one set per patient (`chart_keepers`), so a learned model and the rule-based reference
source get the same physiology and the same clinical rules. What a keeper adds of its own accord
(an emergency, a renewal) it adds only when the engine adds care (the scenario's `care`); what the
rules require (guideline therapy, an episode's end, an acute condition's procedure) and what follows
from the engine's own facts (the terminal encounter before its day of death) it adds always.
"""

from __future__ import annotations

from trajsim.engine.source import Fact, PatientState, TrajectorySource, Visit
from trajsim.knowledge import Knowledge


class ChartKeeper:
    """One part of the engine's authority over a patient's chart. Every hook defaults to nothing."""

    def vet(self, patient: PatientState, visit: Visit) -> None:
        """Amend `visit.facts` in place before the visit is recorded (history before entry included)."""

    def between_visits(self, patient: PatientState, until: float) -> list[tuple[float, Fact]]:
        """Facts dated before `until` that follow from the chart so far, outside any visit."""
        return []

    def unplanned_visit(self, patient: PatientState, until: float) -> Visit | None:
        """A visit the chart calls for before `until` (an acute event on its own day), or None."""
        return None

    def follow_on(self, patient: PatientState) -> Visit | None:
        """A visit that continues the one just recorded (the admission from an ED visit), taken
        before any other keeper's, or None."""
        return None


def chart_keepers(knowledge: Knowledge, patient: PatientState, adds_care: bool = True,
                  source: TrajectorySource | None = None) -> list[ChartKeeper]:
    """The keepers of one patient's chart, in the order they vet a visit; `adds_care` lets them add
    the engine's own care beside the source's, and `source` says how its charts record
    measurements (its codes for the body's, the ones it records, whether panels come whole) and
    what its drugs are ordered for."""
    from trajsim.engine.acute import EmergencyKeeper  # the keepers subclass ChartKeeper, defined above
    from trajsim.engine.assessments import AssessmentKeeper
    from trajsim.engine.body import BodyKeeper
    from trajsim.engine.episodes import EpisodeKeeper
    from trajsim.engine.immunization import ImmunizationKeeper
    from trajsim.engine.labs import LabKeeper
    from trajsim.engine.pregnancy import PregnancyKeeper
    from trajsim.engine.prescriptions import Prescriber
    from trajsim.engine.preventive import LabScreeningKeeper, PreventiveKeeper
    from trajsim.engine.procedures import ProcedureKeeper

    # the PregnancyKeeper plans a pregnancy before any other keeper sees its visit, and dates its
    # delivery before an acute event can be drawn past it; the EmergencyKeeper turns an office
    # visit with an acute onset into an ED visit and gives an ED visit its triage (vital signs, a
    # reason); the EpisodeKeeper then settles which
    # conditions the visit holds (and ends), laboratory screenings proposed before their intervals give
    # way, the LabKeeper completes the panels ordered, and the
    # body is measured with them before the Prescriber judges what may be ordered there; screenings and
    # preventive exams proposed before their intervals give way before the procedures are vetted
    # and the screenings' questionnaires answered
    charts = TrajectorySource if source is None else source  # the contract's defaults: every measurement, whole panels
    measured = charts.measured
    return [PregnancyKeeper(knowledge, adds_care, charts.pregnancy_only), EmergencyKeeper(knowledge, adds_care, measured),
            EpisodeKeeper(knowledge), LabScreeningKeeper(knowledge),
            LabKeeper(charts.measurement_codes, measured, charts.whole_panels),
            BodyKeeper(knowledge, patient, measured), Prescriber(knowledge, adds_care, charts.indications, charts.judged),
            ImmunizationKeeper(knowledge),
            PreventiveKeeper(knowledge), ProcedureKeeper(knowledge), AssessmentKeeper(knowledge, asks=adds_care)]
