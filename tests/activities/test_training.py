"""The training activity with the real trainer on tiny MovieLens data."""

import pytest
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.training import TrainingActivities
from contracts import DatasetRef, ModelSpec, TrialProgress, TrialSpec
from ranking_models.errors import DivergenceError
from ranking_models.trainer import train


def tiny_spec(**model: object) -> TrialSpec:
    return TrialSpec(
        campaign_id="c1",
        trial_id="t1",
        phase="baseline",
        model=ModelSpec(epochs=1, batch_size=128, **model),
        dataset=DatasetRef(max_rows=3000),
    )


def test_trains_for_real_and_heartbeats_progress() -> None:
    env = ActivityEnvironment()
    beats: list[TrialProgress] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])

    result = env.run(TrainingActivities(train=train).train_trial, tiny_spec())

    assert result.state == "succeeded" and result.trial_id == "t1"
    assert result.validation is not None and 0.0 < result.validation.ne < 1.5
    assert 0.0 <= result.validation.auc <= 1.0
    assert result.device_hours == pytest.approx(result.duration_s / 3600)
    assert beats and all(b.trial_id == "t1" for b in beats)
    assert beats[-1].step == beats[-1].total_steps == result.steps


def test_trainer_errors_become_typed_application_errors() -> None:
    def diverging(*args: object, **kwargs: object) -> None:
        raise DivergenceError(7, float("nan"))

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(TrainingActivities(train=diverging).train_trial, tiny_spec())  # type: ignore[arg-type]
    assert raised.value.type == "DivergenceError"
    assert "7" in str(raised.value)


def test_cancellation_stops_training_and_reports_cancelled() -> None:
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: env.cancel()  # cancel at the first progress report

    with pytest.raises(CancelledError):
        env.run(TrainingActivities(train=train).train_trial, tiny_spec())
