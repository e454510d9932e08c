"""Study orchestration: storage, creation (with the gensim-default baseline), workers, status.

Any number of workers, on any number of machines, join one study through a shared RDB storage
(PostgreSQL or MySQL; SQLite on one machine). A worker first makes sure the baseline trial is complete,
because the HardNeg safeguard of every other trial is relative to it, then optimises until the study
has ``trials`` completed trials. A killed worker's trial is detected by its missing heartbeat, failed,
and re-run with the same parameters and seed.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import secrets
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages._rdb import models as _optuna_models
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError

from hpo._progress import TrialBar, bar, bars_enabled, bars_logging, trial_estimate
from hpo.artifacts import VectorKeeper
from hpo.config import METRIC_DIRECTIONS, StudyConfig, parse_config
from hpo.data.dataset import PreparedDataset
from hpo.results import on_study_created, on_worker_start, record_completed_trial
from hpo.search import initial_design, make_sampler, params_claim_key, require_gp, resolve_search_space
from hpo.trials import (
    CONFIG_ATTR,
    FINGERPRINT_ATTR,
    SAFEGUARD_ATTR,
    baseline_trial,
    baseline_trials,
    feasible_pareto_front,
    infeasibility_warning,
    study_dataset,
    trial_data,
)
from objectives.stopping import interruption_reason
from objectives.trial import (
    HardNegReference,
    Objective,
    Safeguard,
    baseline_params,
    per_song_counts,
)
from storage import results as store
from storage.db import safe_url, switch_to_wal
from storage.errors import InputError, first_line

_log = logging.getLogger(__name__)
# Heartbeats, retries and metric names are marked experimental in Optuna 5 but are the documented way.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

#: Set last by :func:`create_study`: a joining worker waits for it, so it never sees a half-created study.
READY_ATTR = "songhpo_ready"
READY_TIMEOUT = 120.0
#: Set once the first generation (hpo.search.initial_design) is queued, after the baseline completed.
DESIGN_ATTR = "songhpo_design_queued"
WEAK_SUPPORT = 50
CHART_INTERVAL = 30.0
#: Metrics that need artist / genre labels.
_NEEDS = {"ch_artist": "artists", "coherence_artist": "artists", "ch_genre": "genres", "coherence_genre": "genres"}


class _StudyStorage(RDBStorage):
    """Optuna's RDB storage with two guarantees every backend keeps, SQLite included.

    - A waiting (queued) trial is taken by exactly one worker: the WAITING -> RUNNING transition is one
      conditional ``UPDATE``, where Optuna relies on ``SELECT ... FOR UPDATE``, which SQLite ignores (two
      workers then ran the same queued trial, and the slower one crashed telling it).
    - A trial failed for a missing heartbeat says so in its ``fail_reason`` attribute.

    It also remembers the trials this process started (:meth:`fail_interrupted`): Ctrl-C can land after a
    trial became RUNNING and before its objective (or heartbeat) began, and such a trial would otherwise
    stay RUNNING for good.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started: set[int] = set()

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        # Optuna's cached storage calls this one directly (not create_new_trial).
        trial = super()._create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self._started.add(trial._trial_id)
        return trial

    def fail_interrupted(self, reason: str) -> None:
        """Mark FAIL, with ``fail_reason`` ``reason``, every trial this process started that is still RUNNING."""
        for trial_id in sorted(self._started):
            try:
                if self.get_trial(trial_id).state != TrialState.RUNNING:
                    continue
                self.set_trial_user_attr(trial_id, "fail_reason", reason)
                super().set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        trials = _optuna_models.TrialModel.__table__
        # Optuna stores naive UTC datetimes.
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.engine.begin() as connection:
            claimed = connection.execute(
                update(trials)
                .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=now)
            ).rowcount
        if claimed == 1:
            self._started.add(trial_id)
        return claimed == 1

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period or 0
        for trial_id in stale:
            try:
                self.set_trial_user_attr(
                    trial_id, "fail_reason",
                    f"no heartbeat for {grace} s: its worker was killed or lost; re-run as a new trial with the same "
                    "parameters and seed",
                )
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it finished meanwhile and will not be failed
        return stale


