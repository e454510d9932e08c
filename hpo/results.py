"""Glue between studies and the SQL result tables of :mod:`storage`.

- As trials complete, every worker records their validation metrics and popularity-bucket metrics
  (:func:`record_completed_trial`); a worker starting up records the prepared dataset and back-fills
  any completed trial whose rows are missing (:func:`on_worker_start`), so a dashboard reading SQL sees
  a running study and a worker killed between a trial's end and its recording loses nothing.
- The final evaluation (:func:`evaluate_front`, ``songhpo study evaluate``) re-trains the feasible
  Pareto-front trials and the baseline with several seeds, evaluates them on the **test** split and
  stores a Pareto-front snapshot with 95% confidence intervals.

Resuming the final evaluation
-----------------------------
The unit of work is one (trial, seed index ``i``) pair: the trial's Word2Vec parameters re-trained with
seed ``trial seed + 1000 * i`` (``i = 0`` is the validation run's seed, whose vectors are taken from the
study's artifact store when it keeps them: :mod:`hpo.artifacts`) and evaluated on test. Its
metrics are committed to ``songhpo_trial_metrics`` / ``songhpo_bucket_metrics`` (split ``test``) as
soon as it finishes, and are never computed twice: any later evaluation of the same study reuses them.
``study evaluate`` continues the study's latest snapshot when that snapshot has the same members (the
current feasible front plus the baseline), the same objectives and the same number of seeds; otherwise
it starts a new snapshot (older ones are kept) whose members are filled from the units already done.
So an interrupted run resumes where it stopped, and ``--seeds 3`` after ``--seeds 2`` trains one seed
per member.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo._progress import bar
from hpo.config import StudyConfig
from hpo.data.dataset import PreparedDataset
from hpo.evaluation import CONTINUATION_KEYS
from hpo.trials import (
    SAFEGUARD_ATTR,
    baseline_trial,
    feasible_pareto_front,
    safeguard_rule,
    study_dataset,
    training_params,
    trial_data,
)
from metrics.evaluate import METRIC_KEYS
from storage import results as store
from storage.errors import InputError

__all__ = [
    "TEST_SEED_STRIDE",
    "EvaluationReport",
    "aggregate_runs",
    "confidence_interval",
    "evaluate_front",
    "front_members",
    "on_study_created",
    "on_worker_start",
    "record_completed_trial",
    "record_dataset",
    "record_trial",
    "retrain_seed",
    "sync_study",
    "training_params",
    "validation_metrics",
]

_log = logging.getLogger(__name__)
#: Seed ``i`` of a member's test re-training is ``trial seed + TEST_SEED_STRIDE * i``.
TEST_SEED_STRIDE = 1000
#: Trial user attributes recorded besides :data:`metrics.evaluate.METRIC_KEYS` when present.
_EXTRA_ATTRS = ("train_seconds", "knn_seconds", "metrics_seconds", "trial_seconds", "cpu_seconds",
                "constraint_hardneg")
CONFIDENCE = 0.95


# -- recording trials as they complete -----------------------------------------------------------


def validation_metrics(trial: FrozenTrial) -> dict[str, Any]:
    """The metrics recorded for a completed trial: every metric key (``None`` when unavailable) plus
    timings and the HardNeg constraint slack when the trial has them."""
    attrs = trial.user_attrs
    values = {name: attrs.get(name) for name in METRIC_KEYS}
    values.update({name: attrs[name] for name in _EXTRA_ATTRS if name in attrs})
    return values


def record_trial(url: str, study_name: str, trial: FrozenTrial) -> bool:
    """Record a COMPLETE trial's validation metrics and buckets (idempotent); return whether rows were new."""
    if trial.state != TrialState.COMPLETE:
        raise ValueError(f"trial {trial.number} is {trial.state.name}, not COMPLETE")
    if "seed" not in trial.user_attrs:
        raise ValueError(f"trial {trial.number} has no 'seed' attribute (not run by songhpo)")
    return store.record_model_metrics(
        url, study_name, trial.number, split="validation", seed=int(trial.user_attrs["seed"]),
        metrics=validation_metrics(trial), buckets=trial.user_attrs.get("buckets"),
    )


