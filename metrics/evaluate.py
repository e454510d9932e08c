"""One-call evaluation of an embedding: every metric of SPEC section 4 from one kNN table.

:func:`evaluate` gathers every song some metric needs a neighbour list for (the queries
of the in-set and out-of-set pairs, the songs that have hard negatives, the coherence
samples), runs a single exact kNN search for them with ``k = max(k, coherence_k)``, and
derives all metrics from that table. Only the Calinski-Harabasz proxies read the
embeddings directly.

With ``EvaluationSettings.max_pairs`` set below the number of pairs, the next-song metrics
are computed on a seeded simple random sample of the pairs (:mod:`metrics.sampling`: only
the sampled pairs' query songs are searched, still exactly) and reported with their
standard errors (:data:`SAMPLING_KEYS`); when the cap does not bind, every pair is
evaluated and the results are those of the exact evaluation, bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from metrics import _validation as _v
from metrics import knn as _knn
from metrics.clustering import calinski_harabasz
from metrics.coherence import local_coherence, sample_songs
from metrics.false_neighbours import hardneg_counts
from metrics.next_song import _gains, _hits, hit_rate, ndcg, next_song_ranks
from metrics.popularity import assign_buckets, equal_pair_edges
from metrics.popularity import bucket_edges as _bucket_edges
from metrics.sampling import evaluation_sample, standard_error, stratified_bucket_means

__all__ = ["EvaluationData", "EvaluationResult", "EvaluationSettings", "evaluate",
           "METRIC_KEYS", "SAMPLING_KEYS"]

#: The flat metric names of :attr:`EvaluationResult.metrics`, in a stable order.
METRIC_KEYS: tuple[str, ...] = (
    "ndcg_in", "ndcg_out", "ndcg", "hitrate_in", "hitrate_out", "hitrate",
    "hardneg", "hardneg_support",
    "coherence_genre", "coherence_genre_support",
    "coherence_artist", "coherence_artist_support",
    "ch_genre", "ch_genre_songs", "ch_artist", "ch_artist_songs",
    "pairs_in", "pairs_out", "songs_present", "songs_total",
)

#: The keys of :attr:`EvaluationResult.sampling`: how many pairs were evaluated (``pairs_in`` and
#: ``pairs_out`` of :data:`METRIC_KEYS` are the whole population), how many distinct query songs
#: they have, and the standard error of each next-song metric (0 when every pair was evaluated).
SAMPLING_KEYS: tuple[str, ...] = (
    "pairs_in_sampled", "pairs_out_sampled", "query_songs_sampled",
    "ndcg_in_se", "ndcg_out_se", "ndcg_se", "hitrate_in_se", "hitrate_out_se", "hitrate_se",
)


@dataclass(frozen=True, eq=False)
class EvaluationData:
    """Everything an evaluation needs besides the embeddings (one split, e.g. validation).

    Attributes
    ----------
    pairs_in : np.ndarray
        ``(n, 2)`` int64 in-set ``(query, target)`` pairs.
    pairs_out : np.ndarray
        ``(m, 2)`` int64 out-of-set pairs.
    hard_negative_pairs : np.ndarray
        ``(h, 2)`` int64 unordered hard-negative pairs (may be empty).
    artist_labels, genre_labels : np.ndarray
        ``(n_songs,)`` int64, ``-1`` when unknown.
    train_counts : np.ndarray
        ``(n_songs,)`` training play count of every song (non-negative).
    bucket_edges : np.ndarray or None
        ``(B + 1,)`` float64 popularity bucket edges; ``None`` means "compute them with
        :func:`metrics.popularity.bucket_edges` from ``train_counts`` and
        ``EvaluationSettings.n_buckets``".

    Arrays are validated and converted on construction (``ValueError`` naming the field).
    """

    pairs_in: np.ndarray
    pairs_out: np.ndarray
    hard_negative_pairs: np.ndarray
    artist_labels: np.ndarray
    genre_labels: np.ndarray
    train_counts: np.ndarray
    bucket_edges: np.ndarray | None = None

    def __post_init__(self) -> None:
        artist = np.asarray(self.artist_labels)
        if artist.ndim != 1:
            raise ValueError(f"artist_labels must be 1-D (n_songs,), got shape {artist.shape}")
        n_songs = artist.shape[0]
        values: dict[str, Any] = {
            "pairs_in": _v.as_pairs(self.pairs_in, n_songs, "pairs_in"),
            "pairs_out": _v.as_pairs(self.pairs_out, n_songs, "pairs_out"),
            "hard_negative_pairs": _v.as_pairs(self.hard_negative_pairs, n_songs,
                                               "hard_negative_pairs"),
            "artist_labels": _v.as_labels(artist, n_songs, "artist_labels"),
            "genre_labels": _v.as_labels(self.genre_labels, n_songs, "genre_labels"),
        }
        counts = np.asarray(self.train_counts)
        if counts.shape != (n_songs,):
            raise ValueError(f"train_counts must have shape ({n_songs},), got {counts.shape}")
        if counts.size and (counts.dtype == np.bool_ or not np.issubdtype(counts.dtype, np.number)
                            or not np.isfinite(counts).all() or counts.min() < 0):
            raise ValueError("train_counts must be finite non-negative play counts")
        values["train_counts"] = counts
        if self.bucket_edges is not None:
            edges = np.asarray(self.bucket_edges, dtype=np.float64)
            if edges.ndim != 1 or edges.size < 2 or (np.diff(edges) < 0).any() \
                    or not np.isfinite(edges).all():
                raise ValueError("bucket_edges must be finite, non-decreasing, with at "
                                 f"least 2 values; got shape {edges.shape}")
            values["bucket_edges"] = edges
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def n_songs(self) -> int:
        """Size of the song-id space (length of the label arrays)."""
        return int(self.artist_labels.shape[0])


@dataclass(frozen=True)
class EvaluationSettings:
    """Evaluation parameters (SPEC section 4 defaults).

    Attributes
    ----------
    k : int
        Cut-off K of HitRate, NDCG and HardNeg (default 100).
    coherence_k : int or None
        Neighbours used by coherence; ``None`` means ``k``.
    coherence_sample : int
        Max songs averaged per coherence metric (seeded sample, default 5,000).
    ch_sample : int
        Max songs per Calinski-Harabasz score (seeded sample, default 50,000).
    seed : int
        Seed of every sample (each sampled metric uses this same seed).
    n_buckets : int
        Popularity buckets when the data carries no edges (default 10).
    max_pairs : int or None
        Cap on the next-song pairs evaluated, in-set and out-of-set together (``>= 2``);
        above it a seeded sample of pairs is evaluated (:func:`metrics.sampling.evaluation_sample`,
        seeded by ``seed``). ``None`` (default): every pair.
    """

    k: int = 100
    coherence_k: int | None = None
    coherence_sample: int = 5_000
    ch_sample: int = 50_000
    seed: int = 0
    n_buckets: int = 10
    max_pairs: int | None = None

    def __post_init__(self) -> None:
        _v.check_int(self.k, "k", minimum=1)
        if self.coherence_k is not None:
            _v.check_int(self.coherence_k, "coherence_k", minimum=1)
        _v.check_int(self.coherence_sample, "coherence_sample", minimum=0)
        _v.check_int(self.ch_sample, "ch_sample", minimum=0)
        _v.check_int(self.seed, "seed", minimum=0)
        _v.check_int(self.n_buckets, "n_buckets", minimum=1)
        if self.max_pairs is not None:
            _v.check_int(self.max_pairs, "max_pairs", minimum=2)

    @property
    def effective_coherence_k(self) -> int:
        """``coherence_k``, or ``k`` when unset."""
        return self.k if self.coherence_k is None else self.coherence_k


@dataclass(frozen=True)
class EvaluationResult:
    """Output of :func:`evaluate`.

    Attributes
    ----------
    metrics : dict[str, float | int | None]
        Exactly the keys of :data:`METRIC_KEYS`. Metric values are floats, supports and
        counts are ints; an unavailable metric is ``None`` (never 0, never nan).
    buckets : dict
        ``{"edges": [...], "by_target": {...}, "by_query": {...}, "by_target_equal_pairs": {...}}``;
        ``by_target`` and ``by_query`` use ``edges`` (equal numbers of songs per bucket,
        :func:`metrics.popularity.bucket_edges`); ``by_target_equal_pairs`` buckets the target
        songs by its own ``"edges"`` (equal numbers of the split's pairs per bucket,
        :func:`metrics.popularity.equal_pair_edges`). Each breakdown maps
        ``"pairs"``, ``"hitrate"``, ``"ndcg"`` to one list entry per bucket, over all
        pairs (in-set then out-of-set), with ``None`` for empty buckets; and
        ``"pairs_sampled"``, ``"hitrate_se"``, ``"ndcg_se"``: the evaluated pairs of each
        bucket and the standard errors of its values (all 0 when every pair was evaluated;
        under a sample, the buckets pool both sides as a ratio estimator,
        :func:`metrics.sampling.stratified_bucket_means`). ``"pairs"`` always counts every
        pair of the split.
    sampling : dict[str, float | int | None]
        Exactly the keys of :data:`SAMPLING_KEYS`; a standard error is ``None`` when it
        cannot be estimated (the metric is unavailable, or one pair was sampled).
    timings : dict[str, float]
        Wall-clock seconds: ``"knn"`` (the one table), ``"metrics"`` (everything else),
        ``"total"``.
    hardneg_per_song : tuple of np.ndarray
        ``(songs, counts)`` of :func:`metrics.false_neighbours.hardneg_counts` at ``k``: the
        HardNeg support songs and their hard-negative neighbour counts (both empty without
        hard negatives); ``metrics["hardneg"] == counts.mean() / k``.
    """

    metrics: dict[str, float | int | None]
    buckets: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    sampling: dict[str, float | int | None] = field(default_factory=dict)
    hardneg_per_song: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable copy (strict JSON: no nan/inf)."""
        return {"metrics": {key: _clean(value) for key, value in self.metrics.items()},
                "sampling": {key: _clean(value) for key, value in self.sampling.items()},
                "buckets": _clean(self.buckets),
                "timings": {key: float(value) for key, value in self.timings.items()}}


