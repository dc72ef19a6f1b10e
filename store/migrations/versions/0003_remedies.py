"""Remedies: every runbook (or agent, or engineer) remedy applied to a failed trial, and how
the run it made ended; what demotes a remedy that keeps failing for a pattern.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    now = sa.func.now()
    op.create_table(
        "remedy_attempts",
        sa.Column("campaign_id", sa.String(200), primary_key=True),
        sa.Column("trial_id", sa.String(200), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("pattern_id", sa.String(200), nullable=False),
        sa.Column("pattern_version", sa.Integer, nullable=False),
        sa.Column("remedy_kind", sa.String(60), nullable=False),
        sa.Column("remedy", sa.JSON, nullable=False),
        sa.Column("run_trial_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("error_type", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=now),
    )
    op.create_index("ix_remedy_attempts_pattern", "remedy_attempts", ["pattern_id", "remedy_kind"])


def downgrade() -> None:
    op.drop_index("ix_remedy_attempts_pattern", "remedy_attempts")
    op.drop_table("remedy_attempts")
