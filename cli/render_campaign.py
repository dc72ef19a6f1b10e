"""A campaign's state as rich tables and lines: plan, preflight, provenance, trials, summary,
escalations, failures, evidence and result.

Pure functions of contracts: metric direction and gains come from ``contracts``, phases from
``workflows.policy``; nothing is computed here that those already compute. Tables fit an
80-column terminal: ids never wrap (they are what people copy), and columns most people do
not need every time move behind --wide.
"""

from rich import box
from rich.markup import escape
from rich.table import Table

from contracts import (
    CampaignResult,
    CampaignStatus,
    Escalation,
    Plan,
    PreflightReport,
    RemedyAttempt,
    TrialSummary,
    relative_gain,
)
from workflows.policy import BASELINE_TRIAL_ID

# Campaigns of the single-seed protocol never measured seed noise: a best trial's edge may be
# noise; say so wherever it shows.
SINGLE_SEED_CAVEAT = (
    "one seed per trial, picked on validation: the difference is not tested against seed noise"
)


# ---- the plan, before approval -------------------------------------------------------------


def render_plan(status: CampaignStatus) -> Table:
    """The plan's hypotheses (and those held back), with its phases and cost as caption."""
    table = Table(
        title=f"{status.campaign_id}: {status.phase}", box=box.SIMPLE_HEAD, caption_justify="left"
    )
    table.add_column("hypothesis", no_wrap=True)
    table.add_column("change")
    table.add_column("source")
    table.add_column("exp. gain", justify="right")
    table.add_column("kept ≥", justify="right")
    if status.plan:
        plan = status.plan
        for h in plan.hypotheses:
            pin = " (pinned)" if h.id in plan.pinned else ""
            kept = plan.kept_down_to.get(h.id)
            table.add_row(
                h.id + pin,
                h.title,
                h.source,
                f"{h.expected_gain:+.2%}" if h.provenance else "-",
                f"{kept:.3g}" if kept is not None else "-",
            )
        for h in plan.held_back:
            table.add_row(
                f"[dim]{h.id}[/]", f"[dim]held back: {h.title}[/]", f"[dim]{h.source}[/]",
                f"[dim]{h.expected_gain:+.2%}[/]", "",
            )  # fmt: skip
        table.caption = plan_caption(plan)
    return table


def plan_caption(plan: Plan) -> str:
    """The plan's phases, estimated device-hours, compute target and notes."""
    phases = "; ".join(
        f"{p.phase}: {'up to ' if p.condition else ''}{p.trials} trials"
        f"{f' ({p.condition})' if p.condition else ''}"
        for p in plan.phases
    )
    return (
        f"{phases}. Estimated {hours_range(plan.estimated_device_hours, plan.estimated_device_hours_high)} "  # noqa: E501
        f"device-hours in all ({hours_range(plan.estimated_device_hours_per_trial, plan.estimated_device_hours_per_trial_high)} a trial)"  # noqa: E501
        + (f", trials on {plan.compute_target}" if plan.compute_target else "")
        + (
            ". 'kept ≥': the smallest budget (device-hours) that still tests it"
            if plan.kept_down_to
            else ""
        )
        + "".join(f"\n- {note}" for note in plan.notes)
    )


def hours_range(low: float, high: float) -> str:
    """``low-high`` device-hours, or one number when the two are within half a percent."""
    return f"{low:.3g}" if high <= low * 1.005 else f"{low:.3g}-{high:.3g}"


