"""The `[trial]` section of a scenario: who is eligible, when follow-up starts, what counts as an
outcome and how large the arm should be. Validated with the rest of the scenario, so a mistake names
its field (`trial.index.min_value`, `trial.endpoints[1].codes`, ...).

Wherever a list of codes is asked for, an entry is a code (`SYSTEM/CODE`), the name of a set in
`trial.code_sets`, or `@name`, a set shipped with trajsim (`trajsim/knowledge/data/code_sets.csv`).
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, StrictFloat, StrictInt, StrictStr, field_validator, model_validator

from trajsim.knowledge.code_sets import PREFIX, named_code_set
from trajsim.scenario.base import StrictModel

CodeList = tuple[StrictStr, ...]


class _ValueRange(StrictModel):
    """Shared by everything that can require a lab value in [min_value, max_value]."""

    min_value: StrictFloat | None = None
    max_value: StrictFloat | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _ValueRange:
        if self.min_value is not None and self.max_value is not None and self.max_value < self.min_value:
            raise ValueError(f"max_value ({self.max_value}) must not be below min_value ({self.min_value})")
        return self


class _Interval(StrictModel):
    """A half-open interval [low, high) of the subclass's two fields, named in `_bounds`."""

    _bounds: tuple[str, str]

    @model_validator(mode="after")
    def _ordered(self) -> _Interval:
        low, high = (getattr(self, name) for name in self._bounds)
        if high <= low:
            raise ValueError(f"{self._bounds[1]} ({high}) must be after {self._bounds[0]} ({low})")
        return self


class AgeRange(_Interval):
    """Age in years at the index date, in [min, max)."""

    _bounds = ("min", "max")
    min: StrictFloat = Field(0, ge=0, le=120)
    max: StrictFloat = Field(121, gt=0, le=121)


class Window(_Interval):
    """Calendar dates [start, end) within which the index date must fall."""

    _bounds = ("start", "end")
    start: date
    end: date


class IndexEvent(_ValueRange):
    """Follow-up starts at the first event with one of `codes` (and, for a lab, a value in range) inside
    `window` at which every eligibility criterion holds."""

    codes: CodeList = Field(min_length=1)
    window: Window


class Criterion(_ValueRange):
    """An event with one of `codes` (value in range, if given) on or before the index date, within
    `lookback_days` of it (any time before if omitted)."""

    codes: CodeList = Field(min_length=1)
    lookback_days: StrictInt | None = Field(None, ge=0)


class Endpoint(StrictModel):
    """`time_to_event`: the first event with one of `codes` after the index date.
    `lab_change`: the value of the one lab in `codes` nearest to `at_days` after the index date (within
    `window_days`) minus its last value on or before the index date (within `baseline_days`)."""

    name: StrictStr = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: StrictStr | None = None
    kind: Literal["time_to_event", "lab_change"] = "time_to_event"
    codes: CodeList = Field(min_length=1)
    at_days: StrictInt | None = Field(None, ge=1)
    window_days: StrictInt = Field(60, ge=0)
    baseline_days: StrictInt = Field(90, ge=0)

    @model_validator(mode="after")
    def _lab_change_needs_one_lab_and_a_time(self) -> Endpoint:
        if self.kind == "lab_change" and (self.at_days is None or len(self.codes) != 1):
            raise ValueError("a lab_change endpoint needs exactly one code and at_days")
        return self

    @property
    def title(self) -> str:
        return self.label or self.name


class PowerTarget(StrictModel):
    """The effect a two-arm trial (1:1) should detect on a time-to-event endpoint."""

    endpoint: StrictStr
    hazard_ratio: StrictFloat = Field(0.8, gt=0)
    alpha: StrictFloat = Field(0.05, gt=0, lt=1)
    power: StrictFloat = Field(0.8, gt=0, lt=1)

    @field_validator("hazard_ratio")
    @classmethod
    def _an_effect(cls, hazard_ratio: float) -> float:
        if hazard_ratio == 1:
            raise ValueError("must differ from 1 (no effect cannot be detected)")
        return hazard_ratio


