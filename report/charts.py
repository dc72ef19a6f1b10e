"""The campaign's figures, one function per PNG: trials vs baseline, evidence forest plot,
best-so-far vs compute, timeline, budget burn."""

import textwrap
from pathlib import Path

from contracts import LOWER_IS_BETTER, CampaignStatus, TrialSummary

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
    # Wide enough for each trial's label, up to a width a report page can scroll through.
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.7 * len(trials) + 2)), 4.5))
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
    ax.set_title(f"{status.campaign_id}\n{textwrap.fill(headline, 80)}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to a file
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_progress(status: CampaignStatus, path: Path) -> Path:
    """Write a PNG step line: the best validation metric so far against the device-hours
    spent so far (trials in launch order), with the baseline as a dashed line.

    Raises:
        ValueError: when no trial has a validation metric yet.
    """
    metric, lower = status.metric, LOWER_IS_BETTER[status.metric]
    spent, best, points = 0.0, None, []
    for t in status.trials:
        spent += t.device_hours
        value = t.metric(metric)
        if value is not None and (best is None or (value < best if lower else value > best)):
            best = value
        if best is not None:
            points.append((spent, best))
    if not points:
        raise ValueError(f"campaign {status.campaign_id} has no finished trial to plot yet")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 3.6))
    ax.step([p[0] for p in points], [p[1] for p in points], where="post", color="#1f77b4")
    ax.plot([p[0] for p in points], [p[1] for p in points], ".", color="#1f77b4")
    if status.baseline_metric is not None:
        ax.axhline(status.baseline_metric, color="#d62728", linestyle="--", label="baseline")
        ax.legend(fontsize=8)
    ax.set_xlabel("device-hours spent (cumulative, launch order)")
    ax.set_ylabel(f"best validation {metric} ({'lower' if lower else 'higher'} is better)")
    return _save(fig, path)


# How a trial's outcome is drawn on the timeline: hatch and edge colour.
OUTCOME_STYLE = {
    "succeeded": ("", "black"),
    "failed": ("xx", "#d62728"),
    "diverged": ("//", "#ff7f0e"),
    "pruned": ("..", "#555555"),
    "cancelled": ("--", "#555555"),
    "running": ("", "#bbbbbb"),
}


def plot_timeline(status: CampaignStatus, path: Path) -> Path:
    """Write a PNG with one horizontal bar per trial, from its launch to its result on the
    campaign's clock, coloured by phase and hatched by outcome; a remedy trial is tied to the
    trial it fixes.

    Campaigns started before trials kept their launch time (``TrialSummary.launched_at``)
    are drawn in launch order, each bar as long as the trial ran; the axis says which.

    Raises:
        ValueError: when no trial has been launched yet.
    """
    trials = status.trials
    if not trials:
        raise ValueError(f"campaign {status.campaign_id} has no trial to plot yet")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 0.28 * len(trials) + 1.6))
    row = {t.trial_id: i for i, t in enumerate(trials)}
    starts, minutes, axis_label = _timeline_spans(trials)
    for i, t in enumerate(trials):
        hatch, edge = OUTCOME_STYLE.get(t.state, ("", "black"))
        ax.barh(
            i,
            max(minutes[i], 0.02 * max([*minutes, 1.0])),  # a run not yet timed stays visible
            left=starts[i],
            color=PHASE_COLOURS.get(t.phase, "#333"),
            hatch=hatch,
            edgecolor=edge,
            linewidth=1.2,
        )
        if t.remedy_of in row:
            ax.annotate(
                "",
                xy=(starts[i], i),
                xytext=(starts[row[t.remedy_of]], row[t.remedy_of]),
                arrowprops={
                    "arrowstyle": "->",
                    "color": "#d62728",
                    "connectionstyle": "arc3,rad=-0.4",
                },
            )
    ax.set_yticks(range(len(trials)), [t.trial_id for t in trials], fontsize=7)
    ax.set_ylim(len(trials) - 0.5, -0.5)  # first launched on top, no empty margin
    ax.set_xlabel(axis_label)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=c, label=p)
        for p, c in PHASE_COLOURS.items()
        if any(t.phase == p for t in trials)
    ] + [
        plt.Rectangle((0, 0), 1, 1, facecolor="white", hatch=h, edgecolor=e, label=s)
        for s, (h, e) in OUTCOME_STYLE.items()
        if s != "succeeded" and any(t.state == s for t in trials)
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def _timeline_spans(trials: list[TrialSummary]) -> tuple[list[float], list[float], str]:
    """Each trial's start and length in minutes, and the x axis label: on the campaign's clock
    when every trial kept its launch time, else from zero by duration (launch order)."""
    launched = [t.launched_at for t in trials]
    if all(launched):
        first = min(t for t in launched if t is not None)
        starts = [((t.launched_at or first) - first).total_seconds() / 60 for t in trials]
        lengths = [
            ((t.ended_at - t.launched_at).total_seconds() / 60)
            if t.ended_at and t.launched_at
            else t.duration_s / 60
            for t in trials
        ]
        return starts, lengths, "minutes since the first launch (launch to result)"
    lengths = [t.duration_s / 60 for t in trials]
    return [0.0] * len(trials), lengths, "minutes run (launch order: no launch times recorded)"


def plot_budget(status: CampaignStatus, path: Path) -> Path:
    """Write a PNG of estimated vs spent device-hours per phase, with the approved budget.

    Raises:
        ValueError: when the ledger has no phase yet.
    """
    phases = status.ledger.phases
    if not phases:
        raise ValueError(f"campaign {status.campaign_id} has no budget ledger yet")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 3.2))
    names = list(phases)
    x = range(len(names))
    ax.bar(
        [i - 0.2 for i in x],
        [phases[n].estimated for n in names],
        0.4,
        color="#cccccc",
        label="estimated",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [phases[n].spent for n in names],
        0.4,
        color=[PHASE_COLOURS.get(n, "#333") for n in names],
        label="spent",
    )
    if status.ledger.approved:
        ax.axhline(
            status.ledger.approved,
            color="#d62728",
            linestyle="--",
            label=f"approved budget ({status.ledger.approved:.3g})",
        )
    ax.set_xticks(list(x), names)
    ax.set_xlim(-0.6, max(len(names), 4) - 0.4)  # one phase keeps a bar's width
    ax.set_ylabel("device-hours")
    ax.legend(fontsize=8)
    return _save(fig, path)
