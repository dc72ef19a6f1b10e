"""The `rea` command line, run as a user runs it."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from cli.local import ACTION_SPACE_FILE, PUBLIC_MODELS, SCHEMA_DIR
from contracts import Budget, DatasetRef, ModelSpec
from devserver import free_port
from tests.factories import campaign_request

runner = CliRunner()


def test_unreachable_server_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REA_TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
    result = runner.invoke(app, ["campaign", "status", "some-campaign"])
    assert result.exit_code == 2
    assert "no Temporal server at 127.0.0.1:" in result.output
    assert "rea up" in result.output and "REA_TEMPORAL_ADDRESS" in result.output


def test_invalid_campaign_spec_names_each_bad_field(tmp_path: Path) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"approvers": [], "budget": {"device_hours": 1}, "metrc": "ne"}))
    result = runner.invoke(app, ["campaign", "start", str(spec)])
    assert result.exit_code == 2
    assert "approvers" in result.output and "metrc" in result.output


def test_committed_json_schema_is_up_to_date(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in [f"{model.__name__}.json" for model in PUBLIC_MODELS] + [ACTION_SPACE_FILE]:
        assert (tmp_path / name).read_text() == (SCHEMA_DIR / name).read_text(), (
            f"schema/{name} is stale: run `make schema`"
        )


def test_train_runs_one_trial_without_temporal(tmp_path: Path) -> None:
    spec = tmp_path / "trial.json"
    spec.write_text(json.dumps({"model": {"epochs": 1}, "dataset": {"max_rows": 3000}}))
    result = runner.invoke(app, ["train", str(spec)])
    assert result.exit_code == 0, result.output
    assert "validation" in result.output and "test" in result.output


@pytest.mark.e2e
def test_embedded_auto_approved_campaign_runs_to_a_result_table(tmp_path: Path) -> None:
    """What `make demo` runs, on tiny data, on free ports."""
    request = campaign_request(
        baseline=ModelSpec(epochs=1, batch_size=256),
        dataset=DatasetRef(max_rows=4000),
        budget=Budget(device_hours=1.0, max_trials=3),
    )
    spec = tmp_path / "campaign.json"
    spec.write_text(request.model_dump_json())
    env = os.environ | {
        "REA_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "REA_UI_PORT": str(free_port()),
        "REA_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
    }
    rea = Path(sys.executable).parent / "rea"
    out = subprocess.run(
        [str(rea), "campaign", "start", str(spec), "--embedded", "--auto-approve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Approved as alice@example.com" in out.stdout
    assert "baseline" in out.stdout and "Web UI: http://127.0.0.1:" in out.stdout
    assert (tmp_path / "data" / "temporal.db").exists()
    assert (tmp_path / "data" / "results.sqlite").exists()
    assert "Report: " in out.stdout and list((tmp_path / "data" / "reports").glob("*.html"))
    # Nothing is left running: the embedded server's port is free again.
    host, port = env["REA_TEMPORAL_ADDRESS"].split(":")
    with socket.socket() as sock:
        assert sock.connect_ex((host, int(port))) != 0


def test_improvements_read_unambiguously_in_the_metric_direction() -> None:
    from cli.render_campaign import describe_best
    from contracts import CampaignStatus

    better = CampaignStatus(
        campaign_id="c", best_trial_id="v-x", best_metric=0.91389, baseline_metric=0.91977
    )
    # The gain, signed as the evidence and the proposal sign it: lower NE is a positive gain.
    assert describe_best(better) == "v-x: NE 0.91389 vs 0.91977 baseline, gain +0.64% (better)"
    auc = better.model_copy(update={"metric": "auc", "best_metric": 0.8, "baseline_metric": 0.78})
    assert describe_best(auc).endswith("gain +2.56% (better)")
    same = better.model_copy(update={"best_trial_id": "baseline", "best_metric": 0.91977})
    assert describe_best(same) == "baseline: NE 0.91977"


def test_the_progress_total_drops_the_trials_a_phase_announced_it_skips() -> None:
    from activities.planning import make_plan
    from cli.follow import planned_trials
    from contracts import CampaignStatus, PlanningInput, TrialSummary

    plan = make_plan(
        PlanningInput(campaign_id="c", request=campaign_request()), lambda m, d: (1, 1)
    )
    trials = [TrialSummary(trial_id="baseline", phase="baseline")] + [
        TrialSummary(trial_id=f"v-{h.id}", phase="validation") for h in plan.hypotheses
    ]
    status = CampaignStatus(campaign_id="c", phase="validation", plan=plan, trials=trials)
    assert planned_trials(status) == 9
    skipping = status.model_copy(
        update={"phase": "combination", "phase_notes": {"combination": "0 of 2 planned trials"}}
    )
    assert planned_trials(skipping) == 7


def test_compare_trains_both_specs_on_paired_seeds_and_gives_an_interval(tmp_path: Path) -> None:
    base, cand = tmp_path / "base.json", tmp_path / "cand.json"
    data = {"max_rows": 3000}
    base.write_text(json.dumps({"model": {"epochs": 1}, "dataset": data}))
    cand.write_text(json.dumps({"model": {"epochs": 1, "dense_lr": 3e-4}, "dataset": data}))
    result = runner.invoke(app, ["compare", str(base), str(cand), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    assert "gain" in words and "Holm-adjusted p=" in words and "(2 paired seeds)" in words
    # The same spec twice: identical runs on every seed are no evidence either way.
    same = runner.invoke(app, ["compare", str(base), str(base), "--seeds", "2"])
    assert "no evidence" in " ".join(same.output.split())
    assert "not shown to beat the baseline" in same.output


def test_compare_refuses_different_datasets(tmp_path: Path) -> None:
    base, cand = tmp_path / "base.json", tmp_path / "cand.json"
    base.write_text(json.dumps({"dataset": {"max_rows": 3000}}))
    cand.write_text(json.dumps({"dataset": {"max_rows": 4000}}))
    result = runner.invoke(app, ["compare", str(base), str(cand)])
    assert result.exit_code == 2 and "same dataset" in result.output


def test_the_result_shows_the_evidence_and_headlines_only_the_verdict() -> None:
    from rich.console import Console

    from cli.render_campaign import render_result
    from contracts import CampaignResult, CampaignStatus, Comparison, GateDecision, LaunchProposal

    def decision(split: str, *comparisons: Comparison) -> GateDecision:
        return GateDecision(
            metric="ne",
            correction="Holm-Bonferroni",
            alpha=0.05,
            min_effect=0.001,
            split=split,  # type: ignore[arg-type]
            comparisons=list(comparisons),
            passed=[c.hypothesis_id for c in comparisons if c.passed],
        )

    passed = Comparison(
        hypothesis_id="c-wider-embeddings+wider-over-arch",
        n=3,
        gain=0.0123,
        gain_low=0.004,
        gain_high=0.02,
        p_adjusted=0.01,
        passed=True,
    )
    noise = Comparison(
        hypothesis_id="v-lower-dense-lr",
        n=3,
        gain=0.0024,
        gain_low=-0.008,
        gain_high=0.0128,
        p_adjusted=0.64,
        reason="gain +0.24% [...], Holm-adjusted p=0.64 >= 0.05: not significant",
    )
    status = CampaignStatus(
        campaign_id="c",
        protocol="evidence",
        phase="done",
        decisions={
            "validation": decision("validation", noise),
            "confirmation": decision("test", passed),
        },
        proposal=LaunchProposal(verdict="launch", headline="launch c-wider-...: test NE gain"),
    )
    console = Console(width=80, record=True)
    console.print(render_result(CampaignResult(status=status)))
    text = console.export_text()

    assert "+1.23% [+0.40%, +2.00%]" in text and "confirmation (test)" in text
    assert "not significant" in text and "launch c-wider-...: test NE gain" in text
    assert "c-wider-embedding" in text and "v-lower-dense-lr" in text  # folded, not cut
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "not tested against seed noise" not in text  # the single-seed caveat is gone


def test_the_leading_change_is_shown_with_its_gate_interval() -> None:
    from cli.render_campaign import render_summary
    from contracts import CampaignStatus, Comparison, GateDecision

    leader = Comparison(
        hypothesis_id="v-a", n=3, gain=0.01, gain_low=0.004, gain_high=0.016, passed=True
    )
    status = CampaignStatus(
        campaign_id="c",
        protocol="evidence",
        best_trial_id="v-a",
        best_metric=0.89,
        baseline_metric=0.9,
        decisions={
            "validation": GateDecision(
                metric="ne", correction="Holm", alpha=0.05, min_effect=0.0, comparisons=[leader]
            )
        },
    )
    assert "gate interval [+0.40%, +1.60%]" in render_summary(status)


def test_a_failed_trial_shows_its_error_and_the_end_of_its_job_log() -> None:
    from rich.console import Console

    from cli.render_campaign import render_failure
    from contracts import TrialResult, TrialSummary

    log = "\n".join(f"line {i}" for i in range(30)) + "\n[bold]not markup[/]"
    failed = TrialSummary(trial_id="v-a~r1", phase="validation").finished(
        TrialResult(
            campaign_id="c",
            trial_id="v-a~r1",
            state="failed",
            error="Slurm job 7 FAILED with exit code 2",
            error_type="JobFailed",
            log_tail=log,
        )
    )
    console = Console(width=100, record=True)
    console.print(render_failure(failed), soft_wrap=True)
    text = console.export_text()

    assert "v-a~r1 failed (JobFailed): Slurm job 7 FAILED with exit code 2" in text
    assert "| line 29" in text and "| line 20" not in text  # the last 10 lines
    assert "[bold]not markup[/]" in text  # log text is shown as written
    # A trial that did not fail keeps no log tail in the campaign's state.
    ok = TrialSummary(trial_id="b", phase="baseline").finished(
        TrialResult(campaign_id="c", trial_id="b", state="succeeded", log_tail="noise")
    )
    assert ok.log_tail == ""


def test_a_running_slurm_trial_shows_its_job_id() -> None:
    from cli.render_campaign import trial_state
    from contracts import JobHandle, TrialSummary

    job = JobHandle(runner="slurm", job_id="c/t/1", trial_id="t", details={"slurm_job_id": "42"})
    running = TrialSummary(trial_id="t", phase="baseline", job=job)

    assert trial_state(running) == "running (Slurm job 42)"
    assert trial_state(running.model_copy(update={"job": None})) == "running"


def test_wording_reads_the_same_in_every_view(tmp_path: Path) -> None:
    """A tuned arm is not "×2", a baseline worse than the mean is flagged in the CLI and the
    report, and a finished campaign's report says why a hypothesis was never gated."""
    from cli.render_campaign import arm_label, baseline_warning, render_summary
    from contracts import CampaignStatus, Hypothesis, PhasePlan, Plan, ScreenDecision
    from contracts.evidence import ScreenResult
    from report import write_report

    assert arm_label("x2") == "x2 (tuned #2)" and arm_label("v-x2") == "v-x2"
    plan = Plan(
        hypotheses=[Hypothesis(id="wide", title="Wide", changes={"embedding_dim": 32})],
        phases=[PhasePlan(phase="validation", trials=1, estimated_device_hours=1.0)],
        estimated_device_hours_per_trial=1.0,
    )
    screen = ScreenDecision(epochs=1, seed=0, results=[ScreenResult(arm="v-wide", value=1.1)])
    done = CampaignStatus(
        campaign_id="c", phase="done", plan=plan, screen=screen, baseline_metric=1.0074
    )
    assert "1.0074" in baseline_warning(done) and "label's mean" in render_summary(done)
    assert baseline_warning(done.model_copy(update={"baseline_metric": 0.92})) == ""
    page = write_report(done, tmp_path).read_text()
    assert "dropped at the screen" in page and "not gated yet" not in page
    assert "predicts worse than the label" in page


