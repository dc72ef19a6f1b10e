"""Dual-source planning in the workflow: both agents propose, the plan is revised before it
is approved, and the campaign is recorded in the insights database as it goes."""

import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from contracts import (
    ApproveInput,
    Budget,
    CampaignResult,
    ControlInput,
    Hypothesis,
    RevisePlanInput,
)
from settings import Settings
from store import InsightsStore
from tests.factories import APPROVER
from tests.fakes import FakeActivities
from tests.llm_server import Content, LlmServer
from tests.workflows.drive import start, wait_for_phase
from worker import orchestration_worker
from workflows.campaign import CampaignWorkflow

LAYER_NORM = Hypothesis(
    id="llm-layer-norm",
    title="Layer norm on the dense inputs",
    source="llm",
    changes={"dense_norm": "layer"},
    expected_gain=0.001,
    family="normalisation",
)


async def test_the_plan_shows_both_sources_and_the_campaign_is_recorded_as_it_goes(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.llm_hypotheses = [LAYER_NORM]
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    status = await handle.query(CampaignWorkflow.status)
    assert status.planner == "dual-source" and status.plan is not None
    sources = {h.id: h.source for h in status.plan.hypotheses}
    assert sources["llm-layer-norm"] == "llm" and "knowledge" in sources.values()
    assert len(status.plan.hypotheses) == 6 and len(status.plan.held_back) == 1
    # The LLM saw what the knowledge source retrieved, and the plan was recorded at once.
    assert fakes.llm_inputs[0].campaign_id == handle.id
    assert [c.status.phase for c in fakes.campaigns] == ["planning"]

    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    result: CampaignResult = await handle.result()

    phases = [c.status.phase for c in fakes.campaigns]
    assert phases[-1] == "done" and len(phases) >= 4  # after planning, each phase, the end
    last = fakes.campaigns[-1]
    assert last.status.trials == []  # trials are recorded one by one, not with the campaign
    assert set(last.status.decisions) == set(result.status.decisions)
    compared = {c.hypothesis_id for d in last.status.decisions.values() for c in d.comparisons}
    assert compared <= set(last.arm_changes) and "v-wider-embeddings" in compared
    assert last.arm_changes["v-wider-embeddings"] == {"embedding_dim": 32}


async def test_a_failing_llm_agent_is_noted_and_the_campaign_plans_without_it(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.llm_error = "HTTP 500 from the endpoint"
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    status = await handle.query(CampaignWorkflow.status)
    assert status.plan is not None and len(fakes.llm_inputs) == 3  # Temporal's retries
    assert {h.source for h in status.plan.hypotheses} == {"knowledge"}
    assert any("the LLM agent failed" in n and "HTTP 500" in n for n in status.plan.notes)


async def test_an_approver_revises_the_plan_before_approving_it(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    fakes.llm_hypotheses = [LAYER_NORM]
    handle = await start(time_skipping_env, queue, budget=Budget(device_hours=100.0))
    await wait_for_phase(handle, "awaiting_approval")
    plan = (await handle.query(CampaignWorkflow.status)).plan
    assert plan is not None
    held = plan.held_back[0].id

    for bad, why in [
        (RevisePlanInput(approver="mallory", drop=["wider-embeddings"]), "may not approve"),
        (RevisePlanInput(approver=APPROVER, pin=["no-such-id"]), "unknown hypothesis"),
    ]:
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(CampaignWorkflow.revise_plan, bad)
        assert why in str(err.value.cause).lower()

    revised = await handle.execute_update(
        CampaignWorkflow.revise_plan,
        RevisePlanInput(
            approver=APPROVER, drop=["wider-embeddings"], pin=[held], device_hours=60.0
        ),
    )
    ids = [h.id for h in revised.hypotheses]
    assert "wider-embeddings" not in ids and ids[0] == held and revised.pinned == [held]
    status = await handle.query(CampaignWorkflow.status)
    assert status.plan == revised
    assert status.ledger.phases["validation"].estimated == pytest.approx(
        revised.phases[0].estimated_device_hours
    )

    approval = await handle.execute_update(
        CampaignWorkflow.approve, ApproveInput(approver=APPROVER)
    )
    assert approval.device_hours == 60.0  # the revised budget
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(
            CampaignWorkflow.revise_plan, RevisePlanInput(approver=APPROVER, drop=[held])
        )
    assert "only be revised before it is approved" in str(err.value.cause)
    result: CampaignResult = await handle.result()
    arms = {t.arm for t in result.status.trials}
    assert "v-wider-embeddings" not in arms and f"v-{held}" in arms


async def test_the_llm_path_end_to_end_over_http_with_the_real_planning_activities(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The real orchestration worker (knowledge agent, cost estimate, insights database) with
    the LLM agent talking HTTP to a loopback chat server: one proposal is valid, one is out
    of range; the plan carries the valid one with its provenance, the database the call."""
    reply = {
        "hypotheses": [
            {
                "id": "stronger-decay",
                "title": "Weight decay 1e-4",
                "rationale": "The over arch overfits small data.",
                "changes": {"weight_decay": 0.0001},
            },
            {
                "id": "huge-embeddings",
                "title": "Huge embeddings",
                "rationale": "More is better.",
                "changes": {"embedding_dim": 100_000},
            },
        ]
    }
    queue = f"test-{uuid.uuid4()}"
    with LlmServer(refuse={"tool": 500}) as server:
        server.script(Content(json.dumps(reply)))
        settings = Settings(
            data_dir=tmp_path,
            llm_base_url=server.base_url,
            llm_model="scripted-model",
            llm_timeout_s=30.0,
        )
        async with orchestration_worker(time_skipping_env.client, settings, task_queue=queue):
            handle = await start(time_skipping_env, queue)
            await wait_for_phase(handle, "awaiting_approval")
            status = await handle.query(CampaignWorkflow.status)
            await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER, reason="read"))
            await handle.result()
        modes = server.modes()

    assert modes == ["tool", "json_schema"]  # negotiated past the refused mode
    plan = status.plan
    assert plan is not None and status.task is not None
    llm = [h for h in [*plan.hypotheses, *plan.held_back] if h.source == "llm"]
    assert [h.changes for h in llm] == [{"weight_decay": 0.0001}]
    assert llm[0].provenance is not None and llm[0].provenance.model == "scripted-model"
    assert len(llm[0].provenance.reply_digest) == 64
    assert llm[0] in plan.hypotheses  # each source gets a place in the plan
    assert {h.source for h in plan.hypotheses} >= {"knowledge", "llm"}

    store = InsightsStore(settings.database)
    (call,) = store.llm_calls(handle.id)
    assert call.model == "scripted-model" and call.mode == "json_schema"
    assert call.prompt_tokens > 0 and len(call.accepted) == 1
    assert any("embedding_dim" in reason for reason in call.rejected)
    stored = {h["hypothesis_id"]: h for h in store.hypotheses(handle.id)}
    assert stored[llm[0].id]["source"] == "llm"
    assert stored[llm[0].id]["reply_digest"] == llm[0].provenance.reply_digest
    assert {h["source"] for h in stored.values()} >= {"knowledge", "llm"}


async def test_a_proposal_that_sets_every_tuned_knob_skips_exploitation_with_a_note(
    time_skipping_env: WorkflowEnvironment, queue: str, fakes: FakeActivities, workers: None
) -> None:
    """History may propose an earlier campaign's tuned move: nothing is left to tune."""
    tuned = {"dense_lr": 0.002, "sparse_lr": 0.05, "dropout": 0.1, "weight_decay": 1e-5}
    fakes.llm_hypotheses = [
        Hypothesis(id="llm-tuned", title="tuned", source="llm", changes=tuned, expected_gain=0.01)
    ]
    fakes.ne["v-llm-tuned"] = 0.85  # the clear leader
    handle = await start(time_skipping_env, queue)
    await wait_for_phase(handle, "awaiting_approval")
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))
    result: CampaignResult = await handle.result()

    status = result.status
    assert status.phase == "done" and not status.tuned
    assert (
        "already sets dense_lr, sparse_lr, dropout, weight_decay"
        in status.phase_notes["exploitation"]
    )
    assert status.proposal is not None and "llm-tuned" in status.proposal.candidate
