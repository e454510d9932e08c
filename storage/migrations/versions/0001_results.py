"""Result tables: prepared datasets, studies, trial metrics and popularity-bucket metrics.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "songhpo_datasets",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("hard_negatives", sa.JSON(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_songhpo_datasets"),
        sa.UniqueConstraint("fingerprint", name="uq_songhpo_datasets_fingerprint"),
    )
    op.create_table(
        "songhpo_studies",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("dataset_fingerprint", sa.String(64), nullable=True),
        sa.Column("objectives", sa.JSON(), nullable=False),
        sa.Column("directions", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_songhpo_studies"),
        sa.UniqueConstraint("name", name="uq_songhpo_studies_name"),
    )
    op.create_index("ix_songhpo_studies_dataset_fingerprint", "songhpo_studies", ["dataset_fingerprint"])
    op.create_table(
        "songhpo_trial_metrics",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("study", sa.String(512), nullable=False),
        sa.Column("trial", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_songhpo_trial_metrics"),
        sa.UniqueConstraint(
            "study", "trial", "split", "seed", "metric", name="uq_songhpo_trial_metrics_study_trial_split_seed_metric"
        ),
    )
    op.create_index("ix_songhpo_trial_metrics_study_split_trial", "songhpo_trial_metrics", ["study", "split", "trial"])
    op.create_table(
        "songhpo_bucket_metrics",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("study", sa.String(512), nullable=False),
        sa.Column("trial", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("edge_low", sa.Double(), nullable=False),
        sa.Column("edge_high", sa.Double(), nullable=False),
        sa.Column("pairs", sa.Integer(), nullable=False),
        sa.Column("hitrate", sa.Double(), nullable=True),
        sa.Column("ndcg", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_songhpo_bucket_metrics"),
        sa.UniqueConstraint(
            "study", "trial", "split", "seed", "side", "bucket",
            name="uq_songhpo_bucket_metrics_study_trial_split_seed_side_bucket",
        ),
    )
    op.create_index("ix_songhpo_bucket_metrics_study_split_trial", "songhpo_bucket_metrics", ["study", "split", "trial"])


def downgrade() -> None:
    op.drop_table("songhpo_bucket_metrics")
    op.drop_table("songhpo_trial_metrics")
    op.drop_table("songhpo_studies")
    op.drop_table("songhpo_datasets")
