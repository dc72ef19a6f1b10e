"""The training activity with the real trainer on tiny MovieLens data."""

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.search import SearchActivities
from activities.training import TrainingActivities
from contracts import (
    AccessScope,
    AskInput,
    DatasetRef,
    ModelSpec,
    PruneDecision,
    PruneInput,
    SearchRef,
    SearchSpace,
    TellInput,
    TrialProgress,
    TrialSpec,
)
from ranking_models.errors import DivergenceError, OutOfMemoryError
from ranking_models.trainer import train


def tiny_spec(**model: object) -> TrialSpec:
    return TrialSpec(
        campaign_id="c1",
        trial_id="t1",
        phase="baseline",
        model=ModelSpec(**({"epochs": 1, "batch_size": 128} | model)),
        dataset=DatasetRef(max_rows=3000),
    )


def test_trains_for_real_and_heartbeats_progress(tmp_path: Path) -> None:
    env = ActivityEnvironment()
    beats: list[TrialProgress] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])

    result = env.run(TrainingActivities(train=train, data_dir=tmp_path).train_trial, tiny_spec())

    assert result.state == "succeeded" and result.trial_id == "t1"
    assert result.validation is not None and 0.0 < result.validation.ne < 1.5
    assert 0.0 <= result.validation.auc <= 1.0
    assert result.device_hours == pytest.approx(result.duration_s / 3600)
    assert beats and all(b.trial_id == "t1" for b in beats)
    assert beats[-1].step == beats[-1].total_steps == result.steps


def test_trainer_errors_become_typed_application_errors(tmp_path: Path) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise OutOfMemoryError("out of host memory with batch_size=512")

    with pytest.raises(ApplicationError) as raised:
        activities = TrainingActivities(train=out_of_memory, data_dir=tmp_path)  # type: ignore[arg-type]
        ActivityEnvironment().run(activities.train_trial, tiny_spec())
    assert raised.value.type == "OutOfMemoryError"
    assert "batch_size" in str(raised.value)


def test_a_diverged_run_is_an_outcome_without_metrics(tmp_path: Path) -> None:
    def diverging(*args: object, **kwargs: object) -> None:
        raise DivergenceError(7, float("nan"))

    activities = TrainingActivities(train=diverging, data_dir=tmp_path)  # type: ignore[arg-type]
    result = ActivityEnvironment().run(activities.train_trial, tiny_spec())
    assert result.state == "diverged" and result.validation is None and result.test is None
    assert result.steps == 7 and "lower dense_lr" in result.error
    assert result.device_hours == pytest.approx(result.duration_s / 3600)


def test_cancelled_trial_checkpoints_and_the_retry_resumes(tmp_path: Path) -> None:
    first = ActivityEnvironment()
    first_beats: list[TrialProgress] = []

    def cancel_at_second_report(progress: TrialProgress) -> None:
        first_beats.append(progress)
        if len(first_beats) == 2:
            first.cancel()

    first.on_heartbeat = cancel_at_second_report
    activities = TrainingActivities(train=train, data_dir=tmp_path)
    spec = tiny_spec(epochs=2)
    with pytest.raises(CancelledError):
        first.run(activities.train_trial, spec)

    retry = ActivityEnvironment()
    retry_beats: list[TrialProgress] = []
    retry.on_heartbeat = lambda *details: retry_beats.append(details[0])
    result = retry.run(activities.train_trial, spec)

    assert result.state == "succeeded"
    stopped_at = first_beats[-1].step
    assert retry_beats[0].step > stopped_at  # resumed, not restarted
    assert retry_beats[0].checkpoint_step >= stopped_at


def test_a_planted_bad_exploitation_trial_is_pruned_after_its_first_epoch_and_charged(
    tmp_path: Path,
) -> None:
    search = SearchActivities(f"sqlite:///{tmp_path / 'optuna.sqlite'}")
    study = "c1/exploitation"
    space = SearchSpace(fields=["dropout"])
    asked = search.ask(AskInput(study_name=study, ask_id="round-0", space=space, count=5))
    # Four earlier trials reached NE 0.5 after their first epoch (far better than any real
    # model on this data), so ASHA stops anything worse at that rung.
    for trial in asked[:4]:
        search.should_prune(PruneInput(study_name=study, number=trial.number, step=1, value=0.5))
        search.tell(TellInput(study_name=study, number=trial.number, state="complete", value=0.45))
    spec = tiny_spec(epochs=3).model_copy(
        update={
            "phase": "exploitation",
            "search": SearchRef(study_name=study, number=asked[4].number),
        }
    )
    activities = TrainingActivities(train=train, data_dir=tmp_path, prune=search.should_prune)

    result = ActivityEnvironment().run(activities.train_trial, spec)

    assert result.state == "pruned" and result.validation is None
    assert len(result.epoch_values) == 1 and "stop" in result.error
    assert (
        result.device_hours == pytest.approx(result.duration_s / 3600) and result.device_hours > 0
    )
    # The same spec without a study trains all three epochs: pruning is what stopped it.
    full = ActivityEnvironment().run(
        TrainingActivities(train=train, data_dir=tmp_path / "full").train_trial,
        tiny_spec(epochs=3),
    )
    assert full.state == "succeeded" and len(full.epoch_values) == 3
    assert result.steps * 3 == full.steps


