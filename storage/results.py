"""Writers and queries of the result tables (plain Python data in and out; no Optuna, no gensim).

Writers are idempotent: a row that exists already (same study, trial, split, seed, metric) is left
alone, so any number of workers may record, and re-record, the same trial concurrently without
duplicates. Everything a writer writes for one trained model is committed in one transaction.

Read API for dashboards: :func:`load_latest_snapshot` (JSON-able dict, see its docstring for the
exact shape), :func:`trial_metrics_frame` and :func:`bucket_metrics_frame` (pandas, long form).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from storage.db import engine_for, write_transaction
from storage.models import (
    BucketMetric,
    Dataset,
    ParetoMember,
    ParetoSnapshot,
    Study,
    StudyClaim,
    TrialMetric,
)

if TYPE_CHECKING:  # pandas only for the frame readers: the CLI's other commands start faster without it
    import pandas as pd

__all__ = [
    "SIDES",
    "bucket_metrics_frame",
    "claim",
    "claim_worker_number",
    "create_snapshot",
    "latest_snapshot_id",
    "load_latest_snapshot",
    "load_snapshot",
    "model_results",
    "record_dataset",
    "record_model_metrics",
    "record_snapshot_run",
    "record_study",
    "recorded_runs",
    "refresh_snapshot",
    "set_snapshot_complete",
    "snapshot_frame",
    "trial_metrics_frame",
    "update_member",
]

#: Bucket breakdowns: by the popularity of the target song, of the query song (equal-song buckets) and of the
#: target song in equal-pair buckets (``eqpairs``: each bucket holds about as many pairs, with its own edges).
SIDES = ("target", "query", "eqpairs")
_SIDE_KEYS = {"target": "by_target", "query": "by_query", "eqpairs": "by_target_equal_pairs"}
_METRICS: Table = TrialMetric.__table__  # type: ignore[assignment]
_BUCKETS: Table = BucketMetric.__table__  # type: ignore[assignment]
_DATASETS: Table = Dataset.__table__  # type: ignore[assignment]
_STUDIES: Table = Study.__table__  # type: ignore[assignment]
_SNAPSHOTS: Table = ParetoSnapshot.__table__  # type: ignore[assignment]
_MEMBERS: Table = ParetoMember.__table__  # type: ignore[assignment]
_CLAIMS: Table = StudyClaim.__table__  # type: ignore[assignment]


def _now() -> datetime:
    return datetime.now(UTC)


def _insert_ignore(connection: Connection, table: Table, rows: list[dict[str, Any]], keys: Sequence[str]) -> int:
    """Insert ``rows``, skipping those whose ``keys`` already exist; return how many were new."""
    if not rows:
        return 0
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        make = sqlite_insert if dialect == "sqlite" else pg_insert
        # RETURNING yields only the rows really inserted (executemany row counts are unreliable).
        statement = make(table).on_conflict_do_nothing(index_elements=list(keys)).returning(table.c.id)
        return len(connection.execute(statement, rows).all())
    # MySQL/MariaDB and any other backend: one savepoint per row. Not INSERT IGNORE: it also turns
    # other errors (truncation, NULL into NOT NULL) into warnings, and its row count is the server's
    # "affected rows", which the driver's FOUND_ROWS flag and multi-row batching make unreliable.
    written = 0
    for row in rows:
        try:
            with connection.begin_nested():
                connection.execute(insert(table), row)
            written += 1
        except IntegrityError:
            pass
    return written


def _float(value: Any) -> float | None:
    """A metric value as a float; ``None`` (unavailable) and non-finite values as ``None``."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# -- datasets and studies ------------------------------------------------------------------------


def record_dataset(
    url: str,
    *,
    fingerprint: str,
    path: str,
    source: Mapping[str, Any],
    counts: Mapping[str, Any],
    parameters: Mapping[str, Any],
    hard_negatives: Mapping[str, Any] | None = None,
) -> bool:
    """Record a prepared dataset (idempotent on ``fingerprint``); return whether it was new."""
    row = {
        "fingerprint": fingerprint, "path": path, "source": dict(source), "counts": dict(counts),
        "parameters": dict(parameters), "hard_negatives": None if hard_negatives is None else dict(hard_negatives),
        "created": _now(),
    }
    with write_transaction(engine_for(url)) as connection:
        return _insert_ignore(connection, _DATASETS, [row], ["fingerprint"]) > 0


