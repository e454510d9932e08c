"""Distributed studies on the real PostgreSQL at 127.0.0.1:5432 and MariaDB/MySQL at 127.0.0.1:3306:
several `songhpo study run` processes share one study; a worker killed with SIGKILL has its trial re-run."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from tests.conftest import (
    SERVERS,
    assert_distinct_except_reruns,
    assert_one_line_error,
    run_cli,
    server_database,
    start_cli,
    tiny_study_config,
    write_toml,
)


def _open_fresh_storages(urls: list[str], barrier, results) -> None:  # type: ignore[no-untyped-def]
    from hpo.study import open_storage_url
    from storage.errors import InputError

    for url in urls:
        barrier.wait()  # every worker opens this fresh storage at the same moment
        try:
            open_storage_url(url).engine.dispose()
            results.put(None)
        except InputError as exc:
            results.put(str(exc))


@pytest.mark.parametrize("backend", [pytest.param("sqlite"), *SERVERS])
def test_workers_started_together_on_a_fresh_storage_all_open_it(backend: str, tmp_path: Path) -> None:
    """Four workers started at once on a storage nobody created yet all open it: Optuna creates its tables and
    version rows without a lock, and the workers that lose that race open it again instead of exiting with
    "UNIQUE constraint failed: alembic_version.version_num" (SQLite) or a duplicate key (PostgreSQL)."""
    import multiprocessing

    n_workers, rounds = 4, 8
    with contextlib.ExitStack() as databases:
        if backend == "sqlite":
            urls = [f"sqlite:///{tmp_path / f'fresh{round_}.db'}" for round_ in range(rounds)]
        else:
            urls = [databases.enter_context(server_database(backend)) for _ in range(rounds)]
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        barrier, results = context.Barrier(n_workers), context.Queue()
        workers = [context.Process(target=_open_fresh_storages, args=(urls, barrier, results))
                   for _ in range(n_workers)]
        for worker in workers:
            worker.start()
        errors = [error for error in (results.get(timeout=120) for _ in range(n_workers * rounds)) if error]
        for worker in workers:
            worker.join(timeout=60)
            assert worker.exitcode == 0
        assert errors == []
        for url in urls:  # one study storage, usable: the version rows were written once
            assert optuna.get_all_study_names(url) == []


def test_four_workers_share_one_study(prepared_synth: Path, postgres_url: str, tmp_path: Path) -> None:
    """PostgreSQL; two workers on MariaDB/MySQL are tests/test_storage.py::test_two_workers_on_a_server_lose_nothing."""
    config = write_toml(tmp_path / "study.toml", tiny_study_config(prepared_synth, postgres_url, trials=8))
    created = run_cli("study", "create", str(config))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["storage"] == postgres_url
    # Each worker may run at most 2 trials, so reaching the budget of 8 needs all four of them.
    workers = [start_cli("study", "run", str(config), "--n-trials", "2") for _ in range(4)]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        assert "Traceback" not in err, err
        reports.append(json.loads(out))
    study = optuna.load_study(study_name="tiny", storage=postgres_url)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # Nothing lost: every trial a worker completed is in the storage, and nothing is left hanging.
    assert sum(r["completed"] for r in reports) == len(complete)
    assert len(complete) == 8
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Nothing duplicated: unique numbers, one baseline, and every worker did some of the work.
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    assert [r["completed"] for r in reports] == [2, 2, 2, 2]
    assert all("ndcg" in t.user_attrs and "feasible" in t.user_attrs for t in complete)
    # Distinct trials: every worker got its own number, hence its own sampler seed, and no configuration ran twice.
    assert sorted(r["worker"] for r in reports) == [0, 1, 2, 3]
    assert_distinct_except_reruns(trials)
    status = run_cli("study", "status", "tiny", "--storage", postgres_url, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["trials"]["complete"] == len(complete)


def test_a_second_machine_joins_with_its_own_copy_of_the_dataset(prepared_synth: Path, synth_dir: Path,
                                                                  postgres_url: str, tmp_path: Path) -> None:
    """README's recipe for several machines: workers join by study name and --storage, each with the prepared
    dataset at its own path (shared or copied), checked by fingerprint against the study's."""
    here = shutil.copytree(prepared_synth, tmp_path / "machine-a" / "prepared")
    there = shutil.copytree(prepared_synth, tmp_path / "machine-b" / "prepared")
    config = write_toml(tmp_path / "study.toml", tiny_study_config(here, postgres_url, trials=5))
    first = run_cli("study", "run", str(config), "--n-trials", "2")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["completed"] == 2
    # Machine B has no file at machine A's path: it can only train on its own copy.
    here.rename(tmp_path / "machine-a" / "moved")
    assert_one_line_error(run_cli("study", "run", "tiny", "--storage", postgres_url), str(here), "--dataset",
                          allow_logs=True)
    other = tmp_path / "other"
    prepared = run_cli("data", "prepare", str(synth_dir), "--out", str(other), "--seed", "4")
    assert prepared.returncode == 0, prepared.stderr
    assert_one_line_error(run_cli("study", "run", "tiny", "--storage", postgres_url, "--dataset", str(other)),
                          str(other), "fingerprint", "differs from the study's dataset", "--dataset", allow_logs=True)
    second = run_cli("study", "run", "tiny", "--storage", postgres_url, "--dataset", str(there))
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["completed"] == 3
    study = optuna.load_study(study_name="tiny", storage=postgres_url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 5
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 5

#: Trials RUNNING in Optuna's tables whose worker has recorded a heartbeat and the parameters it trains with
#: (``gensim_params`` is stored once every parameter is suggested, right before training).
_TRAINING = text("SELECT t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
                 "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'gensim_params' "
                 "WHERE t.state = 'RUNNING' AND t.number >= :minimum ORDER BY t.number")


def _stop_inside_a_trial(victim: subprocess.Popen[str], storage: str, minimum_number: int) -> optuna.trial.FrozenTrial:
    """Wait for the state "a trial numbered >= minimum_number is training, with a heartbeat" in the storage,
    SIGSTOP the victim, and return that trial once it is confirmed still RUNNING: the kill that follows then
    lands inside the trial instead of racing with its end. A trial that ended in between is skipped.
    """
    engine = create_engine(storage)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and victim.poll() is None:
            try:
                with engine.connect() as connection:
                    number = connection.execute(_TRAINING, {"minimum": minimum_number}).scalar()
            except DBAPIError:  # the worker has not created Optuna's tables yet
                number = None
            if number is None:
                time.sleep(0.1)  # polling the storage for the state, not a guess at a duration
                continue
            victim.send_signal(signal.SIGSTOP)
            frozen = optuna.load_study(study_name="tiny", storage=storage).trials[number]
            if frozen.state == TrialState.RUNNING:
                return frozen
            victim.send_signal(signal.SIGCONT)
    finally:
        engine.dispose()
    raise AssertionError("the worker never trained a trial with a heartbeat")


def test_killed_worker_trial_is_retried(prepared_synth: Path, server_url: str, tmp_path: Path) -> None:
    settings = tiny_study_config(prepared_synth, server_url, trials=4)
    settings["search_space"] = {**settings["search_space"], "epochs": 20}  # type: ignore[dict-item]
    config = write_toml(tmp_path / "study.toml", settings)
    victim = start_cli("study", "run", str(config))
    running = _stop_inside_a_trial(victim, server_url, 1)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    # The survivor may reach the budget within the grace period, before the killed trial is stale: start
    # it once the storage says the heartbeat is stale (a read-only query; the survivor acts on it).
    probe = optuna.storages.RDBStorage(server_url, heartbeat_interval=1, grace_period=4)
    study_id = probe.get_study_id_from_name("tiny")
    deadline = time.monotonic() + 120
    while running._trial_id not in probe._get_stale_trial_ids(study_id):
        assert time.monotonic() < deadline, "the killed trial's heartbeat never went stale"
        time.sleep(0.2)
    probe.engine.dispose()
    survivor = start_cli("study", "run", str(config))
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err

    study = optuna.load_study(study_name="tiny", storage=server_url)
    trials = {t.number: t for t in study.get_trials()}
    killed = trials[running.number]
    assert killed.state == TrialState.FAIL  # failed by the survivor's stale-heartbeat check
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == running.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == killed.params
    assert retry.user_attrs["seed"] == killed.user_attrs["seed"] == 13 + running.number
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials.values())
    # Every trial completed before the kill is intact.
    for number in range(running.number):
        assert trials[number].state == TrialState.COMPLETE and "ndcg" in trials[number].user_attrs
