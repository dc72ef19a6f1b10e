"""The HTML campaign report: built from a real campaign's final status, checked as text and
in a real browser (headless Debian Chromium through Playwright)."""

import base64
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from contracts import (
    CampaignResult,
    CampaignStatus,
    Comparison,
    Diagnosis,
    Escalation,
    Hypothesis,
    RemedyAttempt,
    ResolveTrialInput,
    TrialSummary,
)
from contracts.ledger import Ledger, PhaseLedger
from contracts.runbook import HalveBatchSize
from report import SECTIONS, write_report

if TYPE_CHECKING:
    from playwright.sync_api import Browser

HISTORY = Path(__file__).parents[1] / "histories" / "campaign_v7.json"
CHROMIUM = Path("/usr/bin/chromium")
XSS = "<script>alert(1)</script>"


def recorded_status() -> CampaignStatus:
    """The final status of a real campaign (the replayed ``campaign_v7`` history's result):
    evidence protocol, a diverged trial remedied, gates with intervals, a launch proposal."""
    events = json.loads(HISTORY.read_text())["events"]
    payload = events[-1]["workflowExecutionCompletedEventAttributes"]["result"]["payloads"][0]
    return CampaignResult.model_validate_json(base64.b64decode(payload["data"])).status


def full_status() -> CampaignStatus:
    """The recorded campaign plus what it happened not to meet: an LLM hypothesis whose text
    holds markup, a failed trial whose remedy failed too and was escalated and answered, a
    pruned and a cancelled trial."""
    status = recorded_status()
    assert status.plan is not None
    llm = Hypothesis(
        id="llm-attn", title=f"attention over {XSS} features", source="llm", changes={}
    )
    plan = status.plan.model_copy(update={"hypotheses": [*status.plan.hypotheses, llm]})
    failed = TrialSummary(
        trial_id="v-llm-attn~r0",
        phase="validation",
        arm="v-llm-attn",
        hypothesis_ids=["llm-attn"],
        state="failed",
        error_type="host-oom",
        error="MemoryError: <tensor> of 9 GiB",
        duration_s=120.0,
        device_hours=0.05,
    )
    retry = failed.model_copy(
        update={"trial_id": "v-llm-attn~r0~r1", "remedy_of": "v-llm-attn~r0", "duration_s": 90.0}
    )
    attempt = RemedyAttempt(
        trial_id="v-llm-attn~r0",
        attempt=1,
        pattern_id="host-oom",
        remedy=HalveBatchSize(),
        run_trial_id="v-llm-attn~r0~r1",
        state="failed",
        error_type="host-oom",
    )
    escalation = Escalation(
        trial_id="v-llm-attn~r0",
        error_type="host-oom",
        error="MemoryError",
        diagnosis=Diagnosis(
            diagnosis="embedding tables exceed host memory", why_escalate="remedies used up"
        ),
        tried=[attempt],
        resolution=ResolveTrialInput(
            approver="alice@example.com", trial_id="v-llm-attn~r0", action="skip", comment="too big"
        ),
    )
    extra = [
        failed,
        retry,
        TrialSummary(
            trial_id="x6~x", phase="exploitation", arm="x6", state="pruned", duration_s=600.0
        ),
        TrialSummary(
            trial_id="x7~x", phase="exploitation", arm="x7", state="cancelled", duration_s=60.0
        ),
    ]
    validation = status.decisions["validation"]
    llm_gate = Comparison(hypothesis_id="v-llm-attn", gain=0.001, p_value=0.6, p_adjusted=1.0)
    decisions = {
        **status.decisions,
        "validation": validation.model_copy(
            update={"comparisons": [*validation.comparisons, llm_gate]}
        ),
    }
    return status.model_copy(
        update={
            "plan": plan,
            "trials": [*status.trials, *extra],
            "remedies": [*status.remedies, attempt],
            "escalations": [escalation],
            "decisions": decisions,
        }
    )


def validating_status() -> CampaignStatus:
    """The recorded campaign caught in validation: no gate decided, no proposal yet."""
    status = recorded_status()
    return status.model_copy(
        update={
            "phase": "validation",
            "trials": status.trials[:8],
            "decisions": {},
            "proposal": None,
            "ledger": Ledger(
                approved=100.0, phases={"validation": PhaseLedger(estimated=19.0, spent=8.0)}
            ),
        }
    )


def section(page: str, sid: str) -> str:
    found = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert found, f"section {sid} missing"
    return found.group(1)


