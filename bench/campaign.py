"""openrea in the agent benchmark: the real campaign workflow, offline, through an embedded
dev server with in-process workers, as ``rea campaign start --embedded --auto-approve`` runs
it. Its compute is what its ledger spent; its choice is its launch proposal's change.
"""

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bench.records import Bench, SearchRun, TrialPoint
from bench.tasks import Task, seeded
from bench.trials import reference
from contracts import (
    ApproveInput,
    CampaignRequest,
    CampaignResult,
    CampaignStatus,
    ModelSpec,
    TrialRecord,
)
from devserver import free_port

if TYPE_CHECKING:
    from temporalio.client import Client

    from settings import Settings


class CampaignRun(NamedTuple):
    """A finished campaign: its result, and every trial it stored (the status keeps only the
    recent and undecided ones; the store keeps all)."""

    result: CampaignResult
    stored: list[TrialRecord]


class Refused(Exception):
    """The campaign's preflight refused its plan (a budget below the smallest plan's cost,
    say): an engineer would have to revise or approve more before anything runs. The
    message is the preflight's summary, its fixes included."""

    def __init__(self, summary: str, planned_device_hours: float | None) -> None:
        super().__init__(summary)
        self.planned_device_hours = planned_device_hours


# Starts of a campaign's dev server before its error ends the benchmark: one exited while
# starting, 15 campaigns into a 54-campaign run (why is unknown: its log went with its data
# dir; the error now quotes the log's last line). A port another process takes between
# ``free_port`` and the server's bind would do it.
SERVER_STARTS = 3


async def run_campaign(
    request: CampaignRequest,
    campaign_id: str,
    on_status: Callable[[CampaignStatus], None],
    database_url: str = "",
) -> CampaignRun:
    """The campaign as ``rea campaign start --embedded --auto-approve`` runs it.

    A fresh dev server on free ports, in-process workers and a fresh data dir per campaign,
    so that no study, result or history leaks from one run into the next, unless
    ``database_url`` names an insights database to share (what a warm start reads). A
    server that exits while starting is started again on fresh ports (``SERVER_STARTS``).
    """
    # Imported here: the CLI package pulls in the whole client side, which the searchers and
    # the smoke test's other paths do not need.
    import typer

    from cli import embedded
    from settings import Settings

    for start in range(1, SERVER_STARTS + 1):
        with tempfile.TemporaryDirectory(prefix="rea-bench-") as data_dir:
            settings = Settings(
                data_dir=Path(data_dir),
                temporal_address=f"127.0.0.1:{free_port()}",
                ui_port=free_port(),
                database_url=database_url,
            )
            started = False
            try:
                async with embedded(settings) as client:
                    started = True
                    return await _campaign(client, request, campaign_id, on_status, settings)
            except typer.Exit:
                if started or start == SERVER_STARTS:
                    raise
    raise AssertionError("unreachable: the last start returns or raises")


async def _campaign(
    client: "Client",
    request: CampaignRequest,
    campaign_id: str,
    on_status: Callable[[CampaignStatus], None],
    settings: "Settings",
) -> CampaignRun:
    """Start, approve and follow one campaign to its result."""
    from store import InsightsStore
    from workflows.campaign import CampaignWorkflow
    from workflows.options import ORCHESTRATION_QUEUE

    handle = await client.start_workflow(
        CampaignWorkflow.run,  # type: ignore[arg-type]
        request,
        id=campaign_id,
        task_queue=ORCHESTRATION_QUEUE,
    )
    status = await handle.query(CampaignWorkflow.status)
    while status.phase == "planning":
        await asyncio.sleep(0.2)
        status = await handle.query(CampaignWorkflow.status)
    if status.phase == "awaiting_approval" and not status.preflight_passed:
        # Approving would be refused the same way; nothing ran, nothing was spent.
        await handle.terminate("bench.agent_vs_baselines: refused at preflight")
        assert status.preflight is not None
        plan = status.plan
        raise Refused(status.preflight.summary(), plan.estimated_device_hours if plan else None)
    if status.phase == "awaiting_approval":
        await handle.execute_update(
            CampaignWorkflow.approve,
            ApproveInput(approver=request.approvers[0], comment="bench.agent_vs_baselines"),
        )
    result = asyncio.ensure_future(handle.result())
    while not result.done():
        on_status(await handle.query(CampaignWorkflow.status))
        await asyncio.wait({result}, timeout=1.0)
    stored = InsightsStore(settings.database).trials(campaign_id)
    return CampaignRun(result.result(), stored)


