"""Trains one ``ModelSpec`` on one ``DatasetRef`` and scores it: the body of a trial.

No Temporal here: progress and cancellation come in as plain callables, so an activity
can wire them to heartbeats and cancellation while tests pass lambdas.
"""

import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from contracts import DatasetRef, Metrics, ModelSpec, TrialProgress
from kernels import FusedEmbeddingBagCollection
from ranking_models import checkpoint, datasets, memory, summaries
from ranking_models.checkpoint import LoopState
from ranking_models.data import Batch, CtrDataset, Split, StreamingSplit
from ranking_models.dlrm import build_model, dense_parameters, sparse_modules
from ranking_models.errors import (
    BadDataError,
    DivergenceError,
    OutOfMemoryError,
    TrainingCancelled,
)
from ranking_models.metrics import base_rate_entropy, compute_metrics
from ranking_models.optim import dense_optimizer, lr_factor

# Evaluation has no backward pass, so it can take much larger batches than training.
EVAL_BATCH_SIZE = 8192
# Divergence is judged against a reference loss: the larger of the untrained model's
# loss (the first step's, computed before any update) and the base rate's log loss (the
# constant predictor's: knowing nothing). A mean over the first steps is no reference: a
# learning rate too high to train at blows the loss up within them (dense_lr 10 on
# MovieLens: 0.70, then 6.9e8 at step 2), lifting the threshold out of reach.


@dataclass(frozen=True)
class TrainOutcome:
    """What one training run produced.

    Attributes:
        validation: Metrics on the validation split (for selection).
        test: Metrics on the test split (reported only).
        steps: Optimizer steps taken.
        duration_s: Wall time of the whole run, data loading included.
        train_loss: Mean training loss over the last epoch.
        validation_history: Validation metrics after each epoch, in order.
        resumed_from_step: The checkpoint step this run resumed from (0: a fresh start).
    """

    validation: Metrics
    test: Metrics
    steps: int
    duration_s: float
    train_loss: float
    validation_history: tuple[Metrics, ...] = ()
    resumed_from_step: int = 0


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
    return datasets.load_dataset(dataset, max_table_rows=max_table_rows)


