"""Following a campaign from the terminal: its plan and the approve command, approval on
the engineer's behalf (--auto-approve), progress bars until it ends, then its result."""

import asyncio
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError

from cli.apps import REFUSED, console, fail, rea_command
from cli.handle import (
    CampaignHandle,
    poll_status,
    query_status,
    refusal,
    running_progress,
    why_closed,
)
from cli.render import progress_display
from cli.render_campaign import render_escalation, render_plan, render_preflight, render_result
from contracts import ApproveInput, CampaignStatus
from settings import Settings
from workflows import policy
from workflows.campaign import CampaignWorkflow


def approve_command(campaign_id: str, approver: str) -> str:
    """The command line that approves the campaign's pending plan as ``approver``."""
    return f"{rea_command()} campaign approve {campaign_id} --as {approver}"


async def wait_for_plan(handle: CampaignHandle) -> CampaignStatus:
    """The status once planning has ended; a failed planning is a one-line error."""
    status = await poll_status(handle, lambda s: s.phase != "planning")
    if status.phase == "failed":
        raise fail(f"campaign {handle.id} failed: {status.error}")
    return status


async def show_pending_plan(handle: CampaignHandle) -> bool:
    """Wait for the plan and show it; False when nothing awaits approval (stopped meanwhile)."""
    status = await wait_for_plan(handle)
    if status.phase != "awaiting_approval":
        return False
    console.print(render_plan(status))
    if status.preflight:
        console.print(render_preflight(status.preflight))
    return True


async def show_plan_and_next_step(handle: CampaignHandle, approver: str) -> bool:
    """Show the pending plan and the command that approves it (after a preflight recheck
    when the checklist failed); False when the preflight checklist failed."""
    if not await show_pending_plan(handle):
        return True
    passed = (await query_status(handle)).preflight_passed
    console.print(
        "Next: "
        if passed
        else "Next: check again once fixed with\n"
        f"  {rea_command()} campaign preflight {handle.id}\nthen ",
        end="",
    )
    console.print(f"approve the plan with\n  {approve_command(handle.id, approver)}")
    return passed


async def approve_when_planned(handle: CampaignHandle, approver: str) -> None:
    """Show the pending plan and approve it as ``approver``; a refusal is a one-line error."""
    if not await show_pending_plan(handle):
        return
    try:
        approval = await handle.execute_update(
            CampaignWorkflow.approve,
            ApproveInput(
                approver=approver, comment="auto-approved by `rea campaign start --auto-approve`"
            ),
        )
    except WorkflowUpdateFailedError as err:
        # --auto-approve never overrides a failing checklist: that takes a person's reason.
        raise fail(f"not approved: {refusal(err)}", REFUSED) from None
    console.print(f"Approved as {approval.approver} ({approval.device_hours:g} device-hours).")


async def follow(
    client: Client, handle: CampaignHandle, settings: Settings, approver: str = ""
) -> None:
    """Show progress until the campaign ends, then print its result.

    Args:
        client: The client the handle belongs to (it decodes heartbeat details).
        handle: The campaign.
        settings: Where the report goes and the Web UI is.
        approver: When set, print the approve command once the plan waits for approval.
    """
    hinted = False
    notified: set[tuple[str, int]] = set()  # escalations already shown: (trial, how many)
    with progress_display(console) as progress:
        campaign = progress.add_task("campaign", total=None)
        bars: dict[str, Any] = {}
        while True:
            description = await handle.describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                break
            status = await query_status(handle)
            if approver and status.phase == "awaiting_approval" and not hinted:
                hinted = True
                progress.console.print(render_plan(status))
                if status.preflight:
                    progress.console.print(render_preflight(status.preflight))
                progress.console.print(
                    f"Waiting for approval: {approve_command(handle.id, approver)}"
                )
            for escalation in status.open_escalations:
                key = (escalation.trial_id, len(status.escalations))
                if key not in notified:  # once per escalation: a notification, not a log
                    notified.add(key)
                    progress.console.print(render_escalation(handle.id, escalation), soft_wrap=True)
            finished = sum(1 for t in status.trials if t.state != "running")
            progress.update(
                campaign,
                description=f"{status.phase}{' (paused)' if status.paused else ''}",
                total=planned_trials(status),
                completed=finished,
            )
            for p in await running_progress(client, handle):
                bar = bars.get(p.trial_id)
                if bar is None:
                    bar = bars[p.trial_id] = progress.add_task(
                        f"  {p.trial_id}", total=p.total_steps
                    )
                progress.update(bar, completed=p.step, total=p.total_steps)
            for trial in status.trials:
                if trial.state != "running" and trial.trial_id in bars:
                    progress.remove_task(bars.pop(trial.trial_id))
            await asyncio.sleep(1.0)
    if description.status != WorkflowExecutionStatus.COMPLETED:
        raise fail(await why_closed(handle) or f"campaign {handle.id} ended")
    result = await handle.result()
    console.print(render_result(result))
    from report import write_report

    report = write_report(result.status, settings.data_dir / "reports")
    console.print(f"Report: {report}", soft_wrap=True)
    console.print(f"Web UI: {settings.workflow_url(handle.id)}", soft_wrap=True)


def planned_trials(status: CampaignStatus) -> int | None:
    """Trials the campaign will run: the plan's, less those a phase announced it skips."""
    if status.plan is None:
        return None
    if status.phase in ("done", "stopped", "failed"):
        return len(status.trials)
    planned = status.plan.trials
    for phase in status.plan.phases:
        if phase.phase in status.phase_notes:
            ran = sum(1 for t in status.trials if policy.ledger_phase(t.phase) == phase.phase)
            planned -= phase.trials - ran
    return planned
