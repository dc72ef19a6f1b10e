"""The action space: it covers ModelSpec, its moves build valid specs, and conflicts are found."""

import math
import random
from typing import Any

import pytest
from pydantic import ValidationError

from activities.planning import fixed_hypotheses
from contracts import DEFAULT_ACTION_SPACE, ActionSpace, Knob, ModelSpec

# Not moves: seeds measure noise, and per-feature table rows depend on the dataset.
NOT_KNOBS = {"seed", "table_rows"}


def sample_number(knob: Knob, rng: random.Random) -> float:
    """A value of a float/int knob (or one width), as Optuna's samplers would draw it."""
    assert knob.low is not None and knob.high is not None
    if knob.kind == "float":
        if knob.log:
            return math.exp(rng.uniform(math.log(knob.low), math.log(knob.high)))
        return rng.uniform(knob.low, knob.high)
    low, high = int(knob.low), int(knob.high)
    if knob.step:
        return low + knob.step * rng.randint(0, (high - low) // knob.step)
    if knob.log:
        drawn = round(math.exp(rng.uniform(math.log(low), math.log(high))))
        return min(max(drawn, low), high)
    return rng.randint(low, high)


def sample(knob: Knob, rng: random.Random) -> Any:
    if knob.kind == "categorical":
        assert knob.choices
        return rng.choice(knob.choices)
    if knob.kind == "widths":
        assert knob.min_layers is not None and knob.max_layers is not None
        depth = rng.randint(knob.min_layers, knob.max_layers)
        return [int(sample_number(knob, rng)) for _ in range(depth)]
    return sample_number(knob, rng)


def test_knobs_cover_exactly_the_movable_modelspec_fields() -> None:
    fields = {knob.field for knob in DEFAULT_ACTION_SPACE.knobs}
    assert fields <= set(ModelSpec.model_fields), fields - set(ModelSpec.model_fields)
    # A new ModelSpec field must get a knob (or join NOT_KNOBS) deliberately.
    assert set(ModelSpec.model_fields) - NOT_KNOBS == fields


def test_the_default_spec_lies_inside_the_space() -> None:
    dump = ModelSpec().model_dump()
    for field in NOT_KNOBS:
        dump.pop(field)
    DEFAULT_ACTION_SPACE.check(dump)


def test_random_moves_build_valid_specs() -> None:
    rng = random.Random(0)
    knobs = DEFAULT_ACTION_SPACE.knobs
    for _ in range(500):
        move = {knob.field: sample(knob, rng) for knob in knobs}
        DEFAULT_ACTION_SPACE.check(move)
        ModelSpec().with_changes(move)
        single = rng.choice(knobs)
        ModelSpec().with_changes({single.field: move[single.field]})


def test_the_planners_fixed_hypotheses_are_moves_of_the_space() -> None:
    hypotheses = fixed_hypotheses(ModelSpec())
    assert hypotheses
    for hypothesis in hypotheses:
        DEFAULT_ACTION_SPACE.check(hypothesis.changes)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"embeding_dim": 32}, "embeding_dim"),
        ({"seed": 3}, "seed"),
        ({"dense_lr": 5.0}, "dense_lr"),
        ({"sparse_lr": 0.0}, "sparse_lr"),
        ({"interaction": "transformer"}, "interaction"),
        ({"over_hidden": [64] * 6}, "over_hidden"),
        ({"over_hidden": []}, "over_hidden"),
        ({"dense_hidden": [64, 4096]}, "dense_hidden"),
        ({"embedding_dim": 18}, "embedding_dim"),
        ({"batch_size": 100.5}, "batch_size"),
        ({"epochs": True}, "epochs"),
    ],
)
def test_check_rejects_moves_outside_the_space_by_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        DEFAULT_ACTION_SPACE.check(changes)


def test_check_names_the_allowed_range() -> None:
    with pytest.raises(ValueError, match=r"dense_lr: 5.0 is not float in \[1e-05, 1\]"):
        DEFAULT_ACTION_SPACE.check({"dense_lr": 5.0})
    with pytest.raises(ValueError, match=r"one of \['dot', 'dcn', 'projection'\]"):
        DEFAULT_ACTION_SPACE.check({"interaction": "transformer"})


def test_unknown_knob_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"nope: not a knob.*dense_lr"):
        DEFAULT_ACTION_SPACE.knob("nope")


