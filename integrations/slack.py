"""The Slack app: a button click becomes the campaign's update or signal. No decision logic.

A slack_bolt AsyncApp in HTTP mode behind aiohttp. Bolt verifies each request's signature
(HMAC of ``v0:timestamp:body`` with the signing secret, timestamp within 5 minutes) and
answers 401 otherwise. A click is acknowledged at once; then the Slack user is mapped to an
approver (``REA_SLACK_USERS``) and the campaign is asked, with an update id derived from the
message and the action, so that a double click or a replayed request applies once. The
campaign's validators decide who may do what; their answer is shown in Slack.
"""

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import FailureError
from temporalio.service import RPCError

from activities.notify import slack_web_client
from contracts import (
    ACTION_ID_PREFIX,
    ApproveInput,
    CampaignRequest,
    ControlInput,
    ExtendBudgetInput,
    ResolveTrialInput,
    SlackAction,
)
from settings import Settings
from workflows.campaign import CampaignWorkflow

log = logging.getLogger("openrea.slack")

EVENTS_PATH = "/slack/events"
REJECT_REASON = "plan rejected in Slack"


class ClickRefused(Exception):
    """A click that changes nothing; the message says why (shown to the user)."""


def update_id(action: SlackAction, message_ts: str) -> str:
    """The Temporal update id of a click: the same for every delivery of the same button on
    the same message (a double click, Slack's retry, a replayed request), never the click's
    time, so Temporal applies it once per run."""
    return f"slack-{action.campaign_id}-{action.action}-{message_ts}-{action.trial_id}"


class Approvals:
    """Applies clicks to campaigns and shows the outcome in Slack.

    Args:
        client: The Temporal client.
        web: The Slack Web API client (posts replies and updates messages).
        users: Slack user id -> approver name.
    """

    def __init__(self, client: Client, web: AsyncWebClient, users: dict[str, str]) -> None:
        self._client = client
        self._web = web
        self._users = users

    async def on_click(self, body: dict[str, Any]) -> None:
        """One block action from Slack (already acknowledged and signature-checked)."""
        user = str(body.get("user", {}).get("id", ""))
        container = body.get("container", {})
        channel = str(body.get("channel", {}).get("id") or container.get("channel_id", ""))
        message = body.get("message", {})
        ts = str(message.get("ts") or container.get("message_ts", ""))
        try:
            action = _action_of(body)
            approver = self._users.get(user)
            if approver is None:
                raise ClickRefused(
                    f"your Slack user {user} is not mapped to an approver (REA_SLACK_USERS); "
                    "nothing changed"
                )
            outcome = await self._apply(action, approver, update_id(action, ts))
        except ClickRefused as refused:
            log.warning("refused a Slack click by %s on message %s: %s", user, ts, refused)
            await self._tell_user(channel, user, f"Refused: {refused}")
            return
        except WorkflowUpdateFailedError as err:
            reason = _cause(err)
            log.info("campaign refused %s by %s: %s", action.action, user, reason)
            await self._reply(channel, ts, f"Refused: {reason}")
            return
        except (RPCError, WorkflowQueryFailedError) as err:
            # Not found, ended, or the server is unreachable: nothing changed.
            log.warning("campaign %s did not take %s: %s", action.campaign_id, action, err)
            await self._reply(channel, ts, f"Refused: campaign {action.campaign_id}: {err}")
            return
        log.info("%s: %s", action.campaign_id, outcome)
        await self._resolve_message(channel, ts, message, outcome)

    async def _apply(self, action: SlackAction, approver: str, uid: str) -> str:
        """Ask the campaign; returns what to show. Validators' refusals raise."""
        handle = self._handle(action.campaign_id)
        match action.action:
            case "approve":
                approval = await handle.execute_update(
                    CampaignWorkflow.approve,
                    ApproveInput(approver=approver, comment="approved in Slack"),
                    id=uid,
                )
                return f"Approved by {approval.approver} ({approval.device_hours:g} device-hours)"
            case "extend_budget":
                assert action.device_hours is not None  # SlackAction's validator
                ledger = await handle.execute_update(
                    CampaignWorkflow.extend_budget,
                    ExtendBudgetInput(
                        approver=approver,
                        device_hours=action.device_hours,
                        comment="extended in Slack",
                    ),
                    id=uid,
                )
                return (
                    f"Budget extended by {action.device_hours:g} device-hours by {approver} "
                    f"(now {ledger.approved:g} approved)"
                )
            case "retry" | "skip":
                await handle.execute_update(
                    CampaignWorkflow.resolve_trial,
                    ResolveTrialInput(
                        approver=approver,
                        trial_id=action.trial_id,
                        action=action.action,
                        comment="answered in Slack",
                    ),
                    id=uid,
                )
                verb = "Retry" if action.action == "retry" else "Skip"
                return f"{verb} of {action.trial_id} by {approver}"
            case "reject":
                await self._check_may_reject(handle, approver)
                await handle.execute_update(
                    CampaignWorkflow.stop_campaign,
                    ControlInput(by=approver, reason=REJECT_REASON),
                    id=uid,
                )
                return f"Rejected by {approver}: the campaign stops"

    async def _check_may_reject(self, handle: WorkflowHandle[Any, Any], approver: str) -> None:
        """A reject is the ``stop`` update, whose validator lets operators stop too: check
        here what ``approve``'s validator would (an approver, a plan pending), from the
        campaign's own answers (its request and its status)."""
        approvers = (await self._request(handle)).approvers
        if approver not in approvers:
            raise ClickRefused(
                f"approver: {approver!r} may not reject this campaign; ask one of {approvers}"
            )
        status = await handle.query(CampaignWorkflow.status)
        if status.phase != "awaiting_approval":
            raise ClickRefused(f"no plan is pending approval (phase is {status.phase!r})")

    async def _request(self, handle: WorkflowHandle[Any, Any]) -> CampaignRequest:
        """The campaign's request: the first argument of its current run."""
        async for event in handle.fetch_history_events():
            payloads = list(event.workflow_execution_started_event_attributes.input.payloads)
            [request] = await self._client.data_converter.decode(payloads[:1], [CampaignRequest])
            return CampaignRequest.model_validate(request)
        raise ClickRefused(f"campaign {handle.id} has no history")

    def _handle(self, campaign_id: str) -> WorkflowHandle[Any, Any]:
        return self._client.get_workflow_handle_for(CampaignWorkflow.run, campaign_id)  # type: ignore[arg-type]

    async def _resolve_message(
        self, channel: str, ts: str, message: dict[str, Any], outcome: str
    ) -> None:
        """Replace the buttons with who did what, so that nobody clicks again."""
        blocks = [b for b in message.get("blocks", []) if b.get("type") != "actions"]
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": outcome}]})
        await _quietly(
            self._web.chat_update(
                channel=channel, ts=ts, text=f"{message.get('text', '')} {outcome}", blocks=blocks
            )
        )

    async def _reply(self, channel: str, ts: str, text: str) -> None:
        await _quietly(self._web.chat_postMessage(channel=channel, thread_ts=ts, text=text))

    async def _tell_user(self, channel: str, user: str, text: str) -> None:
        await _quietly(self._web.chat_postEphemeral(channel=channel, user=user, text=text))


