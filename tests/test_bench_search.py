"""``benchmarks/bench_search.py --carry``: a study stopped in one sitting goes on to its budget in the next,
from a committed (gzip-compressed) SQL dump, without the first sitting's scratch directory."""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import REPO, assert_distinct_except_reruns

BENCH = REPO / "benchmarks" / "bench_search.py"


def _bench(prepared: Path, out: Path, carry: Path, results: Path, *more: str) -> list[str]:
    return [sys.executable, str(BENCH), str(prepared), "--out", str(out), "--carry", str(carry),
            "--results", str(results), "--plan", "random:4", "--seeds", "0", "--anchor-seeds", "", "--commit", "test",
            *more]


def _wait_for_running_after(database: Path, name: str, process: subprocess.Popen[str], complete: int) -> None:
    """Wait until study ``name`` in SQLite file ``database`` holds ``complete`` completed trials and a running one."""
    deadline = time.monotonic() + 300
    # Read-only and plain sqlite3: Optuna's storage would create the file and its tables, racing the bench.
    query = ("SELECT state, count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ? GROUP BY state")
    while True:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{name} never had {complete} completed trials and a running one"
        states: dict[str, int] = {}
        if database.exists():
            with contextlib.suppress(sqlite3.OperationalError), \
                    contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
                states = dict(connection.execute(query, (name,)).fetchall())
        if states.get("COMPLETE", 0) >= complete and states.get("RUNNING"):
            return
        time.sleep(0.2)


def test_a_stopped_study_is_carried_to_the_next_sitting_and_reaches_its_budget(prepared_synth: Path,
                                                                               tmp_path: Path) -> None:
    carry, results = tmp_path / "carry", tmp_path / "results"
    first, second = tmp_path / "first", tmp_path / "second"
    storage = f"sqlite:///{first / 'synth.db'}"
    sitting = subprocess.Popen(_bench(prepared_synth, first, carry, results), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    _wait_for_running_after(first / "synth.db", "random-4-s0", sitting, complete=2)
    sitting.send_signal(signal.SIGTERM)
    _, err = sitting.communicate(timeout=300)
    assert sitting.returncode == 128 + signal.SIGTERM, err
    assert "carried over" in err and "Traceback" not in err
    dump = carry / "synth.sql.gz"
    assert gzip.decompress(dump.read_bytes()).decode().startswith("BEGIN TRANSACTION;")
    stopped = optuna.load_study(study_name="random-4-s0", storage=storage).get_trials()
    before = {t.number: t.params for t in stopped if t.state == TrialState.COMPLETE}
    interrupted = [t.number for t in stopped if t.state == TrialState.FAIL]
    # The trial seen running is failed, unless it ended between that look and the signal (then the signal
    # may land between two trials, with none running).
    assert len(interrupted) <= 1 and not [t for t in stopped if t.state == TrialState.RUNNING]
    assert not (results / "studies.json").exists()

    # The next sitting has the dump and the kept results only: another scratch directory.
    done = subprocess.run(_bench(prepared_synth, second, carry, results), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"restored {second / 'synth.db'} from {dump}" in done.stderr
    assert "every study reached its budget" in done.stderr and not dump.exists()
    trials = optuna.load_study(study_name="random-4-s0", storage=f"sqlite:///{second / 'synth.db'}").get_trials()
    complete = {t.number: t.params for t in trials if t.state == TrialState.COMPLETE}
    assert len(complete) == 4
    # The first sitting's trials are kept as they were, the stopped one stays failed, and the resumed
    # worker draws new configurations.
    assert {n: complete[n] for n in before} == before
    for number in interrupted:
        assert trials[number].state == TrialState.FAIL
        assert trials[number].user_attrs["fail_reason"].startswith("interrupted")
    assert_distinct_except_reruns(trials)
    kept = json.loads((results / "studies.json").read_text())
    assert [row["trials"] for key, row in kept.items() if key.endswith(":random-4-s0")] == [4]


def test_carry_with_no_run_is_refused(prepared_synth: Path, tmp_path: Path) -> None:
    refused = subprocess.run(_bench(prepared_synth, tmp_path / "out", tmp_path / "carry", tmp_path / "results",
                                    "--no-run"), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith("--carry restores and keeps studies to run; --no-run runs none")
    assert not (tmp_path / "out").exists()


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_search", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _storage_with(database: Path, completed: int) -> None:
    """An Optuna SQLite storage with study ``s`` of ``completed`` completed trials."""
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{database}")
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=completed)


def test_a_dump_is_restored_only_over_a_database_that_is_not_behind_it(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench_module()
    dump = tmp_path / "carry" / "d.sql.gz"
    _storage_with(tmp_path / "ran.db", 3)
    bench.carry_over(tmp_path / "ran.db", dump)
    # No time stamp in the gzip header: the same database gives the same bytes (a re-save changes no file).
    bench.carry_over(tmp_path / "ran.db", tmp_path / "again.sql.gz")
    assert (tmp_path / "again.sql.gz").read_bytes() == dump.read_bytes()
    # Into an absent database: the same studies and trials.
    bench.restore_carried(dump, tmp_path / "new.db")
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'new.db'}").trials == \
        optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'ran.db'}").trials
    # A database with as many completed trials as its dump (the boundary) is kept as it is.
    bench.restore_carried(dump, tmp_path / "ran.db")
    assert "holds every trial" in capsys.readouterr().err
    # One completed trial fewer stops the bench, naming the study.
    _storage_with(tmp_path / "behind.db", 2)
    with pytest.raises(SystemExit, match=r"behind.db is behind .*d\.sql\.gz \(completed trials, dump > database: s 3 > 2\)"):
        bench.restore_carried(dump, tmp_path / "behind.db")
    # A dump cut short before its COMMIT restores nothing (no empty database left behind).
    script = gzip.decompress(dump.read_bytes()).decode()
    cut = tmp_path / "cut.sql.gz"
    cut.write_bytes(gzip.compress(script.replace("COMMIT;", "").encode()))
    with pytest.raises(SystemExit, match="cut short"):
        bench.restore_carried(cut, tmp_path / "fresh.db")
    assert not (tmp_path / "fresh.db").exists()
    # A dump that is not gzip-compressed (an uncompressed one, as the bench wrote before) is named, not loaded.
    plain = tmp_path / "plain.sql.gz"
    plain.write_text(script)
    with pytest.raises(SystemExit, match=r"plain\.sql\.gz is not a gzip-compressed SQL dump"):
        bench.restore_carried(plain, tmp_path / "fresh.db")
    assert not (tmp_path / "fresh.db").exists()
    # Nor is one whose compressed body is damaged, or cut short (a copy that stopped half-way).
    damaged, cut_gzip = tmp_path / "damaged.sql.gz", tmp_path / "cut-gzip.sql.gz"
    body = bytearray(dump.read_bytes())
    body[20] ^= 0xFF
    body[21] ^= 0xFF
    damaged.write_bytes(bytes(body))
    cut_gzip.write_bytes(dump.read_bytes()[:len(body) // 2])
    for bad in (damaged, cut_gzip):
        with pytest.raises(SystemExit, match=rf"{bad.name.replace('.', '[.]')} is not a gzip-compressed SQL dump"):
            bench.restore_carried(bad, tmp_path / "fresh.db")
        assert not (tmp_path / "fresh.db").exists()
