"""Study orchestration: storage, creation (with the gensim-default baseline), workers, Pareto fronts.

Any number of workers, on any number of machines, join one study through a shared RDB storage
(PostgreSQL or MySQL; SQLite on one machine). A worker first makes sure the baseline trial is complete,
because the HardNeg safeguard of every other trial is relative to it, then optimises until the study
has ``trials`` completed trials. A killed worker's trial is detected by its missing heartbeat, failed,
and re-run with the same parameters and seed.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from hpo._progress import bar
from hpo.config import METRIC_DIRECTIONS, StudyConfig, parse_config
from hpo.dataset import PreparedDataset
from hpo.errors import InputError
from hpo.evaluation import evaluation_data
from hpo.results import on_study_created, on_worker_start, record_completed_trial
from metrics.evaluate import EvaluationSettings
from objectives.trial import Objective, TrialData, baseline_params
from storage.db import safe_url

_log = logging.getLogger(__name__)
# Heartbeats, retries and metric names are marked experimental in Optuna 5 but are the documented way.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

CONFIG_ATTR = "songhpo_config"
SAFEGUARD_ATTR = "songhpo_safeguard"
FINGERPRINT_ATTR = "dataset_fingerprint"
#: Set last by :func:`create_study`: a joining worker waits for it, so it never sees a half-created study.
READY_ATTR = "songhpo_ready"
READY_TIMEOUT = 120.0
WEAK_SUPPORT = 50
CHART_INTERVAL = 30.0
#: Metrics that need artist / genre labels.
_NEEDS = {"ch_artist": "artists", "coherence_artist": "artists", "ch_genre": "genres", "coherence_genre": "genres"}


def open_storage(config: StudyConfig) -> RDBStorage:
    """An RDB storage with small pools, pre-ping and heartbeats (stale trials are retried)."""
    # Optuna logs every failed trial with a traceback; the worker logs a one-line reason instead.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = config.storage
    try:
        backend = make_url(url).get_backend_name()
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"storage: {safe_url(url)!r} is not a valid SQLAlchemy URL") from exc
    if backend == "sqlite":
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_size": 2, "max_overflow": 2, "pool_pre_ping": True, "pool_recycle": 1800}
    try:
        storage = RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=config.heartbeat.interval,
            grace_period=config.heartbeat.grace_period,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=config.heartbeat.max_retry),
        )
    except Exception as exc:  # noqa: BLE001 - driver errors vary; the message must not leak the password
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"storage {safe_url(url)}: cannot connect ({type(exc).__name__}: {reason[:200]})") from exc
    if backend == "sqlite":
        _use_sqlite_wal(storage.engine)
    return storage


def _use_sqlite_wal(engine: Engine) -> None:
    """WAL journal: readers (dashboard, status) never block writers, and commits cost half as much.

    ``synchronous=NORMAL`` in WAL mode stays consistent after a crash of any process; only an OS crash
    or power loss can drop the last transactions.
    """
    engine.dispose()  # connections opened during RDBStorage's setup would miss the pragmas

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def open_storage_url(url: str) -> RDBStorage:
    """:func:`open_storage` for a bare URL, with default heartbeat settings (before a study's config is known)."""
    return open_storage(parse_config({"name": "-", "dataset": ".", "storage": url}, "--storage"))


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """The sampler named in the config, always passed explicitly (Optuna 5 defaults to TPE)."""
    seed = config.seed
    if config.sampler.name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=config.sampler.population_size, seed=seed)
    if config.sampler.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)


def safeguard_status(config: StudyConfig, dataset: PreparedDataset) -> dict[str, Any]:
    """Whether the HardNeg safeguard is on, and the warning to show when it is dropped or weak."""
    summary = dataset.manifest["hard_negatives"]
    status: dict[str, Any] = {
        "enabled": config.constraint.enabled,
        "tolerance": config.constraint.tolerance,
        "hard_negative_pairs": int(summary["n_pairs"]),
        "songs_with_hard_negative": int(summary["n_songs"]),
        "warning": None,
    }
    if not config.constraint.enabled:
        status["warning"] = "the HardNeg safeguard is disabled in the config"
    elif summary["n_pairs"] == 0:
        status["enabled"] = False
        status["warning"] = (
            f"HardNeg is unavailable: the dataset has no hard-negative pairs ({summary['scope']} scope, "
            f"min_cooc {summary['min_cooc']}); the safeguard is dropped. Try 'data prepare --hardneg-scope sequence'"
        )
    elif summary["n_songs"] < WEAK_SUPPORT:
        status["warning"] = (
            f"the HardNeg safeguard is weak: only {summary['n_songs']} songs have a hard negative "
            f"(fewer than {WEAK_SUPPORT})"
        )
    return status


