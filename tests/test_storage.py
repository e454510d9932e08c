"""The songhpo_ result tables, on SQLite and on the real PostgreSQL: trial rows written as a study runs,
dataset rows, idempotent writers, snapshot round trips, Alembic schema versions, concurrent writers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from optuna.trial import TrialState
from sqlalchemy import inspect, text

from hpo.config import parse_config
from hpo.data.dataset import PreparedDataset
from hpo.results import record_trial, validation_metrics
from hpo.study import create_study, load_study, run_worker
from metrics.evaluate import METRIC_KEYS
from storage import results as store
from storage.db import (
    create_results_engine,
    dispose_engines,
    engine_for,
    ensure_schema,
    head_revision,
    schema_revision,
    upgrade_schema,
)
from storage.errors import InputError
from storage.models import VERSION_TABLE, Base
from tests.conftest import (
    SERVERS,
    assert_distinct_except_reruns,
    assert_one_line_error,
    run_cli,
    run_python,
    run_tiny_study,
    start_cli,
    tiny_study_config,
    write_toml,
)

TABLES = {"songhpo_datasets", "songhpo_studies", "songhpo_trial_metrics", "songhpo_bucket_metrics",
          "songhpo_pareto_snapshots", "songhpo_pareto_members", "songhpo_study_claims"}


@pytest.fixture(params=["sqlite", *SERVERS])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The same tests on a SQLite file and on a fresh database of the real PostgreSQL and MariaDB/MySQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'results.db'}"
    else:
        url = request.getfixturevalue(f"{request.param}_url")
    yield url
    dispose_engines()  # before the server's database is dropped


def _rows(url: str, sql: str, **params: Any) -> list[Any]:
    with engine_for(url).connect() as connection:
        return list(connection.execute(text(sql), params))


def _same(stored: float | None, expected: Any) -> bool:
    """Stored value equals the trial attribute exactly; unavailable is NULL/NaN, never 0."""
    if expected is None:
        return stored is None or (isinstance(stored, float) and math.isnan(stored))
    return stored == float(expected)


def _metric_rows(url: str, study: str, split: str) -> dict[tuple[int, int], dict[str, float | None]]:
    out: dict[tuple[int, int], dict[str, float | None]] = {}
    for trial, seed, metric, value in _rows(
        url, "SELECT trial, seed, metric, value FROM songhpo_trial_metrics WHERE study = :s AND split = :p",
        s=study, p=split,
    ):
        out.setdefault((trial, seed), {})[metric] = value
    return out


def test_trial_rows_follow_a_running_study(storage_url: str, prepared_synth: Path) -> None:
    config = parse_config(tiny_study_config(prepared_synth, storage_url, trials=5), "test")
    create_study(config)
    study, config = load_study("tiny", storage_url)
    # Rows appear as trials complete: after a worker's first two trials, exactly those two are there.
    run_worker(study, config, n_trials=2)
    first = study.get_trials(states=(TrialState.COMPLETE,))
    assert {t for t, _ in _metric_rows(storage_url, "tiny", "validation")} == {t.number for t in first}
    run_worker(study, config)

    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 5
    stored = _metric_rows(storage_url, "tiny", "validation")
    assert set(stored) == {(t.number, t.user_attrs["seed"]) for t in complete}
    for trial in complete:
        rows = stored[(trial.number, trial.user_attrs["seed"])]
        expected = {k: trial.user_attrs[k] for k in [*METRIC_KEYS, "train_seconds", "knn_seconds",
                                                      "metrics_seconds", "trial_seconds", "cpu_seconds",
                                                      "constraint_hardneg"]}
        assert set(rows) == set(expected)
        for name, value in expected.items():
            assert _same(rows[name], value), (trial.number, name, rows[name], value)
        # The objectives are among them, equal to the values Optuna optimised.
        assert [rows[m] for m in study.metric_names] == trial.values

    # The long-form frame for dashboards says the same.
    frame = store.trial_metrics_frame(storage_url, "tiny")
    assert len(frame) == sum(len(v) for v in stored.values())
    assert list(frame.columns) == ["study", "trial", "split", "seed", "metric", "value"]
    one = frame[(frame.trial == complete[1].number) & (frame.metric == "ndcg")]
    assert one["value"].tolist() == [complete[1].user_attrs["ndcg"]]

    # Popularity buckets: the trial's `buckets` attribute, exactly.
    buckets = store.bucket_metrics_frame(storage_url, "tiny")
    for trial in complete:
        attr = trial.user_attrs["buckets"]
        mine = buckets[buckets.trial == trial.number]
        for side, key in (("target", "by_target"), ("query", "by_query"), ("eqpairs", "by_target_equal_pairs")):
            rows = mine[mine.side == side].sort_values("bucket")
            edges = attr[key].get("edges", attr["edges"])  # the equal-pair bucketing has its own
            assert rows["bucket"].tolist() == list(range(len(edges) - 1))
            assert rows["edge_low"].tolist() == edges[:-1]
            assert rows["edge_high"].tolist() == edges[1:]
            assert rows["pairs"].tolist() == attr[key]["pairs"]
            for metric in ("hitrate", "ndcg"):
                assert all(_same(s, e) for s, e in zip(rows[metric].tolist(), attr[key][metric], strict=True))

    # The dataset row is the manifest; the study row points at it.
    manifest = PreparedDataset.load(prepared_synth).manifest
    (row,) = _rows(storage_url, "SELECT fingerprint, path, source, counts, parameters, hard_negatives FROM songhpo_datasets")
    assert row[0] == manifest["fingerprint"]
    assert row[1] == str(Path(prepared_synth).resolve())
    decoded = [json.loads(v) if isinstance(v, str) else v for v in row[2:]]  # SQLite hands JSON back as text
    assert decoded == [manifest["source"], manifest["counts"], manifest["parameters"], manifest["hard_negatives"]]
    (study_row,) = _rows(storage_url, "SELECT name, dataset_fingerprint, objectives FROM songhpo_studies")
    assert study_row[:2] == ("tiny", manifest["fingerprint"])


def test_writers_are_idempotent_and_store_null_not_zero(storage_url: str, prepared_synth: Path) -> None:
    metrics = {"ndcg": 0.25, "hardneg": None, "ch_artist": float("nan"), "pairs_in": 7}
    buckets = {"edges": [1.0, 2.0, 5.0], "by_target": {"pairs": [3, 0], "hitrate": [0.5, None], "ndcg": [0.25, None]},
               "by_query": {"pairs": [2, 1], "hitrate": [1.0, 0.0], "ndcg": [0.5, 0.0]}}
    assert store.record_model_metrics(storage_url, "s", 4, split="validation", seed=9, metrics=metrics, buckets=buckets)
    assert not store.record_model_metrics(storage_url, "s", 4, split="validation", seed=9, metrics=metrics, buckets=buckets)
    rows = dict(_rows(storage_url, "SELECT metric, value FROM songhpo_trial_metrics"))
    assert rows == {"ndcg": 0.25, "hardneg": None, "ch_artist": None, "pairs_in": 7.0}
    assert _rows(storage_url, "SELECT count(*) FROM songhpo_trial_metrics WHERE value IS NULL") == [(2,)]
    assert _rows(storage_url, "SELECT count(*) FROM songhpo_bucket_metrics") == [(4,)]
    assert store.recorded_runs(storage_url, "s", "validation") == {(4, 9)}
    back = store.model_results(storage_url, "s", 4, [9, 10], split="validation")
    assert list(back) == [9]
    assert back[9]["buckets"] == buckets  # recorded without the equal-pair bucketing: read back without it
    # With it: its own edges come back with it (max 8 characters for the side: "eqpairs").
    with_pairs = {**buckets, "by_target_equal_pairs": {"edges": [1.0, 4.0, 5.0], "pairs": [2, 1],
                                                       "hitrate": [0.5, 1.0], "ndcg": [0.3, 0.5]}}
    assert store.record_model_metrics(storage_url, "s", 4, split="validation", seed=10, metrics=metrics,
                                      buckets=with_pairs)
    assert store.model_results(storage_url, "s", 4, [10], split="validation")[10]["buckets"] == with_pairs
    # A dataset recorded twice (two workers starting) is one row.
    dataset = PreparedDataset.load(prepared_synth)
    from hpo.results import record_dataset

    assert record_dataset(storage_url, dataset) and not record_dataset(storage_url, dataset)
    assert _rows(storage_url, "SELECT count(*) FROM songhpo_datasets") == [(1,)]


def test_a_value_the_column_cannot_hold_is_never_truncated_into_another(storage_url: str) -> None:
    """Metric names are VARCHAR(64). Two names sharing their first 64 characters are both stored intact
    (SQLite does not enforce the length) or refused as a whole (PostgreSQL, MySQL): never truncated so that the
    second collides with the first and is silently dropped, as MySQL's INSERT IGNORE did."""
    first, second = "x" * 64 + "_in", "x" * 64 + "_out"
    try:
        store.record_model_metrics(storage_url, "s", 1, split="validation", seed=1, metrics={first: 1.0, second: 2.0})
    except Exception as exc:  # noqa: BLE001 - the driver's own error type
        assert "too long" in str(exc).lower(), exc
        assert _rows(storage_url, "SELECT count(*) FROM songhpo_trial_metrics") == [(0,)]  # nothing half-written
        assert not storage_url.startswith("sqlite")
    else:
        assert dict(_rows(storage_url, "SELECT metric, value FROM songhpo_trial_metrics")) == {first: 1.0, second: 2.0}
        assert storage_url.startswith("sqlite")


