"""Planning's side effects: describe the task, retrieve insights, estimate cost, and ask the
knowledge-based research agent for hypotheses (the workflow's planner decides what goes in).

``plan_campaign`` is the first versions' planner (a fixed set of mutations): campaigns they
started may still call it, so it stays registered.
"""

from collections.abc import Callable

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agents import space
from activities.agents.knowledge import KnowledgeAgent
from contracts import (
    DEFAULT_ACTION_SPACE,
    DatasetRef,
    Hypothesis,
    InsightQuery,
    ModelSpec,
    PhasePlan,
    Plan,
    PlanningInput,
    ProposalInput,
    Proposals,
    TaskDescriptor,
)
from ranking_models.errors import BadDataError, BadSpecError, TrainingError
from store import InsightsStore

# Seconds one trial of this spec on this dataset is expected to take on one device: the
# typical (unloaded) figure and the high end of its range.
Estimator = Callable[[ModelSpec, DatasetRef], tuple[float, float]]
# The task's descriptor, and a candidate's cost relative to the baseline's.
TaskDescriber = Callable[[DatasetRef, ModelSpec], TaskDescriptor]
RelativeCost = Callable[[ModelSpec, ModelSpec, DatasetRef], float]
# The share of a trial's cost that training on part of the data does not shrink.
FixedShare = Callable[[ModelSpec, DatasetRef], float]

# Insights handed to the agents: the most similar, best-evidenced changes are enough.
MAX_INSIGHTS = 20

COMBINATION_CONDITION = (
    "only as many as the results allow: merging needs two hypotheses that beat the baseline, "
    "a second merge three"
)


def fixed_hypotheses(baseline: ModelSpec) -> list[Hypothesis]:
    """A handful of single changes to ``baseline`` that often move NE on DLRM-style models."""
    widest = max(baseline.over_hidden, default=32)
    return [
        Hypothesis(
            id="wider-embeddings",
            title=f"Embedding dim {baseline.embedding_dim} -> {baseline.embedding_dim * 2}",
            rationale="More capacity per id helps when ids carry most of the signal.",
            changes={"embedding_dim": baseline.embedding_dim * 2},
        ),
        Hypothesis(
            id="wider-over-arch",
            title=f"Over arch {baseline.over_hidden} -> {[w * 2 for w in baseline.over_hidden]}",
            rationale="The over arch models feature interactions; it is often under-sized.",
            changes={"over_hidden": [w * 2 for w in baseline.over_hidden]},
        ),
        Hypothesis(
            id="deeper-over-arch",
            title=f"One more over-arch layer of {widest}",
            rationale="Depth adds higher-order interactions at a small cost.",
            changes={"over_hidden": [widest, *baseline.over_hidden]},
        ),
        Hypothesis(
            id="lower-dense-lr",
            title=f"Dense learning rate {baseline.dense_lr:g} -> {baseline.dense_lr / 3:g}",
            rationale="Adam on small CTR data often overshoots; a smaller step generalises better.",
            changes={"dense_lr": baseline.dense_lr / 3},
        ),
        Hypothesis(
            id="larger-batch",
            title=f"Batch size {baseline.batch_size} -> {baseline.batch_size * 2}",
            rationale="Larger batches lower gradient noise and raise throughput per device.",
            changes={"batch_size": baseline.batch_size * 2},
        ),
        Hypothesis(
            id="over-arch-dropout",
            title=f"Over-arch dropout {baseline.dropout:g} -> {min(baseline.dropout + 0.1, 0.5):g}",
            rationale="Small datasets overfit; dropout regularises the dense interactions.",
            changes={"dropout": min(baseline.dropout + 0.1, 0.5)},
        ),
    ]


def make_plan(inp: PlanningInput, estimate_seconds: Estimator) -> Plan:
    """A plan for ``inp.request``: hypotheses that form valid specs, and cost per phase.

    The validation phase runs the baseline and every hypothesis; the combination phase runs
    at most two merges of the promising ones.
    """
    request = inp.request
    hypotheses = []
    for hypothesis in fixed_hypotheses(request.baseline):
        try:
            DEFAULT_ACTION_SPACE.check(hypothesis.changes)
            request.baseline.with_changes(hypothesis.changes)
        except (ValueError, ValidationError):
            continue  # outside the action space for this baseline, e.g. a dim past its cap
        hypotheses.append(hypothesis)
        if len(hypotheses) + 1 >= request.budget.max_trials:
            break
    typical_s, high_s = estimate_seconds(request.baseline, request.dataset)
    per_trial = typical_s / 3600.0
    validation = 1 + len(hypotheses)
    combination = max(0, min(2, request.budget.max_trials - validation))
    return Plan(
        hypotheses=hypotheses,
        phases=[
            PhasePlan(
                phase="validation",
                trials=validation,
                estimated_device_hours=validation * per_trial,
            ),
            PhasePlan(
                phase="combination",
                trials=combination,
                estimated_device_hours=combination * per_trial,
                condition=COMBINATION_CONDITION if combination else "",
            ),
        ],
        estimated_device_hours_per_trial=per_trial,
        estimated_device_hours_per_trial_high=max(high_s, typical_s) / 3600.0,
    )


