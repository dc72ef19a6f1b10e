"""The tables, as SQLAlchemy 2 declarative models. Migrations in ``store/migrations`` create them;
these classes only read and write them."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class CampaignRow(Base):
    """One campaign: its request, task, plan and how it ended."""

    __tablename__ = "campaigns"

    campaign_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    goal: Mapped[str] = mapped_column(Text, default="")
    metric: Mapped[str] = mapped_column(String(20))
    dataset: Mapped[str] = mapped_column(String(100))
    phase: Mapped[str] = mapped_column(String(40))
    protocol: Mapped[str] = mapped_column(String(40))
    verdict: Mapped[str] = mapped_column(String(60), default="")
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    task: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[dict[str, Any]] = mapped_column(JSON)
    arm_changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=func.now(), onupdate=func.now()
    )


class HypothesisRow(Base):
    """A hypothesis a campaign's planner considered, with its provenance."""

    __tablename__ = "hypotheses"

    campaign_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hypothesis_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    rationale: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(40))
    agent: Mapped[str] = mapped_column(String(100), default="")
    model: Mapped[str] = mapped_column(String(200), default="")
    prompt_version: Mapped[str] = mapped_column(String(100), default="")
    reply_digest: Mapped[str] = mapped_column(String(64), default="")
    technique: Mapped[str] = mapped_column(String(100), default="")
    citation: Mapped[str] = mapped_column(Text, default="")
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    change: Mapped[str] = mapped_column(Text)
    family: Mapped[str] = mapped_column(String(200))
    expected_gain: Mapped[float] = mapped_column(Float, default=0.0)
    cost_factor: Mapped[float] = mapped_column(Float, default=1.0)
    planned: Mapped[int] = mapped_column(Integer, default=1)


class TrialRow(Base):
    """A trial in full (the record) and the columns insights query."""

    __tablename__ = "trial_records"
    __table_args__ = (UniqueConstraint("campaign_id", "trial_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(200), index=True)
    trial_id: Mapped[str] = mapped_column(String(200))
    arm: Mapped[str] = mapped_column(String(200), default="")
    phase: Mapped[str] = mapped_column(String(40), default="")
    seed: Mapped[int] = mapped_column(Integer, default=0)
    hypothesis_ids: Mapped[list[str]] = mapped_column(JSON)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str | None] = mapped_column(String(40), nullable=True)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    test: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    epoch_values: Mapped[list[float]] = mapped_column(JSON)
    device_hours: Mapped[float] = mapped_column(Float, default=0.0)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    error_type: Mapped[str] = mapped_column(String(200), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    remedy: Mapped[str] = mapped_column(Text, default="")
    record: Mapped[str] = mapped_column(Text)


class DecisionRow(Base):
    """One comparison of a gate: an arm against the baseline, paired by seed."""

    __tablename__ = "decisions"

    campaign_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    gate: Mapped[str] = mapped_column(String(40), primary_key=True)
    arm: Mapped[str] = mapped_column(String(200), primary_key=True)
    split: Mapped[str] = mapped_column(String(20))
    metric: Mapped[str] = mapped_column(String(20))
    n: Mapped[int] = mapped_column(Integer)
    gain: Mapped[float] = mapped_column(Float)
    gain_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    gain_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    p_value: Mapped[float] = mapped_column(Float)
    p_adjusted: Mapped[float] = mapped_column(Float)
    passed: Mapped[int] = mapped_column(Integer)
    correction: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text, default="")


class LlmCallRow(Base):
    """One exchange with a language model; replies are cached by prompt digest."""

    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prompt_digest: Mapped[str] = mapped_column(String(64), index=True)
    campaign_id: Mapped[str] = mapped_column(String(200), default="")
    model: Mapped[str] = mapped_column(String(200))
    prompt_version: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(40))
    raw_reply: Mapped[str] = mapped_column(Text)
    reply_digest: Mapped[str] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[list[str]] = mapped_column(JSON)
    rejected: Mapped[list[str]] = mapped_column(JSON)
    cached: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=func.now())


class RemedyAttemptRow(Base):
    """One remedy applied to a failed trial, and how the run it made ended."""

    __tablename__ = "remedy_attempts"

    campaign_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    trial_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    pattern_id: Mapped[str] = mapped_column(String(200))
    pattern_version: Mapped[int] = mapped_column(Integer)
    remedy_kind: Mapped[str] = mapped_column(String(60))
    remedy: Mapped[dict[str, Any]] = mapped_column(JSON)
    run_trial_id: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20))
    error_type: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=func.now(), onupdate=func.now()
    )