@pytest.mark.mysql
def test_mysql_schema_lock_not_taken_is_an_error(mysql_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """GET_LOCK returns 0 on timeout: the upgrade must stop there, not go on without the lock."""
    import pymysql
    from sqlalchemy.engine import make_url

    import storage.db

    url = make_url(mysql_url)
    holder = pymysql.connect(host=url.host, port=url.port, user=url.username, password=url.password or "",
                             database=url.database)
    try:
        with holder.cursor() as cursor:  # another process holding the schema lock
            cursor.execute("SELECT GET_LOCK('songhpo_schema', 0)")
            assert cursor.fetchone() == (1,)
        monkeypatch.setattr(storage.db, "_LOCK_SECONDS", 1)
        with pytest.raises(InputError, match=r"could not take the schema lock 'songhpo_schema' within 1 s"):
            ensure_schema(create_results_engine(mysql_url))
        assert "songhpo_trial_metrics" not in inspect(create_results_engine(mysql_url)).get_table_names()
    finally:
        holder.close()
    dispose_engines()
    assert schema_revision(engine_for(mysql_url)) == head_revision()  # lock released: the upgrade runs


def test_snapshot_round_trip(storage_url: str) -> None:
    members = [
        {"trial": 0, "baseline": True, "on_front": False, "seed": 13, "params": {"vector_size": 100, "alpha": 0.025},
         "validation": {"ndcg": 0.1, "hardneg": None}},
        {"trial": 3, "baseline": False, "on_front": True, "seed": 16, "params": {"vector_size": 17, "alpha": 0.0123},
         "validation": {"ndcg": 0.2, "hardneg": 0.01}},
    ]
    constraint = {"enabled": True, "tolerance": 0.1, "baseline_hardneg": 0.02}
    first = store.create_snapshot(storage_url, "st", objectives=["ndcg"], directions=["maximize"],
                                  constraint=constraint, seeds=2, members=members)
    snapshot = store.load_latest_snapshot(storage_url, "st")
    assert snapshot is not None and snapshot["snapshot_id"] == first and snapshot["complete"] is False
    assert snapshot["members"][0]["test"]["ndcg"] == {"mean": None, "low": None, "high": None, "n": 0}
    assert snapshot["members"][0]["test_buckets"] is None
    test = {"ndcg": {"mean": 0.3, "low": 0.25, "high": 0.35, "n": 2},
            "hardneg": {"mean": None, "low": None, "high": None, "n": 0}}
    buckets = {"edges": [1.0, 3.0], "by_target": {"pairs": [5], "hitrate": {"mean": [0.5], "low": [0.4], "high": [0.6]},
                                                  "ndcg": {"mean": [0.2], "low": [None], "high": [None]}}}
    store.update_member(storage_url, first, 3, test=test, test_buckets=buckets, n_seeds=2)
    store.set_snapshot_complete(storage_url, first, True)
    second = store.create_snapshot(storage_url, "st", objectives=["ndcg"], directions=["maximize"],
                                   constraint=constraint, seeds=3, members=members[1:])
    assert second > first
    assert store.load_latest_snapshot(storage_url, "st")["snapshot_id"] == second  # type: ignore[index]
    assert store.load_latest_snapshot(storage_url, "other") is None
    old = store.load_snapshot(storage_url, first)
    assert old is not None
    json.dumps(old, allow_nan=False)  # plain JSON
    assert old["complete"] is True and old["seeds"] == 2 and old["objectives"] == ["ndcg"]
    assert old["constraint"] == constraint and old["study"] == "st"
    assert old["created"].endswith("+00:00")
    assert [(m["trial"], m["baseline"], m["on_front"], m["params"], m["validation"]) for m in old["members"]] == [
        (m["trial"], m["baseline"], m["on_front"], m["params"], m["validation"]) for m in members]
    assert old["members"][1]["test"] == test and old["members"][1]["test_buckets"] == buckets
    assert old["members"][1]["n_seeds"] == 2
    frame = store.snapshot_frame(old)
    assert frame["trial"].tolist() == [0, 3]
    assert frame["test.ndcg.mean"].tolist()[1] == 0.3 and math.isnan(frame["test.ndcg.mean"].tolist()[0])
    assert frame["params.vector_size"].tolist() == [100, 17]


def test_storage_knows_nothing_about_gensim_objectives_or_optuna() -> None:
    code = ("import sys, storage.results, storage.db, storage.models; "
            "print(sorted(m for m in ('gensim', 'objectives', 'optuna', 'hpo.study') if m in sys.modules))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_models_match_the_migrations_beside_optuna(storage_url: str) -> None:
    optuna.storages.RDBStorage(storage_url)  # Optuna's own tables and alembic_version first
    with create_results_engine(storage_url).connect() as connection:
        optuna_version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine = engine_for(storage_url)
    assert schema_revision(engine) == head_revision() == "0003"
    assert TABLES | {VERSION_TABLE} <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        # Optuna's version table is untouched by our migrations.
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == optuna_version
        context = MigrationContext.configure(connection, opts={
            "include_name": lambda name, kind, _p: kind != "table" or (name in TABLES),
            "compare_type": True,
        })
        assert compare_metadata(context, Base.metadata) == []


def test_older_schema_is_upgraded(storage_url: str) -> None:
    engine = create_results_engine(storage_url)
    assert upgrade_schema(engine, "0001") == "0001"
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO songhpo_trial_metrics (study, trial, split, seed, metric, value) "
            "VALUES ('old', 2, 'validation', 15, 'ndcg', 0.5)"))
    assert "songhpo_pareto_snapshots" not in inspect(engine).get_table_names()
    engine.dispose()
    upgraded = engine_for(storage_url)  # first use in this process: upgrade to head
    assert schema_revision(upgraded) == head_revision()
    assert TABLES <= set(inspect(upgraded).get_table_names())
    assert store.trial_metrics_frame(storage_url, "old")[["trial", "seed", "metric", "value"]].values.tolist() == [
        [2, 15, "ndcg", 0.5]]
    assert store.load_latest_snapshot(storage_url, "old") is None


