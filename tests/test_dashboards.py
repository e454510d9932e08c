"""``songhpo dashboard``: the note and charts saved into real studies (SQLite and PostgreSQL) and the server."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna_dashboard import get_note, save_note
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from dashboards.launch import (
    BUCKETS_GRAPH_ID,
    NOTE_BEGIN,
    NOTE_END,
    PARETO_GRAPH_ID,
    SIDE_EFFECTS_GRAPH_ID,
    prepare_dashboard,
    study_note,
)
from dashboards.pareto import FRONT, INFEASIBLE
from dashboards.selection import select_configurations
from hpo.data.dataset import PreparedDataset
from hpo.trials import baseline_trial, feasible_pareto_front
from tests.conftest import SharedStudy, assert_one_line_error, run_cli, run_tiny_study, start_cli

METRIC_COLUMNS = ("ndcg", "ndcg_in", "ndcg_out", "hitrate", "hardneg", "coherence_genre", "coherence_artist",
                  "ch_genre", "ch_artist", "train_seconds")


def _graphs(storage: str) -> dict[str, dict[str, Any]]:
    """The charts as stored, read back through a fresh connection."""
    study = optuna.load_study(study_name="tiny", storage=storage)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {k: json.loads(v) for k, v in get_plotly_graph_objects(attrs).items()}


def _check_prepared(study: optuna.Study, storage: str, prepared: Path) -> None:
    assert prepare_dashboard(study) == [PARETO_GRAPH_ID, BUCKETS_GRAPH_ID, SIDE_EFFECTS_GRAPH_ID]
    fresh = optuna.load_study(study_name="tiny", storage=storage)
    note = get_note(fresh)
    dataset = PreparedDataset.load(prepared)
    baseline = baseline_trial(fresh)
    assert note.startswith(f"{NOTE_BEGIN}: tiny") and note.rstrip().endswith(NOTE_END)
    assert dataset.fingerprint[:16] in note and f"{dataset.counts['songs']} songs" in note
    assert "ndcg (maximise), ch_artist (maximise), ch_genre (maximise)" in note
    # The safeguard's rule, with the baseline's value it is relative to.
    assert "one-sided paired t-test" in note and "HardNeg@20 above (1 + 0.1) x baseline" in note
    assert f"baseline HardNeg@20 {baseline.user_attrs['hardneg']:.4g}" in note and "at 95% confidence" in note
    assert f"| {baseline.user_attrs['ndcg']:.4g} |" in note
    graphs = _graphs(storage)
    assert set(graphs) == {PARETO_GRAPH_ID, BUCKETS_GRAPH_ID, SIDE_EFFECTS_GRAPH_ID}
    traces = {t["name"]: t for t in graphs[PARETO_GRAPH_ID]["data"]}
    assert sorted(traces[FRONT]["customdata"]) == [t.number for t in feasible_pareto_front(fresh)]
    infeasible = [t.number for t in fresh.get_trials() if t.user_attrs.get("feasible") is False]
    assert sorted(traces.get(INFEASIBLE, {}).get("customdata", [])) == infeasible
    buckets = [t for t in graphs[BUCKETS_GRAPH_ID]["data"] if t["name"].startswith("baseline")]
    assert buckets[0]["y"] == baseline.user_attrs["buckets"]["by_target"]["hitrate"]
    table = graphs[SIDE_EFFECTS_GRAPH_ID]["data"][0]
    assert table["type"] == "table"
    assert table["cells"]["values"][0][0] == "ndcg (↑)" and "hardneg (↓)" in table["cells"]["values"][0]
    assert table["cells"]["values"][1][0] == f"{baseline.user_attrs['ndcg']:.4g}"


def test_prepare_saves_note_and_charts_sqlite(tiny_study: SharedStudy, prepared_synth: Path) -> None:
    study, storage = tiny_study.study, tiny_study.storage
    _check_prepared(study, storage, prepared_synth)


def test_prepare_saves_note_and_charts_postgresql(prepared_synth: Path, postgres_url: str) -> None:
    study, _ = run_tiny_study(prepared_synth, postgres_url, trials=4)
    _check_prepared(study, postgres_url, prepared_synth)


def test_note_keeps_the_users_text_and_is_not_rewritten_needlessly(tiny_study: SharedStudy) -> None:
    study, storage = tiny_study.study, tiny_study.storage
    prepare_dashboard(study)
    save_note(study, get_note(study) + "\n\nmy own remark: try window 10")
    version = study._storage.get_study_system_attrs(study._study_id)["dashboard:note_ver"]
    prepare_dashboard(study)  # nothing changed: same note, same version
    assert study._storage.get_study_system_attrs(study._study_id)["dashboard:note_ver"] == version
    note = get_note(optuna.load_study(study_name="tiny", storage=storage))
    assert note.count(NOTE_BEGIN) == 1 and note.endswith("my own remark: try window 10")
    # A snapshot changes the generated block only; the remark stays.
    snapshot = {"snapshot_id": 3, "created": "2026-01-01T00:00:00+00:00", "seeds": 2, "complete": False, "members": []}
    prepare_dashboard(study, snapshot)
    note = get_note(study)
    assert "**Test snapshot** #3 (2026-01-01T00:00:00+00:00, 2 seeds, incomplete)" in note
    assert note.count(NOTE_BEGIN) == 1 and note.endswith("my own remark: try window 10")
    prepare_dashboard(study)


def test_note_shows_the_dropped_safeguard_warning() -> None:
    study = optuna.create_study(directions=["maximize"])
    study.set_metric_names(["ndcg"])
    warning = "HardNeg is unavailable: the dataset has no hard-negative pairs; the safeguard is dropped"
    study.set_user_attr("songhpo_safeguard", {"enabled": False, "tolerance": 0.1, "warning": warning})
    study.set_user_attr("songhpo_config", {"dataset": "/nonexistent", "evaluation": {"k": 50}})
    note = study_note(study)
    assert f"> **Warning:** {warning}" in note and "**Constraint (HardNeg safeguard)**: off." in note
    assert "not readable on this machine" in note and "**Baseline**: not complete yet." in note


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dashboard(storage: str, port: int, *extra: str) -> subprocess.Popen[str]:
    return start_cli("dashboard", "--storage", storage, "--port", str(port), *extra)


def wait_for(url: str, process: subprocess.Popen[str], timeout: float = 60.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dashboard exited with {process.returncode}: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[str, str]:
    process.send_signal(sig)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return out, err


def test_dashboard_serves_the_study_on_loopback(tiny_study: SharedStudy) -> None:
    study, storage = tiny_study.study, tiny_study.storage
    port = free_port()
    process = start_dashboard(storage, port)
    try:
        studies = json.loads(wait_for(f"http://127.0.0.1:{port}/api/studies", process))
        [summary] = studies["study_summaries"]
        detail = json.loads(wait_for(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0", process))
        # Bound to 127.0.0.1 only: another loopback address of this machine is refused.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
    finally:
        out, err = stop(process)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert out.strip() == f"optuna-dashboard for {storage} at http://127.0.0.1:{port}/dashboard/ (Ctrl-C stops)"
    assert detail["objective_names"] == ["ndcg", "ch_artist", "ch_genre"]
    sortable = {a["key"] for a in detail["union_user_attrs"] if a["sortable"]}
    assert set(METRIC_COLUMNS) <= sortable
    graphs = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
    assert set(graphs) == {PARETO_GRAPH_ID, BUCKETS_GRAPH_ID, SIDE_EFFECTS_GRAPH_ID}
    pareto = graphs[PARETO_GRAPH_ID]
    front = next(t for t in pareto["data"] if t["name"] == FRONT)
    assert sorted(front["customdata"]) == [t.number for t in feasible_pareto_front(study)]
    assert detail["note"]["body"].startswith(f"{NOTE_BEGIN}: tiny")
    roles = {c.label: c.trial.number for c in select_configurations(study)}
    assert f"| best NDCG | {roles['best NDCG']} |" in detail["note"]["body"]


def test_dashboard_sigterm_and_password_masking(prepared_synth: Path, postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "postgres:s3cr3t-pw@")  # trust auth: any password connects
    run_tiny_study(prepared_synth, url, trials=3)
    port = free_port()
    process = start_dashboard(url, port)
    try:
        wait_for(f"http://127.0.0.1:{port}/api/studies", process)
    finally:
        out, err = stop(process, signal.SIGTERM)
    assert process.returncode == 0, err
    assert "s3cr3t-pw" not in out + err and "postgres:***@" in out
    assert "Traceback" not in err


def test_dashboard_port_in_use_is_a_one_line_error(tiny_study: SharedStudy) -> None:
    storage = tiny_study.storage
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_cli("dashboard", "--storage", storage, "--port", str(port), timeout=120)
    assert assert_one_line_error(result, allow_logs=True) == (
        f"songhpo: error: --port {port}: already in use on 127.0.0.1; pass another --port")


def test_dashboard_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    result = run_cli("dashboard", "--storage", f"sqlite:///{missing}", "--port", str(free_port()), timeout=120)
    assert assert_one_line_error(result) == (
        f"songhpo: error: --storage sqlite:///{missing}: no such SQLite file '{missing}'")
    assert not missing.exists()
