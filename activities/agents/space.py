"""The action space as a source of candidates: one-knob probes and points drawn from it all.

The catalog proposes what is published and what history says; this source makes sure the
screen also sees what a blind search would: every knob moved on its own (a probe a step up
and a step down, every other choice of a categorical, wider, narrower, deeper and shallower
arches), and points drawn uniformly from the whole action space, as random search draws them,
but only where the screen can measure them: on a small baseline nearly all of the whole box
costs hundreds of its trials (median 650x on ``ml100k-small-model``, 1 draw in 1,000 under 8x),
and a screened run that dear is stopped at its cost cap before it tells anything. A draw
dearer than that is drawn again from every knob's range narrowed around the baseline.
The screen's measurements, not these lists, decide what goes on.
"""

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import ValidationError

from contracts import DEFAULT_ACTION_SPACE, ActionSpace, Hypothesis, Knob, ModelSpec, Provenance
from contracts import canonical as canonical_move

AGENT = "search-space/1"

# Where a knob that is off (0) is probed: values a practitioner tries first.
FIRST_VALUES: dict[str, tuple[float, ...]] = {
    "dropout": (0.1, 0.3),
    "weight_decay": (1e-5, 1e-4),
    "grad_clip_norm": (1.0,),
    "lr_warmup_steps": (100, 1000),
    "dcn_low_rank": (16, 64),
}
# A probe's step on a log-scale knob: far enough that one seed at low fidelity can tell.
LOG_STEP = 3.0
# A draw the screen cannot afford is drawn again from ranges narrowed around the baseline by
# these factors in turn (``Knob.around``): still every knob moved, at ever shorter distances.
NEARER = (16.0, 4.0, 2.0)

Affordable = Callable[[dict[str, Any]], bool]


def probes(baseline: ModelSpec, space: ActionSpace = DEFAULT_ACTION_SPACE) -> list[dict[str, Any]]:
    """One-knob moves from ``baseline``: each knob a step each way, within its range.

    A knob that needs another knob's value (``dcn_layers`` needs ``interaction="dcn"``)
    carries that requirement with it. Moves that do not build or leave the space are dropped.
    """
    moves: list[dict[str, Any]] = []
    for knob in space.knobs:
        current = getattr(baseline, knob.field)
        for value in _values(knob, current):
            change = {knob.field: value}
            change.update({f: v for f, v in knob.requires.items() if getattr(baseline, f) != v})
            if _valid(baseline, change, space):
                moves.append(change)
    return _unique(moves)


def _values(knob: Knob, current: Any) -> list[Any]:
    """The values a probe of ``knob`` tries from ``current``."""
    if knob.kind == "categorical":
        return [c for c in knob.choices or [] if c != current]
    if knob.kind == "widths":
        widths = list(current)
        candidates = [
            [_grid(knob, w * 2) for w in widths],
            [_grid(knob, w / 2) for w in widths],
            [widths[0] if widths else _grid(knob, 64), *widths],
            widths[1:],
        ]
        return [w for w in candidates if w != widths]
    if current == 0:
        values: list[Any] = list(FIRST_VALUES.get(knob.field, ()))
        if not values:
            assert knob.low is not None and knob.high is not None
            values = [knob.low + (knob.high - knob.low) * 0.1]
    elif knob.log or knob.kind == "int":
        step = LOG_STEP if knob.log else 2.0
        values = [current * step, current / step]
        if knob.field == "epochs":
            values = [current + 1, current * 2, current - 1]
    else:
        values = [current * 2, current / 2]
    return [_grid(knob, v) for v in values if _grid(knob, v) != current]


def _grid(knob: Knob, value: float) -> Any:
    """``value`` clamped to the knob's range and rounded to its grid (ints and widths)."""
    assert knob.low is not None and knob.high is not None
    value = min(max(value, knob.low), knob.high)
    if knob.kind == "float":
        return float(f"{value:.4g}")
    step = knob.step or 1
    return int(knob.low + round((value - knob.low) / step) * step)


