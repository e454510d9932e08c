"""One trial: sample Word2Vec parameters, train, evaluate on validation, return objective values.

Everything a later table or chart needs is recorded on the trial as user attributes (every metric,
per-bucket metrics, timings, seed, gensim version, feasibility), so nothing is recomputed later.
This module knows Optuna's trial API but nothing about SQL or the CLI.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from metrics.evaluate import EvaluationData, EvaluationSettings, evaluate
from objectives.word2vec import GENSIM_DEFAULTS, train_word2vec

HARDNEG_CONSTRAINT = "hardneg"
#: Constraint value of a trial whose HardNeg is unavailable while the safeguard is on: infeasible.
UNKNOWN_HARDNEG_VIOLATION = 1.0


class TrialFailed(Exception):
    """A trial that cannot produce its objectives (NaN, unavailable metric, empty vocabulary)."""


@dataclass(frozen=True)
class TrialData:
    """What every trial of a study shares: the training corpus and the validation arrays."""

    sentences: Sequence[Sequence[str]]
    n_songs: int
    evaluation: EvaluationData
    settings: EvaluationSettings


@dataclass(frozen=True)
class TrialOutcome:
    """Metrics of one trained configuration (flat ``metrics``, ``buckets``, ``timings`` in seconds)."""

    metrics: dict[str, float | int | None]
    buckets: dict[str, Any]
    timings: dict[str, float]


def run_configuration(data: TrialData, params: Mapping[str, Any], *, seed: int, workers: int = 1) -> TrialOutcome:
    """Train Word2Vec with ``params`` (gensim defaults for the rest) and evaluate it on ``data``."""
    start = time.perf_counter()
    trained = train_word2vec(data.sentences, data.n_songs, params, seed=seed, workers=workers)
    result = evaluate(trained.matrix, data.evaluation, data.settings, present=trained.present)
    timings = {
        "train_seconds": trained.seconds,
        "knn_seconds": float(result.timings["knn"]),
        "metrics_seconds": float(result.timings["metrics"]),
        "trial_seconds": time.perf_counter() - start,
    }
    return TrialOutcome(metrics=dict(result.metrics), buckets=result.buckets, timings=timings)


def to_distribution(spec: Any) -> BaseDistribution | None:
    """An Optuna distribution from a search-space entry (``None`` for a fixed value)."""
    kind = getattr(spec, "type", None)
    if kind == "int":
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))
    if kind == "float":
        return FloatDistribution(float(spec.low), float(spec.high), log=spec.log, step=spec.step)
    if kind == "categorical":
        return CategoricalDistribution(list(spec.choices))
    return None


def suggest_params(trial: optuna.Trial, space: Mapping[str, Any]) -> dict[str, Any]:
    """Sample searched parameters on ``trial``; fixed values pass through unchanged."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        distribution = to_distribution(spec)
        if distribution is None:
            params[name] = spec
        elif isinstance(distribution, IntDistribution):
            params[name] = trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log, step=distribution.step)
        elif isinstance(distribution, FloatDistribution):
            params[name] = trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log, step=distribution.step)
        else:
            params[name] = trial.suggest_categorical(name, distribution.choices)
    return params


def baseline_params(space: Mapping[str, Any]) -> dict[str, Any]:
    """gensim's default value of every searched parameter: trial 0, the baseline of every comparison."""
    return {name: GENSIM_DEFAULTS[name] for name, spec in space.items() if to_distribution(spec) is not None}


class Objective:
    """The Optuna objective of a study.

    ``baseline_hardneg`` returns the baseline trial's HardNeg (``None`` if unavailable) and is only
    called for non-baseline trials when ``tolerance`` is not ``None`` (the safeguard is on).
    """

    def __init__(
        self,
        data: TrialData,
        space: Mapping[str, Any],
        objectives: Sequence[str],
        *,
        seed: int,
        workers: int = 1,
        tolerance: float | None = 0.10,
        baseline_hardneg: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._data = data
        self._space = dict(space)
        self._objectives = list(objectives)
        self._seed = seed
        self._workers = workers
        self._tolerance = tolerance
        self._baseline_hardneg = baseline_hardneg

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._run(trial)
        except BaseException as exc:
            # Optuna keeps no failure message in the storage; the dashboard and `study status` show this.
            reason = "interrupted (KeyboardInterrupt)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason[:500])
            raise

    def _run(self, trial: optuna.Trial) -> list[float]:
        import gensim

        params = suggest_params(trial, self._space)
        # A killed worker's trial is re-run as a copy carrying its user attrs: keep its seed to reproduce it.
        seed = int(trial.user_attrs.get("seed", self._seed + trial.number))
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("gensim_version", gensim.__version__)
        trial.set_user_attr("gensim_params", _jsonable({**GENSIM_DEFAULTS, **params, "sg": 1, "hs": 0}))
        try:
            outcome = run_configuration(self._data, params, seed=seed, workers=self._workers)
        except ValueError as exc:  # empty vocabulary and similar: a readable reason, not a crash
            raise TrialFailed(str(exc)) from exc
        for name, value in outcome.metrics.items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("buckets", outcome.buckets)
        for name, value in outcome.timings.items():
            trial.set_user_attr(name, round(value, 4))
        self._apply_safeguard(trial, outcome.metrics.get("hardneg"))
        values = []
        for name in self._objectives:
            value = outcome.metrics.get(name)
            if value is None or not math.isfinite(float(value)):
                raise TrialFailed(f"objective {name!r} is unavailable for this configuration ({value})")
            values.append(float(value))
        return values

    def _apply_safeguard(self, trial: optuna.Trial, hardneg: float | int | None) -> None:
        is_baseline = bool(trial.user_attrs.get("baseline"))
        if self._tolerance is None:
            trial.set_user_attr("feasible", True)
            return
        if is_baseline:
            violation = 0.0 if hardneg is not None else UNKNOWN_HARDNEG_VIOLATION
        else:
            reference = self._baseline_hardneg()
            if hardneg is None or reference is None:
                violation = UNKNOWN_HARDNEG_VIOLATION
            else:
                violation = float(hardneg) - (1.0 + self._tolerance) * float(reference)
        trial.set_constraint(HARDNEG_CONSTRAINT, violation)
        trial.set_user_attr("constraint_hardneg", violation)
        trial.set_user_attr("feasible", violation <= 0.0)


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