def evaluate(embeddings: npt.ArrayLike, data: EvaluationData,
             settings: EvaluationSettings = EvaluationSettings(), *,
             present: npt.ArrayLike | None = None,
             on_stage: Callable[[str], None] | None = None) -> EvaluationResult:
    """Compute every metric of SPEC section 4 for one embedding, with one kNN search.

    Parameters
    ----------
    embeddings : array_like, shape (data.n_songs, d)
        Song vectors (finite); row ``i`` is song ``i``.
    data : EvaluationData
        Pairs, hard negatives, labels and play counts of the split being evaluated.
    settings : EvaluationSettings, optional
        Cut-offs, sample sizes, seed and number of buckets.
    present : array_like of bool, shape (data.n_songs,), optional
        Songs that have a vector (default: every non-zero row).
    on_stage : callable, optional
        Told ``"knn"`` when the neighbour search starts and ``"metrics"`` when the metrics
        computed from it start (progress display; nothing else).

    Returns
    -------
    EvaluationResult

    Notes
    -----
    - Pairs whose query or target is absent count as misses (rank 0); HardNeg, coherence
      and Calinski-Harabasz only average over present songs.
    - ``ndcg`` / ``hitrate`` are the unweighted mean of the in-set and out-of-set values
      (the paper's headline); when one side has no pairs, the other side alone.
    - Coherence songs are ``sample_songs(present & (labels >= 0), coherence_sample,
      seed)`` per label kind; Calinski-Harabasz uses ``max_songs=ch_sample, seed=seed``.
    - Next-song pairs are ``evaluation_sample(len(pairs_in), len(pairs_out), max_pairs,
      seed)``: all of them unless ``max_pairs`` binds. Each side's NDCG/HitRate is then the
      mean over its sampled pairs (unbiased for the mean over all pairs), with standard
      error ``sqrt((1 - n/N) s^2 / n)``; the headline ``ndcg``/``hitrate`` (mean of the two
      sides, independent samples) has ``SE = sqrt(se_in^2 + se_out^2) / 2``.
    """
    t_start = time.perf_counter()
    if not isinstance(data, EvaluationData):
        raise ValueError(f"data must be an EvaluationData, got {type(data).__name__}")
    if not isinstance(settings, EvaluationSettings):
        raise ValueError(f"settings must be an EvaluationSettings, got {type(settings).__name__}")
    emb = _v.as_embeddings(embeddings)
    if emb.shape[0] != data.n_songs:
        raise ValueError(f"embeddings must have data.n_songs = {data.n_songs} rows, "
                         f"got {emb.shape[0]}")
    present_mask = _v.effective_present(emb, present)
    edges = _resolve_edges(data, settings)
    k, coherence_k = settings.k, settings.effective_coherence_k

    genre_songs = sample_songs(present_mask & (data.genre_labels >= 0),
                               settings.coherence_sample, settings.seed)
    artist_songs = sample_songs(present_mask & (data.artist_labels >= 0),
                                settings.coherence_sample, settings.seed)
    n_in, n_out = data.pairs_in.shape[0], data.pairs_out.shape[0]
    pairs_in, pairs_out = data.pairs_in, data.pairs_out
    take_in, take_out = evaluation_sample(n_in, n_out, settings.max_pairs, settings.seed)
    if take_in.size < n_in:
        pairs_in = pairs_in[take_in]
    if take_out.size < n_out:
        pairs_out = pairs_out[take_out]
    queries = np.unique(np.concatenate([
        pairs_in[:, 0], pairs_out[:, 0], data.hard_negative_pairs.ravel(),
        genre_songs, artist_songs]))

    if on_stage is not None:
        on_stage("knn")
    t_knn = time.perf_counter()
    # Looked up on the module at call time, so the single search is observable in tests.
    table = _knn.knn_table(emb, queries, k=max(k, coherence_k), present=present_mask)
    t_metrics = time.perf_counter()
    if on_stage is not None:
        on_stage("metrics")

    ranks_in = next_song_ranks(table, pairs_in)
    ranks_out = next_song_ranks(table, pairs_out)
    hardneg_songs, hardneg_neighbours = hardneg_counts(table, data.hard_negative_pairs, k)
    hardneg = float(hardneg_neighbours.mean() / k) if hardneg_songs.size else None
    hardneg_support = int(hardneg_songs.size)
    coh_genre, coh_genre_n = local_coherence(table, data.genre_labels, genre_songs, coherence_k)
    coh_artist, coh_artist_n = local_coherence(table, data.artist_labels, artist_songs,
                                               coherence_k)
    ch_genre, ch_genre_n = calinski_harabasz(emb, data.genre_labels, present=present_mask,
                                             max_songs=settings.ch_sample, seed=settings.seed)
    ch_artist, ch_artist_n = calinski_harabasz(emb, data.artist_labels, present=present_mask,
                                               max_songs=settings.ch_sample,
                                               seed=settings.seed)
    ndcg_in, ndcg_out = ndcg(ranks_in, k), ndcg(ranks_out, k)
    hr_in, hr_out = hit_rate(ranks_in, k), hit_rate(ranks_out, k)

    metrics: dict[str, float | int | None] = {
        "ndcg_in": ndcg_in, "ndcg_out": ndcg_out, "ndcg": _mean_available(ndcg_in, ndcg_out),
        "hitrate_in": hr_in, "hitrate_out": hr_out,
        "hitrate": _mean_available(hr_in, hr_out),
        "hardneg": hardneg, "hardneg_support": hardneg_support,
        "coherence_genre": coh_genre, "coherence_genre_support": coh_genre_n,
        "coherence_artist": coh_artist, "coherence_artist_support": coh_artist_n,
        "ch_genre": ch_genre, "ch_genre_songs": ch_genre_n,
        "ch_artist": ch_artist, "ch_artist_songs": ch_artist_n,
        "pairs_in": int(data.pairs_in.shape[0]), "pairs_out": int(data.pairs_out.shape[0]),
        "songs_present": int(np.count_nonzero(present_mask)), "songs_total": data.n_songs,
    }
    metrics = {key: _clean(metrics[key]) for key in METRIC_KEYS}

    gains_in, gains_out = _gains(ranks_in, k), _gains(ranks_out, k)
    hits_in = _hits(ranks_in, k).astype(np.float64)
    hits_out = _hits(ranks_out, k).astype(np.float64)
    se = {"ndcg_in_se": standard_error(gains_in, n_in),
          "ndcg_out_se": standard_error(gains_out, n_out),
          "hitrate_in_se": standard_error(hits_in, n_in),
          "hitrate_out_se": standard_error(hits_out, n_out)}
    se["ndcg_se"] = _se_of_mean((ndcg_in, se["ndcg_in_se"]), (ndcg_out, se["ndcg_out_se"]))
    se["hitrate_se"] = _se_of_mean((hr_in, se["hitrate_in_se"]), (hr_out, se["hitrate_out_se"]))
    sampling: dict[str, float | int | None] = {
        "pairs_in_sampled": int(pairs_in.shape[0]), "pairs_out_sampled": int(pairs_out.shape[0]),
        "query_songs_sampled": int(np.unique(np.concatenate([pairs_in[:, 0],
                                                             pairs_out[:, 0]])).size),
        **se,
    }
    sampling = {key: _clean(sampling[key]) for key in SAMPLING_KEYS}

    buckets = _popularity_buckets(
        data, edges, (pairs_in, pairs_out), (n_in, n_out),
        (np.concatenate([hits_in, hits_out]), np.concatenate([gains_in, gains_out])))
    t_end = time.perf_counter()
    timings = {"knn": t_metrics - t_knn, "metrics": t_end - t_metrics,
               "total": t_end - t_start}
    return EvaluationResult(metrics=metrics, buckets=buckets, timings=timings, sampling=sampling,
                            hardneg_per_song=(hardneg_songs, hardneg_neighbours))


