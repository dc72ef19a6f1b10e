"""The trainer end to end on real MovieLens-100k (small cuts, CPU)."""

import dataclasses

import pytest
import torch

from contracts import DatasetRef, ModelSpec, TrialProgress
from ranking_models import train_step, trainer
from ranking_models.errors import (
    BadDataError,
    BadSpecError,
    DivergenceError,
    OutOfMemoryError,
    TrainingCancelled,
)
from ranking_models.metrics import calibration
from ranking_models.train_step import lr_factor
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
    real = train_step.F.binary_cross_entropy_with_logits

    def nan_loss(logits, labels):
        return real(logits, labels) * float("nan")

    monkeypatch.setattr(train_step.F, "binary_cross_entropy_with_logits", nan_loss)
    with pytest.raises(DivergenceError, match="step 1"):
        train(TINY_SPEC, TINY_DATA)


def test_invalid_spec_fails_before_training():
    with pytest.raises(BadSpecError, match=r"ModelSpec\.embedding_dim"):
        train(TINY_SPEC.model_copy(update={"embedding_dim": 10}), TINY_DATA)


def test_dropout_and_weight_decay_train():
    spec = TINY_SPEC.model_copy(update={"dropout": 0.2, "weight_decay": 1e-4})
    outcome = train(spec, TINY_DATA)
    assert torch.isfinite(torch.tensor(outcome.validation.logloss))


# Dropout, batch norm, warmup + cosine decay and clipping: every piece of resumable state.
RESUME_SPEC = TINY_SPEC.model_copy(
    update={
        "epochs": 2,
        "dropout": 0.2,
        "dense_norm": "batch",
        "lr_warmup_steps": 3,
        "lr_schedule": "cosine",
        "grad_clip_norm": 1.0,
    }
)


def _stop_at(step: int):
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > step

    return should_stop


@pytest.mark.parametrize(
    ("stop_at", "change"),
    [
        (7, {}),  # mid-epoch 1
        (10, {"sparse_optimizer": "adam", "dense_optimizer": "adagrad"}),  # epoch boundary
        (13, {"sparse_optimizer": "sgd", "embedding_precision": "fp16", "dense_optimizer": "sgd"}),
    ],
)
def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path, stop_at, change):
    spec = RESUME_SPEC.model_copy(update=change)
    whole = train(spec, TINY_DATA)
    with pytest.raises(TrainingCancelled):
        train(spec, TINY_DATA, checkpoint_dir=tmp_path, checkpoint_every=4,
              should_stop=_stop_at(stop_at))  # fmt: skip
    assert (tmp_path / "checkpoint.pt").exists()
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    resumed = train(spec, TINY_DATA, checkpoint_dir=tmp_path, checkpoint_every=4)
    assert resumed.resumed_from_step == stop_at
    assert resumed.validation == whole.validation
    assert resumed.test == whole.test
    assert resumed.validation_history == whole.validation_history
    assert resumed.train_loss == pytest.approx(whole.train_loss, rel=1e-9)
    assert resumed.steps == whole.steps == 20


def test_checkpoint_of_another_spec_is_ignored(tmp_path):
    train(TINY_SPEC, TINY_DATA, checkpoint_dir=tmp_path)
    other = train(TINY_SPEC.model_copy(update={"seed": 3}), TINY_DATA, checkpoint_dir=tmp_path)
    assert other.resumed_from_step == 0
    assert other.validation == train(TINY_SPEC.model_copy(update={"seed": 3}), TINY_DATA).validation


def test_progress_reports_checkpoint_step_and_validation_each_epoch(tmp_path):
    reports: list[TrialProgress] = []
    spec = TINY_SPEC.model_copy(update={"epochs": 2})
    outcome = train(spec, TINY_DATA, on_progress=reports.append, progress_every=4,
                    checkpoint_dir=tmp_path, checkpoint_every=6)  # fmt: skip
    assert [r.checkpoint_step for r in reports] == [0, 6, 6, 12, 12, 20]
    assert [r.validation_ne is None for r in reports] == [True] * 2 + [False] * 4
    assert reports[2].validation_ne == outcome.validation_history[0].ne
    assert reports[-1].validation_auc == outcome.validation.auc
    assert len(outcome.validation_history) == 2


def test_loss_staying_far_above_its_start_raises_divergence(monkeypatch):
    real = train_step.F.binary_cross_entropy_with_logits
    calls = 0

    def exploding(logits, labels):
        nonlocal calls
        calls += 1
        # 30x: above 10x the reference, below the 100x that stops training at once.
        return real(logits, labels) * (1.0 if calls <= 5 else 30.0)

    monkeypatch.setattr(train_step.F, "binary_cross_entropy_with_logits", exploding)
    with pytest.raises(DivergenceError, match="for 3 steps") as e:
        train(TINY_SPEC, TINY_DATA, divergence_factor=10.0, divergence_patience=3)
    assert e.value.step == 8


