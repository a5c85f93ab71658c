"""What a chronic care plan names beside the condition: the care team that manages it (the
patient's primary care physician, for the clinic) and the treatment goals guidelines set for the
condition (`data/goals.csv`: blood pressure below 130/80 mm Hg in hypertension, HbA1c below 7% in
diabetes, each target cited)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from fhir_export.tables import load_table
from fhir_export.terminology import UCUM, concept, profile
from trajsim.vocab import SYSTEM_URIS

Resource = dict[str, Any]
PRIMARY_CARE_PHYSICIAN = [concept(SYSTEM_URIS["SNOMED"], "446050000", "Primary care physician")]


@cache
def goal_targets() -> dict[str, tuple[str, tuple[tuple[str, str, float, str], ...]]]:
    """Condition code -> (goal description, its targets as (measure code, comparator, value, unit))."""
    goals: dict[str, tuple[str, tuple[tuple[str, str, float, str], ...]]] = {}
    for row in load_table("goals", ("condition", "description", "measure", "comparator", "value", "unit")):
        description, targets = goals.get(row["condition"], (row["description"], ()))
        goals[row["condition"]] = (description, targets + ((row["measure"], row["comparator"], float(row["value"]), row["unit"]),))
    return goals


def care_team(team_id: str, subject: dict[str, str], physician: dict[str, str], clinic: dict[str, str],
              start: str) -> Resource:
    """The active CareTeam `team_id` of a patient in chronic care from `start`: the primary care
    physician, on behalf of (and managed by) the clinic."""
    return {"resourceType": "CareTeam", "id": team_id, "meta": profile("us-core-careteam"), "status": "active",
            "name": "Primary care team", "subject": subject, "period": {"start": start},
            "participant": [{"role": PRIMARY_CARE_PHYSICIAN, "member": physician, "onBehalfOf": clinic,
                             "period": {"start": start}}],
            "managingOrganization": [clinic]}


def end_care_team(team: Resource, end: str) -> None:
    """The patient's care ended at `end` (death)."""
    team["status"] = "inactive"
    team["period"]["end"] = team["participant"][0]["period"]["end"] = end


def goal(goal_id: str, condition_code: str, subject: dict[str, str], condition: dict[str, str],
         expressed_by: dict[str, str], start: str, measure: Callable[[str], dict[str, Any]]) -> Resource | None:
    """The active Goal `goal_id` a guideline sets for the condition `condition_code` (None when
    goals.csv has none), from the day `start` of the diagnosis; `measure` gives a code's concept."""
    known = goal_targets().get(condition_code)
    if known is None:
        return None
    description, targets = known
    return {"resourceType": "Goal", "id": goal_id, "meta": profile("us-core-goal"), "lifecycleStatus": "active",
            "description": {"text": description}, "subject": subject, "startDate": start[:10],
            "target": [{"measure": measure(code),
                        "detailQuantity": {"value": value, "comparator": comparator, "unit": unit, "system": UCUM,
                                           "code": unit}}
                       for code, comparator, value, unit in targets],
            "expressedBy": expressed_by, "addresses": [condition]}
