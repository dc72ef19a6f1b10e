"""Runbooks: failure patterns with typed remedies, diagnoses, and escalations to an engineer.

A remedy is a typed change of a failed trial's spec or of its placement. One that changes the
model or its data runs as a new trial linked to the failed one (its result never stands for
the original hypothesis); one that changes only the placement (resume from the checkpoint,
retry on another worker) runs the same trial again.
"""

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from contracts.base import Record, Spec
from contracts.dataset import DatasetRef
from contracts.model import DenseOptimizer, ModelSpec, SparseOptimizer
from contracts.trial import TrialResult, TrialSpec, TrialState


class HalveBatchSize(Spec):
    kind: Literal["halve_batch_size"] = "halve_batch_size"


class ShrinkEmbeddings(Spec):
    """Multiply ``embedding_dim`` by ``factor`` (rounded down to a multiple of 4)."""

    kind: Literal["shrink_embeddings"] = "shrink_embeddings"
    factor: float = Field(default=0.5, gt=0.0, lt=1.0)


class Fp16Embeddings(Spec):
    """Store embedding rows in fp16: half the table memory."""

    kind: Literal["fp16_embeddings"] = "fp16_embeddings"


class LowerLearningRate(Spec):
    """Multiply the learning rate(s) of ``which`` by ``factor``."""

    kind: Literal["lower_lr"] = "lower_lr"
    factor: float = Field(default=0.3, gt=0.0, lt=1.0)
    which: Literal["dense", "sparse", "both"] = "both"


class AddWarmup(Spec):
    kind: Literal["add_warmup"] = "add_warmup"
    steps: int = Field(default=100, ge=1)


class AddGradClip(Spec):
    kind: Literal["add_grad_clip"] = "add_grad_clip"
    max_norm: float = Field(default=1.0, gt=0.0)


class SwitchOptimizer(Spec):
    kind: Literal["switch_optimizer"] = "switch_optimizer"
    dense: DenseOptimizer | None = None
    sparse: SparseOptimizer | None = None


class SetFields(Spec):
    """Set ``ModelSpec`` fields, e.g. an engineer's fix saved from an escalation."""

    kind: Literal["set_fields"] = "set_fields"
    changes: dict[str, Any] = Field(min_length=1)


class SkipCorruptShard(Spec):
    """Train without the data file the error names (Criteo ``day_N`` folders)."""

    kind: Literal["skip_corrupt_shard"] = "skip_corrupt_shard"


class ResumeFromCheckpoint(Spec):
    """Run the same trial again; it resumes from its last checkpoint."""

    kind: Literal["resume_from_checkpoint"] = "resume_from_checkpoint"


class RetryElsewhere(Spec):
    """Run the same trial again on another worker or host (from its last checkpoint)."""

    kind: Literal["retry_elsewhere"] = "retry_elsewhere"


Remedy = Annotated[
    HalveBatchSize
    | ShrinkEmbeddings
    | Fp16Embeddings
    | LowerLearningRate
    | AddWarmup
    | AddGradClip
    | SwitchOptimizer
    | SetFields
    | SkipCorruptShard
    | ResumeFromCheckpoint
    | RetryElsewhere,
    Field(discriminator="kind"),
]
RemedyKind = Literal[
    "halve_batch_size",
    "shrink_embeddings",
    "fp16_embeddings",
    "lower_lr",
    "add_warmup",
    "add_grad_clip",
    "switch_optimizer",
    "set_fields",
    "skip_corrupt_shard",
    "resume_from_checkpoint",
    "retry_elsewhere",
]
# Remedies that run the same trial again; every other kind makes a new, linked trial.
PLACEMENT_REMEDIES: frozenset[str] = frozenset({"resume_from_checkpoint", "retry_elsewhere"})

# Metric signatures a matcher can ask for, read from the failed trial's result.
Signature = Literal["nan_loss", "loss_spike", "divergence", "stalled_validation"]


class Matcher(Spec):
    """Which failures a pattern covers; every given condition must hold.

    Attributes:
        error_types: The failure's error type is one of these (e.g. ``OutOfMemoryError``).
        states: The trial's state is one of these (e.g. ``diverged``).
        message: A regular expression searched (case-insensitively) in the error message.
        signature: A metric signature of the run (``nan_loss``, ``loss_spike``...).
    """

    error_types: list[str] = Field(default_factory=list)
    states: list[TrialState] = Field(default_factory=list)
    message: str = ""
    signature: Signature | None = None


