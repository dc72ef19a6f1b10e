"""Fault injection: each failure pattern injected for real into a real campaign, and checked
from detection to what was recorded.

The dev server, the real workers (in this process) and trials as real job processes training
TorchRec models on MovieLens and on Criteo-format files. Only the plan is chosen by the test
(the knowledge agent proposes the faulty hypotheses below); everything else is production:

- out of host memory: jobs run under an address-space cap (``REA_JOB_MEMORY_LIMIT_GB``); the
  ``oom`` hypothesis's 8M-row table really fails to allocate under it;
- divergence: the ``diverge`` hypothesis's learning rates really blow the loss up;
- a killed process: the first job of the baseline's screen trial is SIGKILLed mid-run;
- a missing kernel: one job imports an ``fbgemm_gpu`` that fails to load (a host without the
  kernels); its retry, like another host, has them;
- an unmatched failure: one trial's checkpoint path is blocked by a file (no runbook entry
  knows ``FileExistsError``): it escalates while the others finish, and the engineer's retry,
  once the path is cleared, succeeds;
- a truncated data file and a missing dataset: a Criteo folder that does not exist blocks the
  plan at preflight; once it appears with a truncated day file, the checklist still fails,
  the approver overrides it, and the runbook skips the corrupt shard.

Each test prints its rows of the table (pattern injected -> detected -> remedied -> trials
lost); run with `make chaos` (about 4 minutes on 2 cores).
"""

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.agents.knowledge import KnowledgeAgent
from contracts import (
    ApproveInput,
    Budget,
    CampaignRequest,
    CampaignResult,
    CampaignStatus,
    ControlInput,
    DatasetRef,
    Hypothesis,
    ModelSpec,
    Proposals,
    ResolveTrialInput,
)
from settings import Settings
from store import InsightsStore
from tests.activities.test_jobs import imported_size_bytes
from tests.factories import APPROVER, campaign_request
from worker import build_workers
from workflows.campaign import CampaignWorkflow
from workflows.options import ORCHESTRATION_QUEUE

pytestmark = [pytest.mark.chaos, pytest.mark.fault_injection]

# Address space a job may use beyond what Python, torch and TorchRec take once imported: the
# MovieLens models need far less; the ``oom`` hypothesis's table needs more than twice that.
HEADROOM_GIB = 1.25
BIG_TABLE = {"max_table_rows": 8_000_000, "table_rows": {"item_id": 8_000_000}, "embedding_dim": 32}
FAULTY = [
    Hypothesis(id="oom", title="an 8M-row item table", changes=BIG_TABLE),
    Hypothesis(id="diverge", title="learning rates far too high",
               changes={"dense_lr": 0.3, "sparse_lr": 1.5}),
    Hypothesis(id="wider", title="embedding dim 32", changes={"embedding_dim": 32}),
    Hypothesis(id="deeper", title="a deeper over arch", changes={"over_hidden": [64, 64, 32]}),
]  # fmt: skip

# An fbgemm_gpu that fails to load in the jobs of marked trials (first attempt only: the
# retry runs "elsewhere") and hands every other process the real package.
SHADOW_FBGEMM = """
import importlib, os, sys
_job = sys.argv[1] if len(sys.argv) > 1 else ""
_marked = os.environ.get("FAULT_NO_KERNEL", "")
if _marked and _marked in _job and _job.endswith("attempt-1"):
    raise ImportError("libfbgemm_gpu.so: cannot open shared object file (injected)")
_here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
del sys.modules["fbgemm_gpu"]
sys.modules["fbgemm_gpu"] = importlib.import_module("fbgemm_gpu")
"""


@pytest.fixture
async def settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev_env: WorkflowEnvironment
) -> Settings:
    shadow = tmp_path / "shadow" / "fbgemm_gpu"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(SHADOW_FBGEMM)
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    return Settings(
        # Where finished jobs signal their campaign (else only the slow poll finds them).
        temporal_address=dev_env.client.service_client.config.target_host,
        data_dir=tmp_path / "data",
        job_memory_limit_gb=imported_size_bytes() / 2**30 + HEADROOM_GIB,
    )


