"""`rea`: the command line over the Temporal client (typer + rich).

Every command talks to Temporal through ``client.make_client``; nothing here decides anything a
workflow should decide.
"""

import asyncio
import contextlib
import json
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, Field, ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

import devserver
import runbooks
from client import ServerUnreachable, exit_without_finalizing, make_client
from contracts import (
    DEFAULT_ACTION_SPACE,
    LOWER_IS_BETTER,
    ActionSpace,
    ApproveInput,
    CampaignRequest,
    CampaignResult,
    CampaignStatus,
    ControlInput,
    DatasetRef,
    Escalation,
    ExtendBudgetInput,
    Insight,
    InsightQuery,
    JobFinishedInput,
    LaunchProposal,
    ModelSpec,
    Plan,
    PreflightReport,
    RemedyAttempt,
    ResolveTrialInput,
    RevisePlanInput,
    RunbookEntry,
    TrialProgress,
    TrialSpec,
    TrialSummary,
)
from contracts.base import Spec
from settings import Settings
from workflows import policy
from workflows.campaign import CampaignWorkflow
from workflows.options import (
    BEST_METRIC,
    DEVICE_HOURS_APPROVED,
    DEVICE_HOURS_SPENT,
    ORCHESTRATION_QUEUE,
    PHASE,
)

ROOT = Path(__file__).resolve().parent
DEFAULT_CAMPAIGN = ROOT / "examples" / "ml100k-campaign.json"
SCHEMA_DIR = ROOT / "schema"
ACTION_SPACE_FILE = "action_space.json"
PUBLIC_MODELS: list[type[BaseModel]] = [
    ActionSpace,
    CampaignRequest,
    CampaignStatus,
    CampaignResult,
    ApproveInput,
    RevisePlanInput,
    ResolveTrialInput,
    RunbookEntry,
    ControlInput,
    ExtendBudgetInput,
    JobFinishedInput,
    TrialSpec,
    LaunchProposal,
]

app = typer.Typer(help="openrea: a ranking engineer agent on Temporal.", no_args_is_help=True)
campaign_app = typer.Typer(
    help="Start, approve, inspect and steer campaigns.", no_args_is_help=True
)
app.add_typer(campaign_app, name="campaign")
runbook_app = typer.Typer(
    help="The failure patterns and remedies openrea applies on its own.", no_args_is_help=True
)
app.add_typer(runbook_app, name="runbook")
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


_overrides: dict[str, Any] = {}


@app.callback()
def _options(
    address: Annotated[
        str | None, typer.Option(help="Temporal frontend host:port [REA_TEMPORAL_ADDRESS].")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Temporal namespace [REA_NAMESPACE].")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Server database and results [REA_DATA_DIR].")
    ] = None,
) -> None:
    """openrea: a ranking engineer agent on Temporal."""
    given = {"temporal_address": address, "namespace": namespace, "data_dir": data_dir}
    _overrides.update({k: v for k, v in given.items() if v is not None})


def load_settings() -> Settings:
    """Settings from flags, then REA_* environment variables, then defaults."""
    try:
        return Settings(**_overrides)
    except ValidationError as err:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in err.errors())
        raise fail(f"invalid settings: {problems}") from None


def fail(message: str, code: int = 2) -> typer.Exit:
    # One logical line, however long: the terminal wraps it, and it greps and copies whole.
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def progress_display() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine, turning an unreachable server into a one-line error.

    Ctrl-C and SIGTERM cancel the coroutine, so that its cleanup (stopping workers, then the
    server) runs in order, and then surface as KeyboardInterrupt.
    """

    async def main() -> T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum in previous:
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        finally:
            for signum, handler in previous.items():
                loop.remove_signal_handler(signum)
                signal.signal(signum, handler)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    except ServerUnreachable as err:
        raise fail(str(err)) from None


def load_json(path: Path, model: type[M], label: str) -> M:
    """Parse a JSON file into ``model``; errors name the file and each bad field."""
    try:
        return model.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise fail(f"{label} {path} does not exist") from None
    except ValidationError as err:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
        )
        raise fail(f"{label} {path} is invalid:\n{problems}") from None


def make_input(model: type[M], flags: dict[str, str], **fields: Any) -> M:
    """Build an update's or signal's input from options; errors name the option."""
    try:
        return model(**fields)
    except ValidationError as err:
        problems = "; ".join(
            f"{flags.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}, got {e['input']!r}"
            for e in err.errors()
        )
        raise fail(problems) from None


CampaignHandle = WorkflowHandle[CampaignWorkflow, CampaignResult]


def campaign_handle(client: Client, campaign_id: str) -> CampaignHandle:
    """A typed handle: results and queries come back as contracts, not dicts."""
    return client.get_workflow_handle_for(CampaignWorkflow.run, campaign_id)  # type: ignore[arg-type]


async def query_status(handle: CampaignHandle) -> CampaignStatus:
    """The campaign's status; a missing or failed-at-start campaign is a one-line error."""
    try:
        return await handle.query(CampaignWorkflow.status)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise await not_running(handle) from None
        raise fail(await why_closed(handle) or f"cannot query {handle.id}: {err.message}") from None
    except WorkflowQueryFailedError as err:
        raise fail(await why_closed(handle) or f"cannot query {handle.id}: {err}") from None


async def not_running(handle: CampaignHandle) -> typer.Exit:
    """The one-line error for a campaign the server did not find running: it never
    existed, or it has ended (and why)."""
    try:
        return fail(await why_closed(handle) or f"campaign {handle.id} has ended")
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return fail(f"no campaign {handle.id!r}; `rea campaign list` shows them")


