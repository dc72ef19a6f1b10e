"""One optimizer step of a ranking model, the same in every training path.

``trainer.train`` (one process), ``smoke.smoke_step`` (the preflight's single step) and
``distributed_rank`` (one rank of a torchrun job) all train through ``TrainStep``: the learning
rates for the step (warmup, then a linear or cosine decay), the binary cross-entropy
loss, the ``DivergenceMonitor``'s judgement of that loss, backward (which also updates
the fused embedding tables), gradient clipping and the dense optimizer's step. What
differs between the paths comes in as parts: where the sparse rate goes (``SparseRate``)
and how a rank's loss becomes the run's (``ReduceLoss``).

(Named ``train_step`` rather than ``step``: ``step`` is the steps-taken count everywhere.)
"""

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from contracts import Metrics, ModelSpec
from ranking_models.data import Batch
from ranking_models.errors import BadDataError, DivergenceError, OutOfMemoryError

# Turns the loss this process computed into the value the monitor judges and the caller
# logs; on distributed ranks, the mean over ranks.
ReduceLoss = Callable[[torch.Tensor], float]


class SparseRate(Protocol):
    """Something that takes the sparse learning rate: a fused embedding module
    (``kernels.FusedEmbeddingBagCollection``) or a distributed rank's fused optimizer."""

    def set_learning_rate(self, learning_rate: float) -> None: ...