def train(
    model: ModelSpec,
    dataset: DatasetRef,
    *,
    on_progress: Callable[[TrialProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress_every: int = 20,
    device: torch.device | str | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 200,
    divergence_factor: float = 10.0,
    divergence_patience: int = 20,
    memory_limit_bytes: int | None = None,
    tensorboard_dir: Path | None = None,
) -> TrainOutcome:
    """Trains ``model`` on the train split, scoring validation every epoch and test at the end.

    Dense parameters use ``dense_optimizer`` (``dense_lr``, ``weight_decay``, gradients
    clipped to ``grad_clip_norm``); embeddings use ``sparse_optimizer`` fused into
    backward (``sparse_lr``); both rates follow warmup and ``lr_schedule``. The loss is
    binary cross-entropy on logits. Training rows are shuffled each epoch by a generator
    seeded from ``model.seed`` and dropout draws from seeded generators, so the same spec
    on the same data and device gives the same metrics, resumed or not. Seeds the global
    torch RNG (see ``build_model``).

    Args:
        model: The model and how to train it.
        dataset: The data and how to split it.
        on_progress: Called every ``progress_every`` steps and at each epoch's end with
            the epoch (1-based), the steps done, the total steps, the mean training loss
            since the previous report, the newest checkpoint step and (from the first
            epoch's end on) validation NE and AUC.
        should_stop: Polled before every step; it must be cheap. When it returns True,
            training checkpoints (when ``checkpoint_dir`` is set), stops and raises
            ``TrainingCancelled``.
        progress_every: Steps between progress reports.
        device: Where to train; default CUDA when available, else CPU.
        checkpoint_dir: Folder for this run's checkpoint (see ``ranking_models.checkpoint``);
            when it holds one for the same spec and dataset, training resumes from it.
            None: no checkpoints.
        checkpoint_every: Steps between checkpoints (one is also written at the end and
            when ``should_stop`` stops training).
        divergence_factor: Training has diverged when the loss stays above this multiple
            of the reference loss (the larger of the untrained model's loss at step 1 and
            the validation base rate's log loss) for ``divergence_patience`` steps, or
            exceeds its square times the reference at any step, or when an epoch's
            validation log loss is above this multiple of the reference (so validation
            NE is above ``divergence_factor`` too: 10 by default). Must be > 1.
        divergence_patience: Consecutive steps the loss may stay above the threshold.
        memory_limit_bytes: Memory the model may use (see ``memory.check_fits``);
            None: ``memory.memory_limit_bytes()``, the host's RAM or
            ``$REA_MEMORY_LIMIT_GB``.
        tensorboard_dir: Folder for TensorBoard scalars (each step's loss, each epoch's
            validation metrics, the test metrics at the end); None: none written. Training
            also runs in a "train" span with one "epoch" span per finished epoch.

    Returns:
        Validation and test metrics, steps, wall time, the last epoch's mean loss and the
        per-epoch validation metrics.

    Raises:
        BadSpecError: The spec cannot be built.
        BadDataError: The dataset is missing, malformed, splits badly or has ids outside
            their tables.
        DivergenceError: The loss or the predictions became NaN or infinite, or the
            training or validation loss went far above the reference (see
            ``divergence_factor``).
        OutOfMemoryError: The model cannot fit in ``memory_limit_bytes`` (checked before
            it is built), or the model or a batch did not fit in memory.
        TrainingCancelled: ``should_stop`` returned True.
    """
    if progress_every < 1 or checkpoint_every < 1 or divergence_patience < 1:
        raise ValueError(
            "progress_every, checkpoint_every and divergence_patience must be >= 1, got "
            f"{progress_every}, {checkpoint_every}, {divergence_patience}"
        )
    if not divergence_factor > 1.0:
        raise ValueError(f"divergence_factor must be > 1, got {divergence_factor}")
    started = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = load_dataset(dataset, max_table_rows=model.max_table_rows)
    check_data(data)
    # Before anything is allocated: a table that cannot fit fails here, not in the kernel.
    memory.check_fits(model, data.schema, memory_limit_bytes)
    # Validation labels, not training ones: a streamed training split has none up front.
    base_rate_loss = base_rate_entropy(data.validation.labels)
    with (
        summaries.tracer.start_as_current_span(
            "train", attributes={"rea.seed": model.seed, "rea.epochs": model.epochs}
        ) as span,
        typed_errors(model),
        summaries.ScalarLog(tensorboard_dir) as scalars,
    ):
        net = build_model(model, data.schema, device=device)
        train_split = data.train.to(device)
        validation_split = data.validation.to(device)
        optimizer = dense_optimizer(model, dense_parameters(net))
        tables = sparse_modules(net)
        generator = torch.Generator().manual_seed(model.seed)
        steps_per_epoch = train_split.num_batches(model.batch_size)
        total_steps = model.epochs * steps_per_epoch
        restored = None
        if checkpoint_dir is not None:
            restored = checkpoint.load(
                checkpoint_dir, spec=model, dataset=dataset, net=net, optimizer=optimizer
            )
        loop = restored or LoopState(step=0, epoch_generator_state=generator.get_state())
        resumed_from = saved_step = loop.step
        scalars.resume_at(loop.step)

        def report(epoch: int, train_loss: float) -> None:
            if on_progress is None:
                return
            last = loop.validation_history[-1] if loop.validation_history else None
            on_progress(
                TrialProgress(
                    epoch=epoch,
                    step=loop.step,
                    total_steps=total_steps,
                    train_loss=train_loss,
                    checkpoint_step=saved_step,
                    validation_ne=None if last is None else last["ne"],
                    validation_auc=None if last is None else last["auc"],
                    validation_epochs=len(loop.validation_history),
                )
            )

        def save() -> None:
            nonlocal saved_step
            if checkpoint_dir is not None and saved_step != loop.step:
                checkpoint.save(
                    checkpoint_dir,
                    spec=model,
                    dataset=dataset,
                    net=net,
                    optimizer=optimizer,
                    loop=loop,
                )
                saved_step = loop.step

        for epoch in range(1, model.epochs + 1):
            if loop.step >= epoch * steps_per_epoch:
                continue  # finished before the checkpoint
            done_in_epoch = loop.step - (epoch - 1) * steps_per_epoch
            # A no-op on a fresh run; on resume it redraws this epoch's shuffle, and the
            # batches already trained on are skipped below.
            generator.set_state(loop.epoch_generator_state)
            net.train()
            epoch_started = summaries.now_ns()
            window_loss, window_steps = 0.0, 0
            batches = train_split.batches(model.batch_size, generator=generator)
            for batch in itertools.islice(batches, done_in_epoch, None):
                if should_stop is not None and should_stop():
                    save()
                    raise TrainingCancelled(loop.step, tuple(loop.validation_history))
                set_learning_rates(model, optimizer, tables, loop.step, total_steps)
                loss, value = batch_loss(net, batch, step=loop.step + 1)
                # Before backward: the fused kernel would write NaN into the tables.
                _check_divergence(
                    loop,
                    value,
                    divergence_factor,
                    divergence_patience,
                    base_rate_loss=base_rate_loss,
                )
                apply_gradients(model, net, optimizer, loss)
                loop.step += 1
                scalars.add("train/loss", value, loop.step)
                loop.epoch_loss_sum += value
                window_loss += value
                window_steps += 1
                last_of_epoch = loop.step % steps_per_epoch == 0
                if last_of_epoch:
                    loop.last_epoch_loss = loop.epoch_loss_sum / steps_per_epoch
                    loop.epoch_loss_sum = 0.0
                    loop.epoch_generator_state = generator.get_state()
                    metrics = evaluate(net, validation_split, step=loop.step)
                    _check_validation(loop, metrics, divergence_factor)
                    loop.validation_history.append(metrics.model_dump())
                    scalars.add("train/epoch_loss", loop.last_epoch_loss, loop.step)
                    scalars.add_metrics("validation", metrics, loop.step)
                    summaries.epoch_span(
                        epoch_started, epoch, loop.step, loop.last_epoch_loss, metrics
                    )
                    net.train()
                if loop.step % checkpoint_every == 0 or loop.step == total_steps:
                    save()
                if loop.step % progress_every == 0 or last_of_epoch:
                    report(epoch, window_loss / window_steps)
                    window_loss, window_steps = 0.0, 0
        history = tuple(Metrics.model_validate(m) for m in loop.validation_history)
        test = evaluate(net, data.test.to(device), step=loop.step)
        scalars.add_metrics("test", test, loop.step)
        span.set_attributes({"rea.steps": loop.step, "rea.resumed_from_step": resumed_from})
    return TrainOutcome(
        validation=history[-1],
        test=test,
        steps=loop.step,
        duration_s=time.perf_counter() - started,
        train_loss=loop.last_epoch_loss,
        validation_history=history,
        resumed_from_step=resumed_from,
    )


def set_learning_rates(
    model: ModelSpec,
    optimizer: torch.optim.Optimizer,
    tables: list[FusedEmbeddingBagCollection],
    step: int,
    total_steps: int,
) -> None:
    """Sets both learning rates for the step about to run (see ``optim.lr_factor``).

    Args:
        model: The spec (peak ``dense_lr`` and ``sparse_lr``, warmup and schedule).
        optimizer: The dense optimizer.
        tables: The fused embedding modules (see ``dlrm.sparse_modules``).
        step: Steps already taken (0 for the first step).
        total_steps: Steps of the whole run.
    """
    factor = lr_factor(model, step, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = model.dense_lr * factor
    for t in tables:
        t.set_learning_rate(model.sparse_lr * factor)


def batch_loss(net: nn.Module, batch: Batch, *, step: int) -> tuple[torch.Tensor, float]:
    """Forward pass and binary cross-entropy of one training batch.

    Args:
        net: A model from ``build_model``, in train mode.
        batch: B examples.
        step: The step (1-based) this batch trains, named in errors.

    Returns:
        The loss tensor (for backward) and its value.

    Raises:
        BadDataError: The batch has NaN or infinite dense features (when the loss is not
            finite), or labels other than 0 and 1.
    """
    logits = net(batch.dense, batch.sparse).squeeze(1)  # (B,)
    loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
    value = loss.item()
    # Only when the loss is not finite: the check reads the whole (B, num_dense) batch.
    if not math.isfinite(value) and not torch.isfinite(batch.dense).all():
        raise BadDataError(f"a training batch at step {step} has NaN or infinite dense features")
    if not torch.all((batch.labels == 0) | (batch.labels == 1)):
        raise BadDataError(f"a training batch at step {step} has labels other than 0 and 1")
    return loss, value


def apply_gradients(
    model: ModelSpec, net: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor
) -> None:
    """Backward (which also updates the embedding rows, fused), clipping, the dense step.

    Args:
        model: The spec (``grad_clip_norm``).
        net: The model ``loss`` came from.
        optimizer: The dense optimizer, its learning rate set.
        loss: The batch's loss.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # also applies the sparse optimizer to the embedding rows
    if model.grad_clip_norm > 0.0:
        nn.utils.clip_grad_norm_(dense_parameters(net), model.grad_clip_norm)
    optimizer.step()


def check_data(data: CtrDataset) -> None:
    """Rejects data no model can learn from or be scored on.

    Dense features are checked batch by batch (see ``train``): a streamed split holds no
    dense matrix to check up front. So are a streamed training split's labels: reading
    them here would be a whole extra pass over the largest split before training starts.

    Raises:
        BadDataError: A split is empty, has labels other than 0/1, or (validation, test)
            only one class.
    """
    for split in (data.train, data.validation, data.test):
        if len(split) == 0:
            raise BadDataError(f"the {split.name} split is empty; check the DatasetRef fractions")
        if split.name == "train" and isinstance(split, StreamingSplit):
            continue
        labels = split.labels
        if not torch.all((labels == 0) | (labels == 1)):
            raise BadDataError(f"the {split.name} split has labels other than 0 and 1")
        if split.name != "train" and labels.min() == labels.max():
            raise BadDataError(
                f"the {split.name} split has one class only, so NE and AUC are undefined; "
                "use more rows"
            )


def _check_divergence(
    loop: LoopState, loss: float, factor: float, patience: int, *, base_rate_loss: float = 0.0
) -> None:
    """Raises ``DivergenceError`` when the loss of the step about to run has diverged.

    Step 1 sets the reference, the larger of its loss and ``base_rate_loss`` (see
    ``train``'s ``divergence_factor``; ``distributed`` calls this too); later steps
    diverge at a loss above ``factor ** 2`` times it (no healthy step comes near: the
    highest seen on MovieLens was 7x, at batch size 1), or above ``factor`` times it
    for ``patience`` steps in a row.
    """
    step = loop.step + 1
    if not math.isfinite(loss):
        raise DivergenceError(step, loss)
    if loop.reference_loss == 0.0:  # step 1: unknown until now (a loss is never 0 here)
        loop.reference_loss = max(loss, base_rate_loss)
        return
    reference = loop.reference_loss
    if loss > factor**2 * reference:
        raise DivergenceError(
            step, loss, f"above {factor**2:g} x the reference loss {reference:.4g}"
        )
    if loss > factor * reference:
        loop.high_streak += 1
        if loop.high_streak >= patience:
            raise DivergenceError(
                step,
                loss,
                f"above {factor:g} x the reference loss {reference:.4g} for {patience} steps",
            )
    else:
        loop.high_streak = 0


def _check_validation(loop: LoopState, metrics: Metrics, factor: float) -> None:
    """Raises ``DivergenceError`` when an epoch's validation log loss is far above the reference.

    The backstop for a run whose training loss blew up and came back down between the
    step checks (the net then scores validation far worse than knowing nothing). Against
    the reference rather than NE alone: an untrained model on rare clicks already has a
    high NE (0.69 / 0.135 = 5.1 at a 3% click rate), which is no divergence.
    """
    if metrics.logloss > factor * loop.reference_loss:
        raise DivergenceError(
            loop.step,
            metrics.logloss,
            f"validation log loss, NE {metrics.ne:.4g}: above {factor:g} x the reference "
            f"loss {loop.reference_loss:.4g}",
        )


def predict(net: nn.Module, split: Split) -> torch.Tensor:
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


def evaluate(net: nn.Module, split: Split, *, step: int = 0) -> Metrics:
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
def typed_errors(spec: ModelSpec) -> Iterator[None]:
    """Turns allocation failures into ``OutOfMemoryError`` and ids outside their tables
    into ``BadDataError``, around building and training ``spec``."""
    with _out_of_memory_as_typed_error(spec), _bad_ids_as_typed_error():
        yield


@contextmanager
def _bad_ids_as_typed_error() -> Iterator[None]:
    """Turns FBGEMM's bounds check failure (an id outside its table) into ``BadDataError``."""
    try:
        yield
    except RuntimeError as e:
        if "idx < num_rows" not in str(e):
            raise
        raise BadDataError(
            f"a sparse id is outside its embedding table (hashing went wrong): {e}"
        ) from e


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