async def why_closed(handle: CampaignHandle) -> str:
    """Why a closed campaign ended, from its failure; "" when it is running or completed."""
    description = await handle.describe()
    if description.status in (
        None,
        WorkflowExecutionStatus.RUNNING,
        WorkflowExecutionStatus.COMPLETED,
    ):
        return ""
    try:
        await handle.result(follow_runs=False)
    except WorkflowFailureError as err:
        cause = err.cause
        while cause.__cause__ is not None and not str(cause):
            cause = cause.__cause__
        message = " ".join(str(cause or err).split())  # one line, whatever the cause said
        return f"campaign {handle.id} {description.status.name.lower()}: {message}"
    except Exception as err:  # terminated, timed out, cancelled: the status says enough
        return f"campaign {handle.id} {description.status.name.lower()}: {err}"
    return ""


# ---- server and worker ---------------------------------------------------------------------


@app.command()
def server() -> None:
    """Run the Temporal dev server (SQLite under the data dir, Web UI) in the foreground."""
    settings = load_settings()
    with dev_server(settings) as dev:
        console.print(f"Temporal at {settings.temporal_address}, Web UI at {settings.ui_url}")
        with contextlib.suppress(KeyboardInterrupt):
            dev.wait()


@contextlib.contextmanager
def dev_server(settings: Settings) -> Iterator[devserver.DevServer]:
    """The dev server for one command; a port in use or a failed start is a one-line error."""
    dev = devserver.DevServer(settings)
    try:
        dev.start()
    except (devserver.ServerStartError, FileNotFoundError) as err:
        raise fail(str(err)) from None
    try:
        yield dev
    finally:
        dev.stop()


@app.command()
def worker(
    role: Annotated[
        list[str] | None, typer.Option(help="orchestration, training and/or jobs (default: all).")
    ] = None,
) -> None:
    """Run workers against the configured server until interrupted."""
    from worker import ROLES, run_workers

    roles = tuple(role or ROLES)
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise fail(f"--role: unknown role(s) {sorted(unknown)}; choose from {list(ROLES)}")
    with contextlib.suppress(KeyboardInterrupt):
        run(run_workers(load_settings(), roles))  # type: ignore[arg-type]


@app.command()
def up() -> None:
    """Run the dev server and a worker with every role (and the Slack app when Slack is
    configured), and keep them running."""
    settings = load_settings()
    with dev_server(settings):
        slack = f", Slack app on port {settings.slack_port}" if settings.slack_configured else ""
        console.print(
            f"openrea is up: Temporal at {settings.temporal_address}, Web UI at {settings.ui_url}"
            f"{slack}\nStart a campaign in another shell: rea campaign start"
        )
        with contextlib.suppress(KeyboardInterrupt):
            run(_workers_and_slack(settings))


async def _workers_and_slack(settings: Settings) -> None:
    """The workers, and beside them the Slack app when its token and secret are set."""
    from worker import run_workers

    if not settings.slack_configured:
        await run_workers(settings)
        return
    from integrations.slack import run_slack_app

    client = await make_client(settings)
    slack = asyncio.create_task(run_slack_app(settings, client))
    try:
        await run_workers(settings, client=client)
    finally:
        slack.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slack


@app.command()
def slack() -> None:
    """Run the Slack app: approve, reject, extend budgets and answer escalated trials from
    Slack's buttons (Slack sends them to port REA_SLACK_PORT, path /slack/events)."""
    from integrations.slack import missing_settings, run_slack_app

    settings = load_settings()
    if missing := missing_settings(settings):
        raise fail(
            f"{' and '.join(missing)} not set: the Slack app needs the bot token and the "
            "signing secret of your Slack app (see README, Slack)"
        )

    async def main() -> None:
        await run_slack_app(settings, await make_client(settings))

    with contextlib.suppress(KeyboardInterrupt):
        run(main())


@contextlib.asynccontextmanager
async def embedded(settings: Settings) -> AsyncIterator[Client]:
    """A dev server and in-process workers for the length of one command."""
    from worker import run_workers

    with dev_server(settings):
        client = await make_client(settings)
        workers = asyncio.create_task(run_workers(settings, client=client))
        try:
            yield client
        finally:
            workers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await workers


# ---- campaigns -----------------------------------------------------------------------------


def new_campaign_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"campaign-{stamp}-{secrets.token_hex(2)}"


@campaign_app.command("start")
def campaign_start(
    spec: Annotated[
        Path, typer.Argument(help="CampaignRequest JSON (see schema/CampaignRequest.json).")
    ] = DEFAULT_CAMPAIGN,
    campaign_id: Annotated[str | None, typer.Option("--id", help="Workflow id.")] = None,
    auto_approve: Annotated[
        bool, typer.Option(help="Approve the plan as the first approver without asking.")
    ] = False,
    watch: Annotated[bool, typer.Option(help="Follow progress until the campaign ends.")] = True,
    embedded_server: Annotated[
        bool,
        typer.Option(
            "--embedded", help="Start a dev server and worker for this command, then stop them."
        ),
    ] = False,
) -> None:
    """Start a campaign (by default the embedded MovieLens-100k example).

    Without --auto-approve it waits for the plan, shows it and prints the approve command.
    """
    request = load_json(spec, CampaignRequest, "campaign spec")
    settings = load_settings()
    if settings.job_backend != "local" and "execution" not in request.model_fields_set:
        # A cluster backend is configured: trials go to it unless the spec says otherwise.
        request = request.model_copy(update={"execution": "job"})
        console.print(f"Trials run as {settings.job_backend} jobs (REA_JOB_BACKEND).")
    workflow_id = campaign_id or new_campaign_id()

    async def go(client: Client) -> None:
        try:
            handle: CampaignHandle = await client.start_workflow(
                CampaignWorkflow.run,  # type: ignore[arg-type]
                request,
                id=workflow_id,
                task_queue=ORCHESTRATION_QUEUE,
                static_summary=request.goal or None,
            )
        except WorkflowAlreadyStartedError:
            raise fail(
                f"--id: a campaign {workflow_id!r} already exists; pick another id, or leave "
                "--id out for a fresh one (`rea campaign status` shows the existing one)"
            ) from None
        # soft_wrap: a URL split by rich's wrapping cannot be clicked or copied whole.
        console.print(
            f"Started [bold]{workflow_id}[/]  Web UI: {settings.workflow_url(workflow_id)}",
            soft_wrap=True,
        )
        if auto_approve:
            await approve_when_planned(handle, request.approvers[0])
        elif not watch:
            await show_plan_and_next_step(handle, request.approvers[0])
        if watch:
            # The approve hint only where nobody approves for the engineer.
            hint = "" if auto_approve else request.approvers[0]
            await follow(client, handle, settings, approver=hint)

    async def main() -> None:
        if embedded_server:
            async with embedded(settings) as client:
                await go(client)
        else:
            await go(await make_client(settings))

    run(main())


