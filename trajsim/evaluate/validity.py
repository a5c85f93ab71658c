"""Validity: does the synthetic table break clinical rules that real records keep?

The rule checker (`trajsim.rules.find_violations`) runs on both tables;
counts are compared per 1,000 patients so tables of different sizes line up.
"""

from __future__ import annotations

from trajsim.evaluate import plots
from trajsim.evaluate.section import Headline, Plot, Section, rounded
from trajsim.evaluate.trajectories import Views
from trajsim.rules import RULES, find_violations, violation_counts


def per_thousand(count: int, patients: int) -> float | None:
    return rounded(1000 * count / patients, 2) if patients else None


def validity(real: Views, synthetic: Views) -> Section:
    """Violations by rule in each table, as counts and per 1,000 patients."""
    counts = {name: violation_counts(find_violations(views.events)) for name, views in
              (("real", real), ("synthetic", synthetic))}
    patients = {"real": real.patients.height, "synthetic": synthetic.patients.height}
    by_rule = {rule: {"description": description,
                      **{name: counts[name].get(rule, 0) for name in counts},
                      **{f"{name}_per_1000": per_thousand(counts[name].get(rule, 0), patients[name]) for name in counts}}
               for rule, description in RULES.items()}
    totals = {name: sum(counts[name].values()) for name in counts}
    metrics = {"total": totals,
               "total_per_1000": {name: per_thousand(totals[name], patients[name]) for name in counts},
               "by_rule": by_rule}
    headlines = [Headline("Rule violations per 1,000 synthetic patients", metrics["total_per_1000"]["synthetic"],
                          f"real {metrics['total_per_1000']['real']}; 0 = clinically valid")]
    figure, (ax,) = plots.panels(1, size=(9.0, 4.0))
    plots.paired_bars(ax, list(RULES), [row["real_per_1000"] or 0 for row in by_rule.values()],
                      [row["synthetic_per_1000"] or 0 for row in by_rule.values()],
                      "Violations per 1,000 patients by rule", "per 1,000 patients")
    if not any(totals.values()):
        ax.text(0.5, 0.5, "no violations in either table", transform=ax.transAxes, ha="center", va="center")
    plot = Plot("Rule violations", "Each bar counts facts that break one clinical rule (a drug without its "
                "indication, a value outside physiological bounds, a fact after death, ...), per 1,000 patients. "
                "Real records can break rules too (coding errors, missing history), so the real bars are the baseline.",
                plots.png(figure))
    return Section("validity", __doc__, metrics, headlines, [plot])