def _check_objectives(config: StudyConfig, dataset: PreparedDataset) -> None:
    counts = dataset.counts
    for metric in config.objectives:
        need = _NEEDS.get(metric)
        if need and counts[need] == 0:
            raise InputError(
                f"objectives: {metric!r} needs {need[:-1]} labels but dataset {dataset.path} has none; "
                "remove it from 'objectives'"
            )
        if metric == "hardneg" and counts["hard_negative_pairs"] == 0:
            raise InputError(f"objectives: 'hardneg' is unavailable: dataset {dataset.path} has no hard-negative pairs")


def create_study(config: StudyConfig, *, exist_ok: bool = False) -> optuna.Study:
    """Create the study in its storage, record the config and dataset, and enqueue the baseline.

    With ``exist_ok``, an existing study is joined instead, with this config's sampler and heartbeat.
    """
    dataset = PreparedDataset.load(config.dataset)
    _check_objectives(config, dataset)
    storage = open_storage(config)
    if config.name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
        if not exist_ok:
            raise InputError(
                f"study {config.name!r} already exists in {safe_url(config.storage)}; "
                f"join it with 'songhpo study run {config.name} --storage URL' or choose another name"
            )
        return load_study(config.name, config.storage, config=config)[0]
    try:
        study = optuna.create_study(
            study_name=config.name, storage=storage, directions=config.directions, sampler=make_sampler(config)
        )
    except optuna.exceptions.DuplicatedStudyError:
        # Another worker created it between our check and our insert.
        return load_study(config.name, config.storage, config=config)[0]
    # Before any trial can complete: rows of an earlier study of the same name are dropped here.
    on_study_created(study, config, dataset)
    study.set_metric_names(list(config.objectives))
    status = safeguard_status(config, dataset)
    # The storage URL may hold a password, and optuna-dashboard shows study attrs: never store it.
    study.set_user_attr(CONFIG_ATTR, {k: v for k, v in config.to_json().items() if k != "storage"})
    study.set_user_attr(FINGERPRINT_ATTR, dataset.fingerprint)
    study.set_user_attr(SAFEGUARD_ATTR, status)
    study.enqueue_trial(baseline_params(config.search_space), user_attrs={"baseline": True})
    study.set_user_attr(READY_ATTR, True)
    if status["warning"]:
        _log.warning("study %s: %s", config.name, status["warning"])
    _log.info("created study %s in %s", config.name, safe_url(config.storage))
    return study


def load_study(name: str, storage_url: str, *, config: StudyConfig | None = None) -> tuple[optuna.Study, StudyConfig]:
    """Load study ``name``, its config from the storage (``config`` overrides it), and its sampler.

    A study still being created by another worker is waited for (up to :data:`READY_TIMEOUT` seconds).
    """
    require_sqlite_file(storage_url)
    storage = open_storage(config) if config is not None else open_storage_url(storage_url)
    try:
        summary_names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"storage {safe_url(storage_url)}: cannot list studies ({type(exc).__name__})") from exc
    if name not in summary_names:
        known = ", ".join(sorted(summary_names)) or "none"
        raise InputError(f"study {name!r} not found in {safe_url(storage_url)} (studies there: {known})")
    bare = optuna.load_study(study_name=name, storage=storage)
    deadline = time.monotonic() + READY_TIMEOUT
    while not bare.user_attrs.get(READY_ATTR):
        # A study being created holds at most its enqueued baseline; more trials mean it is not songhpo's.
        if time.monotonic() > deadline or len(bare.get_trials(deepcopy=False)) > 1:
            raise InputError(
                f"study {name!r} in {safe_url(storage_url)} was not created by songhpo, or its creation was "
                "interrupted; create it again under another name"
            )
        time.sleep(0.5)
    if config is None:
        stored = bare.user_attrs[CONFIG_ATTR]
        config = parse_config({**stored, "storage": storage_url}, f"study {name!r} config")
        # Heartbeat settings are the study's, not the defaults the probe was opened with.
        storage.engine.dispose()
        storage = open_storage(config)
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(config))
    return study, config


