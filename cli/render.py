"""Progress bars and the tables of the commands outside a campaign's status: the campaign
list, one trained trial, paired seeds, insights and the runbook.

Pure functions of their inputs (campaign statuses are drawn by ``cli.render_campaign``).
``bench`` draws its bars with ``progress_display`` too.
"""

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import WorkflowExecution

import runbooks
from contracts import Insight, Metrics
from workflows.options import BEST_METRIC, DEVICE_HOURS_APPROVED, DEVICE_HOURS_SPENT, PHASE


def progress_display(console: Console, *, transient: bool = True) -> Progress:
    """Progress bars of long commands: description, bar, done of total, elapsed time.

    Args:
        console: Where the bars draw; ``progress.console.print`` writes above them.
        transient: Clear the bars when the display closes (False leaves them on screen).

    Returns:
        The display, to use as a context manager.
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


def render_campaigns(executions: Sequence[WorkflowExecution]) -> Table:
    """Campaigns with status, phase, device-hours and best metric, from search attributes."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("campaign", no_wrap=True)
    for column in ("status", "phase", "spent h", "best", "started"):
        table.add_column(column)
    for wf in executions:
        attributes = wf.typed_search_attributes
        best = attributes.get(BEST_METRIC)
        spent = attributes.get(DEVICE_HOURS_SPENT)
        approved = attributes.get(DEVICE_HOURS_APPROVED)
        table.add_row(
            wf.id,
            wf.status.name.lower() if wf.status else "?",
            attributes.get(PHASE) or "",
            f"{spent:.3g}/{approved:g}" if spent is not None and approved else "",
            f"{best:.5g}" if best is not None else "",
            f"{wf.start_time:%m-%d %H:%M}",
        )
    return table


def render_split_metrics(validation: Metrics, test: Metrics) -> Table:
    """One trained trial's metrics on validation and test (`rea train`)."""
    table = Table("split", "NE", "AUC", "log loss", "examples", box=box.SIMPLE_HEAD)
    for split, m in (("validation", validation), ("test", test)):
        table.add_row(split, f"{m.ne:.5g}", f"{m.auc:.5g}", f"{m.logloss:.5g}", str(m.examples))
    return table


def render_paired_seeds(values: dict[str, dict[int, tuple[float, float]]]) -> Table:
    """Validation and test NE of baseline and candidate, seed by seed (`rea compare`).

    Args:
        values: ``{"baseline" | "candidate": {seed: (validation NE, test NE)}}``.
    """
    table = Table("seed", "val NE base", "val NE cand", "test NE base", "test NE cand")
    table.box = box.SIMPLE_HEAD
    for seed in values["baseline"]:
        (bv, bt), (cv, ct) = values["baseline"][seed], values["candidate"][seed]
        table.add_row(str(seed), f"{bv:.5g}", f"{cv:.5g}", f"{bt:.5g}", f"{ct:.5g}")
    return table


def render_insights(found: list[Insight], task_like: str) -> Table:
    """Each change's pooled gain with its interval, pass rate and cost ratio.

    Args:
        found: The insights, as the store returns them.
        task_like: The campaign whose task weighs the evidence ("" for every task alike).
    """
    weighting = f"weighted by similarity to {task_like}'s task" if task_like else "every task alike"
    table = Table(title=f"insights ({weighting})", box=box.SIMPLE_HEAD, caption_justify="left")
    table.add_column("change")
    table.add_column("n", justify="right")
    table.add_column("gain [95% CI]", justify="right")
    table.add_column("passed", justify="right")
    table.add_column("cost", justify="right")
    for i in found:
        interval = (
            f" [{i.gain_low:+.2%}, {i.gain_high:+.2%}]"
            if i.gain_low is not None and i.gain_high is not None
            else ""
        )
        mixes = "".join(f"\n  with {x.change}: {x.excess:+.2%}" for x in i.interactions)
        table.add_row(
            f"{i.change}\n[dim]{i.family}[/]{mixes}",
            f"{i.comparisons} ({i.campaigns}c)",
            f"{i.mean_gain:+.2%}{interval}",
            f"{i.passed}/{i.comparisons}",
            f"×{i.cost_ratio:.2g}",
        )
    table.caption = (
        "gain: relative metric gain, positive is better; n: gate comparisons (campaigns); "
        "with: merged gain minus the sum of the parts"
        if found
        else "no insights yet: they come from the gates of recorded campaigns"
    )
    return table


def render_runbook(book: runbooks.Runbook) -> Table:
    """The runbook's entries in matching order: what each matches and the remedies it tries."""
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("id", "v", "matches", "remedies, in order", "max"):
        table.add_column(column)
    for entry in book.entries:
        m = entry.match
        matches = ", ".join(
            part
            for part in (
                "/".join(m.error_types),
                "/".join(m.states),
                f"signature {m.signature}" if m.signature else "",
                f"/{m.message}/" if m.message else "",
            )
            if part
        )
        remedies = ", ".join(r.kind for r in entry.remedies) or "[dim]escalate[/]"
        table.add_row(entry.id, str(entry.version), matches, remedies, str(entry.max_attempts))
    return table
