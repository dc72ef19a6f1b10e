"""`rea campaign ...`: start, approve, inspect and steer campaigns.

Each command is an update, signal or query of the campaign workflow; the decisions are the
workflow's, and what it shows comes from ``cli.render_campaign``.
"""

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from temporalio.client import WorkflowExecution

from cli.apps import campaign_app, console, fail, load_settings, make_input, rea_command, run
from cli.follow import (
    approve_command,
    follow,
)
from cli.handle import (
    campaign_handle,
    query_status,
    retrying_activities,
    update,
    why_closed,
)
from cli.render import render_campaigns
from cli.render_campaign import (
    render_escalation,
    render_failure,
    render_plan,
    render_preflight,
    render_provenance,
    render_summary,
    render_trials,
)
from client import make_client
from contracts import (
    ApproveInput,
    CampaignStatus,
    ControlInput,
    ControlResult,
    Escalation,
    ExtendBudgetInput,
    PreflightReport,
    ResolveTrialInput,
    RevisePlanInput,
)
from workflows.campaign import CampaignWorkflow

# Who acts: `--as` everywhere (`--by`, the first name of pause/resume/stop's flag, still works).
AS_HELP = "Required: your name, as listed in the request's approvers."
HiddenBy = Annotated[str | None, typer.Option("--by", hidden=True)]


def who(as_: str | None, by: str | None, may: str = "approvers") -> str:
    """The name given with --as (or its old spelling --by); a one-line error when none is."""
    name = as_ or by
    if not name:
        raise fail(f"--as: say who you are, as listed in the campaign's {may}, e.g. --as NAME")
    return name


@campaign_app.command("status")
def campaign_status(
    campaign_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw status.")] = False,
    wide: Annotated[bool, typer.Option(help="More columns (AUC, calibration, seconds).")] = False,
) -> None:
    """Show a campaign's phase, plan, trials and best metric."""

    async def main() -> tuple[CampaignStatus, list[str]]:
        handle = campaign_handle(await make_client(load_settings()), campaign_id)
        status = await query_status(handle)
        if status.plan is None and (closed := await why_closed(handle)):
            raise fail(closed)  # it failed before it had anything else to show
        return status, await retrying_activities(handle)

    status, retrying = run(main())
    if as_json:
        print(status.model_dump_json(indent=2))
        return
    console.print(render_plan(status))
    if status.preflight and status.phase == "awaiting_approval":
        console.print(render_preflight(status.preflight))
    # --wide asks for more than 80 columns: let the terminal wrap rather than cut numbers.
    console.print(render_trials(status, wide=wide), width=max(console.width, 110) if wide else None)
    console.print(render_summary(status))
    for escalation in status.open_escalations:
        console.print(render_escalation(status.campaign_id, escalation), soft_wrap=True)
    for trial in status.trials:
        if trial.state == "failed" and trial.log_tail:
            console.print(render_failure(trial), soft_wrap=True)
    for line in retrying:
        console.print(f"[yellow]retrying[/] {line}")


@campaign_app.command("approve")
def campaign_approve(
    campaign_id: str,
    as_: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
    by: HiddenBy = None,
    hours: Annotated[
        float | None, typer.Option(help="Approve this many device-hours instead of the request.")
    ] = None,
    comment: Annotated[str, typer.Option(help="Kept in the campaign's history.")] = "",
    override_preflight: Annotated[
        str,
        typer.Option(
            "--override-preflight",
            metavar="REASON",
            help="Approve although preflight items fail; the reason is kept in the history.",
        ),
    ] = "",
) -> None:
    """Approve a campaign's pending plan."""
    approver = who(as_, by)
    approval_input = make_input(
        ApproveInput,
        {"approver": "--as", "device_hours": "--hours"},
        approver=approver,
        comment=comment,
        device_hours=hours,
        override_preflight=override_preflight,
    )

    async def main() -> None:
        approval = await update(campaign_id, CampaignWorkflow.approve, approval_input)
        if approval.approver != approver:  # approving is idempotent: the first one stands
            console.print(
                f"Already approved by {approval.approver} at "
                f"{approval.approved_at:%Y-%m-%d %H:%M:%S} ({approval.device_hours:g} "
                "device-hours); nothing changed."
            )
            return
        console.print(
            f"Approved {approval.device_hours:g} device-hours as {approval.approver} "
            f"at {approval.approved_at:%Y-%m-%d %H:%M:%S}"
            + (
                f", overriding the preflight checklist: {approval.preflight_override}."
                if approval.preflight_override
                else "."
            )
        )

    run(main())