def lr_factor(spec: ModelSpec, step: int, total_steps: int) -> float:
    """The multiplier of both peak learning rates for the step about to run.

    Linear warmup from 0 over ``lr_warmup_steps``, then ``lr_schedule`` decays towards 0
    at ``total_steps`` (``none`` holds the peak).

    Args:
        spec: The model spec.
        step: Steps already taken (0 for the first step).
        total_steps: Steps of the whole run.

    Returns:
        A factor in (0, 1].
    """
    warmup = spec.lr_warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if spec.lr_schedule == "none":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)  # in [0, 1)
    if spec.lr_schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rates(
    spec: ModelSpec,
    optimizer: torch.optim.Optimizer,
    sparse: Sequence[SparseRate],
    step: int,
    total_steps: int,
) -> None:
    """Sets both learning rates for the step about to run (see ``lr_factor``).

    Args:
        spec: The spec (peak ``dense_lr`` and ``sparse_lr``, warmup and schedule).
        optimizer: The dense optimizer.
        sparse: Where the sparse rate goes (see ``dlrm.sparse_modules``).
        step: Steps already taken (0 for the first step).
        total_steps: Steps of the whole run.
    """
    factor = lr_factor(spec, step, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = spec.dense_lr * factor
    for s in sparse:
        s.set_learning_rate(spec.sparse_lr * factor)


def forward_loss(net: nn.Module, batch: Batch) -> torch.Tensor:
    """Forward pass and binary cross-entropy on logits of one training batch.

    Args:
        net: A model from ``build_model`` (or its DMP), in train mode.
        batch: B examples.

    Returns:
        The mean loss over the batch, a scalar tensor ready for backward.
    """
    logits = net(batch.dense, batch.sparse).squeeze(1)  # (B,)
    return F.binary_cross_entropy_with_logits(logits, batch.labels)


def batch_loss(net: nn.Module, batch: Batch, *, step: int) -> tuple[torch.Tensor, float]:
    """``forward_loss`` of one batch, and its value, with the batch checked for bad data.

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
    loss = forward_loss(net, batch)
    value = loss.item()
    # Only when the loss is not finite: the check reads the whole (B, num_dense) batch.
    if not math.isfinite(value) and not torch.isfinite(batch.dense).all():
        raise BadDataError(f"a training batch at step {step} has NaN or infinite dense features")
    if not torch.all((batch.labels == 0) | (batch.labels == 1)):
        raise BadDataError(f"a training batch at step {step} has labels other than 0 and 1")
    return loss, value


def apply_gradients(spec: ModelSpec, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Backward (which also updates the embedding rows, fused), clipping, the dense step.

    Args:
        spec: The spec (``grad_clip_norm``; 0 does not clip).
        optimizer: The dense optimizer, its learning rate set.
        loss: The batch's loss.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # also applies the sparse optimizer to the embedding rows
    if spec.grad_clip_norm > 0.0:
        # The optimizer's own parameters: the dense ones (the fused tables step in backward).
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, spec.grad_clip_norm)
    optimizer.step()


class MonitorState(Protocol):
    """What a ``DivergenceMonitor`` remembers between steps. ``checkpoint.LoopState`` is
    one, so a resumed run keeps its reference loss and streak."""

    reference_loss: float
    high_streak: int


@dataclass
class _FreshState:
    reference_loss: float = 0.0  # 0: unknown until step 1
    high_streak: int = 0


class DivergenceMonitor:
    """Judges each step's loss, and each epoch's validation log loss, against a reference.

    The reference is the larger of step 1's loss (the untrained model's, computed before
    any update) and ``base_rate_loss`` (the constant predictor's: knowing nothing). A mean
    over the first steps is no reference: a learning rate too high to train at blows the
    loss up within them (dense_lr 10 on MovieLens: 0.70, then 6.9e8 at step 2), lifting
    the threshold out of reach. A later step has diverged when its loss is not finite, is
    above ``factor ** 2`` times the reference (no healthy step comes near: the highest
    seen on MovieLens was 7x, at batch size 1), or stays above ``factor`` times it for
    ``patience`` steps in a row. An epoch has diverged when its validation log loss is
    above ``factor`` times the reference (so its NE is above ``factor`` too).

    Args:
        state: Where the reference and the streak are kept; None: a fresh state of its own.
        factor: The multiple of the reference that counts as far above it; must be > 1.
        patience: Consecutive steps the loss may stay above ``factor`` times the reference.
        base_rate_loss: The floor of the reference; 0: step 1's loss alone.

    Example::

        monitor = DivergenceMonitor(loop, base_rate_loss=base_rate_entropy(labels))
        monitor.check_step(loss, step=loop.step + 1)  # before backward
    """

    FACTOR = 10.0
    PATIENCE = 20

    def __init__(
        self,
        state: MonitorState | None = None,
        *,
        factor: float = FACTOR,
        patience: int = PATIENCE,
        base_rate_loss: float = 0.0,
    ) -> None:
        self.state: MonitorState = _FreshState() if state is None else state
        self.factor = factor
        self.patience = patience
        self.base_rate_loss = base_rate_loss

    def check_step(self, loss: float, step: int) -> None:
        """Judges the loss of the step about to update the model.

        Args:
            loss: The step's loss.
            step: The step (1-based); step 1 sets the reference.

        Raises:
            DivergenceError: The loss has diverged.
        """
        if not math.isfinite(loss):
            raise DivergenceError(step, loss)
        state, factor = self.state, self.factor
        if state.reference_loss == 0.0:  # step 1: unknown until now (a loss is never 0 here)
            state.reference_loss = max(loss, self.base_rate_loss)
            return
        reference = state.reference_loss
        if loss > factor**2 * reference:
            raise DivergenceError(
                step, loss, f"above {factor**2:g} x the reference loss {reference:.4g}"
            )
        if loss > factor * reference:
            state.high_streak += 1
            if state.high_streak >= self.patience:
                raise DivergenceError(
                    step,
                    loss,
                    f"above {factor:g} x the reference loss {reference:.4g} "
                    f"for {self.patience} steps",
                )
        else:
            state.high_streak = 0

    def check_validation(self, metrics: Metrics, step: int) -> None:
        """Judges an epoch's validation metrics.

        The backstop for a run whose training loss blew up and came back down between the
        step checks (the net then scores validation far worse than knowing nothing).
        Against the reference rather than NE alone: an untrained model on rare clicks
        already has a high NE (0.69 / 0.135 = 5.1 at a 3% click rate), which is no
        divergence.

        Args:
            metrics: The epoch's validation metrics.
            step: Steps trained so far, named in the error.

        Raises:
            DivergenceError: The validation log loss is far above the reference.
        """
        reference = self.state.reference_loss
        if metrics.logloss > self.factor * reference:
            raise DivergenceError(
                step,
                metrics.logloss,
                f"validation log loss, NE {metrics.ne:.4g}: above {self.factor:g} x the "
                f"reference loss {reference:.4g}",
            )


@dataclass(frozen=True)
class TrainStep:
    """One optimizer step: learning rates, loss, divergence check, backward, clipping, update.

    The loss is judged before backward: the fused embedding kernels update the tables
    inside backward, and would write a NaN loss's gradients into them.

    Attributes:
        spec: Peak learning rates, warmup, schedule and ``grad_clip_norm``.
        net: The model (on a distributed rank, its ``DistributedModelParallel``).
        optimizer: The dense optimizer (see ``optim.dense_optimizer``).
        sparse: Where the sparse learning rate goes.
        monitor: Judges each step's loss.
        total_steps: Steps of the whole run, for the learning-rate schedule.
        reduce: None: the loss is this process's, and each batch is checked for bad data
            (``batch_loss``). Otherwise the value judged and returned is ``reduce`` of the
            loss, without the batch checks: on distributed ranks it is the mean over
            ranks, so that every rank raises at the same step, and a check failing on one
            rank alone would leave the others waiting in the next collective (NaN
            features still end the run, as divergence).

    Example::

        train_step = TrainStep(spec, net, optimizer, sparse_modules(net), monitor, 100)
        loss = train_step(batch, step=0)  # the first step's loss, before its update
    """

    spec: ModelSpec
    net: nn.Module
    optimizer: torch.optim.Optimizer
    sparse: Sequence[SparseRate]
    monitor: DivergenceMonitor
    total_steps: int
    reduce: ReduceLoss | None = None

    def __call__(self, batch: Batch, *, step: int) -> float:
        """Trains on ``batch`` as the step after ``step``.

        Args:
            batch: B examples (on a distributed rank, its slice of the global batch).
            step: Steps already taken (0 for the first step).

        Returns:
            The step's loss (before the update).

        Raises:
            BadDataError: See ``batch_loss`` (only without ``reduce``).
            DivergenceError: See ``DivergenceMonitor.check_step``.
        """
        set_learning_rates(self.spec, self.optimizer, self.sparse, step, self.total_steps)
        if self.reduce is None:
            loss, value = batch_loss(self.net, batch, step=step + 1)
        else:
            loss = forward_loss(self.net, batch)
            value = self.reduce(loss.detach())
        self.monitor.check_step(value, step + 1)
        apply_gradients(self.spec, self.optimizer, loss)
        return value


@contextmanager
def typed_errors(spec: ModelSpec) -> Iterator[None]:
    """Turns allocation failures into ``OutOfMemoryError`` and ids outside their tables
    into ``BadDataError``, around building ``spec`` and training it step by step."""
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