def require_sqlite_file(url: str) -> None:
    """Reading a study from a SQLite file that does not exist is a typo, not a new empty database."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - open_storage reports unparsable URLs
        return
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():
            raise InputError(f"--storage {safe_url(url)}: no such SQLite file {parsed.database!r}")


def trial_data(config: StudyConfig, dataset: PreparedDataset) -> TrialData:
    """Training sentences and validation arrays every trial of the study shares."""
    settings = EvaluationSettings(
        k=config.evaluation.k,
        coherence_k=config.evaluation.coherence_k,
        coherence_sample=config.evaluation.coherence_sample,
        ch_sample=config.evaluation.ch_sample,
        seed=config.seed,
        n_buckets=config.evaluation.n_buckets,
    )
    sentences = training_subset(dataset.training_sentences(), config.training.fraction, config.seed)
    return TrialData(sentences, dataset.n_songs, evaluation_data(dataset, "validation"), settings)


def training_subset(sentences: list[list[str]], fraction: float, seed: int) -> list[list[str]]:
    """A seeded ``fraction`` of ``sentences`` (at least one), in their original order.

    The subsets of one seed are nested: the 10% subset is part of the 25% one, so a scale study adds data
    instead of drawing a different sample at every size.
    """
    if fraction >= 1.0:
        return sentences
    keep = training_subset_size(len(sentences), fraction)
    order = np.random.default_rng([seed, 0x5CA1E]).permutation(len(sentences))
    return [sentences[i] for i in np.sort(order[:keep])]


def training_subset_size(n_sequences: int, fraction: float) -> int:
    """How many of ``n_sequences`` training sequences :func:`training_subset` keeps for ``fraction``."""
    return n_sequences if fraction >= 1.0 else max(1, round(fraction * n_sequences))


def study_dataset(study: optuna.Study, config: StudyConfig, dataset_path: str | None = None) -> PreparedDataset:
    """The prepared dataset of ``study`` (``dataset_path`` overrides the config's path on this machine).

    Refuses a dataset whose fingerprint differs from the one the study was created with: every worker
    and every re-evaluation must read the same data.
    """
    dataset = PreparedDataset.load(dataset_path or config.dataset)
    expected = study.user_attrs.get(FINGERPRINT_ATTR)
    if expected and dataset.fingerprint != expected:
        raise InputError(
            f"{dataset.path}: fingerprint {dataset.fingerprint[:12]} differs from the study's dataset "
            f"{expected[:12]}; pass --dataset with the prepared dataset the study used"
        )
    return dataset


def _baseline_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every baseline trial (the enqueued one and any re-run of it), in any state."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")]


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed baseline trial (gensim defaults), if any."""
    return next((t for t in _baseline_trials(study) if t.state == TrialState.COMPLETE), None)


@dataclass
class WorkerReport:
    """What one worker did."""

    completed: int = 0
    failed: int = 0
    seconds: float = 0.0


def run_worker(
    study: optuna.Study,
    config: StudyConfig,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    dataset_path: str | None = None,
) -> WorkerReport:
    """Run trials of ``study`` in this process until it has ``config.trials`` completed trials.

    ``n_trials`` caps this worker's own trials (default: no cap), ``timeout`` its seconds. With several
    workers the study may end with up to ``workers - 1`` trials above the budget (trials already running
    when it was reached are finished, not thrown away).
    """
    dataset = study_dataset(study, config, dataset_path)
    on_worker_start(study, config, dataset)
    safeguard = study.user_attrs[SAFEGUARD_ATTR]  # set before READY_ATTR, which load_study waited for
    reference: dict[str, float | None] = {}

    def baseline_hardneg() -> float | None:
        # Another worker may still be running the baseline (both saw it waiting; one got it): wait while it
        # runs, and cache only a completed baseline's value so one early look never sticks for good.
        while "value" not in reference:
            fail_stale_trials(study)
            baselines = _baseline_trials(study)
            complete = [t for t in baselines if t.state == TrialState.COMPLETE]
            if complete:
                reference["value"] = complete[0].user_attrs.get("hardneg")
            elif any(t.state == TrialState.RUNNING for t in baselines):
                time.sleep(1.0)
            else:
                return None  # failed, or waiting for a worker to re-run it: unknown for this trial
        return reference["value"]

    objective = Objective(
        trial_data(config, dataset),
        config.search_space,
        config.objectives,
        seed=config.seed,
        workers=config.training.workers,
        tolerance=config.constraint.tolerance if safeguard.get("enabled") else None,
        baseline_hardneg=baseline_hardneg,
    )
    report = WorkerReport()
    start = time.perf_counter()
    # Failures do not use up the budget of completed trials, but a worker gives up after this many.
    max_failures = max(10, config.trials)
    last_chart = [time.monotonic()]
    with bar(n_trials or config.trials, f"worker {study.study_name}", unit="trial") as progress:

        def on_trial_end(study: optuna.Study, trial: FrozenTrial) -> None:
            if trial.state == TrialState.COMPLETE:
                report.completed += 1
                values = ", ".join(f"{n}={v:.4g}" for n, v in zip(config.objectives, trial.values))
                feasible = "" if trial.user_attrs.get("feasible", True) else " (infeasible: HardNeg above the safeguard)"
                _log.info("trial %d complete: %s%s", trial.number, values, feasible)
                # The SQL result tables follow the study live (a failure is a warning, never the study's end).
                record_completed_trial(config.storage, study.study_name, trial)
            elif trial.state == TrialState.FAIL:
                report.failed += 1
                _log.warning("trial %d failed: %s", trial.number, trial.user_attrs.get("fail_reason", "unknown reason"))
                if report.failed >= max_failures:
                    _log.error("worker stops: %d trials failed", report.failed)
                    study.stop()
            progress.update(1)
            # Drawing the chart costs ~0.5 s: refresh it at most every CHART_INTERVAL seconds.
            if time.monotonic() - last_chart[0] >= CHART_INTERVAL:
                _publish_chart(study)
                last_chart[0] = time.monotonic()

        ran_baseline = _ensure_baseline(study, objective, on_trial_end, timeout)
        if safeguard.get("enabled") and baseline_hardneg() is None:
            _log.warning("the baseline has no HardNeg value: every trial is infeasible until it does")
        elapsed = time.perf_counter() - start
        remaining = None if n_trials is None else n_trials - int(ran_baseline)
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if done >= config.trials:
            _log.info("study %s has %d completed trials (budget %d): nothing to do; raise 'trials' in the config "
                      "to run more", study.study_name, done, config.trials)
        if (remaining is None or remaining > 0) and done < config.trials and (timeout is None or elapsed < timeout):
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=None if timeout is None else timeout - elapsed,
                catch=(Exception,),
                callbacks=[MaxTrialsCallback(config.trials, states=(TrialState.COMPLETE,)), on_trial_end],
            )
    _publish_chart(study)
    report.seconds = time.perf_counter() - start
    return report


