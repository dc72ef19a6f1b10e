"""The insights database: campaigns, hypotheses with provenance, trials with the columns
insights query, gate decisions and LLM calls. Trials of the first versions' table move into
the new one, in the order they were recorded.

Revision ID: 0002
Revises: 0001
"""

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    now = sa.func.now()
    op.create_table(
        "campaigns",
        sa.Column("campaign_id", sa.String(200), primary_key=True),
        sa.Column("goal", sa.Text, nullable=False),
        sa.Column("metric", sa.String(20), nullable=False),
        sa.Column("dataset", sa.String(100), nullable=False),
        sa.Column("phase", sa.String(40), nullable=False),
        sa.Column("protocol", sa.String(40), nullable=False),
        sa.Column("verdict", sa.String(60), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("task", sa.JSON),
        sa.Column("status", sa.JSON, nullable=False),
        sa.Column("arm_changes", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now),
    )
    op.create_table(
        "hypotheses",
        sa.Column("campaign_id", sa.String(200), primary_key=True),
        sa.Column("hypothesis_id", sa.String(200), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("agent", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_version", sa.String(100), nullable=False),
        sa.Column("reply_digest", sa.String(64), nullable=False),
        sa.Column("technique", sa.String(100), nullable=False),
        sa.Column("citation", sa.Text, nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Column("change", sa.Text, nullable=False),
        sa.Column("family", sa.String(200), nullable=False),
        sa.Column("expected_gain", sa.Float, nullable=False),
        sa.Column("cost_factor", sa.Float, nullable=False),
        sa.Column("planned", sa.Integer, nullable=False),
    )
    trials = op.create_table(
        "trial_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.String(200), nullable=False, index=True),
        sa.Column("trial_id", sa.String(200), nullable=False),
        sa.Column("arm", sa.String(200), nullable=False),
        sa.Column("phase", sa.String(40), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("hypothesis_ids", sa.JSON, nullable=False),
        sa.Column("changes", sa.JSON, nullable=False),
        sa.Column("state", sa.String(40)),
        sa.Column("validation", sa.JSON),
        sa.Column("test", sa.JSON),
        sa.Column("epoch_values", sa.JSON, nullable=False),
        sa.Column("device_hours", sa.Float, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("error_type", sa.String(200), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("remedy", sa.Text, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.UniqueConstraint("campaign_id", "trial_id"),
    )
    op.create_table(
        "decisions",
        sa.Column("campaign_id", sa.String(200), primary_key=True),
        sa.Column("gate", sa.String(40), primary_key=True),
        sa.Column("arm", sa.String(200), primary_key=True),
        sa.Column("split", sa.String(20), nullable=False),
        sa.Column("metric", sa.String(20), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("gain", sa.Float, nullable=False),
        sa.Column("gain_low", sa.Float),
        sa.Column("gain_high", sa.Float),
        sa.Column("p_value", sa.Float, nullable=False),
        sa.Column("p_adjusted", sa.Float, nullable=False),
        sa.Column("passed", sa.Integer, nullable=False),
        sa.Column("correction", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "llm_calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("prompt_digest", sa.String(64), nullable=False, index=True),
        sa.Column("campaign_id", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_version", sa.String(100), nullable=False),
        sa.Column("mode", sa.String(40), nullable=False),
        sa.Column("raw_reply", sa.Text, nullable=False),
        sa.Column("reply_digest", sa.String(64), nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("accepted", sa.JSON, nullable=False),
        sa.Column("rejected", sa.JSON, nullable=False),
        sa.Column("cached", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now),
    )
    bind = op.get_bind()
    # SQLite kept the first versions' insertion order in rowid; elsewhere the table was new.
    order = "rowid" if bind.dialect.name == "sqlite" else "campaign_id, trial_id"
    rows = bind.execute(sa.text(f"SELECT record FROM trials ORDER BY {order}")).fetchall()
    if rows:
        op.bulk_insert(trials, [_trial_columns(json.loads(row[0]), row[0]) for row in rows])
    op.drop_table("trials")


def _trial_columns(record: dict[str, Any], raw: str) -> dict[str, Any]:
    """The queried columns of a first-versions record (its JSON kept whole beside them)."""
    spec, result = record["spec"], record.get("result") or {}
    return {
        "campaign_id": spec["campaign_id"],
        "trial_id": spec["trial_id"],
        "arm": spec.get("arm", ""),
        "phase": spec.get("phase", ""),
        "seed": spec.get("model", {}).get("seed", 0),
        "hypothesis_ids": spec.get("hypothesis_ids", []),
        "changes": {},  # the baseline those versions compared against was not recorded
        "state": result.get("state"),
        "validation": result.get("validation"),
        "test": result.get("test"),
        "epoch_values": result.get("epoch_values", []),
        "device_hours": result.get("device_hours", 0.0),
        "duration_s": result.get("duration_s", 0.0),
        "error_type": result.get("error_type", ""),
        "error": result.get("error", ""),
        "remedy": "",
        "record": raw,
    }


def downgrade() -> None:
    raise NotImplementedError("the insights database cannot go back to the trials-only store")
