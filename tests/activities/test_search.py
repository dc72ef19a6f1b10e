"""Optuna ask-and-tell activities, against SQLite and PostgreSQL storage alike.

No training: a cheap synthetic objective (a quadratic in log10(dense_lr), dropout and the
over-arch depth) stands in for validation NE.
"""

import math
import statistics
from pathlib import Path
from typing import Any

import optuna
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.search import SearchActivities, changes_from_params, search_distributions
from contracts import (
    DEFAULT_ACTION_SPACE,
    AskedTrial,
    AskInput,
    ModelSpec,
    PruneInput,
    SearchSpace,
    TellInput,
)
from contracts.search import Sampler

STUDY = "c1/exploitation"
FIELDS = ["dense_lr", "dropout", "over_hidden"]


def objective(changes: dict[str, Any]) -> float:
    """Smallest (0.4) at dense_lr = 10**-2.5, dropout = 0.2 and two over-arch layers."""
    return (
        0.4
        + 0.05 * (math.log10(changes["dense_lr"]) + 2.5) ** 2
        + 0.5 * (changes["dropout"] - 0.2) ** 2
        + 0.01 * (len(changes["over_hidden"]) - 2) ** 2
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test runs against both storages (one contract suite per port)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'optuna.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


def ask(
    acts: SearchActivities,
    ask_id: str,
    fields: list[str] = FIELDS,
    count: int = 1,
    sampler: Sampler = "tpe",
    fixed: dict[str, Any] | None = None,
) -> list[AskedTrial]:
    inp = AskInput(
        study_name=STUDY,
        ask_id=ask_id,
        space=SearchSpace(fields=fields, fixed=fixed or {}),
        sampler=sampler,
        count=count,
    )
    return ActivityEnvironment().run(acts.ask, inp)


def complete(acts: SearchActivities, trial: AskedTrial) -> float:
    value = objective(trial.changes)
    curve = [value + 0.1 / epoch for epoch in (1, 2, 3)]
    acts.tell(
        TellInput(
            study_name=STUDY,
            number=trial.number,
            state="complete",
            value=value,
            intermediate=curve,
        )
    )
    return value


def assert_valid_move(changes: dict[str, Any]) -> None:
    DEFAULT_ACTION_SPACE.check(changes)
    ModelSpec().with_changes(changes)


def test_tpe_loop_improves_and_asks_valid_moves(storage_url: str) -> None:
    acts = SearchActivities(storage_url)
    fixed = {"interaction": "dcn"}
    values = []
    for round_ in range(20):
        (trial,) = ask(acts, f"round-{round_}", fixed=fixed)
        assert trial.number == round_
        assert trial.changes["interaction"] == "dcn"
        assert set(trial.changes) == {"interaction", *FIELDS}
        assert_valid_move(trial.changes)
        values.append(complete(acts, trial))
    # TPE's first trials are random start-up; the model-guided ones must do better.
    assert statistics.mean(values[10:]) < statistics.mean(values[:10])


def test_study_survives_a_restarted_worker(storage_url: str) -> None:
    first = SearchActivities(storage_url)
    values = [complete(first, trial) for trial in ask(first, "round-0", count=3)]

    restarted = SearchActivities(storage_url)  # a new worker process on the same database
    (trial,) = ask(restarted, "round-1")
    assert trial.number == 3
    assert_valid_move(trial.changes)
    # A retried ask of round 0 on the new worker still gets round 0's trials back.
    assert [t.number for t in ask(restarted, "round-0", count=3)] == [0, 1, 2]
    complete(restarted, trial)

    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    assert len(study.trials) == 4
    assert study.best_value <= min(values)


def test_ask_is_idempotent_per_ask_id(storage_url: str) -> None:
    acts = SearchActivities(storage_url)
    once = ask(acts, "round-0", count=2)
    again = ask(acts, "round-0", count=2)  # a Temporal retry of the same activity
    assert again == once
    assert [t.number for t in once] == [0, 1]
    assert [t.number for t in ask(acts, "round-1", count=1)] == [2]
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    assert len(study.trials) == 3


def test_a_trial_orphaned_by_a_dead_ask_is_adopted_not_left_running(storage_url: str) -> None:
    acts = SearchActivities(storage_url)
    ask(acts, "round-0", count=1)
    # An attempt of round 1 died after Optuna's ask, before it stored its key.
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    orphan = study.ask(search_distributions(SearchSpace(fields=FIELDS)))

    retried = ask(acts, "round-1", count=2)

    assert [t.number for t in retried] == [orphan.number, orphan.number + 1]
    assert retried[0].changes == changes_from_params(SearchSpace(fields=FIELDS), orphan.params)
    assert ask(acts, "round-1", count=2) == retried  # and it stays this round's
    trials = optuna.load_study(study_name=STUDY, storage=storage_url).trials
    assert len(trials) == 3


def test_tell_is_idempotent_and_refuses_another_outcome(storage_url: str) -> None:
    acts = SearchActivities(storage_url)
    (trial,) = ask(acts, "round-0")
    tell = TellInput(
        study_name=STUDY, number=trial.number, state="complete", value=0.5, intermediate=[0.7]
    )
    acts.tell(tell)
    acts.tell(tell)  # a retry: no-op

    for other in (
        tell.model_copy(update={"value": 0.6}),
        tell.model_copy(update={"state": "fail", "value": None}),
    ):
        with pytest.raises(ApplicationError) as caught:
            acts.tell(other)
        assert caught.value.non_retryable
        assert caught.value.type == "TrialAlreadyFinished"

    frozen = optuna.load_study(study_name=STUDY, storage=storage_url).trials[trial.number]
    assert frozen.state == optuna.trial.TrialState.COMPLETE
    assert frozen.value == 0.5
    assert frozen.intermediate_values == {1: 0.7}


def test_bad_trial_is_pruned_early(storage_url: str) -> None:
    acts = SearchActivities(storage_url)
    # Good trials, each a little better than the last, ask the pruner after every epoch
    # (as the workflow does), so their values sit on the successive-halving rungs.
    for i, trial in enumerate(ask(acts, "good", count=4)):
        curve = [0.50 - 0.01 * i - 0.02 * epoch for epoch in range(4)]
        for step, value in enumerate(curve, start=1):
            decision = acts.should_prune(
                PruneInput(study_name=STUDY, number=trial.number, step=step, value=value)
            )
            assert not decision.prune, decision.reason
        acts.tell(
            TellInput(
                study_name=STUDY,
                number=trial.number,
                state="complete",
                value=curve[-1],
                intermediate=curve,
            )
        )

    (bad,) = ask(acts, "bad")
    decision = ActivityEnvironment().run(
        acts.should_prune, PruneInput(study_name=STUDY, number=bad.number, step=1, value=0.9)
    )
    assert decision.prune
    assert "step 1" in decision.reason and "ranks 5 of 5" in decision.reason

    acts.tell(TellInput(study_name=STUDY, number=bad.number, state="pruned", intermediate=[0.9]))
    frozen = optuna.load_study(study_name=STUDY, storage=storage_url).trials[bad.number]
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert frozen.intermediate_values == {1: 0.9}
    # Asking again once finished answers from the record, and a repeated tell is a no-op.
    again = acts.should_prune(PruneInput(study_name=STUDY, number=bad.number, step=1, value=0.9))
    assert again.prune
    acts.tell(TellInput(study_name=STUDY, number=bad.number, state="pruned"))


@pytest.mark.parametrize("sampler", ["cmaes", "random"])
def test_other_samplers(storage_url: str, sampler: Sampler) -> None:
    acts = SearchActivities(storage_url)
    fields = ["dense_lr", "dropout", "over_hidden", "embedding_dim", "dense_optimizer"]
    seen = []
    for round_ in range(6):
        for trial in ask(acts, f"round-{round_}", fields=fields, count=2, sampler=sampler):
            assert_valid_move(trial.changes)
            assert trial.changes["embedding_dim"] % 4 == 0
            seen.append(trial.changes["dense_lr"])
            complete(acts, trial)
    assert len(set(seen)) == len(seen) == 12


@pytest.mark.parametrize(
    ("fields", "fixed", "named"),
    [
        (["dense_lr", "embeding_dim"], {}, "embeding_dim"),  # a typo
        (["table_rows"], {}, "table_rows"),  # a ModelSpec field that is not a knob
        (["dense_lr", "dense_lr"], {}, "dense_lr"),
        (["dropout"], {"dropout": 0.1}, "dropout"),
        (["dropout"], {"dense_lr": 5.0}, "dense_lr"),
        (["dcn_layers"], {"interaction": "dot"}, "dcn_layers"),
    ],
)
def test_invalid_space_fails_fast_naming_the_field(
    tmp_path: Path, fields: list[str], fixed: dict[str, Any], named: str
) -> None:
    acts = SearchActivities(f"sqlite:///{tmp_path / 'optuna.sqlite'}")
    with pytest.raises(ApplicationError) as caught:
        ask(acts, "round-0", fields=fields, fixed=fixed)
    assert caught.value.non_retryable
    assert named in str(caught.value)


def test_unknown_study_or_trial_is_non_retryable(tmp_path: Path) -> None:
    acts = SearchActivities(f"sqlite:///{tmp_path / 'optuna.sqlite'}")
    tell = TellInput(study_name="nope", number=0, state="fail")
    with pytest.raises(ApplicationError) as caught:
        acts.tell(tell)
    assert caught.value.non_retryable and caught.value.type == "StudyNotFound"
    ask(acts, "round-0")
    with pytest.raises(ApplicationError) as caught:
        acts.tell(tell.model_copy(update={"study_name": STUDY, "number": 7}))
    assert caught.value.non_retryable and caught.value.type == "TrialNotFound"