class PlanningActivities:
    """Planning over injected ports.

    Args:
        estimate_seconds: Seconds one trial of a spec takes on one device (typical, high).
        store: The insights database (what past campaigns learned).
        describe_task: The task's descriptor.
        relative_cost: A candidate's cost over the baseline's.
        agent: The knowledge-based research agent.
        jobs_run_on: Where trials that run as jobs go (``describe_job_backend``).
        fixed_share: The share of a trial's cost a data fraction does not shrink (the
            screen's rungs follow it); unmeasured when None.
    """

    def __init__(
        self,
        estimate_seconds: Estimator,
        store: InsightsStore | None = None,
        describe_task: TaskDescriber | None = None,
        relative_cost: RelativeCost | None = None,
        agent: KnowledgeAgent | None = None,
        jobs_run_on: str = "",
        fixed_share: FixedShare | None = None,
    ) -> None:
        self._estimate_seconds = estimate_seconds
        self._fixed_share = fixed_share
        self._jobs_run_on = jobs_run_on
        self._store = store
        self._describe_task = describe_task
        self._relative_cost = relative_cost
        self._agent = agent or KnowledgeAgent()

    @activity.defn(name="propose_hypotheses")
    def propose_hypotheses(self, inp: ProposalInput) -> Proposals:
        """The knowledge source's hypotheses, with the task, its insights and the cost of a
        baseline trial (which also proves the data loads and the baseline fits).

        Raises:
            ApplicationError: non-retryable, typed by the trainer's error class, when the
                data or the baseline is wrong or cannot fit (``BadDataError``,
                ``BadSpecError``, ``OutOfMemoryError``): a retry would fail the same way.
        """
        request = inp.request
        try:
            typical_s, high_s = self._estimate_seconds(request.baseline, request.dataset)
            share = (
                self._fixed_share(request.baseline, request.dataset) if self._fixed_share else None
            )
            task = (
                self._describe_task(request.dataset, request.baseline)
                if self._describe_task
                else None
            )
        except BadDataError as err:
            if not inp.allow_unreadable_data:
                raise ApplicationError(str(err), type="BadDataError", non_retryable=True) from err
            # Hypotheses from the catalog alone, unmeasured; preflight reports the data.
            proposals = self._agent.propose(request, None, [], inp.max_hypotheses)
            note = f"the data could not be read ({err}); cost not measured"
            return proposals.model_copy(
                update={"note": "; ".join(n for n in (proposals.note, note) if n)}
            )
        except TrainingError as err:
            raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from err
        insights = (
            self._store.insights(InsightQuery(task=task, metric=request.metric))[:MAX_INSIGHTS]
            if self._store
            else []
        )
        relative_cost = self._relative_cost

        def cost_factor(candidate: ModelSpec) -> float:
            assert relative_cost is not None
            try:
                return relative_cost(request.baseline, candidate, request.dataset)
            except BadSpecError:  # the preflight names it, and the engineer may drop it
                return 1.0

        proposals = self._agent.propose(
            request,
            task,
            insights,
            inp.max_hypotheses,
            cost_factor=cost_factor if relative_cost else None,
        )
        # The plan says where its cost estimate came from (the host, or past trials too).
        source = getattr(self._estimate_seconds, "source", None)
        estimate = f"cost estimate: {source(request.baseline, request.dataset)}" if source else ""
        return proposals.model_copy(
            update={
                "task": task,
                "insights": insights,
                "note": "; ".join(n for n in (proposals.note, estimate) if n),
                "estimated_device_hours_per_trial": typical_s / 3600.0,
                "estimated_device_hours_per_trial_high": max(high_s, typical_s) / 3600.0,
                "fixed_cost_share": share,
                "jobs_run_on": self._jobs_run_on,
            }
        )

    @activity.defn(name="propose_space_points")
    def propose_space_points(self, inp: ProposalInput) -> Proposals:
        """The action space's candidates: every knob probed on its own, then
        ``inp.max_hypotheses`` points drawn from the whole space (seeded by the baseline's
        seed, so each campaign draws its own), each with its cost over the baseline's, none
        over ``inp.max_cost_factor`` (a dearer draw is drawn again nearer the baseline)."""
        request = inp.request
        relative_cost = self._relative_cost

        def cost_factor(candidate: ModelSpec) -> float | None:
            assert relative_cost is not None
            try:
                return relative_cost(request.baseline, candidate, request.dataset)
            except BadSpecError:  # a move that does not build on this data: not a candidate
                return None
            except TrainingError:  # unreadable data: the preflight says so; cost unknown
                return 1.0

        return Proposals(
            source="search-space",
            hypotheses=space.hypotheses(
                request.baseline,
                inp.max_hypotheses,
                request.baseline.seed,
                cost_factor=cost_factor if relative_cost else None,
                max_cost=inp.max_cost_factor,
            ),
        )

    @activity.defn(name="plan_campaign")
    def plan_campaign(self, inp: PlanningInput) -> Plan:
        """The first versions' plan (fixed mutations), for campaigns they started.

        Raises:
            ApplicationError: non-retryable, as ``propose_hypotheses``.
        """
        try:
            return make_plan(inp, self._estimate_seconds)
        except TrainingError as err:
            raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from err