def random_points(
    baseline: ModelSpec,
    count: int,
    seed: int,
    space: ActionSpace = DEFAULT_ACTION_SPACE,
    affordable: Affordable | None = None,
) -> list[dict[str, Any]]:
    """``count`` valid points drawn uniformly from the whole action space (log-uniform on
    log knobs, uniform widths and depths), as changes to ``baseline``.

    A draw that ``affordable`` refuses (too dear, or not buildable on the data) is drawn
    again from the ranges narrowed around the baseline (``NEARER``); one refused at every
    distance is left out.
    """
    rng = random.Random(f"search-space/{seed}")
    # The whole box first, then (only where a draw can be refused) ever nearer the baseline.
    distances = [space.knobs]
    if affordable is not None:
        distances += [
            [k.around(getattr(baseline, k.field), r) for k in space.knobs] for r in NEARER
        ]
    points: list[dict[str, Any]] = []
    for _ in range(count * 20):  # most draws build; give up on a space that does not
        if len(points) == count:
            break
        for knobs in distances:
            point = {knob.field: _draw(knob, rng) for knob in knobs}
            change = ModelSpec.model_validate({**baseline.model_dump(), **point}).changes_from(
                baseline
            )
            if (
                change
                and _valid(baseline, change, space)
                and (affordable is None or affordable(change))
            ):
                points.append(change)
                break
    return _unique(points)


def _draw(knob: Knob, rng: random.Random) -> Any:
    if knob.kind == "categorical":
        return rng.choice(knob.choices or [])
    assert knob.low is not None and knob.high is not None
    if knob.kind == "widths":
        assert knob.min_layers is not None and knob.max_layers is not None
        depth = rng.randint(knob.min_layers, knob.max_layers)
        return [_number(knob, rng) for _ in range(depth)]
    return _number(knob, rng)


def _number(knob: Knob, rng: random.Random) -> Any:
    assert knob.low is not None and knob.high is not None
    if knob.log:
        value = math.exp(rng.uniform(math.log(knob.low), math.log(knob.high)))
    else:
        value = rng.uniform(knob.low, knob.high)
    return _grid(knob, value)


def _valid(baseline: ModelSpec, change: dict[str, Any], space: ActionSpace) -> bool:
    try:
        space.check(change)
        baseline.with_changes(change)
    except (ValueError, ValidationError):
        return False
    return True


def _unique(moves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for move in moves:
        key = canonical_move(move)
        if key not in seen:
            seen.add(key)
            out.append(move)
    return out


def hypotheses(
    baseline: ModelSpec,
    random_count: int,
    seed: int,
    cost_factor: Callable[[ModelSpec], float | None] | None = None,
    max_cost: float | None = None,
) -> list[Hypothesis]:
    """The probes, then ``random_count`` random points, as hypotheses of this source.

    ``cost_factor`` returns None for a move that does not build on the task's data (a check
    that needs the data, so ``_valid`` cannot make it): that move is left out, as is one
    whose cost factor is over ``max_cost`` (the screen would stop it unmeasured); a random
    point so refused is drawn again nearer the baseline.
    """
    costs: dict[str, float | None] = {}

    def cost(change: dict[str, Any]) -> float | None:
        key = canonical_move(change)
        if key not in costs:
            costs[key] = cost_factor(baseline.with_changes(change)) if cost_factor else 1.0
        return costs[key]

    def affordable(change: dict[str, Any]) -> bool:
        c = cost(change)
        return c is not None and (max_cost is None or c <= max_cost)

    def made(kind: str, moves: list[dict[str, Any]]) -> Iterator[Hypothesis]:
        for i, change in enumerate(moves, start=1):
            if not affordable(change):
                continue
            c = cost(change)
            assert c is not None  # affordable
            yield Hypothesis(
                id=f"{kind}-{i}",
                title=_title(baseline, change) if kind == "probe" else f"random point {i}",
                source="search-space",
                changes=change,
                provenance=Provenance(source="search-space", agent=AGENT),
                cost_factor=max(c, 0.05),
                family="+".join(sorted(DEFAULT_ACTION_SPACE.families(change))),
            )

    return [
        *made("probe", probes(baseline)),
        *made(
            "point",
            random_points(
                baseline, random_count, seed, affordable=affordable if cost_factor else None
            ),
        ),
    ]


def _title(baseline: ModelSpec, change: dict[str, Any]) -> str:
    return ", ".join(f"{f} {getattr(baseline, f)!s}→{v!s}" for f, v in sorted(change.items()))
