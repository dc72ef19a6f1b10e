"""Result storage (idempotent by campaign and trial) and the planning activities."""

import json
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.agents import space
from activities.planning import PlanningActivities, make_plan
from activities.results import ResultActivities
from contracts import (
    CampaignRequest,
    DatasetRef,
    Hypothesis,
    ModelSpec,
    PlanningInput,
    ProposalInput,
    TrialRecord,
    TrialSpec,
)
from ranking_models.cost import estimate_seconds_range, fraction_fixed_share
from ranking_models.datasets import load_dataset
from ranking_models.dlrm import validate_spec
from ranking_models.tasks import describe_task, relative_cost
from store import InsightsStore
from tests.factories import campaign_request, succeeded
from tests.store.test_store import WIDER, campaign

ROOT = Path(__file__).resolve().parents[2]


def spec(trial_id: str) -> TrialSpec:
    request = campaign_request()
    return TrialSpec(
        campaign_id="c1",
        trial_id=trial_id,
        phase="validation",
        model=request.baseline,
        dataset=request.dataset,
    )


def test_record_trial_is_idempotent_and_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'results.sqlite'}"
    store = InsightsStore(url)
    record = ResultActivities(store).record_trial
    env = ActivityEnvironment()
    first = TrialRecord(spec=spec("a"), result=succeeded(spec("a"), 0.9))
    env.run(record, first)
    env.run(record, first)  # a retried activity
    env.run(record, TrialRecord(spec=spec("b"), result=succeeded(spec("b"), 0.8)))
    store.close()

    stored = InsightsStore(url).trials("c1")
    assert [r.spec.trial_id for r in stored] == ["a", "b"]
    assert stored[0] == first


def test_plan_keeps_hypotheses_inside_the_action_space() -> None:
    # embedding_dim 512 is the cap: doubling it is not a valid spec, so it is not proposed.
    request = campaign_request(baseline=ModelSpec(embedding_dim=512))
    plan = make_plan(PlanningInput(campaign_id="c1", request=request), lambda m, d: (36.0, 36.0))

    ids = [h.id for h in plan.hypotheses]
    assert "wider-embeddings" not in ids and len(ids) == 5
    for hypothesis in plan.hypotheses:
        request.baseline.with_changes(hypothesis.changes)  # raises if invalid
    assert plan.estimated_device_hours_per_trial == 0.01
    validation, combination = plan.phases
    assert validation.trials == 6 and combination.trials == 2
    assert plan.estimated_device_hours == pytest.approx(0.08)


def test_plan_respects_the_trial_cap() -> None:
    request = campaign_request()
    request = request.model_copy(
        update={"budget": request.budget.model_copy(update={"max_trials": 3})}
    )
    plan = ActivityEnvironment().run(
        PlanningActivities(lambda m, d: (3600.0, 3600.0)).plan_campaign,
        PlanningInput(campaign_id="c1", request=request),
    )
    assert len(plan.hypotheses) == 2
    assert [p.trials for p in plan.phases] == [3, 0]


def test_plan_says_when_a_phase_may_run_fewer_trials_and_shows_a_range() -> None:
    plan = make_plan(
        PlanningInput(campaign_id="c1", request=campaign_request()), lambda m, d: (36.0, 72.0)
    )
    validation, combination = plan.phases
    assert not validation.condition
    assert "beat the baseline" in combination.condition
    assert plan.estimated_device_hours_high == pytest.approx(2 * plan.estimated_device_hours)


def test_the_knowledge_source_proposes_with_task_insights_and_cost(tmp_path: Path) -> None:
    store = InsightsStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    request = campaign_request()
    task = describe_task(request.dataset, request.baseline)
    # A past campaign on this very task where doubling the embeddings helped.
    store.record_campaign(campaign("past", task, {"v-wider": (0.01, 0.004)}))
    planning = PlanningActivities(
        lambda m, d: (36.0, 72.0),
        store=store,
        describe_task=describe_task,
        relative_cost=relative_cost,
        fixed_share=fraction_fixed_share,
    )
    proposals = ActivityEnvironment().run(
        planning.propose_hypotheses,
        ProposalInput(campaign_id="c1", request=request, max_hypotheses=8),
    )
    assert proposals.source == "knowledge" and proposals.task == task
    assert proposals.estimated_device_hours_per_trial == pytest.approx(0.01)
    assert proposals.estimated_device_hours_per_trial_high == pytest.approx(0.02)
    share = fraction_fixed_share(request.baseline, request.dataset)
    assert proposals.fixed_cost_share == share and 0 < share < 1
    assert [i.change for i in proposals.insights] == ["embedding_dim ×2"]
    assert 0 < len(proposals.hypotheses) <= 8
    for h in proposals.hypotheses:
        request.baseline.with_changes(h.changes)  # raises if invalid
        assert h.provenance is not None and h.source in ("knowledge", "insights")
    wider = next(h for h in proposals.hypotheses if h.changes == WIDER)
    assert wider.cost_factor > 1.0  # twice the embedding traffic costs more
    assert "past" in wider.provenance.evidence or "1 " in wider.provenance.evidence