def approve_command(campaign_id: str, approver: str) -> str:
    return f"rea campaign approve {campaign_id} --as {approver}"


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


async def show_plan_and_next_step(handle: CampaignHandle, approver: str) -> None:
    if await show_pending_plan(handle):
        console.print(
            f"Next: check again once fixed with\n  rea campaign preflight {handle.id}\nthen "
            if not (await query_status(handle)).preflight_passed
            else "Next: ",
            end="",
        )
        console.print(f"approve the plan with\n  {approve_command(handle.id, approver)}")


async def approve_when_planned(handle: CampaignHandle, approver: str) -> None:
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
        raise fail(f"not approved: {err.cause}") from None
    console.print(f"Approved as {approval.approver} ({approval.device_hours:g} device-hours).")


async def poll_status(
    handle: CampaignHandle, done: Callable[[CampaignStatus], bool], every_s: float = 0.5
) -> CampaignStatus:
    while True:
        status = await query_status(handle)
        if done(status):
            return status
        await asyncio.sleep(every_s)


async def running_progress(client: Client, handle: CampaignHandle) -> list[TrialProgress]:
    """Heartbeat details of the campaign's running trials."""
    description = await handle.describe()
    progress = []
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name != "train_trial" or not pending.heartbeat_details.payloads:
            continue
        [details] = await client.data_converter.decode(
            pending.heartbeat_details.payloads, [TrialProgress]
        )
        progress.append(details)
    return progress


async def retrying_activities(handle: CampaignHandle) -> list[str]:
    """One line per activity of the campaign that has failed and is being retried."""
    description = await handle.describe()
    lines = []
    for pending in description.raw_description.pending_activities:
        if pending.attempt > 1 and pending.HasField("last_failure"):
            lines.append(
                f"{pending.activity_type.name}: attempt {pending.attempt}, "
                f"last error: {pending.last_failure.message}"
            )
    return lines


async def follow(
    client: Client, handle: CampaignHandle, settings: Settings, approver: str = ""
) -> None:
    """Show progress until the campaign ends, then print its result.

    Args:
        approver: When set, print the approve command once the plan waits for approval.
    """
    hinted = False
    notified: set[tuple[str, int]] = set()  # escalations already shown: (trial, how many)
    with progress_display() as progress:
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
    approver: Annotated[
        str, typer.Option("--as", help="Your name, as listed in the request's approvers.")
    ],
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
    approver: Annotated[
        str, typer.Option("--as", help="Your name, as listed in the request's approvers.")
    ],
    drop: Annotated[list[str] | None, typer.Option(help="A hypothesis id to leave out.")] = None,
    pin: Annotated[
        list[str] | None, typer.Option(help="A hypothesis id to keep (planned or held back).")
    ] = None,
    hours: Annotated[float | None, typer.Option(help="Plan for this many device-hours.")] = None,
    comment: Annotated[str, typer.Option(help="Kept in the plan's notes.")] = "",
) -> None:
    """Revise a campaign's pending plan (drop or pin hypotheses, change the budget)."""
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
    approver: Annotated[
        str, typer.Option("--as", help="Your name, as listed in the request's approvers.")
    ],
    hours: Annotated[float, typer.Option(help="Device-hours to add to the approved budget.")],
    comment: Annotated[str, typer.Option(help="Kept in the campaign's history.")] = "",
) -> None:
    """Add device-hours to a campaign's approved budget (a halted campaign resumes)."""
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
    approver: Annotated[
        str, typer.Option("--as", help="Your name, as listed in the request's approvers.")
    ],
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
            f"  rea runbook add-from-escalation {campaign_id} {trial_id}"
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


async def update(campaign_id: str, method: Any, arg: BaseModel) -> Any:
    """Run an update on a campaign; a rejection is a one-line error naming the reason."""
    handle = campaign_handle(await make_client(load_settings()), campaign_id)
    try:
        return await handle.execute_update(method, arg)
    except WorkflowUpdateFailedError as err:
        raise fail(f"rejected: {err.cause}") from None
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        raise await not_running(handle) from None


def _signal_command(name: str, help_text: str) -> None:
    def command(
        campaign_id: str,
        by: Annotated[str, typer.Option(help="Who asks.")] = "",
        reason: Annotated[str, typer.Option(help="Why.")] = "",
    ) -> None:
        async def main() -> None:
            handle = campaign_handle(await make_client(load_settings()), campaign_id)
            try:
                await handle.signal(name, ControlInput(by=by, reason=reason))
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                raise await not_running(handle) from None
            console.print(f"Sent {name} to {campaign_id}.")

        run(main())

    command.__doc__ = help_text
    campaign_app.command(name)(command)


