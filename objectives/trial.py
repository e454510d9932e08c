"""One trial: sample Word2Vec parameters, train, evaluate on validation, return objective values.

Everything a later table or chart needs is recorded on the trial as user attributes (every metric,
per-bucket metrics, timings, seed, gensim version, feasibility, and the evaluation's sample: pairs
evaluated and the standard error of each next-song metric, :data:`metrics.evaluate.SAMPLING_KEYS`), so
nothing is recomputed later.
This module knows Optuna's trial API but nothing about SQL or the CLI.
"""

from __future__ import annotations

import base64
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from metrics.evaluate import EvaluationData, EvaluationSettings, evaluate
from metrics.false_neighbours import hardneg_excess_bound
from objectives.stopping import interruption_reason
from objectives.word2vec import GENSIM_DEFAULTS, TrainedEmbeddings, train_word2vec, word2vec_kwargs

HARDNEG_CONSTRAINT = "hardneg"
#: Constraint value of a trial whose HardNeg is unavailable while the safeguard is on: infeasible.
UNKNOWN_HARDNEG_VIOLATION = 1.0
#: User attribute of the baseline trial indexing its per-song HardNeg counts (:func:`per_song_attrs`).
PER_SONG_ATTR = "hardneg_per_song"


class TrialProgress(Protocol):
    """What a running trial tells whoever shows its progress (the CLI draws a bar; this layer draws nothing).

    ``start`` when training begins, ``epoch`` after each training epoch, ``stage`` when the evaluation's
    ``"knn"`` search and then its ``"metrics"`` begin, ``end`` when the trial is over (also on failure).
    """

    def start(self, trial_number: int, epochs: int) -> None: ...

    def epoch(self, done: int, total: int) -> None: ...

    def stage(self, name: str) -> None: ...

    def end(self) -> None: ...


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
    """Metrics of one trained configuration (flat ``metrics``, ``buckets``, ``timings`` in seconds,
    ``hardneg_per_song`` = (support songs, hard-negative neighbour counts) at the evaluation's K,
    ``embeddings`` = the trained vectors themselves, for a caller that keeps them, ``sampling`` = the
    evaluation's sample sizes and standard errors, :attr:`metrics.evaluate.EvaluationResult.sampling`)."""

    metrics: dict[str, float | int | None]
    buckets: dict[str, Any]
    timings: dict[str, float]
    hardneg_per_song: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))
    embeddings: TrainedEmbeddings | None = None
    sampling: dict[str, float | int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Safeguard:
    """The HardNeg safeguard of a study.

    ``rule = "paired-test"``: a trial is infeasible when a one-sided paired Student-t test over the
    songs both it and the baseline support finds HardNeg@K above ``(1 + tolerance)`` x the baseline's
    at ``confidence`` (:func:`metrics.false_neighbours.hardneg_excess_bound`); the constraint value is
    the lower confidence bound of the excess. ``rule = "point"``: the plain comparison of the two
    HardNeg values (constraint ``hardneg - (1 + tolerance) x baseline``).
    """

    tolerance: float = 0.10
    rule: str = "paired-test"
    confidence: float = 0.95


@dataclass(frozen=True)
class HardNegReference:
    """The baseline's HardNeg: its value and per-song counts (``songs`` ascending, ``counts`` aligned;
    ``None`` for a baseline recorded without them, which only the point rule can use)."""

    value: float
    songs: np.ndarray | None = None
    counts: np.ndarray | None = None


def per_song_attrs(songs: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    """Per-song counts as trial user attributes: zlib + base64 of the gaps between the ascending song ids
    and of the counts (little-endian uint32), split into parts of at most :data:`_PART_CHARS` characters.

    ``PER_SONG_ATTR`` holds the number of parts of each; part ``i`` of ``songs`` is the attribute
    ``"hardneg_per_song:songs:i"``. One attribute is one database value, and MySQL's ``TEXT`` column
    (Optuna's) holds 65,535 bytes: a baseline supported by more than about 40k songs would not fit.
    """
    gaps = np.diff(np.asarray(songs, dtype=np.int64), prepend=0)
    packed = {"songs": _pack(gaps), "counts": _pack(np.asarray(counts, dtype=np.int64))}
    attrs: dict[str, Any] = {}
    parts: dict[str, int] = {}
    for name, text in packed.items():
        pieces = [text[i:i + _PART_CHARS] for i in range(0, len(text), _PART_CHARS)]
        parts[name] = len(pieces)
        attrs.update({f"{PER_SONG_ATTR}:{name}:{i}": piece for i, piece in enumerate(pieces)})
    attrs[PER_SONG_ATTR] = {"parts": parts}
    return attrs


def per_song_counts(user_attrs: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Inverse of :func:`per_song_attrs` (``(songs, counts)``), or ``None`` for a trial without them."""
    index = user_attrs.get(PER_SONG_ATTR)
    if not index:
        return None
    if "parts" in index:
        text = {name: "".join(user_attrs[f"{PER_SONG_ATTR}:{name}:{i}"] for i in range(n))
                for name, n in index["parts"].items()}
    else:
        text = index  # recorded before the split: the two strings themselves
    return np.cumsum(_unpack(text["songs"])), _unpack(text["counts"])


#: Longest part of an encoded per-song attribute (base64 characters, so bytes too).
_PART_CHARS = 60_000


def _pack(values: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(values.astype("<u4").tobytes(), 9)).decode("ascii")


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<u4").astype(np.int64)


def run_configuration(data: TrialData, params: Mapping[str, Any], *, seed: int, workers: int = 1,
                      progress: TrialProgress | None = None) -> TrialOutcome:
    """Train Word2Vec with ``params`` (gensim defaults for the rest) and evaluate it on ``data``.

    ``progress`` is told each epoch and the evaluation's stages (:class:`TrialProgress`; not its start/end).

    ``timings`` holds wall-clock seconds of training, kNN, metrics and the whole, and ``cpu_seconds``: the
    process's CPU time for the whole (every thread; what the trial costs whatever else the machine runs).
    """
    start = time.perf_counter()
    cpu_start = time.process_time()
    trained = train_word2vec(data.sentences, data.n_songs, params, seed=seed, workers=workers,
                             on_epoch=None if progress is None else progress.epoch)
    result = evaluate(trained.matrix, data.evaluation, data.settings, present=trained.present,
                      on_stage=None if progress is None else progress.stage)
    timings = {
        "train_seconds": trained.seconds,
        "knn_seconds": float(result.timings["knn"]),
        "metrics_seconds": float(result.timings["metrics"]),
        "trial_seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
    }
    return TrialOutcome(metrics=dict(result.metrics), buckets=result.buckets, timings=timings,
                        hardneg_per_song=result.hardneg_per_song, embeddings=trained,
                        sampling=dict(result.sampling))


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
            params[name] = trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log,
                                             step=distribution.step)
        elif isinstance(distribution, FloatDistribution):
            params[name] = trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log,
                                               step=distribution.step)
        elif isinstance(distribution, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, distribution.choices)
        else:
            raise TypeError(f"{name}: unsupported distribution {type(distribution).__name__}")
    return params


def baseline_params(space: Mapping[str, Any]) -> dict[str, Any]:
    """gensim's default value of every searched parameter: trial 0, the baseline of every comparison."""
    return {name: GENSIM_DEFAULTS[name] for name, spec in space.items() if to_distribution(spec) is not None}


class Objective:
    """The Optuna objective of a study.

    ``safeguard`` is the HardNeg safeguard (``None``: off). ``baseline_reference`` returns the
    baseline trial's :class:`HardNegReference` (``None`` while unavailable); it is only called for
    non-baseline trials while the safeguard is on. ``on_trained(trial, embeddings, values)``, when given, is
    called with the trained vectors and the objective values once the trial's metrics and safeguard are set,
    before the values are returned (the trial is still running; keeping the vectors is the caller's business).
    ``progress``, when given, is told how each trial advances (:class:`TrialProgress`).
    """

    def __init__(
        self,
        data: TrialData,
        space: Mapping[str, Any],
        objectives: Sequence[str],
        *,
        seed: int,
        workers: int = 1,
        safeguard: Safeguard | None = Safeguard(),
        baseline_reference: Callable[[], HardNegReference | None] = lambda: None,
        on_trained: Callable[[optuna.Trial, TrainedEmbeddings, list[float]], None] | None = None,
        progress: TrialProgress | None = None,
    ) -> None:
        self._data = data
        self._space = dict(space)
        self._objectives = list(objectives)
        self._seed = seed
        self._workers = workers
        self._safeguard = safeguard
        self._baseline_reference = baseline_reference
        self._on_trained = on_trained
        self._progress = progress

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._run(trial)
        except BaseException as exc:
            # Optuna keeps no failure message in the storage; the dashboard and `study status` show this.
            reason = interruption_reason(exc) if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason[:500])
            raise

    def _run(self, trial: optuna.Trial) -> list[float]:
        import gensim

        directions = trial.study.directions
        if len(directions) != len(self._objectives):
            # Optuna would fail the trial after training, without a reason anyone can read.
            raise TrialFailed(f"this worker optimises {len(self._objectives)} objectives {self._objectives} but the "
                              f"study has {len(directions)}; run it with the study's own config")
        params = suggest_params(trial, self._space)
        # A killed worker's trial is re-run as a copy carrying its user attrs: keep its seed to reproduce it.
        seed = int(trial.user_attrs.get("seed", self._seed + trial.number))
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("gensim_version", gensim.__version__)
        trial.set_user_attr("gensim_params", _jsonable({**GENSIM_DEFAULTS, **params, "sg": 1, "hs": 0}))
        progress = self._progress
        try:
            if progress is not None:
                progress.start(trial.number, int(word2vec_kwargs(params)["epochs"]))
            outcome = run_configuration(self._data, params, seed=seed, workers=self._workers, progress=progress)
        except ValueError as exc:  # empty vocabulary and similar: a readable reason, not a crash
            raise TrialFailed(str(exc)) from exc
        finally:
            if progress is not None:
                progress.end()
        for name, value in {**outcome.metrics, **outcome.sampling}.items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("buckets", outcome.buckets)
        for name, value in outcome.timings.items():
            trial.set_user_attr(name, round(value, 4))
        self._apply_safeguard(trial, outcome)
        values = []
        for name in self._objectives:
            value = outcome.metrics.get(name)
            if value is None or not math.isfinite(float(value)):
                raise TrialFailed(f"objective {name!r} is unavailable for this configuration ({value})")
            values.append(float(value))
        if self._on_trained is not None and outcome.embeddings is not None:
            self._on_trained(trial, outcome.embeddings, values)
        return values

    def _apply_safeguard(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        safeguard = self._safeguard
        if safeguard is None:
            trial.set_user_attr("feasible", True)
            return
        hardneg = outcome.metrics.get("hardneg")
        if trial.user_attrs.get("baseline"):
            if hardneg is not None:
                for name, value in per_song_attrs(*outcome.hardneg_per_song).items():
                    trial.set_user_attr(name, value)
            violation = 0.0 if hardneg is not None else UNKNOWN_HARDNEG_VIOLATION
        else:
            reference = self._baseline_reference()
            violation = UNKNOWN_HARDNEG_VIOLATION
            if hardneg is not None and reference is not None:
                violation = self._violation(trial, float(hardneg), outcome, reference, safeguard)
        trial.set_constraint(HARDNEG_CONSTRAINT, violation)
        trial.set_user_attr("constraint_hardneg", violation)
        trial.set_user_attr("feasible", violation <= 0.0)

    def _violation(self, trial: optuna.Trial, hardneg: float, outcome: TrialOutcome, reference: HardNegReference,
                   safeguard: Safeguard) -> float:
        allowed = (1.0 + safeguard.tolerance) * reference.value
        if safeguard.rule == "point" or reference.songs is None or reference.counts is None:
            return hardneg - allowed
        songs, counts = outcome.hardneg_per_song
        excess, bound, shared = hardneg_excess_bound(
            songs, counts, reference.songs, reference.counts, self._data.settings.k,
            tolerance=safeguard.tolerance, confidence=safeguard.confidence)
        trial.set_user_attr("hardneg_excess", None if shared == 0 else excess)
        trial.set_user_attr("hardneg_shared_songs", shared)
        return UNKNOWN_HARDNEG_VIOLATION if shared == 0 else bound


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
