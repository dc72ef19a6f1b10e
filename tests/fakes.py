"""Activities registered under the real names, for workflow tests and recorded histories."""

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.planning import make_plan
from contracts import Plan, PlanningInput, TrialRecord, TrialResult, TrialSpec
from tests.factories import succeeded

# Validation NE by trial: two hypotheses beat the baseline (0.90), three do not.
NE = {
    "baseline": 0.90,
    "v-wider-embeddings": 0.88,
    "v-wider-over-arch": 0.89,
    "v-deeper-over-arch": 0.91,
    "v-lower-dense-lr": 0.95,
    "v-larger-batch": 0.93,
    "v-over-arch-dropout": 0.92,
    "c-wider-embeddings+wider-over-arch": 0.86,
}
HOUR = 3600.0


@dataclass
class FakeActivities:
    """Activities registered under the real names; they record what the workflow asked."""

    trial_seconds: float = HOUR
    fail: dict[str, str] = field(default_factory=dict)
    block_until_cancelled: bool = False
    planning_may_finish: threading.Event = field(default_factory=threading.Event)
    trained: list[str] = field(default_factory=list)
    recorded: list[TrialRecord] = field(default_factory=list)

    def all(self) -> list[Callable[..., object]]:
        @activity.defn(name="plan_campaign")
        def plan_campaign(inp: PlanningInput) -> Plan:
            self.planning_may_finish.wait(timeout=30)
            return make_plan(inp, estimate_seconds=lambda model, dataset: self.trial_seconds)

        @activity.defn(name="record_trial")
        def record_trial(record: TrialRecord) -> None:
            self.recorded.append(record)

        return [plan_campaign, record_trial]

    def training(self) -> list[Callable[..., object]]:
        @activity.defn(name="train_trial")
        async def train_trial(spec: TrialSpec) -> TrialResult:
            self.trained.append(spec.trial_id)
            if spec.trial_id in self.fail:
                raise ApplicationError(
                    self.fail[spec.trial_id], type="DivergenceError", non_retryable=True
                )
            if self.block_until_cancelled:
                while True:  # a long job: heartbeats until the campaign cancels it
                    activity.heartbeat()
                    await asyncio.sleep(0.1)
            return succeeded(spec, NE[spec.trial_id], device_hours=self.trial_seconds / HOUR)

        return [train_trial]
