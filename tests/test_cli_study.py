"""The study commands and `songhpo demo` through the real CLI."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import optuna
import pytest

from hpo.config import EXAMPLE_CONFIG, load_config
from tests.conftest import assert_one_line_error, run_cli, run_python, start_cli, tiny_study_config, write_toml


def test_every_study_command_has_help() -> None:
    for command in (["study", "--help"], ["study", "init", "--help"], ["study", "create", "--help"],
                    ["study", "run", "--help"], ["study", "status", "--help"], ["study", "pareto", "--help"],
                    ["study", "list", "--help"], ["demo", "--help"], ["eval", "--help"]):
        result = run_cli(*command)
        assert result.returncode == 0 and "usage: songhpo" in result.stdout, command


def test_the_parser_imports_no_heavy_library() -> None:
    """``songhpo --help`` builds every command's parser: it must not wait for pandas, Optuna or gensim."""
    code = ("import sys\nfrom hpo.cli.main import build_parser\nbuild_parser()\n"
            "print(','.join(m for m in ('numpy', 'pandas', 'sqlalchemy', 'optuna', 'gensim', 'faiss', 'scipy', "
            "'pydantic', 'plotly') if m in sys.modules))")
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_commands_that_read_no_table_import_neither_pandas_nor_gensim() -> None:
    """``study status/pareto/list/create`` import the study layer, which must not pull pandas (0.3-0.4 s) or
    gensim (0.8 s) in: they come with the commands that read a table or train."""
    code = ("import sys\nimport hpo.study, hpo.results, hpo.trials, hpo.cli.study, storage.results\n"
            "print(','.join(m for m in ('pandas', 'gensim') if m in sys.modules))")
    result = run_python(code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(empty).engine.dispose()
    # The read end is closed before the command prints anything: its first write meets a broken pipe.
    process = start_cli("study", "list", "--storage", empty)
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_init_writes_the_example_which_validates(tmp_path: Path) -> None:
    result = run_cli("study", "init", "--out", str(tmp_path / "study.toml"))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "study.toml").read_text()
    assert text == EXAMPLE_CONFIG
    config = load_config(tmp_path / "study.toml")
    assert config.objectives == ["ndcg", "ch_artist", "ch_genre"] and config.sampler.name == "nsga2"
    assert config.dataset == (tmp_path / "prepared").resolve()
    assert config.storage == f"sqlite:///{(tmp_path / 'songhpo.db').resolve()}"
    # The example overrides nothing: the preset's ranges are searched, and listed as comments.
    assert tomllib.loads(text)["search_space"] == {} and tomllib.loads(text)["search_preset"] == "default"
    assert set(config.search_space) == {"vector_size", "window", "ns_exponent", "negative", "alpha", "epochs", "sample"}
    piped = run_cli("study", "init", "--out", "-", cwd=tmp_path)
    assert piped.returncode == 0 and piped.stdout == EXAMPLE_CONFIG and not (tmp_path / "-").exists()
    assert_one_line_error(run_cli("study", "init", "--out", str(tmp_path / "study.toml")), "already exists")


