"""SQLAlchemy 2 models of songhpo's result tables, in the same database as the Optuna storage.

Every table is prefixed ``songhpo_`` so that it never clashes with Optuna's own tables; the schema
version lives in ``songhpo_alembic_version`` (Optuna keeps its own ``alembic_version``). The schema is
created and upgraded by the Alembic migrations in ``storage/migrations`` (see :mod:`storage.db`); these
models describe the head revision and a test checks that both agree.

Rows name their study by ``study`` (the Optuna study name) and their trial by ``trial`` (the Optuna
trial number), so a dashboard can join them to Optuna's tables or use them alone. Metric values are
double precision; ``NULL`` means unavailable (never 0).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VERSION_TABLE = "songhpo_alembic_version"
#: Optuna's study names are at most 512 characters.
STUDY_NAME_LENGTH = 512
#: SQLite only auto-increments an ``INTEGER PRIMARY KEY``; elsewhere ids are 64-bit.
_ID = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Dataset(Base):
    """A prepared dataset (one row per content fingerprint)."""

    __tablename__ = "songhpo_datasets"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    #: The prepared directory where it was first recorded (workers may see it under other paths).
    path: Mapped[str] = mapped_column(Text)
    #: ``manifest["source"]``: input path, format and input-file hashes.
    source: Mapped[dict[str, Any]] = mapped_column(JSON)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: ``manifest["parameters"]``: split fractions, seed, hard-negative rule.
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: ``manifest["hard_negatives"]``: rule, scope, thresholds, number of pairs and songs.
    hard_negatives: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Study(Base):
    """A songhpo study and the dataset it optimises on."""

    __tablename__ = "songhpo_studies"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(STUDY_NAME_LENGTH), unique=True)
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    objectives: Mapped[list[Any]] = mapped_column(JSON)
    directions: Mapped[list[Any]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TrialMetric(Base):
    """One metric of one trained model of a trial on one split, in long form.

    ``split`` is ``validation`` (written as the trial completes, ``seed`` = the trial's seed) or
    ``test`` (written by ``songhpo study evaluate``, one row per metric and re-training seed).
    """

    __tablename__ = "songhpo_trial_metrics"
    __table_args__ = (
        UniqueConstraint("study", "trial", "split", "seed", "metric"),
        Index(None, "study", "split", "trial"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    study: Mapped[str] = mapped_column(String(STUDY_NAME_LENGTH))
    trial: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(BigInteger)
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Double, nullable=True)


class BucketMetric(Base):
    """HitRate and NDCG@K of the pairs whose target (or query) song falls in one popularity bucket.

    Buckets are ranges of training play counts as ``metrics.popularity`` assigns them (equal numbers of
    songs, or of pairs for side ``eqpairs``): bucket 0 is ``[edge_low, edge_high]``, every later bucket ``(edge_low, edge_high]``.
    """

    __tablename__ = "songhpo_bucket_metrics"
    __table_args__ = (
        UniqueConstraint("study", "trial", "split", "seed", "side", "bucket"),
        Index(None, "study", "split", "trial"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    study: Mapped[str] = mapped_column(String(STUDY_NAME_LENGTH))
    trial: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(BigInteger)
    #: ``target`` (bucket of the song to predict) or ``query`` (bucket of the song asked about), both with
    #: equal-song buckets, or ``eqpairs`` (the target's bucket among buckets of about equal pair counts).
    side: Mapped[str] = mapped_column(String(8))
    bucket: Mapped[int] = mapped_column(Integer)
    edge_low: Mapped[float] = mapped_column(Double)
    edge_high: Mapped[float] = mapped_column(Double)
    pairs: Mapped[int] = mapped_column(Integer)
    hitrate: Mapped[float | None] = mapped_column(Double, nullable=True)
    ndcg: Mapped[float | None] = mapped_column(Double, nullable=True)


class ParetoSnapshot(Base):
    """A final evaluation of a study's feasible Pareto front (and baseline) on the test split."""

    __tablename__ = "songhpo_pareto_snapshots"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    study: Mapped[str] = mapped_column(String(STUDY_NAME_LENGTH), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    split: Mapped[str] = mapped_column(String(16))
    objectives: Mapped[list[Any]] = mapped_column(JSON)
    directions: Mapped[list[Any]] = mapped_column(JSON)
    #: The HardNeg safeguard the front was selected under (enabled, tolerance, baseline HardNeg, ...).
    constraint_spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Re-training seeds per member requested for this snapshot.
    seeds: Mapped[int] = mapped_column(Integer)
    #: Every member has ``seeds`` evaluated seeds.
    complete: Mapped[bool] = mapped_column(Boolean)


class ParetoMember(Base):
    """One trial of a snapshot with its validation metrics and its aggregated test metrics.

    ``test`` maps every metric to ``{"mean", "low", "high", "n"}`` (95% t interval over the seeds
    evaluated so far); ``test_buckets`` aggregates the popularity-bucket metrics the same way.
    """

    __tablename__ = "songhpo_pareto_members"
    __table_args__ = (UniqueConstraint("snapshot_id", "trial"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[int] = mapped_column(
        _ID, ForeignKey("songhpo_pareto_snapshots.id", ondelete="CASCADE"), index=True
    )
    trial: Mapped[int] = mapped_column(Integer)
    baseline: Mapped[bool] = mapped_column(Boolean)
    #: False for a baseline that is not itself on the feasible front.
    on_front: Mapped[bool] = mapped_column(Boolean)
    #: The trial's (validation) seed; test seed i is ``seed + 1000 * i``.
    seed: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    validation: Mapped[dict[str, Any]] = mapped_column(JSON)
    test: Mapped[dict[str, Any]] = mapped_column(JSON)
    test_buckets: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    n_seeds: Mapped[int] = mapped_column(Integer)


class StudyClaim(Base):
    """A one-time claim inside a study: the first writer of ``(study, key)`` owns it, later ones fail.

    Workers claim ``worker:N`` to get a study-unique number (their sampler's seed derives from it), and
    ``baseline:N`` before re-queueing a failed baseline, so two workers never queue it twice.
    """

    __tablename__ = "songhpo_study_claims"
    __table_args__ = (UniqueConstraint("study", "key"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    study: Mapped[str] = mapped_column(String(STUDY_NAME_LENGTH))
    key: Mapped[str] = mapped_column(String(128))
    #: Who claimed it, for the curious reader of the table (host name and process id).
    owner: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
