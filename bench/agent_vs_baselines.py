"""Agent vs baselines: openrea's campaign against random search and TPE at equal compute.

    python -m bench.agent_vs_baselines [--tasks examples/tasks] [--seeds 3] [--scoring-seeds 3]
        [--methods openrea,random,tpe] [--out .rea/bench] [--skip-knobs epochs] [--quick]
        [--only TASK,...] [--resume]

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
3. ``random-affordable`` (on request: ``--methods openrea,random,tpe,random-affordable``) is
   random search as an engineer would run it on this space: a uniform draw that would cost
   more than the cost cap is drawn again nearer the baseline (as openrea's screen draws its
   points), so far more of its trials finish (37-88 per cell on the nine tasks, where plain
   random finishes 0-6 besides the baseline)
   (``bench.baselines.affordable_search``). Same budget, same scoring.

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
>= 1.25x TPE). Writes every raw number to ``OUT/agent_vs_baselines.json`` (after every task
and seed: ``--resume`` goes on from there after a crash, and adds tasks run with ``--only`` to
what the file holds) and best-so-far validation gain against compute, one panel per task, to
``OUT/agent_vs_baselines.png``.

This module runs the benchmark; its pieces live beside it in ``bench/``: ``tasks.py`` (the
task files, seeding), ``records.py`` (what a run records), ``trials.py`` (one trial in this
process), ``baselines.py`` (random search and TPE), ``campaign.py`` (openrea's campaign),
``scoring.py`` (paired scoring and summaries), ``tables.py`` and ``plots.py`` (the output).
"""

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
from rich.console import Console
from rich.progress import Progress, TaskID

from bench.baselines import affordable_search, optuna_search
from bench.campaign import openrea_search
from bench.plots import plot
from bench.records import KNOB_FIELDS, Bench, SearchRun, read_runs
from bench.scoring import SCORING_SEED0, score, summarize
from bench.tables import fmt_gain, launch_lines, render, spend_lines, targets_verdict, write_json
from bench.tasks import ROOT, Task, load_tasks, quick_task, scaled
from bench.trials import reference
from contracts import CampaignStatus

METHODS = ("openrea", "random", "tpe")
# Run on request: openrea's fixed-size protocol of the versions before (the yardstick's past),
# and a random search that draws only what can finish (``bench.baselines.affordable_search``).
OPTIONAL_METHODS = ("openrea-evidence", "random-affordable")
OPENREA = ("openrea", "openrea-evidence")
# Budget of the searchers when openrea is not run: this many baseline trials' worth.
FALLBACK_BUDGET_TRIALS = 10

console = Console()


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
    if method in OPENREA:

        def on_status(status: CampaignStatus) -> None:
            done = sum(1 for t in status.trials if t.state != "running")
            planned = status.plan.trials if status.plan else None
            total = max(planned or 0, len(status.trials)) or None
            progress.update(
                bar, description=f"{label} ({status.phase})", completed=done, total=total
            )

        return openrea_search(bench, task, seed, on_status, method)
    # Device-seconds, so that the bar shows whole numbers.
    progress.update(bar, description=f"{label} (device-s)", total=round(budget * 3600, 1))

    def on_spent(spent: float) -> None:
        progress.update(bar, completed=round(min(spent, budget) * 3600, 1))

    if method == "random-affordable":
        return affordable_search(bench, task, seed, budget, on_spent)
    return optuna_search(bench, task, method, seed, budget, on_spent)


def search_budget(
    bench: Bench, task: Task, seed: int, openrea: SearchRun | None, fixed: float | None
) -> float:
    """What the searchers may spend: openrea's spend on this task and seed, else ``fixed``,
    else ``FALLBACK_BUDGET_TRIALS`` baseline trials.

    When openrea's preflight refused the budget, the searchers get that budget: they would
    have run with it, and what they find is what the refusal gave up.
    """
    if openrea is not None and openrea.refused:
        return openrea.budget_device_hours
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
        ours = run_ if method == "openrea" or (ours is None and method in OPENREA) else ours
        runs.append(run_)
    return runs