def test_an_expected_activity_failure_logs_one_line_not_a_traceback() -> None:
    """`rea up`'s console: a failure the user must fix (non-retryable: a model too big at
    planning) is one line; an unexpected one keeps its traceback."""
    import logging
    import sys

    from temporalio.exceptions import ApplicationError

    from cli.serve import _ExpectedFailures

    def record(err: Exception) -> logging.LogRecord:
        try:
            raise err
        except Exception:
            info = sys.exc_info()
        return logging.LogRecord("temporalio.activity", logging.WARNING, __file__, 1,
                                 "Completing activity as failed (%s)", ("plan",), info)  # fmt: skip

    handler = logging.StreamHandler()
    handler.addFilter(_ExpectedFailures())
    expected = record(ApplicationError("embedding tables need 90 GiB", type="BadSpecError",
                                       non_retryable=True))  # fmt: skip
    assert handler.filter(expected)
    line = handler.format(expected)
    assert "Traceback" not in line and len(line.splitlines()) == 1
    assert "BadSpecError: embedding tables need 90 GiB" in line
    # A trial's bad spec: retryable as raised, never retried by the trial's retry policy.
    never_retried = record(ApplicationError("dcn_low_rank 73 >= 44", type="BadSpecError"))
    assert handler.filter(never_retried) and "Traceback" not in handler.format(never_retried)
    unexpected = record(RuntimeError("boom"))
    assert handler.filter(unexpected) and "Traceback" in handler.format(unexpected)
    # The SDK's activity details name the activity and its workflow; its eight ids do not.
    from_sdk = record(ApplicationError("dcn_low_rank 73 >= 44", type="BadSpecError"))
    from_sdk.temporal_activity = {
        "activity_type": "train_trial",
        "workflow_id": "c7",
        "workflow_run_id": "01a2",
        "task_queue": "rea-training",
    }
    assert handler.filter(from_sdk)
    assert handler.format(from_sdk) == (
        "train_trial of c7 failed: BadSpecError: dcn_low_rank 73 >= 44 (not retried)"
    )
