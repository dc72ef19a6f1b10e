"""Trains one ``ModelSpec`` on one ``DatasetRef`` and scores it: the body of a trial.

No Temporal here: progress and cancellation come in as plain callables, so an activity
can wire them to heartbeats and cancellation while tests pass lambdas.

``train`` is the outline of a run: load and check the data (``_load``), build the model
and restore its checkpoint (``_build``), train epoch by epoch (``_Run.train_epoch``, each
step a ``train_step.TrainStep``, each epoch closed by scoring validation), checkpoint and
report as it goes, and score test at the end.
"""

import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from opentelemetry.trace import Span
from torch import nn

from contracts import DatasetRef, Metrics, ModelSpec, TrialProgress
from ranking_models import checkpoint, memory, summaries, threads
from ranking_models.checkpoint import LoopState
from ranking_models.data import CtrDataset, Split
from ranking_models.datasets import check_data, load_dataset
from ranking_models.dlrm import build_model, dense_parameters, sparse_modules
from ranking_models.errors import DivergenceError, TrainingCancelled
from ranking_models.metrics import base_rate_entropy, compute_metrics
from ranking_models.optim import dense_optimizer
from ranking_models.summaries import ScalarLog
from ranking_models.train_step import DivergenceMonitor, TrainStep, typed_errors

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
    divergence_factor: float = DivergenceMonitor.FACTOR,
    divergence_patience: int = DivergenceMonitor.PATIENCE,
    memory_limit_bytes: int | None = None,
    tensorboard_dir: Path | None = None,
    data_fraction: float = 1.0,
) -> TrainOutcome:
    """Trains ``model`` on the train split, scoring validation every epoch and test at the end.

    Each step is a ``TrainStep`` (learning rates, loss, divergence check, clipped update).
    Rows are shuffled each epoch by a generator seeded from ``model.seed`` and dropout
    draws from seeded generators, so the same spec on the same data and device gives the
    same metrics, resumed or not. Seeds the global torch RNG (see ``build_model``).

    Args:
        model: The model and how to train it.
        dataset: The data and how to split it.
        on_progress: Called every ``progress_every`` steps and at each epoch's end (see
            ``TrialProgress``; validation NE and AUC once an epoch has ended).
        should_stop: Polled before every step; it must be cheap. True checkpoints (when
            ``checkpoint_dir`` is set), stops and raises ``TrainingCancelled``.
        progress_every: Steps between progress reports.
        device: Where to train; default CUDA when available, else CPU.
        checkpoint_dir: Folder of this run's checkpoint, resumed from when it holds one
            of the same spec and dataset (see ``checkpoint``); None: no checkpoints.
        checkpoint_every: Steps between checkpoints (also written at the end and on stop).
        divergence_factor: See ``DivergenceMonitor``; must be > 1.
        divergence_patience: See ``DivergenceMonitor``; must be >= 1.
        memory_limit_bytes: Memory the model may use (see ``memory.check_fits``); None:
            the host's RAM or ``$REA_MEMORY_LIMIT_GB``.
        tensorboard_dir: Folder for TensorBoard scalars (see ``summaries``); None: none.
        data_fraction: The share of the training split each epoch trains on, in (0, 1]:
            the first ``ceil(fraction * batches)`` batches of the epoch's shuffle (a cheap,
            low-fidelity run for multi-fidelity screening; validation and test are whole).

    Returns:
        Validation and test metrics, steps, wall time, the last epoch's mean loss and the
        per-epoch validation metrics.

    Raises:
        BadSpecError: The spec cannot be built.
        BadDataError: The data is missing, malformed, splits badly or has ids outside
            their tables.
        DivergenceError: See ``DivergenceMonitor``; also NaN or infinite predictions.
        OutOfMemoryError: The model cannot fit (checked before it is built), or the model
            or a batch did not fit in memory.
        TrainingCancelled: ``should_stop`` returned True.
    """
    # The trial's thread team, sized before its first op and kept to the free cores (``threads``).
    team = threads.TrialThreads()
    options = _Options(
        on_progress=on_progress,
        should_stop=team.polling(should_stop),
        progress_every=progress_every,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        divergence_factor=divergence_factor,
        divergence_patience=divergence_patience,
        data_fraction=data_fraction,
    )
    started = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data, base_rate_loss = _load(model, dataset, memory_limit_bytes)
    with _scope(model, tensorboard_dir) as (span, scalars):
        run = _build(model, dataset, data, device, options, scalars, base_rate_loss)
        run.loop.team = team.choose(_forward_pass(run), known=run.loop.team)
        for epoch in range(1, model.epochs + 1):
            run.train_epoch(epoch)
        test = run.score_test(data.test.to(device))
        span.set_attributes({"rea.steps": run.loop.step, "rea.resumed_from_step": run.resumed_from})
    return run.outcome(test, duration_s=time.perf_counter() - started)


