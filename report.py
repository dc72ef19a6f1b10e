"""A campaign's result as a picture: every trial's validation metric against the baseline."""

from pathlib import Path

from contracts import LOWER_IS_BETTER, CampaignStatus

PHASE_COLOURS = {
    "baseline": "#7f7f7f",
    "validation": "#1f77b4",
    "combination": "#2ca02c",
    "exploitation": "#9467bd",
    "confirmation": "#d62728",
}


def plot_campaign(status: CampaignStatus, path: Path) -> Path:
    """Write a PNG bar chart of the finished trials' validation metric (test as dots).

    Args:
        status: The campaign's status (its ``trials`` and ``metric``).
        path: Where to write the PNG.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to a file
    import matplotlib.pyplot as plt

    metric = status.metric
    trials = [t for t in status.trials if t.validation is not None]
    if not trials:
        raise ValueError(f"campaign {status.campaign_id} has no finished trial to plot yet")
    values = [getattr(t.validation, metric) for t in trials]
    tests = [getattr(t.test, metric) if t.test else None for t in trials]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(trials) + 2), 4.5))
    x = range(len(trials))
    ax.bar(x, values, color=[PHASE_COLOURS.get(t.phase, "#333") for t in trials], label=None)
    ax.scatter(
        [i for i, v in zip(x, tests, strict=True) if v is not None],
        [v for v in tests if v is not None],
        color="black",
        marker="x",
        zorder=3,
        label=f"test {metric} (reported, never selected on)",
    )
    if status.baseline_metric is not None:
        ax.axhline(
            status.baseline_metric,
            color="#d62728",
            linestyle="--",
            label=f"baseline validation {metric}",
        )
    shown = values + [v for v in tests if v is not None]
    low, high = min(shown), max(shown)
    pad = (high - low) * 0.3 or 0.01
    ax.set_ylim(low - pad, high + pad)
    ax.set_xticks(list(x), [t.trial_id for t in trials], rotation=35, ha="right", fontsize=8)
    better = "lower" if LOWER_IS_BETTER[metric] else "higher"
    ax.set_ylabel(f"validation {metric} ({better} is better)")
    best = f"best {status.best_trial_id}" if status.best_trial_id else ""
    ax.set_title(f"{status.campaign_id}: {status.phase}; {best}", fontsize=10)
    for phase, colour in PHASE_COLOURS.items():
        if any(t.phase == phase for t in trials):
            ax.bar([0], [0], color=colour, label=phase)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