@campaign_app.command("revise")
def campaign_revise(
    campaign_id: str,
    as_: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
    by: HiddenBy = None,
    drop: Annotated[list[str] | None, typer.Option(help="A hypothesis id to leave out.")] = None,
    pin: Annotated[
        list[str] | None, typer.Option(help="A hypothesis id to keep (planned or held back).")
    ] = None,
    hours: Annotated[float | None, typer.Option(help="Plan for this many device-hours.")] = None,
    comment: Annotated[str, typer.Option(help="Kept in the plan's notes.")] = "",
) -> None:
    """Revise a campaign's pending plan (drop or pin hypotheses, change the budget)."""
    approver = who(as_, by)
    revision = make_input(
        RevisePlanInput,
        {"approver": "--as", "device_hours": "--hours", "drop": "--drop", "pin": "--pin"},
        approver=approver,
        drop=drop or [],
        pin=pin or [],
        device_hours=hours,
        comment=comment,
    )

    async def main() -> CampaignStatus:
        await update(campaign_id, CampaignWorkflow.revise_plan, revision)
        return await query_status(campaign_handle(await make_client(load_settings()), campaign_id))

    status = run(main())
    console.print(render_plan(status))
    console.print(
        f"Next: approve the revised plan with\n  {approve_command(campaign_id, approver)}"
    )


