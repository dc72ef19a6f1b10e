"""The trainer end to end on real MovieLens-100k (small cuts, CPU)."""

import pytest
import torch

from contracts import DatasetRef, ModelSpec, TrialProgress
from ranking_models import trainer
from ranking_models.errors import BadSpecError, DivergenceError, TrainingCancelled
from ranking_models.trainer import train

TINY_DATA = DatasetRef(max_rows=3000)
TINY_SPEC = ModelSpec(epochs=1, batch_size=256)


def test_same_spec_twice_gives_identical_metrics():
    first = train(TINY_SPEC, TINY_DATA)
    second = train(TINY_SPEC, TINY_DATA)
    assert first.validation == second.validation
    assert first.test == second.test
    assert first.train_loss == second.train_loss
    assert first.steps == second.steps == 10  # ceil(2400 / 256)
    assert first.validation.examples == first.test.examples == 300


def test_a_different_seed_trains_differently():
    a = train(TINY_SPEC, TINY_DATA)
    b = train(TINY_SPEC.model_copy(update={"seed": 7}), TINY_DATA)
    assert a.validation != b.validation


def test_default_spec_beats_the_constant_predictor_on_full_data():
    outcome = train(ModelSpec(), DatasetRef())
    assert outcome.validation.ne < 1.0
    assert outcome.validation.auc > 0.6
    assert outcome.steps == 2 * 157  # 2 epochs of ceil(80000 / 512)


def test_progress_is_reported_every_n_steps_and_at_epoch_ends():
    reports: list[TrialProgress] = []
    spec = TINY_SPEC.model_copy(update={"epochs": 2})
    train(spec, TINY_DATA, on_progress=reports.append, progress_every=4)
    # 10 steps per epoch: reports at 4, 8, 10 (end), 12, 16, 20 (end and multiple of 4).
    assert [r.step for r in reports] == [4, 8, 10, 12, 16, 20]
    assert [r.epoch for r in reports] == [1, 1, 1, 2, 2, 2]
    assert all(r.total_steps == 20 and r.train_loss > 0 for r in reports)


def test_should_stop_cancels_training():
    calls = 0

    def stop_after_three() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    with pytest.raises(TrainingCancelled, match="after 3 steps") as e:
        train(TINY_SPEC, TINY_DATA, should_stop=stop_after_three)
    assert e.value.step == 3


def test_nan_loss_raises_divergence(monkeypatch):
    real = trainer.F.binary_cross_entropy_with_logits

    def nan_loss(logits, labels):
        return real(logits, labels) * float("nan")

    monkeypatch.setattr(trainer.F, "binary_cross_entropy_with_logits", nan_loss)
    with pytest.raises(DivergenceError, match="step 1"):
        train(TINY_SPEC, TINY_DATA)


def test_invalid_spec_fails_before_training():
    with pytest.raises(BadSpecError, match=r"ModelSpec\.embedding_dim"):
        train(TINY_SPEC.model_copy(update={"embedding_dim": 10}), TINY_DATA)


def test_dropout_and_weight_decay_train():
    spec = TINY_SPEC.model_copy(update={"dropout": 0.2, "weight_decay": 1e-4})
    outcome = train(spec, TINY_DATA)
    assert torch.isfinite(torch.tensor(outcome.validation.logloss))
