"""Pareto-front snapshots (final test evaluation) and their members.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "songhpo_pareto_snapshots",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("study", sa.String(512), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("objectives", sa.JSON(), nullable=False),
        sa.Column("directions", sa.JSON(), nullable=False),
        sa.Column("constraint_spec", sa.JSON(), nullable=False),
        sa.Column("seeds", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_songhpo_pareto_snapshots"),
    )
    op.create_index("ix_songhpo_pareto_snapshots_study", "songhpo_pareto_snapshots", ["study"])
    op.create_table(
        "songhpo_pareto_members",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("snapshot_id", _ID, nullable=False),
        sa.Column("trial", sa.Integer(), nullable=False),
        sa.Column("baseline", sa.Boolean(), nullable=False),
        sa.Column("on_front", sa.Boolean(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("validation", sa.JSON(), nullable=False),
        sa.Column("test", sa.JSON(), nullable=False),
        sa.Column("test_buckets", sa.JSON(), nullable=True),
        sa.Column("n_seeds", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_songhpo_pareto_members"),
        sa.ForeignKeyConstraint(
            ["snapshot_id"], ["songhpo_pareto_snapshots.id"],
            name="fk_songhpo_pareto_members_snapshot_id_songhpo_pareto_snapshots", ondelete="CASCADE",
        ),
        sa.UniqueConstraint("snapshot_id", "trial", name="uq_songhpo_pareto_members_snapshot_id_trial"),
    )
    op.create_index("ix_songhpo_pareto_members_snapshot_id", "songhpo_pareto_members", ["snapshot_id"])


def downgrade() -> None:
    op.drop_table("songhpo_pareto_members")
    op.drop_table("songhpo_pareto_snapshots")