_signal_command("pause", "Launch no new trials until resumed; running trials finish.")
_signal_command("resume", "Launch trials again after a pause.")
_signal_command(
    "stop", "End the campaign in any phase: running trials checkpoint and stop; it reports."
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

    async def main() -> Table:
        client = await make_client(load_settings())
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("campaign", no_wrap=True)
        for column in ("status", "phase", "spent h", "best", "started"):
            table.add_column(column)
        count = 0
        async for wf in client.list_workflows('WorkflowType = "CampaignWorkflow"'):
            attributes = wf.typed_search_attributes
            best = attributes.get(BEST_METRIC)
            spent = attributes.get(DEVICE_HOURS_SPENT)
            approved = attributes.get(DEVICE_HOURS_APPROVED)
            table.add_row(
                wf.id,
                wf.status.name.lower() if wf.status else "?",
                attributes.get(PHASE) or "",
                f"{spent:.3g}/{approved:g}" if spent is not None and approved else "",
                f"{best:.5g}" if best is not None else "",
                f"{wf.start_time:%m-%d %H:%M}",
            )
            count += 1
            if count >= limit:
                break
        return table

    console.print(run(main()))


# ---- TensorBoard ---------------------------------------------------------------------------


@app.command("tensorboard")
def tensorboard_command(
    campaign_id: Annotated[str, typer.Argument(help="The campaign (workflow id).")],
    open_: Annotated[
        bool, typer.Option("--open", help="Run TensorBoard on it now (Ctrl-C stops it).")
    ] = False,
) -> None:
    """Print the TensorBoard command for a campaign's trials (one run per trial).

    Trials write loss per step and validation NE/AUC/log loss per epoch as they train, so
    TensorBoard shows a running campaign too.
    """
    from activities.telemetry import tensorboard_root

    folder = tensorboard_root(load_settings().data_dir).resolve() / campaign_id
    if not folder.is_dir():
        raise fail(
            f"campaign {campaign_id!r} has no TensorBoard events yet: {folder} does not exist "
            "(its trials write there once they train; check the id and --data-dir)"
        )
    # The one installed beside this Python (the tensorboard package ships it), else PATH's.
    binary = Path(sys.executable).with_name("tensorboard")
    command = [str(binary) if binary.exists() else "tensorboard", "--logdir", str(folder)]
    console.print(shlex.join(command), soft_wrap=True, markup=False, highlight=False)
    if open_:
        with contextlib.suppress(KeyboardInterrupt):
            code = subprocess.run(command, check=False).returncode
            if code:
                raise typer.Exit(code)


# ---- one trial, schema ---------------------------------------------------------------------


class LocalTrial(Spec):
    """What `rea train` reads: a model and a dataset, both optional."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    dataset: DatasetRef = Field(default_factory=DatasetRef)


# `rea train` exit codes: a diverged run is a result of its own, not an error of the tool.
EXIT_DIVERGED = 3


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="JSON with optional 'model' and 'dataset' keys.")],
) -> None:
    """Train one trial here, without Temporal, and print its metrics.

    Exits 3 when training diverged (NaN/inf or exploding loss) and 2 on other errors.
    """
    from ranking_models.errors import DivergenceError, TrainingError
    from ranking_models.trainer import train as train_model

    trial = load_json(spec, LocalTrial, "spec")
    with progress_display() as progress:
        bar = progress.add_task("training", total=None)

        def on_progress(p: TrialProgress) -> None:
            progress.update(
                bar, completed=p.step, total=p.total_steps,
                description=f"epoch {p.epoch} loss {p.train_loss:.4f}",
            )  # fmt: skip

        try:
            outcome = train_model(trial.model, trial.dataset, on_progress=on_progress)
        except DivergenceError as err:
            raise fail(f"diverged: {err}", code=EXIT_DIVERGED) from None
        except TrainingError as err:
            raise fail(f"{type(err).__name__}: {err}") from None
    table = Table("split", "NE", "AUC", "log loss", "examples", box=box.SIMPLE_HEAD)
    for split, m in (("validation", outcome.validation), ("test", outcome.test)):
        table.add_row(split, f"{m.ne:.5g}", f"{m.auc:.5g}", f"{m.logloss:.5g}", str(m.examples))
    console.print(table)
    console.print(f"{outcome.steps} steps in {outcome.duration_s:.1f}s")


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="`rea train` JSON of the baseline.")],
    candidate: Annotated[Path, typer.Argument(help="`rea train` JSON of the change to test.")],
    seeds: Annotated[int, typer.Option(min=2, max=50, help="Paired seeds (at least 2).")] = 5,
    min_effect: Annotated[
        float, typer.Option(min=0.0, help="Smallest relative gain worth launching, e.g. 0.001.")
    ] = 0.0,
) -> None:
    """Is a change a real gain or seed noise? Train both with the same seeds and compare.

    Each seed gives both models the same initialisation and data order, so the comparison is
    paired; the gain on validation NE comes with its 95% interval and a one-sided p-value.
    Test NE is shown beside it, never used to decide.
    """
    from activities.evidence import gate
    from contracts.evidence import CandidateRuns, GateInput, SeededMetric
    from ranking_models.errors import TrainingError
    from ranking_models.trainer import train as train_model

    trials = {
        "baseline": load_json(baseline, LocalTrial, "baseline"),
        "candidate": load_json(candidate, LocalTrial, "candidate"),
    }
    if trials["baseline"].dataset != trials["candidate"].dataset:
        raise fail("dataset: the two specs must train on the same dataset to be compared")
    first = trials["baseline"].model.seed
    values: dict[str, dict[int, tuple[float, float]]] = {"baseline": {}, "candidate": {}}
    with progress_display() as progress:
        bar = progress.add_task("training", total=2 * seeds)
        for seed in range(first, first + seeds):
            for name, trial in trials.items():
                progress.update(bar, description=f"{name} seed {seed}")
                try:
                    outcome = train_model(
                        trial.model.model_copy(update={"seed": seed}), trial.dataset
                    )
                except TrainingError as err:
                    raise fail(f"{name} seed {seed}: {type(err).__name__}: {err}") from None
                values[name][seed] = (outcome.validation.ne, outcome.test.ne)
                progress.advance(bar)
    decision = gate(
        GateInput(
            baseline=[SeededMetric(seed=s, value=v[0]) for s, v in values["baseline"].items()],
            candidates=[
                CandidateRuns(
                    hypothesis_id="candidate",
                    runs=[SeededMetric(seed=s, value=v[0]) for s, v in values["candidate"].items()],
                )
            ],
            min_effect=min_effect,
        )
    )
    table = Table("seed", "val NE base", "val NE cand", "test NE base", "test NE cand")
    table.box = box.SIMPLE_HEAD
    for seed in values["baseline"]:
        (bv, bt), (cv, ct) = values["baseline"][seed], values["candidate"][seed]
        table.add_row(str(seed), f"{bv:.5g}", f"{cv:.5g}", f"{bt:.5g}", f"{ct:.5g}")
    console.print(table)
    [comparison] = decision.comparisons
    verdict = (
        "beats the baseline beyond seed noise on validation (not yet confirmed on test)"
        if comparison.passed
        else "not shown to beat the baseline"
    )
    console.print(f"candidate vs baseline on validation NE: {comparison.reason}", soft_wrap=True)
    console.print(f"verdict: {verdict} ({seeds} paired seeds)")


@app.command()
def insights(
    task_like: Annotated[
        str, typer.Option(help="Weigh evidence by similarity to this campaign's task.")
    ] = "",
    family: Annotated[str, typer.Option(help="Only changes of this family.")] = "",
    min_comparisons: Annotated[int, typer.Option(help="Only changes compared this often.")] = 1,
    metric: Annotated[str, typer.Option(help="The metric whose gains are shown.")] = "ne",
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Write them to this CSV file.")] = None,
) -> None:
    """What past campaigns learned: the effect of each change, pooled over similar tasks."""
    from store import InsightsStore

    store = InsightsStore(load_settings().database)
    task = None
    if task_like:
        task = store.task_of(task_like)
        if task is None:
            known = ", ".join(store.campaigns()[-5:]) or "none recorded yet"
            raise fail(f"--task-like: no task recorded for campaign {task_like!r}; known: {known}")
    query = make_input(
        InsightQuery,
        {"min_comparisons": "--min-comparisons"},
        task=task,
        family=family,
        min_comparisons=min_comparisons,
        metric=metric,
    )
    found = store.insights(query)
    if as_json:
        print(json.dumps([i.model_dump(mode="json") for i in found], indent=2))
    elif csv is not None:
        write_insights_csv(found, csv)
        console.print(f"wrote {len(found)} insight(s) to {csv}")
    else:
        console.print(render_insights(found, task_like))


def write_insights_csv(found: list[Insight], path: Path) -> None:
    import csv as csv_module

    with path.open("w", newline="") as f:
        writer = csv_module.writer(f)
        writer.writerow(
            ["change", "family", "comparisons", "campaigns", "weight", "mean_gain", "gain_low",
             "gain_high", "passed", "cost_ratio", "interactions"]
        )  # fmt: skip
        for i in found:
            writer.writerow(
                [i.change, i.family, i.comparisons, i.campaigns, f"{i.weight:.4g}",
                 f"{i.mean_gain:.6g}", "" if i.gain_low is None else f"{i.gain_low:.6g}",
                 "" if i.gain_high is None else f"{i.gain_high:.6g}", i.passed,
                 f"{i.cost_ratio:.4g}",
                 "; ".join(f"{x.change} {x.excess:+.4g} (n={x.n})" for x in i.interactions)]
            )  # fmt: skip


@runbook_app.command("list")
def runbook_list() -> None:
    """The runbook entries in matching order: what openrea recognises and tries."""
    book = load_runbook_or_fail()
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("id", "v", "matches", "remedies, in order", "max"):
        table.add_column(column)
    for entry in book.entries:
        m = entry.match
        matches = ", ".join(
            part
            for part in (
                "/".join(m.error_types),
                "/".join(m.states),
                f"signature {m.signature}" if m.signature else "",
                f"/{m.message}/" if m.message else "",
            )
            if part
        )
        remedies = ", ".join(r.kind for r in entry.remedies) or "[dim]escalate[/]"
        table.add_row(entry.id, str(entry.version), matches, remedies, str(entry.max_attempts))
    console.print(table)
    console.print(f"Shipped entries: {runbooks.BUILTIN_DIR}; yours: {load_settings().runbook_dir}")


@runbook_app.command("check")
def runbook_check(
    folder: Annotated[Path | None, typer.Argument(help="A folder of entries to check.")] = None,
) -> None:
    """Validate the runbooks (the shipped ones, yours, and FOLDER): errors name file and field."""
    book = load_runbook_or_fail(*([folder] if folder else []))
    console.print(f"{len(book.entries)} runbook entries are valid.")


@runbook_app.command("add-from-escalation")
def runbook_add_from_escalation(
    campaign_id: str,
    trial_id: str,
    entry_id: Annotated[
        str, typer.Option("--id", help="The new entry's id (default: from the error type).")
    ] = "",
    message: Annotated[
        str,
        typer.Option(help="A regular expression the error must contain (default: its start)."),
    ] = "",
) -> None:
    """Save an engineer's answer to an escalated trial as a runbook entry, so that openrea
    handles the same failure on its own next time."""

    async def main() -> CampaignStatus:
        return await query_status(campaign_handle(await make_client(load_settings()), campaign_id))

    status = run(main())
    answered = [
        e for e in status.escalations if e.trial_id == trial_id and e.resolution is not None
    ]
    if not answered:
        waiting = [e.trial_id for e in status.escalations]
        raise fail(
            f"trial {trial_id} of {campaign_id} has no answered escalation (escalated: "
            f"{waiting or 'none'}); answer it first with `rea campaign resolve`"
        )
    entry = runbooks.entry_from_escalation(
        answered[-1], f"{campaign_id}/{trial_id}", entry_id=entry_id, message=message
    )
    folder = load_settings().runbook_dir
    path = folder / f"{entry.id}.yaml"
    if path.exists():
        raise fail(f"{path} exists; choose another --id")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(runbooks.entry_yaml(entry))
    try:
        runbooks.load_runbook(folder)
    except runbooks.RunbookError as err:
        path.unlink()
        raise fail(str(err)) from None
    console.print(f"Saved {path}:")
    console.print(path.read_text(), markup=False)


def load_runbook_or_fail(*folders: Path) -> runbooks.Runbook:
    try:
        return runbooks.load_runbook(load_settings().runbook_dir, *folders)
    except runbooks.RunbookError as err:
        raise fail(str(err)) from None


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Folder to write JSON Schema files into.")] = SCHEMA_DIR,
) -> None:
    """Write JSON Schema of the public contracts, for clients in other languages."""
    out.mkdir(parents=True, exist_ok=True)
    for model in PUBLIC_MODELS:
        path = out / f"{model.__name__}.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        console.print(f"wrote {path}")
    # The knobs a trial may move and their ranges: data, for clients and research agents.
    path = out / ACTION_SPACE_FILE
    path.write_text(DEFAULT_ACTION_SPACE.model_dump_json(indent=2) + "\n")
    console.print(f"wrote {path}")


# ---- rendering -----------------------------------------------------------------------------
# Tables fit an 80-column terminal: ids never wrap (they are what people copy), and columns
# most people do not need every time move behind --wide.


def render_plan(status: CampaignStatus) -> Table:
    table = Table(
        title=f"{status.campaign_id}: {status.phase}", box=box.SIMPLE_HEAD, caption_justify="left"
    )
    table.add_column("hypothesis", no_wrap=True)
    table.add_column("change")
    table.add_column("source")
    table.add_column("exp. gain", justify="right")
    table.add_column("kept ≥", justify="right")
    if status.plan:
        plan = status.plan
        for h in plan.hypotheses:
            pin = " (pinned)" if h.id in plan.pinned else ""
            kept = plan.kept_down_to.get(h.id)
            table.add_row(
                h.id + pin,
                h.title,
                h.source,
                f"{h.expected_gain:+.2%}" if h.provenance else "-",
                f"{kept:.3g}" if kept is not None else "-",
            )
        for h in plan.held_back:
            table.add_row(
                f"[dim]{h.id}[/]", f"[dim]held back: {h.title}[/]", f"[dim]{h.source}[/]",
                f"[dim]{h.expected_gain:+.2%}[/]", "",
            )  # fmt: skip
        phases = "; ".join(
            f"{p.phase}: {'up to ' if p.condition else ''}{p.trials} trials"
            f"{f' ({p.condition})' if p.condition else ''}"
            for p in plan.phases
        )
        table.caption = (
            f"{phases}. Estimated {hours_range(plan.estimated_device_hours, plan.estimated_device_hours_high)} "  # noqa: E501
            f"device-hours in all ({hours_range(plan.estimated_device_hours_per_trial, plan.estimated_device_hours_per_trial_high)} a trial)"  # noqa: E501
            + (f", trials on {plan.compute_target}" if plan.compute_target else "")
            + (
                ". 'kept ≥': the smallest budget (device-hours) that still tests it"
                if plan.kept_down_to
                else ""
            )
            + "".join(f"\n- {note}" for note in plan.notes)
        )
    return table


def render_preflight(report: PreflightReport) -> Table:
    table = Table(title="preflight checklist", box=box.SIMPLE_HEAD, caption_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("found")
    table.add_column("fix")
    for item in report.items:
        mark = "[green]ok[/]" if item.ok else "[bold red]FAILED[/]"
        table.add_row(item.check, mark, item.detail, item.fix)
    if not report.passed:
        table.caption = (
            "Approval is refused until every check passes: fix it and run `rea campaign "
            "preflight ID`, or approve with --override-preflight REASON."
        )
    return table


def render_escalation(campaign_id: str, escalation: Escalation) -> str:
    """What an engineer needs to decide: the error, the log tail, what was tried, the
    commands that answer."""
    diagnosis = escalation.diagnosis
    tried = "; ".join(describe_remedy(a) for a in escalation.tried) or "nothing"
    lines = [
        f"[bold red]trial {escalation.trial_id} needs attention:[/] "
        f"{escalation.error_type or 'failed'}: {escalation.error}",
        f"  why: {diagnosis.why_escalate}",
        f"  diagnosis: {diagnosis.diagnosis}" if diagnosis.diagnosis else "",
        f"  tried: {tried}",
        *(f"  | {line}" for line in diagnosis.log_tail.splitlines()[-10:]),
        f"  answer: rea campaign resolve {campaign_id} {escalation.trial_id} --as YOU "
        "--retry [--set FIELD=VALUE] | --skip | --stop",
    ]
    return "\n".join(line for line in lines if line)


def describe_remedy(attempt: RemedyAttempt) -> str:
    return f"{attempt.remedy.kind} ({attempt.pattern_id}) -> {attempt.state}"


def render_provenance(plan: Plan) -> Table:
    """Where each planned and held-back hypothesis came from, and why."""
    table = Table(title="provenance", box=box.SIMPLE_HEAD, show_lines=True)
    table.add_column("hypothesis", no_wrap=True)
    table.add_column("why, and on what grounds")
    for h in [*plan.hypotheses, *plan.held_back]:
        p = h.provenance
        grounds = [h.rationale]
        if p is not None:
            who = ", ".join(
                x
                for x in (
                    p.agent,
                    f"technique {p.technique}" if p.technique else "",
                    f"model {p.model}" if p.model else "",
                    f"prompt {p.prompt_version}" if p.prompt_version else "",
                    f"reply {p.reply_digest[:12]}" if p.reply_digest else "",
                )
                if x
            )
            grounds += [f"[dim]{who}[/]" if who else "", p.evidence, p.citation]
        table.add_row(f"{h.id}\n[dim]{h.source}[/]", "\n".join(g for g in grounds if g))
    return table


def render_insights(found: list[Insight], task_like: str) -> Table:
    weighting = f"weighted by similarity to {task_like}'s task" if task_like else "every task alike"
    table = Table(title=f"insights ({weighting})", box=box.SIMPLE_HEAD, caption_justify="left")
    table.add_column("change")
    table.add_column("n", justify="right")
    table.add_column("gain [95% CI]", justify="right")
    table.add_column("passed", justify="right")
    table.add_column("cost", justify="right")
    for i in found:
        interval = (
            f" [{i.gain_low:+.2%}, {i.gain_high:+.2%}]"
            if i.gain_low is not None and i.gain_high is not None
            else ""
        )
        mixes = "".join(f"\n  with {x.change}: {x.excess:+.2%}" for x in i.interactions)
        table.add_row(
            f"{i.change}\n[dim]{i.family}[/]{mixes}",
            f"{i.comparisons} ({i.campaigns}c)",
            f"{i.mean_gain:+.2%}{interval}",
            f"{i.passed}/{i.comparisons}",
            f"×{i.cost_ratio:.2g}",
        )
    table.caption = (
        "gain: relative metric gain, positive is better; n: gate comparisons (campaigns); "
        "with: merged gain minus the sum of the parts"
        if found
        else "no insights yet: they come from the gates of recorded campaigns"
    )
    return table


def hours_range(low: float, high: float) -> str:
    return f"{low:.3g}" if high <= low * 1.005 else f"{low:.3g}-{high:.3g}"


def render_summary(status: CampaignStatus) -> str:
    approval = status.approval
    approved = (
        f"approved by {approval.approver} at {approval.approved_at:%Y-%m-%d %H:%M}"
        if approval
        else "not approved yet"
    )
    ledger = status.ledger
    lines = [
        f"[bold]{status.phase}[/]{' [yellow](paused)[/]' if status.paused else ''}; {approved}",
        f"budget: {ledger.spent:.3g} spent + {ledger.reserved:.3g} reserved of "
        f"{ledger.approved:g} device-hours",
        f"{best_label(status)}: {describe_best(status)}{leader_interval(status)}"
        if status.best_metric is not None
        else "",
        f"  ({SINGLE_SEED_CAVEAT})" if single_seed_best(status) else "",
        *(f"{phase}: {note}" for phase, note in status.phase_notes.items()),
        f"[bold]{status.proposal.headline}[/]" if status.proposal else "",
        f"[bold red]needs attention:[/] {status.needs_attention}" if status.needs_attention else "",
        status.message,
    ]
    return "\n".join(line for line in lines if line)


# Campaigns of the single-seed protocol never measured seed noise: a best trial's edge may be
# noise; say so wherever it shows.
SINGLE_SEED_CAVEAT = (
    "one seed per trial, picked on validation: the difference is not tested against seed noise"
)


def single_seed_best(status: CampaignStatus) -> bool:
    return status.protocol == "single-seed" and status.best_trial_id not in ("", "baseline")


def leader_interval(status: CampaignStatus) -> str:
    """The gate's 95% interval of the leading change, so its gain never shows without one."""
    for decision in status.decisions.values():
        for c in decision.comparisons:
            if c.passed and c.hypothesis_id == status.best_trial_id and c.gain_low is not None:
                return f", gate interval [{c.gain_low:+.2%}, {c.gain_high or 0.0:+.2%}]"
    return ""


def best_label(status: CampaignStatus) -> str:
    """What "best" means: under the evidence protocol only a change that passed a gate (its
    mean over the gate's seeds against the baseline's) leads."""
    return "best" if status.protocol == "single-seed" else "leading (passed a validation gate)"


def describe_best(status: CampaignStatus) -> str:
    """E.g. "v-lower-dense-lr: NE 0.9139 vs 0.9198 baseline, −0.64% (better)"."""
    metric, best, baseline = status.metric, status.best_metric, status.baseline_metric
    if best is None:
        return "-"
    text = f"{status.best_trial_id}: {metric_name(metric)} {best:.5g}"
    if baseline is None or status.best_trial_id == "baseline":
        return text
    change = (best - baseline) / abs(baseline) if baseline else 0.0
    better = change < 0 if LOWER_IS_BETTER[metric] else change > 0
    verdict = "better" if better else "worse" if change else "no change"
    sign = "+" if change > 0 else "\N{MINUS SIGN}" if change < 0 else "±"
    return f"{text} vs {baseline:.5g} baseline, {sign}{abs(change):.2%} ({verdict})"


def metric_name(metric: str) -> str:
    return "log loss" if metric == "logloss" else metric.upper()


def trial_state(trial: TrialSummary) -> str:
    """The trial's state; a running Slurm job's id with it (``squeue -j ID`` says more)."""
    if trial.state == "running" and trial.job is not None and trial.job.runner == "slurm":
        return f"running (Slurm job {trial.job.details.get('slurm_job_id', '?')})"
    return trial.state


def render_failure(trial: TrialSummary, lines: int = 10) -> str:
    """A failed trial's error and the end of its job's log (stdout and stderr)."""
    tail = trial.log_tail.splitlines()[-lines:]
    return "\n".join(
        [
            f"[red]{trial.trial_id} failed[/] ({trial.error_type or 'error'}): "
            f"{escape(trial.error)}",
            *(f"  | {escape(line)}" for line in tail),
        ]
    )


def render_trials(status: CampaignStatus, wide: bool = False) -> Table:
    metric = status.metric
    name = metric_name(metric)
    table = Table(
        title=f"trials: {name} on validation (test reported, never selected on)",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
    )
    table.add_column("trial", no_wrap=True)
    table.add_column("state")
    table.add_column(f"val {name}", justify="right")
    table.add_column(f"test {name}", justify="right")
    if wide:
        for column in ("val AUC", "calib.", "seconds"):
            table.add_column(column, justify="right")
    for t in status.trials:
        # Under the evidence protocol the leader is an arm: mark each of its seeded runs.
        best = bool(status.best_trial_id) and status.best_trial_id in (t.trial_id, t.arm)
        row = [
            f"[bold green]{t.trial_id} *[/]" if best else t.trial_id,
            trial_state(t),
            f"{getattr(t.validation, metric):.5g}" if t.validation else "",
            f"{getattr(t.test, metric):.5g}" if t.test else "",
        ]
        if wide:
            row += [
                f"{t.validation.auc:.5g}" if t.validation else "",
                f"{t.validation.calibration:.3g}"
                if t.validation and t.validation.calibration
                else "",
                f"{t.duration_s:.1f}" if t.state != "running" else "",
            ]
        table.add_row(*row, style=None if t.state in ("running", "succeeded") else "red")
    return table


def render_result(result: CampaignResult) -> Table:
    """The evidence table and the verdict (single-seed campaigns: every trial and the best)."""
    status = result.status
    if status.protocol == "evidence":
        table = render_evidence(status)
        lines = [screen_line(status)] if status.screen else []
        lines += [f"{phase}: {note}" for phase, note in status.phase_notes.items()]
    else:
        table = render_trials(status)
        lines = [f"best {describe_best(status)}"] if status.best_metric is not None else []
        if single_seed_best(status):
            lines.append(f"({SINGLE_SEED_CAVEAT})")
        lines += [f"{phase}: {note}" for phase, note in status.phase_notes.items()]
    lines.append(
        f"{status.device_hours_spent:.3g} of {status.device_hours_approved:g} device-hours spent "
        f"in {len(status.trials)} trials"
    )
    if status.proposal is not None:
        style = "bold green" if status.proposal.verdict == "launch" else "bold"
        lines.append(f"[{style}]{status.proposal.headline}[/]")
    table.caption = "\n".join(lines)
    return table


def render_evidence(status: CampaignStatus) -> Table:
    """Every comparison the gates made: gain with its 95% interval, adjusted p, verdict."""
    name = metric_name(status.metric)
    table = Table(
        title=f"evidence: {name} gain over the baseline, paired by seed",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
    )
    # Folded, never cut with an ellipsis: the change's name is what a reader looks for.
    table.add_column("gate / change", overflow="fold", min_width=12)
    table.add_column("n", justify="right")
    table.add_column("gain [95% interval]", no_wrap=True)
    table.add_column("adj. p", justify="right")
    table.add_column("verdict", overflow="fold", min_width=10)
    for phase, decision in status.decisions.items():
        table.add_row(f"[bold]{phase}[/]{' (test)' if decision.split == 'test' else ''}")
        for c in decision.comparisons:
            tested = c.gain_low is not None and c.gain_high is not None
            table.add_row(
                f"  {c.hypothesis_id}",
                str(c.n),
                f"{c.gain:+.2%} [{c.gain_low:+.2%}, {c.gain_high:+.2%}]" if tested else "",
                f"{c.p_adjusted:.2g}" if tested else "",
                "[green]passed[/]" if c.passed else verdict_of(c.reason),
                style=None if c.passed else "dim",
            )
    return table


def verdict_of(reason: str) -> str:
    """The gate's reason without its numbers (the table has them): "not significant"..."""
    return reason.rsplit(": ", 1)[-1] if ": " in reason else reason


def screen_line(status: CampaignStatus) -> str:
    if status.screen is None:
        return ""
    dropped = [r.arm for r in status.screen.results if not r.promoted]
    return (
        f"screen ({status.screen.epochs} epoch(s), one seed): dropped the worse half, "
        f"{', '.join(dropped) or 'none'}"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """The `rea` entry point."""
    # SIGTERM (systemd, `kill`, CI) shuts down like Ctrl-C: the dev server a command started
    # is stopped on the way out instead of being orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    code: int | str | None = 0
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code
    except RPCError as err:
        err_console.print(f"[bold red]error:[/] Temporal said: {err.message}")
        code = 2
    if isinstance(code, str):
        err_console.print(code)
        code = 1
    exit_without_finalizing(code or 0)


if __name__ == "__main__":
    main()
