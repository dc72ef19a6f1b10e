"""`rea insights` and the plan as people read it (terminal, JSON, CSV)."""

import csv
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli import app
from cli.render_campaign import render_plan, render_provenance
from contracts import CampaignStatus, Hypothesis, Plan, Provenance
from store import InsightsStore
from tests.store.test_store import LARGE, SMALL, campaign

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REA_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("REA_DATABASE_URL", raising=False)
    store = InsightsStore(f"sqlite:///{tmp_path.resolve() / 'results.sqlite'}")
    store.record_campaign(campaign("small", SMALL, {"v-wider": (0.01, 0.004)}))
    store.record_campaign(
        campaign("large", LARGE, {"v-wider": (-0.02, 0.004), "v-lower-lr": (0.003, 0.002)})
    )
    store.close()
    return tmp_path


def test_insights_show_pooled_changes_and_filter(data_dir: Path) -> None:
    result = runner.invoke(app, ["insights"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert "embedding_dim ×2" in result.output and "dense_lr ÷3" in result.output
    assert "every task alike" in result.output

    like_small = runner.invoke(app, ["insights", "--task-like", "small", "--json"])
    found = {i["change"]: i for i in json.loads(like_small.output)}
    # Weighted by similarity to the small task, the distant task's evidence drops out.
    assert found["embedding_dim ×2"]["mean_gain"] == pytest.approx(0.01)
    assert "dense_lr ÷3" not in found

    only = runner.invoke(app, ["insights", "--family", "dense-optimizer", "--json"])
    assert [i["change"] for i in json.loads(only.output)] == ["dense_lr ÷3"]


def test_insights_export_csv(data_dir: Path) -> None:
    out = data_dir / "insights.csv"
    result = runner.invoke(app, ["insights", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert {r["change"] for r in rows} == {"embedding_dim ×2", "dense_lr ÷3"}
    assert all(r["gain_low"] and r["gain_high"] for r in rows)


def test_unknown_campaign_for_similarity_is_a_one_line_error(data_dir: Path) -> None:
    result = runner.invoke(app, ["insights", "--task-like", "nope"])
    assert result.exit_code == 2
    assert "--task-like: no task recorded for campaign 'nope'" in result.output
    assert "small" in result.output  # the campaigns it knows


def test_the_plan_shows_sources_cut_order_and_provenance() -> None:
    knowledge = Hypothesis(
        id="dcn",
        title="DCNv2 cross layers",
        changes={"interaction": "dcn"},
        source="knowledge",
        expected_gain=0.004,
        provenance=Provenance(
            source="knowledge",
            agent="knowledge-catalog/1",
            technique="dcn-v2",
            citation="Wang et al. 2021, arXiv:2008.13535",
            evidence="2 past comparisons on similar tasks: +0.52%",
        ),
    )
    llm = Hypothesis(
        id="llm-ln",
        title="Layer norm",
        changes={"dense_norm": "layer"},
        source="llm",
        provenance=Provenance(source="llm", model="smollm2", reply_digest="f" * 64),
    )
    plan = Plan(
        hypotheses=[knowledge],
        held_back=[llm],
        phases=[],
        estimated_device_hours_per_trial=0.01,
        kept_down_to={"dcn": 0.2},
        notes=["no LLM endpoint configured"],
    )
    console = Console(width=80, record=True)
    console.print(render_plan(CampaignStatus(campaign_id="c", plan=plan)))
    console.print(render_provenance(plan))
    text = console.export_text()
    assert "dcn" in text and "knowledge" in text and "+0.40%" in text and "0.2" in text
    assert "held back: Layer norm" in text and "no LLM endpoint configured" in text
    assert "arXiv:2008.13535" in text and "model smollm2" in text and "ffffffffffff" in text