@pytest.mark.parametrize(
    ("request_changes", "error_type", "named"),
    [
        ({"dataset": DatasetRef(path="/nonexistent/ml-100k")}, "BadDataError", "/nonexistent"),
        (
            {
                "baseline": ModelSpec(
                    max_table_rows=100_000_000,
                    table_rows={"user_id": 100_000_000},
                    embedding_dim=512,
                )
            },
            "OutOfMemoryError",
            "table_rows",
        ),
    ],
)
def test_planning_errors_no_retry_can_fix_are_non_retryable(
    request_changes: dict[str, object], error_type: str, named: str
) -> None:
    """With the real estimator: a missing dataset or a model too big for this host."""
    planning = PlanningActivities(estimate_seconds_range, describe_task=describe_task)
    request = campaign_request(**request_changes)
    for activity, inp in [
        (planning.propose_hypotheses, ProposalInput(campaign_id="c1", request=request)),
        (planning.plan_campaign, PlanningInput(campaign_id="c1", request=request)),
    ]:
        with pytest.raises(ApplicationError) as raised:
            ActivityEnvironment().run(activity, inp)
        assert raised.value.non_retryable
        assert raised.value.type == error_type
        assert named in str(raised.value)


def test_a_second_campaign_on_a_similar_task_ranks_by_what_the_first_learned(
    tmp_path: Path,
) -> None:
    """Through the database: the first campaign's gates found that doubling the embeddings
    hurt here; the next campaign on the same kind of task ranks it lower than a fresh one."""
    request = campaign_request()
    task = describe_task(request.dataset, request.baseline)
    store = InsightsStore(f"sqlite:///{tmp_path / 'results.sqlite'}")

    def ranking() -> list[str]:
        planning = PlanningActivities(
            lambda m, d: (36.0, 36.0), store=store, describe_task=describe_task
        )
        proposals = ActivityEnvironment().run(
            planning.propose_hypotheses,
            ProposalInput(campaign_id="next", request=request, max_hypotheses=30),
        )
        return [planner_key(h.changes) for h in proposals.hypotheses]

    cold = ranking()
    for i in range(3):  # three past campaigns, each a clear loss
        store.record_campaign(campaign(f"past-{i}", task, {"v-wider": (-0.01, 0.003)}))
    warm = ranking()

    wider = planner_key(WIDER)
    assert wider in cold[:6]
    assert wider not in warm or warm.index(wider) > cold.index(wider) + 3
    assert cold != warm


def planner_key(changes: dict[str, object]) -> str:
    return json.dumps(changes, sort_keys=True)


def test_the_action_space_leaves_out_moves_that_do_not_build_on_the_data() -> None:
    # A 4-wide embedding over MovieLens's features makes a 44-wide cross layer: the probe
    # of a rank-64 DCN passes every data-free check and cannot be built on this data.
    request = CampaignRequest.model_validate_json(
        (ROOT / "examples" / "tasks" / "ml100k-small-model.json").read_text()
    )
    planning = PlanningActivities(lambda m, d: (1.0, 2.0), relative_cost=relative_cost)
    proposals = ActivityEnvironment().run(
        planning.propose_space_points,
        ProposalInput(campaign_id="c1", request=request, max_hypotheses=20),
    )
    data = load_dataset(request.dataset, max_table_rows=request.baseline.max_table_rows)
    unchecked = space.hypotheses(request.baseline, 20, request.baseline.seed)
    assert len(proposals.hypotheses) < len(unchecked)  # the rank-64 probe, at least
    assert {"interaction": "dcn", "dcn_low_rank": 64} in [h.changes for h in unchecked]
    for h in proposals.hypotheses:
        validate_spec(request.baseline.with_changes(h.changes), data.schema)  # raises if not


def test_the_action_space_draws_only_what_the_screen_can_measure() -> None:
    # On a tiny baseline nearly every point of the whole box costs hundreds of its trials:
    # the screen would stop each at its cap, unmeasured. Capped, every draw the planner gets
    # fits, and still moves every kind of knob.
    request = CampaignRequest.model_validate_json(
        (ROOT / "examples" / "tasks" / "ml100k-small-model.json").read_text()
    )
    planning = PlanningActivities(lambda m, d: (1.0, 2.0), relative_cost=relative_cost)

    def points(max_cost: float | None) -> list[Hypothesis]:
        inp = ProposalInput(
            campaign_id="c1", request=request, max_hypotheses=30, max_cost_factor=max_cost
        )
        proposed = ActivityEnvironment().run(planning.propose_space_points, inp).hypotheses
        return [h for h in proposed if h.id.startswith("point")]

    uncapped, capped = points(None), points(8.0)
    assert sum(h.cost_factor > 8.0 for h in uncapped) > len(uncapped) / 2
    assert len(capped) == 30
    assert all(h.cost_factor <= 8.0 for h in capped)
    for h in capped:  # what the planner says a point costs is what it costs
        model = request.baseline.with_changes(h.changes)
        assert h.cost_factor == pytest.approx(
            relative_cost(request.baseline, model, request.dataset)
        )
    moved = {field for h in capped for field in h.changes}
    assert {"embedding_dim", "dense_hidden", "dense_lr", "batch_size", "epochs"} <= moved


def test_hashed_ids_are_seen_and_the_hash_rows_move_proposed() -> None:
    # 8 features of 20,000 ids hashed into 1,024 rows each: the descriptor counts the ids
    # before hashing, so the catalog's "more rows" move applies.
    request = CampaignRequest.model_validate_json(
        (ROOT / "examples" / "tasks" / "synthetic-long-tail.json").read_text()
    )
    task = describe_task(request.dataset, request.baseline)
    assert request.baseline.max_table_rows == 1024
    assert task.max_cardinality == 20_000
    assert task.total_cardinality == 8 * 1024  # the tables' rows
    planning = PlanningActivities(
        lambda m, d: (1.0, 2.0), describe_task=describe_task, relative_cost=relative_cost
    )
    proposals = ActivityEnvironment().run(
        planning.propose_hypotheses,
        ProposalInput(campaign_id="c1", request=request, max_hypotheses=40),
    )
    assert {"max_table_rows": 4096} in [h.changes for h in proposals.hypotheses]
