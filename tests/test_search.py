"""How a study searches: distinct trials on every worker and every resume, a baseline that always
exists, the first generation, the population size, the samplers and the space on sparse data."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.config import DEFAULT_SEARCH_SPACE, PAPER_SEARCH_SPACE, SPARSE_MIN_COUNT, Distribution, parse_config
from hpo.data.dataset import PreparedDataset
from hpo.data.prepare import prepare_dataset
from hpo.data.readers import read_input
from hpo.search import (
    LITERATURE_SETTINGS,
    answerable_pair_share,
    initial_design,
    make_sampler,
    params_claim_key,
    population_size,
    resolve_search_space,
    sampler_seed,
)
from hpo.study import create_study, load_study, open_storage, run_worker
from objectives.word2vec import GENSIM_DEFAULTS
from tests.conftest import (
    assert_distinct_except_reruns,
    assert_one_line_error,
    param_key,
    run_cli,
    shared_dataset,
    start_cli,
    tiny_study_config,
    write_toml,
)


def _config(prepared: Path, storage: str = "sqlite://", **overrides: object):  # type: ignore[no-untyped-def]
    """The tiny study config with the population size left to the budget (unless overridden)."""
    return parse_config(tiny_study_config(prepared, storage, **{"sampler": {"name": "nsga2"}, **overrides}), "test")


# -- population size, seeds, samplers ----------------------------------------------------------


@pytest.mark.parametrize(("trials", "expected"), [(1, 8), (40, 8), (42, 8), (43, 9), (60, 12), (80, 16),
                                                  (200, 40), (202, 40), (203, 40), (10_000, 40)])
def test_population_size_follows_the_budget(prepared_synth: Path, trials: int, expected: int) -> None:
    assert population_size(_config(prepared_synth, trials=trials)) == expected


def test_a_configured_population_size_wins(prepared_synth: Path) -> None:
    config = _config(prepared_synth, trials=60, sampler={"name": "nsga2", "population_size": 5})
    assert population_size(config) == 5
    assert make_sampler(config).population_size == 5  # type: ignore[attr-defined]


def test_sampler_seeds_differ_by_worker_and_repeat_by_number() -> None:
    seeds = {sampler_seed(0, w) for w in range(100)} | {sampler_seed(1, w) for w in range(100)}
    assert len(seeds) == 200
    assert sampler_seed(7, 3) == sampler_seed(7, 3)


def test_each_sampler_kind(prepared_synth: Path) -> None:
    nsga2 = make_sampler(_config(prepared_synth, trials=60), worker=2)
    assert isinstance(nsga2, optuna.samplers.NSGAIISampler) and nsga2.population_size == 12
    tpe = make_sampler(_config(prepared_synth, trials=60, sampler={"name": "tpe"}))
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 12 and tpe._multivariate
    assert isinstance(make_sampler(_config(prepared_synth, sampler={"name": "random"})), optuna.samplers.RandomSampler)


# -- the first generation ------------------------------------------------------------------------


def test_first_generation_holds_the_literature_setting_and_a_latin_hypercube(prepared_synth: Path) -> None:
    config = parse_config({"name": "x", "dataset": str(prepared_synth), "trials": 60, "seed": 5}, "test")
    design = initial_design(config)
    assert len(design) == 11  # population 12, the baseline included
    label, params = design[0]
    assert label == "caselles-dupre-2018"
    assert params == {**{k: GENSIM_DEFAULTS[k] for k in DEFAULT_SEARCH_SPACE}, **LITERATURE_SETTINGS[label]}
    cube = [p for label, p in design if label == "latin-hypercube"]
    assert len(cube) == 10
    for params in cube:
        assert set(params) == set(DEFAULT_SEARCH_SPACE)
        for name, value in params.items():
            assert DEFAULT_SEARCH_SPACE[name].contains(value), (name, value)
    # Space-filling: on every continuous dimension, each tenth of the (log-)range holds exactly one point.
    for name in ("ns_exponent", "alpha", "sample"):
        spec = DEFAULT_SEARCH_SPACE[name]
        scale = np.log if spec.log else (lambda v: v)
        units = [(scale(p[name]) - scale(spec.low)) / (scale(spec.high) - scale(spec.low)) for p in cube]
        assert sorted(int(u * 10) for u in units) == list(range(10)), (name, units)
    # Seeded: the same seed gives the same design, another seed another one.
    assert initial_design(config) == design
    assert initial_design(config.model_copy(update={"seed": 6})) != design


def test_no_design_where_it_does_not_belong(prepared_synth: Path) -> None:
    # The paper's five cannot represent the literature setting (epochs and sample are not searched).
    paper = parse_config({"name": "x", "dataset": ".", "trials": 60, "search_preset": "paper"}, "t")
    assert [label for label, _ in initial_design(paper)] == ["latin-hypercube"] * 11
    assert initial_design(_config(prepared_synth, sampler={"name": "random"})) == []
    assert initial_design(_config(prepared_synth, sampler={"name": "nsga2", "initial_design": False})) == []
    assert initial_design(_config(prepared_synth, trials=1)) == []
    assert len(initial_design(_config(prepared_synth, trials=3))) == 2  # never beyond the budget


def test_the_first_generation_is_what_the_study_runs_first(prepared_synth: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'd.db'}"
    config = _config(prepared_synth, storage, trials=10)
    design = initial_design(config)
    assert len(design) == 7
    create_study(config)
    study, config = load_study("tiny", storage)
    # Until the baseline is complete it is the only queued trial (a re-run of it is then always taken first).
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs == {"baseline": True, "seed": 13}
    run_worker(study, config)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 10
    assert [t.user_attrs.get("design") for t in trials[1:8]] == [label for label, _ in design]
    for trial, (_, params) in zip(trials[1:8], design):
        assert trial.params == pytest.approx(params)
        assert trial.user_attrs["seed"] == 13 + trial.number
    # NSGA-II took the queued members as its first generation, then bred the next one.
    generation = optuna.samplers.NSGAIISampler._get_generation_key()
    assert [t.system_attrs[generation] for t in trials] == [0] * 8 + [1, 1]


# -- sparse data -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared_aotm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prepared = tmp_path_factory.mktemp("aotm") / "prepared"
    prepare_dataset(read_input(shared_dataset("aotm2011")), prepared)
    return prepared


def test_min_count_is_searched_on_sparse_data_only(prepared_synth: Path, prepared_aotm: Path) -> None:
    dense = PreparedDataset.load(prepared_synth)
    assert answerable_pair_share(dense) > 0.9
    default = parse_config({"name": "x", "dataset": str(prepared_synth)}, "t")
    assert resolve_search_space(default, dense) is default
    sparse = PreparedDataset.load(prepared_aotm)
    # aotm2011: min_count 5 leaves about half of the validation pairs without a vector.
    assert 0.4 < answerable_pair_share(sparse) < 0.6
    resolved = resolve_search_space(default, sparse)
    assert resolved.search_space["min_count"] == SPARSE_MIN_COUNT
    # The paper's preset is reproduced as published, and a fixed min_count is the user's.
    paper = parse_config({"name": "x", "dataset": ".", "search_preset": "paper"}, "t")
    assert resolve_search_space(paper, sparse).search_space == PAPER_SEARCH_SPACE
    fixed = parse_config({"name": "x", "dataset": ".", "search_space": {"min_count": 1}}, "t")
    assert resolve_search_space(fixed, sparse).search_space["min_count"] == 1
    assert isinstance(SPARSE_MIN_COUNT, Distribution) and SPARSE_MIN_COUNT.contains(GENSIM_DEFAULTS["min_count"])


def test_a_worker_started_from_a_config_file_searches_the_studys_resolved_space(
    prepared_aotm: Path, tmp_path: Path
) -> None:
    """The file says nothing of min_count; the study resolved it for sparse aotm2011: the worker must search it."""
    storage = f"sqlite:///{tmp_path / 'a.db'}"
    config = write_toml(tmp_path / "study.toml", {"name": "sparse", "dataset": str(prepared_aotm), "storage": storage,
                                                  "seed": 3, "trials": 3, "sampler": {"name": "random"},
                                                  "objectives": ["ndcg", "ch_genre"],
                                                  # Small on purpose: what is tested is the space, not the metrics.
                                                  "evaluation": {"k": 20, "coherence_sample": 500, "ch_sample": 2000,
                                                                 "max_pairs": 2000},
                                                  "search_space": {"epochs": 1, "vector_size": 16}})
    result = run_cli("study", "run", str(config))
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="sparse", storage=storage)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3 and trials[0].params["min_count"] == GENSIM_DEFAULTS["min_count"]
    assert all(SPARSE_MIN_COUNT.contains(t.params["min_count"]) for t in trials)
    assert len({t.params["min_count"] for t in trials}) > 1


@pytest.mark.parametrize(("share", "sparse"), [(0.9, False), (0.8999, True), (1.0, False)])
def test_the_sparse_rule_at_its_threshold(prepared_synth: Path, monkeypatch: pytest.MonkeyPatch, share: float,
                                          sparse: bool) -> None:
    import hpo.search

    monkeypatch.setattr(hpo.search, "answerable_pair_share", lambda dataset: share)
    config = parse_config({"name": "x", "dataset": str(prepared_synth)}, "t")
    resolved = resolve_search_space(config, PreparedDataset.load(prepared_synth))
    assert ("min_count" in resolved.search_space) is sparse


# -- distinct trials on every worker and every resume ------------------------------------------------


def test_concurrent_workers_never_repeat_a_configuration(prepared_synth: Path, tmp_path: Path) -> None:
    """SQLite; the same on PostgreSQL is tests/test_distributed.py::test_four_workers_share_one_study, with two
    workers on PostgreSQL and MySQL tests/test_storage.py::test_two_workers_on_a_server_lose_nothing."""
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    config = write_toml(tmp_path / "study.toml", tiny_study_config(prepared_synth, storage, trials=8))
    created = run_cli("study", "create", str(config))
    assert created.returncode == 0, created.stderr
    workers = [start_cli("study", "run", str(config)) for _ in range(4)]
    reports = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
        assert "Traceback" not in err, err
        reports.append(json.loads(out))
    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 8 and sum(r["completed"] for r in reports) == len(complete)
    assert_distinct_except_reruns(trials)
    # Every worker got its own number, hence its own sampler seed.
    assert sorted(r["worker"] for r in reports) == [0, 1, 2, 3]


def test_a_resumed_study_repeats_none_of_its_trials(prepared_synth: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    config = _config(prepared_synth, storage, trials=12)
    create_study(config)
    for budget in (12, 16, 20):
        study, stored = load_study("tiny", storage)
        report = run_worker(study, stored.model_copy(update={"trials": budget}))
        assert report.completed >= 4
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 20
    assert_distinct_except_reruns(trials)


def test_one_worker_reproduces_its_study_from_the_seed(prepared_synth: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        storage = f"sqlite:///{tmp_path / (name + '.db')}"
        create_study(_config(prepared_synth, storage, trials=11))
        study, config = load_study("tiny", storage)
        run_worker(study, config)
        runs.append(study.get_trials(states=(TrialState.COMPLETE,)))
    assert [t.params for t in runs[0]] == [t.params for t in runs[1]]
    assert [t.values for t in runs[0]] == [t.values for t in runs[1]]


# -- one worker per waiting trial ----------------------------------------------------------------


def _claim_rounds(storage_url: str, study_name: str, rounds: int, barrier, results) -> None:  # type: ignore[no-untyped-def]
    from hpo.study import open_storage_url

    storage = open_storage_url(storage_url)
    study_id = storage.get_study_id_from_name(study_name)
    for round_ in range(rounds):
        barrier.wait()  # the main process queued this round's trial
        waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
        barrier.wait()  # every process saw it waiting: now all try to take it at once
        won = storage.set_trial_state_values(waiting[0]._trial_id, TrialState.RUNNING) if waiting else False
        results.put((round_, bool(won)))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_waiting_trial_is_taken_by_exactly_one_worker(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import multiprocessing

    storage = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'c.db'}"
    from hpo.study import open_storage_url

    study = optuna.create_study(study_name="claims", storage=open_storage_url(storage))
    # Fresh processes, not forks of this one (its threads and connections): forked from a server that has
    # imported this module once, instead of each importing it anew as "spawn" would.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    n_workers, rounds = 4, 30
    barrier, results = context.Barrier(n_workers + 1), context.Queue()
    workers = [context.Process(target=_claim_rounds, args=(storage, "claims", rounds, barrier, results))
               for _ in range(n_workers)]
    for worker in workers:
        worker.start()
    for _ in range(rounds):
        study.enqueue_trial({"x": 0.5}, skip_if_exists=False)
        barrier.wait()
        barrier.wait()
        # The trial of this round is RUNNING now; fail it so the next round starts with one waiting trial.
        outcomes = [results.get(timeout=60) for _ in range(n_workers)]
        assert sum(won for _, won in outcomes) == 1, outcomes
        running = study.get_trials(states=(TrialState.RUNNING,))
        assert len(running) == 1
        study.tell(running[0].number, state=TrialState.FAIL)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0


# -- a baseline that always exists -----------------------------------------------------------------


def test_an_interrupted_baseline_is_queued_again_with_the_study_seed(prepared_synth: Path, tmp_path: Path) -> None:
    # Stop the worker as a batch scheduler does (SIGTERM; Ctrl-C has its own test in test_cli_study) while the
    # baseline (trial 0) runs: wait for that state in the storage. On a busy machine the whole study may
    # finish between two looks: then again with longer trials.
    for epochs in (10, 80, 320):
        storage = f"sqlite:///{tmp_path / f'b{epochs}.db'}"
        settings = tiny_study_config(prepared_synth, storage, trials=5)
        settings["search_space"] = {**settings["search_space"], "epochs": epochs}  # type: ignore[dict-item]
        config = write_toml(tmp_path / f"study{epochs}.toml", settings)
        assert run_cli("study", "create", str(config)).returncode == 0
        worker = start_cli("study", "run", str(config))
        study = optuna.load_study(study_name="tiny", storage=storage)
        deadline = time.monotonic() + 120
        while study.get_trials()[0].state != TrialState.RUNNING and worker.poll() is None:
            assert time.monotonic() < deadline, "the baseline never started"
            time.sleep(0.05)
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=180)
        if worker.returncode != 0 or study.get_trials()[0].state != TrialState.COMPLETE:
            break
    assert worker.returncode == 128 + signal.SIGTERM, err
    assert "songhpo: stopped by SIGTERM" in err and "Traceback" not in err
    assert study.get_trials()[0].state == TrialState.FAIL
    assert study.get_trials()[0].user_attrs["fail_reason"] == "interrupted (SIGTERM)"
    again = run_cli("study", "run", str(config), "--n-trials", "3")
    assert again.returncode == 0, again.stderr
    assert "queued again with seed 13" in again.stderr
    trials = study.get_trials()
    baselines = [t for t in trials if t.user_attrs.get("baseline")]
    assert [t.state for t in baselines] == [TrialState.FAIL, TrialState.COMPLETE]
    assert baselines[1].user_attrs["seed"] == 13
    assert baselines[1].params and baselines[1].params == {k: GENSIM_DEFAULTS[k] for k in baselines[1].params}
    # With a baseline, the others are judged by the safeguard instead of being infeasible for want of one.
    others = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("baseline")]
    assert others and all("hardneg_excess" in t.user_attrs for t in others)


def test_a_baseline_that_always_fails_is_retried_then_given_up(prepared_synth: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    storage = f"sqlite:///{tmp_path / 'f.db'}"
    space = {**tiny_study_config(prepared_synth, "")["search_space"], "min_count": 10_000_000}  # type: ignore[dict-item]
    config = _config(prepared_synth, storage, trials=3, search_space=space)
    create_study(config)
    study, config = load_study("tiny", storage)
    run_worker(study, config, n_trials=6)
    baselines = [t for t in study.get_trials() if t.user_attrs.get("baseline")]
    # max_retry = 2 in the tiny config: the first run and two re-queues, each with the study seed.
    assert len(baselines) == 3 and all(t.state == TrialState.FAIL for t in baselines)
    assert all(t.user_attrs["seed"] == 13 for t in baselines)
    assert all("empty vocabulary" in t.user_attrs["fail_reason"] for t in baselines)
    assert "the baseline trial failed 3 times" in caplog.text


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_stale_trial_says_why_it_failed_and_its_rerun_keeps_only_its_identity(
    prepared_synth: Path, tmp_path: Path
) -> None:
    from optuna.storages import fail_stale_trials
    from sqlalchemy import text

    storage_url = f"sqlite:///{tmp_path / 's.db'}"
    config = _config(prepared_synth, storage_url)
    storage = open_storage(config)
    study = optuna.create_study(study_name="stale", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("seed", 99)
    trial.set_user_attr("ndcg", 0.5)  # a partial result the re-run must not inherit
    storage.record_heartbeat(trial._trial_id)
    # The worker died an hour ago: its last heartbeat is that old.
    with storage.engine.begin() as connection:
        connection.execute(text("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour')"))
    fail_stale_trials(study)
    failed, rerun = study.get_trials()
    assert failed.state == TrialState.FAIL and "no heartbeat for 4 s" in failed.user_attrs["fail_reason"]
    assert rerun.state == TrialState.WAITING and rerun.user_attrs == {"seed": 99}
    assert rerun.params == failed.params


# -- joining a study -------------------------------------------------------------------------------


def test_joining_with_other_objectives_is_refused_in_one_line(prepared_synth: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'j.db'}"
    first = write_toml(tmp_path / "a.toml", tiny_study_config(prepared_synth, storage, trials=2))
    assert run_cli("study", "create", str(first)).returncode == 0
    other = write_toml(tmp_path / "b.toml", tiny_study_config(prepared_synth, storage, objectives=["ndcg"]))
    line = assert_one_line_error(run_cli("study", "run", str(other)), "objectives")
    assert line.startswith("songhpo: error: study 'tiny'")
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert not [t for t in study.get_trials() if t.state != TrialState.WAITING]


def test_joining_with_another_seed_is_refused_and_an_old_study_keeps_the_paper_space(
    prepared_synth: Path, tmp_path: Path
) -> None:
    from hpo.trials import CONFIG_ATTR
    from storage.errors import InputError

    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = _config(prepared_synth, storage, trials=4)
    study = create_study(config)
    with pytest.raises(InputError, match="has seed 13, this config has 7"):
        create_study(config.model_copy(update={"seed": 7}), exist_ok=True)
    # A study stored before search_preset existed searched the paper's five: it must not gain epochs/sample.
    paper = _config(prepared_synth, storage, name="old", search_preset="paper",
                    search_space={"epochs": 2, "min_count": 1})
    old = create_study(paper)
    stored = {k: v for k, v in old.user_attrs[CONFIG_ATTR].items() if k != "search_preset"}
    old.set_user_attr(CONFIG_ATTR, stored)
    _, loaded = load_study("old", storage)
    assert loaded.search_preset == "paper"
    assert {n for n, d in loaded.search_space.items() if isinstance(d, Distribution)} == set(PAPER_SEARCH_SPACE)
    assert study.user_attrs[CONFIG_ATTR]["search_preset"] == "default"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_ctrl_c_fails_fresh_and_queued_trials_this_process_started(prepared_synth: Path, tmp_path: Path) -> None:
    from hpo.study import _failing_interrupted_trials

    config = _config(prepared_synth, f"sqlite:///{tmp_path / 'i.db'}", trials=4)
    study = create_study(config)
    queued = study.ask()  # the baseline, from the queue
    fresh = study.ask()  # a new trial: Optuna's cached storage creates it through another method
    with pytest.raises(KeyboardInterrupt), _failing_interrupted_trials(study):
        raise KeyboardInterrupt
    for trial in (queued, fresh):
        frozen = study._storage.get_trial(trial._trial_id)
        assert frozen.state == TrialState.FAIL and frozen.user_attrs["fail_reason"].startswith("interrupted")


def test_a_first_generation_whose_claimant_died_is_queued_by_the_next_worker(
    prepared_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpo.study
    from hpo.study import DESIGN_ATTR, _queue_first_generation
    from storage import results as store

    storage = f"sqlite:///{tmp_path / 'd.db'}"
    config = _config(prepared_synth, storage, trials=20)
    study = create_study(config)
    design = initial_design(config)
    assert len(design) == 7  # population 8 for 20 trials, less the baseline
    # A worker claimed the design, queued one member and died.
    assert store.claim(storage, "tiny", "design", "dead:1")
    study.enqueue_trial(design[0][1], user_attrs={"design": design[0][0]})
    monkeypatch.setattr(hpo.study, "READY_TIMEOUT", 0.0)
    _queue_first_generation(study, config, "alive:2")
    queued = [t for t in study.get_trials() if t.user_attrs.get("design")]
    assert sorted(t.number for t in queued) == list(range(1, 8)) and study.user_attrs[DESIGN_ATTR]
    fixed = [tuple(sorted(t.system_attrs["fixed_params"].items())) for t in queued]
    assert sorted(fixed) == sorted(tuple(sorted(p.items())) for _, p in design)


def test_a_worker_with_the_wrong_number_of_objectives_fails_its_trial_with_a_reason(
    prepared_synth: Path, tmp_path: Path
) -> None:
    from hpo.trials import trial_data
    from objectives.trial import Objective

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    config = _config(prepared_synth, storage, trials=2)
    study = create_study(config)
    objective = Objective(trial_data(config, PreparedDataset.load(prepared_synth)), config.search_space, ["ndcg"],
                          seed=0)
    study.optimize(objective, n_trials=1, catch=(Exception,))
    trial = study.get_trials(states=(TrialState.FAIL,))[0]
    assert "this worker optimises 1 objectives ['ndcg'] but the study has 3" in trial.user_attrs["fail_reason"]


# -- the other samplers ------------------------------------------------------------------------------


def test_multi_objective_tpe_with_the_constraint(prepared_synth: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 't.db'}"
    create_study(_config(prepared_synth, storage, trials=10, sampler={"name": "tpe"}))
    study, config = load_study("tiny", storage)
    run_worker(study, config)
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 10 and all("hardneg" in t.constraints for t in trials)
    assert_distinct_except_reruns(trials)


def test_gp_sampler(prepared_synth: Path, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        message = "the gp sampler needs PyTorch (pip install 'songhpo[gp]')"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    create_study(_config(prepared_synth, storage, trials=10, sampler={"name": "gp"}))
    study, config = load_study("tiny", storage)
    report = run_worker(study, config)
    assert isinstance(study.sampler, optuna.samplers.GPSampler) and report.failed == 0
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 10
    assert_distinct_except_reruns(trials)


def test_a_proposal_copying_an_earlier_trial_is_changed() -> None:
    from optuna.distributions import FloatDistribution, IntDistribution

    from hpo.search import _DistinctProposals

    space = {"x": FloatDistribution(0, 1), "n": IntDistribution(1, 3)}

    class Copier(optuna.samplers.RandomSampler):
        """Proposes the first trial's parameters again and again."""

        def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
            return space

        def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            return dict(trials[0].params) if trials else {}

    class DistinctCopier(_DistinctProposals, Copier):
        pass

    def all_distinct(sampler: optuna.samplers.BaseSampler, objective: Callable[[optuna.Trial], float]) -> bool:
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=6)
        return len({param_key(t) for t in study.trials}) == 6

    def x_first(t: optuna.Trial) -> float:
        return t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 3)

    assert not all_distinct(Copier(seed=0), x_first) and all_distinct(DistinctCopier(seed=0), x_first)

    class Mutator(Copier):
        """Copies the first trial but leaves x to independent sampling, which first draws the same x."""

        def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
            return {k: v for k, v in super().sample_relative(study, trial, search_space).items() if k != "x"}

        def sample_independent(self, study, trial, param_name, param_distribution):  # type: ignore[no-untyped-def]
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if param_name == "x" and trials and not getattr(self, "_again", False):
                self._again = True  # the parent's value once per trial, then whatever it draws
                return trials[0].params["x"]
            self._again = False
            return super().sample_independent(study, trial, param_name, param_distribution)

    class DistinctMutator(_DistinctProposals, Mutator):
        pass

    def x_last(t: optuna.Trial) -> float:  # n first, x last: the copy is only known once x is drawn
        return t.suggest_int("n", 1, 3) + t.suggest_float("x", 0, 1)

    assert not all_distinct(Mutator(seed=0), x_last) and all_distinct(DistinctMutator(seed=0), x_last)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_two_workers_breeding_the_same_child_at_once_get_distinct_ones(prepared_synth: Path, tmp_path: Path) -> None:
    """Two workers sample before either writes its parameters: only the storage claim can tell them apart."""
    from storage import results as store

    storage = f"sqlite:///{tmp_path / 'c.db'}"
    config = _config(prepared_synth, storage, trials=12, sampler={"name": "nsga2", "population_size": 4})
    create_study(config)
    study, config = load_study("tiny", storage)
    run_worker(study, config.model_copy(update={"trials": 8}))  # two generations: parents exist
    space = study.sampler.infer_relative_search_space(study, study.trials[-1])

    study.sampler = make_sampler(config, worker=7)
    trial = study._storage.get_trial(study.ask()._trial_id)

    def propose(claim, worker):  # type: ignore[no-untyped-def]
        # Two workers with the same history and sampler state breed the same child (the race, made certain).
        return make_sampler(config, worker=worker, claim=claim).sample_relative(study, trial, space)

    propose(None, 0)  # the first proposal of a generation caches its parents (later ones draw less)
    # A child NSGA-II does not mutate (a mutated parameter is drawn later, independently, hence new).
    worker = next(w for w in range(100) if set(propose(None, w)) == set(space))
    unclaimed = [propose(None, worker), propose(None, worker)]
    assert unclaimed[0] == unclaimed[1]

    def claim(params):  # type: ignore[no-untyped-def]
        return store.claim(storage, "tiny", params_claim_key(params), "test")

    claimed = [propose(claim, worker), propose(claim, worker)]
    assert claimed[0] != claimed[1] and set(claimed[1]) == set(space)
    # Exactly one parameter was redrawn, and the second child is claimed too.
    assert sum(claimed[0][n] != claimed[1][n] for n in space) == 1
    assert not claim(claimed[0]) and not claim(claimed[1])


@pytest.mark.parametrize(("plays", "high"), [(139_000, 120), (2_000_000, 120), (2_000_001, 119), (24_000_000, 10),
                                             (66_000_000, 10)])
def test_the_epochs_range_shrinks_on_large_data(prepared_synth: Path, monkeypatch: pytest.MonkeyPatch, plays: int,
                                                high: int) -> None:
    import hpo.search

    dataset = PreparedDataset.load(prepared_synth)
    monkeypatch.setitem(dataset.manifest["counts"], "train_plays", plays)
    monkeypatch.setattr(hpo.search, "answerable_pair_share", lambda dataset: 1.0)
    config = parse_config({"name": "x", "dataset": str(prepared_synth)}, "t")
    resolved = resolve_search_space(config, dataset).search_space["epochs"]
    assert resolved.high == high and resolved.low == 5 and resolved.log
    assert resolved.contains(GENSIM_DEFAULTS["epochs"])
    # A range the user set is the user's.
    mine = parse_config({"name": "x", "dataset": ".", "search_space": {"epochs": {"type": "int", "low": 5, "high": 200}}},
                        "t")
    assert resolve_search_space(mine, dataset).search_space["epochs"].high == 200
