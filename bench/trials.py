"""One trial of the agent benchmark, trained in this process, and the baseline's reference
run on a search seed (cached)."""

import math
import time
from typing import Any

from pydantic import ValidationError

from bench.records import Bench, Reference, TrialPoint
from bench.tasks import Task, seeded
from contracts import CampaignRequest, Metrics
from ranking_models.errors import TrainingCancelled, TrainingError
from ranking_models.trainer import train


def value_of(metrics: Metrics, metric: str) -> float:
    return float(getattr(metrics, metric))


def hours(seconds: float, devices: int) -> float:
    return seconds * devices / 3600.0


# ---- one trial, in this process --------------------------------------------------------------


def run_trial(
    request: CampaignRequest,
    changes: dict[str, Any],
    hours_left: float,
    cap_hours: float = math.inf,
) -> TrialPoint:
    """Train the baseline with ``changes``, stopping it when ``hours_left`` runs out or it
    reaches ``cap_hours`` (a point of the whole space can cost a thousand baseline trials;
    the searchers stop it as openrea stops its own: ``cut``, no metric).

    A move that cannot be built or trained (invalid spec, divergence, out of memory) is a
    failed trial; its time counts all the same.
    """
    devices = request.devices_per_trial
    started = time.perf_counter()
    deadline = started + min(hours_left, cap_hours) * 3600.0 / devices
    point = TrialPoint(changes=changes, state="succeeded", device_hours=0.0)
    try:
        model = request.baseline.with_changes(changes)
        outcome = train(model, request.dataset, should_stop=lambda: time.perf_counter() >= deadline)
        point.validation = value_of(outcome.validation, request.metric)
    except TrainingCancelled:
        point.state, point.error = "cut", "stopped at its cost cap or when the budget ran out"
    except (ValidationError, TrainingError) as err:
        point.state, point.error = "failed", f"{type(err).__name__}: {err}"[:300]
    point.device_hours = hours(time.perf_counter() - started, devices)
    return point


def reference(bench: Bench, task: Task, seed: int) -> Reference:
    """The baseline on search seed ``seed`` (cached): validation metric and cost.

    The first training in this thread pays one-time costs (thread pools, allocator, the
    dataset's cache): up to seconds, which would be charged to the searchers' first trial.
    So the first reference of a task is trained twice and the second run kept.
    """
    key = (task.name, seed)
    if key not in bench.references:
        request = seeded(task.request, seed)
        if not any(name == task.name for name, _ in bench.references):
            run_trial(request, {}, hours_left=math.inf)  # warm-up, charged to nobody
        point = run_trial(request, {}, hours_left=math.inf)
        if point.validation is None:
            raise RuntimeError(f"{task.name}: the baseline does not train: {point.error}")
        bench.references[key] = Reference(point.validation, point.device_hours)
    return bench.references[key]
