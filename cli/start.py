"""`rea campaign start`: start a campaign, show its plan, approve it when asked, follow it.

A campaign id is never reused silently: the server keeps a finished campaign under its id, and
a second run under the same id would hide the first from `status` and overwrite its report,
so a taken id is refused (``--reuse-id`` starts a new run under it on purpose). Ctrl-C stops
following, not the campaign: what happens to it is said plainly, or asked.
"""

import asyncio
import secrets
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from cli.apps import (
    REFUSED,
    ROOT,
    campaign_app,
    console,
    err_console,
    fail,
    load_json,
    load_settings,
    rea_command,
    run,
)
from cli.follow import approve_when_planned, follow, show_plan_and_next_step
from cli.handle import CampaignHandle, campaign_handle
from cli.serve import embedded
from client import make_client
from contracts import CampaignRequest, ControlInput
from settings import Settings
from workflows.campaign import CampaignWorkflow
from workflows.options import ORCHESTRATION_QUEUE

DEFAULT_CAMPAIGN = ROOT / "examples" / "ml100k-campaign.json"
INTERRUPTED = 130


def new_campaign_id() -> str:
    """A fresh workflow id: ``campaign-<UTC time>-<4 hex digits>``."""
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
    hours: Annotated[
        float | None,
        typer.Option(
            "--hours",
            min=1e-6,
            help="Device-hours to plan for and ask approval of, instead of the spec's "
            "budget.device_hours.",
        ),
    ] = None,
    reuse_id: Annotated[
        bool,
        typer.Option(
            "--reuse-id",
            help="Start a new run under the --id of a campaign that has ended (its status "
            "and report then show the new run).",
        ),
    ] = False,
) -> None:
    """Start a campaign (by default the embedded MovieLens-100k example).

    Without --auto-approve it waits for the plan, shows it and prints the approve command;
    with --no-watch it exits 1 when the preflight checklist failed.
    """
    request = load_json(spec, CampaignRequest, "campaign spec")
    if hours is not None:
        budget = request.budget.model_copy(update={"device_hours": hours})
        request = request.model_copy(update={"budget": budget})
    settings = load_settings()
    if settings.job_backend != "local" and "execution" not in request.model_fields_set:
        # A cluster backend is configured: trials go to it unless the spec says otherwise.
        request = request.model_copy(update={"execution": "job"})
        console.print(f"Trials run as {settings.job_backend} jobs (REA_JOB_BACKEND).")
    start = Start(request, settings, campaign_id or new_campaign_id(), reuse_id)

    async def main() -> None:
        if embedded_server:
            async with embedded(settings) as client:
                await start.guarded(client, auto_approve, watch, embedded=True)
        else:
            await start.guarded(await make_client(settings), auto_approve, watch, embedded=False)

    try:
        run(main())
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None


class Start:
    """One `rea campaign start`: the request, where it goes, and what Ctrl-C means for it."""

    def __init__(
        self, request: CampaignRequest, settings: Settings, workflow_id: str, reuse_id: bool
    ) -> None:
        self.request = request
        self.settings = settings
        self.id = workflow_id
        self.reuse_id = reuse_id
        self.started = False

    async def guarded(
        self, client: Client, auto_approve: bool, watch: bool, embedded: bool
    ) -> None:
        """Start and follow; on Ctrl-C say (or ask) what becomes of the campaign."""
        try:
            await self.go(client, auto_approve, watch)
        except asyncio.CancelledError:
            if self.started:
                await self.interrupted(client, embedded)
            raise

    async def go(self, client: Client, auto_approve: bool, watch: bool) -> None:
        handle = await self.start(client)
        # soft_wrap: a URL split by rich's wrapping cannot be clicked or copied whole.
        console.print(
            f"Started [bold]{self.id}[/]  Web UI: {self.settings.workflow_url(self.id)}",
            soft_wrap=True,
        )
        approver = self.request.approvers[0]
        if auto_approve:
            await approve_when_planned(handle, approver)
        elif not watch and not await show_plan_and_next_step(handle, approver):
            raise typer.Exit(REFUSED)  # the preflight checklist failed: say so by the code
        if watch:
            # The approve hint only where nobody approves for the engineer.
            await follow(client, handle, self.settings, approver="" if auto_approve else approver)

    async def start(self, client: Client) -> CampaignHandle:
        policy = (
            WorkflowIDReusePolicy.ALLOW_DUPLICATE
            if self.reuse_id
            else WorkflowIDReusePolicy.REJECT_DUPLICATE
        )
        try:
            handle: CampaignHandle = await client.start_workflow(
                CampaignWorkflow.run,  # type: ignore[arg-type]
                self.request,
                id=self.id,
                task_queue=ORCHESTRATION_QUEUE,
                static_summary=self.request.goal or None,
                id_reuse_policy=policy,
            )
        except WorkflowAlreadyStartedError:
            raise fail(await self.taken(client)) from None
        self.started = True
        return handle

    async def taken(self, client: Client) -> str:
        """Why the id is taken, and the commands that show the campaign or avoid it."""
        existing = await campaign_handle(client, self.id).describe()
        running = existing.status == WorkflowExecutionStatus.RUNNING
        state = "is running" if running else f"has ended ({existing.status.name.lower()})"
        again = "" if running else ", or pass --reuse-id to start a new run under it"
        return (
            f"--id: campaign {self.id!r} already exists and {state}; "
            f"`{rea_command()} campaign status {self.id}` shows it. Pick another --id or "
            f"leave --id out for a fresh one{again}"
        )

    async def interrupted(self, client: Client, embedded: bool) -> None:
        """Ctrl-C: the campaign is durable and goes on unless stopped; say so, or ask."""
        rea, approver = rea_command(), self.request.approvers[0]
        stop = f"{rea} campaign stop {self.id} --as {approver}"
        if not embedded:
            err_console.print(
                f"Stopped following {self.id}; the campaign goes on in the server. Follow it: "
                f"{rea} campaign watch {self.id}   Stop it: {stop}",
                soft_wrap=True,
            )
            return
        if sys.stdin.isatty() and await ask(f"Stop campaign {self.id} as well? [y/N] "):
            await campaign_handle(client, self.id).execute_update(
                CampaignWorkflow.stop_campaign,
                ControlInput(by=approver, reason="interrupted (Ctrl-C) in rea campaign start"),
            )
            err_console.print(f"Stopped {self.id}: its trials checkpoint and it reports.")
            return
        err_console.print(
            f"Interrupted: campaign {self.id} was NOT stopped. It is saved under "
            f"{self.settings.data_dir} and carries on the next time a server and worker run "
            f"on it ({rea} up). To end it then: {stop}",
            soft_wrap=True,
        )


async def ask(question: str) -> bool:
    """A yes/no answer from the terminal; no (a second Ctrl-C, end of input) by default.

    The prompt reads in a daemon thread: a second Ctrl-C must not wait for Enter."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        try:
            line = input(question)
        except (EOFError, KeyboardInterrupt):
            line = ""
        loop.call_soon_threadsafe(lambda: answer.done() or answer.set_result(line))

    threading.Thread(target=read, daemon=True).start()
    try:
        return (await answer).strip().lower() in ("y", "yes")
    except asyncio.CancelledError:
        return False
