"""The trial store of the first versions: one JSON record per (campaign, trial).

A database those versions wrote has this table and no ``alembic_version``; the store stamps it
with this revision and upgrades it, so that its trials move into the insights database.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "trials",
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("trial_id", sa.Text, nullable=False),
        sa.Column("state", sa.Text),
        sa.Column("record", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "trial_id"),
    )


def downgrade() -> None:
    op.drop_table("trials")
