"""Pure decisions of recovery: which failures to diagnose, the spec a remedy runs, and how an
escalation reads. No temporalio import, so they are unit-tested directly."""

from collections.abc import Sequence

from contracts import (
    PLACEMENT_REMEDIES,
    DatasetRef,
    Escalation,
    ModelSpec,
    Remedy,
    RemedyAttempt,
    TrialResult,
    TrialSpec,
)

# Failures worth a diagnosis; "cancelled" (stopped) and "pruned" (the search's call) are not.
RECOVERABLE: frozenset[str] = frozenset({"failed", "diverged"})
# Failures no diagnosis is asked about: the campaign's own halt.
NOT_DIAGNOSED_ERRORS: frozenset[str] = frozenset({"CancelledError"})
ENGINEER = "engineer"


def needs_recovery(spec: TrialSpec, result: TrialResult) -> bool:
    """Whether a finished run goes to the runbooks. A tuned trial that diverged does not: the
    search asked for extreme values on purpose, and the study learns from the failure."""
    if spec.search is not None and result.state == "diverged":
        return False
    return result.state in RECOVERABLE and result.error_type not in NOT_DIAGNOSED_ERRORS


def remedy_spec(
    original: TrialSpec,
    failed: TrialSpec,
    remedy: Remedy,
    attempt: int,
    model: ModelSpec | None,
    dataset: DatasetRef | None,
) -> TrialSpec:
    """The spec a remedy runs.

    A placement remedy runs ``failed`` again under its own id. Any other remedy makes a new
    trial linked to ``original``: its own id and arm (``<id>~r<attempt>``), so that no gate
    ever pairs its result with the original hypothesis's arm.
    """
    if remedy.kind in PLACEMENT_REMEDIES:
        return failed
    return failed.model_copy(
        update={
            "trial_id": f"{original.trial_id}~r{attempt}",
            "arm": f"{original.arm}~r{attempt}",
            "model": model or failed.model,
            "dataset": dataset or failed.dataset,
            "remedy_of": original.trial_id,
            "search": None,
        }
    )


def job_attempt(remedies: Sequence[RemedyAttempt], trial_id: str) -> int:
    """The job attempt of ``trial_id``'s next run: 1, plus one per placement remedy of it
    (each relaunch gets a job folder of its own; the checkpoints are shared)."""
    return 1 + sum(
        1 for a in remedies if a.run_trial_id == trial_id and a.remedy.kind in PLACEMENT_REMEDIES
    )


def describe(attempt: RemedyAttempt) -> str:
    """``host-oom: fp16_embeddings`` (what the trial record and the status show)."""
    return f"{attempt.pattern_id}: {attempt.remedy.kind}"


def escalation_line(escalation: Escalation) -> str:
    """One line for the Web UI: the trial, its error and why no remedy is left."""
    why = escalation.diagnosis.why_escalate or "no remedy left"
    return f"{escalation.trial_id} ({escalation.error_type or 'failed'}): {why}"
