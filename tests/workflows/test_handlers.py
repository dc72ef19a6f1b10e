"""The campaign's handlers as a client in any language meets them: malformed inputs to every
update are refused as InvalidInput naming the field, malformed or unauthorised signals are
ignored with the reason in the status, pause/resume/stop answer only approvers and
operators, and no failure a client receives carries a stack trace or a server path."""

import asyncio
import threading
from typing import Any

import pytest
import temporalio.activity
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from contracts import ApproveInput, CampaignStatus, ControlInput, PreflightInput, PreflightReport
from tests.factories import APPROVER
from tests.fakes import FakeActivities
from tests.workflows.conftest import campaign_workers
from tests.workflows.drive import start, wait_for_phase
from tests.workflows.test_replay import replayer
from workflows.campaign import CampaignWorkflow
from workflows.control import KEPT_IGNORED

OPERATOR = "oncall@example.com"
SIGNALS = ("pause", "resume", "stop")

NOT_JSON = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b"{not json"))
EMPTY = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b""))

# Each update with one valid-looking input, the field a wrong type hits, and its required
# field (None: every field has a default).
UPDATES: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "approve": ({"approver": APPROVER}, "device_hours", "approver"),
    "revise_plan": ({"approver": APPROVER, "drop": []}, "drop", "approver"),
    "recheck_preflight": ({"by": APPROVER}, "by", None),
    "resolve_trial": (
        {"approver": APPROVER, "trial_id": "t", "action": "skip"},
        "action",
        "trial_id",
    ),
    "extend_budget": ({"approver": APPROVER, "device_hours": 1}, "device_hours", "approver"),
    "pause": ({"by": APPROVER}, "reason", None),
    "resume": ({"by": APPROVER}, "reason", None),
    "stop": ({"by": APPROVER}, "reason", None),
}


def malformed(update: str) -> list[tuple[str, list[Any], str]]:
    """(what, args, a word the refusal must contain) for every way to get ``update`` wrong."""
    good, typed_field, required = UPDATES[update]
    cases: list[tuple[str, list[Any], str]] = [
        ("wrong type", [good | {typed_field: {"nested": "object"}}], typed_field),
        ("unknown field", [good | {"embeding_dim": 3}], "embeding_dim"),
        ("no argument", [], "one argument"),
        ("two arguments", [good, good], "one argument"),
        ("null", [None], "valid dictionary"),
        ("not JSON", [NOT_JSON], "JSON"),
        ("empty payload", [EMPTY], "EOF"),
    ]
    if required:
        missing = {k: v for k, v in good.items() if k != required}
        cases.append(("missing field", [missing], required))
    return cases


def no_server_paths(err: ApplicationError) -> None:
    failure = err.failure
    assert failure is not None
    while True:
        assert failure.stack_trace == "", failure.stack_trace
        assert ".py" not in failure.message and "site-packages" not in failure.message
        if not failure.HasField("cause"):
            return
        failure = failure.cause


async def refused(handle: WorkflowHandle, update: str, args: list[Any]) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(update, args=args)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    no_server_paths(cause)
    return cause


async def event_types(handle: WorkflowHandle) -> list[int]:
    return [e.event_type async for e in handle.fetch_history_events()]


async def test_every_malformed_input_to_every_update_is_refused_as_invalid_input(
    time_skipping_env: WorkflowEnvironment, queue: str, workers: None
) -> None:
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    before = await handle.query(CampaignWorkflow.status)

    for update in UPDATES:
        for what, args, word in malformed(update):
            cause = await refused(handle, update, args)
            assert cause.type == "InvalidInput", (update, what, cause.type, cause.message)
            assert cause.non_retryable, (update, what)
            assert cause.message.startswith(f"{update}: "), cause.message
            assert word in cause.message, (update, what, cause.message)

    after = await handle.query(CampaignWorkflow.status)
    assert after == before  # nothing changed
    events = await event_types(handle)
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED not in events
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in events


