"""Agent vs baselines: openrea's campaign against random search and TPE at equal compute.

    python -m bench.agent_vs_baselines [--tasks examples/tasks] [--seeds 3] [--scoring-seeds 3]
        [--methods openrea,random,tpe] [--out .rea/bench] [--skip-knobs epochs] [--quick]

Every task is a ``CampaignRequest`` JSON file (``examples/tasks/``: MovieLens-100k and three
synthetic tasks with planted structure). For each task and search seed ``s``:

1. ``openrea`` runs the real campaign workflow (offline, no LLM) through an embedded dev
   server with in-process workers, as ``rea campaign start --embedded --auto-approve`` does,
   with ``baseline.seed = s * SEED_STRIDE`` (every trial seed of the campaign is offset from
   it). Its compute is what its ledger spent; its choice is its launch proposal's change, or
   the baseline itself when it proposes none (an honest "don't launch" scores 0).
2. ``random`` (Optuna ``RandomSampler(s)``) and ``tpe`` (``TPESampler(s)``, configured as
   openrea's exploitation configures it) search the same
   action space (every knob of ``DEFAULT_ACTION_SPACE``, through the same
   ``activities.search`` mapping openrea's exploitation uses), one trial at a time in this
   process, on the same trial seed, until they have spent what openrea spent on this task and
   seed; a trial still running at that point is stopped there (its time counts), so nobody
   gets more compute than openrea. Their first trial is the baseline (charged as openrea's
   baseline trials are), so "keep the baseline" is a choice open to them too. Each picks its
   best trial by validation metric.

Compute is device-hours as the ledger counts them: a trial's wall seconds x devices / 3600.
``epochs`` stays in the searched space: compute is charged by wall time, not by trial count,
so a 10-epoch trial costs the searchers ten epochs of their budget, exactly as it would cost
openrea; dropping it would hide a real cost (and a real gain on under-trained baselines).
``--skip-knobs epochs`` shows how much the searchers lose to long trials.

Scoring is the same for every method: the choice and the baseline are each trained on K fresh
scoring seeds (``SCORING_SEED0``...) that no search ever used and compared on the TEST split,
paired by seed: gain = (baseline - choice) / baseline for NE (sign flipped for AUC), averaged
over the seeds. A choice equal to the baseline scores 0 without training; a scoring run that
fails counts as knowing nothing (NE 1, AUC 0.5).

Prints per task and method the mean test gain over the search seeds with its 95% t-interval
and the mean compute, the ratios openrea/random and openrea/TPE of mean gains ("n/a" when the
denominator is <= 0), and whether the issue's targets are met (openrea >= 2x random and
>= 1.25x TPE). Writes every raw number to ``OUT/agent_vs_baselines.json`` and best-so-far
validation gain against compute, one panel per task, to ``OUT/agent_vs_baselines.png``.
"""

import argparse
import asyncio
import json
import logging
import math
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState, create_trial
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from scipy import stats

from activities import search
from activities.search import changes_from_params, search_distributions
from contracts import (
    DEFAULT_ACTION_SPACE,
    ApproveInput,
    CampaignRequest,
    CampaignResult,
    CampaignStatus,
    Metrics,
    ModelSpec,
    SearchSpace,
    best_first,
    relative_gain,
)
from contracts import direction as metric_direction
from ranking_models.errors import TrainingCancelled, TrainingError
from ranking_models.trainer import train

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("openrea", "random", "tpe")
# Trial seeds of search seed s start at s * SEED_STRIDE; scoring seeds start far above them.
SEED_STRIDE = 1000
SCORING_SEED0 = 900_001
# The targets: openrea's mean test gain over each baseline's.
TARGETS = {"random": 2.0, "tpe": 1.25}
# Every knob openrea may move: all of them build on every task (a dcn_low_rank at or above
# the cross width is refused by the trainer and told as a failed move, as it would be for
# openrea).
KNOB_FIELDS = [knob.field for knob in DEFAULT_ACTION_SPACE.knobs]
# What a model that knows nothing scores: a failed scoring run counts as this.
KNOW_NOTHING = {"ne": 1.0, "auc": 0.5}
# Budget of the searchers when openrea is not run: this many baseline trials' worth.
FALLBACK_BUDGET_TRIALS = 10
# --quick: the first task, cut to this many rows, with a small campaign.
QUICK_ROWS = 20_000
QUICK_REQUEST = {"seeds": 2, "exploitation_trials": 1}
QUICK_MAX_TRIALS = 8