def test_report_has_every_section_with_intervals_and_escapes_campaign_text(tmp_path: Path) -> None:
    path = write_report(full_status(), tmp_path)
    page = path.read_text()
    assert path == tmp_path / "campaign-recorded.html"
    for sid in SECTIONS:
        section(page, sid)
    # Self-contained: every figure inline, nothing fetched.
    assert not re.search(r'(src|href)="(?!data:image/png;base64,)', page)
    assert page.count('src="data:image/png;base64,') == 5
    assert (tmp_path / "campaign-recorded-timeline.png").stat().st_size > 10_000
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;tensor&gt;" in section(page, "failures")
    assert "<script" not in page
    # The real proposal's headline and its confirmation, with the interval.
    summary = section(page, "summary")
    assert "launch v-wider-embeddings: test NE gain +2.18% [+2.06%, +2.30%]" in summary
    assert "35 of 100 device-hours spent" in summary
    hypotheses = section(page, "hypotheses")
    assert "+2.23% [+2.12%,\u00a0+2.33%]" in hypotheses  # the validation gain of wider-embeddings
    assert "no interval: too few paired seeds" in hypotheses  # never a bare gain
    assert "tuned:" in hypotheses and "optuna" in hypotheses
    failures = section(page, "failures")
    assert "nan-loss" in failures and "v-wider-over-arch~r0~r1: succeeded" in failures
    assert "skip by alice@example.com: too big" in failures
    assert "embedding tables exceed host memory" in failures
    assert "+2.18% [+2.06%,\u00a0+2.30%]" in section(page, "proposal")


def test_a_campaign_in_validation_says_what_is_missing(tmp_path: Path) -> None:
    page = write_report(validating_status(), tmp_path).read_text()
    assert "No launch proposal yet" in section(page, "proposal")
    assert "No gate has compared seeded runs yet." in section(page, "evidence")
    assert "not gated yet" in section(page, "hypotheses")
    planning = write_report(CampaignStatus(campaign_id="new"), tmp_path).read_text()
    for sid in SECTIONS:
        assert 'class="empty"' in section(planning, sid) or sid == "summary"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium")
def test_report_renders_in_a_browser(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    reports = {
        "full": write_report(full_status(), tmp_path / "full"),
        "validation": write_report(validating_status(), tmp_path / "validation"),
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        try:
            for name, path in reports.items():
                errors = open_and_check(browser, path, tmp_path / f"{name}.png")
                assert errors == [], f"{name}: {errors}"
        finally:
            browser.close()


def open_and_check(browser: "Browser", path: Path, shot: Path) -> list[str]:
    """Open the report, check its sections and images, screenshot it; the page's errors."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    for sid in SECTIONS:
        assert page.locator(f"section#{sid}").is_visible(), f"{path}: {sid}"
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert images and all(w and w > 0 for w in images), f"{path}: {images}"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000
    return errors


def test_rea_campaign_report_writes_the_page_into_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import cli
    from cli import campaign

    status = recorded_status()

    async def no_client(settings: object) -> None:
        return None

    async def the_status(handle: object) -> CampaignStatus:
        return status

    # The Temporal round trip is covered by the first-hour tests; here only what the command
    # does with the status it gets.
    monkeypatch.setattr(campaign, "make_client", no_client)
    monkeypatch.setattr(campaign, "campaign_handle", lambda client, campaign_id: None)
    monkeypatch.setattr(campaign, "query_status", the_status)
    runner = CliRunner()
    out = tmp_path / "reports"
    result = runner.invoke(cli.app, ["campaign", "report", "campaign-recorded", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "campaign-recorded.html" in result.output
    assert (out / "campaign-recorded.html").exists() and (out / "campaign-recorded.png").exists()
    (tmp_path / "file").write_text("")
    result = runner.invoke(cli.app, ["campaign", "report", "c", "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "pass a folder" in result.output


def test_the_timeline_uses_the_campaigns_clock_and_falls_back_to_launch_order() -> None:
    from datetime import UTC, datetime, timedelta

    from report.charts import _timeline_spans

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    timed = [
        TrialSummary(
            trial_id="a",
            phase="baseline",
            launched_at=t0,
            ended_at=t0 + timedelta(minutes=30),
            duration_s=600.0,
        ),
        TrialSummary(trial_id="b", phase="validation", launched_at=t0 + timedelta(minutes=5)),
    ]
    starts, lengths, label = _timeline_spans(timed)
    # Launch to result (30 min, queueing included), not the 10 minutes of compute; a trial
    # still running is as long as it has run (0 here).
    assert (starts, lengths) == ([0.0, 5.0], [30.0, 0.0]) and "since the first launch" in label
    untimed = [t.model_copy(update={"launched_at": None}) for t in timed]
    starts, lengths, label = _timeline_spans(untimed)
    assert (starts, lengths) == ([0.0, 0.0], [10.0, 0.0]) and "launch order" in label
