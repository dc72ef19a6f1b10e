"""Slack approvals end to end: the Bolt app on a loopback port, a loopback stand-in for the
Slack Web API that records what is posted, and real campaigns on the Temporal dev server
(fake training, the real notify_slack activity)."""

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.notify import NotifyActivities, blocks_for, slack_web_client
from contracts import (
    ApproveInput,
    Budget,
    CampaignResult,
    CampaignStatus,
    Comparison,
    Diagnosis,
    Escalation,
    LaunchProposal,
    Ledger,
    Notification,
    PreflightItem,
    PreflightReport,
)
from integrations.slack import build_app, serving, update_id
from settings import Settings
from tests.factories import APPROVER, campaign_request
from tests.fakes import FakeActivities
from tests.workflows.conftest import campaign_workers
from workflows.campaign import CampaignWorkflow

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0REA"
USERS = {"U01": APPROVER, "U02": "mallory"}  # mallory is mapped but approves nothing


@dataclass
class FakeSlackApi:
    """The Slack Web API as far as openrea uses it; records every call."""

    url: str = ""
    status: int = 200
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            body = await request.json()
        else:
            body = dict(await request.post())
        if self.status != 200:
            self.calls.append((method, body))
            return web.Response(status=self.status, text="upstream connect error")
        if method == "auth.test":
            self.calls.append((method, body))
            return web.json_response({"ok": True, "user_id": "UBOT", "team_id": "T1"})
        body["ts"] = f"1700000000.{len(self.calls):06d}"
        self.calls.append((method, body))
        return web.json_response({"ok": True, "channel": body.get("channel"), "ts": body["ts"]})

    def called(self, method: str, has: str = "") -> list[dict[str, Any]]:
        return [b for m, b in self.calls if m == method and has in str(b.get("text", ""))]

    async def wait_for(self, method: str, has: str = "", count: int = 1) -> list[dict[str, Any]]:
        for _ in range(400):
            if len(found := self.called(method, has)) >= count:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {method} with {has!r}; calls: {[m for m, _ in self.calls]}")


@pytest.fixture
async def slack_api() -> AsyncIterator[FakeSlackApi]:
    api = FakeSlackApi()
    app = web.Application()
    app.router.add_post("/api/{method}", api.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api.url = f"http://127.0.0.1:{port}/api/"
    yield api
    await runner.cleanup()


@dataclass
class Stack:
    env: WorkflowEnvironment
    queue: str
    api: FakeSlackApi
    fakes: FakeActivities
    app_url: str = ""
    started: list[WorkflowHandle] = field(default_factory=list)

    async def start(self, **overrides: object) -> WorkflowHandle:
        handle = await self.env.client.start_workflow(
            CampaignWorkflow.run,
            campaign_request(**overrides),
            id=f"campaign-{uuid.uuid4()}",
            task_queue=self.queue,
        )
        self.started.append(handle)
        return handle

    async def click(
        self,
        message: dict[str, Any],
        action_id: str,
        user: str = "U01",
        secret: str = SECRET,
        age_s: int = 0,
    ) -> int:
        """POST a block action as Slack does (form-encoded payload, signed headers)."""
        [button] = [e for e in buttons(message) if e["action_id"] == action_id]
        payload = {
            "type": "block_actions",
            "user": {"id": user, "team_id": "T1"},
            "team": {"id": "T1"},
            "api_app_id": "A1",
            "container": {"type": "message", "message_ts": message["ts"], "channel_id": CHANNEL},
            "channel": {"id": CHANNEL},
            "message": {"ts": message["ts"], "text": message["text"], "blocks": message["blocks"]},
            "response_url": f"{self.api.url}respond",
            "trigger_id": "1.2.3",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "rea_actions",
                    "value": button["value"],
                    "action_ts": str(time.time()),
                }
            ],
        }
        body = urlencode({"payload": json.dumps(payload)})
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.app_url, data=body, headers=signed(body, secret, age_s)) as resp,
        ):
            return resp.status