console = Console()


# ---- records ---------------------------------------------------------------------------------


@dataclass
class Task:
    """One benchmark task: a campaign request, named by its file's stem."""

    name: str
    request: CampaignRequest


@dataclass
class TrialPoint:
    """One trial of a search: what it changed, what it cost, what it scored on validation.

    ``state`` is ``succeeded``, ``failed`` (invalid spec, divergence, out of memory) or
    ``cut`` (stopped when the budget ran out).
    """

    changes: dict[str, Any]
    state: str
    device_hours: float
    validation: float | None = None
    error: str = ""


@dataclass
class Score:
    """The choice against the baseline on the test split, paired by scoring seed."""

    seeds: list[int]
    baseline_test: list[float]
    choice_test: list[float | None]
    gains: list[float]

    @property
    def mean_gain(self) -> float:
        return statistics.fmean(self.gains) if self.gains else 0.0


@dataclass
class SearchRun:
    """One method on one task and search seed: its trials, its choice and its score.

    ``choice`` is the chosen change as a diff from the baseline (empty: keep the baseline).
    ``reference_validation`` is the baseline's validation metric on the search's trial seed,
    the zero of the validation curves.
    """

    task: str
    method: str
    seed: int
    budget_device_hours: float
    spent_device_hours: float
    reference_validation: float
    trials: list[TrialPoint]
    choice: dict[str, Any]
    note: str = ""
    score: Score | None = None
    wall_s: float = 0.0

    @property
    def test_gain(self) -> float:
        return self.score.mean_gain if self.score else 0.0


@dataclass
class Reference:
    """The baseline trained on a search seed: the searchers' first trial and the curves' zero."""

    validation: float
    device_hours: float


@dataclass
class Bench:
    """What the runs share: the knobs the searchers move, and caches of the baseline's
    reference runs and of scoring runs, per task."""

    knobs: list[str] = field(default_factory=lambda: list(KNOB_FIELDS))
    references: dict[tuple[str, int], Reference] = field(default_factory=dict)
    scoring: dict[tuple[str, str], list[Metrics | None]] = field(default_factory=dict)


# ---- tasks and specs -------------------------------------------------------------------------


def load_tasks(folder: Path) -> list[Task]:
    """Every ``*.json`` request in ``folder``, by file name."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise SystemExit(f"--tasks: no *.json campaign requests in {folder}")
    return [Task(f.stem, CampaignRequest.model_validate_json(f.read_text())) for f in files]


def quick_task(task: Task) -> Task:
    """A tiny version of ``task``: fewer rows, one epoch and a small campaign.

    Only fields this version of the contracts has are set, so it works before and after the
    evidence protocol's fields land.
    """
    request = task.request
    extra = {k: v for k, v in QUICK_REQUEST.items() if k in CampaignRequest.model_fields}
    request = request.model_copy(
        update={
            "dataset": request.dataset.model_copy(update={"max_rows": QUICK_ROWS}),
            "baseline": request.baseline.model_copy(update={"epochs": 1}),
            "budget": request.budget.model_copy(update={"max_trials": QUICK_MAX_TRIALS}),
            **extra,
        }
    )
    return Task(task.name, CampaignRequest.model_validate(request.model_dump()))


def seeded(request: CampaignRequest, seed: int) -> CampaignRequest:
    """``request`` with its baseline's seed moved to search seed ``seed``'s range."""
    baseline = request.baseline.model_copy(update={"seed": seed * SEED_STRIDE})
    return request.model_copy(update={"baseline": baseline})


def value_of(metrics: Metrics, metric: str) -> float:
    return float(getattr(metrics, metric))


def hours(seconds: float, devices: int) -> float:
    return seconds * devices / 3600.0


# ---- one trial, in this process --------------------------------------------------------------


def run_trial(request: CampaignRequest, changes: dict[str, Any], hours_left: float) -> TrialPoint:
    """Train the baseline with ``changes``, stopping it when ``hours_left`` runs out.

    A move that cannot be built or trained (invalid spec, divergence, out of memory) is a
    failed trial; its time counts all the same.
    """
    devices = request.devices_per_trial
    started = time.perf_counter()
    deadline = started + hours_left * 3600.0 / devices
    point = TrialPoint(changes=changes, state="succeeded", device_hours=0.0)
    try:
        model = request.baseline.with_changes(changes)
        outcome = train(model, request.dataset, should_stop=lambda: time.perf_counter() >= deadline)
        point.validation = value_of(outcome.validation, request.metric)
    except TrainingCancelled:
        point.state, point.error = "cut", "stopped when the budget ran out"
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


# ---- random search and TPE -------------------------------------------------------------------


def make_sampler(method: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler as openrea's exploitation configures it (TPE: 4 start-up trials,
    multivariate), so the comparison is of strategies, not of sampler settings."""
    return search.make_sampler("tpe" if method == "tpe" else "random", seed)