class RunbookEntry(Spec):
    """One failure pattern: how to recognise it, what it means, what to try, how often.

    Attributes:
        id: Unique across the runbooks, e.g. ``host-oom``.
        version: Raised when the entry changes; recorded with every remedy it applies.
        title: One line for people.
        diagnosis: What the failure means and why the remedies may help.
        match: Which failures it covers.
        remedies: Tried in order (demoted ones last), one per attempt.
        max_attempts: Remedies tried for one trial before it escalates.
        resolved_from: The escalation this entry was saved from (campaign/trial), if any.
    """

    id: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: int = Field(default=1, ge=1)
    title: str = Field(min_length=1)
    diagnosis: str = ""
    match: Matcher
    remedies: list[Remedy] = Field(default_factory=list)
    max_attempts: int = Field(default=3, ge=0, le=20)
    resolved_from: str = ""

    @field_validator("match")
    @classmethod
    def _not_everything(cls, match: Matcher) -> Matcher:
        if not (match.error_types or match.states or match.message or match.signature):
            raise ValueError("match: give at least one of error_types, states, message, signature")
        return match


class RemedyAttempt(Record):
    """One remedy applied to a failed trial, and how it went.

    Attributes:
        trial_id: The trial that failed (the original).
        attempt: 1 for the first remedy of this trial, 2 for the next...
        pattern_id: The runbook entry (or ``agent``/``engineer``) that chose it.
        remedy: What was done.
        run_trial_id: The trial that ran the remedy: the same id for placement remedies, a
            linked new trial (``<trial>~r<attempt>``) otherwise.
        state: How that run ended; ``running`` until it does.
        error_type: Its error type, if it failed again.
    """

    trial_id: str
    attempt: int
    pattern_id: str
    pattern_version: int = 1
    remedy: Remedy
    run_trial_id: str
    state: TrialState | Literal["running"] = "running"
    error_type: str = ""


class FailureReport(Spec):
    """A failed trial handed to the diagnosis.

    Attributes:
        spec: The spec that failed (a linked remedy trial's own spec when a remedy failed).
        result: Its result: state, error type and message, epoch values.
        tried: Remedies already applied to this trial, in order.
        log_tail: The last lines of the job's log, when it ran as a job.
    """

    spec: TrialSpec
    result: TrialResult
    tried: list[RemedyAttempt] = Field(default_factory=list)
    log_tail: str = ""


class Diagnosis(Record):
    """What the runbooks (or the research agent) made of a failure.

    Attributes:
        pattern_id: The matching entry; empty when nothing matched.
        source: ``runbook``, ``agent`` (first principles, when nothing matched) or ``none``.
        diagnosis: What it means.
        remedy: The next remedy to try; None: escalate.
        why_escalate: Why it escalates (nothing matched, remedies exhausted...).
        signature: The metric signature read from the run, if any.
        log_tail: The job's log tail, for the engineer.
        model: The model the remedy runs (a linked trial); None for placement remedies.
        dataset: The data the remedy runs on, likewise.
    """

    pattern_id: str = ""
    pattern_version: int = 1
    source: Literal["runbook", "agent", "none"] = "none"
    diagnosis: str = ""
    remedy: Remedy | None = None
    why_escalate: str = ""
    signature: Signature | None = None
    log_tail: str = ""
    model: ModelSpec | None = None
    dataset: DatasetRef | None = None


class Escalation(Record):
    """A trial that needs an engineer: what failed, what was tried, and the answer.

    Attributes:
        trial_id: The trial (the original one, whose hypothesis is at stake).
        error_type, error: The last failure.
        diagnosis: The last diagnosis (its ``why_escalate`` says why it escalated).
        tried: Remedies applied before escalating.
        model: The model of the run that failed last (what a retry with changes changes).
        resolution: The engineer's answer, once given.
    """

    trial_id: str
    error_type: str = ""
    error: str = ""
    model: ModelSpec | None = None
    diagnosis: Diagnosis = Field(default_factory=Diagnosis)
    tried: list[RemedyAttempt] = Field(default_factory=list)
    resolution: "ResolveTrialInput | None" = None


class ResolveTrialInput(Spec):
    """An engineer's answer to an escalated trial (the ``resolve_trial`` update).

    Attributes:
        approver: Who answers; must be one of the campaign's approvers.
        trial_id: The escalated trial.
        action: ``retry`` (as it is, or with ``changes``), ``skip`` (leave it failed; the
            campaign goes on) or ``stop`` (stop the campaign).
        changes: ``ModelSpec`` fields to change when retrying, e.g. ``{"batch_size": 256}``;
            the retry is then a new trial linked to the failed one.
        comment: Why; kept in the history and saved with a runbook entry made from it.
    """

    approver: str = Field(min_length=1)
    trial_id: str = Field(min_length=1)
    action: Literal["retry", "skip", "stop"]
    changes: dict[str, Any] = Field(default_factory=dict)
    comment: str = ""


Escalation.model_rebuild()


class RemedyRecord(Spec):
    """Input of ``record_remedy``: one remedy of a campaign's trial, for the insights
    database."""

    campaign_id: str
    attempt: RemedyAttempt