@pytest.fixture
async def workers(
    dev_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    def propose(self: KnowledgeAgent, request: CampaignRequest, *args: object, **kw: object):  # type: ignore[no-untyped-def]
        return Proposals(
            source="knowledge",
            hypotheses=[
                h.model_copy(update={"source": "knowledge", "expected_gain": 0.01}) for h in FAULTY
            ],
        )

    monkeypatch.setattr(KnowledgeAgent, "propose", propose)
    async with AsyncExitStack() as stack:
        for worker in build_workers(dev_env.client, settings):
            await stack.enter_async_context(worker)
        yield


def request(**overrides: object) -> CampaignRequest:
    fields: dict[str, object] = {
        "baseline": ModelSpec(epochs=2, batch_size=256),
        "dataset": DatasetRef(max_rows=3000),
        "budget": Budget(device_hours=2.0, max_parallel_trials=2),
        "execution": "local-process",
        "seeds": 2,
        "exploitation_trials": 0,
        "max_hypotheses": 4,
    }
    fields.update(overrides)
    return campaign_request(**fields)


async def start(env: WorkflowEnvironment, req: CampaignRequest) -> WorkflowHandle:
    return await env.client.start_workflow(
        CampaignWorkflow.run, req, id=f"faults-{uuid.uuid4()}", task_queue=ORCHESTRATION_QUEUE
    )


async def status_when(
    handle: WorkflowHandle, ready: Callable[[CampaignStatus], bool], timeout_s: float = 600
) -> CampaignStatus:
    for _ in range(int(timeout_s / 0.2)):
        status: CampaignStatus = await handle.query(CampaignWorkflow.status)
        if ready(status):
            return status
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out; last: {status.message}")


async def kill_first_job(settings: Settings, campaign_id: str, trial_id: str) -> None:
    """SIGKILL the trial's first job a second after it starts (a preempted host)."""
    pid_file = settings.data_dir / "jobs" / campaign_id / trial_id / "attempt-1" / "pid"
    while not pid_file.exists():
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    os.kill(json.loads(pid_file.read_text())["pid"], signal.SIGKILL)


def table(rows: list[tuple[str, str, str, str, str]]) -> str:
    head = ("injected", "trial", "detected", "remedies tried -> outcome", "escalated")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, rows)])


def row(status: CampaignStatus, injected: str, trial_id: str) -> tuple[str, str, str, str, str]:
    remedies = [r for r in status.remedies if r.trial_id == trial_id]
    escalations = [e for e in status.escalations if e.trial_id == trial_id]
    detected = (
        remedies[0].pattern_id
        if remedies and remedies[0].pattern_id != "engineer"
        else escalations[0].diagnosis.pattern_id or "(no entry matches)"
        if escalations
        else "-"
    )
    tried = ", ".join(f"{r.remedy.kind}:{r.state}" for r in remedies) or "-"
    escalated = "; ".join(
        f"yes, answered {e.resolution.action}" if e.resolution else "yes, open" for e in escalations
    )
    return (injected, trial_id, detected, tried, escalated or "no")


def lost(status: CampaignStatus, store: InsightsStore) -> int:
    """Trials launched that ended without a final record (in the state or the database)."""
    recorded = {r.spec.trial_id: r.result for r in store.trials(status.campaign_id)}
    return sum(1 for t in status.trials if t.state == "running" or recorded.get(t.trial_id) is None)