def baseline_params(
    baseline: ModelSpec, dists: dict[str, BaseDistribution]
) -> dict[str, Any] | None:
    """The baseline as Optuna parameters, or None when it lies outside the searched space.

    Widths knobs are a depth plus one width per possible layer (see ``knob_distributions``);
    layers past the baseline's depth are unused, so any value in range stands for them.
    """
    params: dict[str, Any] = {}
    for name, dist in dists.items():
        field_name, _, part = name.partition(".")
        value = getattr(baseline, field_name)
        if part == "depth":
            value = len(value)
        elif part:
            index = int(part)
            value = value[index] if index < len(value) else dist.low  # type: ignore[attr-defined]
        try:  # _contains: Optuna's own range-and-grid check, private but stable since 2.x
            inside = dist._contains(dist.to_internal_repr(value))
        except ValueError:  # a categorical value outside the choices
            inside = False
        if not inside:
            return None
        params[name] = value
    return params


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
        point = run_trial(request, changes, budget - spent)
        if point.validation is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, point.validation)
        trials.append(point)
        spent += point.device_hours
        on_spent(spent)
    best = best_trial(trials, request.metric)
    choice = request.baseline.with_changes(best.changes).changes_from(request.baseline)
    return SearchRun(
        task=task.name,
        method=method,
        seed=seed,
        budget_device_hours=budget,
        spent_device_hours=spent,
        reference_validation=ref.validation,
        trials=trials,
        choice=choice,
        note=f"{len(trials)} trials, {sum(t.state == 'failed' for t in trials)} failed, "
        f"{sum(t.state == 'cut' for t in trials)} cut at the budget",
        wall_s=time.perf_counter() - started,
    )


def best_trial(trials: Sequence[TrialPoint], metric: str) -> TrialPoint:
    """The succeeded trial with the best validation metric; the earliest wins ties."""
    scored = [t for t in trials if t.validation is not None]
    sign = best_first(metric)
    return min(scored, key=lambda t: sign * (t.validation or 0.0))


# ---- openrea: the real campaign --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_campaign(
    request: CampaignRequest,
    campaign_id: str,
    on_status: Callable[[CampaignStatus], None],
    database_url: str = "",
) -> CampaignResult:
    """The campaign as ``rea campaign start --embedded --auto-approve`` runs it.

    A fresh dev server on free ports, in-process workers and a fresh data dir per campaign,
    so that no study, result or history leaks from one run into the next, unless
    ``database_url`` names an insights database to share (what a warm start reads).
    """
    # Imported here: the CLI module pulls in the whole client side, which the searchers and
    # the smoke test's other paths do not need.
    from cli import embedded
    from settings import Settings
    from workflows.campaign import CampaignWorkflow
    from workflows.options import ORCHESTRATION_QUEUE

    with tempfile.TemporaryDirectory(prefix="rea-bench-") as data_dir:
        settings = Settings(
            data_dir=Path(data_dir),
            temporal_address=f"127.0.0.1:{free_port()}",
            ui_port=free_port(),
            database_url=database_url,
        )
        async with embedded(settings) as client:
            handle = await client.start_workflow(
                CampaignWorkflow.run,  # type: ignore[arg-type]
                request,
                id=campaign_id,
                task_queue=ORCHESTRATION_QUEUE,
            )
            status = await handle.query(CampaignWorkflow.status)
            while status.phase == "planning":
                await asyncio.sleep(0.2)
                status = await handle.query(CampaignWorkflow.status)
            if status.phase == "awaiting_approval":
                await handle.execute_update(
                    CampaignWorkflow.approve,
                    ApproveInput(approver=request.approvers[0], comment="bench.agent_vs_baselines"),
                )
            result = asyncio.ensure_future(handle.result())
            while not result.done():
                on_status(await handle.query(CampaignWorkflow.status))
                await asyncio.wait({result}, timeout=1.0)
            return result.result()


