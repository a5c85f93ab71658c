"""What every scenario file shares: one strict pydantic base, one way to read a TOML file and one way
to turn any mistake into a `ScenarioError` that names the file, the field and what is allowed, so the
CLI prints a sentence instead of a traceback whichever command read the file.

Scalar fields are strict (`StrictInt`, `StrictFloat`, `StrictStr`; an int still counts as a float):
TOML has its own numbers and booleans, so `size = "100"` or `size = true` is a mistake to report, not
a value to coerce.
"""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

MAX_SCENARIO_BYTES = 1_000_000  # the longest shipped scenario is a few kB

# Names go into resource ids and file names, so they keep to characters safe in both.
ScenarioName = Annotated[StrictStr, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
Seed = Annotated[StrictInt, Field(ge=0, lt=2**63)]


class StrictModel(BaseModel):
    """A scenario table: unknown fields are mistakes (usually typos), and a loaded scenario is a value."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Document = TypeVar("Document", bound=StrictModel)


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message is meant for the user as is."""


def load_toml(path: Path, root: type[Document]) -> Document:
    """The TOML file at `path` validated as `root`, or a ScenarioError saying what to fix. Only a
    small regular file is read: a pipe, device or folder would block or make no sense."""
    path = Path(path)
    try:
        facts = path.stat()
        if not stat.S_ISREG(facts.st_mode):
            raise ScenarioError(f"{path}: not a regular file (a folder, pipe or device); give a scenario .toml file")
        if facts.st_size > MAX_SCENARIO_BYTES:
            raise ScenarioError(f"{path}: {facts.st_size:,} bytes; a scenario is a small TOML file "
                                f"(at most {MAX_SCENARIO_BYTES:,} bytes)")
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = " (for a random seed use --seed)" if str(path).isdigit() else ""
        raise ScenarioError(f"{path}: no such scenario file{hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return validated(root, raw, str(path))


def with_overrides(scenario: Document, source: str, **changes: object) -> Document:
    """The scenario with overrides (dotted field names such as `population.size`; None leaves a field
    as it is), validated like the file, with `source` standing for the file in error messages."""
    data = scenario.model_dump()
    for dotted, value in changes.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        target = data
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return validated(type(scenario), data, source)


def validated(root: type[Document], data: dict[str, object], source: str) -> Document:
    """`data` as a `root`, or a ScenarioError naming `source` and every field at fault."""
    try:
        return root.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(describe_validation_error(exc, source, root)) from None


def describe_validation_error(error: ValidationError, source: str, root: type[BaseModel]) -> str:
    """One line per field at fault: `source: field: what is wrong (got value)`; the alternatives of a
    field that accepts several types are joined with "or". `root` is the model that was validated."""
    problems = error.errors()
    by_field: dict[str, list[str]] = {}
    for problem in problems:
        location = problem["loc"]
        if problem["type"] == "too_short" and any(
            other["loc"][: len(location)] == location and len(other["loc"]) > len(location) for other in problems
        ):
            continue  # a list emptied only because its items failed; those items are reported
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = f"unknown field; allowed here: {_allowed_fields(_field_path(location[:-1], root), root)}"
            field = _field_name(_field_path(location[:-1], root) + (location[-1],))
        else:
            field = _field_name(_field_path(location, root))
            if problem["type"] == "missing":
                message = "required field is missing"
        by_field.setdefault(field, []).append(message)
        if problem["type"] not in ("missing", "extra_forbidden") and not isinstance(problem["input"], dict):
            by_field[field].append(f"(got {problem['input']!r})")
    lines = []
    for field, parts in by_field.items():
        got = next((p for p in parts if p.startswith("(got ")), "")
        messages = " or ".join(dict.fromkeys(p for p in parts if not p.startswith("(got ")))
        lines.append(f"{source}: {field}: {messages}{' ' + got if got else ''}")
    return "\n".join(lines)


def _model_of(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _field_path(location: tuple[str | int, ...], root: type[BaseModel]) -> tuple[str | int, ...]:
    """The location without pydantic's union-member tags (e.g. `date`, `literal['birth']`)."""
    path: list[str | int] = []
    model: type[BaseModel] | None = root
    for part in location:
        if isinstance(part, int):
            path.append(part)
        elif model is not None and part in model.model_fields:
            path.append(part)
            model = _model_of(model.model_fields[part].annotation)
    return tuple(path)


def _field_name(path: tuple[str | int, ...]) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
        else:
            parts.append(part)
    return ".".join(parts) or "(top level)"


def _allowed_fields(path: tuple[str | int, ...], root: type[BaseModel]) -> str:
    model: type[BaseModel] | None = root
    for part in path:
        if isinstance(part, str) and model is not None:
            model = _model_of(model.model_fields[part].annotation)
    return ", ".join(model.model_fields) if model is not None else ""