def test_families() -> None:
    assert DEFAULT_ACTION_SPACE.families({"dense_lr": 1e-4, "dropout": 0.1}) == {
        "dense-optimizer",
        "regularisation",
    }
    assert DEFAULT_ACTION_SPACE.families({}) == set()


@pytest.mark.parametrize(
    ("a", "b", "conflicting"),
    [
        ({"dense_lr": 1e-4}, {"dense_lr": 3e-4}, True),
        ({"dense_lr": 1e-4}, {"dense_lr": 1e-4}, False),
        ({"interaction": "dcn"}, {"interaction": "projection"}, True),
        ({"dcn_layers": 4}, {"interaction": "projection"}, True),
        ({"interaction": "projection"}, {"dcn_low_rank": 32}, True),
        ({"dcn_layers": 4}, {"projection_size": 8}, True),
        ({"dcn_layers": 4}, {"interaction": "dcn"}, False),
        ({"dcn_layers": 4}, {"dcn_low_rank": 32}, False),
        ({"dense_lr": 1e-4}, {"embedding_dim": 32}, False),
        ({"over_hidden": [128, 64]}, {"over_hidden": [64, 64, 32]}, True),
    ],
)
def test_conflicts(a: dict[str, Any], b: dict[str, Any], conflicting: bool) -> None:
    reasons = DEFAULT_ACTION_SPACE.conflicts(a, b)
    assert bool(reasons) == conflicting, reasons
    assert bool(DEFAULT_ACTION_SPACE.conflicts(b, a)) == conflicting  # symmetric
    if conflicting:
        shared = (set(a) & set(b)) or {"interaction"}
        assert any(field in reason for reason in reasons for field in shared)


def test_one_reason_per_conflicting_field() -> None:
    reasons = DEFAULT_ACTION_SPACE.conflicts(
        {"interaction": "dcn", "dcn_layers": 2}, {"interaction": "projection"}
    )
    assert reasons == ["interaction: a sets 'dcn', b sets 'projection'"]


def test_the_space_round_trips_as_json() -> None:
    again = ActionSpace.model_validate_json(DEFAULT_ACTION_SPACE.model_dump_json())
    assert again == DEFAULT_ACTION_SPACE
    assert isinstance(again.knob("embedding_dim").low, int)


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "categorical"},
        {"kind": "float", "low": 1.0, "high": 0.5},
        {"kind": "float", "low": 0.0, "high": 1.0, "log": True},
        {"kind": "int", "low": 4, "high": 64, "log": True, "step": 4},
        {"kind": "widths", "low": 8, "high": 64},
        {"kind": "int", "low": 1, "high": 4, "choices": ["a"]},
    ],
)
def test_inconsistent_knobs_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="knob 'x'"):
        Knob.model_validate({"field": "x", "family": "f"} | fields)


def test_requirements_must_name_a_categorical_choice() -> None:
    interaction = Knob(field="interaction", family="i", kind="categorical", choices=["dot"])
    layers = Knob(field="dcn_layers", family="i", kind="int", low=1, high=4)
    with pytest.raises(ValidationError, match="interaction"):
        ActionSpace(
            knobs=[interaction, layers.model_copy(update={"requires": {"interaction": "dcn"}})]
        )
    with pytest.raises(ValidationError, match="twice"):
        ActionSpace(knobs=[interaction, interaction])


def test_a_knob_around_a_value_narrows_to_its_neighbourhood_on_the_grid() -> None:
    space = DEFAULT_ACTION_SPACE
    rows = space.knob("max_table_rows").around(1024, 4.0)
    assert (rows.low, rows.high) == (1000, 4096)  # a factor 4 up; down, clipped to the box
    dim = space.knob("embedding_dim").around(8, 4.0)
    assert dim.low == 4 and dim.high % 4 == 0 and dim.high < 256  # on FBGEMM's grid of 4
    widths = space.knob("over_hidden").around([32], 4.0)
    assert (widths.low, widths.high, widths.min_layers, widths.max_layers) == (16, 128, 1, 2)
    assert space.knob("interaction").around("dot", 4.0).choices == ["dot", "dcn", "projection"]
    for knob in space.knobs:  # every neighbourhood is a valid knob holding the value
        value = getattr(ModelSpec(), knob.field)
        knob.around(value, 4.0).check(value)