def record_study(
    url: str,
    name: str,
    *,
    dataset_fingerprint: str | None,
    objectives: Sequence[str],
    directions: Sequence[str],
    fresh: bool = False,
) -> int:
    """Record study ``name``; with ``fresh`` (the study was just created) first delete every row left by
    an earlier study of the same name (deleted from Optuna and created again). Returns the rows deleted.
    """
    deleted = 0
    with write_transaction(engine_for(url)) as connection:
        if fresh:
            snapshots = select(_SNAPSHOTS.c.id).where(_SNAPSHOTS.c.study == name)
            deleted += connection.execute(delete(_MEMBERS).where(_MEMBERS.c.snapshot_id.in_(snapshots))).rowcount or 0
            for table in (_SNAPSHOTS, _METRICS, _BUCKETS, _CLAIMS):
                deleted += connection.execute(delete(table).where(table.c.study == name)).rowcount or 0
            connection.execute(delete(_STUDIES).where(_STUDIES.c.name == name))
        row = {"name": name, "dataset_fingerprint": dataset_fingerprint, "objectives": list(objectives),
               "directions": list(directions), "created": _now()}
        _insert_ignore(connection, _STUDIES, [row], ["name"])
    return deleted


# -- one-time claims ---------------------------------------------------------------------------


def claim(url: str, study: str, key: str, owner: str) -> bool:
    """Claim ``key`` inside ``study`` for ``owner``; ``True`` for the first claimant only, ever.

    Safe between processes and machines: the unique ``(study, key)`` row decides, whichever backend.
    """
    row = {"study": study, "key": key, "owner": owner[:255], "created": _now()}
    with write_transaction(engine_for(url)) as connection:
        return _insert_ignore(connection, _CLAIMS, [row], ["study", "key"]) > 0


def claim_worker_number(url: str, study: str, owner: str) -> int:
    """The smallest worker number ``n >= 0`` nobody has claimed in ``study`` (claimed as ``worker:n``).

    Numbers are never reused, so a resumed run is a new worker with a new number.
    """
    with engine_for(url).connect() as connection:
        taken = connection.execute(
            select(func.count()).select_from(_CLAIMS).where(_CLAIMS.c.study == study, _CLAIMS.c.key.like("worker:%"))
        ).scalar_one()
    number = int(taken)
    while not claim(url, study, f"worker:{number}", owner):
        number += 1
    return number


# -- per-model metrics ---------------------------------------------------------------------------