@contextmanager
def _scope(model: ModelSpec, tensorboard_dir: Path | None) -> Iterator[tuple[Span, ScalarLog]]:
    """What surrounds building and training: the "train" span (the outermost, so that it
    records the typed error), typed errors, and the TensorBoard scalars (closed first)."""
    with (
        summaries.tracer.start_as_current_span(
            "train", attributes={"rea.seed": model.seed, "rea.epochs": model.epochs}
        ) as span,
        typed_errors(model),
        ScalarLog(tensorboard_dir) as scalars,
    ):
        yield span, scalars


@dataclass(frozen=True)
class _Options:
    """``train``'s arguments for reporting, checkpointing, stopping and divergence."""

    on_progress: Callable[[TrialProgress], None] | None
    should_stop: Callable[[], bool] | None
    progress_every: int
    checkpoint_dir: Path | None
    checkpoint_every: int
    divergence_factor: float
    divergence_patience: int
    data_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.progress_every < 1 or self.checkpoint_every < 1 or self.divergence_patience < 1:
            raise ValueError(
                "progress_every, checkpoint_every and divergence_patience must be >= 1, got "
                f"{self.progress_every}, {self.checkpoint_every}, {self.divergence_patience}"
            )
        if not self.divergence_factor > 1.0:
            raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor}")
        if not 0.0 < self.data_fraction <= 1.0:
            raise ValueError(f"data_fraction must be in (0, 1], got {self.data_fraction}")


def _load(
    model: ModelSpec, dataset: DatasetRef, memory_limit_bytes: int | None
) -> tuple[CtrDataset, float]:
    """The checked data and its base-rate loss, once the model is known to fit beside it."""
    data = load_dataset(dataset, max_table_rows=model.max_table_rows)
    check_data(data)
    # Before anything is allocated: a table that cannot fit fails here, not in the kernel.
    memory.check_fits(model, data.schema, memory_limit_bytes)
    # Validation labels, not training ones: a streamed training split has none up front.
    return data, base_rate_entropy(data.validation.labels)