class Trial(StrictModel):
    """Eligibility, index date, follow-up and endpoints of a (synthetic) control arm."""

    target_size: StrictInt = Field(500, ge=1, le=1_000_000)
    max_patients: StrictInt = Field(20_000, ge=1, le=100_000_000)  # simulated at most before giving up
    batch_size: StrictInt = Field(500, ge=1, le=100_000)
    code_sets: dict[str, CodeList] = {}
    age: AgeRange = AgeRange()
    sex: Literal["any", "F", "M"] = "any"
    index: IndexEvent
    require: tuple[Criterion, ...] = ()
    exclude: tuple[Criterion, ...] = ()
    follow_up_days: StrictInt = Field(1826, ge=1)
    loss_to_follow_up_days: StrictInt | None = Field(None, ge=1)  # no record for this long ends follow-up
    baseline: tuple[StrictStr, ...] = ()  # code set names reported as history at index in Table 1
    endpoints: tuple[Endpoint, ...] = Field(min_length=1)
    power: PowerTarget | None = None
    # With a real arm: compare it with the synthetic one as built, matched or weighted on propensity.
    adjustment: Literal["none", "match", "weight"] = "none"

    @model_validator(mode="after")
    def _references_resolve(self) -> Trial:
        for name, codes in self.code_sets.items():
            if "/" in name or name.startswith(PREFIX):
                raise ValueError(f"code_sets.{name}: a set name may not contain '/' or start with '{PREFIX}'")
            if not codes or any("/" not in code and not code.startswith(PREFIX) for code in codes):
                raise ValueError(f"code_sets.{name}: list one or more codes written SYSTEM/CODE or {PREFIX}name")
        places = [(f"code_sets.{name}", codes) for name, codes in self.code_sets.items()]
        places += [("index.codes", self.index.codes)]
        places += [(f"require[{i}].codes", c.codes) for i, c in enumerate(self.require)]
        places += [(f"exclude[{i}].codes", c.codes) for i, c in enumerate(self.exclude)]
        places += [(f"endpoints[{i}].codes", e.codes) for i, e in enumerate(self.endpoints)]
        places += [("baseline", self.baseline)]
        for field, entries in places:
            for entry in entries:
                if entry.startswith(PREFIX):
                    try:
                        named_code_set(entry)
                    except ValueError as exc:
                        raise ValueError(f"{field}: {exc}") from None
                elif "/" not in entry and entry not in self.code_sets:
                    raise ValueError(f"{field}: {entry!r} is neither a SYSTEM/CODE code nor a name in code_sets "
                                     f"({', '.join(self.code_sets) or 'none defined'}); shipped sets are "
                                     f"written {PREFIX}name")
        columns = [self.baseline_column(name) for name in self.baseline]
        if len(set(columns)) != len(columns):
            raise ValueError(f"baseline: each set may appear once (got {', '.join(self.baseline)})")
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"endpoints: names must be unique (got {', '.join(names)})")
        if self.power is not None and self.power.endpoint not in {
                e.name for e in self.endpoints if e.kind == "time_to_event"}:
            raise ValueError(f"power.endpoint: {self.power.endpoint!r} is not the name of a time_to_event endpoint")
        return self

    def resolve(self, entries: CodeList, descendants: dict[str, frozenset[str]] | None = None) -> list[str]:
        """The codes `entries` stand for: set names (the scenario's and the shipped @names) expanded,
        then each code's descendants added (from the vocabulary passed, if any), sorted."""
        codes = {code for entry in entries for code in self._expand(entry)}
        if descendants:
            codes |= {child for code in list(codes) for child in descendants.get(code, ())}
        return sorted(codes)

    def _expand(self, entry: str) -> tuple[str, ...]:
        if entry.startswith(PREFIX):
            return named_code_set(entry).codes
        if entry in self.code_sets:
            return tuple(code for member in self.code_sets[entry] for code in self._expand(member))
        return (entry,)

    @staticmethod
    def baseline_column(name: str) -> str:
        """The arm table's column for a `baseline` set: `history_<name>`, without the @ of a shipped set."""
        return f"history_{name.removeprefix(PREFIX)}"

    @staticmethod
    def baseline_label(name: str) -> str:
        """What Table 1 calls a `baseline` set ("History of <label>"): a shipped set's label, in lower
        case unless it starts with an acronym, or the scenario's own name."""
        if not name.startswith(PREFIX):
            return name
        label = named_code_set(name).label
        return label if label[1:2].isupper() else label[0].lower() + label[1:]