def test_a_loss_spike_far_above_the_reference_raises_divergence_at_once(monkeypatch):
    real = train_step.F.binary_cross_entropy_with_logits
    calls = 0

    def spiking(logits, labels):
        nonlocal calls
        calls += 1
        return real(logits, labels) * (1000.0 if calls == 4 else 1.0)

    monkeypatch.setattr(train_step.F, "binary_cross_entropy_with_logits", spiking)
    with pytest.raises(DivergenceError, match="above 100 x the reference") as e:
        train(TINY_SPEC, TINY_DATA, divergence_factor=10.0, divergence_patience=3)
    assert e.value.step == 4


def test_dense_lr_10_raises_divergence():
    # The loss goes from 0.70 at step 1 to ~7e8 at step 2: a reference averaged over the
    # first steps would have been lifted with it, and the run reported NE ~1e6.
    spec = TINY_SPEC.model_copy(update={"dense_lr": 10.0})
    with pytest.raises(DivergenceError, match="lower dense_lr or sparse_lr") as e:
        train(spec, TINY_DATA)
    assert e.value.step <= 3
    assert e.value.loss > 100 * 0.6


def test_validation_far_worse_than_the_base_rate_raises_divergence(monkeypatch):
    # Confidently wrong predictions: validation log loss ~50 nats, NE ~70.
    monkeypatch.setattr(trainer, "predict", lambda net, split: (1 - 2 * split.labels) * 50.0)
    with pytest.raises(DivergenceError, match=r"validation log loss, NE \d+") as e:
        train(TINY_SPEC, TINY_DATA)
    assert e.value.step == 10  # the end of the only epoch


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"dense_lr": 3e-3},
        {"sparse_lr": 0.15},
        {"dense_lr": 3e-3, "sparse_lr": 0.15},
        {"interaction": "dcn", "sparse_optimizer": "adam", "sparse_lr": 0.01},
        {"interaction": "projection", "dense_norm": "batch", "dropout": 0.2},
        {"batch_size": 16},
    ],
)
def test_healthy_specs_are_not_flagged_as_diverged(change):
    spec = TINY_SPEC.model_copy(update={"epochs": 2} | change)
    outcome = train(spec, TINY_DATA, divergence_patience=5)
    assert outcome.validation.ne < 1.5


def test_divergence_factor_must_exceed_one():
    with pytest.raises(ValueError, match="divergence_factor"):
        train(TINY_SPEC, TINY_DATA, divergence_factor=1.0)


@pytest.mark.parametrize("fault", ["labels", "dense", "ids"])
def test_bad_data_raises_bad_data_error(monkeypatch, fault):
    data = trainer.load_dataset(TINY_DATA, max_table_rows=TINY_SPEC.max_table_rows)
    split = data.train
    if fault == "labels":
        split = dataclasses.replace(split, labels=split.labels * 2)
    elif fault == "dense":
        split = dataclasses.replace(split, dense=split.dense * float("nan"))
    else:
        split = dataclasses.replace(split, ids=split.ids + 10**6)
    bad = dataclasses.replace(data, train=split)
    monkeypatch.setattr(trainer, "load_dataset", lambda *a, **k: bad)
    with pytest.raises(BadDataError):
        train(TINY_SPEC, TINY_DATA)


def test_out_of_memory_is_typed(monkeypatch):
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "build_model", no_memory)
    with pytest.raises(OutOfMemoryError, match="batch_size=256"):
        train(TINY_SPEC, TINY_DATA)


@pytest.mark.parametrize(
    ("schedule", "warmup", "expected"),
    [
        ("none", 0, [1.0, 1.0, 1.0, 1.0]),
        ("none", 2, [0.5, 1.0, 1.0, 1.0]),
        ("linear", 0, [1.0, 0.75, 0.5, 0.25]),
        ("cosine", 2, [0.5, 1.0, 1.0, 0.5]),
    ],
)
def test_lr_factor_warms_up_then_decays(schedule, warmup, expected):
    spec = ModelSpec(lr_schedule=schedule, lr_warmup_steps=warmup)
    assert [lr_factor(spec, s, 4) for s in range(4)] == pytest.approx(expected)


def test_trained_model_is_roughly_calibrated():
    outcome_net = []
    real_evaluate = trainer.evaluate

    def keep(net, split, *, step=0):
        outcome_net.append((net, split))
        return real_evaluate(net, split, step=step)

    import unittest.mock

    with unittest.mock.patch.object(trainer, "evaluate", keep):
        train(TINY_SPEC.model_copy(update={"epochs": 3}), DatasetRef(max_rows=20_000))
    net, split = outcome_net[-1]
    value = calibration(split.labels, trainer.predict(net, split))
    assert 0.8 < value < 1.25