def _publish_chart(study: optuna.Study) -> None:
    """Refresh the constraint-aware Pareto chart shown in optuna-dashboard (best effort)."""
    from dashboards.pareto import publish_pareto_chart

    try:
        publish_pareto_chart(study, feasible_pareto_front(study))
    except Exception as exc:  # noqa: BLE001 - a chart must never fail a study
        _log.warning("could not refresh the dashboard chart: %s", exc)


def _ensure_baseline(
    study: optuna.Study,
    objective: Objective,
    callback: Callable[[optuna.Study, FrozenTrial], None],
    timeout: float | None,
) -> bool:
    """Wait until the baseline is complete or definitively failed; run it here if it is waiting.

    Returns whether this worker ran a trial. Waiting happens outside any trial, so a worker never holds
    a trial while another one is needed to finish the baseline.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    ran = False
    while True:
        fail_stale_trials(study)
        baselines = _baseline_trials(study)
        states = {t.state for t in baselines}
        if TrialState.COMPLETE in states or not baselines:
            return ran
        if TrialState.WAITING in states:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[callback])
            ran = True
            continue
        if TrialState.RUNNING not in states:
            _log.warning("the baseline trial failed; HardNeg safeguard values are unknown")
            return ran
        if deadline is not None and time.monotonic() > deadline:
            return ran
        time.sleep(1.0)


def feasible_pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Completed, feasible, non-dominated trials (the front every table and figure of ours shows).

    Feasibility is the HardNeg constraint set on the trial; trials without it (safeguard off) are
    feasible. Equals ``study.best_trials`` of Optuna for constrained studies.
    """
    directions = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(v <= 0.0 for v in t.constraints.values())
    ]
    signed = [[v if maximise else -v for v, maximise in zip(t.values, directions)] for t in trials]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    front = [t for t, s in zip(trials, signed) if not any(dominates(o, s) for o in signed)]
    return sorted(front, key=lambda t: t.number)


def study_status(study: optuna.Study) -> dict[str, Any]:
    """Counts by state, the baseline's metrics, the front size and the safeguard status."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    baseline = baseline_trial(study)
    front = feasible_pareto_front(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return {
        "study": study.study_name,
        "objectives": study.metric_names,
        "directions": [d.name.lower() for d in study.directions],
        "trials": counts,
        "infeasible": sum(not t.user_attrs.get("feasible", True) for t in complete),
        "pareto_front_size": len(front),
        "baseline": None
        if baseline is None
        else {"trial": baseline.number, **{m: baseline.user_attrs.get(m) for m in METRIC_DIRECTIONS}},
        "safeguard": study.user_attrs.get(SAFEGUARD_ATTR),
    }


def trial_row(trial: FrozenTrial, metric_names: list[str]) -> dict[str, Any]:
    """One trial as a flat row: number, objective values, HardNeg and feasibility, params."""
    row: dict[str, Any] = {"trial": trial.number, "baseline": bool(trial.user_attrs.get("baseline"))}
    for name, value in zip(metric_names, trial.values or []):
        row[name] = value
    row["hardneg"] = trial.user_attrs.get("hardneg")
    row["feasible"] = trial.user_attrs.get("feasible", True)
    for name, value in trial.params.items():
        row[name] = float(value) if isinstance(value, float) and not math.isnan(value) else value
    return row