def test_newer_schema_is_refused(storage_url: str) -> None:
    ensure_schema(create_results_engine(storage_url))
    with create_results_engine(storage_url).begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
    with pytest.raises(InputError, match=r"schema revision '0099', newer than this songhpo .* upgrade songhpo"):
        engine_for(storage_url)
    line = assert_one_line_error(run_cli("pareto", "show", "tiny", "--storage", storage_url), "newer than this songhpo")
    assert line.startswith("songhpo: error: storage ")
    # Nothing was changed: the database still says 0099.
    with create_results_engine(storage_url).connect() as connection:
        assert connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == "0099"


_CREATE_SCHEMA = """
import pathlib, sys, time
from storage.db import create_results_engine, ensure_schema
engine = create_results_engine(sys.argv[1])
print("ready", flush=True)
while not pathlib.Path(sys.argv[2]).exists():
    time.sleep(0.002)
print(ensure_schema(engine))
"""


def test_concurrent_schema_creation(storage_url: str, tmp_path: Path) -> None:
    """Processes starting at once on an empty database: one creates the tables, the others wait for it."""
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", _CREATE_SCHEMA, storage_url, str(go)], text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    go.touch()
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.strip() == head_revision()
    assert schema_revision(create_results_engine(storage_url)) == head_revision()


