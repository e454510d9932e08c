"""`songhpo study evaluate` and `songhpo pareto show|export` through the real CLI (SQLite)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hpo.cli.results import format_interval
from hpo.study import create_study
from hpo.trials import feasible_pareto_front
from storage import results as store
from tests.conftest import SharedStudy, assert_one_line_error, run_cli


@pytest.fixture
def empty_study(tiny_study: SharedStudy, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The storage URL of a SQLite file holding one study, "empty", created and never run."""
    url = f"sqlite:///{tmp_path_factory.mktemp('empty') / 'empty.db'}"
    create_study(tiny_study.config.model_copy(update={"name": "empty", "storage": url}))
    return url


def test_help_of_every_result_command() -> None:
    for command in (["pareto", "--help"], ["pareto", "show", "--help"], ["pareto", "export", "--help"],
                    ["study", "evaluate", "--help"]):
        result = run_cli(*command)
        assert result.returncode == 0 and "usage: songhpo" in result.stdout, command


def test_show_falls_back_to_validation_then_shows_the_test_snapshot(
    tiny_study: SharedStudy, evaluated_study: SharedStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same study before and after the fixture's `songhpo study evaluate`, found through the default of --storage.
    monkeypatch.setenv("SONGHPO_STORAGE", tiny_study.storage)
    before = run_cli("pareto", "show", "tiny")
    assert before.returncode == 0, before.stderr
    lines = before.stdout.splitlines()
    assert lines[0].startswith("no test snapshot of tiny yet: feasible Pareto front on VALIDATION")
    assert [int(line.split()[0]) for line in lines[3:]] == [t.number for t in feasible_pareto_front(tiny_study.study)]

    url = evaluated_study.storage
    monkeypatch.setenv("SONGHPO_STORAGE", url)
    snapshot = store.load_latest_snapshot(url, "tiny")
    assert snapshot is not None and snapshot["complete"]
    shown = run_cli("pareto", "show", "tiny")
    assert shown.returncode == 0 and shown.stdout == evaluated_study.evaluation
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
def test_export_round_trips(evaluated_study: SharedStudy, tmp_path: Path, fmt: str) -> None:
    url = evaluated_study.storage
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
    piped = run_cli("pareto", "export", "tiny", "--storage", url, "--out", "-", "--format", fmt, cwd=tmp_path,
                    timeout=120, text=False)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == out.read_bytes() and not (tmp_path / "-").exists()
    assert json.loads(piped.stderr.decode().strip().splitlines()[-1])["rows"] == len(expected)


def test_user_mistakes_exit_2_and_write_nothing(evaluated_study: SharedStudy, empty_study: str, tmp_path: Path) -> None:
    url = evaluated_study.storage
    existing = tmp_path / "front.csv"
    existing.write_text("keep me\n")
    assert_one_line_error(run_cli("pareto", "export", "tiny", "--storage", url, "--out", str(existing)),
                          "already exists", "--force")
    assert existing.read_text() == "keep me\n"
    forced = run_cli("pareto", "export", "tiny", "--storage", url, "--out", str(existing), "--force", "--format", "csv")
    assert forced.returncode == 0 and existing.read_text().startswith("trial,baseline")
    assert_one_line_error(run_cli("pareto", "export", "tiny", "--storage", url, "--out", str(tmp_path / "front.xlsx")),
                          "--format csv, json or parquet")
    assert_one_line_error(run_cli("pareto", "export", "empty", "--storage", empty_study, "--out", str(tmp_path / "e.csv")),
                          "no Pareto-front snapshot", "songhpo study evaluate empty")
    assert_one_line_error(run_cli("study", "evaluate", "tiny", "--storage", url, "--seeds", "0"), "--seeds 0")
    # The study is found through the default of --storage.
    assert_one_line_error(run_cli("study", "evaluate", "empty", env={"SONGHPO_STORAGE": empty_study}),
                          "no completed feasible trial")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.csv"]
