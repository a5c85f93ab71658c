"""The laboratory's side of an order: a panel is reported whole. Whoever proposed it (a monitoring
schedule naming the panel, a learned model naming one of its results), a visit's order of a
comprehensive metabolic panel records all fourteen results and an adult's eGFR, so a chart never
holds a creatinine without the rest of the panel it was drawn in. A source whose charts do not
report panels whole (`TrajectorySource.whole_panels`: a model of a user's records) has its results
recorded as it proposes them; a panel ordered by its code is still reported in full. The values
are the body's (`body.py`), which the keeper after this one sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from trajsim.engine.chart import ChartKeeper
from trajsim.engine.source import Fact, PatientState, Visit
from trajsim.knowledge.labs import lab_panels, panel_results, visit_orders
from trajsim.knowledge.physiology import SAME_MEASUREMENT


class LabKeeper(ChartKeeper):
    """Replaces a panel's code by its results and, with `completes`, completes a panel of which a
    source proposed only some results, once per panel and day of the visit."""

    def __init__(self, measurement_codes: Mapping[str, str] = MappingProxyType({}),
                 measured: frozenset[str] | None = None, completes: bool = True) -> None:
        self.measurement_codes = dict(measurement_codes)  # a member the source names by another code
        # a panel is completed with the results its source records (all of them for the reference)
        self.panels = {panel: tuple(m for m in members if measured is None or m in measured)
                       for panel, members in lab_panels().items()}
        self.orderable = frozenset(self.panels) | (panel_results() if completes else frozenset())

    def vet(self, patient: PatientState, visit: Visit) -> None:
        # a result the source names by another code for it (Synthea's MDRD eGFR) is the panel's
        # member, reported under the source's code
        source_code = self.measurement_codes | {SAME_MEASUREMENT[f.code]: f.code for f in visit.facts
                                                if f.code in SAME_MEASUREMENT}
        codes = [SAME_MEASUREMENT.get(f.code, f.code) for f in visit.facts]
        if not self.orderable.intersection(codes):
            return
        ordered: set[tuple[str, float]] = set()
        kept: list[Fact] = []
        for fact, panel in zip(visit.facts, visit_orders(codes, self.panels)):
            if panel not in self.panels:
                kept.append(fact)
            elif (panel, fact.offset_days) not in ordered:
                ordered.add((panel, fact.offset_days))
                kept += [Fact(source_code.get(member, member), offset_days=fact.offset_days)
                         for member in self.panels[panel]]
        visit.facts[:] = kept