def _bucket_rows(study: str, trial: int, split: str, seed: int, buckets: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for side in SIDES:
        breakdown = buckets.get(_SIDE_KEYS[side])
        if breakdown is None:  # results computed before the equal-pair breakdown existed
            continue
        edges = [float(e) for e in breakdown.get("edges", buckets["edges"])]
        for bucket in range(len(edges) - 1):
            rows.append({
                "study": study, "trial": trial, "split": split, "seed": seed, "side": side, "bucket": bucket,
                "edge_low": edges[bucket], "edge_high": edges[bucket + 1],
                "pairs": int(breakdown["pairs"][bucket]),
                "hitrate": _float(breakdown["hitrate"][bucket]), "ndcg": _float(breakdown["ndcg"][bucket]),
            })
    return rows


def _insert_model_metrics(
    connection: Connection, study: str, trial: int, split: str, seed: int,
    metrics: Mapping[str, Any], buckets: Mapping[str, Any] | None,
) -> int:
    rows = [
        {"study": study, "trial": int(trial), "split": split, "seed": int(seed), "metric": name, "value": _float(value)}
        for name, value in metrics.items()
    ]
    bucket_rows = [] if buckets is None else _bucket_rows(study, int(trial), split, int(seed), buckets)
    new = _insert_ignore(connection, _METRICS, rows, ["study", "trial", "split", "seed", "metric"])
    return new + _insert_ignore(connection, _BUCKETS, bucket_rows, ["study", "trial", "split", "seed", "side", "bucket"])


def record_model_metrics(
    url: str,
    study: str,
    trial: int,
    *,
    split: str,
    seed: int,
    metrics: Mapping[str, Any],
    buckets: Mapping[str, Any] | None = None,
) -> bool:
    """Record the metrics (and popularity-bucket metrics) of one trained model, in one transaction.

    ``metrics`` maps metric names to numbers or ``None`` (stored as ``NULL``, never 0); ``buckets`` is
    the ``{"edges", "by_target", "by_query", "by_target_equal_pairs"}`` dict of :func:`metrics.evaluate.evaluate`
    (a breakdown it lacks is not recorded). Idempotent:
    rows that exist already are kept. Returns whether any row was new.
    """
    with write_transaction(engine_for(url)) as connection:
        return _insert_model_metrics(connection, study, trial, split, seed, metrics, buckets) > 0


def recorded_runs(url: str, study: str, split: str = "validation") -> set[tuple[int, int]]:
    """``(trial, seed)`` of every model of ``study`` with metrics recorded on ``split``."""
    query = select(_METRICS.c.trial, _METRICS.c.seed).where(_METRICS.c.study == study, _METRICS.c.split == split).distinct()
    with engine_for(url).connect() as connection:
        return {(int(t), int(s)) for t, s in connection.execute(query)}


def model_results(
    url: str, study: str, trial: int, seeds: Iterable[int], split: str = "test"
) -> dict[int, dict[str, Any]]:
    """Recorded metrics and buckets of trial ``trial`` for each of ``seeds`` that has them.

    Returns ``{seed: {"metrics": {name: value}, "buckets": {"edges", "by_target", "by_query",
    "by_target_equal_pairs"} | None}}`` (``by_target_equal_pairs``, with its own ``edges``, only when recorded).
    """
    with engine_for(url).connect() as connection:
        return _model_results(connection, study, trial, seeds, split)


def _model_results(
    connection: Connection, study: str, trial: int, seeds: Iterable[int], split: str
) -> dict[int, dict[str, Any]]:
    seeds = [int(s) for s in seeds]
    if not seeds:
        return {}
    where = and_(_METRICS.c.study == study, _METRICS.c.trial == int(trial), _METRICS.c.split == split,
                 _METRICS.c.seed.in_(seeds))
    bucket_where = and_(_BUCKETS.c.study == study, _BUCKETS.c.trial == int(trial), _BUCKETS.c.split == split,
                        _BUCKETS.c.seed.in_(seeds))
    results: dict[int, dict[str, Any]] = {}
    for seed, metric, value in connection.execute(
        select(_METRICS.c.seed, _METRICS.c.metric, _METRICS.c.value).where(where).order_by(_METRICS.c.id)
    ):
        results.setdefault(int(seed), {"metrics": {}, "buckets": None})["metrics"][metric] = value
    bucket_rows = connection.execute(
        select(_BUCKETS).where(bucket_where).order_by(_BUCKETS.c.seed, _BUCKETS.c.side, _BUCKETS.c.bucket)
    ).mappings().all()
    for seed, entry in results.items():
        mine = [r for r in bucket_rows if r["seed"] == seed]
        if mine:
            entry["buckets"] = _buckets_from_rows(mine)
    return results


def _buckets_from_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    by_side = {side: sorted((r for r in rows if r["side"] == side), key=lambda r: r["bucket"]) for side in SIDES}
    first = by_side["target"] or by_side["query"]
    edges = [r["edge_low"] for r in first] + [first[-1]["edge_high"]]
    out: dict[str, Any] = {"edges": edges}
    for side in SIDES:
        if not by_side[side]:  # recorded before the equal-pair breakdown existed
            continue
        out[_SIDE_KEYS[side]] = {
            "pairs": [int(r["pairs"]) for r in by_side[side]],
            "hitrate": [r["hitrate"] for r in by_side[side]],
            "ndcg": [r["ndcg"] for r in by_side[side]],
        }
        if side == "eqpairs":
            mine = by_side[side]
            out[_SIDE_KEYS[side]]["edges"] = [r["edge_low"] for r in mine] + [mine[-1]["edge_high"]]
    return out


def trial_metrics_frame(url: str, study_name: str, split: str = "validation") -> pd.DataFrame:
    """Every recorded metric of ``study_name`` on ``split``, long form.

    Columns ``study, trial, split, seed, metric, value`` (``value`` float, NaN where the metric is
    unavailable), sorted by trial, seed and metric. Validation rows appear as trials complete.
    """
    import pandas as pd

    columns = ["study", "trial", "split", "seed", "metric", "value"]
    query = (
        select(*(_METRICS.c[c] for c in columns))
        .where(_METRICS.c.study == study_name, _METRICS.c.split == split)
        .order_by(_METRICS.c.trial, _METRICS.c.seed, _METRICS.c.metric)
    )
    with engine_for(url).connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"trial": "int64", "seed": "int64", "value": "float64"})


