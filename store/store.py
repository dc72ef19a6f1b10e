"""``InsightsStore``: one interface over SQLite and PostgreSQL (SQLAlchemy 2, Alembic).

Every write is an upsert keyed by the campaign and the thing's id, so a retried activity or a
replayed workflow writes the same row again instead of adding a duplicate.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from contracts import (
    CampaignRecord,
    Hypothesis,
    Insight,
    InsightQuery,
    LlmCall,
    ModelSpec,
    RemedyAttempt,
    TaskDescriptor,
    TrialRecord,
    describe,
)
from store.insights import Evidence, distil, screen_evidence, strongest
from store.tables import (
    Base,
    CampaignRow,
    DecisionRow,
    HypothesisRow,
    LlmCallRow,
    RemedyAttemptRow,
    TrialRow,
)

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0002"


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Several threads of one worker, and the CLI beside it: wait for a lock, not fail.
        return create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    return create_engine(url, pool_pre_ping=True)


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest schema; a first-versions trial store is adopted."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        tables = set(inspect(connection).get_table_names())
        if "trials" in tables and "alembic_version" not in tables:
            command.stamp(config, "0001")  # written by the first versions, before migrations
        command.upgrade(config, "head")


class InsightsStore:
    """The insights database at ``url`` (any SQLAlchemy URL; migrated when opened).

    Args:
        url: e.g. ``sqlite:////data/results.sqlite`` or
            ``postgresql+psycopg://postgres@127.0.0.1/openrea``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = _engine(url)
        upgrade(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    # ---- writes ------------------------------------------------------------------------------

    def put_trial(self, record: TrialRecord) -> None:
        """Insert or update the trial ``record.spec`` names."""
        spec, result = record.spec, record.result
        with Session(self._engine) as session, session.begin():
            baseline = self._baseline(session, spec.campaign_id)
            row: dict[str, Any] = {
                "campaign_id": spec.campaign_id,
                "trial_id": spec.trial_id,
                "arm": spec.arm,
                "phase": spec.phase,
                "seed": spec.model.seed,
                "hypothesis_ids": spec.hypothesis_ids,
                "changes": spec.model.changes_from(baseline, with_seed=True) if baseline else {},
                "state": result.state if result else None,
                "validation": result.validation.model_dump()
                if result and result.validation
                else None,
                "test": result.test.model_dump() if result and result.test else None,
                "epoch_values": result.epoch_values if result else [],
                "device_hours": result.device_hours if result else 0.0,
                "duration_s": result.duration_s if result else 0.0,
                "error_type": result.error_type if result else "",
                "error": result.error if result else "",
                "remedy": record.remedy,
                "record": record.model_dump_json(),
            }
            self._upsert(session, TrialRow, row, ["campaign_id", "trial_id"])

    def record_campaign(self, record: CampaignRecord) -> None:
        """Insert or update a campaign, the hypotheses it planned or held back, and every
        comparison of its gates."""
        status, request = record.status, record.request
        with Session(self._engine) as session, session.begin():
            self._upsert(
                session,
                CampaignRow,
                {
                    "campaign_id": record.campaign_id,
                    "goal": request.goal,
                    "metric": request.metric,
                    "dataset": request.dataset.name,
                    "phase": status.phase,
                    "protocol": status.protocol,
                    "verdict": status.proposal.verdict if status.proposal else "",
                    "request": request.model_dump(mode="json"),
                    "task": status.task.model_dump(mode="json") if status.task else None,
                    "status": status.model_copy(update={"trials": []}).model_dump(mode="json"),
                    "arm_changes": record.arm_changes,
                },
                ["campaign_id"],
            )
            plan = status.plan
            considered = (
                [(h, 1) for h in plan.hypotheses] + [(h, 0) for h in plan.held_back] if plan else []
            )
            for hypothesis, planned in considered:
                self._upsert(
                    session,
                    HypothesisRow,
                    _hypothesis_row(record.campaign_id, request.baseline, hypothesis, planned),
                    ["campaign_id", "hypothesis_id"],
                )
            for gate, decision in status.decisions.items():
                for c in decision.comparisons:
                    self._upsert(
                        session,
                        DecisionRow,
                        {
                            "campaign_id": record.campaign_id,
                            "gate": gate,
                            "arm": c.hypothesis_id,
                            "split": decision.split,
                            "metric": decision.metric,
                            "n": c.n,
                            "gain": c.gain,
                            "gain_low": c.gain_low,
                            "gain_high": c.gain_high,
                            "p_value": c.p_value,
                            "p_adjusted": c.p_adjusted,
                            "passed": int(c.passed),
                            "correction": decision.correction,
                            "reason": c.reason,
                        },
                        ["campaign_id", "gate", "arm"],
                    )

    def record_call(self, call: LlmCall) -> None:
        """Keep one exchange with a language model (every call is a new row)."""
        with Session(self._engine) as session, session.begin():
            session.add(LlmCallRow(**{**call.model_dump(), "cached": int(call.cached)}))

    def record_remedy(self, campaign_id: str, attempt: RemedyAttempt) -> None:
        """Insert or update one remedy applied to a failed trial (keyed by campaign, trial
        and attempt), with how its run ended."""
        with Session(self._engine) as session, session.begin():
            self._upsert(
                session,
                RemedyAttemptRow,
                {
                    "campaign_id": campaign_id,
                    "trial_id": attempt.trial_id,
                    "attempt": attempt.attempt,
                    "pattern_id": attempt.pattern_id,
                    "pattern_version": attempt.pattern_version,
                    "remedy_kind": attempt.remedy.kind,
                    "remedy": attempt.remedy.model_dump(mode="json"),
                    "run_trial_id": attempt.run_trial_id,
                    "state": attempt.state,
                    "error_type": attempt.error_type,
                },
                ["campaign_id", "trial_id", "attempt"],
            )

    # ---- reads -------------------------------------------------------------------------------

    def remedies(self, campaign_id: str = "") -> list[RemedyAttempt]:
        """Recorded remedies, oldest first (of one campaign when given)."""
        with Session(self._engine) as session:
            query = select(RemedyAttemptRow).order_by(
                RemedyAttemptRow.created_at, RemedyAttemptRow.trial_id, RemedyAttemptRow.attempt
            )
            if campaign_id:
                query = query.where(RemedyAttemptRow.campaign_id == campaign_id)
            return [
                RemedyAttempt(
                    trial_id=row.trial_id,
                    attempt=row.attempt,
                    pattern_id=row.pattern_id,
                    pattern_version=row.pattern_version,
                    remedy=row.remedy,
                    run_trial_id=row.run_trial_id,
                    state=row.state,
                    error_type=row.error_type,
                )
                for row in session.scalars(query)
            ]

    def remedy_stats(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(pattern id, remedy kind) -> (tries that ran to an end, successes), over every
        campaign."""
        with Session(self._engine) as session:
            rows = session.execute(
                select(
                    RemedyAttemptRow.pattern_id,
                    RemedyAttemptRow.remedy_kind,
                    RemedyAttemptRow.state,
                )
                # Unfinished, or never run (the campaign stopped first): no evidence.
                .where(RemedyAttemptRow.state.not_in(("running", "cancelled")))
            )
            stats: dict[tuple[str, str], tuple[int, int]] = {}
            for pattern, kind, state in rows:
                tried, succeeded = stats.get((pattern, kind), (0, 0))
                stats[(pattern, kind)] = (tried + 1, succeeded + (state == "succeeded"))
            return stats

    def trials(self, campaign_id: str) -> list[TrialRecord]:
        """Every stored trial of a campaign, in the order first recorded."""
        with Session(self._engine) as session:
            rows = session.scalars(
                select(TrialRow.record)
                .where(TrialRow.campaign_id == campaign_id)
                .order_by(TrialRow.id)
            )
            return [TrialRecord.model_validate_json(row) for row in rows]

    def cached_reply(self, prompt_digest: str) -> str | None:
        """The newest reply the endpoint gave to this prompt, if any."""
        with Session(self._engine) as session:
            return session.scalars(
                select(LlmCallRow.raw_reply)
                .where(LlmCallRow.prompt_digest == prompt_digest, LlmCallRow.cached == 0)
                .order_by(LlmCallRow.id.desc())
                .limit(1)
            ).first()

    def llm_calls(self, campaign_id: str = "") -> list[LlmCall]:
        """Recorded LLM calls, oldest first (of one campaign when given)."""
        with Session(self._engine) as session:
            query = select(LlmCallRow).order_by(LlmCallRow.id)
            if campaign_id:
                query = query.where(LlmCallRow.campaign_id == campaign_id)
            return [
                LlmCall.model_validate({**_columns(r), "cached": bool(r.cached)})
                for r in session.scalars(query)
            ]

    def hypotheses(self, campaign_id: str) -> list[dict[str, Any]]:
        """The hypotheses a campaign considered, with provenance, as stored."""
        with Session(self._engine) as session:
            rows = session.scalars(
                select(HypothesisRow).where(HypothesisRow.campaign_id == campaign_id)
            )
            return [_columns(r) for r in rows]

    def decisions(self, campaign_id: str) -> list[dict[str, Any]]:
        """Every gate comparison of a campaign, as stored."""
        with Session(self._engine) as session:
            rows = session.scalars(
                select(DecisionRow).where(DecisionRow.campaign_id == campaign_id)
            )
            return [_columns(r) for r in rows]

    def task_of(self, campaign_id: str) -> TaskDescriptor | None:
        """The task a campaign ran on, when recorded."""
        with Session(self._engine) as session:
            task = session.scalar(
                select(CampaignRow.task).where(CampaignRow.campaign_id == campaign_id)
            )
            return TaskDescriptor.model_validate(task) if task else None

    def campaigns(self) -> list[str]:
        """Ids of the recorded campaigns, oldest first."""
        with Session(self._engine) as session:
            return list(
                session.scalars(select(CampaignRow.campaign_id).order_by(CampaignRow.created_at))
            )

    def insights(self, query: InsightQuery | None = None) -> list[Insight]:
        """What the recorded gate comparisons say about each change (see ``store.insights``)."""
        query = query or InsightQuery()
        with Session(self._engine) as session:
            campaigns = {c.campaign_id: c for c in session.scalars(select(CampaignRow))}
            decisions = strongest(
                session.scalars(select(DecisionRow).where(DecisionRow.metric == query.metric)).all()
            )
            costs = _arm_costs(
                session.execute(
                    select(
                        TrialRow.campaign_id,
                        TrialRow.arm,
                        TrialRow.trial_id,
                        TrialRow.device_hours,
                        TrialRow.state,
                    )
                ).all()
            )
            evidence = []
            for d in decisions:
                campaign = campaigns.get(d.campaign_id)
                if campaign is None or d.arm not in campaign.arm_changes:
                    continue
                baseline = ModelSpec.model_validate(campaign.request["baseline"])
                change, family = describe(baseline, campaign.arm_changes[d.arm])
                base_cost = costs.get((d.campaign_id, "baseline"))
                arm_cost = costs.get((d.campaign_id, d.arm))
                evidence.append(
                    Evidence(
                        campaign_id=d.campaign_id,
                        arm=d.arm,
                        change=change,
                        family=family,
                        changes=campaign.arm_changes[d.arm],
                        task=TaskDescriptor.model_validate(campaign.task)
                        if campaign.task
                        else None,
                        gain=d.gain,
                        gain_low=d.gain_low,
                        gain_high=d.gain_high,
                        passed=bool(d.passed),
                        cost_ratio=arm_cost / base_cost if arm_cost and base_cost else None,
                    )
                )
            for c in campaigns.values():
                if c.metric == query.metric:
                    evidence += screen_evidence(
                        c.campaign_id,
                        c.status,
                        ModelSpec.model_validate(c.request["baseline"]),
                        TaskDescriptor.model_validate(c.task) if c.task else None,
                        gated={e.arm for e in evidence if e.campaign_id == c.campaign_id},
                    )
            additivity = [
                (
                    c.campaign_id,
                    c.status.get("additivity", []),
                    c.arm_changes,
                    ModelSpec.model_validate(c.request["baseline"]),
                )
                for c in campaigns.values()
            ]
        return distil(evidence, additivity, query)

    # ---- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _baseline(session: Session, campaign_id: str) -> ModelSpec | None:
        request = session.scalar(
            select(CampaignRow.request).where(CampaignRow.campaign_id == campaign_id)
        )
        return ModelSpec.model_validate(request["baseline"]) if request else None

    @staticmethod
    def _upsert(
        session: Session, table: type[Base], row: dict[str, Any], keys: Sequence[str]
    ) -> None:
        dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
        statement = dialect.insert(table).values(**row)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=list(keys),
                set_={k: statement.excluded[k] for k in row if k not in keys},
            )
        )


def _hypothesis_row(
    campaign_id: str, baseline: ModelSpec, h: Hypothesis, planned: int
) -> dict[str, Any]:
    change, family = describe(baseline, h.changes)
    p = h.provenance
    return {
        "campaign_id": campaign_id,
        "hypothesis_id": h.id,
        "title": h.title,
        "rationale": h.rationale,
        "source": h.source,
        "agent": p.agent if p else "",
        "model": p.model if p else "",
        "prompt_version": p.prompt_version if p else "",
        "reply_digest": p.reply_digest if p else "",
        "technique": p.technique if p else "",
        "citation": p.citation if p else "",
        "changes": h.changes,
        "change": change,
        "family": family,
        "expected_gain": h.expected_gain,
        "cost_factor": h.cost_factor,
        "planned": planned,
    }


def _columns(row: Base) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in inspect(row).mapper.column_attrs}


def _arm_costs(rows: Sequence[Any]) -> dict[tuple[str, str], float]:
    """Mean device-hours of each arm's full-length completed trials, by (campaign, arm).

    Screening runs (``~r0``) are cut short and left out, so ratios compare like with like.
    """
    sums: dict[tuple[str, str], list[float]] = {}
    for campaign_id, arm, trial_id, hours, state in rows:
        if state == "completed" and arm and not trial_id.endswith("~r0") and hours > 0:
            sums.setdefault((campaign_id, arm), []).append(hours)
    return {key: sum(v) / len(v) for key, v in sums.items()}