def _popularity_buckets(data: EvaluationData, edges: np.ndarray,
                        sampled: tuple[np.ndarray, np.ndarray], populations: tuple[int, int],
                        values: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """``buckets`` of :class:`EvaluationResult`: per bucket of the target and of the query song
    (equal-song buckets) and per equal-pair bucket of the target song, the split's pair count
    and the (sampled) HitRate/NDCG with their standard errors.

    ``sampled`` = the evaluated in-set and out-of-set pairs, ``populations`` = the number of pairs
    of each side, ``values`` = ``(hits, gains)`` of the evaluated pairs (in-set then out-of-set).
    """
    n_buckets = edges.size - 1
    counts = data.train_counts
    pairs = np.concatenate(sampled)
    strata = np.repeat(np.arange(2, dtype=np.int64), [sampled[0].shape[0], sampled[1].shape[0]])
    population = np.asarray(populations, dtype=np.int64)
    every_target = np.concatenate([data.pairs_in[:, 1], data.pairs_out[:, 1]])
    # The second bucketing of the targets: about a tenth of the split's pairs (all of them, not the
    # sample) per bucket. Without pairs there is nothing to split: the songs' edges stand in.
    pair_edges = equal_pair_edges(counts, every_target, n_buckets) if every_target.size else edges
    out: dict[str, Any] = {"edges": edges.tolist()}
    for side, column, side_edges in (("by_target", 1, edges), ("by_query", 0, edges),
                                     ("by_target_equal_pairs", 1, pair_edges)):
        every = np.concatenate([data.pairs_in[:, column], data.pairs_out[:, column]])
        ids = assign_buckets(counts[pairs[:, column]], side_edges)
        entry: dict[str, Any] = {
            "pairs": [int(v) for v in np.bincount(assign_buckets(counts[every], side_edges),
                                                  minlength=n_buckets)]}
        for name, metric_values in zip(("hitrate", "ndcg"), values, strict=True):
            means, ses = stratified_bucket_means(metric_values, ids, n_buckets, strata, population)
            entry[name] = [_clean(v) for v in means]
            entry[f"{name}_se"] = [_clean(v) for v in ses]
        entry["pairs_sampled"] = [int(v) for v in np.bincount(ids, minlength=n_buckets)]
        out[side] = {key: entry[key] for key in _BUCKET_KEYS}
        if side == "by_target_equal_pairs":
            out[side]["edges"] = side_edges.tolist()
    return out


#: The keys of each breakdown of :attr:`EvaluationResult.buckets`, in order.
_BUCKET_KEYS = ("pairs", "hitrate", "ndcg", "pairs_sampled", "hitrate_se", "ndcg_se")


def _se_of_mean(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Standard error of :func:`_mean_available` of two independent ``(estimate, SE)`` pairs: a side
    whose estimate is nan (no pairs) is left out, as in the mean; nan if a kept side has no SE."""
    ses = [se for value, se in (a, b) if not math.isnan(value)]
    if not ses:
        return float("nan")
    return math.sqrt(sum(se * se for se in ses)) / len(ses)


def _resolve_edges(data: EvaluationData, settings: EvaluationSettings) -> np.ndarray:
    if data.bucket_edges is None:
        if data.n_songs == 0:
            raise ValueError("data has no songs (n_songs == 0)")
        return _bucket_edges(data.train_counts, settings.n_buckets)
    if data.bucket_edges.size - 1 != settings.n_buckets:
        raise ValueError(
            f"data.bucket_edges defines {data.bucket_edges.size - 1} buckets but "
            f"settings.n_buckets is {settings.n_buckets}; make them agree")
    return data.bucket_edges


def _mean_available(a: float, b: float) -> float:
    """Mean of the non-nan values of ``a`` and ``b`` (nan when both are nan)."""
    values = [v for v in (a, b) if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def _clean(value: Any) -> Any:
    """Python scalars with nan/inf -> None, recursively through dicts and lists."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
