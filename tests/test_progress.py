"""Progress inside a trial: gensim reports every epoch, the evaluation its stages, the CLI draws them with an
ETA on a terminal (a real pseudo-terminal) and stays at one log line per trial off a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpo._progress import TrialBar, trial_estimate
from hpo.config import parse_config
from hpo.data.dataset import PreparedDataset
from hpo.trials import trial_data
from objectives.trial import Objective, TrialData, run_configuration
from objectives.word2vec import train_word2vec
from tests.conftest import tiny_study_config, write_toml


class Recorder:
    """A :class:`objectives.trial.TrialProgress` that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def start(self, trial_number: int, epochs: int) -> None:
        self.events.append(("start", trial_number, epochs))

    def epoch(self, done: int, total: int) -> None:
        self.events.append(("epoch", done, total))

    def stage(self, name: str) -> None:
        self.events.append(("stage", name))

    def end(self) -> None:
        self.events.append(("end",))


SENTENCES = [[str((i * 7 + j) % 40) for j in range(8)] for i in range(200)]


def test_training_reports_every_epoch_and_the_callback_changes_nothing() -> None:
    told: list[tuple[int, int]] = []
    params = {"epochs": 4, "min_count": 1, "vector_size": 16}
    with_callback = train_word2vec(SENTENCES, 40, params, seed=3, on_epoch=lambda done, total: told.append((done, total)))
    assert told == [(1, 4), (2, 4), (3, 4), (4, 4)]
    without = train_word2vec(SENTENCES, 40, params, seed=3)
    np.testing.assert_array_equal(with_callback.matrix, without.matrix)


@pytest.fixture(scope="module")
def data(prepared_synth: Path) -> TrialData:
    config = parse_config(tiny_study_config(prepared_synth, "sqlite:///unused.db"), "test")
    return trial_data(config, PreparedDataset.load(prepared_synth))


def test_a_configuration_reports_its_epochs_then_the_knn_search_then_the_metrics(data: TrialData) -> None:
    recorder = Recorder()
    outcome = run_configuration(data, {"epochs": 3, "min_count": 1, "vector_size": 16}, seed=0, progress=recorder)
    assert recorder.events == [("epoch", 1, 3), ("epoch", 2, 3), ("epoch", 3, 3), ("stage", "knn"), ("stage", "metrics")]
    assert outcome.metrics["ndcg"] is not None


@pytest.mark.filterwarnings("ignore::UserWarning")  # Optuna: a failed trial
def test_the_objective_starts_and_ends_the_progress_of_every_trial_even_a_failing_one(data: TrialData) -> None:
    recorder = Recorder()
    study = optuna.create_study(directions=["maximize"])
    objective = Objective(data, {"epochs": 2, "min_count": 1, "vector_size": 8}, ["ndcg"], seed=0, safeguard=None,
                          progress=recorder)
    study.optimize(objective, n_trials=1)
    assert recorder.events[0] == ("start", 0, 2) and recorder.events[-1] == ("end",)
    assert [e for e in recorder.events if e[0] == "epoch"] == [("epoch", 1, 2), ("epoch", 2, 2)]
    recorder.events.clear()
    failing = Objective(data, {"epochs": 2, "min_count": 10**9}, ["ndcg"], seed=0, safeguard=None, progress=recorder)
    study.optimize(failing, n_trials=1, catch=(Exception,))
    assert study.trials[-1].state == optuna.trial.TrialState.FAIL
    assert recorder.events == [("start", 1, 2), ("end",)]  # empty vocabulary: no epoch, but the bar is closed


def test_trial_estimate_is_the_median_pace_of_the_completed_trials() -> None:
    attrs = [
        {"train_seconds": 10.0, "gensim_params": {"epochs": 5}, "knn_seconds": 1.0, "metrics_seconds": 0.5},
        {"train_seconds": 30.0, "gensim_params": {"epochs": 10}, "knn_seconds": 2.0, "metrics_seconds": 1.0},
        {"train_seconds": 4.0, "gensim_params": {"epochs": 1}, "knn_seconds": 3.0, "metrics_seconds": 1.0},
        {"fail_reason": "no timings"},
    ]
    assert trial_estimate(attrs) == (3.0, 3.0)  # medians of 2, 3, 4 s/epoch and of 1.5, 3, 4 s
    assert trial_estimate([]) == (None, None)