def record_completed_trial(url: str, study_name: str, trial: FrozenTrial) -> None:
    """:func:`record_trial` for a worker's trial callback: a failure is a warning, never the study's end."""
    try:
        record_trial(url, study_name, trial)
    except Exception as exc:  # noqa: BLE001 - the study must go on; the next worker start back-fills
        _log.warning("trial %d: could not record its metrics in the songhpo tables: %s", trial.number, exc)


def record_dataset(url: str, dataset: PreparedDataset) -> bool:
    """Record a prepared dataset's row (idempotent on its fingerprint)."""
    manifest = dataset.manifest
    return store.record_dataset(
        url, fingerprint=dataset.fingerprint, path=str(dataset.path.resolve()), source=manifest.get("source", {}),
        counts=manifest.get("counts", {}), parameters=manifest.get("parameters", {}),
        hard_negatives=manifest.get("hard_negatives"),
    )


def _record_study(study: optuna.Study, config: StudyConfig, dataset: PreparedDataset, *, fresh: bool) -> int:
    record_dataset(config.storage, dataset)
    return store.record_study(
        config.storage, study.study_name, dataset_fingerprint=dataset.fingerprint, objectives=list(config.objectives),
        directions=[d.name.lower() for d in study.directions], fresh=fresh,
    )


def on_study_created(study: optuna.Study, config: StudyConfig, dataset: PreparedDataset) -> None:
    """Record a new study and its dataset; drop rows an earlier, deleted study of the same name left.

    Called right after Optuna created the study, before any trial can complete. Never raises.
    """
    try:
        stale = _record_study(study, config, dataset, fresh=True)
        if stale:
            _log.warning("study %s: removed %d songhpo result rows left by an earlier study of the same name",
                         study.study_name, stale)
    except Exception as exc:  # noqa: BLE001
        _log.warning("study %s: could not record it in the songhpo tables: %s", study.study_name, exc)


def sync_study(study: optuna.Study, config: StudyConfig, dataset: PreparedDataset) -> int:
    """Record the dataset and study rows and every COMPLETE trial missing from the tables; return how
    many trials were back-filled."""
    _record_study(study, config, dataset, fresh=False)
    recorded = {trial for trial, _ in store.recorded_runs(config.storage, study.study_name, "validation")}
    missing = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number not in recorded]
    for trial in missing:
        record_trial(config.storage, study.study_name, trial)
    return len(missing)


def on_worker_start(study: optuna.Study, config: StudyConfig, dataset: PreparedDataset) -> None:
    """:func:`sync_study` for a starting worker. Never raises (a warning instead)."""
    try:
        backfilled = sync_study(study, config, dataset)
        if backfilled:
            _log.info("recorded %d completed trials missing from the songhpo tables", backfilled)
    except Exception as exc:  # noqa: BLE001
        _log.warning("study %s: could not record results in the songhpo tables: %s", study.study_name, exc)


# -- confidence intervals ------------------------------------------------------------------------