def render_preflight(report: PreflightReport) -> Table:
    """The preflight checklist; a failing one says how approval can go on."""
    table = Table(title="preflight checklist", box=box.SIMPLE_HEAD, caption_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("found")
    table.add_column("fix")
    for item in report.items:
        mark = "[green]ok[/]" if item.ok else "[bold red]FAILED[/]"
        table.add_row(item.check, mark, item.detail, item.fix)
    if not report.passed:
        table.caption = (
            "Approval is refused until every check passes: fix it and run `rea campaign "
            "preflight ID`, or approve with --override-preflight REASON."
        )
    return table


def render_provenance(plan: Plan) -> Table:
    """Where each planned and held-back hypothesis came from, and why."""
    table = Table(title="provenance", box=box.SIMPLE_HEAD, show_lines=True)
    table.add_column("hypothesis", no_wrap=True)
    table.add_column("why, and on what grounds")
    for h in [*plan.hypotheses, *plan.held_back]:
        p = h.provenance
        grounds = [h.rationale]
        if p is not None:
            who = ", ".join(
                x
                for x in (
                    p.agent,
                    f"technique {p.technique}" if p.technique else "",
                    f"model {p.model}" if p.model else "",
                    f"prompt {p.prompt_version}" if p.prompt_version else "",
                    f"reply {p.reply_digest[:12]}" if p.reply_digest else "",
                )
                if x
            )
            grounds += [f"[dim]{who}[/]" if who else "", p.evidence, p.citation]
        table.add_row(f"{h.id}\n[dim]{h.source}[/]", "\n".join(g for g in grounds if g))
    return table


# ---- a running campaign --------------------------------------------------------------------


def render_escalation(campaign_id: str, escalation: Escalation) -> str:
    """What an engineer needs to decide: the error, the log tail, what was tried, the
    commands that answer."""
    diagnosis = escalation.diagnosis
    tried = "; ".join(describe_remedy(a) for a in escalation.tried) or "nothing"
    lines = [
        f"[bold red]trial {escalation.trial_id} needs attention:[/] "
        f"{escalation.error_type or 'failed'}: {escalation.error}",
        f"  why: {diagnosis.why_escalate}",
        f"  diagnosis: {diagnosis.diagnosis}" if diagnosis.diagnosis else "",
        f"  tried: {tried}",
        *(f"  | {line}" for line in diagnosis.log_tail.splitlines()[-10:]),
        f"  answer: rea campaign resolve {campaign_id} {escalation.trial_id} --as YOU "
        "--retry [--set FIELD=VALUE] | --skip | --stop",
    ]
    return "\n".join(line for line in lines if line)


def describe_remedy(attempt: RemedyAttempt) -> str:
    """A remedy tried, in a few words: kind, runbook entry and outcome."""
    return f"{attempt.remedy.kind} ({attempt.pattern_id}) -> {attempt.state}"


def render_summary(status: CampaignStatus) -> str:
    """Phase, approval, budget, the best (or leading) trial and what needs attention."""
    approval = status.approval
    approved = (
        f"approved by {approval.approver} at {approval.approved_at:%Y-%m-%d %H:%M}"
        if approval
        else "not approved yet"
    )
    ledger = status.ledger
    lines = [
        f"[bold]{status.phase}[/]{' [yellow](paused)[/]' if status.paused else ''}; {approved}",
        f"budget: {ledger.spent:.3g} spent + {ledger.reserved:.3g} reserved of "
        f"{ledger.approved:g} device-hours",
        f"{best_label(status)}: {describe_best(status)}{leader_interval(status)}"
        if status.best_metric is not None
        else "",
        f"  ({SINGLE_SEED_CAVEAT})" if single_seed_best(status) else "",
        f"[bold yellow]{baseline_warning(status)}[/]" if baseline_warning(status) else "",
        *(f"{phase}: {note}" for phase, note in status.phase_notes.items()),
        f"[bold]{status.proposal.headline}[/]" if status.proposal else "",
        f"[bold red]needs attention:[/] {status.needs_attention}" if status.needs_attention else "",
        status.message,
    ]
    return "\n".join(line for line in lines if line)


def single_seed_best(status: CampaignStatus) -> bool:
    """True when a single-seed campaign's best is a change, whose edge may be seed noise."""
    return status.protocol == "single-seed" and status.best_trial_id not in ("", BASELINE_TRIAL_ID)


def leader_interval(status: CampaignStatus) -> str:
    """The gate's 95% interval of the leading change, so its gain never shows without one."""
    for decision in status.decisions.values():
        for c in decision.comparisons:
            if c.passed and c.hypothesis_id == status.best_trial_id and c.gain_low is not None:
                return f", gate interval [{c.gain_low:+.2%}, {c.gain_high or 0.0:+.2%}]"
    return ""


def best_label(status: CampaignStatus) -> str:
    """What "best" means: under the evidence protocol only a change that passed a gate (its
    mean over the gate's seeds against the baseline's) leads."""
    return "best" if status.protocol == "single-seed" else "leading (passed a validation gate)"


def describe_best(status: CampaignStatus) -> str:
    """E.g. "v-lower-dense-lr: NE 0.9139 vs 0.9198 baseline, gain +0.64% (better)"."""
    metric, best, baseline = status.metric, status.best_metric, status.baseline_metric
    if best is None:
        return "-"
    text = f"{status.best_trial_id}: {metric_name(metric)} {best:.5g}"
    if baseline is None or status.best_trial_id == BASELINE_TRIAL_ID:
        return text
    gain = relative_gain(best, baseline, metric)  # positive is better, on any metric
    # The gain, signed as every other view signs it (the evidence, the proposal, compare).
    verdict = "better" if gain > 0 else "worse" if gain else "no change"
    return f"{text} vs {baseline:.5g} baseline, gain {gain:+.2%} ({verdict})"


def baseline_warning(status: CampaignStatus) -> str:
    """A baseline with NE of 1 or more predicts worse than the label's mean: every gain over
    it is suspect until the data and the baseline are checked ("" otherwise)."""
    ne = status.baseline_metric if status.metric == "ne" else None
    if ne is None or ne < 1.0:
        return ""
    return (
        f"warning: the baseline's NE is {ne:.5g} (1 or more): it predicts worse than the "
        "label's mean; check the data and the baseline before trusting gains over it"
    )


def arm_label(arm: str) -> str:
    """An arm as people read it: a tuned arm ``x2`` is "x2 (tuned #2)", not "×2"."""
    number = arm[1:] if arm.startswith("x") else ""
    return f"{arm} (tuned #{number})" if number.isdigit() else arm


def metric_name(metric: str) -> str:
    """A metric's name as a reader writes it: NE, AUC, log loss."""
    return "log loss" if metric == "logloss" else metric.upper()


def trial_state(trial: TrialSummary) -> str:
    """The trial's state; a running Slurm job's id with it (``squeue -j ID`` says more)."""
    if trial.state == "running" and trial.job is not None and trial.job.runner == "slurm":
        return f"running (Slurm job {trial.job.details.get('slurm_job_id', '?')})"
    return trial.state


def render_failure(trial: TrialSummary, lines: int = 10) -> str:
    """A failed trial's error and the end of its job's log (stdout and stderr)."""
    tail = trial.log_tail.splitlines()[-lines:]
    return "\n".join(
        [
            f"[red]{trial.trial_id} failed[/] ({trial.error_type or 'error'}): "
            f"{escape(trial.error)}",
            *(f"  | {escape(line)}" for line in tail),
        ]
    )


def render_trials(status: CampaignStatus, wide: bool = False) -> Table:
    """Every trial with its state and metric on validation and test.

    Args:
        status: The campaign.
        wide: Add validation AUC, calibration and seconds (more than 80 columns).
    """
    metric = status.metric
    name = metric_name(metric)
    table = Table(
        title=f"trials: {name} on validation (test reported, never selected on)",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
    )
    table.add_column("trial", no_wrap=True)
    table.add_column("state")
    table.add_column(f"val {name}", justify="right")
    table.add_column(f"test {name}", justify="right")
    if wide:
        for column in ("val AUC", "calib.", "seconds"):
            table.add_column(column, justify="right")
    for t in status.trials:
        # Under the evidence protocol the leader is an arm: mark each of its seeded runs.
        best = bool(status.best_trial_id) and status.best_trial_id in (t.trial_id, t.arm)
        value, test = t.metric(metric), t.test_metric(metric)
        row = [
            f"[bold green]{t.trial_id} *[/]" if best else t.trial_id,
            trial_state(t),
            f"{value:.5g}" if value is not None else "",
            f"{test:.5g}" if test is not None else "",
        ]
        if wide:
            row += [
                f"{t.validation.auc:.5g}" if t.validation else "",
                f"{t.validation.calibration:.3g}"
                if t.validation and t.validation.calibration
                else "",
                f"{t.duration_s:.1f}" if t.state != "running" else "",
            ]
        table.add_row(*row, style=None if t.state in ("running", "succeeded") else "red")
    return table


# ---- the result ----------------------------------------------------------------------------


def render_result(result: CampaignResult) -> Table:
    """The evidence table and the verdict (single-seed campaigns: every trial and the best)."""
    status = result.status
    if status.protocol != "single-seed":
        table = render_evidence(status)
        lines = [screen_line(status)] if status.screen else []
        lines += [f"{phase}: {note}" for phase, note in status.phase_notes.items()]
    else:
        table = render_trials(status)
        lines = [f"best {describe_best(status)}"] if status.best_metric is not None else []
        if single_seed_best(status):
            lines.append(f"({SINGLE_SEED_CAVEAT})")
        lines += [f"{phase}: {note}" for phase, note in status.phase_notes.items()]
    if status.proposal is not None and status.proposal.explored:
        lines += [f"explored: {line}" for line in status.proposal.explored]
    lines.append(
        f"{status.device_hours_spent:.3g} of {status.device_hours_approved:g} device-hours spent "
        f"in {len(status.trials) + status.trials_archived} trials"
    )
    if status.proposal is not None and status.proposal.ended_by:
        lines.append(f"ended: {status.proposal.ended_by}")
    if warning := baseline_warning(status):
        lines.append(f"[bold yellow]{warning}[/]")
    if status.proposal is not None:
        style = "bold green" if status.proposal.verdict == "launch" else "bold"
        lines.append(f"[{style}]{status.proposal.headline}[/]")
    table.caption = "\n".join(lines)
    return table


def render_evidence(status: CampaignStatus) -> Table:
    """Every comparison the gates made: gain with its 95% interval, adjusted p, verdict."""
    name = metric_name(status.metric)
    table = Table(
        title=f"evidence: {name} gain over the baseline, paired by seed",
        box=box.SIMPLE_HEAD,
        caption_justify="left",
    )
    # Folded, never cut with an ellipsis: the change's name is what a reader looks for.
    table.add_column("gate / change", overflow="fold", min_width=12)
    table.add_column("n", justify="right")
    table.add_column("gain [95% interval]", no_wrap=True)
    table.add_column("adj. p", justify="right")
    table.add_column("verdict", overflow="fold", min_width=10)
    for phase, decision in status.decisions.items():
        table.add_row(f"[bold]{phase}[/]{' (test)' if decision.split == 'test' else ''}")
        for c in decision.comparisons:
            tested = c.gain_low is not None and c.gain_high is not None
            table.add_row(
                f"  {arm_label(c.hypothesis_id)}",
                str(c.n),
                f"{c.gain:+.2%} [{c.gain_low:+.2%}, {c.gain_high:+.2%}]" if tested else "",
                f"{c.p_adjusted:.2g}" if tested else "",
                "[green]passed[/]" if c.passed else verdict_of(c.reason),
                style=None if c.passed else "dim",
            )
    return table


def verdict_of(reason: str) -> str:
    """The gate's reason without its numbers (the table has them): "not significant"..."""
    return reason.rsplit(": ", 1)[-1] if ": " in reason else reason


def screen_line(status: CampaignStatus) -> str:
    """What the screen dropped, in one line ("" when the campaign has not screened)."""
    if status.screen is None:
        return ""
    dropped = [r.arm for r in status.screen.results if not r.promoted]
    return (
        f"screen ({status.screen.epochs} epoch(s), one seed): dropped the worse half, "
        f"{', '.join(dropped) or 'none'}"
    )
