"""The baselines of the agent benchmark: random search and TPE over the whole action space,
and (on request) a random search whose draws stay where they can finish.

Random and TPE go through the same ``activities.search`` mapping openrea's exploitation
uses; ``random-affordable`` draws as openrea's screen draws its whole-space points. Each runs
one trial at a time in this process until it has spent the budget it is given; its first
trial is the baseline, and each picks its best trial by validation metric.
"""

import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState, create_trial

from activities import search
from activities.agents.space import random_points
from activities.search import changes_from_params, search_distributions
from bench.records import Bench, Reference, SearchRun, TrialPoint
from bench.tasks import Task, seeded
from bench.trials import reference, run_trial
from contracts import (
    DEFAULT_ACTION_SPACE,
    ActionSpace,
    CampaignRequest,
    ModelSpec,
    SearchSpace,
    best_first,
)
from contracts import direction as metric_direction
from ranking_models.errors import BadSpecError
from ranking_models.tasks import relative_cost
from workflows.screening import COST_CAP

# Points the affordable random search draws at a time (more when a budget outlasts them).
AFFORDABLE_DRAWS = 200


def make_sampler(method: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler as openrea's exploitation configures it (TPE: 4 start-up trials,
    multivariate), so the comparison is of strategies, not of sampler settings."""
    return search.make_sampler("tpe" if method == "tpe" else "random", seed)


def baseline_params(
    baseline: ModelSpec, dists: dict[str, BaseDistribution]
) -> dict[str, Any] | None:
    """The baseline as Optuna parameters (see ``activities.search.params_of``)."""
    return search.params_of(baseline, dists)


def tell_baseline(
    study: optuna.Study,
    baseline: ModelSpec,
    dists: dict[str, BaseDistribution],
    value: float,
) -> None:
    """Tell the study the baseline's result, so the model-based sampler knows it (as openrea
    knows its baseline) whenever the baseline lies inside the searched space."""
    params = baseline_params(baseline, dists)
    if params is not None:
        study.add_trial(create_trial(params=params, distributions=dists, value=value))


def optuna_search(
    bench: Bench,
    task: Task,
    method: str,
    seed: int,
    budget: float,
    on_spent: Callable[[float], None],
) -> SearchRun:
    """Random search or TPE over the whole action space until ``budget`` device-hours are spent.

    The first trial is the baseline on the search's trial seed (the cached reference run,
    charged to this search); every later one is a move the sampler asks for.
    """
    started = time.perf_counter()
    request = seeded(task.request, seed)
    space = SearchSpace(fields=bench.knobs)
    dists = search_distributions(space)
    direction = metric_direction(request.metric)
    study = optuna.create_study(direction=direction, sampler=make_sampler(method, seed))
    ref = reference(bench, task, seed)
    tell_baseline(study, request.baseline, dists, ref.validation)
    trials = [TrialPoint({}, "succeeded", ref.device_hours, ref.validation)]
    spent = ref.device_hours
    on_spent(spent)
    while spent < budget:
        trial = study.ask(dists)
        changes = changes_from_params(space, trial.params)
        point = run_trial(request, changes, budget - spent, cost_cap(request, changes, ref))
        if point.validation is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, point.validation)
        trials.append(point)
        spent += point.device_hours
        on_spent(spent)
    return searched(request, task, method, seed, budget, ref, trials, started)


def affordable_search(
    bench: Bench,
    task: Task,
    seed: int,
    budget: float,
    on_spent: Callable[[float], None],
) -> SearchRun:
    """Random search over the whole action space that draws only what can finish: a uniform
    draw whose estimated cost (``ranking_models.tasks.relative_cost``) is over ``COST_CAP``
    baseline trials, or that does not build on the data, is drawn again from ranges narrowed
    around the baseline, as openrea's screen draws its whole-space points
    (``activities.agents.space.random_points``). Nearly all of the uniform box costs hundreds
    of baseline trials, so plain random search finishes two or three trials per budget: this
    is the random search an engineer would run instead.

    The first trial is the baseline, as for the other searchers; the draws' seed is its own
    (not the campaign's, whose screen draws from the same generator).
    """
    started = time.perf_counter()
    request = seeded(task.request, seed)
    baseline, dataset = request.baseline, request.dataset
    space = ActionSpace(knobs=[k for k in DEFAULT_ACTION_SPACE.knobs if k.field in bench.knobs])
    ref = reference(bench, task, seed)
    trials = [TrialPoint({}, "succeeded", ref.device_hours, ref.validation)]
    spent = ref.device_hours
    on_spent(spent)

    def affordable(change: dict[str, Any]) -> bool:
        try:
            return relative_cost(baseline, baseline.with_changes(change), dataset) <= COST_CAP
        except (BadSpecError, ValueError):
            return False

    drawn: list[dict[str, Any]] = []
    while spent < budget:
        if len(trials) > len(drawn):  # the same generator drawing more: the same first ones
            count = len(drawn) + AFFORDABLE_DRAWS
            drawn = random_points(baseline, count, -1 - seed, space, affordable)
            if len(drawn) < len(trials):
                break  # the space holds no more affordable points
        changes = drawn[len(trials) - 1]
        point = run_trial(request, changes, budget - spent, cost_cap(request, changes, ref))
        trials.append(point)
        spent += point.device_hours
        on_spent(spent)
    return searched(request, task, "random-affordable", seed, budget, ref, trials, started)


def searched(
    request: CampaignRequest,
    task: Task,
    method: str,
    seed: int,
    budget: float,
    ref: Reference,
    trials: list[TrialPoint],
    started: float,
) -> SearchRun:
    """A searcher's run: its trials (the baseline first), what they cost, its best as the
    choice."""
    best = best_trial(trials, request.metric)
    return SearchRun(
        task=task.name,
        method=method,
        seed=seed,
        budget_device_hours=budget,
        spent_device_hours=sum(t.device_hours for t in trials),
        reference_validation=ref.validation,
        trials=trials,
        choice=request.baseline.with_changes(best.changes).changes_from(request.baseline),
        note=f"{len(trials)} trials, {sum(t.state == 'failed' for t in trials)} failed, "
        f"{sum(t.state == 'cut' for t in trials)} cut at the cost cap or the budget",
        wall_s=time.perf_counter() - started,
    )


def cost_cap(request: CampaignRequest, changes: dict[str, Any], ref: Reference) -> float:
    """The device-hours a searcher's trial may take: the cap openrea puts on its own search's
    trials (``COST_CAP`` times the baseline's cost scaled by the epochs), so that both stop
    a runaway point the same way."""
    try:
        epochs = request.baseline.with_changes(changes).epochs
    except ValueError:
        epochs = request.baseline.epochs
    return COST_CAP * ref.device_hours * epochs / max(request.baseline.epochs, 1)


def best_trial(trials: Sequence[TrialPoint], metric: str) -> TrialPoint:
    """The succeeded trial with the best validation metric; the earliest wins ties."""
    scored = [t for t in trials if t.validation is not None]
    sign = best_first(metric)
    return min(scored, key=lambda t: sign * (t.validation or 0.0))
