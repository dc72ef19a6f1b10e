"""A catalog technique on a baseline: whether it applies, and the move it makes.

The ops of ``catalog.py`` are interpreted here: ``times`` and ``plus`` snap to the knob's
range and grid, ``prepend_layer`` / ``append_layer`` read named widths (``max``...) off the
baseline, and a result that changes nothing, leaves the action space or sets a knob that does
not matter on it is no move at all.
"""

import math
from typing import Any

from pydantic import ValidationError

from contracts.actions import DEFAULT_ACTION_SPACE, Knob
from contracts.model import ModelSpec
from contracts.task import TaskDescriptor
from knowledge.catalog import Op, Technique


def applies(technique: Technique, baseline: ModelSpec, task: TaskDescriptor | None) -> bool:
    """Whether every ``when`` condition holds; a task condition fails while the task is
    unknown (the technique depends on the data's shape, which nobody has measured)."""
    for key, condition in technique.when.items():
        if key.startswith("task."):
            if task is None:
                return False
            value = getattr(task, key.removeprefix("task."))
        else:
            value = getattr(baseline, key)
        if not condition.holds(value, baseline):
            return False
    return True


def instantiate(
    technique: Technique, baseline: ModelSpec, task: TaskDescriptor | None = None
) -> dict[str, Any] | None:
    """The technique's changes to ``baseline``, or None when it does not make a valid move.

    None when a ``when`` condition fails, when the result changes nothing (e.g. a dim already
    at its cap), when it leaves the action space, when a knob it sets does not matter on the
    result (``dcn_layers`` without ``interaction=dcn``), or when the spec cannot be built.
    Fields the ops leave at the baseline's value are left out, so equal moves compare equal.
    """
    if not applies(technique, baseline, task):
        return None
    return changes_for(technique, baseline)[0]


def changes_for(technique: Technique, baseline: ModelSpec) -> tuple[dict[str, Any] | None, str]:
    """(changes, "") for a valid move, else (None, why not); ``instantiate`` without the
    ``when`` conditions, saying why a technique makes no move."""
    changes: dict[str, Any] = {}
    for field, op in technique.changes.items():
        knob = DEFAULT_ACTION_SPACE.knob(field)
        value = _apply_op(op, knob, getattr(baseline, field))
        if value is None:
            return None, f"{field}: {op.op} {op.arg!r} has nothing to act on"
        if value != getattr(baseline, field):
            changes[field] = value
    if not changes:
        return None, "changes nothing on this baseline"
    try:
        DEFAULT_ACTION_SPACE.check(changes)
        candidate = baseline.with_changes(changes)
    except ValidationError as err:
        return None, f"cannot be built: {err.errors()[0]['msg']}"
    except ValueError as err:
        return None, f"outside the action space: {err}"
    for field in changes:
        for required, value in DEFAULT_ACTION_SPACE.knob(field).requires.items():
            if getattr(candidate, required) != value:
                return None, f"{field} matters only with {required}={value!r}"
    return changes, ""


def _apply_op(op: Op, knob: Knob, old: Any) -> Any:
    if op.op == "set":
        return op.arg
    if op.op == "times":
        if knob.kind == "widths":
            return [_snap(knob, w * op.arg) for w in old]
        return _snap(knob, old * op.arg)
    if op.op == "plus":
        return _snap(knob, old + op.arg)
    width = _layer_width(op.arg, old)
    if width is None:
        return None
    return [width, *old] if op.op == "prepend_layer" else [*old, width]


def _layer_width(arg: Any, widths: list[int]) -> int | None:
    if not isinstance(arg, str):
        return int(arg)
    if not widths:
        return None  # max/first... of no layers: the technique does not apply
    named = {"max": max(widths), "min": min(widths), "first": widths[0], "last": widths[-1]}
    return named[arg]


def _snap(knob: Knob, value: float) -> int | float:
    """``value`` clamped to the knob's range and rounded to its grid (ints: half up)."""
    assert knob.low is not None and knob.high is not None
    value = min(max(value, knob.low), knob.high)
    if knob.kind == "float":
        # Six significant digits: lr x 1/3 reads 0.000333333, and equal moves stay equal.
        return float(f"{value:.6g}")
    step = knob.step or 1
    snapped = int(knob.low + math.floor((value - knob.low) / step + 0.5) * step)
    return min(snapped, int(knob.low + (knob.high - knob.low) // step * step))
