"""The diagnosis activity: runbooks first, the LLM research agent (over real HTTP) for what
no entry matches, demotion from the insights database, and entries saved while it runs."""

import json
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from activities.recovery import AGENT_PATTERN, RecoveryActivities
from contracts import FailureReport, Fp16Embeddings, RemedyAttempt, RemedyRecord
from runbooks import load_runbook
from store import InsightsStore
from tests.activities.test_llm import MemoryReplyStore, make_agent
from tests.llm_server import LlmServer, ToolCall
from tests.runbooks.test_runbooks import failure, spec

UNKNOWN = failure("HasherCrash", "segmentation fault in the id hasher")


def report(result=UNKNOWN, tried=()) -> FailureReport:  # type: ignore[no-untyped-def]
    return FailureReport(
        spec=spec(), result=result, tried=list(tried), log_tail="Traceback...\nHasherCrash"
    )


def agent_says(remedy: str, **params: object) -> str:
    fields = {"factor": 0.5, "steps": 100, "max_norm": 1.0, "dense_optimizer": ""}
    return json.dumps({"diagnosis": "the hasher overflows", "remedy": remedy, **fields, **params})


async def test_a_failure_no_entry_matches_goes_to_the_agent_whose_remedy_is_checked() -> None:
    calls = MemoryReplyStore()
    with LlmServer() as server:
        server.script(ToolCall(agent_says("halve_batch_size"), name="diagnose_failure"))
        activities = RecoveryActivities(load_runbook(), None, make_agent(server, calls))
        diagnosis = await ActivityEnvironment().run(activities.diagnose_failure, report())
        request = server.requests[0]
    assert (diagnosis.source, diagnosis.pattern_id) == ("agent", AGENT_PATTERN)
    assert diagnosis.remedy is not None and diagnosis.remedy.kind == "halve_batch_size"
    assert diagnosis.model is not None and diagnosis.model.batch_size == 256
    assert diagnosis.diagnosis == "the hasher overflows"
    # The failure went out as data; the exchange is recorded.
    assert "HasherCrash" in json.dumps(request["messages"][1])
    assert calls.calls[0].prompt_version == "llm-diagnosis/1"
    assert calls.calls[0].accepted == ["halve_batch_size"]


async def test_the_agents_remedy_is_refused_when_malformed_or_ineffective() -> None:
    with LlmServer() as server:
        server.script(
            ToolCall(agent_says("lower_lr", factor=3.0), name="diagnose_failure"),  # not lower
            ToolCall(agent_says("fp16_embeddings"), name="diagnose_failure"),
        )
        activities = RecoveryActivities(load_runbook(), None, make_agent(server))
        env = ActivityEnvironment()
        bad = await env.run(activities.diagnose_failure, report())
        already = report().model_copy(update={"spec": spec(embedding_precision="fp16")})
        no_op = await env.run(activities.diagnose_failure, already)
    assert bad.remedy is None and "the agent proposed no remedy" in bad.why_escalate
    assert no_op.remedy is None and "changes nothing" in no_op.why_escalate


async def test_the_agent_gets_one_try_per_trial() -> None:
    tried = RemedyAttempt(
        trial_id="v-x~r0",
        attempt=1,
        pattern_id=AGENT_PATTERN,
        remedy=Fp16Embeddings(),
        run_trial_id="v-x~r0~r1",
        state="failed",
    )
    with LlmServer() as server:
        activities = RecoveryActivities(load_runbook(), None, make_agent(server))
        diagnosis = await ActivityEnvironment().run(
            activities.diagnose_failure, report(tried=[tried])
        )
        assert server.requests == []
    assert diagnosis.remedy is None and "the agent's remedy failed too" in diagnosis.why_escalate


async def test_remedy_outcomes_recorded_in_the_database_demote_a_failing_remedy(
    tmp_path: Path,
) -> None:
    store = InsightsStore(f"sqlite:///{tmp_path / 'i.sqlite'}")
    activities = RecoveryActivities(load_runbook(), store)
    env = ActivityEnvironment()
    oom = report(failure("OutOfMemoryError", "out of host memory"))
    first = await env.run(activities.diagnose_failure, oom)
    assert first.remedy is not None and first.remedy.kind == "fp16_embeddings"
    for campaign in ("a", "b", "c"):
        attempt = RemedyAttempt(
            trial_id="t",
            attempt=1,
            pattern_id="host-oom",
            remedy=Fp16Embeddings(),
            run_trial_id="t~r1",
            state="failed",
            error_type="OutOfMemoryError",
        )
        env.run(activities.record_remedy, RemedyRecord(campaign_id=campaign, attempt=attempt))
    later = await env.run(activities.diagnose_failure, oom)
    assert later.remedy is not None and later.remedy.kind == "shrink_embeddings"


async def test_an_entry_saved_while_the_worker_runs_applies_to_the_next_failure(
    tmp_path: Path,
) -> None:
    mine = tmp_path / "runbooks"
    mine.mkdir()
    activities = RecoveryActivities(load_runbook(mine), None, user_dir=mine)
    env = ActivityEnvironment()
    assert (await env.run(activities.diagnose_failure, report())).source == "none"
    (mine / "hasher.yaml").write_text(
        "id: hasher\ntitle: hasher overflow\nmatch: {error_types: [HasherCrash]}\n"
        "remedies: [{kind: halve_batch_size}]\nmax_attempts: 1\n"
    )
    saved = await env.run(activities.diagnose_failure, report())
    assert saved.pattern_id == "hasher" and saved.remedy is not None
    (mine / "broken.yaml").write_text("id: Broken\n")
    kept = await env.run(activities.diagnose_failure, report())
    assert kept.pattern_id == "hasher"  # a bad edit never takes the runbook away
