"""The cause of a death: what a death certificate's underlying cause would name."""

from __future__ import annotations

from trajsim.engine.schedules import active_keys
from trajsim.engine.source import PatientState
from trajsim.knowledge import Knowledge

NATURAL_DEATH = "SNOMED/9855000"  # Natural death with unknown cause: no condition raised the hazard


def cause_of_death(knowledge: Knowledge, patient: PatientState, day: float) -> str:
    """The code of the active condition with the highest mortality hazard ratio (the one that drove
    the death hazard `update_death` drew from), or a natural death when none raised it."""
    ratios = knowledge.mortality_hazard_ratios
    driving = sorted(key for key in active_keys(knowledge, patient, day) if key in ratios)
    if not driving:
        return NATURAL_DEATH
    return knowledge.conditions[max(driving, key=lambda key: ratios[key])].code
