"""``songhpo export``: a trial's vectors as a file that ``songhpo eval`` scores exactly as the trial was scored,
whether they come from the artifact store or from an exact re-training; stdout; user mistakes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hpo.artifacts import has_stored_vectors
from hpo.data.embeddings_io import read_embeddings
from metrics.evaluate import METRIC_KEYS
from tests.conftest import SharedStudy, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def exported(tiny_study: SharedStudy, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shared tiny study (front policy): one trial with stored vectors, one without; a directory for exports."""
    root = tmp_path_factory.mktemp("export")
    url = tiny_study.storage
    study = optuna.load_study(study_name="tiny", storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    stored = next(t for t in complete if has_stored_vectors(t, "tiny") and not t.user_attrs.get("baseline"))
    missing = next(t for t in complete if not has_stored_vectors(t, "tiny"))
    return url, root, stored, missing


def _eval(prepared: Path, path: Path, *extra: str) -> dict[str, Any]:
    # The study's evaluation settings: K = 20 and its seed 13 (coherence / CH samples); the rest are defaults.
    result = run_cli("-q", "eval", "--prepared", str(prepared), "--embeddings", str(path), "--k", "20", "--seed", "13",
                     "--json", *extra)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize(("which", "fmt", "name", "source"), [
    ("stored", "word2vec", "t.txt", "artifact"),
    ("missing", "word2vec-binary", "t.bin", "re-trained"),
    ("missing", "npy", "t.npy", "re-trained"),
])
def test_eval_of_the_export_reproduces_the_trials_metrics(exported: Any, prepared_synth: Path, which: str,
                                                          fmt: str, name: str, source: str) -> None:
    url, root, stored, missing = exported
    trial = stored if which == "stored" else missing
    out = root / f"{trial.number}-{name}"
    result = run_cli("export", "tiny", "--trial", str(trial.number), "--storage", url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["source"] == source and summary["format"] == fmt and summary["seed"] == trial.user_attrs["seed"]
    assert summary["vectors"] == trial.user_attrs["songs_present"]
    if fmt == "npy":
        assert summary["out"] == [str(out), str(root / f"{trial.number}-t.vocab.txt")]
    metrics = _eval(prepared_synth, out)
    for key in METRIC_KEYS:
        assert metrics[key] == trial.user_attrs[key], key  # exactly: same float32 vectors, same evaluation
    assert metrics["buckets"] == trial.user_attrs["buckets"]
    assert metrics["alignment"]["ignored_keys"] == 0


def test_stdout_and_parquet(exported: Any, tmp_path: Path) -> None:
    url, root, stored, _ = exported
    number = str(stored.number)
    text = tmp_path / "v.vec"
    assert run_cli("-q", "export", "tiny", "--trial", number, "--storage", url, "--out", str(text)).returncode == 0
    reference = read_embeddings(text)
    # --out -: the same bytes on stdout, the summary on stderr, no file named '-'.
    piped = subprocess.run([sys.executable, "-m", "hpo", "-q", "export", "tiny", "--trial", number, "--storage", url,
                            "--out", "-", "--format", "word2vec"], capture_output=True, cwd=tmp_path, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == text.read_bytes() and not (tmp_path / "-").exists()
    assert json.loads(piped.stderr.decode().strip().splitlines()[-1])["out"] == "-"
    # Parquet (binary) on stdout when it is not a terminal: track_id + a float32 vector per song.
    piped = subprocess.run([sys.executable, "-m", "hpo", "-q", "export", "tiny", "--trial", number, "--storage", url,
                            "--out", "-", "--format", "parquet"], capture_output=True, cwd=tmp_path, timeout=300)
    assert piped.returncode == 0, piped.stderr
    frame = pd.read_parquet(io.BytesIO(piped.stdout))
    assert list(frame.columns) == ["track_id", "vector"] and frame["track_id"].tolist() == reference.keys
    matrix = np.stack(frame["vector"].to_numpy())
    assert matrix.dtype == np.float32 and np.array_equal(matrix, reference.vectors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.vec"]


def _in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI's own entry point in this process (the console script's code path, without its start-up)."""
    from hpo.cli.main import main

    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


def test_user_mistakes_exit_2_and_write_nothing(exported: Any, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    url, _, stored, _ = exported
    number = str(stored.number)
    existing = tmp_path / "keep.txt"
    existing.write_text("keep me\n")
    cases = [
        (["--out", str(existing)], ("already exists", "--force")),
        (["--out", str(tmp_path / "v.xlsx")], ("cannot tell the format", "--format")),
        (["--out", str(tmp_path / "v.txt"), "--format", "csv"], ("--format 'csv'",)),
        (["--out", "-", "--format", "npy"], ("two files",)),
        (["--out", str(tmp_path)], ("cannot tell the format",)),
        (["--out", str(tmp_path), "--format", "word2vec"], ("is a directory",)),
    ]
    for extra, fragments in cases:
        assert_one_line_error(_in_process(capsys, "export", "tiny", "--trial", number, "--storage", url, *extra),
                              *fragments)
    assert_one_line_error(_in_process(capsys, "export", "tiny", "--trial", "99", "--storage", url, "--out",
                                      str(tmp_path / "x.txt")), "has no trial 99")
    # The real console script too.
    assert_one_line_error(run_cli("export", "nope", "--trial", "0", "--storage", url, "--out",
                                  str(tmp_path / "x.txt")), "study 'nope' not found")
    assert existing.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    # npy: both files are checked before anything is written.
    (tmp_path / "m.vocab.txt").write_text("mine\n")
    assert_one_line_error(_in_process(capsys, "export", "tiny", "--trial", number, "--storage", url, "--out",
                                      str(tmp_path / "m.npy")), "m.vocab.txt: already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "m.vocab.txt"]
