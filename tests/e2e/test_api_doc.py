"""docs/api.md's examples, run as written: the Temporal CLI and curl against a real dev server.

Every shell block of the document marked ``# run: <name>`` is run by bash with only the
variables the document names (``TEMPORAL_ADDRESS``, ``HTTP``, ``CAMPAIGN``) set; no Python
Temporal client drives a campaign here. The worker is openrea's campaign workflow with fake
activities (tests/fakes.py), in this process, so a campaign plans in a second.
"""

import asyncio
import json
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

import devserver
from client import client_options
from tests.fakes import FakeActivities
from tests.workflows.conftest import campaign_workers
from workflows.options import ORCHESTRATION_QUEUE, SEARCH_ATTRIBUTES

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCK = re.compile(r"```sh\n# run: (\S+)\n(.*?)```", re.DOTALL)
BLOCKS = dict(BLOCK.findall(DOC.read_text()))


@dataclass
class Server:
    address: str
    http: str


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Server]:
    """A dev server with its HTTP API on, and a worker running the campaign with fakes."""
    http_port = devserver.free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(devserver.binary("temporal")),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=[*devserver.dynamic_config_args(), "--http-port", str(http_port)],
        **client_options(),
    )
    fakes = FakeActivities()
    fakes.planning_may_finish.set()
    # Trials train until stopped: an approved campaign is still running when a block stops it.
    fakes.block_until_cancelled = True
    try:
        async with campaign_workers(env, ORCHESTRATION_QUEUE, fakes):
            yield Server(
                address=env.client.service_client.config.target_host,
                http=f"http://127.0.0.1:{http_port}",
            )
    finally:
        await env.shutdown()


async def run(name: str, server: Server, campaign: str, strict: bool = True) -> str:
    """Run the document's block ``name`` with bash; its stdout.

    Args:
        strict: Run under ``set -eo pipefail`` and require exit status 0 (the happy path;
            the error examples show failing commands on purpose).
    """
    env = os.environ | {
        "PATH": f"{devserver.binary('temporal').parent}:{os.environ['PATH']}",
        "TEMPORAL_ADDRESS": server.address,
        "HTTP": server.http,
        "CAMPAIGN": campaign,
    }
    script = ("set -eo pipefail\n" if strict else "") + BLOCKS[name]
    # A thread: the worker runs on this event loop while the block waits for it.
    done = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    if strict:
        assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


async def history(server: Server, campaign: str) -> list[str]:
    """The event types of the campaign's history, read with the CLI."""
    out = await run_cli(server, "workflow", "show", "--workflow-id", campaign, "--output", "json")
    return [e["eventType"] for e in json.loads(out)["events"]]