#: User attributes a heartbeat re-run inherits from the trial it repeats: what identifies the run.
_RETRY_KEEPS = ("seed", "baseline", "design")


class _RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's re-run of a trial whose worker died, carrying only the trial's identity (seed, role), not
    its partial results or its ``fail_reason``."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        identity = copy.copy(trial)
        identity.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in _RETRY_KEEPS}
        super().__call__(study, identity)


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
    deadline = time.monotonic() + _CREATION_RACE_SECONDS
    while True:
        try:
            storage = _StudyStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=config.heartbeat.interval,
                grace_period=config.heartbeat.grace_period,
                heartbeat_stale_trial_callback=_RetryStaleTrial(max_retry=config.heartbeat.max_retry),
            )
            break
        except Exception as exc:  # noqa: BLE001 - driver errors vary; the message must not leak the password
            if _lost_creation_race(exc) and time.monotonic() < deadline:
                _log.debug("storage %s: another process is creating Optuna's tables; opening again", safe_url(url))
                # Let the winner finish creating them all: otherwise the workers collide again on the next table.
                time.sleep(random.uniform(0.05, 0.25))
                continue
            raise InputError(
                f"storage {safe_url(url)}: cannot connect ({type(exc).__name__}: {first_line(exc)})"
            ) from exc
    if backend == "sqlite":
        _use_sqlite_wal(storage.engine)
    return storage


#: How long a worker keeps opening a fresh storage whose tables other workers are creating at the same moment.
_CREATION_RACE_SECONDS = 60.0


def _lost_creation_race(exc: BaseException) -> bool:
    """Whether opening the storage failed because another process created Optuna's tables or version rows
    first: Optuna's ``RDBStorage`` checks, then creates, without a lock (SQLite: "UNIQUE constraint failed:
    alembic_version.version_num" or "table ... already exists"; PostgreSQL: a duplicate key in ``pg_type``;
    MariaDB: a duplicate entry or "Table ... already exists").
    Opened again, it finds them and only reads."""
    return isinstance(exc, IntegrityError) or (isinstance(exc, DatabaseError) and "already exists" in str(exc))


def _use_sqlite_wal(engine: Engine) -> None:
    """WAL journal: readers (dashboard, status) never block writers, and commits cost half as much.

    ``synchronous=NORMAL`` in WAL mode stays consistent after a crash of any process; only an OS crash
    or power loss can drop the last transactions.
    """
    engine.dispose()  # connections opened during RDBStorage's setup would miss the pragmas

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def open_storage_url(url: str) -> RDBStorage:
    """:func:`open_storage` for a bare URL, with default heartbeat settings (before a study's config is known)."""
    return open_storage(parse_config({"name": "-", "dataset": ".", "storage": url}, "--storage"))