def signed(body: str, secret: str = SECRET, age_s: int = 0) -> dict[str, str]:
    """Slack's request signature: HMAC-SHA256 of ``v0:timestamp:body`` with the secret."""
    timestamp = str(int(time.time()) - age_s)
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
    }


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = message["blocks"]
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def settings_for(api: FakeSlackApi) -> Settings:
    return Settings(
        slack_bot_token="xoxb-test",
        slack_signing_secret=SECRET,
        slack_channel=CHANNEL,
        slack_api_url=api.url,
        slack_users=USERS,
    )


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, slack_api: FakeSlackApi) -> AsyncIterator[Stack]:
    # The real dev server (as `rea up` runs): it dedupes update ids as production does. (On
    # the time-skipping server, time stopped skipping for the workflow tests run after these.)
    time_skipping_env = dev_env
    settings = settings_for(slack_api)
    web_client = slack_web_client(settings.slack_bot_token, settings.slack_api_url)
    fakes = FakeActivities(slack=NotifyActivities(web_client, CHANNEL).notify_slack)
    fakes.planning_may_finish.set()
    queue = f"slack-{uuid.uuid4()}"
    stack = Stack(time_skipping_env, queue, slack_api, fakes)
    app = build_app(settings, time_skipping_env.client)
    async with (
        campaign_workers(time_skipping_env, queue, fakes),
        serving(app, "127.0.0.1", 0) as port,
    ):
        stack.app_url = f"http://127.0.0.1:{port}/slack/events"
        yield stack
    # As tests/workflows/conftest.py does: the next test's workers must not get this one's work.
    for handle in stack.started:
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test ended")


async def status_when(
    handle: WorkflowHandle, ready: Callable[[CampaignStatus], bool]
) -> CampaignStatus:
    for _ in range(400):
        status: CampaignStatus = await handle.query(CampaignWorkflow.status)
        if ready(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"never ready; last: {status.message}")


async def test_a_signed_click_approves_the_plan_as_the_mapped_approver(stack: Stack) -> None:
    handle = await stack.start()
    [plan] = await stack.api.wait_for("chat.postMessage", "plan awaits approval")
    assert plan["channel"] == CHANNEL and handle.id in plan["text"]

    assert await stack.click(plan, "rea_approve", user="U01") == 200

    status = await status_when(handle, lambda s: s.approval is not None)
    assert status.approval is not None and status.approval.approver == APPROVER
    assert status.approval.comment == "approved in Slack"
    [updated] = await stack.api.wait_for("chat.update", f"Approved by {APPROVER}")
    assert updated["ts"] != plan["ts"] or updated["channel"] == CHANNEL
    # The buttons are gone from the updated message: nobody approves twice by accident.
    assert buttons(updated) == []