async def run_cli(server: Server, *args: str, check: bool = True) -> str:
    """The Temporal CLI's stdout (``workflow result`` exits 1 for a failed workflow)."""
    done = await asyncio.to_thread(
        subprocess.run,
        [str(devserver.binary("temporal")), *args, "--address", server.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )
    return done.stdout


def test_every_runnable_block_is_run_by_a_test() -> None:
    run_here = {
        *(f"cli/{s}" for s in ("start", "wait-for-plan", "approve", "status", "stop")),
        *(
            f"http/{s}"
            for s in ("start", "wait-for-plan", "refused", "approve", "status", "list", "stop")
        ),
        "http/start-full-payload",
        "errors/bad-request",
        "errors/bad-update",
        "errors/bad-signal",
    }
    assert set(BLOCKS) == run_here


async def test_the_cli_examples_start_approve_query_and_stop_a_campaign(server: Server) -> None:
    campaign = f"api-cli-{uuid.uuid4().hex[:8]}"
    assert campaign in await run("cli/start", server, campaign)

    plan = (await run("cli/wait-for-plan", server, campaign)).splitlines()
    assert plan[0] == "awaiting_approval"
    assert len(plan) > 1 and all(re.match(r"[\w-]+: \S", line) for line in plan[1:]), plan

    approval = await run("cli/approve", server, campaign)
    assert "alice@example.com" in approval and "approved_at" in approval

    status = json.loads(await run("cli/status", server, campaign))
    assert status["approver"] == "alice@example.com"
    assert status["device_hours_approved"] == 100
    assert status["phase"] != "awaiting_approval"

    verdict, no_model, phase = (await run("cli/stop", server, campaign)).splitlines()[-3:]
    assert (verdict, no_model, phase) == ("no launchable improvement", "true", "stopped")


async def test_the_http_examples_start_approve_query_and_stop_a_campaign(server: Server) -> None:
    campaign = f"api-http-{uuid.uuid4().hex[:8]}"
    assert (
        await run("http/start", server, campaign)
    ).strip() == "WORKFLOW_EXECUTION_STATUS_RUNNING"
    assert (await run("http/wait-for-plan", server, campaign)).strip() == "awaiting_approval"

    # A refusal arrives with HTTP 200 (curl --fail-with-body passes), its type in the outcome.
    kind, message = (await run("http/refused", server, campaign)).splitlines()
    assert kind == "NotAnApprover" and "'mallory@example.com' may not approve" in message

    outcome = json.loads(await run("http/approve", server, campaign))
    assert outcome["success"][0]["approver"] == "alice@example.com"
    assert outcome["success"][0]["device_hours"] == 100

    status = json.loads(await run("http/status", server, campaign))
    assert status["approver"] == "alice@example.com" and status["phase"] != "awaiting_approval"

    listed, phase = (await run("http/list", server, campaign)).split()
    assert listed == campaign and phase in ("validation", "awaiting_approval"), phase

    stopping, phase, verdict = (await run("http/stop", server, campaign)).splitlines()
    assert (stopping, phase, verdict) == ("true", "stopped", "no launchable improvement")


async def test_a_malformed_request_fails_the_campaign_once_naming_each_field(
    server: Server,
) -> None:
    campaign = f"api-bad-{uuid.uuid4().hex[:8]}"
    out = await run("errors/bad-request", server, campaign, strict=False)
    assert "FAILED" in out
    message = next(line for line in out.splitlines() if "invalid CampaignRequest" in line)
    for problem in (
        "budget: Field required",
        "approvers: Field required",
        "seeds: Input should be a valid integer",
        "metrc: Extra inputs are not permitted",
    ):
        assert problem in message
    # Failed by the first workflow task, not a workflow task failing and retrying for ever.
    events = await history(server, campaign)
    assert "EVENT_TYPE_WORKFLOW_TASK_FAILED" not in events
    assert events[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_FAILED"


async def test_a_malformed_update_is_refused_and_a_malformed_signal_dropped(
    server: Server,
) -> None:
    campaign = f"api-msg-{uuid.uuid4().hex[:8]}"
    await run("cli/start", server, campaign)
    await run("cli/wait-for-plan", server, campaign)

    refused = await run("errors/bad-update", server, campaign, strict=False)
    assert "unable to update workflow" in refused
    assert "approve: invalid ApproveInput: approver: Input should be a valid string" in refused
    assert "refused" in refused.splitlines()
    events = await history(server, campaign)
    assert not [e for e in events if "UPDATE" in e]  # the refused update left no trace

    # The signal is recorded but ignored, the reason kept; the block then stops the campaign.
    phase, reason = (await run("errors/bad-signal", server, campaign)).splitlines()[-2:]
    assert phase == "awaiting_approval"
    assert reason == "stop: invalid ControlInput: by: Input should be a valid string"
    result = json.loads(
        await run_cli(server, "workflow", "result", "--workflow-id", campaign, "-o", "json")
    )
    assert result["result"]["status"]["phase"] == "stopped"  # the block cleaned up after itself
    events = await history(server, campaign)
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED" in events
    assert "EVENT_TYPE_WORKFLOW_TASK_FAILED" not in events


async def test_the_http_shorthand_turns_empty_lists_into_null_and_the_full_form_does_not(
    server: Server,
) -> None:
    # The trap docs/api.md warns of: the gateway's shorthand sends [] as null, refused.
    trapped = f"api-trap-{uuid.uuid4().hex[:8]}"
    request = {"approvers": ["alice@example.com"], "budget": {"device_hours": 1}}
    body = {
        "workflowType": {"name": "CampaignWorkflow"},
        "taskQueue": {"name": ORCHESTRATION_QUEUE},
        "input": [request | {"access": {"read": []}}],
    }
    await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "--fail-with-body", "-X", "POST", "-d", json.dumps(body),
         f"{server.http}/api/v1/namespaces/default/workflows/{trapped}"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    out = await run_cli(
        server, "workflow", "result", "--workflow-id", trapped, "-o", "json", check=False
    )
    failure = json.loads(out)["closeEvent"]["workflowExecutionFailedEventAttributes"]["failure"]
    assert "access.read: Input should be a valid list" in failure["message"]

    # The same empty lists in the full (base64) form arrive intact.
    campaign = f"api-full-{uuid.uuid4().hex[:8]}"
    status, phase, stopping = (await run("http/start-full-payload", server, campaign)).split()
    assert (status, phase, stopping) == (
        "WORKFLOW_EXECUTION_STATUS_RUNNING",
        "awaiting_approval",
        "true",
    )