def picked(files: list[Task], only: list[str], scale: float) -> tuple[list[Task], list[Task]]:
    """Every task scaled to ``scale``, and those ``only`` names (all when empty), picked by
    their files' names (a scaled task is named for its scale: ``ml100k@x0.1``).

    Raises:
        SystemExit: A name in ``only`` has no task file; the message lists those there.
    """
    unknown = sorted(set(only) - {t.name for t in files})
    if unknown:
        raise SystemExit(
            f"--only: no task named {', '.join(unknown)}; "
            f"the tasks are: {', '.join(t.name for t in files)}"
        )
    every = [scaled(t, scale) for t in files]
    return every, [s for t, s in zip(files, every, strict=True) if not only or t.name in only]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every method on every task and seed, scores the choices, prints and writes."""
    every, tasks = picked(load_tasks(args.tasks), args.only, args.budget_scale)
    if args.quick:
        every = tasks = [quick_task(tasks[0])]
    bench = Bench(knobs=[k for k in KNOB_FIELDS if k not in args.skip_knobs])
    settings = {
        "methods": args.methods,
        "search_seeds": list(range(args.seeds)),
        "scoring_seeds": [SCORING_SEED0 + k for k in range(args.scoring_seeds)],
        "knobs": bench.knobs,
        "quick": args.quick,
        "budget_scale": args.budget_scale,
    }
    json_path = Path(args.out) / "agent_vs_baselines.json"
    runs = resumed(json_path, settings) if args.resume else []
    # The table and the plot cover this run's tasks and those a resumed file already holds.
    shown = [t for t in every if t in tasks or any(r.task == t.name for r in runs)]
    missing = {r.task for r in runs} - {t.name for t in shown}
    if missing:
        raise SystemExit(f"--resume: {json_path} holds tasks {sorted(missing)} not in {args.tasks}")
    settings["tasks"] = [t.name for t in shown]
    settings["requests"] = {t.name: t.request.model_dump(mode="json") for t in shown}
    started = time.perf_counter()
    # Imported here for the reason bench.campaign.run_campaign gives; unlike the CLI's, these
    # bars stay on screen when the run ends.
    from cli import progress_display

    with progress_display(console, transient=False) as progress:
        overall = progress.add_task("runs", total=len(tasks) * args.seeds * len(args.methods))
        for task in tasks:
            for seed in range(args.seeds):
                cell = [r for r in runs if (r.task, r.seed) == (task.name, seed)]
                if {r.method for r in cell} >= set(args.methods):
                    progress.advance(overall, len(args.methods))  # done before --resume
                    continue
                runs = [r for r in runs if r not in cell]  # a cell half done runs again
                runs += run_seed(bench, task, seed, args, progress)
                write_json(json_path, settings, runs, {})  # what is done survives a crash
                progress.advance(overall, len(args.methods))
    summary = summarize(runs, settings["tasks"], args.methods)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # piped: 80 columns would wrap every cell
    console.print(render(summary, args.methods))
    for line in [*targets_verdict(summary, runs), *launch_lines(runs), *spend_lines(runs)]:
        console.print(line, soft_wrap=True)
    settings["wall_s"] = time.perf_counter() - started
    write_json(json_path, settings, runs, summary)
    png = plot(json_path.with_suffix(".png"), runs, shown)
    console.print(
        f"raw numbers: {json_path}\nplot: {png}\nwall time: {settings['wall_s']:.0f} s",
        soft_wrap=True,
    )
    return {"runs": runs, "summary": summary, "json": json_path, "png": png}


def resumed(path: Path, settings: dict[str, Any]) -> list[SearchRun]:
    """The runs of an earlier, interrupted run in ``path`` (none when there is no file), made
    with the same settings: a task and seed it finished is not run again."""
    if not path.exists():
        return []
    earlier, runs = read_runs(path)
    for key, value in settings.items():
        if earlier.get(key) != value:
            raise SystemExit(
                f"--resume: {path} was made with {key} {earlier.get(key)!r}, this run has "
                f"{value!r}; pass the same options, or another --out to start afresh"
            )
    return runs


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
    parser.add_argument(
        "--budget-scale",
        type=float,
        default=1.0,
        help="multiply every task's approved device-hours (e.g. 10 for the large budget)",
    )
    parser.add_argument("--only", default="", help="comma-separated task names to run")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs already in OUT (same options) and run only the task-seed cells "
        "they lack",
    )
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    known = (*METHODS, *OPTIONAL_METHODS)
    unknown = set(methods) - set(known)
    if unknown or not methods:
        parser.error(f"--methods: unknown {sorted(unknown)}; choose from {list(known)}")
    # openrea first: it sets the budget of the searchers
    order = [*OPENREA, *METHODS[1:], *(m for m in OPTIONAL_METHODS if m not in OPENREA)]
    args.methods = [m for m in order if m in methods]
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    if args.budget_scale <= 0:
        parser.error("--budget-scale: must be > 0")
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