def safeguard_status(config: StudyConfig, dataset: PreparedDataset) -> dict[str, Any]:
    """Whether the HardNeg safeguard is on, and the warning to show when it is dropped or weak."""
    summary = dataset.manifest["hard_negatives"]
    status: dict[str, Any] = {
        "enabled": config.constraint.enabled,
        "tolerance": config.constraint.tolerance,
        "rule": config.constraint.rule,
        "confidence": config.constraint.confidence,
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
        fix = ("prepare the dataset with 'data prepare --hardneg-scope sequence' for more supporting songs"
               if summary.get("scope") != "sequence" else "a larger dataset would support it better")
        status["warning"] = (
            f"the HardNeg safeguard is weak: only {summary['n_songs']} songs have a hard negative "
            f"(fewer than {WEAK_SUPPORT}); {fix}"
        )
    return status


def safeguard_of(config: StudyConfig, status: dict[str, Any]) -> Safeguard | None:
    """The :class:`objectives.trial.Safeguard` trials apply (``None`` when the study runs without it)."""
    if not status.get("enabled"):
        return None
    return Safeguard(tolerance=config.constraint.tolerance, rule=config.constraint.rule,
                     confidence=config.constraint.confidence)


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
    config = resolve_search_space(config, dataset)
    _check_objectives(config, dataset)
    if config.sampler.name == "gp":
        require_gp()
    storage = open_storage(config)
    if config.name in {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}:
        if not exist_ok:
            raise InputError(
                f"study {config.name!r} already exists in {safe_url(config.storage)}; "
                f"join it with 'songhpo study run {config.name} --storage URL' or choose another name"
            )
        return _join(config)
    try:
        study = optuna.create_study(
            study_name=config.name, storage=storage, directions=config.directions, sampler=make_sampler(config)
        )
    except optuna.exceptions.DuplicatedStudyError:
        # Another worker created it between our check and our insert.
        return _join(config)
    # Before any trial can complete: rows of an earlier study of the same name are dropped here.
    on_study_created(study, config, dataset)
    study.set_metric_names(list(config.objectives))
    status = safeguard_status(config, dataset)
    # The storage URL may hold a password, and optuna-dashboard shows study attrs: never store it.
    study.set_user_attr(CONFIG_ATTR, {k: v for k, v in config.to_json().items() if k != "storage"})
    study.set_user_attr(FINGERPRINT_ATTR, dataset.fingerprint)
    study.set_user_attr(SAFEGUARD_ATTR, status)
    # Trial 0, trained with the study seed. The rest of the first generation is queued once it is complete
    # (_ensure_baseline): until then the baseline is the only queued trial, so a worker that takes a queued
    # trial to run the baseline, or its re-run, always gets the baseline.
    study.enqueue_trial(baseline_params(config.search_space), user_attrs={"baseline": True, "seed": config.seed})
    study.set_user_attr(READY_ATTR, True)
    if status["warning"]:
        _log.warning("study %s: %s", config.name, status["warning"])
    _log.info("created study %s in %s", config.name, safe_url(config.storage))
    return study


#: Config fields a joining worker must share with the study: they decide what a trial computes.
_SHARED_FIELDS = ("seed", "objectives", "search_preset", "search_space", "constraint", "evaluation")


def _join(config: StudyConfig) -> optuna.Study:
    """Load the existing study ``config.name`` for a worker with ``config``, refusing a config that would
    compute different trials (objectives, space, safeguard, evaluation) than the study's own."""
    study, _ = load_study(config.name, config.storage, config=config)
    stored = stored_config(study.user_attrs[CONFIG_ATTR], config.storage, f"study {config.name!r}")
    mine, theirs = config.model_dump(mode="json"), stored.model_dump(mode="json")
    for key in _SHARED_FIELDS:
        if mine[key] != theirs[key]:
            raise InputError(
                f"study {config.name!r} in {safe_url(config.storage)} has {key} {_brief(theirs[key])}, this config has "
                f"{_brief(mine[key])}; join it by name ('songhpo study run {config.name} --storage URL') or create a "
                "new study under another name"
            )
    record_budget(study, config.trials)  # a config file that raised 'trials'
    return study


def record_budget(study: optuna.Study, trials: int) -> None:
    """Raise the budget in the study's stored config to ``trials`` (never lowers it), so that
    ``study status``, the dashboard note and workers joining by name see the budget being worked to."""
    stored = study.user_attrs[CONFIG_ATTR]
    if trials > int(stored.get("trials", 0)):
        study.set_user_attr(CONFIG_ATTR, {**stored, "trials": trials})


def _brief(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


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
        # A study being created holds only its queued first generation; anything else is not songhpo's.
        started = [t for t in bare.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
        if time.monotonic() > deadline or started:
            raise InputError(
                f"study {name!r} in {safe_url(storage_url)} was not created by songhpo, or its creation was "
                "interrupted; create it again under another name"
            )
        time.sleep(0.5)
    if config is None:
        config = stored_config(bare.user_attrs[CONFIG_ATTR], storage_url, f"study {name!r} config")
        # Heartbeat settings are the study's, not the defaults the probe was opened with.
        storage.engine.dispose()
        storage = open_storage(config)
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(config))
    return study, config


def stored_config(stored: dict[str, Any], storage_url: str, source: str) -> StudyConfig:
    """The config a study keeps in its attributes, with the storage it was read from.

    Studies created before ``search_preset`` existed searched the paper's space: a stored config without
    the key keeps it (the default preset would add ``epochs`` and ``sample`` in mid-study).
    """
    return parse_config({"search_preset": "paper", **stored, "storage": storage_url}, source)


def require_sqlite_file(url: str) -> None:
    """Reading a study from a SQLite file that does not exist is a typo, not a new empty database."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - open_storage reports unparsable URLs
        return
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():
            raise InputError(f"--storage {safe_url(url)}: no such SQLite file {parsed.database!r}")


@dataclass
class WorkerReport:
    """What one worker did; ``worker`` is its study-unique number (its sampler's seed derives from it)."""

    completed: int = 0
    failed: int = 0
    seconds: float = 0.0
    worker: int = 0


def claim_worker(study: optuna.Study, config: StudyConfig) -> int:
    """A study-unique worker number from the storage (a random one, with a warning, if it cannot be had)."""
    owner = _owner()
    try:
        return store.claim_worker_number(config.storage, study.study_name, owner)
    except Exception as exc:  # noqa: BLE001 - a worker must still search, and never repeat another's draws
        number = secrets.randbelow(2**31)
        _log.warning("could not claim a worker number in the songhpo tables (%s); using random number %d",
                     exc, number)
        return number


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
    when it was reached are finished, not thrown away). The worker claims a study-unique number and seeds
    its sampler from it (:func:`hpo.search.sampler_seed`), so no two workers, and no two runs of one
    worker, draw the same configurations.
    """
    dataset = study_dataset(study, config, dataset_path)
    # The study's own search space, as resolved for its dataset when it was created (min_count on sparse
    # data, a shorter epochs range on large data): a worker started from a config file holds the file's.
    stored = stored_config(study.user_attrs[CONFIG_ATTR], config.storage, f"study {study.study_name!r}")
    config = config.model_copy(update={"search_space": stored.search_space})
    on_worker_start(study, config, dataset)
    safeguard = study.user_attrs[SAFEGUARD_ATTR]  # set before READY_ATTR, which load_study waited for
    report = WorkerReport(worker=claim_worker(study, config))
    owner = _owner()
    study.sampler = make_sampler(config, report.worker,
                                 claim=lambda params: _claim(config, study, params_claim_key(params), owner))
    _log.info("worker %d of study %s (%s sampler)", report.worker, study.study_name, config.sampler.name)
    reference: dict[str, HardNegReference | None] = {}

    def baseline_reference() -> HardNegReference | None:
        # Another worker may still be running the baseline (both saw it waiting; one got it): wait while it
        # runs, and cache only a completed baseline's value so one early look never sticks for good.
        untaken_since: float | None = None
        while "value" not in reference:
            fail_stale_trials(study)
            baselines = baseline_trials(study)
            states = {t.state for t in baselines}
            if TrialState.COMPLETE in states:
                reference["value"] = hardneg_reference(next(t for t in baselines if t.state == TrialState.COMPLETE))
            elif TrialState.RUNNING in states:
                untaken_since = None
                time.sleep(1.0)
            elif TrialState.WAITING in states:
                # Its worker was lost and it is queued again; this worker, inside a trial, cannot take it and
                # may be the only one left: after a grace period this trial's HardNeg is unknown (infeasible)
                # and the next trial this worker starts is the baseline.
                untaken_since = untaken_since or time.monotonic()
                if time.monotonic() - untaken_since > max(config.heartbeat.grace_period, 10):
                    _log.warning("the baseline is queued again but nobody runs it: this trial's HardNeg is unknown")
                    return None
                time.sleep(1.0)
            else:
                return None  # failed for good: unknown for this trial
        return reference["value"]

    # Trial vectors kept as Optuna artifacts under the config's [artifacts] policy (hpo.artifacts).
    vectors = VectorKeeper(config, dataset.songs["track_id"].to_numpy())
    objective = Objective(
        trial_data(config, dataset),
        config.search_space,
        config.objectives,
        seed=config.seed,
        workers=config.training.workers,
        safeguard=safeguard_of(config, safeguard),
        baseline_reference=baseline_reference,
        on_trained=vectors.on_trained,
        # In-trial progress (epochs, kNN, metrics, ETA) on a terminal only; logs stay one line per trial.
        progress=TrialBar(lambda: trial_estimate(
            t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))))
        if bars_enabled() else None,
    )
    start = time.perf_counter()
    # Failures do not use up the budget of completed trials, but a worker gives up after this many.
    max_failures = max(10, config.trials)
    last_chart = [time.monotonic()]
    with bars_logging(), bar(n_trials or config.trials, f"worker {study.study_name}", unit="trial") as progress, \
            _failing_interrupted_trials(study):

        def on_trial_end(study: optuna.Study, trial: FrozenTrial) -> None:
            if trial.state == TrialState.COMPLETE:
                report.completed += 1
                values = ", ".join(f"{n}={v:.4g}" for n, v in zip(config.objectives, trial.values))
                _log.info("trial %d complete%s: %s%s", trial.number, _duration_note(trial), values,
                          _safeguard_note(trial))
                # The SQL result tables follow the study live (a failure is a warning, never the study's end).
                record_completed_trial(config.storage, study.study_name, trial)
                _prune_vectors(vectors, study)
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

        ran_baseline = _ensure_baseline(study, config, objective, on_trial_end, timeout)
        if safeguard.get("enabled") and baseline_reference() is None:
            _log.warning("the baseline has no HardNeg value: every trial is infeasible until it does")
        elapsed = time.perf_counter() - start
        remaining = None if n_trials is None else n_trials - ran_baseline
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        budget = config.trials
        if remaining is not None and done + remaining > budget:
            # An explicit trial count is run in full: the study's budget grows to hold it.
            budget = done + remaining
            record_budget(study, budget)
            _log.info("study %s: budget raised to %d completed trials for this worker's %d", study.study_name, budget,
                      remaining)
        if done >= budget:
            _log.info("study %s has %d completed trials (budget %d): nothing to do; raise 'trials' in the config "
                      "or pass --n-trials N to run N more", study.study_name, done, budget)
        if (remaining is None or remaining > 0) and done < budget and (timeout is None or elapsed < timeout):
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=None if timeout is None else timeout - elapsed,
                catch=(Exception,),
                callbacks=[MaxTrialsCallback(budget, states=(TrialState.COMPLETE,)), on_trial_end],
            )
    _prune_vectors(vectors, study)
    _publish_chart(study)
    warning = infeasibility_warning(study)
    if warning:
        _log.warning("study %s: %s", study.study_name, warning)
    report.seconds = time.perf_counter() - start
    return report


@contextmanager
def _failing_interrupted_trials(study: optuna.Study) -> Iterator[None]:
    """On Ctrl-C (or a stop signal raised as one), leave no trial this worker started RUNNING (it would wait for
    its heartbeat, or forever)."""
    try:
        yield
    except KeyboardInterrupt as stop:
        # Optuna wraps the storage of a study in a cache; ours is behind it.
        storage = getattr(study._storage, "_backend", study._storage)
        if isinstance(storage, _StudyStorage):
            storage.fail_interrupted(interruption_reason(stop))
        raise


def hardneg_reference(baseline: FrozenTrial) -> HardNegReference | None:
    """The safeguard's reference from a completed baseline trial (``None`` without a HardNeg value).

    Baselines recorded before per-song counts existed give a reference without them (the point rule).
    """
    value = baseline.user_attrs.get("hardneg")
    if value is None:
        return None
    songs, counts = per_song_counts(baseline.user_attrs) or (None, None)
    return HardNegReference(value=float(value), songs=songs, counts=counts)


def _duration_note(trial: FrozenTrial) -> str:
    seconds = trial.user_attrs.get("trial_seconds")
    return f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""


def _safeguard_note(trial: FrozenTrial) -> str:
    margin = trial.user_attrs.get("constraint_hardneg")
    if margin is None:
        return ""
    verdict = "feasible" if trial.user_attrs.get("feasible", True) else "INFEASIBLE: HardNeg above the safeguard"
    return f" ({verdict}, HardNeg margin {margin:+.3g})"


def _prune_vectors(vectors: VectorKeeper, study: optuna.Study) -> None:
    """Delete the stored trial vectors the artifact policy no longer keeps (best effort)."""
    try:
        vectors.prune(study)
    except Exception as exc:  # noqa: BLE001 - artifacts must never fail a study
        _log.warning("could not delete the vectors of trials off the front: %s", exc)


def _publish_chart(study: optuna.Study) -> None:
    """Refresh the constraint-aware Pareto chart shown in optuna-dashboard (best effort)."""
    from dashboards.pareto import publish_pareto_chart

    try:
        publish_pareto_chart(study, feasible_pareto_front(study))
    except Exception as exc:  # noqa: BLE001 - a chart must never fail a study
        _log.warning("could not refresh the dashboard chart: %s", exc)


def _ensure_baseline(
    study: optuna.Study,
    config: StudyConfig,
    objective: Objective,
    callback: Callable[[optuna.Study, FrozenTrial], None],
    timeout: float | None,
) -> int:
    """Make sure the baseline is complete and the first generation queued.

    Runs the baseline here if it is waiting, waits while another worker runs it, queues it again (seed =
    study seed) when it failed or was interrupted, and once it is complete queues the rest of the first
    generation (:func:`hpo.search.initial_design`, exactly once per study). Returns how many trials this
    worker ran. Waiting happens outside any trial, so a worker never holds a trial while another one is
    needed to finish the baseline. A baseline that failed ``heartbeat.max_retry + 1`` times is given up
    on, with a warning.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    ran = 0
    owner = _owner()
    while True:
        fail_stale_trials(study)
        baselines = baseline_trials(study)
        states = {t.state for t in baselines}
        if TrialState.COMPLETE in states or not baselines:
            _queue_first_generation(study, config, owner)
            return ran
        if TrialState.WAITING in states:
            # Before the baseline completes it is the only queued trial (create_study), so this takes it.
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[callback])
            ran += 1
            continue
        if TrialState.RUNNING not in states:
            reason = baselines[-1].user_attrs.get("fail_reason", "unknown reason")
            if len(baselines) > config.heartbeat.max_retry:
                _log.warning("the baseline trial failed %d times (last: %s); HardNeg safeguard values are unknown",
                             len(baselines), reason)
                _queue_first_generation(study, config, owner)
                return ran
            # One worker re-queues it (the claim decides); the others see it waiting at their next look.
            if _claim(config, study, f"baseline:{len(baselines)}", owner):
                _log.warning("the baseline trial failed (%s); queued again with seed %d", reason, config.seed)
                study.enqueue_trial(baseline_params(config.search_space),
                                    user_attrs={"baseline": True, "seed": config.seed})
                continue
        if deadline is not None and time.monotonic() > deadline:
            return ran
        time.sleep(1.0)


def _queue_first_generation(study: optuna.Study, config: StudyConfig, owner: str) -> None:
    """Queue :func:`hpo.search.initial_design` once per study (the first worker past the baseline does it;
    the others wait for it, at most :data:`READY_TIMEOUT` seconds, so that they start from it too)."""
    if study.user_attrs.get(DESIGN_ATTR):
        return
    if not _claim(config, study, "design", owner):
        deadline = time.monotonic() + READY_TIMEOUT
        while not study.user_attrs.get(DESIGN_ATTR) and time.monotonic() < deadline:
            time.sleep(0.5)
        if study.user_attrs.get(DESIGN_ATTR):
            return
        # The claimant died while queueing: finish its job (the member already queued are skipped).
        _log.warning("the first generation of study %s was never completely queued; queueing the rest",
                     study.study_name)
    for label, params in initial_design(config):
        study.enqueue_trial(params, user_attrs={"design": label}, skip_if_exists=True)
    study.set_user_attr(DESIGN_ATTR, True)


def _owner() -> str:
    """Who claims, as the claims table records it: host name and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim(config: StudyConfig, study: optuna.Study, key: str, owner: str) -> bool:
    """:func:`storage.results.claim`; without the songhpo tables, every worker may act (a warning)."""
    try:
        return store.claim(config.storage, study.study_name, key, owner)
    except Exception as exc:  # noqa: BLE001
        _log.warning("could not claim %r in the songhpo tables (%s); acting anyway", key, exc)
        return True


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
        "budget": study.user_attrs.get(CONFIG_ATTR, {}).get("trials"),
        "infeasible": sum(not t.user_attrs.get("feasible", True) for t in complete),
        "pareto_front_size": len(front),
        "baseline": None
        if baseline is None
        else {"trial": baseline.number, **{m: baseline.user_attrs.get(m) for m in METRIC_DIRECTIONS}},
        "safeguard": study.user_attrs.get(SAFEGUARD_ATTR),
        "infeasibility_warning": infeasibility_warning(study),
    }


