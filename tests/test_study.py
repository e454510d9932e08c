"""The study engine on SQLite, in-process: baseline, metrics on every trial, the safeguard,
failures, determinism, and the feasible Pareto front."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dashboards.pareto import pareto_figure
from hpo.config import Distribution, parse_config
from hpo.data.dataset import PreparedDataset
from hpo.data.prepare import prepare_dataset
from hpo.data.readers import read_input
from hpo.study import create_study, load_study, run_worker, study_status
from hpo.trials import feasible_pareto_front, trial_data
from objectives.trial import run_configuration
from objectives.word2vec import GENSIM_DEFAULTS
from storage.errors import InputError
from tests.conftest import TINY_TRIALS, SharedStudy, run_tiny_study, shared_dataset, tiny_study_config

METRIC_KEYS = ["ndcg", "ndcg_in", "ndcg_out", "hitrate", "hardneg", "hardneg_support", "coherence_genre",
               "coherence_artist", "ch_genre", "ch_artist", "songs_present"]


def _run(prepared: Path, tmp_path: Path, name: str = "tiny", **overrides: object) -> optuna.Study:
    study, config = run_tiny_study(prepared, f"sqlite:///{tmp_path / (name + '.db')}", name=name, **overrides)
    return study


def test_study_records_everything(tiny_study: SharedStudy, prepared_synth: Path) -> None:
    study = tiny_study.study
    assert isinstance(study.sampler, optuna.samplers.NSGAIISampler)
    assert study.metric_names == ["ndcg", "ch_artist", "ch_genre"]
    assert [d.name for d in study.directions] == ["MAXIMIZE"] * 3
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == TINY_TRIALS
    baseline = trials[0]
    assert baseline.number == 0 and baseline.user_attrs["baseline"] is True
    # Trial 0 is gensim's default for every searched parameter.
    config = parse_config(study.user_attrs["songhpo_config"], "stored config")
    searched = [name for name, spec in config.search_space.items() if isinstance(spec, Distribution)]
    assert "sample" in searched and "epochs" not in searched  # the default preset, epochs fixed by the test
    assert baseline.params == {k: GENSIM_DEFAULTS[k] for k in searched}
    for trial in trials:
        for key in METRIC_KEYS:
            assert key in trial.user_attrs, key
        assert trial.values == [trial.user_attrs[m] for m in study.metric_names]
        assert trial.user_attrs["seed"] == 13 + trial.number
        assert trial.user_attrs["gensim_params"]["sg"] == 1 and trial.user_attrs["gensim_params"]["epochs"] == 2
        assert len(trial.user_attrs["buckets"]["by_target"]["ndcg"]) == 10
        assert trial.user_attrs["train_seconds"] > 0
        # The safeguard as an Optuna constraint, mirrored in a user attr for the dashboard (the paired test's
        # value is checked against scipy in test_trial_metrics_are_reproduced_by_a_fresh_evaluation).
        assert trial.constraints["hardneg"] == trial.user_attrs["constraint_hardneg"]
        if trial.number == 0:
            assert trial.constraints["hardneg"] == 0.0
        assert trial.user_attrs["feasible"] == (trial.constraints["hardneg"] <= 0)


def test_trial_metrics_are_reproduced_by_a_fresh_evaluation(tiny_study: SharedStudy, prepared_synth: Path) -> None:
    from scipy import stats

    from objectives.trial import per_song_counts

    trials = tiny_study.study.get_trials(states=(TrialState.COMPLETE,))
    trial = trials[2]
    config = parse_config(tiny_study.study.user_attrs["songhpo_config"], "stored config")
    data = trial_data(config, PreparedDataset.load(prepared_synth))
    params = {**trial.params, "epochs": 2, "min_count": 1}
    outcome = run_configuration(data, params, seed=trial.user_attrs["seed"])
    for key in METRIC_KEYS:
        assert outcome.metrics[key] == pytest.approx(trial.user_attrs[key], rel=1e-9), key
    # The safeguard's margin: the lower one-sided 95% t bound of the per-song excess over 1.1 x the baseline.
    songs, counts = outcome.hardneg_per_song
    base_songs, base_counts = per_song_counts(trials[0].user_attrs)  # type: ignore[misc]
    assert counts.mean() / 20 == pytest.approx(trial.user_attrs["hardneg"])
    assert base_counts.mean() / 20 == pytest.approx(trials[0].user_attrs["hardneg"])
    base = dict(zip(base_songs.tolist(), base_counts.tolist()))
    d = np.array([(c - 1.1 * base[s]) / 20 for s, c in zip(songs.tolist(), counts.tolist()) if s in base])
    bound = d.mean() - stats.t.ppf(0.95, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    assert d.size == trial.user_attrs["hardneg_shared_songs"] > 50
    assert trial.constraints["hardneg"] == pytest.approx(bound, rel=1e-9)


def test_same_seed_same_trials(prepared_synth: Path, tmp_path: Path, tiny_study: SharedStudy) -> None:
    again = _run(prepared_synth, tmp_path, trials=TINY_TRIALS)
    first = tiny_study.study.get_trials()
    second = again.get_trials()
    assert [t.params for t in first] == [t.params for t in second]
    for a, b in zip(first, second):
        for key in METRIC_KEYS:
            assert a.user_attrs[key] == b.user_attrs[key], (a.number, key)


def test_infeasible_dominating_trial_is_excluded_from_the_front(tiny_study: SharedStudy, tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'copy.db'}", directions=["maximize"] * 3)
    study.set_metric_names(tiny_study.study.metric_names)
    for trial in tiny_study.study.get_trials(states=(TrialState.COMPLETE,)):
        study.add_trial(trial)
    best = [max(t.values[i] for t in study.trials) for i in range(3)]
    dominating = optuna.trial.create_trial(
        values=[v * 2 + 1 for v in best],
        params={"vector_size": 16, "window": 2, "negative": 3, "ns_exponent": 0.5, "alpha": 0.01},
        distributions={"vector_size": IntDistribution(8, 100, log=True), "window": IntDistribution(1, 5),
                       "negative": IntDistribution(1, 5),
                       "ns_exponent": FloatDistribution(-1, 1), "alpha": FloatDistribution(1e-4, 1e-1, log=True)},
        user_attrs={"feasible": False, "hardneg": 0.9},
        constraints={"hardneg": 0.5},
    )
    study.add_trial(dominating)
    dominating_number = study.trials[-1].number
    front = feasible_pareto_front(study)
    front_numbers = {t.number for t in front}
    assert dominating_number not in front_numbers and front_numbers
    # Same front as Optuna's constraint-aware best_trials, and as brute-force dominance over feasible trials.
    assert front_numbers == {t.number for t in study.best_trials}
    feasible = [t for t in study.trials if t.constraints["hardneg"] <= 0]
    brute = {
        t.number for t in feasible
        if not any(all(o >= v for o, v in zip(u.values, t.values)) and u.values != t.values for u in feasible)
    }
    assert front_numbers == brute
    # The dashboard chart draws exactly that front, and the dominating trial among the infeasible ones.
    figure = pareto_figure(study, front)
    by_name = {trace.name: trace for trace in figure.data}
    assert sorted(by_name["feasible Pareto front"].dimensions[0]["values"]) == sorted(t.values[0] for t in front)
    assert max(by_name["infeasible (HardNeg safeguard)"].dimensions[0]["values"]) == dominating.values[0]
    # Without the dominating trial, the front would have been the finished study's.
    assert front_numbers == {t.number for t in feasible_pareto_front(tiny_study.study)}


def test_failing_trial_is_marked_and_the_study_goes_on(prepared_synth: Path, tmp_path: Path) -> None:
    overrides = tiny_study_config(prepared_synth, "")["search_space"]
    space = {**overrides, "min_count": {"type": "categorical", "choices": [1, 5, 1_000_000]}}
    config = parse_config(
        tiny_study_config(prepared_synth, f"sqlite:///{tmp_path / 'f.db'}", trials=3, search_space=space), "test"
    )
    study = create_study(config)
    study.enqueue_trial({"min_count": 1_000_000, "vector_size": 16, "window": 2, "negative": 2, "ns_exponent": 0.0,
                         "alpha": 0.01, "sample": 1e-3})
    enqueued = study.get_trials()[-1].number
    study, config = load_study("tiny", config.storage)
    run_worker(study, config)
    failed = study.get_trials(states=(TrialState.FAIL,))
    # The enqueued trial fails (the design or the sampler may propose that choice too; those fail the same way).
    assert failed and enqueued in {t.number for t in failed}
    for trial in failed:
        assert trial.params["min_count"] == 1_000_000
        assert "empty vocabulary: min_count=1000000 keeps no song" in trial.user_attrs["fail_reason"]
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3


def test_objectives_and_safeguard_follow_the_dataset(tmp_path: Path) -> None:
    prepared = tmp_path / "aotm"
    prepare_dataset(read_input(shared_dataset("aotm2011")), prepared)
    storage = f"sqlite:///{tmp_path / 'a.db'}"
    with pytest.raises(InputError, match="'ch_artist' needs artist labels"):
        create_study(parse_config(tiny_study_config(prepared, storage), "test"))
    # Small evaluation samples: what is tested is which objectives and constraints exist, not their values.
    config = parse_config(tiny_study_config(prepared, storage, objectives=["ndcg", "ch_genre"], trials=2,
                                            evaluation={"k": 20, "coherence_sample": 500, "ch_sample": 2000,
                                                        "max_pairs": 2000}), "test")
    create_study(config)
    study, config = load_study("tiny", storage)
    status = study_status(study)
    assert status["safeguard"]["enabled"] is False
    assert "no hard-negative pairs" in status["safeguard"]["warning"]
    run_worker(study, config)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    for trial in trials:
        assert trial.user_attrs["hardneg"] is None and trial.user_attrs["ch_artist"] is None
        assert trial.constraints == {} and trial.user_attrs["feasible"] is True
        assert math.isfinite(trial.values[1])


def test_config_errors_name_the_field(prepared_synth: Path) -> None:
    base = tiny_study_config(prepared_synth, "sqlite://")
    cases = [
        ({"objectives": ["ndcg", "recall"]}, "objectives", "unknown metric 'recall'"),
        ({"search_space": {"hidden": 3}}, "search_space", "unknown parameter 'hidden'"),
        ({"search_space": {"window": {"type": "int", "low": 9, "high": 2}}}, "search_space", "low 9.0 is above high 2.0"),
        ({"sampler": {"name": "cmaes"}}, "sampler.name", "'nsga2'"),
        ({"trails": 4}, "trails", "Extra inputs are not permitted"),
        ({"constraint": {"tolerance": -1}}, "constraint.tolerance", "greater than or equal to 0"),
        ({"search_space": {"vector_size": {"type": "int", "low": 8, "high": 32}}}, "search_space",
         "excludes gensim's default 100"),
        ({"search_space": {"min_count": 0}}, "search_space", "min_count: fixed value 0 is below 1"),
        ({"search_space": {"epochs": 2.5}}, "search_space", "epochs: fixed value 2.5 must be an integer"),
    ]
    for override, field, message in cases:
        with pytest.raises(InputError) as info:
            parse_config({**base, **override}, "study.toml")
        text = str(info.value)
        assert text.startswith("study.toml: field ") and field in text and message in text, text


def test_a_config_without_search_space_searches_the_preset(prepared_synth: Path) -> None:
    from hpo.config import DEFAULT_SEARCH_SPACE, PAPER_SEARCH_SPACE

    base = {k: v for k, v in tiny_study_config(prepared_synth, "sqlite://").items() if k != "search_space"}
    assert parse_config(base, "study.toml").search_space == DEFAULT_SEARCH_SPACE
    space = parse_config({**base, "search_preset": "paper"}, "study.toml").search_space
    assert space == PAPER_SEARCH_SPACE
    assert list(space) == ["vector_size", "window", "ns_exponent", "negative", "alpha"]
    assert space["window"].low == 1 and space["window"].high == 20 and space["alpha"].log
    # Entries merge over the preset: a range replaces the preset's, a value fixes the parameter.
    merged = parse_config({**base, "search_preset": "paper", "search_space": {"window": 3, "epochs": {
        "type": "int", "low": 5, "high": 50}}}, "study.toml").search_space
    assert merged["window"] == 3 and merged["epochs"].high == 50 and merged["alpha"] == PAPER_SEARCH_SPACE["alpha"]


def test_bucket_metrics_match_pairs(tiny_study: SharedStudy) -> None:
    trial = tiny_study.study.best_trials[0]
    buckets = trial.user_attrs["buckets"]
    pairs = np.array(buckets["by_target"]["pairs"])
    assert pairs.sum() == trial.user_attrs["pairs_in"] + trial.user_attrs["pairs_out"]
    assert all(isinstance(e, (int, float)) for e in buckets["edges"])


def test_joining_by_name_uses_the_study_heartbeat(tiny_study: SharedStudy) -> None:
    stored = tiny_study.study.user_attrs["songhpo_config"]
    # The storage URL (it may hold a password) is never stored where optuna-dashboard would show it.
    assert "storage" not in stored and tiny_study.path.name not in repr(stored)
    study, loaded = load_study("tiny", tiny_study.storage)
    assert loaded.heartbeat.interval == 1 and loaded.heartbeat.grace_period == 4
    assert study._storage.get_heartbeat_interval() == 1  # what the worker's heartbeat thread uses
    assert isinstance(study.sampler, optuna.samplers.NSGAIISampler) and study.sampler._population_size == 4


def test_a_joiner_waits_until_the_study_is_fully_created(tiny_study: SharedStudy, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time
    import types

    import hpo.study
    from hpo.study import READY_ATTR
    from hpo.trials import CONFIG_ATTR, SAFEGUARD_ATTR

    url = f"sqlite:///{tmp_path / 'late.db'}"
    # A study whose creator has written the Optuna row but not yet its songhpo attributes.
    half = optuna.create_study(study_name="late", storage=url, directions=["maximize"] * 3)
    # The event: load_study has looked at the half-created study twice and gone back to waiting each time.
    waits: list[float] = []
    waited_twice = threading.Event()

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= 2:
            waited_twice.set()
        time.sleep(seconds)

    clock = {name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
    monkeypatch.setattr(hpo.study, "time", types.SimpleNamespace(**{**clock, "sleep": sleep}))
    joined: dict[str, object] = {}
    joiner = threading.Thread(target=lambda: joined.update(result=load_study("late", url)))
    joiner.start()
    assert waited_twice.wait(timeout=60)
    assert joiner.is_alive() and not joined  # still waiting: it did not fail, nor run without the config
    for key in (CONFIG_ATTR, SAFEGUARD_ATTR, "dataset_fingerprint"):
        half.set_user_attr(key, tiny_study.study.user_attrs[key])
    half.set_user_attr(READY_ATTR, True)
    joiner.join(timeout=30)
    study, config = joined["result"]  # type: ignore[misc]
    assert config.name == "tiny" and study.study_name == "late"
    # A plain Optuna study with trials and no songhpo attributes is refused at once, not waited for.
    plain = optuna.create_study(study_name="plain", storage=url)
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with pytest.raises(InputError, match="was not created by songhpo"):
        load_study("plain", url)


def test_a_config_that_raises_the_budget_is_stored_and_a_lower_one_is_not(prepared_synth: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    config = parse_config(tiny_study_config(prepared_synth, storage, trials=4), "t")
    create_study(config)
    create_study(config.model_copy(update={"trials": 9}), exist_ok=True)  # a worker with a raised config joins
    study, stored = load_study("tiny", storage)
    assert stored.trials == 9 and study_status(study)["budget"] == 9
    create_study(config, exist_ok=True)  # a stale config file never lowers it
    assert load_study("tiny", storage)[1].trials == 9