async def test_malformed_and_unauthorised_signals_are_ignored_with_the_reason_kept(
    time_skipping_env: WorkflowEnvironment, queue: str, workers: None
) -> None:
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")

    # Every malformed input to every signal, then senders who may not steer the campaign.
    finished = {"trial_id": "t", "job_id": "j", "result": None}
    sent: list[tuple[str, list[Any], str]] = []
    for name, good in [(v, {"by": APPROVER}) for v in SIGNALS] + [("job_finished", finished)]:
        field = "by" if name != "job_finished" else "trial_id"
        model = "ControlInput" if name != "job_finished" else "JobFinishedInput"
        sent += [
            (name, [good | {field: 5}], f"{name}: invalid {model}: {field}: Input should be"),
            (name, [], f"{name}: expected one argument"),
            (name, [good, good], f"{name}: expected one argument"),
            (name, [None], "Input should be a valid dictionary"),
        ]
    # Unknown fields: the control signals' input is a spec; a job's report is a record (a
    # newer job may add fields), which ignores them.
    sent += [(v, [{"by": APPROVER, "why": "x"}], "why: Extra inputs are not") for v in SIGNALS]
    sent += [("job_finished", [{"job_id": "j"}], "trial_id: Field required")]
    sent += [(v, [{"by": "mallory"}], f"'mallory' may not {v} this campaign") for v in SIGNALS]
    sent += [("stop", [{}], "by: say who asks to stop")]
    for name, args, reason in sent:
        await handle.signal(name, args=args)
        status = await poll(
            handle,
            lambda s, r=reason: bool(s.ignored_signals) and r in s.ignored_signals[-1].reason,
        )
        assert status.ignored_signals[-1].signal == name and status.ignored_signals[-1].at
    # A payload that is not JSON never reaches a handler: the SDK drops it (the worker logs
    # why), so only the status cannot say so.
    await handle.signal("stop", args=[NOT_JSON])

    status = await handle.query(CampaignWorkflow.status)
    assert status.phase == "awaiting_approval" and not status.paused
    assert len(status.ignored_signals) == KEPT_IGNORED  # the last ones, not all
    assert [i.by for i in status.ignored_signals if "mallory" in i.reason] == ["mallory"] * 3
    events = await event_types(handle)
    assert EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED not in events

    # An approver's signal still works: older clients keep stopping campaigns.
    await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER, reason="done"))
    await wait_for_phase(handle, "stopped")
    await handle.result()
    # The ignored signals (behind their patch) replay as they ran.
    assert (await replayer().replay_workflow(await handle.fetch_history())).replay_failure is None


async def test_pause_resume_and_stop_answer_approvers_and_operators_only(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.block_until_cancelled = True
    handle = await start(time_skipping_env, queue, operators=[OPERATOR])
    await wait_for_phase(handle, "awaiting_approval")

    for update in ("pause", "stop"):
        cause = await refused(handle, update, [{"by": "mallory", "reason": "x"}])
        assert cause.type == "NotAnApprover" and OPERATOR in cause.message
    cause = await refused(handle, "resume", [{"by": OPERATOR}])
    assert cause.type == "NotPaused"

    paused = await handle.execute_update(
        CampaignWorkflow.pause_campaign, ControlInput(by=OPERATOR, reason="maintenance")
    )
    assert paused.paused and "Paused by oncall@example.com: maintenance" in paused.message
    assert (await refused(handle, "pause", [{"by": APPROVER}])).type == "AlreadyPaused"
    # An operator steers but does not approve.
    cause = await refused(handle, "approve", [{"approver": OPERATOR}])
    assert cause.type == "NotAnApprover"
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    resumed = await handle.execute_update(
        CampaignWorkflow.resume_campaign, ControlInput(by=APPROVER)
    )
    assert not resumed.paused

    stopped = await handle.execute_update(
        CampaignWorkflow.stop_campaign, ControlInput(by=OPERATOR, reason="enough")
    )
    assert stopped.stopping
    again = await handle.execute_update(CampaignWorkflow.stop_campaign, ControlInput(by=APPROVER))
    assert again.stopping  # idempotent: a second stop answers the same
    cause = await refused(handle, "pause", [{"by": APPROVER}])
    assert cause.type == "CampaignFinishing"
    result = await handle.result()
    assert result.status.phase == "stopped"
    assert result.status.stop_reason == "Stopped by oncall@example.com: enough."
    assert (await replayer().replay_workflow(await handle.fetch_history())).replay_failure is None


async def test_a_running_preflight_shows_in_status_and_holds_approval(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities
) -> None:
    may_finish = threading.Event()

    @activity.defn(name="preflight_campaign")
    def slow_preflight(inp: PreflightInput) -> PreflightReport:
        while not may_finish.wait(0.05):
            activity.heartbeat()
        return PreflightReport(items=[])

    others = [a for a in fakes.all() if activity_name(a) != "preflight_campaign"]
    fakes.all = lambda: [*others, slow_preflight]  # type: ignore[method-assign]
    async with campaign_workers(time_skipping_env, queue, fakes):
        handle = await start(time_skipping_env, queue)
        status = await poll(handle, lambda s: s.preflight_running)
        assert status.phase == "planning" and status.plan is not None
        may_finish.set()
        status = await poll(handle, lambda s: s.phase == "awaiting_approval")
        assert not status.preflight_running

        may_finish.clear()
        recheck = asyncio.create_task(handle.execute_update("recheck_preflight", {}))
        await poll(handle, lambda s: s.preflight_running)
        cause = await refused(handle, "approve", [{"approver": APPROVER}])
        assert cause.type == "PreflightRunning"
        may_finish.set()
        await recheck
        assert not (await handle.query(CampaignWorkflow.status)).preflight_running
        await handle.execute_update(CampaignWorkflow.stop_campaign, ControlInput(by=APPROVER))


def activity_name(fn: Any) -> str:
    return temporalio.activity._Definition.must_from_callable(fn).name


async def poll(handle: WorkflowHandle, done: Any) -> CampaignStatus:
    for _ in range(400):
        status = await handle.query(CampaignWorkflow.status)
        if done(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("the status never got there")