def bucket_metrics_frame(url: str, study_name: str, split: str = "validation") -> pd.DataFrame:
    """Every recorded popularity-bucket row of ``study_name`` on ``split``, long form.

    Columns ``study, trial, split, seed, side, bucket, edge_low, edge_high, pairs, hitrate, ndcg``.
    """
    import pandas as pd

    columns = ["study", "trial", "split", "seed", "side", "bucket", "edge_low", "edge_high", "pairs", "hitrate", "ndcg"]
    query = (
        select(*(_BUCKETS.c[c] for c in columns))
        .where(_BUCKETS.c.study == study_name, _BUCKETS.c.split == split)
        .order_by(_BUCKETS.c.trial, _BUCKETS.c.seed, _BUCKETS.c.side, _BUCKETS.c.bucket)
    )
    with engine_for(url).connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"trial": "int64", "seed": "int64", "bucket": "int64", "pairs": "int64",
                         "hitrate": "float64", "ndcg": "float64"})


# -- Pareto-front snapshots ----------------------------------------------------------------------


def create_snapshot(
    url: str,
    study: str,
    *,
    objectives: Sequence[str],
    directions: Sequence[str],
    constraint: Mapping[str, Any],
    seeds: int,
    members: Sequence[Mapping[str, Any]],
    split: str = "test",
) -> int:
    """Create a snapshot and its members (no test results yet); return its id.

    Each member is ``{"trial", "baseline", "on_front", "seed", "params", "validation"}``.
    """
    with write_transaction(engine_for(url)) as connection:
        # inserted_primary_key, not RETURNING: MySQL has no INSERT ... RETURNING.
        (snapshot_id,) = connection.execute(
            insert(_SNAPSHOTS),
            {"study": study, "created": _now(), "split": split, "objectives": list(objectives),
             "directions": list(directions), "constraint_spec": dict(constraint), "seeds": int(seeds), "complete": False},
        ).inserted_primary_key
        connection.execute(insert(_MEMBERS), [
            {"snapshot_id": snapshot_id, "trial": int(m["trial"]), "baseline": bool(m["baseline"]),
             "on_front": bool(m["on_front"]), "seed": int(m["seed"]), "params": dict(m["params"]),
             "validation": dict(m["validation"]), "test": {}, "test_buckets": None, "n_seeds": 0}
            for m in members
        ])
    return int(snapshot_id)


def latest_snapshot_id(url: str, study_name: str) -> int | None:
    """Id of the newest snapshot of ``study_name`` (``None`` when there is none)."""
    query = select(func.max(_SNAPSHOTS.c.id)).where(_SNAPSHOTS.c.study == study_name)
    with engine_for(url).connect() as connection:
        value = connection.execute(query).scalar()
    return None if value is None else int(value)