def openrea_choice(request: CampaignRequest, result: CampaignResult) -> tuple[ModelSpec, str]:
    """openrea's final choice and why: its proposal's change when the verdict is ``launch``,
    else the baseline (an honest "don't launch").

    Campaigns of the single-seed protocol have no proposal; their best model stands in.
    """
    status = result.status
    proposal = getattr(status, "proposal", None)
    if proposal is not None:
        if proposal.verdict == "launch":
            return request.baseline.with_changes(proposal.changes), f"launch {proposal.candidate}"
        return request.baseline, proposal.verdict
    if getattr(status, "protocol", "single-seed") != "single-seed":
        return request.baseline, f"no proposal (phase {status.phase})"
    if result.best_model is None:
        return request.baseline, "no best model"
    return result.best_model, f"best model ({status.best_trial_id})"


def campaign_trials(stored: list[TrialRecord], metric: str) -> list[TrialPoint]:
    """The campaign's trials in the order recorded (one training slot: finishing order).

    A campaign's trial is a named arm, not a move of a search, so ``changes`` holds its id,
    phase and hypotheses.
    """
    return [
        TrialPoint(
            changes={
                "trial_id": r.spec.trial_id,
                "phase": r.spec.phase,
                "hypotheses": r.spec.hypothesis_ids,
            },
            state=str(r.result.state) if r.result else "unknown",
            device_hours=r.result.device_hours if r.result else 0.0,
            validation=getattr(r.result.validation, metric)
            if r.result and r.result.validation
            else None,
            error=r.result.error[:300] if r.result else "",
        )
        for r in stored
    ]


# The benchmark's names of openrea's protocols: the default, and the fixed-size one before it.
PROTOCOLS = {"openrea": "multi-fidelity", "openrea-evidence": "evidence"}


def openrea_search(
    bench: Bench,
    task: Task,
    seed: int,
    on_status: Callable[[CampaignStatus], None],
    method: str = "openrea",
) -> SearchRun:
    """The campaign on search seed ``seed``: its ledger's spend and its choice; a campaign its
    preflight refused spent nothing and keeps the baseline (``refused``)."""
    started = time.perf_counter()
    request = seeded(task.request, seed).model_copy(update={"protocol": PROTOCOLS[method]})
    campaign_id = f"bench-{task.name}-s{seed}-{method}-{int(time.time())}"
    try:
        result, stored = asyncio.run(run_campaign(request, campaign_id, on_status))
    except Refused as refusal:
        return SearchRun(
            task=task.name,
            method=method,
            seed=seed,
            budget_device_hours=request.budget.device_hours,
            spent_device_hours=0.0,
            reference_validation=reference(bench, task, seed).validation,
            trials=[],
            choice={},
            note=f"refused: {refusal}",
            wall_s=time.perf_counter() - started,
            planned_device_hours=refusal.planned_device_hours,
            refused=True,
        )
    spec, note = openrea_choice(request, result)
    spent = result.status.ledger.spent
    plan, proposal = result.status.plan, result.status.proposal
    return SearchRun(
        task=task.name,
        method=method,
        seed=seed,
        budget_device_hours=spent,
        spent_device_hours=spent,
        reference_validation=reference(bench, task, seed).validation,
        trials=campaign_trials(stored, request.metric),
        choice=spec.changes_from(request.baseline),
        note=f"{note}; {len(result.status.trials) + result.status.trials_archived} trials, "
        f"phase {result.status.phase}" + (f"; {proposal.ended_by}" if proposal else ""),
        wall_s=time.perf_counter() - started,
        planned_device_hours=plan.estimated_device_hours if plan else None,
        launched=note.startswith("launch"),
        story=[*(proposal.explored if proposal else [])]
        + [f"{phase}: {why}" for phase, why in result.status.phase_notes.items() if why],
    )