def openrea_choice(request: CampaignRequest, result: CampaignResult) -> tuple[ModelSpec, str]:
    """openrea's final choice and why: its proposal's change when the verdict is ``launch``,
    else the baseline (an honest "don't launch").

    Campaigns of the single-seed protocol have no proposal; their best model stands in.
    """
    status = result.status
    proposal = getattr(status, "proposal", None)
    if proposal is not None:
        if proposal.verdict == "launch":
            return request.baseline.with_changes(proposal.changes), f"launch {proposal.candidate}"
        return request.baseline, proposal.verdict
    if getattr(status, "protocol", "single-seed") == "evidence":
        return request.baseline, f"no proposal (phase {status.phase})"
    if result.best_model is None:
        return request.baseline, "no best model"
    return result.best_model, f"best model ({status.best_trial_id})"


def campaign_trials(status: CampaignStatus, metric: str) -> list[TrialPoint]:
    """The campaign's trials in launch order (one training slot: nearly finishing order).

    A campaign's trial is a named arm, not a move of a search, so ``changes`` holds its id,
    phase and hypotheses.
    """
    return [
        TrialPoint(
            changes={"trial_id": t.trial_id, "phase": t.phase, "hypotheses": t.hypothesis_ids},
            state=str(t.state),
            device_hours=t.device_hours,
            validation=t.metric(metric),
            error=t.error[:300],
        )
        for t in status.trials
    ]


def openrea_search(
    bench: Bench, task: Task, seed: int, on_status: Callable[[CampaignStatus], None]
) -> SearchRun:
    """The campaign on search seed ``seed``: its ledger's spend and its choice."""
    started = time.perf_counter()
    request = seeded(task.request, seed)
    campaign_id = f"bench-{task.name}-s{seed}-{int(time.time())}"
    result = asyncio.run(run_campaign(request, campaign_id, on_status))
    spec, note = openrea_choice(request, result)
    spent = result.status.ledger.spent
    return SearchRun(
        task=task.name,
        method="openrea",
        seed=seed,
        budget_device_hours=spent,
        spent_device_hours=spent,
        reference_validation=reference(bench, task, seed).validation,
        trials=campaign_trials(result.status, request.metric),
        choice=spec.changes_from(request.baseline),
        note=f"{note}; {len(result.status.trials)} trials, phase {result.status.phase}",
        wall_s=time.perf_counter() - started,
    )


# ---- scoring ---------------------------------------------------------------------------------


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


# ---- summary, table, JSON, plot --------------------------------------------------------------


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
            for other in TARGETS:
                if other in methods and ours is not None:
                    ratios[other] = ratio(ours, by_method[other]["mean_gain"])
        groups[task] = {"methods": by_method, "ratios": ratios}
    return groups


def fmt_gain(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.3f}%"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def render(summary: dict, methods: Sequence[str]) -> Table:
    table = Table(
        title="Test gain over the baseline at equal compute (mean over search seeds)",
        caption="ratio: openrea's mean gain / this method's; n/a where this method's is <= 0",
    )
    for column in ("task", "method", "seeds", "mean test gain", "95% CI", "device-h", "trials"):
        left = column in ("task", "method")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    table.add_column("ratio", justify="right")
    for task, group in summary.items():
        for method in methods:
            s = group["methods"][method]
            ci = s["ci95"]
            table.add_row(
                task,
                method,
                str(s["runs"]),
                fmt_gain(s["mean_gain"]),
                "n/a" if ci is None else f"[{fmt_gain(ci[0])}, {fmt_gain(ci[1])}]",
                "-" if s["mean_device_hours"] is None else f"{s['mean_device_hours']:.4f}",
                "-" if s["mean_trials"] is None else f"{s['mean_trials']:.1f}",
                fmt_ratio(group["ratios"][method]) if method in group["ratios"] else "",
            )
        table.add_section()
    return table


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


def targets_verdict(summary: dict, runs: Sequence[SearchRun]) -> list[str]:
    """One line per target: met, not met, or n/a (and why), with the paired difference that
    says whether the gap is beyond seed noise."""
    overall = summary["all"]
    lines = []
    for other, needed in TARGETS.items():
        if other not in overall["ratios"]:
            continue
        got = overall["ratios"][other]
        ours = overall["methods"]["openrea"]["mean_gain"]
        theirs = overall["methods"][other]["mean_gain"]
        if got is None:
            verdict = (
                f"n/a: {other}'s mean gain is {fmt_gain(theirs)} (<= 0), so no ratio; "
                f"openrea's is {fmt_gain(ours)}"
            )
        else:
            verdict = f"{'met' if got >= needed else 'NOT met'} ({got:.2f}x)"
        paired = paired_difference(runs, other)
        if paired is not None:
            mean, ci = paired
            span = "n/a" if ci is None else f"[{fmt_gain(ci[0])}, {fmt_gain(ci[1])}]"
            verdict += f"; paired difference openrea - {other}: {fmt_gain(mean)}, 95% CI {span}"
        lines.append(f"target openrea >= {needed:g}x {other}: {verdict}")
    return lines