class _Checkpoints:
    """The run's checkpoint: restored once at the start, saved whenever the loop moved on.

    Args:
        directory: The run's checkpoint folder; None: nothing is restored or saved.
        spec: The spec being trained (a checkpoint of another is ignored).
        dataset: The data (likewise).
        net: The model whose state is saved and restored.
        optimizer: The dense optimizer (likewise).
    """

    def __init__(
        self,
        directory: Path | None,
        spec: ModelSpec,
        dataset: DatasetRef,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        self.directory = directory
        self.spec, self.dataset, self.net, self.optimizer = spec, dataset, net, optimizer
        self.saved_step = 0  # the step the newest checkpoint holds

    def restore(self, fresh: LoopState) -> LoopState:
        """The checkpoint's loop state (its model and optimizer state loaded), else ``fresh``."""
        restored = None
        if self.directory is not None:
            restored = checkpoint.load(
                self.directory,
                spec=self.spec,
                dataset=self.dataset,
                net=self.net,
                optimizer=self.optimizer,
            )
        loop = restored or fresh
        self.saved_step = loop.step
        return loop

    def save(self, loop: LoopState) -> None:
        """Writes a checkpoint at ``loop.step``, unless there is no folder or one is there."""
        if self.directory is not None and self.saved_step != loop.step:
            checkpoint.save(
                self.directory,
                spec=self.spec,
                dataset=self.dataset,
                net=self.net,
                optimizer=self.optimizer,
                loop=loop,
            )
            self.saved_step = loop.step


@dataclass
class _Run:
    """The parts of a run that every epoch uses, and the loop's state (see ``_build``)."""

    spec: ModelSpec
    net: nn.Module
    train_step: TrainStep
    loop: LoopState
    generator: torch.Generator  # the data order's
    train_split: Split
    validation_split: Split
    steps_per_epoch: int
    checkpoints: _Checkpoints
    scalars: ScalarLog
    options: _Options
    resumed_from: int

    def train_epoch(self, epoch: int) -> None:
        """Trains epoch ``epoch`` (1-based) from where the loop stands, checkpointing and
        reporting on the way; an epoch the restored checkpoint had finished is skipped."""
        loop, per_epoch, options = self.loop, self.steps_per_epoch, self.options
        if loop.step >= epoch * per_epoch:
            return  # finished before the checkpoint
        done_in_epoch = loop.step - (epoch - 1) * per_epoch
        # A no-op on a fresh run; on resume it redraws this epoch's shuffle, and the
        # batches already trained on are skipped below.
        self.generator.set_state(loop.epoch_generator_state)
        self.net.train()
        epoch_started = summaries.now_ns()
        window_loss, window_steps = 0.0, 0
        batches = self.train_split.batches(self.spec.batch_size, generator=self.generator)
        for batch in itertools.islice(batches, done_in_epoch, per_epoch):
            self._stop_if_asked()
            value = self.train_step(batch, step=loop.step)
            loop.step += 1
            self.scalars.add("train/loss", value, loop.step)
            loop.epoch_loss_sum += value
            window_loss += value
            window_steps += 1
            last_of_epoch = loop.step % per_epoch == 0
            if last_of_epoch:
                self._end_epoch(epoch, epoch_started)
            if loop.step % options.checkpoint_every == 0 or loop.step == self.total_steps:
                self.checkpoints.save(loop)
            if loop.step % options.progress_every == 0 or last_of_epoch:
                self._report(epoch, window_loss / window_steps)
                window_loss, window_steps = 0.0, 0

    @property
    def total_steps(self) -> int:
        return self.train_step.total_steps

    def _stop_if_asked(self) -> None:
        """Checkpoints and raises ``TrainingCancelled`` when ``should_stop`` says so."""
        should_stop = self.options.should_stop
        if should_stop is not None and should_stop():
            self.checkpoints.save(self.loop)
            raise TrainingCancelled(self.loop.step, tuple(self.loop.validation_history))

    def _end_epoch(self, epoch: int, started_ns: int) -> None:
        """Closes an epoch: its mean loss, the next one's shuffle, validation scored and judged."""
        loop = self.loop
        loop.last_epoch_loss = loop.epoch_loss_sum / self.steps_per_epoch
        loop.epoch_loss_sum = 0.0
        loop.epoch_generator_state = self.generator.get_state()
        metrics = evaluate(self.net, self.validation_split, step=loop.step)
        self.train_step.monitor.check_validation(metrics, loop.step)
        loop.validation_history.append(metrics.model_dump())
        self.scalars.add("train/epoch_loss", loop.last_epoch_loss, loop.step)
        self.scalars.add_metrics("validation", metrics, loop.step)
        summaries.epoch_span(started_ns, epoch, loop.step, loop.last_epoch_loss, metrics)
        self.net.train()

    def _report(self, epoch: int, train_loss: float) -> None:
        if self.options.on_progress is None:
            return
        loop = self.loop
        last = loop.validation_history[-1] if loop.validation_history else None
        self.options.on_progress(
            TrialProgress(
                epoch=epoch,
                step=loop.step,
                total_steps=self.total_steps,
                train_loss=train_loss,
                checkpoint_step=self.checkpoints.saved_step,
                validation_ne=None if last is None else last["ne"],
                validation_auc=None if last is None else last["auc"],
                validation_epochs=len(loop.validation_history),
            )
        )

    def score_test(self, split: Split) -> Metrics:
        """The trained model's metrics on the test split (also logged as scalars)."""
        test = evaluate(self.net, split, step=self.loop.step)
        self.scalars.add_metrics("test", test, self.loop.step)
        return test

    def outcome(self, test: Metrics, *, duration_s: float) -> TrainOutcome:
        history = tuple(Metrics.model_validate(m) for m in self.loop.validation_history)
        return TrainOutcome(
            validation=history[-1],
            test=test,
            steps=self.loop.step,
            duration_s=duration_s,
            train_loss=self.loop.last_epoch_loss,
            validation_history=history,
            resumed_from_step=self.resumed_from,
        )


def _build(
    model: ModelSpec,
    dataset: DatasetRef,
    data: CtrDataset,
    device: torch.device,
    options: _Options,
    scalars: ScalarLog,
    base_rate_loss: float,
) -> _Run:
    """Builds the model, its optimizers and its step on ``device``; restores the checkpoint."""
    net = build_model(model, data.schema, device=device)
    train_split = data.train.to(device)
    validation_split = data.validation.to(device)
    optimizer = dense_optimizer(model, dense_parameters(net))
    generator = torch.Generator().manual_seed(model.seed)
    # A fraction of the data trains on the first batches of each epoch's shuffle.
    full_epoch = train_split.num_batches(model.batch_size)
    steps_per_epoch = max(1, math.ceil(full_epoch * options.data_fraction))
    checkpoints = _Checkpoints(options.checkpoint_dir, model, dataset, net, optimizer)
    loop = checkpoints.restore(LoopState(step=0, epoch_generator_state=generator.get_state()))
    scalars.resume_at(loop.step)
    monitor = DivergenceMonitor(
        loop,  # the monitor's reference loss and streak are checkpointed with the loop
        factor=options.divergence_factor,
        patience=options.divergence_patience,
        base_rate_loss=base_rate_loss,
    )
    return _Run(
        spec=model,
        net=net,
        train_step=TrainStep(
            model, net, optimizer, sparse_modules(net), monitor, model.epochs * steps_per_epoch
        ),
        loop=loop,
        generator=generator,
        train_split=train_split,
        validation_split=validation_split,
        steps_per_epoch=steps_per_epoch,
        checkpoints=checkpoints,
        scalars=scalars,
        options=options,
        resumed_from=loop.step,
    )


def _forward_pass(run: _Run) -> Callable[[], object]:
    """One training batch's forward pass, in eval mode and without gradients: it changes no
    weight, statistic or random state, so the thread probe may repeat it before training."""
    batch = next(run.train_split.batches(run.spec.batch_size))  # row order: no RNG

    def forward() -> object:
        run.net.eval()
        with torch.no_grad():
            return run.net(batch.dense, batch.sparse)

    return forward


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