@campaign_app.command("plan")
def campaign_plan(
    campaign_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show a campaign's plan in full: every hypothesis with its provenance and rationale."""

    async def main() -> CampaignStatus:
        return await query_status(campaign_handle(await make_client(load_settings()), campaign_id))

    status = run(main())
    if status.plan is None:
        raise fail(f"campaign {campaign_id} has no plan yet (phase {status.phase})")
    if as_json:
        print(status.plan.model_dump_json(indent=2))
        return
    console.print(render_plan(status))
    console.print(render_provenance(status.plan))


@campaign_app.command("extend-budget")
def campaign_extend_budget(
    campaign_id: str,
    as_: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
    by: HiddenBy = None,
    hours: Annotated[
        float | None, typer.Option(help="Device-hours to add to the approved budget.")
    ] = None,
    comment: Annotated[str, typer.Option(help="Kept in the campaign's history.")] = "",
) -> None:
    """Add device-hours to a campaign's approved budget (a halted campaign resumes)."""
    approver = who(as_, by)
    if hours is None:
        raise fail("--hours: say how many device-hours to add, e.g. --hours 5")
    extension = make_input(
        ExtendBudgetInput,
        {"approver": "--as", "device_hours": "--hours"},
        approver=approver,
        device_hours=hours,
        comment=comment,
    )

    async def main() -> None:
        ledger = await update(campaign_id, CampaignWorkflow.extend_budget, extension)
        console.print(f"Approved budget is now {ledger.approved:g} device-hours.")

    run(main())


@campaign_app.command("preflight")
def campaign_preflight(campaign_id: str) -> None:
    """Run the preflight checklist again (after fixing what it found) and show it."""

    async def main() -> PreflightReport:
        report: PreflightReport = await update(
            campaign_id, CampaignWorkflow.recheck_preflight, ControlInput()
        )
        return report

    report = run(main())
    console.print(render_preflight(report))
    if not report.passed:
        raise typer.Exit(1)


@campaign_app.command("resolve")
def campaign_resolve(
    campaign_id: str,
    trial_id: str,
    as_: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
    by: HiddenBy = None,
    retry: Annotated[bool, typer.Option("--retry", help="Run the trial again.")] = False,
    skip: Annotated[bool, typer.Option("--skip", help="Leave it failed; go on.")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the campaign.")] = False,
    set_fields: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD=JSON",
            help="With --retry: a ModelSpec field to change, e.g. --set batch_size=256.",
        ),
    ] = None,
    comment: Annotated[str, typer.Option(help="Why; kept in the history.")] = "",
) -> None:
    """Answer an escalated trial: retry it (as it is or with --set changes), skip it, or stop."""
    approver = who(as_, by)
    actions = [a for a, chosen in (("retry", retry), ("skip", skip), ("stop", stop)) if chosen]
    if len(actions) != 1:
        raise fail("give exactly one of --retry, --skip, --stop")
    if set_fields and actions[0] != "retry":
        raise fail("--set: changes only go with --retry")
    answer = make_input(
        ResolveTrialInput,
        {"approver": "--as", "changes": "--set"},
        approver=approver,
        trial_id=trial_id,
        action=actions[0],
        changes=parse_assignments(set_fields or []),
        comment=comment,
    )

    async def main() -> Escalation:
        escalation: Escalation = await update(campaign_id, CampaignWorkflow.resolve_trial, answer)
        return escalation

    run(main())
    changes = f" with {json.dumps(answer.changes)}" if answer.changes else ""
    console.print(f"{trial_id}: {answer.action}{changes} sent as {approver}.")
    if answer.action == "retry":
        console.print(
            "Next time openrea can do this on its own:\n"
            f"  {rea_command()} runbook add-from-escalation {campaign_id} {trial_id}"
        )


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["batch_size=256", "over_hidden=[64,32]"]`` -> a dict (values are JSON, else text)."""
    changes: dict[str, Any] = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise fail(f"--set: expected FIELD=VALUE, got {item!r}")
        try:
            changes[field] = json.loads(value)
        except json.JSONDecodeError:
            changes[field] = value
    return changes


def _control_command(name: str, method: Any, help_text: str) -> None:
    def command(
        campaign_id: str,
        as_: Annotated[
            str | None,
            typer.Option(
                "--as", help="Required: your name, as listed in its approvers or operators."
            ),
        ] = None,
        by: HiddenBy = None,
        reason: Annotated[str, typer.Option(help="Why; kept in the campaign's history.")] = "",
    ) -> None:
        control = ControlInput(by=who(as_, by, may="approvers or operators"), reason=reason)

        async def main() -> ControlResult:
            answer: ControlResult = await update(campaign_id, method, control)
            return answer

        answer = run(main())
        console.print(f"{answer.message} (phase {answer.phase})", soft_wrap=True)

    command.__doc__ = help_text
    campaign_app.command(name)(command)


_control_command(
    "pause",
    CampaignWorkflow.pause_campaign,
    "Launch no new trials until resumed; running trials finish.",
)
_control_command("resume", CampaignWorkflow.resume_campaign, "Launch trials again after a pause.")
_control_command(
    "stop",
    CampaignWorkflow.stop_campaign,
    "End the campaign in any phase: running trials checkpoint and stop; it reports.",
)


@campaign_app.command("watch")
def campaign_watch(campaign_id: str) -> None:
    """Follow a campaign's progress until it ends and print its result."""

    async def main() -> None:
        settings = load_settings()
        client = await make_client(settings)
        await follow(client, campaign_handle(client, campaign_id), settings)

    run(main())


@campaign_app.command("report")
def campaign_report(
    campaign_id: str,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the report (default: data dir/reports).")
    ] = None,
) -> None:
    """Write a self-contained HTML report of a campaign (summary, progress, timeline,
    hypotheses, budget, failures, proposal, evidence) with its PNG charts beside it."""
    from report import write_report

    settings = load_settings()
    folder = out or settings.data_dir / "reports"
    if folder.exists() and not folder.is_dir():
        raise fail(f"--out {folder} is a file; pass a folder (it gets {campaign_id}.html)")

    async def main() -> CampaignStatus:
        client = await make_client(settings)
        return await query_status(campaign_handle(client, campaign_id))

    status = run(main())
    console.print(f"Report: {write_report(status, folder)}", soft_wrap=True)


@campaign_app.command("list")
def campaign_list(limit: Annotated[int, typer.Option(help="At most this many.")] = 20) -> None:
    """List campaigns, newest first, with phase and best metric."""

    async def main() -> list[WorkflowExecution]:
        client = await make_client(load_settings())
        executions: list[WorkflowExecution] = []
        async for wf in client.list_workflows('WorkflowType = "CampaignWorkflow"'):
            executions.append(wf)
            if len(executions) >= limit:
                break
        return executions

    console.print(render_campaigns(run(main())))
