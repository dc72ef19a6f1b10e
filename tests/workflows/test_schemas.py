"""The committed JSON Schemas describe what the server sends: live payloads (the status query,
an update's answer, the result and its proposal, as raw JSON off the wire) validate against
schema/*.json, computed fields included. Clients generate their types from these files."""

import json
from pathlib import Path
from typing import Any

import jsonschema
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.common import RawValue
from temporalio.testing import WorkflowEnvironment

from tests.factories import APPROVER
from tests.fakes import FakeActivities
from tests.workflows.drive import start, wait_for_phase

SCHEMA = Path(__file__).resolve().parents[2] / "schema"


def check(document: Any, name: str, definition: str = "") -> None:
    """``document`` validates against schema/``name``.json (or one of its ``$defs``)."""
    schema = json.loads((SCHEMA / f"{name}.json").read_text())
    if definition:
        schema = {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    jsonschema.validate(document, schema)
    if not definition:  # every property sent is described: no field missing from the schema
        assert set(document) <= set(schema["properties"]), set(document) - set(schema["properties"])


async def raw_query(handle: WorkflowHandle) -> Any:
    raw = await handle.query("status", result_type=RawValue)
    return json.loads(raw.payload.data)


async def raw_result(handle: WorkflowHandle) -> Any:
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            [payload] = event.workflow_execution_completed_event_attributes.result.payloads
            return json.loads(payload.data)
    raise AssertionError("the campaign did not complete")


async def test_live_status_update_result_and_proposal_match_the_committed_schemas(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    status = await raw_query(handle)
    check(status, "CampaignStatus")
    assert {"device_hours_spent", "device_hours_approved"} <= set(status)

    approval = await handle.execute_update("approve", {"approver": APPROVER}, result_type=RawValue)
    check(json.loads(approval.payload.data), "CampaignStatus", "Approval")

    await handle.result()
    result = await raw_result(handle)
    check(result, "CampaignResult")
    check(result["status"], "CampaignStatus")
    proposal = result["status"]["proposal"]
    assert proposal is not None
    check(proposal, "LaunchProposal")
    if proposal["verdict"] == "launch":
        assert result["best_model"] is not None and result["improvement"] is not None
    else:
        assert result["best_model"] is None and result["improvement"] is None