@pytest.mark.timeout(1200)
async def test_model_and_infrastructure_faults_are_remedied_or_escalated(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    workers: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle = await start(dev_env, request())
    campaign = handle.id
    monkeypatch.setenv("FAULT_NO_KERNEL", f"/{campaign}/v-deeper~r0/")
    blocked = settings.data_dir / "checkpoints" / campaign / "v-wider~r0"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")  # the checkpoint path is taken: FileExistsError
    status = await status_when(handle, lambda s: s.phase == "awaiting_approval")
    assert status.preflight is not None and status.preflight.passed, status.preflight
    killer = asyncio.create_task(kill_first_job(settings, campaign, "baseline~r0"))
    await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver=APPROVER))

    # The unmatched failure escalates that one trial; the rest of the screen finishes.
    stuck = "v-wider~r0"
    status = await status_when(
        handle,
        lambda s: (
            any(e.trial_id == stuck for e in s.open_escalations)
            and all(t.state != "running" for t in s.trials if t.trial_id != stuck)
            and any(r.trial_id == "baseline~r0" and r.state != "running" for r in s.remedies)
        ),
    )
    await killer
    [escalation] = status.open_escalations
    assert escalation.error_type == "FileExistsError"
    assert "no runbook entry matches FileExistsError" in escalation.diagnosis.why_escalate
    screen = {t.trial_id: t.state for t in status.trials if t.trial_id.endswith("~r0")}
    assert screen[stuck] == "failed" and screen["baseline~r0"] == "succeeded", screen
    blocked.unlink()  # the engineer clears the path, then answers
    await handle.execute_update(
        CampaignWorkflow.resolve_trial,
        ResolveTrialInput(
            approver=APPROVER, trial_id=stuck, action="retry", comment="cleared the path"
        ),
    )
    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=900)

    status = result.status
    store = InsightsStore(settings.database)
    rows = [
        row(status, "host OOM (8M-row table over the job's memory cap)", "v-oom~r0"),
        row(status, "divergence (learning rates far too high)", "v-diverge~r0"),
        row(status, "job SIGKILLed mid-run", "baseline~r0"),
        row(status, "kernel missing on the host", "v-deeper~r0"),
        row(status, "unmatched (checkpoint path blocked)", stuck),
    ]
    print(f"\n{table(rows)}\ntrials lost: {lost(status, store)} of {len(status.trials)}")
    by_trial = {(r.trial_id, r.attempt): r for r in status.remedies}
    assert by_trial[("v-oom~r0", 1)].pattern_id == "host-oom"
    assert by_trial[("v-oom~r0", 1)].remedy.kind == "fp16_embeddings"
    assert by_trial[("v-diverge~r0", 1)].pattern_id in ("loss-spike", "nan-loss", "divergence")
    assert by_trial[("baseline~r0", 1)].pattern_id == "job-lost"
    assert by_trial[("baseline~r0", 1)].state == "succeeded"
    assert by_trial[("v-deeper~r0", 1)].pattern_id == "kernel-unavailable"
    assert by_trial[("v-deeper~r0", 1)].state == "succeeded"
    assert by_trial[(stuck, 1)].pattern_id == "engineer"
    assert by_trial[(stuck, 1)].state == "succeeded"
    # Every remedy is in the insights database as the campaign saw it, with its outcome.
    stored = {(r.trial_id, r.attempt): r.state for r in store.remedies(campaign)}
    assert stored == {k: r.state for k, r in by_trial.items()}
    assert lost(status, store) == 0
    recorded = sum(r.result.device_hours for r in store.trials(campaign) if r.result)
    assert status.ledger.spent == pytest.approx(recorded)
    assert status.phase == "done"


def criteo_line(i: int) -> str:
    dense = [str(i % 17), str(i % 5), *["1"] * 11]
    cats = [format((i * 2654435761 + k) % 2**32, "08x") for k in range(26)]
    return "\t".join([str(int(i % 7 == 0 or i % 5 == 0)), *dense, *cats])


@pytest.mark.timeout(900)
async def test_a_missing_dataset_blocks_the_plan_and_a_truncated_shard_is_skipped(
    dev_env: WorkflowEnvironment, settings: Settings, workers: None
) -> None:
    folder = settings.data_dir.parent / "criteo"
    data = DatasetRef(name="criteo-tsv", path=str(folder))
    handle = await start(dev_env, request(dataset=data, max_hypotheses=1))
    status = await status_when(handle, lambda s: s.phase == "awaiting_approval")
    assert status.preflight is not None and not status.preflight.passed
    assert "does not exist" in status.preflight.summary()

    # The data arrives, one day of it truncated in the middle of a line.
    folder.mkdir()
    for day in range(3):
        lines = [criteo_line(day * 1000 + i) for i in range(1000)]
        text = "\n".join(lines) + "\n"
        if day == 1:  # the copy stopped in the middle of line 501
            text = "\n".join(lines[:500]) + "\n" + lines[500][: len(lines[500]) // 3]
        (folder / f"day_{day}").write_text(text)
    report = await handle.execute_update(CampaignWorkflow.recheck_preflight, ControlInput())
    override = "" if report.passed else "day_1 is a known bad copy; the runbook skips it"
    await handle.execute_update(
        CampaignWorkflow.approve, ApproveInput(approver=APPROVER, override_preflight=override)
    )
    result: CampaignResult = await asyncio.wait_for(handle.result(), timeout=600)

    status = result.status
    store = InsightsStore(settings.database)
    failed = [t for t in status.trials if t.state == "failed"]
    assert failed, [(t.trial_id, t.state, t.error[:80]) for t in status.trials]
    first = failed[0]
    rows = [
        ("dataset path missing", "(the plan)", "preflight: data", "approval refused", "no"),
        row(status, "truncated day file", first.trial_id),
    ]
    print(f"\n{table(rows)}\ntrials lost: {lost(status, store)} of {len(status.trials)}")
    skips = [r for r in status.remedies if r.remedy.kind == "skip_corrupt_shard"]
    assert skips and all(r.pattern_id == "corrupt-shard" for r in skips)
    assert all(r.state == "succeeded" for r in skips)
    assert lost(status, store) == 0
