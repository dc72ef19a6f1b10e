"""Recovery's side effects: diagnose a failed trial against the runbooks (with the insights
database's record of which remedies worked), ask the research agent about failures no entry
matches, and record each remedy and its outcome."""

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from temporalio import activity

from contracts import Diagnosis, FailureReport, RemedyRecord
from runbooks import NotApplicable, Runbook, RunbookError, apply_remedy, choose, load_runbook
from store import InsightsStore

# Pattern id of remedies the research agent proposed (for failures no entry matches).
AGENT_PATTERN = "agent"
# First-principles remedies tried per trial before it escalates.
AGENT_ATTEMPTS = 1

log = logging.getLogger("openrea.recovery")


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
        user_dir: The engineers' entries (already in ``runbook``): when its files change
            (``rea runbook add-from-escalation``), the runbook is loaded again, so a saved
            resolution applies from the next failure on, without a restart. A change that
            does not validate is logged and the last good runbook kept.
    """

    def __init__(
        self,
        runbook: Runbook,
        store: InsightsStore | None,
        agent: Diagnoser | None = None,
        user_dir: Path | None = None,
    ) -> None:
        self._runbook = runbook
        self._store = store
        self._agent = agent
        self._user_dir = user_dir
        self._seen = _files_of(user_dir)

    def _current_runbook(self) -> Runbook:
        if self._user_dir is None or (files := _files_of(self._user_dir)) == self._seen:
            return self._runbook
        self._seen = files
        try:
            self._runbook = load_runbook(self._user_dir)
        except RunbookError as err:
            log.error("runbook change ignored, the last good runbook stays: %s", err)
        return self._runbook

    @activity.defn(name="diagnose_failure")
    async def diagnose_failure(self, report: FailureReport) -> Diagnosis:
        """The matching runbook entry and its next remedy (with the model and data it runs),
        the agent's remedy when nothing matches, or why the trial must escalate."""
        stats = await asyncio.to_thread(self._store.remedy_stats) if self._store else {}
        diagnosis = choose(self._current_runbook(), report, stats)
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


def _files_of(folder: Path | None) -> tuple[tuple[str, int], ...]:
    """The folder's entries and their modification times: what a reload looks for."""
    if folder is None or not folder.is_dir():
        return ()
    return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.glob("*.yaml")))