def update_member(
    url: str, snapshot_id: int, trial: int, *, test: Mapping[str, Any], test_buckets: Mapping[str, Any] | None, n_seeds: int
) -> None:
    """Store a member's aggregated test metrics over its ``n_seeds`` evaluated seeds."""
    with write_transaction(engine_for(url)) as connection:
        connection.execute(
            update(_MEMBERS)
            .where(_MEMBERS.c.snapshot_id == snapshot_id, _MEMBERS.c.trial == int(trial))
            .values(test=dict(test), test_buckets=None if test_buckets is None else dict(test_buckets), n_seeds=int(n_seeds))
        )


def set_snapshot_complete(url: str, snapshot_id: int, complete: bool) -> None:
    """Mark snapshot ``snapshot_id`` complete (or not)."""
    with write_transaction(engine_for(url)) as connection:
        connection.execute(update(_SNAPSHOTS).where(_SNAPSHOTS.c.id == snapshot_id).values(complete=bool(complete)))


#: Aggregates one member's per-seed results ``[{"metrics", "buckets"}]`` (in seed order) into
#: ``(test, test_buckets)`` as stored on the member.
Aggregate = Callable[[list[dict[str, Any]]], tuple[dict[str, Any], dict[str, Any] | None]]


def _refresh_member(
    connection: Connection, snapshot_id: int, study: str, trial: int, seeds: Sequence[int], aggregate: Aggregate
) -> int:
    runs = _model_results(connection, study, trial, seeds, "test")
    ordered = [runs[int(s)] for s in seeds if int(s) in runs]
    test, buckets = aggregate(ordered)
    connection.execute(
        update(_MEMBERS)
        .where(_MEMBERS.c.snapshot_id == snapshot_id, _MEMBERS.c.trial == int(trial))
        .values(test=dict(test), test_buckets=None if buckets is None else dict(buckets), n_seeds=len(ordered))
    )
    return len(ordered)


def _refresh_complete(connection: Connection, snapshot_id: int) -> bool:
    seeds = connection.execute(select(_SNAPSHOTS.c.seeds).where(_SNAPSHOTS.c.id == snapshot_id)).scalar_one()
    missing = connection.execute(
        select(func.count()).select_from(_MEMBERS).where(_MEMBERS.c.snapshot_id == snapshot_id, _MEMBERS.c.n_seeds < seeds)
    ).scalar_one()
    complete = missing == 0
    connection.execute(update(_SNAPSHOTS).where(_SNAPSHOTS.c.id == snapshot_id).values(complete=complete))
    return complete


def record_snapshot_run(
    url: str,
    snapshot_id: int,
    study: str,
    trial: int,
    *,
    seed: int,
    member_seeds: Sequence[int],
    metrics: Mapping[str, Any],
    buckets: Mapping[str, Any] | None,
    aggregate: Aggregate,
) -> bool:
    """Record one test re-training of a snapshot member and refresh the member and the snapshot, in one
    transaction (a dashboard never sees the run without its aggregate); return whether the snapshot is
    now complete. ``member_seeds`` are all the seeds the snapshot wants for this member."""
    with write_transaction(engine_for(url)) as connection:
        _insert_model_metrics(connection, study, trial, "test", seed, metrics, buckets)
        _refresh_member(connection, snapshot_id, study, trial, member_seeds, aggregate)
        return _refresh_complete(connection, snapshot_id)


def refresh_snapshot(
    url: str, snapshot_id: int, study: str, member_seeds: Mapping[int, Sequence[int]], aggregate: Aggregate
) -> dict[int, int]:
    """Re-aggregate every member from the test runs already recorded (a new snapshot reusing them, or a
    resumed one); return the number of seeds done per trial."""
    with write_transaction(engine_for(url)) as connection:
        done = {trial: _refresh_member(connection, snapshot_id, study, trial, seeds, aggregate)
                for trial, seeds in member_seeds.items()}
        _refresh_complete(connection, snapshot_id)
    return done


def _iso(value: datetime) -> str:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


