"""Warm start: does what one campaign learned make the next one, on a similar task, cheaper?

    python -m bench.warm_start [--task examples/tasks/synthetic-dense.json] [--pairs 3]
        [--scoring-seeds 3] [--out .rea/bench] [--quick]

For each of ``--pairs`` pairs of tasks (A, B):
1. ``history``: a full campaign on task A (the task file's generator, drawn with the pair's
   seed) fills a fresh insights database.
2. On task B (the same generator with another seed: the same kind of planted structure, drawn
   again), three campaigns, each through the real workflow as in ``bench.agent_vs_baselines``:
   - ``cold``: the full campaign with an empty database (the reference);
   - ``cold-small``: a campaign with half the budget (``SMALL``) and an empty database: the
     control;
   - ``warm-small``: the same half-budget campaign with the database ``history`` filled.
3. Every choice (a launch proposal's change, or the baseline when there is none) is scored
   against the baseline on the TEST split on fresh scoring seeds, paired by seed.

The question of the issue: does ``warm-small`` reach ``cold``'s final test gain with at most
half of ``cold``'s compute? ``cold-small`` tells whether the cut campaign gets there without
the history (then the database is not what helps). Prints each campaign's plan (which
hypotheses, from which source), compute, choice and test gain with its 95% interval, and the
verdict; writes the numbers to ``OUT/warm_start.json``.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from bench.campaign import openrea_choice, run_campaign
from bench.records import Bench
from bench.scoring import SCORING_SEED0, interval, score
from bench.tasks import Task, quick_task
from contracts import CampaignRequest, CampaignStatus

# The cut campaign: half the approved budget (a campaign sizes itself to its budget).
SMALL = 0.5
# Task B's generator seed is task A's plus this.
OTHER_DRAW = 101

console = Console()


@dataclass
class Run:
    name: str
    task: str
    database: str
    planned: list[str]
    sources: list[str]
    spent_device_hours: float
    choice: dict[str, Any]
    note: str
    gains: list[float]
    wall_s: float

    @property
    def gain(self) -> float:
        return sum(self.gains) / len(self.gains) if self.gains else 0.0


def other_draw(request: CampaignRequest, offset: int = OTHER_DRAW) -> CampaignRequest:
    """The same generator with another seed (a similar task, not the same one)."""
    dataset = request.dataset
    if dataset.name != "synthetic-criteo":
        raise SystemExit("--task: warm start needs a synthetic-criteo task (B is a new draw)")
    synthetic = dataset.synthetic.model_copy(update={"seed": dataset.synthetic.seed + offset})
    return request.model_copy(
        update={"dataset": dataset.model_copy(update={"synthetic": synthetic})}
    )


def campaign(bench: Bench, name: str, task: Task, database: str, seeds: Sequence[int]) -> Run:
    started = time.perf_counter()
    last: list[CampaignStatus] = []
    result, _ = asyncio.run(
        run_campaign(
            task.request, f"warm-{name}-{int(time.time())}", last.append, database_url=database
        )
    )
    status = result.status
    spec, note = openrea_choice(task.request, result)
    choice = spec.changes_from(task.request.baseline)
    plan = status.plan
    run = Run(
        name=name,
        task=task.name,
        database="warm" if name.startswith("warm") else "empty",
        planned=[h.id for h in plan.hypotheses] if plan else [],
        sources=[h.source for h in plan.hypotheses] if plan else [],
        spent_device_hours=status.ledger.spent,
        choice=choice,
        note=f"{note}; {len(status.trials)} trials",
        gains=score(bench, task, choice, seeds).gains,
        wall_s=time.perf_counter() - started,
    )
    console.print(
        f"{name}: {run.spent_device_hours:.4f} device-hours, gain {run.gain:+.3%}, {run.note}; "
        f"planned {list(zip(run.planned, run.sources, strict=True))}"
    )
    return run


def render(runs: list[Run]) -> Table:
    table = Table(title="warm start (test gain vs the baseline, paired by scoring seed)")
    for column in ("campaign", "database", "compute", "test gain [95% CI]", "choice"):
        table.add_column(column)
    for r in runs:
        ci = interval(r.gains)
        shown = f" [{ci[0]:+.2%}, {ci[1]:+.2%}]" if ci else ""
        table.add_row(
            r.name,
            r.database,
            f"{r.spent_device_hours:.4f}",
            f"{r.gain:+.2%}{shown}",
            json.dumps(r.choice)[:60] or "baseline",
        )
    return table


def verdict(runs: dict[str, Run]) -> tuple[bool, list[str]]:
    """One pair's verdict: did warm-small reach cold's test gain (within cold's interval)
    with at most half its compute?"""
    cold, warm, control = runs["cold"], runs["warm-small"], runs["cold-small"]
    share = warm.spent_device_hours / cold.spent_device_hours if cold.spent_device_hours else 0
    ci = interval(cold.gains)
    reached = warm.gain >= (ci[0] if ci else cold.gain)
    met = reached and share <= 0.5
    return met, [
        f"warm-small spent {share:.0%} of cold's compute and "
        f"{'reached' if reached else 'did not reach'} its test gain "
        f"({warm.gain:+.2%} vs {cold.gain:+.2%}"
        + (f" [{ci[0]:+.2%}, {ci[1]:+.2%}]" if ci else "")
        + ").",
        f"cold-small (the same budget, empty database) got {control.gain:+.2%} with "
        f"{control.spent_device_hours / cold.spent_device_hours:.0%} of cold's compute.",
        f"target (warm reaches cold's gain with <= 50% of its compute): "
        f"{'met' if met else 'not met'}.",
    ]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", type=Path, default=Path("examples/tasks/synthetic-dense.json"))
    parser.add_argument("--scoring-seeds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3, help="pairs of tasks (A, B)")
    parser.add_argument("--out", type=Path, default=Path(".rea/bench"))
    parser.add_argument("--quick", action="store_true", help="Tiny tasks (a smoke test).")
    args = parser.parse_args(argv)
    given = CampaignRequest.model_validate_json(args.task.read_text())
    seeds = [SCORING_SEED0 + i for i in range(args.scoring_seeds)]
    runs: list[Run] = []
    lines: list[str] = []
    met = 0
    for pair in range(args.pairs):
        a = Task(f"A{pair}", other_draw(given, 1000 * pair) if pair else given)
        b = Task(f"B{pair}", other_draw(a.request))
        if args.quick:
            a, b = quick_task(a), quick_task(b)
        half = b.request.budget.device_hours * SMALL
        small = Task(
            b.name,
            b.request.model_copy(
                update={"budget": b.request.budget.model_copy(update={"device_hours": half})}
            ),
        )
        bench = Bench()
        with tempfile.TemporaryDirectory(prefix="rea-warm-") as tmp:
            history = f"sqlite:///{tmp}/history.sqlite"
            pair_runs = [campaign(bench, f"history-{pair}", a, history, seeds)]
            pair_runs.append(campaign(bench, "cold", b, "", seeds))
            pair_runs.append(campaign(bench, "cold-small", small, "", seeds))
            pair_runs.append(campaign(bench, "warm-small", small, history, seeds))
        ok, said = verdict({r.name: r for r in pair_runs})
        met += ok
        lines += [f"pair {pair}: {line}" for line in said]
        runs += pair_runs
    lines.append(f"target met in {met} of {args.pairs} pairs")
    console.print(render(runs))
    for line in lines:
        console.print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    out = {"runs": [asdict(r) | {"gain": r.gain} for r in runs], "verdict": lines}
    (args.out / "warm_start.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
