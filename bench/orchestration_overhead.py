"""Orchestration overhead: from one trial's end to the next trial's start, tuned vs default server.

    python -m bench.orchestration_overhead [--trials 60] [--trial-seconds 0.2]

Runs the real CampaignWorkflow and the real orchestration worker (planning is replaced by a
plan of N hypotheses, training by an activity that sleeps) against two dev servers side by
side: the tuned one `rea up` starts and one with Temporal's default dynamic config. Trials
run one at a time, so every gap between one trial's end and the next one's start is pure
orchestration: the completion travels to the workflow, which records the trial and launches
the next. Prints p50/p99 gaps and the overhead as a share of a 60-second trial.
"""

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio import activity
from temporalio.worker import Worker

import devserver
from activities.evidence import EvidenceActivities
from activities.recovery import RecoveryActivities
from activities.results import ResultActivities
from activities.search import SearchActivities
from client import make_client
from contracts import (
    ApproveInput,
    Budget,
    CampaignRequest,
    Hypothesis,
    PreflightInput,
    PreflightReport,
    ProposalInput,
    Proposals,
    TrialResult,
    TrialSpec,
)
from runbooks import load_runbook
from settings import Settings
from store import InsightsStore
from worker import (
    WORKFLOW_RUNNER,
    ensure_search_attributes,
    notify_activities,
    orchestration_activities,
)
from workflows.campaign import CampaignWorkflow
from workflows.options import TRAINING_QUEUE

TYPICAL_TRIAL_S = 60.0
# The first gaps of a run include connection set-up and cold caches.
WARMUP_GAPS = 3


class SleepingTrainer:
    """A training activity that takes ``seconds`` and notes when each trial ran."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spans: list[tuple[float, float]] = []

    @activity.defn(name="train_trial")
    async def train_trial(self, spec: TrialSpec) -> TrialResult:
        started = time.perf_counter()
        await asyncio.sleep(self.seconds)
        self.spans.append((started, time.perf_counter()))
        return TrialResult(campaign_id=spec.campaign_id, trial_id=spec.trial_id, state="succeeded")


def proposals_of(trials: int) -> Proposals:
    """One seed change per trial after the baseline, costing nothing in the plan."""
    hypotheses = [
        Hypothesis(id=f"seed-{i}", title=f"seed {i}", changes={"seed": i}) for i in range(1, trials)
    ]
    return Proposals(source="knowledge", hypotheses=hypotheses)


async def measure(
    settings: Settings, trials: int, trial_seconds: float, tuned: bool
) -> list[float]:
    """Gaps (seconds) between consecutive trials of one campaign on a fresh dev server."""
    server = devserver.DevServer(settings, tuned=tuned)
    server.start()
    try:
        client = await make_client(settings)
        await ensure_search_attributes(client, settings.namespace)
        trainer = SleepingTrainer(trial_seconds)

        @activity.defn(name="propose_hypotheses")
        def propose_hypotheses(inp: ProposalInput) -> Proposals:
            return proposals_of(trials)

        @activity.defn(name="propose_hypotheses_llm")
        def propose_hypotheses_llm(inp: ProposalInput) -> Proposals:
            return Proposals(source="llm")

        @activity.defn(name="preflight_campaign")
        def preflight_campaign(inp: PreflightInput) -> PreflightReport:
            return PreflightReport()  # measured here: launches, not the checklist

        recovery = RecoveryActivities(load_runbook(), None)
        results = ResultActivities(InsightsStore(settings.database))
        # The gate and the search run once max_trials is reached (on no metrics: untested).
        evidence = EvidenceActivities()
        search = SearchActivities(settings.search_storage_url)
        notify = notify_activities(settings)  # no Slack token here: notifications only log
        queue = f"bench-{uuid.uuid4()}"
        async with (
            Worker(
                client,
                task_queue=queue,
                workflows=[CampaignWorkflow],
                activities=orchestration_activities(
                    [propose_hypotheses, propose_hypotheses_llm, preflight_campaign],
                    results,
                    recovery,
                    evidence,
                    search,
                    notify,
                ),
                activity_executor=ThreadPoolExecutor(4),
                workflow_runner=WORKFLOW_RUNNER,
            ),
            Worker(client, task_queue=TRAINING_QUEUE, activities=[trainer.train_trial]),
        ):
            request = CampaignRequest(
                budget=Budget(device_hours=1.0, max_parallel_trials=1, max_trials=trials),
                approvers=["bench"],
                max_hypotheses=trials - 1,
                # A fixed number of trials: the fixed-size protocol (a screen sizes to a budget).
                protocol="evidence",
            )
            handle = await client.start_workflow(
                CampaignWorkflow.run, request, id=f"bench-{uuid.uuid4()}", task_queue=queue
            )
            while (await handle.query(CampaignWorkflow.status)).phase != "awaiting_approval":
                await asyncio.sleep(0.05)
            await handle.execute_update(CampaignWorkflow.approve, ApproveInput(approver="bench"))
            await handle.result()
    finally:
        server.stop()
    spans = sorted(trainer.spans)
    gaps = [start - end for (_, end), (start, _) in itertools.pairwise(spans)]
    return gaps[WARMUP_GAPS:]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--trial-seconds", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=2, help="Alternating runs per server.")
    args = parser.parse_args(argv)
    gaps: dict[str, list[float]] = {"tuned": [], "default": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Alternate the two servers so that drift in machine load hits both alike.
        for round_ in range(args.rounds):
            for name in ("tuned", "default"):
                settings = Settings(
                    temporal_address=f"127.0.0.1:{devserver.free_port()}",
                    ui_port=devserver.free_port(),
                    data_dir=Path(tmp) / f"{name}-{round_}",
                )
                gaps[name] += await measure(
                    settings, args.trials, args.trial_seconds, name == "tuned"
                )
    figures: dict[str, float] = {}
    for name, values in gaps.items():
        figures[f"{name}_p50_ms"] = percentile(values, 50) * 1000
        figures[f"{name}_p99_ms"] = percentile(values, 99) * 1000
        figures[f"{name}_share_of_60s"] = percentile(values, 50) / TYPICAL_TRIAL_S
    print(f"{'server':<10}{'p50 gap':>12}{'p99 gap':>12}{'share of a 60 s trial':>24}")
    for name in ("tuned", "default"):
        print(
            f"{name:<10}{figures[f'{name}_p50_ms']:>10.1f}ms{figures[f'{name}_p99_ms']:>10.1f}ms"
            f"{figures[f'{name}_share_of_60s']:>23.4%}"
        )
    figures["default_over_tuned_p50"] = figures["default_p50_ms"] / figures["tuned_p50_ms"]
    print(
        f"default / tuned p50: {figures['default_over_tuned_p50']:.2f}x   "
        "(targets on the tuned server: p50 <= 50 ms, p99 <= 100 ms, share <= 1%)"
    )
    return figures


if __name__ == "__main__":
    asyncio.run(main())
