"""Synthetic control arms for trial planning: eligibility over the event table, index date and
follow-up, endpoints, and the statistics a planner sizes a study with (Table 1, Kaplan-Meier, event
rates, power). `trajsim trial` builds an arm from a scenario's `[trial]` section and, given real
records, the same arm from them for comparison, optionally matched or weighted on a propensity score.
"""


class TrialError(ValueError):
    """A trial that cannot be built as asked; the message is meant for the user as is."""