def _results_tables_mode(url: str) -> str:
    with create_results_engine(url).connect() as connection:
        return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar())


def _open_optuna_storage(url: str) -> Callable[[], str]:
    """The Optuna storage, made before the lock is taken (it creates its tables); the call connects anew."""
    from hpo.study import open_storage_url

    storage = open_storage_url(url)

    def mode() -> str:
        storage.get_all_studies()  # the first statement on a new connection, after the connect hook
        with storage.engine.connect() as connection:
            return str(connection.exec_driver_sql("PRAGMA journal_mode").scalar())

    return mode


@pytest.mark.parametrize("opener", ["results tables", "optuna storage"])
def test_the_switch_to_wal_waits_for_another_connections_lock(opener: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """While another connection holds a write lock, SQLite refuses the switch to WAL at once, without its busy
    timeout (the race of workers starting together on a new file): songhpo's tables and the Optuna storage
    both wait, up to that timeout."""
    import sqlite3
    import threading

    import sqlalchemy.exc

    import storage.db

    path = tmp_path / "new.db"
    url = f"sqlite:///{path}"
    mode = (lambda: _results_tables_mode(url)) if opener == "results tables" else _open_optuna_storage(url)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    # At the timeout's boundary (none left): the refusal is the error (Optuna wraps it in its own).
    monkeypatch.setattr(storage.db, "_SQLITE_BUSY_SECONDS", 0.0)
    with pytest.raises((sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError)) as refused:
        mode()
    assert "database is locked" in str(refused.value) + str(refused.value.__cause__)
    monkeypatch.undo()
    # Within it: the connection waits until the lock is gone, then the file is in WAL mode.
    waiting, sleep = threading.Event(), storage.db.time.sleep
    monkeypatch.setattr(storage.db.time, "sleep", lambda seconds: (waiting.set(), sleep(seconds)))
    modes: list[str] = []
    opening = threading.Thread(target=lambda: modes.append(mode()))
    opening.start()
    assert waiting.wait(timeout=60), "the connection never waited for the lock"
    holder.execute("COMMIT")
    opening.join(timeout=60)
    assert modes == ["wal"]
    holder.close()


def test_a_recreated_study_starts_with_empty_tables(prepared_synth: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'again.db'}"
    study, config = run_tiny_study(prepared_synth, url, trials=2)
    assert len(store.trial_metrics_frame(url, "tiny")) > 0
    optuna.delete_study(study_name="tiny", storage=url)
    create_study(config)
    # The old study's rows are gone: a new trial 0 is recorded from scratch, not shadowed by stale rows.
    assert store.trial_metrics_frame(url, "tiny").empty
    study, config = load_study("tiny", url)
    run_worker(study, config, n_trials=1)
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    rows = store.trial_metrics_frame(url, "tiny").set_index("metric")["value"]
    assert rows["ndcg"] == trial.user_attrs["ndcg"]
    dispose_engines()


def test_two_workers_on_a_server_lose_nothing(prepared_synth: Path, server_url: str, tmp_path: Path) -> None:
    """Two worker processes on PostgreSQL, and on MariaDB/MySQL: nothing lost, nothing recorded twice, no
    configuration run twice (four workers on PostgreSQL: tests/test_distributed.py)."""
    config = write_toml(tmp_path / "study.toml", tiny_study_config(prepared_synth, server_url, trials=4))
    created = run_cli("study", "create", str(config))
    assert created.returncode == 0, created.stderr
    # Each worker may run at most 2 trials, so reaching the budget of 4 needs both of them.
    workers = [start_cli("study", "run", str(config), "--n-trials", "2") for _ in range(2)]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        assert "could not record" not in err
        reports.append(json.loads(out))
    assert [r["completed"] for r in reports] == [2, 2]  # both really worked
    assert sorted(r["worker"] for r in reports) == [0, 1]  # each its own sampler seed
    study = optuna.load_study(study_name="tiny", storage=server_url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sum(r["completed"] for r in reports) == len(complete) >= 4
    assert_distinct_except_reruns(study.get_trials())
    try:
        stored = _metric_rows(server_url, "tiny", "validation")
        assert set(stored) == {(t.number, t.user_attrs["seed"]) for t in complete}
        for trial in complete:
            assert stored[(trial.number, trial.user_attrs["seed"])] == {
                k: (None if v is None else float(v)) for k, v in validation_metrics(trial).items()}
        (n_rows,), (n_distinct,) = (_rows(server_url, "SELECT count(*) FROM songhpo_trial_metrics")[0],
                                    _rows(server_url, "SELECT count(*) FROM (SELECT DISTINCT trial, seed, metric "
                                                      "FROM songhpo_trial_metrics) AS d")[0])
        assert n_rows == n_distinct == sum(len(v) for v in stored.values())
        per_trial = dict(_rows(server_url, "SELECT trial, count(*) FROM songhpo_bucket_metrics GROUP BY trial"))
        assert per_trial == {t.number: len(store.SIDES) * (len(t.user_attrs["buckets"]["edges"]) - 1) for t in complete}
        # Re-recording everything (a worker restarting) adds nothing.
        assert not any(record_trial(server_url, "tiny", t) for t in complete)
    finally:
        dispose_engines()


def test_a_claim_has_one_owner_and_worker_numbers_are_never_reused(storage_url: str) -> None:
    from storage.results import claim, claim_worker_number, record_study

    assert claim(storage_url, "s", "baseline:1", "host-a:1") is True
    assert claim(storage_url, "s", "baseline:1", "host-b:2") is False
    assert claim(storage_url, "other", "baseline:1", "host-b:2") is True  # claims are per study
    assert [claim_worker_number(storage_url, "s", f"w{i}") for i in range(3)] == [0, 1, 2]
    assert claim_worker_number(storage_url, "other", "w") == 0
    # A study created again under the same name starts over.
    record_study(storage_url, "s", dataset_fingerprint=None, objectives=["ndcg"], directions=["maximize"], fresh=True)
    assert claim(storage_url, "s", "baseline:1", "host-c:3") is True
    assert claim_worker_number(storage_url, "s", "w") == 0
