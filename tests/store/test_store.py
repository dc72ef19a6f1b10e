"""The insights database: one contract suite, run against SQLite and PostgreSQL alike."""

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contracts import (
    Additivity,
    CampaignRecord,
    CampaignStatus,
    Comparison,
    Fp16Embeddings,
    GateDecision,
    HalveBatchSize,
    Hypothesis,
    InsightQuery,
    LlmCall,
    ModelSpec,
    Plan,
    Provenance,
    RemedyAttempt,
    RungDecision,
    TaskDescriptor,
    TrialRecord,
    TrialSpec,
)
from store import InsightsStore
from store.insights import pool
from tests.factories import campaign_request, succeeded

BASELINE = ModelSpec(epochs=1)
SMALL = TaskDescriptor(
    dataset="movielens-100k",
    rows=100_000,
    dense_features=4,
    sparse_features=10,
    total_cardinality=3_158,
    max_cardinality=1_682,
    label_rate=0.55,
    model_family="dot",
    model_params=58_000,
)
# A Criteo-like task: 100x the rows, 3x the features, 1000x the ids.
LARGE = SMALL.model_copy(
    update={
        "dataset": "synthetic-criteo",
        "rows": 10_000_000,
        "dense_features": 13,
        "sparse_features": 26,
        "total_cardinality": 3_000_000,
        "max_cardinality": 1_000_000,
        "label_rate": 0.25,
        "model_params": 50_000_000,
    }
)
WIDER = {"embedding_dim": BASELINE.embedding_dim * 2}
LOWER_LR = {"dense_lr": BASELINE.dense_lr / 3}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> InsightsStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'results.sqlite'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    return InsightsStore(url)


def trial(campaign_id: str, trial_id: str, arm: str, ne: float, **model: Any) -> TrialRecord:
    spec = TrialSpec(
        campaign_id=campaign_id,
        trial_id=trial_id,
        phase="validation",
        arm=arm,
        model=BASELINE.with_changes(model),
        dataset=campaign_request().dataset,
    )
    return TrialRecord(spec=spec, result=succeeded(spec, ne))


def comparison(arm: str, gain: float, half_width: float | None, passed: bool) -> Comparison:
    low = None if half_width is None else gain - half_width
    high = None if half_width is None else gain + half_width
    return Comparison(
        hypothesis_id=arm, n=3, gain=gain, gain_low=low, gain_high=high, passed=passed
    )


def campaign(
    campaign_id: str,
    task: TaskDescriptor,
    gains: dict[str, tuple[float, float | None]],
    additivity: list[Additivity] | None = None,
) -> CampaignRecord:
    """A campaign whose validation gate measured ``gains`` (arm: gain, interval half-width)."""
    hypotheses = [
        Hypothesis(
            id="wider",
            title="wider",
            changes=WIDER,
            source="knowledge",
            provenance=Provenance(source="knowledge", technique="embedding-dim-x2", citation="x"),
        ),
        Hypothesis(
            id="lower-lr",
            title="lower lr",
            changes=LOWER_LR,
            source="llm",
            provenance=Provenance(
                source="llm", model="smol", prompt_version="llm-planner/1", reply_digest="ab" * 32
            ),
        ),
    ]
    request = campaign_request(baseline=BASELINE)
    arms = {"v-wider": WIDER, "v-lower-lr": LOWER_LR}
    decision = GateDecision(
        metric="ne",
        correction="holm",
        alpha=0.05,
        min_effect=0.0,
        comparisons=[comparison(a, g, w, g > 0) for a, (g, w) in gains.items()],
        passed=[a for a, (g, _) in gains.items() if g > 0],
    )
    status = CampaignStatus(
        campaign_id=campaign_id,
        phase="done",
        protocol="evidence",
        planner="dual-source",
        plan=Plan(
            hypotheses=hypotheses[:1],
            held_back=hypotheses[1:],
            phases=[],
            estimated_device_hours_per_trial=0.1,
        ),
        decisions={"validation": decision},
        additivity=additivity or [],
        task=task,
    )
    return CampaignRecord(
        campaign_id=campaign_id,
        request=request,
        status=status,
        arm_changes={a: arms[a] for a in gains},
    )


def test_trials_are_upserted_and_listed_in_recording_order(store: InsightsStore) -> None:
    store.record_campaign(campaign("c1", SMALL, {"v-wider": (0.01, 0.005)}))
    first = trial("c1", "v-wider~s1", "v-wider", 0.9, **WIDER)
    store.put_trial(first)
    store.put_trial(first)  # a retried activity
    store.put_trial(trial("c1", "baseline~s1", "baseline", 0.91))
    store.put_trial(trial("c2", "baseline~s1", "baseline", 0.5))

    stored = store.trials("c1")
    assert [r.spec.trial_id for r in stored] == ["v-wider~s1", "baseline~s1"]
    assert stored[0] == first


def test_a_campaign_is_recorded_once_with_provenance_and_decisions(store: InsightsStore) -> None:
    record = campaign("c1", SMALL, {"v-wider": (0.01, 0.005), "v-lower-lr": (-0.002, 0.004)})
    store.record_campaign(record)
    store.record_campaign(record)  # a replayed or retried recording

    hypotheses = {h["hypothesis_id"]: h for h in store.hypotheses("c1")}
    assert set(hypotheses) == {"wider", "lower-lr"}
    assert hypotheses["wider"]["planned"] == 1 and hypotheses["lower-lr"]["planned"] == 0
    assert hypotheses["wider"]["technique"] == "embedding-dim-x2"
    assert hypotheses["lower-lr"]["model"] == "smol"
    assert hypotheses["lower-lr"]["reply_digest"] == "ab" * 32
    assert hypotheses["wider"]["change"] == "embedding_dim ×2"
    decisions = {d["arm"]: d for d in store.decisions("c1")}
    assert len(store.decisions("c1")) == 2
    assert decisions["v-wider"]["gain_low"] == pytest.approx(0.005)
    assert decisions["v-wider"]["passed"] == 1 and decisions["v-lower-lr"]["passed"] == 0
    assert store.task_of("c1") == SMALL
    assert store.campaigns() == ["c1"]


def test_trials_keep_their_diff_from_the_campaign_baseline(store: InsightsStore) -> None:
    store.record_campaign(campaign("c1", SMALL, {"v-wider": (0.01, 0.005)}))
    store.put_trial(trial("c1", "v-wider~s1", "v-wider", 0.9, **WIDER))
    with store._engine.connect() as conn:  # the column insights would query
        from sqlalchemy import text

        changes = conn.execute(text("SELECT changes FROM trial_records")).scalar_one()
    assert (json.loads(changes) if isinstance(changes, str) else changes) == WIDER


def test_llm_replies_are_cached_by_prompt_digest(store: InsightsStore) -> None:
    def call(reply: str, cached: bool = False) -> LlmCall:
        return LlmCall(
            prompt_digest="p1",
            model="m",
            prompt_version="v",
            mode="tool",
            raw_reply=reply,
            reply_digest="d",
            cached=cached,
        )

    assert store.cached_reply("p1") is None
    store.record_call(call("first"))
    store.record_call(call("second"))
    store.record_call(call("second", cached=True))
    assert store.cached_reply("p1") == "second"
    assert [c.cached for c in store.llm_calls()] == [False, False, True]


def test_insights_pool_similar_tasks_and_discount_distant_ones(store: InsightsStore) -> None:
    store.record_campaign(campaign("small-1", SMALL, {"v-wider": (0.010, 0.004)}))
    store.record_campaign(campaign("small-2", SMALL, {"v-wider": (0.006, 0.004)}))
    store.record_campaign(campaign("large", LARGE, {"v-wider": (-0.020, 0.004)}))

    near = {i.change: i for i in store.insights(InsightQuery(task=SMALL))}["embedding_dim ×2"]
    assert near.campaigns == 2 and near.comparisons == 2  # the distant task is below the cut
    assert near.mean_gain == pytest.approx(0.008)
    assert near.gain_low is not None and near.gain_high is not None
    assert near.gain_low < 0.008 < near.gain_high
    assert near.passed == 2

    everywhere = {i.change: i for i in store.insights()}["embedding_dim ×2"]
    assert everywhere.comparisons == 3 and everywhere.mean_gain < 0  # unweighted: all three


def test_insights_report_interactions_of_merges(store: InsightsStore) -> None:
    merged = Additivity(
        arm="c-wider+lower-lr", parts=["wider", "lower-lr"], gain=0.004, parts_gain=0.010
    )
    store.record_campaign(
        campaign("c1", SMALL, {"v-wider": (0.006, 0.003), "v-lower-lr": (0.004, 0.003)}, [merged])
    )
    by_change = {i.change: i for i in store.insights()}
    (interaction,) = by_change["embedding_dim ×2"].interactions
    assert interaction.change == "dense_lr ÷3"
    assert interaction.excess == pytest.approx(-0.006) and interaction.n == 1


def test_a_confirmation_that_lost_counts_as_a_loss_not_a_validation_win(
    store: InsightsStore,
) -> None:
    record = campaign("c1", SMALL, {"v-wider": (0.008, 0.004)})
    lost_on_test = GateDecision(
        metric="ne",
        correction="holm",
        alpha=0.05,
        min_effect=0.0,
        split="test",
        comparisons=[comparison("v-wider", -0.005, 0.006, False)],
    )
    status = record.status
    decisions = {**status.decisions, "confirmation": lost_on_test}
    store.record_campaign(
        record.model_copy(update={"status": status.model_copy(update={"decisions": decisions})})
    )
    (wider,) = [i for i in store.insights() if i.change == "embedding_dim ×2"]
    assert wider.mean_gain == pytest.approx(-0.005) and wider.passed == 0


def test_a_screen_s_full_data_rung_is_weak_evidence_for_what_no_gate_weighed(
    store: InsightsStore,
) -> None:
    record = campaign("c1", SMALL, {"v-wider": (0.008, 0.004)})
    rung = RungDecision(
        rung=1,
        data_fraction=1.0,
        seed=0,
        baseline=0.80,
        values={"v-wider": 0.79, "v-lower-lr": 0.78},
        promoted=["v-wider"],
    )
    plan = record.status.plan
    assert plan is not None
    status = record.status.model_copy(
        update={
            "rungs": [rung],
            "plan": plan.model_copy(update={"hypotheses": plan.hypotheses + plan.held_back}),
        }
    )
    store.record_campaign(record.model_copy(update={"status": status}))
    by_change = {i.change: i for i in store.insights()}
    screened = by_change["dense_lr ÷3"]
    assert screened.mean_gain == pytest.approx(0.025) and screened.passed == 0
    assert screened.gain_low is not None and screened.gain_high - screened.gain_low > 0.03
    assert by_change["embedding_dim ×2"].comparisons == 1  # the gate's, not the screen's too


def test_pooling_weights_precision_and_similarity() -> None:
    gains, errors = np.array([0.01, 0.03]), np.array([0.01, 0.01])
    mean, se = pool(gains, errors, np.array([1.0, 1.0]))
    assert mean == pytest.approx(0.02) and se == pytest.approx(0.01 / np.sqrt(2))
    leaning, _ = pool(gains, errors, np.array([1.0, 0.1]))  # the second task is less similar
    assert leaning == pytest.approx((0.01 + 0.1 * 0.03) / 1.1)
    precise, _ = pool(gains, np.array([0.001, 0.01]), np.array([1.0, 1.0]))
    assert precise < 0.0103  # the precise estimate dominates


def test_the_first_versions_trial_store_is_migrated_in_order(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    legacy = sqlite3.connect(path)
    legacy.execute(
        "CREATE TABLE trials (campaign_id TEXT NOT NULL, trial_id TEXT NOT NULL, state TEXT, "
        "record TEXT NOT NULL, PRIMARY KEY (campaign_id, trial_id))"
    )
    records = [trial("c1", t, "baseline", 0.9) for t in ("z", "a", "m")]
    for r in records:
        legacy.execute(
            "INSERT INTO trials VALUES (?, ?, ?, ?)",
            ("c1", r.spec.trial_id, "completed", r.model_dump_json()),
        )
    legacy.commit()
    legacy.close()

    store = InsightsStore(f"sqlite:///{path}")
    assert store.trials("c1") == records  # insertion order, not key order
    store.close()
    version = sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchall()
    assert version == [("0003",)]
    InsightsStore(f"sqlite:///{path}").close()  # opening again migrates nothing


def test_remedies_are_upserted_per_attempt_and_counted_per_pattern(store: InsightsStore) -> None:
    def attempt(n: int, kind: str, state: str) -> RemedyAttempt:
        remedy = HalveBatchSize() if kind == "halve_batch_size" else Fp16Embeddings()
        return RemedyAttempt(
            trial_id="v-x~r0",
            attempt=n,
            pattern_id="host-oom",
            remedy=remedy,
            run_trial_id=f"v-x~r0~r{n}",
            state=state,  # type: ignore[arg-type]
        )

    store.record_remedy("c1", attempt(1, "fp16_embeddings", "running"))
    store.record_remedy("c1", attempt(1, "fp16_embeddings", "failed"))  # the same row, ended
    store.record_remedy("c1", attempt(2, "halve_batch_size", "succeeded"))
    store.record_remedy("c2", attempt(1, "fp16_embeddings", "running"))  # not finished: ignored
    store.record_remedy("c3", attempt(1, "fp16_embeddings", "cancelled"))  # never ran: ignored

    assert [(a.attempt, a.state) for a in store.remedies("c1")] == [(1, "failed"), (2, "succeeded")]
    assert store.remedy_stats() == {
        ("host-oom", "fp16_embeddings"): (1, 0),
        ("host-oom", "halve_batch_size"): (1, 1),
    }