def test_the_trial_bar_shows_epochs_stages_and_an_eta(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SONGHPO_PROGRESS", "1")
    bar = TrialBar(lambda: (0.5, 2.0))
    bar.start(7, epochs=10)
    assert bar.eta_seconds() == pytest.approx(7.0)  # 10 epochs at 0.5 s, then 2 s of evaluation
    bar.epoch(5, 10)
    # Now the pace of this trial's own epochs (a few microseconds each here) and the study's evaluation time.
    assert 2.0 <= bar.eta_seconds() < 2.5
    bar.stage("knn")
    bar.stage("metrics")
    assert bar.eta_seconds() <= 2.0
    bar.end()
    err = capsys.readouterr().err
    assert "trial 7" in err and "5/10 epochs" in err and "ETA" in err
    assert "kNN search" in err and "metrics" in err


def test_the_trial_bar_is_silent_off_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SONGHPO_PROGRESS", "0")
    bar = TrialBar(lambda: (0.5, 2.0))
    bar.start(1, epochs=3)
    for done in (1, 2, 3):
        bar.epoch(done, 3)
    bar.stage("knn")
    bar.end()
    assert capsys.readouterr().err == ""


# -- the CLI ----------------------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    """The test's environment without the progress override: the terminal decides."""
    return {k: v for k, v in os.environ.items() if k != "SONGHPO_PROGRESS"}


def _study(prepared: Path, tmp_path: Path) -> Path:
    config = write_toml(tmp_path / "study.toml", tiny_study_config(
        prepared, f"sqlite:///{tmp_path / 'p.db'}", trials=3,
        search_space={"vector_size": {"type": "int", "low": 8, "high": 100, "log": True}, "epochs": 6,
                      "min_count": 1}))
    created = subprocess.run([sys.executable, "-m", "hpo", "study", "create", str(config)], capture_output=True,
                             text=True, env=_environment(), timeout=300)
    assert created.returncode == 0, created.stderr
    return config


def test_a_study_run_on_a_terminal_shows_each_trials_epochs_stages_and_eta(prepared_synth: Path,
                                                                             tmp_path: Path) -> None:
    config = _study(prepared_synth, tmp_path)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "hpo", "study", "run", str(config)], stdout=subprocess.PIPE,
                               stderr=slave, env=_environment())
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # a full pseudo-terminal would block the worker
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the worker closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out, _ = process.communicate(timeout=300)
    finally:
        reader.join(10)
        os.close(master)
    screen = b"".join(chunks).decode("utf-8", errors="replace")
    assert process.returncode == 0, screen
    for trial in range(3):
        assert f"trial {trial}: " in screen, screen
        assert re.search(rf"trial {trial}: .*6/6 epochs", screen), screen
        assert re.search(rf"trial {trial}: .*kNN search", screen), screen
        assert re.search(rf"trial {trial}: .*metrics", screen), screen
    assert re.search(r"trial 0: .*[1-5]/6 epochs.*ETA \d+s", screen), screen  # the pace of its own epochs
    # From the second trial on, the estimate includes the evaluation (the study's completed trials).
    assert re.search(r"trial [12]: .*training, ETA \d+s(?! \+ evaluation)", screen), screen
    assert "trial 2 complete in" in screen


def test_a_study_run_off_a_terminal_logs_one_line_per_trial(prepared_synth: Path, tmp_path: Path) -> None:
    config = _study(prepared_synth, tmp_path)
    result = subprocess.run([sys.executable, "-m", "hpo", "study", "run", str(config)], capture_output=True, text=True,
                            env=_environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "epochs" not in result.stderr and "ETA" not in result.stderr
    lines = result.stderr.splitlines()
    assert [n for n in range(3) if any(f"trial {n} complete in " in line for line in lines)] == [0, 1, 2]
    assert len(lines) <= 3 + 6, result.stderr  # one per trial, and a handful about the worker
