"""A campaign's result as a picture: every trial's validation metric against the baseline."""

import textwrap
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


def plot_evidence(status: CampaignStatus, path: Path) -> Path:
    """Write a PNG forest plot: every gated change's gain over the baseline with its 95%
    interval, one row each, grouped by gate; the test-split confirmation last.

    Raises:
        ValueError: when no gate has decided anything yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (phase, decision.split, c)
        for phase, decision in status.decisions.items()
        for c in decision.comparisons
        if c.gain_low is not None and c.gain_high is not None
    ]
    if not rows:
        raise ValueError(f"campaign {status.campaign_id} has no gate decision to plot yet")
    fig, ax = plt.subplots(figsize=(8.0, 0.45 * len(rows) + 1.8))
    for y, (phase, _, c) in enumerate(reversed(rows)):
        colour = "#2ca02c" if c.passed else "#7f7f7f"
        low, high = c.gain_low or 0.0, c.gain_high or 0.0
        ax.plot([low * 100, high * 100], [y, y], color=colour, linewidth=2)
        ax.plot([c.gain * 100], [y], "o", color=PHASE_COLOURS.get(phase, colour))
    labels = [
        f"{phase}{' (test)' if split == 'test' else ''}: {c.hypothesis_id}"
        for phase, split, c in reversed(rows)
    ]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_xlabel(
        f"{status.metric.upper()} gain over the baseline, % (95% interval; green: passed)"
    )
    headline = status.proposal.headline if status.proposal else status.phase
    ax.set_title(f"{status.campaign_id}\n{textwrap.fill(headline, 100)}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
