"""One-time claims inside a study (worker numbers, baseline re-queues).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "songhpo_study_claims",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("study", sa.String(512), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_songhpo_study_claims"),
        sa.UniqueConstraint("study", "key", name="uq_songhpo_study_claims_study_key"),
    )


def downgrade() -> None:
    op.drop_table("songhpo_study_claims")