def load_snapshot(url: str, snapshot_id: int) -> dict[str, Any] | None:
    """Snapshot ``snapshot_id`` as plain JSON-able data (shape: :func:`load_latest_snapshot`)."""
    with engine_for(url).connect() as connection:
        snapshot = connection.execute(select(_SNAPSHOTS).where(_SNAPSHOTS.c.id == snapshot_id)).mappings().first()
        if snapshot is None:
            return None
        members = connection.execute(
            select(_MEMBERS).where(_MEMBERS.c.snapshot_id == snapshot_id).order_by(_MEMBERS.c.trial)
        ).mappings().all()
    metric_names = list(dict.fromkeys(name for m in members for name in m["validation"]))
    empty = {"mean": None, "low": None, "high": None, "n": 0}
    return {
        "snapshot_id": int(snapshot["id"]),
        "study": snapshot["study"],
        "created": _iso(snapshot["created"]),
        "split": snapshot["split"],
        "objectives": list(snapshot["objectives"]),
        "directions": list(snapshot["directions"]),
        "constraint": dict(snapshot["constraint_spec"]),
        "seeds": int(snapshot["seeds"]),
        "complete": bool(snapshot["complete"]),
        "members": [
            {
                "trial": int(m["trial"]),
                "baseline": bool(m["baseline"]),
                "on_front": bool(m["on_front"]),
                "seed": int(m["seed"]),
                "n_seeds": int(m["n_seeds"]),
                "params": dict(m["params"]),
                "validation": dict(m["validation"]),
                "test": {name: dict(m["test"].get(name, empty)) for name in [*metric_names, *m["test"]]},
                "test_buckets": None if m["test_buckets"] is None else dict(m["test_buckets"]),
            }
            for m in members
        ],
    }


def load_latest_snapshot(url: str, study_name: str) -> dict[str, Any] | None:
    """The newest Pareto-front snapshot of ``study_name``, or ``None``.

    Plain JSON-able data::

        {"snapshot_id": int, "study": str, "created": iso8601 str, "split": "test",
         "objectives": [str], "directions": [str], "constraint": {...}, "seeds": int, "complete": bool,
         "members": [{"trial": int, "baseline": bool, "on_front": bool, "seed": int, "n_seeds": int,
                      "params": {...}, "validation": {metric: value | None},
                      "test": {metric: {"mean": float | None, "low": float | None, "high": float | None, "n": int}},
                      "test_buckets": {"edges": [float],
                                       "by_target": {"pairs": [int], "hitrate": {"mean": [...], "low": [...],
                                                     "high": [...]}, "ndcg": {...}},
                                       "by_query": {...}} | None}]}

    ``members`` are sorted by trial number: the feasible Pareto front, plus the baseline when it is
    not on it (``on_front`` False). ``test`` has an entry for every validation metric; ``n`` counts the
    seeds where the metric was available; ``low``/``high`` are the 95% t interval (``None`` for
    ``n < 2``). ``test_buckets`` is ``None`` until a seed is evaluated. ``complete`` is False while
    ``songhpo study evaluate`` is running (or was interrupted): members then have ``n_seeds < seeds``.
    """
    snapshot_id = latest_snapshot_id(url, study_name)
    return None if snapshot_id is None else load_snapshot(url, snapshot_id)


def snapshot_frame(snapshot: Mapping[str, Any]) -> pd.DataFrame:
    """One row per member, flat columns: ``trial, baseline, on_front, n_seeds, params.*, validation.*,
    test.<metric>.mean/low/high/n``."""
    import pandas as pd

    rows = []
    params = sorted({name for m in snapshot["members"] for name in m["params"]})
    for member in snapshot["members"]:
        row: dict[str, Any] = {"trial": member["trial"], "baseline": member["baseline"],
                               "on_front": member["on_front"], "n_seeds": member["n_seeds"]}
        row.update({f"params.{name}": member["params"].get(name) for name in params})
        row.update({f"validation.{name}": value for name, value in member["validation"].items()})
        for name, stats in member["test"].items():
            for key in ("mean", "low", "high", "n"):
                row[f"test.{name}.{key}"] = stats[key]
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column.startswith(("validation.", "test.")) and not column.endswith(".n"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame
