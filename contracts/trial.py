"""One training run: its spec, its progress and its result."""

from typing import Literal

from pydantic import Field, model_validator

from contracts.base import Record, Spec
from contracts.dataset import DatasetRef
from contracts.model import ModelSpec
from contracts.preflight import AccessScope

Phase = Literal["baseline", "validation", "combination", "exploitation", "confirmation"]
# "diverged": the loss or the predictions blew up. The run finished, so it is charged, but it
# has no metrics and is never ranked; runbooks remedy it (lower a learning rate, clip...).
# "pruned": successive halving stopped an exploitation trial after an epoch; it is charged for
# what it ran and is never ranked.
TrialState = Literal["succeeded", "failed", "cancelled", "diverged", "pruned"]


class SearchRef(Spec):
    """The Optuna trial an exploitation trial stands for: its epochs report to the study,
    whose pruner may stop it.

    Attributes:
        study_name: The study, e.g. ``f"{campaign_id}/exploitation"``.
        number: The Optuna trial number returned by ``search_ask``.
        last_prunable_epoch: The pruner is asked after this epoch and the ones before it only,
            those where a stop saves at least half the trial's cost (0: never; None: after
            every epoch but the last).
    """

    study_name: str = Field(min_length=1)
    number: int = Field(ge=0)
    last_prunable_epoch: int | None = Field(default=None, ge=0)


class TrialSpec(Spec):
    """Everything a trainer needs to run one trial, and nothing it does not.

    Attributes:
        campaign_id: The campaign (workflow id) that owns the trial.
        trial_id: Unique within the campaign; with ``campaign_id`` it keys stored results.
        phase: The executor phase that launched it.
        hypothesis_ids: The hypotheses this trial tests (empty for the baseline).
        model: The model to train.
        dataset: The data to train and evaluate on.
        metric: The metric the campaign optimises (all metrics are reported).
        estimated_device_hours: The planner's cost estimate, for the ledger.
        devices: Processes (GPUs on GPU hosts) the trial trains on; above 1 it runs through
            torchrun and TorchRec's DistributedModelParallel.
        arm: What the trial tests, e.g. ``baseline`` or ``v-wider-embeddings``; trials of one
            arm differ only in seed (and fidelity), so runs of two arms with the same seed
            are paired.
        search: The Optuna trial this run reports its epochs to (exploitation only).
        access: What the trial may read and write; None: no scope (trials of older versions).
        remedy_of: The failed trial this one remedies (its result never stands for that
            trial's hypothesis).
        data_fraction: The share of the training split each epoch trains on (a screening
            rung's fidelity); validation and test are always whole. Below 1 a trial runs on
            one device.
        max_device_hours: The most the trial may cost: past it, it stops as ``pruned`` (a
            point of a blind search can cost a thousand baseline trials; a screen must not
            wait for it). None: no cap.
        exploratory: A screen's or a search's candidate: when it fails, it is dropped, with
            no remedy and no escalation (that a point diverges is what the search learns;
            remedies are for the runs a decision rests on).
    """

    campaign_id: str = Field(min_length=1)
    trial_id: str = Field(min_length=1)
    phase: Phase
    hypothesis_ids: list[str] = Field(default_factory=list)
    model: ModelSpec
    dataset: DatasetRef
    metric: Literal["ne", "auc", "logloss"] = "ne"
    estimated_device_hours: float = Field(default=0.0, ge=0.0)
    devices: int = Field(default=1, ge=1, le=64)
    arm: str = ""
    search: SearchRef | None = None
    access: AccessScope | None = None
    remedy_of: str = ""
    data_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    max_device_hours: float | None = Field(default=None, gt=0.0)
    exploratory: bool = False

    @model_validator(mode="after")
    def _fraction_on_one_device(self) -> "TrialSpec":
        if self.data_fraction < 1.0 and self.devices > 1:
            raise ValueError("data_fraction: a fraction of the data trains on one device")
        return self


class TrialProgress(Record):
    """Heartbeat details of a running trial: what the Web UI shows and retries resume from.

    Attributes:
        checkpoint_step: The step of the newest checkpoint written (0: none yet); a retry
            resumes from it.
        validation_ne: Validation NE after the last finished epoch (None before the first).
        validation_auc: Validation AUC after the last finished epoch.
        validation_epochs: Epochs whose validation metrics are known so far.
    """

    trial_id: str = ""
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    train_loss: float = 0.0
    checkpoint_step: int = 0
    validation_ne: float | None = None
    validation_auc: float | None = None
    validation_epochs: int = 0


class Metrics(Record):
    """Ranking metrics on one split. NE and log loss: lower is better; AUC: higher."""

    ne: float
    auc: float
    logloss: float
    examples: int
    calibration: float | None = Field(
        default=None, description="Predicted CTR / actual CTR; 1.0 is calibrated."
    )


class TrialResult(Record):
    """What a finished trial reports.

    Attributes:
        validation: Metrics on the validation split (used for selection).
        test: Metrics on the test split (reported, never used for selection).
        device_hours: Wall time times devices actually used, the ledger's actual cost.
        resumed_from_step: The checkpoint step this attempt resumed from (0: from scratch).
        error: Why the trial failed (or was pruned), when it did.
        epoch_values: The campaign metric on validation after each epoch (what the search's
            pruner saw).
        log_tail: The last lines of a failed job's log, for the diagnosis and the engineer.
    """

    campaign_id: str
    trial_id: str
    state: TrialState
    validation: Metrics | None = None
    test: Metrics | None = None
    duration_s: float = 0.0
    device_hours: float = 0.0
    steps: int = 0
    resumed_from_step: int = 0
    error: str = ""
    error_type: str = ""
    epoch_values: list[float] = Field(default_factory=list)
    log_tail: str = ""

    def metric(self, name: str) -> float | None:
        """The validation value of ``name``, or None when the trial has none."""
        return None if self.validation is None else getattr(self.validation, name)