def confidence_interval(values: Sequence[float | int | None], level: float = CONFIDENCE) -> dict[str, Any]:
    """Mean and two-sided Student-t interval of the available (non-``None``) ``values``.

    ``mean ± t(1 - (1 - level) / 2, n - 1) · s / √n`` with ``s`` the sample standard deviation
    (``ddof = 1``). Returns ``{"mean", "low", "high", "n"}``; ``low``/``high`` are ``None`` when
    ``n < 2`` and everything is ``None`` when ``n == 0``.
    """
    from scipy.stats import t

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = math.fsum(xs) / n
    if n == 1:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = float(t.ppf(1.0 - (1.0 - level) / 2.0, n - 1)) * statistics.stdev(xs) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def aggregate_runs(runs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Aggregate per-seed test results ``[{"metrics": {...}, "buckets": {...}}]`` of one member.

    Returns ``(test, test_buckets)``: ``test`` maps every metric key to :func:`confidence_interval`;
    ``test_buckets`` keeps the edges and pair counts (the same for every seed) and gives per-bucket
    ``{"mean": [...], "low": [...], "high": [...]}`` of HitRate and NDCG (``None`` without runs).
    """
    test = {name: confidence_interval([run["metrics"].get(name) for run in runs])
            for name in (*METRIC_KEYS, *CONTINUATION_KEYS)}
    with_buckets = [run["buckets"] for run in runs if run.get("buckets")]
    if not with_buckets:
        return test, None
    first = with_buckets[0]
    buckets: dict[str, Any] = {"edges": list(first["edges"])}
    for side in ("by_target", "by_query"):
        n_buckets = len(first[side]["pairs"])
        entry: dict[str, Any] = {"pairs": list(first[side]["pairs"])}
        for metric in ("hitrate", "ndcg"):
            stats = [confidence_interval([b[side][metric][i] for b in with_buckets]) for i in range(n_buckets)]
            entry[metric] = {key: [s[key] for s in stats] for key in ("mean", "low", "high")}
        buckets[side] = entry
    return test, buckets


# -- final evaluation on test --------------------------------------------------------------------


def front_members(study: optuna.Study, chosen: Sequence[FrozenTrial] | None = None) -> list[tuple[FrozenTrial, bool]]:
    """``(trial, on_front)`` of the snapshot members: the feasible Pareto front (or only the ``chosen``
    trials) and the baseline."""
    front = feasible_pareto_front(study)
    on_front = {t.number for t in front}
    members = [(t, True) for t in front] if chosen is None else [(t, t.number in on_front) for t in chosen]
    baseline = baseline_trial(study)
    if baseline is not None and baseline.number not in {t.number for t, _ in members}:
        members.append((baseline, False))
    return sorted({t.number: (t, on) for t, on in members}.values(), key=lambda m: m[0].number)


def retrain_seed(trial: FrozenTrial, index: int) -> int:
    """Seed of the ``index``-th test re-training of ``trial`` (index 0 = the validation run's seed)."""
    return int(trial.user_attrs["seed"]) + TEST_SEED_STRIDE * index


@dataclass
class EvaluationReport:
    """What :func:`evaluate_front` did: ``runs`` = members x seeds, of which ``reused`` were already in
    the tables and ``trained`` were computed now."""

    study: str
    snapshot_id: int
    continued: bool
    members: int
    seeds: int
    runs: int
    reused: int
    trained: int
    complete: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _constraint(study: optuna.Study, config: StudyConfig) -> dict[str, Any]:
    baseline = baseline_trial(study)
    safeguard = study.user_attrs.get(SAFEGUARD_ATTR) or {"enabled": False}
    baseline_hardneg = None if baseline is None else baseline.user_attrs.get("hardneg")
    return {
        **safeguard,
        "metric": "hardneg",
        "description": safeguard_rule(safeguard, config.evaluation.k, baseline_hardneg) + ", on validation",
        "baseline_hardneg": baseline_hardneg,
    }


def _member_row(trial: FrozenTrial, on_front: bool) -> dict[str, Any]:
    return {
        "trial": trial.number,
        "baseline": bool(trial.user_attrs.get("baseline")),
        "on_front": on_front,
        "seed": int(trial.user_attrs["seed"]),
        "params": training_params(trial),
        "validation": {name: trial.user_attrs.get(name) for name in METRIC_KEYS},
    }


def _reusable_snapshot(url: str, study: str, members: list[int], seeds: int, objectives: list[str]) -> dict[str, Any] | None:
    latest = store.load_latest_snapshot(url, study)
    if latest is None:
        return None
    same = (
        sorted(m["trial"] for m in latest["members"]) == members
        and latest["seeds"] == seeds
        and latest["objectives"] == objectives
    )
    return latest if same else None


def evaluate_front(
    study: optuna.Study, config: StudyConfig, *, seeds: int = 3, dataset_path: str | None = None,
    chosen: Sequence[FrozenTrial] | None = None,
) -> EvaluationReport:
    """Re-train the feasible Pareto front and the baseline with ``seeds`` seeds each, evaluate them on
    the test split, and store (or continue) a Pareto-front snapshot; see the module docstring.

    ``chosen`` replaces the front by these completed trials (the experiment's selected configurations).
    """
    from hpo.artifacts import trial_vectors
    from hpo.evaluation import continuation_scores, evaluate_split
    from objectives.word2vec import train_word2vec

    if seeds < 1:
        raise InputError(f"--seeds {seeds}: expected a positive integer")
    url, name = config.storage, study.study_name
    dataset = study_dataset(study, config, dataset_path)
    sync_study(study, config, dataset)
    members = front_members(study, chosen)
    if not members:
        raise InputError(f"study {name!r} has no completed feasible trial yet; run 'songhpo study run' first")
    numbers = [t.number for t, _ in members]
    objectives = list(config.objectives)
    snapshot = _reusable_snapshot(url, name, numbers, seeds, objectives)
    continued = snapshot is not None
    if snapshot is None:
        snapshot_id = store.create_snapshot(
            url, name, objectives=objectives, directions=[d.name.lower() for d in study.directions],
            constraint=_constraint(study, config), seeds=seeds, members=[_member_row(t, on) for t, on in members],
        )
    else:
        snapshot_id = snapshot["snapshot_id"]
    params = {t.number: training_params(t) for t, _ in members}
    member_seeds = {t.number: [retrain_seed(t, i) for i in range(seeds)] for t, _ in members}

    # Seed-major order: an interrupted evaluation leaves every member with about the same number of seeds.
    units = [(i, trial) for i in range(seeds) for trial, _ in members]
    done = store.recorded_runs(url, name, "test")
    todo = [(i, t) for i, t in units if (t.number, retrain_seed(t, i)) not in done]
    counts = store.refresh_snapshot(url, snapshot_id, name, member_seeds, aggregate_runs)
    complete = all(n >= seeds for n in counts.values())
    _log.info("study %s: snapshot %d, %d members x %d seeds; %d runs already done, %d to train",
              name, snapshot_id, len(members), seeds, len(units) - len(todo), len(todo))
    if todo:
        data = trial_data(config, dataset)
        with bar(len(units), f"evaluate {name} on test", unit="run", initial=len(units) - len(todo)) as progress:
            for i, trial in todo:
                seed = retrain_seed(trial, i)
                if i == 0:
                    # The validation run's own seed: its stored vectors when the artifact store keeps them.
                    vectors = trial_vectors(study, trial, config, dataset)
                    matrix, present = vectors.matrix, vectors.present
                    train_seconds = (float(trial.user_attrs.get("train_seconds", vectors.seconds))
                                     if vectors.source == "artifact" else vectors.seconds)
                else:
                    trained = train_word2vec(data.sentences, data.n_songs, params[trial.number], seed=seed,
                                             workers=config.training.workers)
                    matrix, present, train_seconds = trained.matrix, trained.present, trained.seconds
                result = evaluate_split(dataset, matrix, present, "test", data.settings)
                # Playlist continuation is reported on test only, never optimised.
                metrics = {**result.metrics,
                           **continuation_scores(dataset, matrix, present, "test", k=data.settings.k),
                           "train_seconds": round(train_seconds, 4),
                           "knn_seconds": round(float(result.timings["knn"]), 4),
                           "metrics_seconds": round(float(result.timings["metrics"]), 4)}
                # The run, its member's new confidence intervals and the snapshot's state in one commit.
                complete = store.record_snapshot_run(
                    url, snapshot_id, name, trial.number, seed=seed, member_seeds=member_seeds[trial.number],
                    metrics=metrics, buckets=result.buckets, aggregate=aggregate_runs,
                )
                _log.info("trial %d seed %d on test: %s", trial.number, seed,
                          ", ".join(f"{m}={_short(result.metrics.get(m))}" for m in objectives))
                progress.update(1)
    return EvaluationReport(study=name, snapshot_id=snapshot_id, continued=continued, members=len(members),
                            seeds=seeds, runs=len(units), reused=len(units) - len(todo), trained=len(todo),
                            complete=complete)


def _short(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"