def test_create_run_status_pareto_list(prepared_synth: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'cli.db'}"
    config = write_toml(tmp_path / "study.toml", tiny_study_config(prepared_synth, storage, trials=4))
    assert run_cli("study", "create", str(config)).returncode == 0
    assert_one_line_error(run_cli("study", "create", str(config)), "already exists")
    first = run_cli("study", "run", str(config), "--n-trials", "2")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["completed"] == 2
    # A second worker joins by name only: the config comes from the storage.
    second = run_cli("study", "run", "tiny", "--storage", storage)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["completed"] == 2
    status = json.loads(run_cli("study", "status", "tiny", "--storage", storage, "--json").stdout)
    assert status["trials"]["complete"] == 4 and status["budget"] == 4 and status["baseline"]["trial"] == 0
    # The budget is reached: an explicit --n-trials runs that many more, and the stored budget follows.
    more = run_cli("study", "run", "tiny", "--storage", storage, "--n-trials", "2")
    assert more.returncode == 0 and json.loads(more.stdout)["completed"] == 2, more.stderr
    status = json.loads(run_cli("study", "status", "tiny", "--storage", storage, "--json").stdout)
    assert status["trials"]["complete"] == 6 and status["budget"] == 6
    text_status = run_cli("study", "status", "tiny", "--storage", storage)
    assert "baseline (trial 0, gensim defaults)" in text_status.stdout
    pareto = json.loads(run_cli("study", "pareto", "tiny", "--storage", storage, "--json").stdout)
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert sorted(row["trial"] for row in pareto) == sorted(t.number for t in study.best_trials)
    assert all(row["feasible"] for row in pareto)
    table = run_cli("study", "pareto", "tiny", "--storage", storage)
    assert table.returncode == 0 and "ndcg" in table.stdout.splitlines()[1]
    listing = run_cli("study", "list", "--storage", storage)
    row = next(line for line in listing.stdout.splitlines() if line.startswith("tiny"))
    assert "ndcg, ch_artist, ch_genre" in row, listing.stdout
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(empty).engine.dispose()
    assert run_cli("study", "list", "--storage", empty).stdout.startswith("no studies in sqlite:///")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["study", "status", "nope", "--storage", "sqlite:///{tmp}/x.db"], "study 'nope' not found"),
        (["study", "run", "{tmp}/missing.toml"], "no such study config"),
        (["study", "run", "{tmp}/bad.toml"], "unknown metric 'recall'"),
        (["study", "list", "--storage", "postgresql+psycopg://songhpo:s3cret@127.0.0.1:1/none"], "cannot connect"),
    ],
)
def test_study_errors_are_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    write_toml(tmp_path / "bad.toml", {"name": "b", "dataset": ".", "objectives": ["recall"]})
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'x.db'}").engine.dispose()  # an existing, empty storage
    result = run_cli("-q", *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert_one_line_error(result, fragment)
    assert "s3cret" not in result.stderr  # a storage password is never printed


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--trials", "4", "--sequences", "1500", "--tracks", "500")
    assert result.returncode == 0, result.stderr
    assert "feasible Pareto front of demo" in result.stdout and "next:" in result.stdout
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{out / 'songhpo.db'}")
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 4
    assert study.metric_names == ["ndcg", "ch_artist", "ch_genre"]
    # The written config reproduces the study's settings.
    config = load_config(out / "study.toml")
    assert config.name == "demo" and config.trials == 4 and config.sampler.population_size is None
    assert config.search_space["min_count"] == 1


def test_ctrl_c_marks_the_running_trial_and_keeps_the_rest(prepared_synth: Path, tmp_path: Path) -> None:
    import signal
    import time

    from optuna.trial import TrialState

    from hpo.study import open_storage_url

    storage = f"sqlite:///{tmp_path / 'int.db'}"
    settings = tiny_study_config(prepared_synth, storage, trials=50)
    settings["search_space"] = {**settings["search_space"], "epochs": 40}  # type: ignore[dict-item]
    config = write_toml(tmp_path / "study.toml", settings)
    worker = start_cli("study", "run", str(config))
    # Opened as a worker opens it: this probe and the worker may create the fresh storage's tables at once.
    probe = open_storage_url(storage)
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline and worker.poll() is None, "no trial ran after a completed one"
        try:
            study = optuna.load_study(study_name="tiny", storage=probe)
            if study.get_trials(states=(TrialState.COMPLETE,)) and study.get_trials(states=(TrialState.RUNNING,)):
                break
        except KeyError:
            pass
        time.sleep(0.2)
    probe.engine.dispose()
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=180)
    assert worker.returncode == 130, err
    assert "songhpo: interrupted" in err and "Traceback" not in err
    study = optuna.load_study(study_name="tiny", storage=storage)
    # Nothing is left running; what waits is the queued first generation, not a half-taken trial.
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert all("design" in t.user_attrs for t in study.trials if t.state == TrialState.WAITING)
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["fail_reason"] == "interrupted (SIGINT)"
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete and all("ndcg" in t.user_attrs for t in complete)
    # The storage is intact: another worker continues the same study.
    again = run_cli("study", "run", str(config), "--n-trials", "1")
    assert again.returncode == 0, again.stderr


def test_stop_signals_raise_as_ctrl_c_does_unless_ignored_at_start() -> None:
    """What the CLI runs every command in: SIGTERM and SIGHUP raise KeyboardInterrupt(signum) (the reason and exit
    code name the signal); a signal ignored at start, as ``nohup`` ignores SIGHUP, stays ignored; after a stop the
    stop signals stay ignored (the cleanup must finish), after a normal end the previous handlers are back."""
    import os
    import signal

    from objectives.stopping import interruption_reason, stop_signal, stop_signals_as_ctrl_c

    received: list[int] = []

    def record(signum: int, frame: object) -> None:  # what SIGTERM did before: a regression fails, not kills, pytest
        received.append(signum)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGTERM, record)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        with stop_signals_as_ctrl_c():
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing happens
        assert signal.getsignal(signal.SIGTERM) is record and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        with pytest.raises(KeyboardInterrupt) as stopped, stop_signals_as_ctrl_c():
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert received == []
    assert stop_signal(stopped.value) == signal.SIGTERM and interruption_reason(stopped.value) == "interrupted (SIGTERM)"
    assert interruption_reason(KeyboardInterrupt()) == "interrupted (SIGINT)"
    assert stop_signal(KeyboardInterrupt("not a signal")) == stop_signal(KeyboardInterrupt(40)) == signal.SIGINT


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["demo", "--trials", "0"], "field 'trials'"), (["demo", "--seed", "-1"], "--seed -1"),
     (["data", "synth", "--seed", "-1"], "--seed -1"),
     (["data", "prepare", "{tmp}", "--critical-value", "nan"], "--critical-value nan")],
)
def test_bad_numbers_are_one_line_and_write_nothing(tmp_path: Path, args: list[str], fragment: str) -> None:
    assert_one_line_error(run_cli("-q", *[a.replace("{tmp}", str(tmp_path)) for a in args], "--out", str(tmp_path / "out")),
                          fragment)
    assert not (tmp_path / "out").exists()


def test_a_mistyped_sqlite_path_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("-q", "study", "status", "x", "--storage", f"sqlite:///{tmp_path / 'typo.db'}"),
                          "no such SQLite file")
    assert not (tmp_path / "typo.db").exists()
