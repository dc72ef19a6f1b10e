"""The training activity: run one trial in this worker, heartbeating progress."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from activities import access, telemetry
from activities.backends.folder import checkpoint_dir
from contracts import (
    DatasetRef,
    Metrics,
    ModelSpec,
    PruneDecision,
    PruneInput,
    TrialProgress,
    TrialResult,
    TrialSpec,
)
from ranking_models.errors import DivergenceError, TrainingCancelled, TrainingError


class Outcome(Protocol):
    validation: Metrics
    test: Metrics
    steps: int
    resumed_from_step: int
    validation_history: tuple[Metrics, ...]


class Trainer(Protocol):
    def __call__(
        self,
        model: ModelSpec,
        dataset: DatasetRef,
        *,
        on_progress: Callable[[TrialProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint_dir: Path | None = None,
        tensorboard_dir: Path | None = None,
        data_fraction: float = 1.0,
    ) -> Outcome: ...


class _Progress:
    """A trial's progress reports: each a heartbeat, and each new epoch's validation metric
    to the pruner of an exploitation trial.

    Args:
        spec: The trial.
        prune: See ``TrainingActivities``; None: never prune.
    """

    def __init__(
        self, spec: TrialSpec, prune: Callable[[PruneInput], PruneDecision] | None
    ) -> None:
        self._spec = spec
        self._prune = prune
        self._asked_after = 0  # the last epoch whose value went to the pruner in this attempt
        self.pruned: PruneDecision | None = None  # the pruner's first "stop", if any
        self._started = time.monotonic()
        cap = spec.max_device_hours
        self._cap_s = None if cap is None else cap * 3600.0 / spec.devices

    def over_cap(self) -> bool:
        """True once the trial has cost its ``max_device_hours`` (then it counts as pruned)."""
        if self._cap_s is None or time.monotonic() - self._started < self._cap_s:
            return False
        if self.pruned is None:
            assert self._spec.max_device_hours is not None
            self.pruned = PruneDecision(
                prune=True,
                reason=f"stopped at its cost cap of {self._spec.max_device_hours:.3g} device-hours",
            )
        return True

    def __call__(self, progress: TrialProgress) -> None:
        spec = self._spec
        activity.heartbeat(progress.model_copy(update={"trial_id": spec.trial_id}))
        value = {"ne": progress.validation_ne, "auc": progress.validation_auc}.get(spec.metric)
        epoch = progress.validation_epochs
        # Once per new epoch, at that epoch's number: a retry that resumed with epochs
        # already done asks about its restored last epoch once (the study answers from
        # its record), never under another step.
        if value is None or epoch <= self._asked_after:
            return
        self._asked_after = epoch
        search = spec.search
        if search is None or self._prune is None:
            return
        last = spec.model.epochs - 1  # after the last epoch there is nothing left to save
        if search.last_prunable_epoch is not None:  # after a late one, too little
            last = min(last, search.last_prunable_epoch)
        if epoch <= last:
            decision = self._prune(
                PruneInput(
                    study_name=search.study_name,
                    number=search.number,
                    step=epoch,
                    value=value,
                )
            )
            if decision.prune and self.pruned is None:
                self.pruned = decision


class TrainingActivities:
    """Training on this host with an injected trainer.

    Args:
        train: Trains one spec; ``ranking_models.trainer.train`` in production.
        data_dir: Checkpoints go under it, one folder per (campaign, trial), so a retried
            attempt resumes where the last one stopped.
        devices: Devices one trial occupies; device-hours = wall hours x devices.
        prune: Reports an exploitation trial's epoch to its Optuna study and says whether to
            stop it (``SearchActivities.should_prune`` in production); None: never prune.
    """

    def __init__(
        self,
        train: Trainer,
        data_dir: Path,
        devices: int = 1,
        prune: Callable[[PruneInput], PruneDecision] | None = None,
    ) -> None:
        self._train = train
        self._data_dir = data_dir
        self._devices = devices
        self._prune = prune

    @activity.defn(name="train_trial")
    def train_trial(self, spec: TrialSpec) -> TrialResult:
        """Train ``spec`` and report its metrics.

        Progress goes out as heartbeat details (visible in the Web UI). Checkpoints go under
        the data dir, so a retry after a worker died resumes from the last one; cancellation
        is noticed before the next step, after a checkpoint. TensorBoard scalars go under
        ``<data_dir>/tensorboard/<campaign>/<trial>``; the activity's span carries the trial
        and its outcome (``activities.telemetry``).

        A diverged run returns state ``diverged``, with the error and no metrics. An
        exploitation trial (``spec.search``) reports each epoch's validation metric to its
        study; when the pruner says stop, it returns state ``pruned`` after checkpointing,
        charged for what it ran.

        Raises:
            ApplicationError: typed by the trainer's error class (``BadSpecError``,
                ``OutOfMemoryError``...), so retry policies and runbooks can match on it;
                ``AccessDenied`` for data or checkpoints outside the trial's access scope.
        """
        telemetry.record_queue_latency()
        telemetry.start_trial(spec)
        access.check_read(spec.access, spec.dataset)
        access.check_write(spec.access, checkpoint_dir(self._data_dir, spec), self._data_dir)
        started = time.monotonic()
        progress = _Progress(spec, self._prune)
        try:
            outcome = self._run_trainer(spec, progress)
        except TrainingCancelled as err:
            return self._stopped(spec, started, err, progress.pruned)
        except DivergenceError as err:
            # An outcome, not an error: the run finished (and is charged) without a model.
            return self._result(spec, started, state="diverged", error=str(err), steps=err.step)
        except TrainingError as err:
            # Counted per attempt: Temporal may retry it (no result, so no cost, is recorded).
            telemetry.TRIALS.add(1, {"state": "failed", "phase": spec.phase})
            raise ApplicationError(str(err), type=type(err).__name__) from err
        return self._result(
            spec,
            started,
            state="succeeded",
            validation=outcome.validation,
            test=outcome.test,
            steps=outcome.steps,
            resumed_from_step=outcome.resumed_from_step,
            # From the trainer's history, restored epochs included (not from this attempt's
            # progress reports, which a resumed run only partly saw).
            epoch_values=[getattr(m, spec.metric) for m in outcome.validation_history],
        )

    def _run_trainer(self, spec: TrialSpec, progress: _Progress) -> Outcome:
        """The injected trainer on ``spec``, stopping when pruned, cancelled or shut down."""
        # Cancellation must arrive through should_stop, where the trainer checkpoints, not
        # as an exception thrown into this thread at an arbitrary line.
        with activity.shield_thread_cancel_exception():
            return self._train(
                spec.model,
                spec.dataset,
                on_progress=progress,
                # A worker shutting down (Ctrl-C, a deploy) stops its trials too:
                # they checkpoint, and the retry resumes them on the next worker.
                should_stop=lambda: (
                    progress.pruned is not None
                    or progress.over_cap()
                    or activity.is_cancelled()
                    or activity.is_worker_shutdown()
                ),
                checkpoint_dir=checkpoint_dir(self._data_dir, spec),
                tensorboard_dir=telemetry.tensorboard_dir(self._data_dir, spec),
                data_fraction=spec.data_fraction,
            )

    def _stopped(
        self,
        spec: TrialSpec,
        started: float,
        err: TrainingCancelled,
        pruned: PruneDecision | None,
    ) -> TrialResult:
        """A run that ``should_stop`` stopped: pruned is a result; cancelled or shut down
        is an error (raised)."""
        if pruned is not None:
            return self._result(
                spec,
                started,
                state="pruned",
                error=pruned.reason,
                steps=err.step,
                epoch_values=[m[spec.metric] for m in err.validation_history],
            )
        if not activity.is_cancelled():  # the worker is shutting down: retry elsewhere
            raise ApplicationError(
                f"trial {spec.trial_id} stopped at step {err.step}: the worker shut down; "
                "the retry resumes from its checkpoint",
                type="WorkerShutdown",
            ) from err
        # Reported as cancelled (not failed) only when raised as Temporal's CancelledError.
        raise CancelledError(f"trial {spec.trial_id} cancelled") from err

    def _result(self, spec: TrialSpec, started: float, **fields: Any) -> TrialResult:
        duration = time.monotonic() - started
        result = TrialResult(
            campaign_id=spec.campaign_id,
            trial_id=spec.trial_id,
            duration_s=duration,
            device_hours=duration * self._devices / 3600.0,
            **fields,
        )
        return telemetry.end_trial(spec, result)
