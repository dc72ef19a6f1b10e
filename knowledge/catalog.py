"""The technique catalog's schema, loader and validation.

A technique is a small program of changes relative to a baseline (``{times: 2}`` on
``embedding_dim``), the conditions under which it applies, a modest prior on its relative NE
gain, its cost and a citation. ``load_catalog`` reads ``techniques.yaml`` (or another file)
and refuses, naming the file, the technique and the field, anything that is not a valid
move of ``DEFAULT_ACTION_SPACE``: a typo in the catalog fails at load, not in a campaign.
"""

import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.actions import DEFAULT_ACTION_SPACE, Knob
from contracts.model import ModelSpec
from contracts.task import TaskDescriptor

# Technique ids stay short so that the agent's ``combo-<a>+<b>`` ids fit in its 48 characters.
MAX_TECHNIQUE_ID = 20

Kind = Literal["architecture", "training-efficiency", "optimization", "regularisation"]
OpName = Literal["set", "times", "plus", "prepend_layer", "append_layer"]
OP_NAMES: tuple[str, ...] = ("set", "times", "plus", "prepend_layer", "append_layer")
NAMED_WIDTHS = ("max", "min", "first", "last")


class CatalogError(ValueError):
    """The catalog is malformed; the message names the technique and the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Op(_Frozen):
    """One change of a technique: what to do to one ``ModelSpec`` field.

    Attributes:
        op: ``set`` (a value), ``times`` (multiply a number or every width), ``plus`` (add to
            a number), ``prepend_layer`` / ``append_layer`` (a widths list gains a layer).
        arg: The value, factor, addend or new layer's width (a number, or ``max``, ``min``,
            ``first``, ``last`` of the current widths).
    """

    op: OpName
    arg: Any


class Condition(_Frozen):
    """When a field's value lets a technique apply; every part given must hold.

    Attributes:
        one_of: Allowed values (YAML: a bare value, or ``in: [...]``).
        none_of: Refused values (YAML: ``not: [...]``).
        min: Smallest allowed number (inclusive).
        max: Largest allowed number (inclusive).
        exceeds: A baseline field the value must be strictly greater than.
        below: A baseline field the value must be strictly less than.
    """

    one_of: list[Any] | None = None
    none_of: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    exceeds: str | None = None
    below: str | None = None

    def numeric(self) -> bool:
        return any(v is not None for v in (self.min, self.max, self.exceeds, self.below))

    def holds(self, value: Any, baseline: ModelSpec) -> bool:
        """Whether ``value`` meets this condition (baseline fields are read from ``baseline``)."""
        if self.one_of is not None and value not in self.one_of:
            return False
        if self.none_of is not None and value in self.none_of:
            return False
        if self.numeric() and not _is_number(value):
            return False
        if self.min is not None and value < self.min:
            return False
        if self.max is not None and value > self.max:
            return False
        if self.exceeds is not None and not value > getattr(baseline, self.exceeds):
            return False
        return self.below is None or value < getattr(baseline, self.below)


class Prior(_Frozen):
    """Belief about a technique's relative gain before (or after) evidence.

    Attributes:
        gain: Mean relative gain of the metric (positive is better), e.g. 0.003 for 0.3% NE.
        sd: Its standard deviation.
    """

    gain: float = Field(ge=-0.1, le=0.1)
    sd: float = Field(gt=0.0, le=0.1)


class Technique(_Frozen):
    """One catalog entry (see ``knowledge/techniques.yaml`` for the op language).

    Attributes:
        id: Kebab-case, short (combinations are named ``combo-<a>+<b>``).
        title: One line; ``{old.<field>}`` and ``{new.<field>}`` are the baseline's and the
            candidate's values.
        family: The action-space family it belongs to (a family of one of its knobs).
        kind: What kind of change it is; combinations pair different kinds.
        changes: Field -> op, relative to the baseline.
        when: Field (or ``task.<field>``) -> condition; all must hold.
        prior: Expected relative gain and its uncertainty, before evidence.
        cost: Trial cost relative to the baseline's (when no cost model is given).
        rationale: Why it might help.
        citation: Where it is published.
    """

    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=MAX_TECHNIQUE_ID)
    title: str = Field(min_length=1)
    family: str
    kind: Kind
    changes: dict[str, Op] = Field(min_length=1)
    when: dict[str, Condition] = Field(default_factory=dict)
    prior: Prior
    cost: float = Field(gt=0.0, le=100.0)
    rationale: str = Field(min_length=1)
    citation: str = ""

    @field_validator("changes", mode="before")
    @classmethod
    def _parse_ops(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw  # pydantic reports the type error
        return {field: _parse_op(field, value) for field, value in raw.items()}

    @field_validator("when", mode="before")
    @classmethod
    def _parse_conditions(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        return {field: _parse_condition(field, value) for field, value in raw.items()}

    @model_validator(mode="after")
    def _valid_moves(self) -> "Technique":
        families = set()
        for field, op in self.changes.items():
            try:
                knob = DEFAULT_ACTION_SPACE.knob(field)
            except ValueError as err:
                raise ValueError(f"changes.{field}: {err}") from None
            _check_op(knob, op)
            families.add(knob.family)
        if self.family not in families:
            raise ValueError(
                f"family: {self.family!r} is not a family of the knobs it changes "
                f"({', '.join(sorted(families))})"
            )
        for key, condition in self.when.items():
            _check_condition(key, condition)
        try:
            self.title.format(old=ModelSpec(), new=ModelSpec())
        except (AttributeError, KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"title: {self.title!r} does not format ({type(err).__name__}: {err}); "
                "placeholders are {old.<field>} and {new.<field>}"
            ) from None
        return self


def _parse_op(field: str, raw: Any) -> Any:
    """YAML shorthand -> ``Op`` fields: a bare value sets; a one-key mapping names the op."""
    if isinstance(raw, Op):
        return raw
    if isinstance(raw, dict):
        if len(raw) != 1 or next(iter(raw)) not in OP_NAMES:
            raise ValueError(
                f"{field}: {raw!r} is not an op; write a value, or one of "
                "{set: v}, {times: x}, {plus: x}, {prepend_layer: w}, {append_layer: w}"
            )
        ((name, arg),) = raw.items()
        return {"op": name, "arg": arg}
    return {"op": "set", "arg": raw}


def _parse_condition(field: str, raw: Any) -> Any:
    """YAML shorthand -> ``Condition`` fields: a bare value means equality."""
    if isinstance(raw, Condition):
        return raw
    if not isinstance(raw, dict):
        return {"one_of": [raw]}
    renamed = {"in": "one_of", "not": "none_of"}
    known = {"in", "not", "min", "max", "exceeds", "below"}
    if unknown := sorted(set(raw) - known):
        raise ValueError(f"{field}: unknown condition {unknown}; known: {sorted(known)}")
    if not raw:
        raise ValueError(f"{field}: an empty condition")
    return {renamed.get(k, k): v for k, v in raw.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_op(knob: Knob, op: Op) -> None:
    """Raise ``ValueError`` naming the field when ``op`` cannot apply to ``knob``."""
    where = f"changes.{knob.field}"
    if op.op == "set":
        try:
            knob.check(op.arg)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    elif op.op in ("times", "plus"):
        allowed = ("int", "float", "widths") if op.op == "times" else ("int", "float")
        if knob.kind not in allowed:
            raise ValueError(f"{where}: {op.op} does not apply to a {knob.kind} knob")
        if not _is_number(op.arg) or not math.isfinite(op.arg):
            raise ValueError(f"{where}: {op.op} needs a number, got {op.arg!r}")
        if op.op == "times" and op.arg <= 0:
            raise ValueError(f"{where}: times needs a positive factor, got {op.arg!r}")
        if op.op == "plus" and op.arg == 0:
            raise ValueError(f"{where}: plus 0 changes nothing")
    else:
        if knob.kind != "widths":
            raise ValueError(f"{where}: {op.op} applies to a widths knob, not {knob.kind}")
        named = isinstance(op.arg, str) and op.arg in NAMED_WIDTHS
        if not named and not (_is_number(op.arg) and knob._in_range(op.arg)):
            raise ValueError(
                f"{where}: {op.op} takes one of {list(NAMED_WIDTHS)} or a width in "
                f"[{knob.low}, {knob.high}], got {op.arg!r}"
            )


def _field_annotation(key: str) -> Any:
    """The annotation of a ``when`` key (``field`` or ``task.field``), or raise naming it."""
    model: type[BaseModel] = ModelSpec
    name = key
    if key.startswith("task."):
        model, name = TaskDescriptor, key.removeprefix("task.")
    if name not in model.model_fields:
        raise ValueError(
            f"when.{key}: {name!r} is not a field of {model.__name__}; fields: "
            f"{', '.join(model.model_fields)}"
        )
    return model.model_fields[name].annotation


def _check_condition(key: str, condition: Condition) -> None:
    annotation = _field_annotation(key)
    if condition.numeric() and annotation not in (int, float):
        raise ValueError(f"when.{key}: min/max/exceeds/below need a number field")
    for ref in (condition.exceeds, condition.below):
        if ref is not None and ModelSpec.model_fields.get(ref, None) is None:
            raise ValueError(f"when.{key}: {ref!r} is not a baseline (ModelSpec) field")
        if ref is not None and ModelSpec.model_fields[ref].annotation not in (int, float):
            raise ValueError(f"when.{key}: {ref!r} is not a number field")
    if key.startswith("task."):
        return
    try:
        knob = DEFAULT_ACTION_SPACE.knob(key)
    except ValueError:
        return  # a field outside the action space (e.g. table_rows): nothing to check against
    if knob.kind == "categorical":
        # A typo (``interaction: dott``) would silently never apply; refuse it at load.
        for value in [*(condition.one_of or []), *(condition.none_of or [])]:
            try:
                knob.check(value)
            except ValueError as err:
                raise ValueError(f"when.{key}: {err}") from None


def load_catalog(path: Path | None = None) -> list[Technique]:
    """The technique catalog, validated.

    Args:
        path: A catalog file; default the packaged ``knowledge/techniques.yaml``.

    Returns:
        The techniques, in file order.

    Raises:
        CatalogError: naming the file, the technique's id and the field at fault (an unknown
            knob, a bad op, a value outside the action space, a family that is not one of its
            knobs', a duplicate id...).
    """
    if path is None:
        source = "knowledge/techniques.yaml"
        text = resources.files("knowledge").joinpath("techniques.yaml").read_text("utf-8")
    else:
        source, text = str(path), path.read_text("utf-8")
    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CatalogError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(entries, list):
        raise CatalogError(f"{source}: expected a list of techniques, got {type(entries).__name__}")
    techniques: list[Technique] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        name = entry.get("id", f"#{i + 1}") if isinstance(entry, dict) else f"#{i + 1}"
        try:
            technique = Technique.model_validate(entry)
        except ValidationError as err:
            problems = "; ".join(_describe_error(e) for e in err.errors())
            raise CatalogError(f"{source}: technique {name!r}: {problems}") from None
        if technique.id in seen:
            raise CatalogError(f"{source}: technique {name!r}: id: appears twice")
        seen.add(technique.id)
        techniques.append(technique)
    return techniques


def _describe_error(error: Any) -> str:
    """One pydantic error as ``field: message``; our validators already name the field."""
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(part) for part in error["loc"])
    return f"{loc}: {message}" if loc else message
