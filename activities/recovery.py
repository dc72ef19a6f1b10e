"""Recovery's side effects: diagnose a failed trial against the runbooks (with the insights
database's record of which remedies worked), ask the research agent about failures no entry
matches, and record each remedy and its outcome."""

import asyncio
from typing import Protocol

from temporalio import activity

from contracts import Diagnosis, FailureReport, RemedyRecord
from runbooks import NotApplicable, Runbook, apply_remedy, choose
from store import InsightsStore

# Pattern id of remedies the research agent proposed (for failures no entry matches).
AGENT_PATTERN = "agent"
# First-principles remedies tried per trial before it escalates.
AGENT_ATTEMPTS = 1


class Diagnoser(Protocol):
    """A research agent that reads an unmatched failure and proposes one typed remedy."""

    async def diagnose(self, report: FailureReport) -> Diagnosis: ...


class RecoveryActivities:
    """Diagnosis and bookkeeping of remedies.

    Args:
        runbook: The validated runbook entries (loaded at worker start).
        store: The insights database: remedy outcomes are recorded there and demote a
            remedy that keeps failing; None keeps no record.
        agent: Proposes a remedy for failures no entry matches; None: those escalate.
    """

    def __init__(
        self, runbook: Runbook, store: InsightsStore | None, agent: Diagnoser | None = None
    ) -> None:
        self._runbook = runbook
        self._store = store
        self._agent = agent

    @activity.defn(name="diagnose_failure")
    async def diagnose_failure(self, report: FailureReport) -> Diagnosis:
        """The matching runbook entry and its next remedy (with the model and data it runs),
        the agent's remedy when nothing matches, or why the trial must escalate."""
        stats = await asyncio.to_thread(self._store.remedy_stats) if self._store else {}
        diagnosis = choose(self._runbook, report, stats)
        if diagnosis.source != "none":
            return diagnosis
        if self._agent is None:
            return diagnosis.model_copy(
                update={
                    "why_escalate": diagnosis.why_escalate
                    + "; no research agent is configured (REA_LLM_BASE_URL) to propose one"
                }
            )
        if sum(a.pattern_id == AGENT_PATTERN for a in report.tried) >= AGENT_ATTEMPTS:
            return diagnosis.model_copy(
                update={"why_escalate": diagnosis.why_escalate + "; the agent's remedy failed too"}
            )
        proposed = await self._agent.diagnose(report)
        if proposed.remedy is None:
            return diagnosis.model_copy(
                update={
                    "diagnosis": proposed.diagnosis,
                    "why_escalate": diagnosis.why_escalate + "; the agent proposed no remedy",
                }
            )
        try:
            model, dataset = apply_remedy(proposed.remedy, report.spec, report.result)
        except NotApplicable as why:
            return diagnosis.model_copy(
                update={
                    "diagnosis": proposed.diagnosis,
                    "why_escalate": f"{diagnosis.why_escalate}; the agent's remedy {why}",
                }
            )
        return proposed.model_copy(
            update={
                "pattern_id": AGENT_PATTERN,
                "source": "agent",
                "model": model,
                "dataset": dataset,
                "signature": diagnosis.signature,
                "log_tail": report.log_tail,
            }
        )

    @activity.defn(name="record_remedy")
    def record_remedy(self, record: RemedyRecord) -> None:
        """Keep a remedy and its outcome (idempotent: keyed by campaign, trial, attempt)."""
        if self._store is not None:
            self._store.record_remedy(record.campaign_id, record.attempt)
