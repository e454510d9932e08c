"""`songhpo study evaluate` and `songhpo pareto show|export` through the real CLI (SQLite)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hpo.cli.results import format_interval
from hpo.study import create_study
from hpo.trials import feasible_pareto_front
from storage import results as store
from storage.db import dispose_engines
from tests.conftest import run_cli, run_tiny_study


@pytest.fixture(scope="module")
def study_db(prepared_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A finished tiny study, not yet evaluated on test, and an empty second study, in one SQLite file."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli_results') / 'results.db'}"
    study, config = run_tiny_study(prepared_synth, url, trials=4)
    create_study(config.model_copy(update={"name": "empty"}))
    yield SimpleNamespace(url=url, study=study)
    dispose_engines()


def _fails(result: Any, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("songhpo: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_help_of_every_result_command() -> None:
    for command in (["pareto", "--help"], ["pareto", "show", "--help"], ["pareto", "export", "--help"],
                    ["study", "evaluate", "--help"]):
        result = run_cli(*command)
        assert result.returncode == 0 and "usage: songhpo" in result.stdout, command


def test_show_falls_back_to_validation_then_shows_the_test_snapshot(
    study_db: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, study = study_db.url, study_db.study
    monkeypatch.setenv("SONGHPO_STORAGE", url)  # the default of --storage
    before = run_cli("pareto", "show", "tiny")
    assert before.returncode == 0, before.stderr
    lines = before.stdout.splitlines()
    assert lines[0].startswith("no test snapshot of tiny yet: feasible Pareto front on VALIDATION")
    assert [int(line.split()[0]) for line in lines[3:]] == [t.number for t in feasible_pareto_front(study)]

    evaluated = run_cli("study", "evaluate", "tiny", "--seeds", "2")
    assert evaluated.returncode == 0, evaluated.stderr
    snapshot = store.load_latest_snapshot(url, "tiny")
    assert snapshot is not None and snapshot["complete"]
    shown = run_cli("pareto", "show", "tiny")
    assert shown.returncode == 0 and shown.stdout == evaluated.stdout
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"Pareto-front snapshot {snapshot['snapshot_id']} of tiny on TEST (2 seeds")
    assert "complete" in lines[0]
    header = lines[2]
    assert header.split()[:4] == ["trial", "role", "ndcg", "(test)"]
    body = lines[4:]
    assert len(body) == len(snapshot["members"])
    for line, member in zip(body, snapshot["members"]):
        assert line.split()[0] == str(member["trial"])
        ndcg = format_interval(member["test"]["ndcg"])
        assert ndcg in line and ndcg.count("[") == 1  # "mean [low, high]"
        assert line.split()[1] == ("baseline" if member["baseline"] and not member["on_front"] else
                                   "front+baseline" if member["baseline"] else "front")
    as_json = run_cli("pareto", "show", "tiny", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == snapshot


def _expected_rows(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for member in snapshot["members"]:
        row = {"trial": member["trial"], "baseline": member["baseline"], "on_front": member["on_front"],
               "n_seeds": member["n_seeds"]}
        row.update({f"params.{k}": v for k, v in member["params"].items()})
        row.update({f"validation.{k}": v for k, v in member["validation"].items()})
        for metric, stats in member["test"].items():
            row.update({f"test.{metric}.{key}": stats[key] for key in ("mean", "low", "high", "n")})
        rows.append(row)
    return rows


def _equal(read: Any, expected: Any) -> bool:
    if expected is None:
        return read is None or (isinstance(read, float) and math.isnan(read))
    if isinstance(expected, bool):
        return isinstance(read, (bool, np.bool_)) and bool(read) == expected
    if isinstance(expected, (int, float)):
        return float(read) == pytest.approx(float(expected), rel=1e-12, abs=0.0)
    return read == expected


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_export_round_trips(study_db: SimpleNamespace, tmp_path: Path, fmt: str) -> None:
    url = study_db.url
    snapshot = store.load_latest_snapshot(url, "tiny")
    if snapshot is None:  # run alone: evaluate first
        assert run_cli("study", "evaluate", "tiny", "--storage", url, "--seeds", "2").returncode == 0
        snapshot = store.load_latest_snapshot(url, "tiny")
    assert snapshot is not None
    out = tmp_path / f"front.{fmt}"
    result = run_cli("pareto", "export", "tiny", "--storage", url, "--out", str(out))  # format from the suffix
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = _expected_rows(snapshot)
    assert summary["rows"] == len(expected) and summary["snapshot_id"] == snapshot["snapshot_id"]
    if fmt == "csv":
        frame = pd.read_csv(out)
        records = frame.to_dict(orient="records")
    elif fmt == "json":
        records = json.loads(out.read_text())
        frame = pd.DataFrame(records)
    else:
        frame = pd.read_parquet(out)
        records = frame.to_dict(orient="records")
    assert list(frame.columns)[:4] == ["trial", "baseline", "on_front", "n_seeds"]
    assert set(frame.columns) == set(expected[0])
    assert summary["columns"] == len(frame.columns)
    assert any(c.startswith("params.") for c in frame.columns)
    assert {"test.ndcg.mean", "test.ndcg.low", "test.ndcg.high", "test.ndcg.n", "validation.ch_artist"} <= set(frame.columns)
    for got, want in zip(records, expected, strict=True):
        for column, value in want.items():
            assert _equal(got[column], value), (fmt, column, got[column], value)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind
    # --out -: the same bytes on stdout (the summary moves to stderr), and no file named '-'.
    piped = subprocess.run([sys.executable, "-m", "hpo", "pareto", "export", "tiny", "--storage", url, "--out", "-",
                            "--format", fmt], capture_output=True, cwd=tmp_path, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == out.read_bytes() and not (tmp_path / "-").exists()
    assert json.loads(piped.stderr.decode().strip().splitlines()[-1])["rows"] == len(expected)


def test_user_mistakes_exit_2_and_write_nothing(study_db: SimpleNamespace, tmp_path: Path) -> None:
    url = study_db.url
    if store.load_latest_snapshot(url, "tiny") is None:
        assert run_cli("study", "evaluate", "tiny", "--storage", url, "--seeds", "1").returncode == 0
    existing = tmp_path / "front.csv"
    existing.write_text("keep me\n")
    _fails(run_cli("pareto", "export", "tiny", "--storage", url, "--out", str(existing)), "already exists", "--force")
    assert existing.read_text() == "keep me\n"
    forced = run_cli("pareto", "export", "tiny", "--storage", url, "--out", str(existing), "--force", "--format", "csv")
    assert forced.returncode == 0 and existing.read_text().startswith("trial,baseline")
    _fails(run_cli("pareto", "export", "tiny", "--storage", url, "--out", str(tmp_path / "front.xlsx")),
           "--format csv, json or parquet")
    _fails(run_cli("pareto", "export", "empty", "--storage", url, "--out", str(tmp_path / "e.csv")),
           "no Pareto-front snapshot", "songhpo study evaluate empty")
    _fails(run_cli("study", "evaluate", "tiny", "--storage", url, "--seeds", "0"), "--seeds 0")
    _fails(run_cli("study", "evaluate", "empty", "--storage", url), "no completed feasible trial")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.csv"]
