"""The agent benchmark's output in words and numbers: the table, the targets' verdicts and
the raw JSON."""

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from bench.records import SearchRun
from bench.scoring import TARGETS, paired_difference


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


def targets_verdict(summary: dict, runs: Sequence[SearchRun]) -> list[str]:
    """One line per target: met, not met, or n/a (and why), with the paired difference that
    says whether the gap is beyond seed noise."""
    overall = summary["all"]
    lines = []
    for other in overall["ratios"]:
        got = overall["ratios"][other]
        needed = TARGETS.get(other)
        ours = overall["methods"]["openrea"]["mean_gain"]
        theirs = overall["methods"][other]["mean_gain"]
        if got is None:
            verdict = (
                f"n/a: {other}'s mean gain is {fmt_gain(theirs)} (<= 0), so no ratio; "
                f"openrea's is {fmt_gain(ours)}"
            )
        elif needed is None:
            verdict = f"{got:.2f}x (no target)"
        else:
            verdict = f"{'met' if got >= needed else 'NOT met'} ({got:.2f}x)"
        paired = paired_difference(runs, other)
        if paired is not None:
            mean, ci = paired
            span = "n/a" if ci is None else f"[{fmt_gain(ci[0])}, {fmt_gain(ci[1])}]"
            verdict += f"; paired difference openrea - {other}: {fmt_gain(mean)}, 95% CI {span}"
        target = f"target openrea >= {needed:g}x" if needed else "openrea against"
        lines.append(f"{target} {other}: {verdict}")
    return lines


def write_json(path: Path, settings: dict, runs: Sequence[SearchRun], summary: dict) -> None:
    payload = {
        "settings": settings,
        "runs": [{**asdict(r), "test_gain": r.test_gain} for r in runs],
        "summary": summary,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


def launch_lines(runs: Sequence[SearchRun]) -> list[str]:
    """How many of openrea's launches independent rescoring refutes (mean gain <= 0)."""
    lines = []
    for method in sorted({r.method for r in runs if r.method.startswith("openrea")}):
        launched = [r for r in runs if r.method == method and r.launched]
        refuted = [r for r in launched if r.test_gain <= 0]
        where = ", ".join(f"{r.task} s{r.seed} ({fmt_gain(r.test_gain)})" for r in refuted)
        lines.append(
            f"{method}: {len(launched)} launch(es) in {sum(r.method == method for r in runs)} "
            f"campaigns; refuted by rescoring on fresh seeds: {len(refuted)}"
            + (f" ({where})" if where else "")
        )
    return lines


def spend_lines(runs: Sequence[SearchRun]) -> list[str]:
    """Planned against spent device-hours of every openrea campaign."""
    lines = []
    for r in runs:
        if r.refused:
            lines.append(
                f"{r.method} {r.task} s{r.seed}: refused at preflight, approved "
                f"{r.budget_device_hours:.4f} device-h, spent 0 ({r.note})"
            )
            continue
        if r.planned_device_hours is None:
            continue
        ratio = r.spent_device_hours / r.planned_device_hours if r.planned_device_hours else 0
        lines.append(
            f"{r.method} {r.task} s{r.seed}: planned {r.planned_device_hours:.4f}, spent "
            f"{r.spent_device_hours:.4f} device-h ({ratio:.0%} of the plan)"
        )
    return lines