def _action_of(body: dict[str, Any]) -> SlackAction:
    actions = body.get("actions") or [{}]
    try:
        return SlackAction.model_validate_json(actions[0].get("value", ""))
    except ValidationError as err:
        raise ClickRefused(f"the button's value is not an openrea action ({err})") from None


def _cause(err: WorkflowUpdateFailedError) -> str:
    """What the validator said (the innermost message, without its error type)."""
    cause: BaseException = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    return cause.message if isinstance(cause, FailureError) else str(cause)


async def _quietly(call: Awaitable[Any]) -> None:
    """A reply Slack does not take is logged: the campaign has already decided."""
    try:
        await call
    except (TimeoutError, SlackApiError, OSError) as err:
        log.warning("Slack did not take the reply: %s", err)


def build_app(settings: Settings, client: Client, web: AsyncWebClient | None = None) -> AsyncApp:
    """The Bolt app: signature verification, then every ``rea_*`` button to ``Approvals``."""
    web = web or slack_web_client(settings.slack_bot_token, settings.slack_api_url)
    app = AsyncApp(client=web, signing_secret=settings.slack_signing_secret)
    approvals = Approvals(client, web, settings.slack_users)

    @app.action(re.compile(f"^{ACTION_ID_PREFIX}"))
    async def on_action(ack: Callable[[], Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()  # within Slack's 3 seconds; the campaign is asked afterwards
        await approvals.on_click(body)

    return app


@web.middleware
async def _log_refusals(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if response.status == 401:
        log.warning(
            "refused a request from %s: bad signature or timestamp older than 5 minutes",
            request.remote,
        )
    return response


@asynccontextmanager
async def serving(app: AsyncApp, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` at ``host:port``/slack/events; yields the port (useful with port 0)."""
    web_app = app.web_app(path=EVENTS_PATH, port=port)
    web_app.middlewares.append(_log_refusals)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    try:
        yield bound
    finally:
        await runner.cleanup()


def missing_settings(settings: Settings) -> list[str]:
    """The settings the Slack app cannot run without, by environment variable."""
    required = {
        "REA_SLACK_BOT_TOKEN": settings.slack_bot_token,
        "REA_SLACK_SIGNING_SECRET": settings.slack_signing_secret,
    }
    return [name for name, value in required.items() if not value]


async def run_slack_app(settings: Settings, client: Client, host: str = "0.0.0.0") -> None:
    """Serve the Slack app until cancelled."""
    app = build_app(settings, client)
    async with serving(app, host, settings.slack_port) as port:
        log.info("Slack app listening on %s:%d%s", host, port, EVENTS_PATH)
        await asyncio.Event().wait()