async def test_a_double_click_extends_the_budget_once(stack: Stack) -> None:
    budget = Budget(device_hours=2.0, max_parallel_trials=1, max_trials=8)
    handle = await stack.start(budget=budget)
    await status_when(handle, lambda s: s.phase == "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    [exhausted] = await stack.api.wait_for("chat.postMessage", "budget exhausted")
    [extend] = buttons(exhausted)
    assert json.loads(extend["value"]) == {
        "campaign_id": handle.id,
        "action": "extend_budget",
        "device_hours": 2.0,
    }

    # Two deliveries of the same click at once (a double click, or Slack retrying).
    assert await asyncio.gather(
        stack.click(exhausted, "rea_extend_budget"), stack.click(exhausted, "rea_extend_budget")
    ) == [200, 200]

    await stack.api.wait_for("chat.update", "Budget extended by 2 device-hours", count=2)
    status: CampaignStatus = await handle.query(CampaignWorkflow.status)
    assert status.ledger.approved == 4.0
    history = await handle.fetch_history()
    accepted = [
        e.workflow_execution_update_accepted_event_attributes.accepted_request
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    extensions = [r for r in accepted if r.input.name == "extend_budget"]
    assert [r.meta.update_id for r in extensions] == [
        f"slack-{handle.id}-extend_budget-{exhausted['ts']}-"
    ]


async def test_forged_stale_and_unknown_clicks_change_nothing(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    handle = await stack.start()
    [plan] = await stack.api.wait_for("chat.postMessage", "plan awaits approval")
    before: CampaignStatus = await handle.query(CampaignWorkflow.status)

    assert await stack.click(plan, "rea_approve", secret="not-the-secret") == 401
    assert await stack.click(plan, "rea_approve", age_s=6 * 60) == 401  # past 5 minutes
    assert await stack.click(plan, "rea_approve", user="U99") == 200  # acked, then refused
    [told] = await stack.api.wait_for("chat.postEphemeral", "not mapped to an approver")
    assert told["user"] == "U99"
    # Mapped, but not one of the campaign's approvers: the workflow's validator refuses.
    assert await stack.click(plan, "rea_approve", user="U02") == 200
    [refused] = await stack.api.wait_for("chat.postMessage", "Refused: approver: 'mallory'")
    assert refused["thread_ts"] == plan["ts"]
    # A reject (the stop update, which operators may send too) is checked against the
    # request's approvers first.
    assert await stack.click(plan, "rea_reject", user="U02") == 200
    await stack.api.wait_for("chat.postEphemeral", "may not reject")

    after: CampaignStatus = await handle.query(CampaignWorkflow.status)
    assert after == before
    assert after.approval is None and after.stop_reason == ""
    assert stack.api.called("chat.update") == []
    refusals = [r.getMessage() for r in caplog.records if r.name == "openrea.slack"]
    assert sum("bad signature or timestamp" in m for m in refusals) == 2
    assert any("U99" in m and "not mapped" in m for m in refusals)

    # An approver's reject stops the campaign, saying who and why.
    assert await stack.click(plan, "rea_reject", user="U01") == 200
    status = await status_when(handle, lambda s: s.phase == "stopped")
    assert status.stop_reason == f"Stopped by {APPROVER}: plan rejected in Slack."


async def test_an_escalated_trial_is_skipped_from_slack(stack: Stack) -> None:
    stack.fakes.fail["v-wider-embeddings"] = "segmentation fault in the id hasher"
    stack.fakes.fail_type["v-wider-embeddings"] = "HasherCrash"
    handle = await stack.start()
    await status_when(handle, lambda s: s.phase == "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    [escalated] = await stack.api.wait_for("chat.postMessage", "needs an engineer")
    values = {b["action_id"]: json.loads(b["value"]) for b in buttons(escalated)}
    trial = "v-wider-embeddings~r0"
    assert values == {
        "rea_retry": {"campaign_id": handle.id, "action": "retry", "trial_id": trial},
        "rea_skip": {"campaign_id": handle.id, "action": "skip", "trial_id": trial},
    }

    assert await stack.click(escalated, "rea_skip") == 200

    status = await status_when(handle, lambda s: not s.open_escalations)
    [answered] = status.escalations
    assert answered.resolution is not None
    assert (answered.resolution.action, answered.resolution.approver) == ("skip", APPROVER)
    await stack.api.wait_for("chat.update", f"Skip of {trial} by {APPROVER}")


async def test_a_slack_outage_does_not_fail_the_campaign(stack: Stack) -> None:
    stack.api.status = 500
    handle = await stack.start(max_hypotheses=1, seeds=2, exploitation_trials=0)
    await status_when(handle, lambda s: s.phase == "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))

    result: CampaignResult = await handle.result()

    assert result.status.phase == "done" and result.status.proposal is not None
    # Both notifications (plan, proposal) were tried, each a bounded number of times.
    assert len([m for m, _ in stack.api.calls if m == "chat.postMessage"]) == 6


async def test_without_slack_the_activity_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    notify = NotifyActivities(client=None, channel="")
    result = await ActivityEnvironment().run(
        notify.notify_slack, Notification(campaign_id="c1", kind="plan_awaiting_approval")
    )
    assert not result.sent and "REA_SLACK_BOT_TOKEN" in result.skipped_because
    assert any("c1: plan_awaiting_approval not posted" in r.getMessage() for r in caplog.records)


async def test_the_activity_posts_to_the_configured_channel(slack_api: FakeSlackApi) -> None:
    web_client = slack_web_client("xoxb-test", slack_api.url)
    notify = NotifyActivities(web_client, CHANNEL, web_ui=lambda c: f"http://ui/{c}")
    result = await ActivityEnvironment().run(
        notify.notify_slack, Notification(campaign_id="c1", kind="launch_proposal")
    )
    [posted] = slack_api.called("chat.postMessage")
    assert result.sent and (result.channel, result.ts) == (CHANNEL, posted["ts"])
    assert "<http://ui/c1|Open in the Temporal Web UI>" in json.dumps(posted["blocks"])


# ---- message building (pure) ---------------------------------------------------------------


def button_values(n: Notification) -> dict[str, dict[str, Any]]:
    elements = [e for b in blocks_for(n) if b["type"] == "actions" for e in b["elements"]]
    return {e["action_id"]: json.loads(e["value"]) for e in elements}


def text_of(n: Notification) -> str:
    return json.dumps(blocks_for(n), ensure_ascii=False)


def test_the_plan_shows_hypotheses_cost_budget_preflight_and_approve_reject() -> None:
    n = Notification(
        campaign_id="c1",
        kind="plan_awaiting_approval",
        hypotheses=["wider-embeddings: embedding_dim 16 -> 32"],
        estimated_device_hours=12.5,
        budget_device_hours=100.0,
        preflight=PreflightReport(
            items=[PreflightItem(check="data", ok=False, detail="no file", fix="download it")]
        ),
    )
    assert button_values(n) == {
        "rea_approve": {"campaign_id": "c1", "action": "approve"},
        "rea_reject": {"campaign_id": "c1", "action": "reject"},
    }
    text = text_of(n)
    assert "wider-embeddings: embedding_dim 16 -> 32" in text
    assert "12.5 of 100 device-hours" in text
    assert "Preflight failures" in text and "*data*: no file (fix: download it)" in text


def test_budget_exhausted_offers_the_originally_approved_hours() -> None:
    n = Notification(
        campaign_id="c1",
        kind="budget_exhausted",
        ledger=Ledger(approved=8.0),
        extend_by_device_hours=8.0,
    )
    assert button_values(n) == {
        "rea_extend_budget": {"campaign_id": "c1", "action": "extend_budget", "device_hours": 8.0}
    }
    assert "adds 8 device-hours (the originally approved amount)" in text_of(n)


def test_an_escalation_shows_error_diagnosis_and_retry_skip() -> None:
    n = Notification(
        campaign_id="c1",
        kind="trial_escalated",
        escalation=Escalation(
            trial_id="v-x~r0",
            error_type="HasherCrash",
            error="segfault",
            diagnosis=Diagnosis(diagnosis="a crash", why_escalate="no runbook entry matches"),
        ),
    )
    assert set(button_values(n)) == {"rea_retry", "rea_skip"}
    assert button_values(n)["rea_skip"]["trial_id"] == "v-x~r0"
    text = text_of(n)
    assert "HasherCrash: segfault" in text and "no runbook entry matches" in text
    assert "• nothing" in text


def test_a_launch_proposal_is_informational_with_gain_and_interval() -> None:
    n = Notification(
        campaign_id="c1",
        kind="launch_proposal",
        proposal=LaunchProposal(
            verdict="launch",
            candidate="wider-embeddings",
            headline="Launch wider-embeddings: -1.2% NE",
            confirmation=Comparison(
                hypothesis_id="wider-embeddings", n=3, gain=0.012, gain_low=0.004, gain_high=0.02
            ),
        ),
    )
    assert button_values(n) == {}
    text = text_of(n)
    assert "Launch wider-embeddings: -1.2% NE" in text
    assert "+1.200% (interval +0.400% to +2.000%)" in text


def test_the_update_id_comes_from_the_message_and_action_not_the_time() -> None:
    from contracts import SlackAction

    action = SlackAction(campaign_id="c1", action="retry", trial_id="t1")
    assert update_id(action, "1700.01") == "slack-c1-retry-1700.01-t1"
