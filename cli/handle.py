"""A campaign as the CLI reaches it: a typed handle, its status, updates, and what its
pending activities say, every failure a one-line error."""

import asyncio
from collections.abc import Callable
from typing import Any

import typer
from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from cli.apps import REFUSED, fail, load_settings, rea_command
from client import make_client
from contracts import CampaignResult, CampaignStatus, TrialProgress
from workflows.campaign import CampaignWorkflow

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
        return fail(f"no campaign {handle.id!r}; `{rea_command()} campaign list` shows them")


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


async def update(campaign_id: str, method: Any, arg: BaseModel) -> Any:
    """Run an update on a campaign; a refusal is a one-line error naming the reason (exit 1)."""
    handle = campaign_handle(await make_client(load_settings()), campaign_id)
    try:
        return await handle.execute_update(method, arg)
    except WorkflowUpdateFailedError as err:
        raise fail(f"rejected: {refusal(err)}", REFUSED) from None
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        raise await not_running(handle) from None


def refusal(err: WorkflowUpdateFailedError) -> str:
    """The campaign's reason, its `rea ...` commands as this shell runs them."""
    return str(err.cause).replace("`rea ", f"`{rea_command()} ")


async def poll_status(
    handle: CampaignHandle, done: Callable[[CampaignStatus], bool], every_s: float = 0.5
) -> CampaignStatus:
    """Query the campaign's status every ``every_s`` seconds until ``done`` says so.

    Args:
        handle: The campaign.
        done: True for the status to return.
        every_s: Seconds between queries.

    Returns:
        The first status ``done`` accepts.
    """
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
