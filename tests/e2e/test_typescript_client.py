"""A real client in another language: examples/clients/typescript (the official Temporal
TypeScript SDK, written from docs/api.md) drives campaigns on a real dev server against
openrea's campaign workflow, with fake activities in this process so that a campaign ends in
seconds. `npm ci` installs the pinned packages from the registry on the first run."""

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

import devserver
from client import client_options
from tests.fakes import FakeActivities
from tests.workflows.conftest import campaign_workers
from workflows.options import ORCHESTRATION_QUEUE, SEARCH_ATTRIBUTES
from workflows.refusals import ERRORS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None,
        reason="node and npm are not installed: the TypeScript client cannot run",
    ),
]

CLIENT = Path(__file__).resolve().parents[2] / "examples" / "clients" / "typescript"

# The rows of docs/api.md's error table this client causes and checks (type, message and
# nonRetryable, no stack trace). The others need a state a client cannot cause on its own
# (a failing or running preflight, an escalated trial, planning that fails); the Python
# workflow tests cover them.
EXERCISED = {
    "InvalidInput",
    "NotAnApprover",
    "UnknownHypothesis",
    "EmptyPlan",
    "NotApproved",
    "NotPaused",
    "NotEscalated",
    "AlreadyPaused",
    "AlreadyApproved",
    "NothingToCheck",
    "InvalidRequest",
}


def build() -> None:
    """`npm ci` (from package-lock.json) when needed, then compile with tsc."""
    lock = CLIENT / "package-lock.json"
    installed = CLIENT / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=CLIENT,
            check=True,
            capture_output=True,
            timeout=600,
        )
    subprocess.run(
        ["npm", "run", "--silent", "build"],
        cwd=CLIENT,
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
async def address() -> AsyncIterator[str]:
    """A dev server and the campaign's worker (fake activities), and the client built."""
    await asyncio.to_thread(build)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(devserver.binary("temporal")),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=devserver.dynamic_config_args(),
        **client_options(),
    )
    fakes = FakeActivities()
    fakes.planning_may_finish.set()
    try:
        async with campaign_workers(env, ORCHESTRATION_QUEUE, fakes):
            yield env.client.service_client.config.target_host
    finally:
        await env.shutdown()


async def test_the_typescript_client_drives_a_campaign_from_the_api_doc(address: str) -> None:
    env = os.environ | {"TEMPORAL_ADDRESS": address, "CAMPAIGN": f"ts-{uuid.uuid4().hex[:8]}"}
    # A thread: the worker runs on this event loop while the client waits for it.
    done = await asyncio.to_thread(
        subprocess.run,
        ["node", "dist/campaign.js"],
        cwd=CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    checks = [json.loads(line) for line in done.stdout.splitlines()]
    by_name = {c["check"]: c for c in checks}

    refused = {c["type"] for c in checks if c["check"] == "refused"}
    assert refused == EXERCISED
    assert refused <= set(ERRORS)  # every type it met is a documented one
    assert by_name["approved"]["approver"] == "alice@example.com"
    assert "by: Input should be a valid string" in by_name["ignored signal"]["reason"]
    assert by_name["listed"]["campaigns"][0].startswith(env["CAMPAIGN"])
    result = by_name["result"]
    assert result["phase"] == "done" and result["headline"]
    assert (result["verdict"] == "launch") == (result["improvement"] is not None)
    assert by_name["ended"]["error"] == "WorkflowNotFoundError"
    assert by_name["stopped"]["phase"] == "stopped"
    assert "done" in by_name