def test_a_resumed_trial_reports_every_epoch_once_at_its_own_step(tmp_path: Path) -> None:
    """A retry that resumes after two epochs still reports epochs 1, 2 and 3, in order."""
    first = ActivityEnvironment()
    seen: dict[int, float] = {}

    def cancel_after_two_epochs(progress: TrialProgress) -> None:
        if progress.validation_ne is not None:
            seen.setdefault(progress.validation_epochs, progress.validation_ne)
        if progress.validation_epochs == 2:
            first.cancel()

    first.on_heartbeat = cancel_after_two_epochs
    asked: list[PruneInput] = []

    def never_prune(inp: PruneInput) -> PruneDecision:
        asked.append(inp)
        return PruneDecision(prune=False, reason="continue")

    activities = TrainingActivities(train=train, data_dir=tmp_path, prune=never_prune)
    spec = tiny_spec(epochs=3).model_copy(
        update={"phase": "exploitation", "search": SearchRef(study_name="s", number=0)}
    )
    with pytest.raises(CancelledError):
        first.run(activities.train_trial, spec)
    result = ActivityEnvironment().run(activities.train_trial, spec)

    assert result.state == "succeeded" and result.resumed_from_step > 0
    assert len(result.epoch_values) == 3
    assert result.epoch_values[:2] == [seen[1], seen[2]]
    assert result.epoch_values[2] == result.metric("ne")
    # Each epoch went to the pruner at its own step; the resumed epoch 2 once more, never as 1.
    assert [a.step for a in asked] == [1, 2, 2]


def test_a_tuned_trial_asks_the_pruner_only_after_the_epochs_its_spec_allows(
    tmp_path: Path,
) -> None:
    asked: list[int] = []

    def always_prune(inp: PruneInput) -> PruneDecision:
        asked.append(inp.step)
        return PruneDecision(prune=True, reason="stop")

    activities = TrainingActivities(train=train, data_dir=tmp_path, prune=always_prune)
    spec = tiny_spec(epochs=3).model_copy(
        update={
            "phase": "exploitation",
            "search": SearchRef(study_name="s", number=0, last_prunable_epoch=0),
        }
    )
    # A stop would save too little anywhere (0): the trial trains through, never asking.
    result = ActivityEnvironment().run(activities.train_trial, spec)
    assert result.state == "succeeded" and len(result.epoch_values) == 3 and asked == []
    # Allowed after its first epoch: asked then, and stopped.
    search = SearchRef(study_name="s", number=1, last_prunable_epoch=1)
    stopped = ActivityEnvironment().run(
        TrainingActivities(train=train, data_dir=tmp_path / "b", prune=always_prune).train_trial,
        spec.model_copy(update={"search": search, "trial_id": "t2"}),
    )
    assert stopped.state == "pruned" and asked == [1]


@pytest.mark.parametrize(
    ("read", "write", "named"),
    [("allowed", None, "elsewhere"), ("elsewhere", "out", "checkpoints/c1/t1")],
    ids=["dataset outside read", "checkpoints outside write"],
)
def test_a_trial_outside_its_access_scope_is_refused_and_nothing_trained(
    tmp_path: Path, read: str, write: str | None, named: str
) -> None:
    calls: list[object] = []

    def trainer(*args: object, **kwargs: object) -> None:
        calls.append(args)

    scope = AccessScope(read=[str(tmp_path / read)], write=[str(tmp_path / write)] if write else [])
    spec = tiny_spec().model_copy(
        update={"dataset": DatasetRef(path=str(tmp_path / "elsewhere")), "access": scope}
    )
    activities = TrainingActivities(train=trainer, data_dir=tmp_path)  # type: ignore[arg-type]

    with pytest.raises(ApplicationError) as denied:
        ActivityEnvironment().run(activities.train_trial, spec)

    assert denied.value.type == "AccessDenied" and denied.value.non_retryable
    assert str(tmp_path / named) in str(denied.value)
    assert calls == [] and not (tmp_path / "checkpoints").exists()


def test_a_trial_without_a_scope_trains_as_before(tmp_path: Path) -> None:
    # Trials of older versions carry no scope: nothing is refused.
    calls: list[object] = []

    def trainer(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise DivergenceError(1, float("nan"))

    spec = tiny_spec().model_copy(update={"dataset": DatasetRef(path="/somewhere/else")})
    activities = TrainingActivities(train=trainer, data_dir=tmp_path)  # type: ignore[arg-type]
    assert ActivityEnvironment().run(activities.train_trial, spec).state == "diverged"
    assert len(calls) == 1
