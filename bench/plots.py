"""The agent benchmark's figure: best-so-far validation gain against compute, per task."""

from collections.abc import Sequence
from pathlib import Path

from bench.records import SearchRun
from bench.tasks import Task
from contracts import relative_gain


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

    colours = {
        "openrea": "#d62728",
        "openrea-evidence": "#ff9896",
        "random": "#7f7f7f",
        "tpe": "#1f77b4",
        "random-affordable": "#2ca02c",
    }
    # TPE's few start-up trials are random: at small budgets the two curves often coincide.
    styles = {
        "openrea": "-",
        "openrea-evidence": "-.",
        "random": ":",
        "tpe": "--",
        "random-affordable": (0, (1, 3)),
    }
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
