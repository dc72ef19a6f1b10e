"""Trains one ``ModelSpec`` on one ``DatasetRef`` and scores it: the body of a trial.

No Temporal here: progress and cancellation come in as plain callables, so an activity
can wire them to heartbeats and cancellation while tests pass lambdas.
"""

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from contracts import DatasetRef, Metrics, ModelSpec, TrialProgress
from ranking_models.data import CtrDataset, CtrSplit
from ranking_models.dlrm import build_model, dense_parameters
from ranking_models.errors import DivergenceError, OutOfMemoryError, TrainingCancelled
from ranking_models.metrics import compute_metrics
from ranking_models.movielens import load_movielens

# Evaluation has no backward pass, so it can take much larger batches than training.
EVAL_BATCH_SIZE = 8192


@dataclass(frozen=True)
class TrainOutcome:
    """What one training run produced.

    Attributes:
        validation: Metrics on the validation split (for selection).
        test: Metrics on the test split (reported only).
        steps: Optimizer steps taken.
        duration_s: Wall time of the whole run, data loading included.
        train_loss: Mean training loss over the last epoch.
    """

    validation: Metrics
    test: Metrics
    steps: int
    duration_s: float
    train_loss: float


def load_dataset(dataset: DatasetRef, *, max_table_rows: int) -> CtrDataset:
    """Loads the dataset ``dataset.name`` names (cached per process).

    Args:
        dataset: Which data and how to cut it.
        max_table_rows: Ids are hashed into at most this many rows per table.

    Returns:
        The split dataset.

    Raises:
        BadDataError: The data is missing or malformed.
    """
    # DatasetRef.name has one allowed value today; this is where the next one goes.
    return load_movielens(dataset, max_table_rows=max_table_rows)


def train(
    model: ModelSpec,
    dataset: DatasetRef,
    *,
    on_progress: Callable[[TrialProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress_every: int = 20,
    device: torch.device | str | None = None,
) -> TrainOutcome:
    """Trains ``model`` on the train split, then scores validation and test.

    Dense parameters use Adam (``dense_lr``, ``weight_decay``); embeddings use
    row-wise Adagrad fused into backward (``sparse_lr``); the loss is binary
    cross-entropy on logits. Training rows are shuffled each epoch by a generator seeded
    from ``model.seed``, so the same spec on the same data and device gives the same
    metrics. Seeds the global torch RNG (see ``build_model``).

    Args:
        model: The model and how to train it.
        dataset: The data and how to split it.
        on_progress: Called every ``progress_every`` steps and at each epoch's end with
            the epoch (1-based), the steps done, the total steps and the mean training
            loss since the previous report.
        should_stop: Polled before every step; it must be cheap. When it returns True,
            training stops and ``TrainingCancelled`` is raised.
        progress_every: Steps between progress reports.
        device: Where to train; default CUDA when available, else CPU.

    Returns:
        Validation and test metrics, steps, wall time and the last epoch's mean loss.

    Raises:
        BadSpecError: The spec cannot be built.
        BadDataError: The dataset is missing, malformed or splits badly.
        DivergenceError: The loss or the predictions became NaN or infinite.
        OutOfMemoryError: The model or a batch did not fit in memory.
        TrainingCancelled: ``should_stop`` returned True.
    """
    if progress_every < 1:
        raise ValueError(f"progress_every must be >= 1, got {progress_every}")
    started = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_dataset(dataset, max_table_rows=model.max_table_rows)
    with _out_of_memory_as_typed_error(model):
        net = build_model(model, data.schema, device=device)
        train_split = data.train.to(device)
        optimizer = torch.optim.Adam(
            dense_parameters(net), lr=model.dense_lr, weight_decay=model.weight_decay
        )
        generator = torch.Generator().manual_seed(model.seed)
        steps_per_epoch = train_split.num_batches(model.batch_size)
        total_steps = model.epochs * steps_per_epoch
        step = 0
        epoch_loss = 0.0
        for epoch in range(1, model.epochs + 1):
            net.train()
            epoch_loss, window_loss, window_steps = 0.0, 0.0, 0
            for batch in train_split.batches(model.batch_size, generator=generator):
                if should_stop is not None and should_stop():
                    raise TrainingCancelled(step)
                logits = net(batch.dense, batch.sparse).squeeze(1)  # (B,)
                loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
                value = loss.item()
                if not math.isfinite(value):
                    # Before backward: the fused kernel would write NaN into the tables.
                    raise DivergenceError(step + 1, value)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # also applies row-wise Adagrad to the embedding rows
                optimizer.step()
                step += 1
                epoch_loss += value
                window_loss += value
                window_steps += 1
                last_of_epoch = step % steps_per_epoch == 0
                if on_progress is not None and (step % progress_every == 0 or last_of_epoch):
                    on_progress(
                        TrialProgress(
                            epoch=epoch,
                            step=step,
                            total_steps=total_steps,
                            train_loss=window_loss / window_steps,
                        )
                    )
                    window_loss, window_steps = 0.0, 0
            epoch_loss /= steps_per_epoch
        validation = evaluate(net, data.validation.to(device), step=step)
        test = evaluate(net, data.test.to(device), step=step)
    return TrainOutcome(
        validation=validation,
        test=test,
        steps=step,
        duration_s=time.perf_counter() - started,
        train_loss=epoch_loss,
    )


def predict(net: nn.Module, split: CtrSplit) -> torch.Tensor:
    """Logits for every row of ``split``, in eval mode and without gradients.

    Args:
        net: A model from ``build_model``.
        split: The rows to score (on the model's device).

    Returns:
        (N,) float32 logits.
    """
    net.eval()
    with torch.no_grad():
        parts = [
            net(batch.dense, batch.sparse).squeeze(1)  # (B,)
            for batch in split.batches(EVAL_BATCH_SIZE)
        ]
    return torch.cat(parts)


def evaluate(net: nn.Module, split: CtrSplit, *, step: int = 0) -> Metrics:
    """NE, AUC and log loss of ``net`` on ``split``.

    Args:
        net: A model from ``build_model``.
        split: The rows to score.
        step: Steps trained so far, named in a divergence error.

    Returns:
        The split's metrics.

    Raises:
        DivergenceError: Some predictions are NaN or infinite.
    """
    logits = predict(net, split)
    if not torch.isfinite(logits).all():
        raise DivergenceError(step, float("nan"))
    return compute_metrics(split.labels.cpu(), logits.cpu())


@contextmanager
def _out_of_memory_as_typed_error(spec: ModelSpec) -> Iterator[None]:
    """Turns CUDA and host allocation failures into ``OutOfMemoryError``."""
    hint = (
        f"batch_size={spec.batch_size}, embedding_dim={spec.embedding_dim}, "
        f"max_table_rows={spec.max_table_rows}; lower one of them"
    )
    try:
        yield
    except torch.OutOfMemoryError as e:
        raise OutOfMemoryError(f"out of device memory with {hint}: {e}") from e
    except MemoryError as e:
        raise OutOfMemoryError(f"out of host memory with {hint}") from e
    except RuntimeError as e:
        # The CPU allocator reports failure as a plain RuntimeError.
        if "can't allocate memory" not in str(e):
            raise
        raise OutOfMemoryError(f"out of host memory with {hint}: {e}") from e