def write_json(path: Path, settings: dict, runs: Sequence[SearchRun], summary: dict) -> None:
    payload = {
        "settings": settings,
        "runs": [{**asdict(r), "test_gain": r.test_gain} for r in runs],
        "summary": summary,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


def curve(run: SearchRun, metric: str) -> tuple[list[float], list[float]]:
    """Best-so-far validation gain over the run's reference against compute spent."""
    xs, ys, spent, best = [], [], 0.0, None
    for trial in run.trials:
        spent += trial.device_hours
        if trial.validation is not None:
            gain = relative_gain(trial.validation, run.reference_validation, metric)
            best = gain if best is None else max(best, gain)
        if best is not None:
            xs.append(spent)
            ys.append(best)
    return xs, ys


def plot(path: Path, runs: Sequence[SearchRun], tasks: Sequence[Task]) -> Path:
    """One panel per task: each run's best-so-far validation gain against device-hours."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to a file
    import matplotlib.pyplot as plt

    colours = {"openrea": "#d62728", "random": "#7f7f7f", "tpe": "#1f77b4"}
    # TPE's few start-up trials are random: at small budgets the two curves often coincide.
    styles = {"openrea": "-", "random": ":", "tpe": "--"}
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        labelled: set[str] = set()
        for run in (r for r in runs if r.task == task.name):
            xs, ys = curve(run, task.request.metric)
            ax.step(
                xs,
                [y * 100 for y in ys],
                where="post",
                color=colours[run.method],
                linestyle=styles[run.method],
                alpha=0.8,
                label=None if run.method in labelled else run.method,
            )
            labelled.add(run.method)
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_title(task.name)
        ax.set_xlabel("device-hours spent")
        ax.set_ylabel(f"best validation {task.request.metric.upper()} gain (%)")
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---- the whole benchmark ---------------------------------------------------------------------


def progress_display() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def run_method(
    bench: Bench,
    task: Task,
    method: str,
    seed: int,
    budget: float,
    progress: Progress,
    bar: TaskID,
) -> SearchRun:
    """One method on one task and seed, its bar following its trials or its spending."""
    label = f"  {task.name} s{seed} {method}"
    if method == "openrea":

        def on_status(status: CampaignStatus) -> None:
            done = sum(1 for t in status.trials if t.state != "running")
            planned = status.plan.trials if status.plan else None
            total = max(planned or 0, len(status.trials)) or None
            progress.update(
                bar, description=f"{label} ({status.phase})", completed=done, total=total
            )

        return openrea_search(bench, task, seed, on_status)
    # Device-seconds, so that the bar shows whole numbers.
    progress.update(bar, description=f"{label} (device-s)", total=round(budget * 3600, 1))
    return optuna_search(
        bench,
        task,
        method,
        seed,
        budget,
        lambda spent: progress.update(bar, completed=round(min(spent, budget) * 3600, 1)),
    )


def search_budget(
    bench: Bench, task: Task, seed: int, openrea: SearchRun | None, fixed: float | None
) -> float:
    """What the searchers may spend: openrea's spend on this task and seed, else ``fixed``,
    else ``FALLBACK_BUDGET_TRIALS`` baseline trials."""
    if openrea is not None:
        return openrea.spent_device_hours
    if fixed is not None:
        return fixed
    return FALLBACK_BUDGET_TRIALS * reference(bench, task, seed).device_hours


def run_seed(
    bench: Bench,
    task: Task,
    seed: int,
    args: argparse.Namespace,
    progress: Progress,
) -> list[SearchRun]:
    """Every method on one task and search seed, openrea first (its spend is the budget)."""
    runs: list[SearchRun] = []
    ours: SearchRun | None = None
    scoring_seeds = [SCORING_SEED0 + k for k in range(args.scoring_seeds)]
    for method in args.methods:
        budget = search_budget(bench, task, seed, ours, args.device_hours)
        label = f"  {task.name} s{seed} {method}"
        bar = progress.add_task(label, total=None)
        run_ = run_method(bench, task, method, seed, budget, progress, bar)
        progress.update(bar, description=f"{label} scoring")
        run_.score = score(bench, task, run_.choice, scoring_seeds)
        progress.remove_task(bar)
        progress.console.print(
            f"{task.name} s{seed} {method}: test gain {fmt_gain(run_.test_gain)}, "
            f"{run_.spent_device_hours:.4f} device-h, {run_.note}, "
            f"choice {run_.choice or 'baseline'}",
            soft_wrap=True,
        )
        ours = run_ if method == "openrea" else ours
        runs.append(run_)
    return runs


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every method on every task and seed, scores the choices, prints and writes."""
    tasks = load_tasks(args.tasks)
    if args.quick:
        tasks = [quick_task(tasks[0])]
    bench = Bench(knobs=[k for k in KNOB_FIELDS if k not in args.skip_knobs])
    settings = {
        "tasks": [t.name for t in tasks],
        "requests": {t.name: t.request.model_dump(mode="json") for t in tasks},
        "methods": args.methods,
        "search_seeds": list(range(args.seeds)),
        "scoring_seeds": [SCORING_SEED0 + k for k in range(args.scoring_seeds)],
        "knobs": bench.knobs,
        "quick": args.quick,
    }
    json_path = Path(args.out) / "agent_vs_baselines.json"
    runs: list[SearchRun] = []
    started = time.perf_counter()
    with progress_display() as progress:
        overall = progress.add_task("runs", total=len(tasks) * args.seeds * len(args.methods))
        for task in tasks:
            for seed in range(args.seeds):
                runs += run_seed(bench, task, seed, args, progress)
                write_json(json_path, settings, runs, {})  # what is done survives a crash
                progress.advance(overall, len(args.methods))
    summary = summarize(runs, [t.name for t in tasks], args.methods)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # piped: 80 columns would wrap every cell
    console.print(render(summary, args.methods))
    for line in targets_verdict(summary, runs):
        console.print(line, soft_wrap=True)
    settings["wall_s"] = time.perf_counter() - started
    write_json(json_path, settings, runs, summary)
    png = plot(json_path.with_suffix(".png"), runs, tasks)
    console.print(
        f"raw numbers: {json_path}\nplot: {png}\nwall time: {settings['wall_s']:.0f} s",
        soft_wrap=True,
    )
    return {"runs": runs, "summary": summary, "json": json_path, "png": png}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; fewer than 3 search seeds only with --quick."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=Path, default=ROOT / "examples" / "tasks")
    parser.add_argument("--seeds", type=int, default=None, help="search seeds (default 3)")
    parser.add_argument("--scoring-seeds", type=int, default=None, help="default 3")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, of {','.join(METHODS)}"
    )
    parser.add_argument("--out", type=Path, default=Path(".rea") / "bench")
    parser.add_argument(
        "--device-hours",
        type=float,
        default=None,
        help="the searchers' budget when openrea is not run "
        f"(default {FALLBACK_BUDGET_TRIALS} baseline trials)",
    )
    parser.add_argument(
        "--skip-knobs", default="", help="comma-separated knobs the searchers leave alone"
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        parser.error(f"--methods: unknown {sorted(unknown)}; choose from {list(METHODS)}")
    args.methods = [m for m in METHODS if m in methods]  # openrea first: it sets the budget
    args.skip_knobs = [k.strip() for k in args.skip_knobs.split(",") if k.strip()]
    unknown = set(args.skip_knobs) - set(KNOB_FIELDS)
    if unknown or len(args.skip_knobs) == len(KNOB_FIELDS):
        parser.error(f"--skip-knobs: unknown {sorted(unknown)} or none left; knobs: {KNOB_FIELDS}")
    least = 1 if args.quick else 3
    args.seeds = least if args.seeds is None else args.seeds
    args.scoring_seeds = least if args.scoring_seeds is None else args.scoring_seeds
    if args.seeds < least:
        parser.error("--seeds: at least 3 (a t-interval needs them), or pass --quick")
    if args.scoring_seeds < 1:
        parser.error("--scoring-seeds: at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point; returns the runs, the summary and the files written (for the smoke test)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Every campaign's in-process worker installs a tracer provider; from the second on,
    # OpenTelemetry warns that it keeps the first. Harmless here, and noise on every run.
    logging.getLogger("opentelemetry.trace").setLevel(logging.ERROR)
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
