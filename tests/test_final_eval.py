"""`songhpo study evaluate`: the feasible Pareto front and the baseline re-trained with several seeds and
evaluated on test, with 95% confidence intervals, stored as snapshots (SQLite and the real PostgreSQL),
resumable. Checked against independent re-training, scipy, and a real dataset."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from optuna.trial import TrialState
from scipy import stats
from sqlalchemy import text

from hpo.config import parse_config
from hpo.data.dataset import PreparedDataset
from hpo.data.prepare import PrepareParams, prepare_dataset
from hpo.data.readers import read_input
from hpo.evaluation import evaluate_split
from hpo.results import TEST_SEED_STRIDE, confidence_interval, evaluate_front
from hpo.study import create_study, load_study, run_worker
from metrics.evaluate import METRIC_KEYS, EvaluationSettings
from objectives.word2vec import train_word2vec
from storage import results as store
from storage.db import create_results_engine, dispose_engines
from tests.conftest import SERVERS, run_cli, run_tiny_study, server_database, shared_dataset, start_cli

HEADLINE = ("ndcg", "hitrate")


@pytest.fixture(scope="module", params=["sqlite", *SERVERS])
def module_storage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A storage URL shared by the tests of this module: a SQLite file, or a fresh database of the real
    PostgreSQL or MariaDB/MySQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('final') / 'final.db'}"
        dispose_engines()
        return
    with server_database(request.param) as url:
        yield url
        dispose_engines()


@pytest.fixture(scope="module")
def evaluated(module_storage: str, prepared_synth: Path) -> SimpleNamespace:
    """A finished tiny study, evaluated on test with 2 seeds through the real CLI."""
    url = module_storage
    study, config = run_tiny_study(prepared_synth, url, trials=5)
    result = run_cli("study", "evaluate", "tiny", "--storage", url, "--seeds", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    snapshot = store.load_snapshot(url, report["snapshot_id"])
    assert snapshot is not None
    return SimpleNamespace(url=url, study=study, config=config, report=report, snapshot=snapshot,
                           dataset=PreparedDataset.load(prepared_synth))


def _test_values(url: str, study: str, trial: int, seeds: list[int], metric: str) -> list[float | None]:
    frame = store.trial_metrics_frame(url, study, split="test")
    rows = frame[(frame.trial == trial) & (frame.metric == metric)].set_index("seed")["value"]
    return [None if math.isnan(rows[s]) else float(rows[s]) for s in seeds]


def test_members_are_the_feasible_front_plus_the_baseline(evaluated: SimpleNamespace) -> None:
    study, snapshot = evaluated.study, evaluated.snapshot
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    best = {t.number for t in study.best_trials if t.user_attrs["feasible"]}
    assert best  # a real front
    members = {m["trial"]: m for m in snapshot["members"]}
    assert set(members) == best | {0}
    assert {n for n, m in members.items() if m["on_front"]} == best
    assert [n for n, m in members.items() if m["baseline"]] == [0]
    assert snapshot["complete"] and snapshot["seeds"] == 2 and snapshot["split"] == "test"
    assert snapshot["objectives"] == ["ndcg", "ch_artist", "ch_genre"]
    assert snapshot["constraint"]["enabled"] and snapshot["constraint"]["tolerance"] == 0.1
    by_number = {t.number: t for t in complete}
    assert snapshot["constraint"]["baseline_hardneg"] == by_number[0].user_attrs["hardneg"]
    for number, member in members.items():
        trial = by_number[number]
        assert member["params"] == {k: v for k, v in trial.user_attrs["gensim_params"].items() if k not in ("sg", "hs")}
        assert member["validation"] == {k: trial.user_attrs[k] for k in METRIC_KEYS}
        assert member["n_seeds"] == 2 and member["seed"] == trial.user_attrs["seed"]
        assert all(member["test"][m]["n"] == 2 for m in HEADLINE)
    report = evaluated.report
    assert report["members"] == len(members) and report["runs"] == report["trained"] == 2 * len(members)
    json.dumps(snapshot, allow_nan=False)


def test_test_metrics_are_real_reevaluations(evaluated: SimpleNamespace) -> None:
    """Seed 0 of a front member, re-trained here from its parameters and evaluated on test with
    evaluate_split, gives exactly the stored test metrics; seed 1 is a different model."""
    study, url = evaluated.study, evaluated.url
    member = next(m for m in evaluated.snapshot["members"] if not m["baseline"])
    trial = study.trials[member["trial"]]
    seed = trial.user_attrs["seed"]
    dataset = evaluated.dataset
    params = {**trial.params, "epochs": 2, "min_count": 1}  # the tiny config's fixed parameters
    trained = train_word2vec(dataset.training_sentences(), dataset.n_songs, params, seed=seed)
    expected = evaluate_split(dataset, trained.matrix, trained.present, "test", EvaluationSettings(k=20, seed=13))
    runs = store.model_results(url, "tiny", trial.number, [seed, seed + TEST_SEED_STRIDE])
    assert set(runs) == {seed, seed + TEST_SEED_STRIDE}
    for name in METRIC_KEYS:
        value = expected.metrics[name]
        assert runs[seed]["metrics"][name] == (None if value is None else pytest.approx(value, rel=1e-9)), name
    assert runs[seed]["buckets"]["by_target"]["pairs"] == expected.buckets["by_target"]["pairs"]
    assert runs[seed]["buckets"]["by_query"]["ndcg"] == pytest.approx(expected.buckets["by_query"]["ndcg"], rel=1e-9)
    # Really the test split (validation pairs give other values), really another seed.
    assert runs[seed]["metrics"]["ndcg"] != pytest.approx(trial.user_attrs["ndcg"], rel=1e-6)
    assert runs[seed]["metrics"]["pairs_out"] == len(dataset.pairs("test", "out"))
    assert runs[seed + TEST_SEED_STRIDE]["metrics"]["ndcg"] != runs[seed]["metrics"]["ndcg"]
    # Calinski-Harabasz does not depend on the split: seed 0 on test reproduces the validation model's value.
    assert runs[seed]["metrics"]["ch_artist"] == pytest.approx(trial.user_attrs["ch_artist"], rel=1e-9)


def test_confidence_intervals_match_scipy(evaluated: SimpleNamespace) -> None:
    url, snapshot = evaluated.url, evaluated.snapshot
    buckets = store.bucket_metrics_frame(url, "tiny", split="test")
    for member in snapshot["members"]:
        seeds = [member["seed"] + TEST_SEED_STRIDE * i for i in range(snapshot["seeds"])]
        for metric in ("ndcg", "hitrate", "ch_artist", "ch_genre", "hardneg", "coherence_genre"):
            values = np.array(_test_values(url, "tiny", member["trial"], seeds, metric), dtype=float)
            low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
            got = member["test"][metric]
            assert got["n"] == 2
            assert got["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert (got["low"], got["high"]) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
        mine = buckets[(buckets.trial == member["trial"]) & (buckets.side == "target")]
        per_bucket = mine.pivot(index="bucket", columns="seed", values="ndcg")
        assert member["test_buckets"]["by_target"]["ndcg"]["mean"] == pytest.approx(per_bucket.mean(axis=1).tolist())
        one_seed = mine[mine.seed == member["seed"]].sort_values("bucket")
        assert member["test_buckets"]["edges"] == [*one_seed.edge_low, one_seed.edge_high.iloc[-1]]
        assert member["test_buckets"]["by_target"]["pairs"] == one_seed.pairs.tolist()


def test_confidence_interval_small_samples() -> None:
    assert confidence_interval([]) == {"mean": None, "low": None, "high": None, "n": 0}
    assert confidence_interval([None, 0.5]) == {"mean": 0.5, "low": None, "high": None, "n": 1}
    values = [0.31, 0.29, 0.35, 0.30, 0.33]
    low, high = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    got = confidence_interval([*values, None])
    assert got["n"] == 5 and (got["low"], got["high"]) == (pytest.approx(low), pytest.approx(high))
    constant = confidence_interval([0.2, 0.2, 0.2])
    assert constant["low"] == constant["mean"] == constant["high"] == pytest.approx(0.2) and constant["n"] == 3


def _row_ids(url: str) -> dict[tuple[int, int, str], tuple[int, float | None]]:
    with create_results_engine(url).connect() as connection:
        rows = connection.execute(text(
            "SELECT trial, seed, metric, id, value FROM songhpo_trial_metrics WHERE split = 'test'")).all()
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}


def test_more_seeds_reuse_the_seeds_already_done(evaluated: SimpleNamespace) -> None:
    url, first = evaluated.url, evaluated.snapshot
    before = _row_ids(url)
    report = evaluate_front(evaluated.study, evaluated.config, seeds=3).to_dict()
    members = len(first["members"])
    assert report["reused"] == 2 * members and report["trained"] == members and report["complete"]
    assert not report["continued"] and report["snapshot_id"] != first["snapshot_id"]
    after = _row_ids(url)
    assert {k: after[k] for k in before} == before  # the 2 seeds done are kept as they were, not redone
    assert {seed for (_, seed, _) in after} - {seed for (_, seed, _) in before} == {
        m["seed"] + 2 * TEST_SEED_STRIDE for m in first["members"]}
    latest = store.load_latest_snapshot(url, "tiny")
    assert latest is not None and latest["seeds"] == 3 and latest["complete"]
    assert all(m["n_seeds"] == 3 and m["test"]["ndcg"]["n"] == 3 for m in latest["members"])
    # Same front, same seeds, complete: nothing to do, the same snapshot.
    again = evaluate_front(evaluated.study, evaluated.config, seeds=3).to_dict()
    assert again == {**report, "continued": True, "reused": 3 * members, "trained": 0}
    assert _row_ids(url) == after
    # The 2-seed snapshot is kept as history.
    assert store.load_snapshot(url, first["snapshot_id"]) == first


MANY = 8


def _log_line_event(process: subprocess.Popen[str], pattern: re.Pattern[str]) -> threading.Event:
    """An event set when ``process`` writes a stderr line matching ``pattern``; the rest of stderr is drained."""
    seen = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if pattern.search(line):
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    return seen


def test_ci_shrinks_with_more_seeds_and_a_killed_evaluation_resumes(tmp_path: Path) -> None:
    """yes_small (real playlists): the 95% CI of the headline metrics is narrower with 8 seeds than with 2;
    an evaluation killed mid-way continues the same snapshot and only trains what is missing."""
    prepared = tmp_path / "yes_small"
    prepare_dataset(read_input(shared_dataset("yes", "yes_small")), prepared, PrepareParams(seed=0))
    url = f"sqlite:///{tmp_path / 'yes.db'}"
    fixed = {"vector_size": 32, "window": 5, "ns_exponent": 0.75, "negative": 5, "alpha": 0.025, "epochs": 3, "min_count": 1}
    config = parse_config({"name": "yes", "dataset": str(prepared), "storage": url, "seed": 5, "trials": 1,
                           "evaluation": {"k": 50}, "search_space": fixed}, "test")
    create_study(config)
    study, config = load_study("yes", url)
    run_worker(study, config)
    assert evaluate_front(study, config, seeds=2).trained == 2
    first = store.load_latest_snapshot(url, "yes")
    assert first is not None and [m["trial"] for m in first["members"]] == [0]

    # Kill an 8-seed evaluation right after it logs its first new seed, which it logs once that seed is
    # committed: the event is the log line, and 5 more re-trainings stand between it and the end.
    victim = start_cli("study", "evaluate", "yes", "--storage", url, "--seeds", str(MANY))
    committed = _log_line_event(victim, re.compile(r"trial 0 seed \d+ on test: "))
    assert committed.wait(timeout=300), "the evaluation never logged a committed seed"
    victim.kill()
    victim.wait(30)
    assert victim.returncode == -signal.SIGKILL
    interrupted = store.load_latest_snapshot(url, "yes")
    assert interrupted is not None and interrupted["seeds"] == MANY and not interrupted["complete"]
    done = interrupted["members"][0]["n_seeds"]
    assert 3 <= done < MANY
    # A run and its member's aggregate are committed together: the snapshot counts every stored run.
    assert len(store.recorded_runs(url, "yes", "test")) == done
    assert interrupted["members"][0]["test"]["ndcg"]["n"] == done

    resumed = run_cli("study", "evaluate", "yes", "--storage", url, "--seeds", str(MANY), "--json")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["continued"] and report["snapshot_id"] == interrupted["snapshot_id"]
    assert (report["reused"], report["trained"], report["complete"]) == (done, MANY - done, True)
    five = store.load_latest_snapshot(url, "yes")
    assert five is not None and five["complete"] and five["members"][0]["n_seeds"] == MANY

    widths = {}
    for metric in HEADLINE:
        a, b = first["members"][0]["test"][metric], five["members"][0]["test"][metric]
        widths[metric] = (a["high"] - a["low"], b["high"] - b["low"])
        assert b["n"] == MANY and a["n"] == 2
        assert widths[metric][1] < widths[metric][0], (metric, widths[metric])
    print(f"CI widths (2 seeds, {MANY} seeds):", widths)
    # The interval is around the real spread of the re-trainings.
    seeds = [first["members"][0]["seed"] + TEST_SEED_STRIDE * i for i in range(MANY)]
    values = _test_values(url, "yes", 0, seeds, "ndcg")
    assert five["members"][0]["test"]["ndcg"]["mean"] == pytest.approx(float(np.mean(values)))
    assert len(set(values)) == MANY
    dispose_engines()
