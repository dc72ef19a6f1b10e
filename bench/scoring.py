"""Scoring the agent benchmark's choices alike: paired by seed on the test split, then
summarised per task and method with t-intervals and openrea's ratios.

The choice and the baseline are each trained on fresh scoring seeds that no search used;
gain = (baseline - choice) / baseline for NE (sign flipped for AUC), averaged over the seeds.
A scoring run that fails counts as knowing nothing (NE 1, AUC 0.5).
"""

import json
import math
import statistics
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from scipy import stats

from bench.records import Bench, Score, SearchRun
from bench.tasks import Task
from bench.trials import value_of
from contracts import Metrics, relative_gain
from ranking_models.errors import TrainingError
from ranking_models.trainer import train

SCORING_SEED0 = 900_001
# The targets: openrea's mean test gain over each baseline's.
TARGETS = {"random": 2.0, "tpe": 1.25}
# What a model that knows nothing scores: a failed scoring run counts as this.
KNOW_NOTHING = {"ne": 1.0, "auc": 0.5}


def scoring_runs(
    bench: Bench, task: Task, changes: dict[str, Any], seeds: Sequence[int]
) -> list[Metrics | None]:
    """Test metrics of the baseline with ``changes`` on each scoring seed (cached per spec)."""
    key = (task.name, json.dumps(changes, sort_keys=True))
    runs = bench.scoring.setdefault(key, [])
    for seed in seeds[len(runs) :]:
        try:
            model = task.request.baseline.with_changes(changes, {"seed": seed})
            runs.append(train(model, task.request.dataset).test)
        except (ValidationError, TrainingError):
            runs.append(None)
    return runs[: len(seeds)]


def score(bench: Bench, task: Task, choice: dict[str, Any], seeds: Sequence[int]) -> Score:
    """The choice against the baseline on the test split, paired by scoring seed."""
    metric = task.request.metric
    baseline_runs = scoring_runs(bench, task, {}, seeds)
    if any(run is None for run in baseline_runs):
        raise RuntimeError(f"{task.name}: the baseline failed on a scoring seed")
    baseline = [value_of(run, metric) for run in baseline_runs if run is not None]
    if not choice:
        return Score(list(seeds), baseline, list(baseline), [0.0] * len(seeds))
    choice_test = [
        None if run is None else value_of(run, metric)
        for run in scoring_runs(bench, task, choice, seeds)
    ]
    gains = [
        relative_gain(know_nothing(metric, b_run) if c is None else c, b, metric)
        for b, c, b_run in zip(baseline, choice_test, baseline_runs, strict=True)
    ]
    return Score(list(seeds), baseline, choice_test, gains)


def know_nothing(metric: str, baseline: Metrics | None) -> float:
    """What a model that learned nothing scores: NE 1, AUC 0.5, the base rate's log loss."""
    if metric in KNOW_NOTHING:
        return KNOW_NOTHING[metric]
    assert baseline is not None
    return baseline.logloss / baseline.ne  # NE = log loss / the base rate's entropy


def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The t-interval of the mean of ``values``; None with fewer than two."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    sem = statistics.stdev(values) / math.sqrt(len(values))
    if sem == 0.0:
        return (mean, mean)
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return (float(low), float(high))


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``; None when the denominator is <= 0 (no meaningful ratio)."""
    return numerator / denominator if denominator > 0 else None


def summarize_group(runs: Sequence[SearchRun]) -> dict[str, Any]:
    gains = [r.test_gain for r in runs]
    return {
        "runs": len(runs),
        "mean_gain": statistics.fmean(gains) if gains else None,
        "ci95": interval(gains),
        "mean_device_hours": statistics.fmean(r.spent_device_hours for r in runs) if runs else None,
        "mean_trials": statistics.fmean(len(r.trials) for r in runs) if runs else None,
    }


def summarize(runs: Sequence[SearchRun], tasks: Sequence[str], methods: Sequence[str]) -> dict:
    """Per task and overall: each method's gains and compute, and openrea's ratios."""
    groups: dict[str, Any] = {}
    for task in [*tasks, "all"]:
        of_task = [r for r in runs if task in ("all", r.task)]
        by_method = {m: summarize_group([r for r in of_task if r.method == m]) for m in methods}
        ratios = {}
        if "openrea" in methods:
            ours = by_method["openrea"]["mean_gain"]
            for other in methods:
                if other != "openrea" and ours is not None:
                    ratios[other] = ratio(ours, by_method[other]["mean_gain"])
        groups[task] = {"methods": by_method, "ratios": ratios}
    return groups


def paired_difference(
    runs: Sequence[SearchRun], other: str
) -> tuple[float, tuple[float, float] | None] | None:
    """Mean and 95% t-interval of openrea's gain minus ``other``'s, paired by task and seed."""
    gains = {(r.task, r.seed, r.method): r.test_gain for r in runs}
    diffs = [
        gains[(task, seed, "openrea")] - gains[(task, seed, other)]
        for task, seed, method in gains
        if method == "openrea" and (task, seed, other) in gains
    ]
    return (statistics.fmean(diffs), interval(diffs)) if diffs else None
