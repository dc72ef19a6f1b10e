"""A campaign's report as one self-contained HTML page: the figures of ``report.charts`` embedded
as data URIs, inline CSS, no script, so the file opens alone (mailed, attached to a review).

Every string that comes from the campaign (hypothesis titles, errors, LLM text) is escaped:
they are written by models and by people and may hold markup.
"""

import base64
from collections.abc import Callable
from html import escape
from pathlib import Path

from contracts import LOWER_IS_BETTER, CampaignStatus, Comparison
from report.charts import (
    PHASE_COLOURS,
    plot_budget,
    plot_campaign,
    plot_evidence,
    plot_progress,
    plot_timeline,
)

# Section ids, in page order: stable, for links and tests.
SECTIONS = (
    "summary",
    "progress",
    "timeline",
    "hypotheses",
    "budget",
    "failures",
    "proposal",
    "evidence",
    "trials",
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
 margin:0;background:#f4f5f7}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 10px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:16px 20px;
 margin:0 0 16px}
.table{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:13px}
td{overflow-wrap:break-word}td code,.phase{white-space:nowrap}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e5e5e5;vertical-align:top}
th{background:#fafafa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}
dt{color:#666}dd{margin:0}
img{max-width:100%;height:auto;display:block}
.scroll{overflow-x:auto}.scroll img{max-width:none}
.headline{font-size:16px;font-weight:600;margin:8px 0 0}
.pass{color:#2ca02c;font-weight:600}.fail{color:#888}
.empty{color:#666;font-style:italic}
.phase{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-size:12px}
code,pre{font:12px ui-monospace,Menlo,Consolas,monospace}
pre{white-space:pre-wrap;background:#f7f7f7;padding:6px;margin:4px 0;max-height:12em;
 overflow:auto}
"""


def write_report(status: CampaignStatus, out: Path) -> Path:
    """Write ``<out>/<campaign>.html`` and the PNGs it embeds beside it.

    Args:
        status: The campaign's status, in any phase.
        out: The folder to write into (created if missing).

    Returns:
        The HTML file's path.
    """
    out.mkdir(parents=True, exist_ok=True)
    stem = out / status.campaign_id
    figures = {
        "progress": _figure(plot_progress, status, stem.with_name(f"{stem.name}-progress.png")),
        "timeline": _figure(plot_timeline, status, stem.with_name(f"{stem.name}-timeline.png")),
        "budget": _figure(plot_budget, status, stem.with_name(f"{stem.name}-budget.png")),
        "evidence": _figure(plot_evidence, status, stem.with_name(f"{stem.name}-evidence.png")),
        "trials": _figure(plot_campaign, status, stem.with_name(f"{stem.name}.png")),
    }
    path = stem.with_name(f"{stem.name}.html")
    path.write_text(render_html(status, figures), encoding="utf-8")
    return path


def _figure(
    plot: Callable[[CampaignStatus, Path], Path], status: CampaignStatus, path: Path
) -> Path | None:
    """The figure's PNG, or None when the campaign has nothing to draw in it yet."""
    try:
        return plot(status, path)
    except ValueError:
        return None  # the plot functions raise ValueError exactly when there is no data


def render_html(status: CampaignStatus, figures: dict[str, Path | None]) -> str:
    """The report page for ``status``, embedding the PNGs of ``figures`` (by section id)."""
    title = f"Campaign {status.campaign_id}"
    body = "".join(
        [
            _section("summary", "Summary", _summary(status)),
            _section(
                "progress",
                "Best metric vs compute spent",
                _img(figures.get("progress"), "best validation metric against device-hours")
                or _empty("No trial has finished yet."),
            ),
            _section(
                "timeline",
                "Timeline",
                _img(figures.get("timeline"), "every trial by phase and outcome")
                + _timeline_note(status)
                if figures.get("timeline")
                else _empty("No trial has been launched yet."),
            ),
            _section("hypotheses", "Hypotheses and the gate", _hypotheses(status)),
            _section("budget", "Budget burn per phase", _budget(status, figures.get("budget"))),
            _section("failures", "Failures and remedies", _failures(status)),
            _section("proposal", "Launch proposal", _proposal(status)),
            _section(
                "evidence",
                "Evidence (gains with 95% intervals)",
                _img(figures.get("evidence"), "forest plot of every gated change")
                or _empty("No gate has compared seeded runs yet."),
            ),
            _section(
                "trials",
                "Trials vs baseline",
                _img(figures.get("trials"), "validation metric of every finished trial", wide=True)
                or _empty("No trial has finished yet."),
            ),
        ]
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>\n"
    )


def _section(sid: str, heading: str, content: str) -> str:
    return f'<section id="{sid}"><h2>{escape(heading)}</h2>{content}</section>'


def _empty(sentence: str) -> str:
    return f'<p class="empty">{escape(sentence)}</p>'


def _img(path: Path | None, alt: str, wide: bool = False) -> str:
    """The PNG inline as a data URI; a ``wide`` one keeps its size and scrolls sideways (one
    bar per trial stays readable)."""
    if path is None:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    img = f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
    return f'<div class="scroll">{img}</div>' if wide else img


def _phase(name: str) -> str:
    colour = PHASE_COLOURS.get(name, "#555")
    return f'<span class="phase" style="background:{colour}">{escape(name)}</span>'


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:+.2f}%"


def _gain(c: Comparison) -> str:
    """A gain always with its interval; an untested one says so instead of a bare number."""
    if c.gain_low is None or c.gain_high is None:
        return f"{_pct(c.gain)} (no interval: too few paired seeds)"
    # No-break space: the interval wraps as one piece, never split after its comma.
    return f"{_pct(c.gain)} [{_pct(c.gain_low)},\u00a0{_pct(c.gain_high)}]"


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    """An HTML table; cells are already-escaped HTML."""
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="table">{table}</div>'


def _summary(status: CampaignStatus) -> str:
    metric = status.metric
    better = "lower" if LOWER_IS_BETTER[metric] else "higher"
    task = status.task
    dataset = (
        escape(
            f"{task.dataset}: {task.rows:,} rows, {task.sparse_features} sparse features, "
            f"{task.model_family} baseline"
        )
        if task is not None
        else "– (no task descriptor recorded yet)"
    )
    best = "–"
    if status.best_trial_id:
        value = "" if status.best_metric is None else f" ({status.best_metric:.5g})"
        best = escape(status.best_trial_id + value)
    baseline = "–" if status.baseline_metric is None else f"{status.baseline_metric:.5g}"
    rows = [
        ("Campaign", escape(status.campaign_id)),
        ("Goal", escape(status.goal) or "–"),
        ("Task / dataset", dataset),
        ("Metric", f"validation {escape(metric)} ({better} is better)"),
        ("Phase", _phase(status.phase) + (" (paused)" if status.paused else "")),
        ("Protocol", escape(status.protocol)),
        (
            "Budget",
            f"{status.ledger.spent:.3g} of {status.ledger.approved:.3g} device-hours spent"
            if status.ledger.approved
            else "not approved yet",
        ),
        ("Trials", str(len(status.trials))),
        ("Baseline", baseline + _baseline_warning(status)),
        ("Best trial", best),
    ]
    for label, text in (
        ("Needs attention", status.needs_attention),
        ("Stop reason", status.stop_reason),
        ("Error", status.error),
        ("Last message", status.message),
    ):
        if text:
            rows.append((label, escape(text)))
    items = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    headline = status.proposal.headline if status.proposal and status.proposal.headline else ""
    if not headline:
        headline = f"No launch proposal yet: the campaign is in {status.phase}."
    return f'<dl>{items}</dl><p class="headline">{escape(headline)}</p>'


def _timeline_note(status: CampaignStatus) -> str:
    links = [t for t in status.trials if t.remedy_of]
    if not links:
        return ""
    text = "; ".join(f"{t.trial_id} remedies {t.remedy_of}" for t in links)
    return f"<p>Remedy trials (red arrows): {escape(text)}.</p>"


def _hypotheses(status: CampaignStatus) -> str:
    hypotheses = {h.id: h for h in status.plan.hypotheses} if status.plan else {}
    # The gate compares arms (``v-wider-embeddings``, a merge, a tuned ``x4``); the trials
    # know which hypotheses each arm carries.
    arm_hypotheses = {t.arm: t.hypothesis_ids for t in status.trials if t.arm}
    gated: set[str] = set()
    rows = []
    for phase, decision in status.decisions.items():
        for c in decision.comparisons:
            ids = arm_hypotheses.get(c.hypothesis_id) or c.hypothesis_id.split("+")
            gated.update(ids)
            parts = [hypotheses[h] for h in ids if h in hypotheses]
            description = "; ".join(h.title for h in parts)
            source = ", ".join(sorted({h.source for h in parts}))
            if c.hypothesis_id in status.tuned:
                description = "tuned: " + ", ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in status.tuned[c.hypothesis_id].items()
                )
                source = "optuna"
            description = description or c.reason
            source = source or "–"
            verdict = (
                '<span class="pass">passed</span>' if c.passed else '<span class="fail">no</span>'
            )
            split = " (test)" if decision.split == "test" else ""
            rows.append(
                [
                    _phase(phase) + escape(split),
                    f"<code>{escape(c.hypothesis_id)}</code>",
                    escape(description),
                    escape(source),
                    escape(_gain(c)),
                    f"{c.p_value:.3g} / {c.p_adjusted:.3g}",
                    verdict,
                ]
            )
    ended = status.phase in ("done", "stopped", "failed")
    screened_out = {
        ids
        for r in (status.screen.results if status.screen else [])
        if not r.promoted
        for ids in arm_hypotheses.get(r.arm, [r.arm.removeprefix("v-")])
    }
    for h in hypotheses.values():
        if h.id not in gated:
            why = (
                "dropped at the screen"
                if h.id in screened_out
                else ("not gated" if ended else "not gated yet")
            )
            rows.append(
                [
                    "–",
                    f"<code>{escape(h.id)}</code>",
                    escape(h.title),
                    escape(h.source),
                    why,
                    "–",
                    "–",
                ]
            )
    if not rows:
        return _empty("No hypothesis has been planned yet.")
    return _table(
        ["phase", "id", "description", "source", "gain [95% interval]", "p / p (Holm)", "gate"],
        rows,
        numeric={4, 5},
    )


def _budget(status: CampaignStatus, figure: Path | None) -> str:
    ledger = status.ledger
    if not ledger.phases:
        return _empty("No budget has been approved or spent yet.")
    rows = [
        [_phase(name), f"{p.estimated:.3g}", f"{p.spent:.3g}", f"{p.reserved:.3g}"]
        for name, p in ledger.phases.items()
    ]
    rows.append(
        [
            "<b>total</b>",
            f"{sum(p.estimated for p in ledger.phases.values()):.3g}",
            f"<b>{ledger.spent:.3g}</b>",
            f"{ledger.reserved:.3g}",
        ]
    )
    table = _table(["phase", "estimated", "spent", "reserved (running)"], rows, numeric={1, 2, 3})
    approved = f"<p>Approved budget: <b>{ledger.approved:.3g}</b> device-hours.</p>"
    return _img(figure, "estimated vs spent device-hours per phase") + approved + table


def _failures(status: CampaignStatus) -> str:
    bad = [t for t in status.trials if t.state in ("failed", "diverged")]
    if not bad:
        return _empty("No trial has failed or diverged.")
    escalated = {e.trial_id: e for e in status.escalations}
    rows = []
    for t in bad:
        tried = [r for r in status.remedies if t.trial_id in (r.trial_id, r.run_trial_id)]
        remedies = (
            "<br>".join(
                escape(
                    f"#{r.attempt} {r.remedy.kind} ({r.pattern_id}) → {r.run_trial_id}: {r.state}"
                )
                for r in tried
            )
            or "none"
        )
        e = escalated.get(t.trial_id)
        if e is None:
            escalation = "–"
        elif e.resolution is None:
            escalation = "<b>open</b>: " + escape(e.diagnosis.why_escalate or "waiting")
        else:
            res = e.resolution
            escalation = escape(
                f"{res.action} by {res.approver}"
                + (f" with {res.changes}" if res.changes else "")
                + (f": {res.comment}" if res.comment else "")
            )
        diagnosis = e.diagnosis.diagnosis if e is not None else ""
        rows.append(
            [
                f"<code>{escape(t.trial_id)}</code> " + _phase(t.phase),
                escape(t.error_type or t.state),
                f"<pre>{escape(t.error)}</pre>" if t.error else "–",
                escape(diagnosis) or "–",
                remedies,
                escalation,
            ]
        )
    return _table(
        ["trial", "error type", "error", "diagnosis", "remedies tried", "escalation"], rows
    )


def _proposal(status: CampaignStatus) -> str:
    p = status.proposal
    if p is None:
        return _empty(
            f"No launch proposal yet: it comes when confirmation ends (now: {status.phase})."
        )
    parts = [f'<p class="headline">{escape(p.headline or p.verdict)}</p>']
    if p.verdict == "launch":
        parts.append(
            f"<p>Candidate <code>{escape(p.candidate)}</code>: "
            f"<code>{escape(str(p.changes))}</code></p>"
        )
    rows = []
    if p.confirmation is not None:
        c = p.confirmation
        rows.append(
            [
                "confirmation (test)",
                f"<code>{escape(c.hypothesis_id)}</code>",
                escape(_gain(c)),
                f"{c.p_value:.3g}",
            ]
        )
    for phase, decision in p.evidence.items():
        for c in decision.comparisons:
            if c.hypothesis_id == p.candidate or c.passed:
                rows.append(
                    [
                        escape(phase),
                        f"<code>{escape(c.hypothesis_id)}</code>",
                        escape(_gain(c)),
                        f"{c.p_value:.3g}",
                    ]
                )
    if rows:
        parts.append(_table(["evidence", "arm", "gain [95% interval]", "p"], rows, numeric={2, 3}))
    if p.risks is not None:
        r = p.risks
        parts.append(
            f"<p>Caveats: {r.parameters_ratio:.2f}× parameters, "
            f"{r.embedding_ratio:.2f}× embedding bytes"
            + ("" if r.trial_time_ratio is None else f", {r.trial_time_ratio:.2f}× trial time")
            + ".</p>"
        )
    if p.learned:
        parts.append(
            "<p>What we learned:</p><ul>"
            + "".join(f"<li>{escape(x)}</li>" for x in p.learned)
            + "</ul>"
        )
    return "".join(parts)


def _baseline_warning(status: CampaignStatus) -> str:
    """NE of 1 or more: the baseline predicts worse than the label's mean (as the CLI says)."""
    ne = status.baseline_metric if status.metric == "ne" else None
    if ne is None or ne < 1.0:
        return ""
    return (
        ' <span class="fail">warning: NE of 1 or more predicts worse than the label\'s mean; '
        "check the data and the baseline before trusting gains over it</span>"
    )
