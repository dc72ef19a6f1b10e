"""A trial as the campaign's state remembers it (the full record is in the insights store)."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from contracts.base import Record
from contracts.job import JobHandle
from contracts.trial import Metrics, Phase, TrialResult, TrialState


class TrialSummary(Record):
    """A trial as the campaign's state remembers it: small, so that a campaign of thousands of
    trials fits in one payload (specs follow from the plan; full records are in the store).

    ``launched_at`` and ``ended_at`` are the campaign's clock (workflow time) when the trial
    was launched and when its result was kept: the report's timeline. Campaigns started
    before they existed leave them empty. ``log_tail`` is a failed trial's last log lines
    (its job's stdout and stderr).
    """

    trial_id: str
    phase: Phase
    hypothesis_ids: list[str] = Field(default_factory=list)
    arm: str = ""
    seed: int = 0
    state: TrialState | Literal["running"] = "running"
    validation: Metrics | None = None
    test: Metrics | None = None
    estimated_device_hours: float = 0.0
    device_hours: float = 0.0
    duration_s: float = 0.0
    error: str = ""
    error_type: str = ""
    job: JobHandle | None = None
    remedy_of: str = ""
    launched_at: datetime | None = None
    ended_at: datetime | None = None
    log_tail: str = ""

    def metric(self, name: str) -> float | None:
        """The validation value of ``name``, or None when the trial has none."""
        return None if self.validation is None else getattr(self.validation, name)

    def test_metric(self, name: str) -> float | None:
        """The test value of ``name``, or None when the trial has none."""
        return None if self.test is None else getattr(self.test, name)

    def finished(self, result: TrialResult, ended_at: datetime | None = None) -> "TrialSummary":
        """This summary updated with a finished trial's result (kept at ``ended_at``)."""
        return self.model_copy(
            update={
                "ended_at": ended_at,
                "state": result.state,
                "validation": result.validation,
                "test": result.test,
                "device_hours": result.device_hours,
                "duration_s": result.duration_s,
                "error": result.error,
                "error_type": result.error_type,
                # Only a failure's: what an engineer reads first, kept small.
                "log_tail": result.log_tail if result.state == "failed" else "",
                "job": None,
            }
        )
