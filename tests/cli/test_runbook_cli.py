"""`rea runbook` and the escalation/preflight views, without a server: what an engineer reads
and what an answer saves."""

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli import app
from cli.render_campaign import render_escalation, render_preflight
from contracts import (
    Diagnosis,
    Escalation,
    FailureReport,
    ModelSpec,
    PreflightItem,
    PreflightReport,
    RemedyAttempt,
    ResolveTrialInput,
    RetryElsewhere,
)
from runbooks import choose, entry_from_escalation, entry_yaml, load_runbook
from tests.runbooks.test_runbooks import failure, spec

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REA_DATA_DIR", str(tmp_path))
    return tmp_path


def escalation(answer: ResolveTrialInput | None) -> Escalation:
    return Escalation(
        trial_id="v-x~r0",
        error_type="HasherCrash",
        error="segmentation fault in the id hasher at row 1234",
        diagnosis=Diagnosis(
            why_escalate="no runbook entry matches HasherCrash",
            log_tail="Traceback (most recent call last):\n  File hasher.py\nHasherCrash: boom",
        ),
        tried=[
            RemedyAttempt(
                trial_id="v-x~r0",
                attempt=1,
                pattern_id="agent",
                remedy=RetryElsewhere(),
                run_trial_id="v-x~r0",
                state="failed",
            )
        ],
        model=ModelSpec(),
        resolution=answer,
    )


def text(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable, soft_wrap=True)
    return console.export_text()


def test_an_escalation_shows_the_error_the_log_tail_what_was_tried_and_how_to_answer() -> None:
    shown = text(render_escalation("c-1", escalation(None)))
    assert "trial v-x~r0 needs attention: HasherCrash: segmentation fault" in shown
    assert "why: no runbook entry matches HasherCrash" in shown
    assert "| HasherCrash: boom" in shown
    assert "tried: retry_elsewhere (agent) -> failed" in shown
    assert "rea campaign resolve c-1 v-x~r0 --as YOU --retry" in shown


def test_the_preflight_table_names_what_failed_and_the_fix() -> None:
    report = PreflightReport(
        items=[
            PreflightItem(check="data", ok=False, detail="/d does not exist", fix="restore /d"),
            PreflightItem(check="cost", ok=True, detail="0.2 of 1 device-hours"),
        ]
    )
    shown = text(render_preflight(report))
    assert "FAILED" in shown and "restore /d" in shown and "--override-preflight" in shown


def test_an_answered_escalation_becomes_an_entry_that_handles_the_failure_next_time(
    data_dir: Path,
) -> None:
    answer = ResolveTrialInput(
        approver="alice",
        trial_id="v-x~r0",
        action="retry",
        changes={"batch_size": 256},
        comment="the hasher overflows above 256 rows per batch",
    )
    entry = entry_from_escalation(escalation(answer), "c-1/v-x~r0")
    folder = data_dir / "runbooks"
    folder.mkdir()
    (folder / f"{entry.id}.yaml").write_text(entry_yaml(entry))

    book = load_runbook(folder)  # validates with the shipped entries
    again = failure("HasherCrash", "segmentation fault in the id hasher at row 99")
    diagnosis = choose(book, FailureReport(spec=spec(), result=again), {})
    assert diagnosis.pattern_id == "hashercrash-fix" and diagnosis.source == "runbook"
    assert diagnosis.model is not None and diagnosis.model.batch_size == 256
    assert "overflows" in diagnosis.diagnosis

    listed = runner.invoke(app, ["runbook", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "hashercrash-fix" in listed.output and "host-oom" in listed.output
    checked = runner.invoke(app, ["runbook", "check"])
    assert checked.exit_code == 0 and "runbook entries are valid" in checked.output


def test_an_unanswered_escalation_cannot_become_an_entry() -> None:
    with pytest.raises(ValueError, match="no answer yet"):
        entry_from_escalation(escalation(None), "c-1/v-x~r0")


def test_a_broken_runbook_file_is_one_line_naming_file_and_field(data_dir: Path) -> None:
    folder = data_dir / "runbooks"
    folder.mkdir()
    (folder / "mine.yaml").write_text("id: Bad Id\ntitle: x\nmatch: {states: [failed]}\n")
    result = runner.invoke(app, ["runbook", "check"])
    assert result.exit_code == 2
    assert "mine.yaml: id:" in result.output


def test_resolve_needs_exactly_one_answer() -> None:
    result = runner.invoke(
        app, ["campaign", "resolve", "c-1", "t", "--as", "a", "--skip", "--stop"]
    )
    assert result.exit_code == 2 and "exactly one of --retry, --skip, --stop" in result.output
    result = runner.invoke(
        app, ["campaign", "resolve", "c-1", "t", "--as", "a", "--skip", "--set", "batch_size=2"]
    )
    assert result.exit_code == 2 and "--set: changes only go with --retry" in result.output
