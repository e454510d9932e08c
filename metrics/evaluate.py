"""One-call evaluation of an embedding: every metric of SPEC section 4 from one kNN table.

:func:`evaluate` gathers every song some metric needs a neighbour list for (the queries
of the in-set and out-of-set pairs, the songs that have hard negatives, the coherence
samples), runs a single exact kNN search for them with ``k = max(k, coherence_k)``, and
derives all metrics from that table. Only the Calinski-Harabasz proxies read the
embeddings directly.
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
from metrics.next_song import hit_rate, ndcg, next_song_ranks
from metrics.popularity import assign_buckets, bucketed_ranking_metrics
from metrics.popularity import bucket_edges as _bucket_edges

__all__ = ["EvaluationData", "EvaluationResult", "EvaluationSettings", "evaluate",
           "METRIC_KEYS"]

#: The flat metric names of :attr:`EvaluationResult.metrics`, in a stable order.
METRIC_KEYS: tuple[str, ...] = (
    "ndcg_in", "ndcg_out", "ndcg", "hitrate_in", "hitrate_out", "hitrate",
    "hardneg", "hardneg_support",
    "coherence_genre", "coherence_genre_support",
    "coherence_artist", "coherence_artist_support",
    "ch_genre", "ch_genre_songs", "ch_artist", "ch_artist_songs",
    "pairs_in", "pairs_out", "songs_present", "songs_total",
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
        Max songs averaged per coherence metric (seeded sample, default 20,000).
    ch_sample : int
        Max songs per Calinski-Harabasz score (seeded sample, default 50,000).
    seed : int
        Seed of every sample (each sampled metric uses this same seed).
    n_buckets : int
        Popularity buckets when the data carries no edges (default 10).
    """

    k: int = 100
    coherence_k: int | None = None
    coherence_sample: int = 20_000
    ch_sample: int = 50_000
    seed: int = 0
    n_buckets: int = 10

    def __post_init__(self) -> None:
        _v.check_int(self.k, "k", minimum=1)
        if self.coherence_k is not None:
            _v.check_int(self.coherence_k, "coherence_k", minimum=1)
        _v.check_int(self.coherence_sample, "coherence_sample", minimum=0)
        _v.check_int(self.ch_sample, "ch_sample", minimum=0)
        _v.check_int(self.seed, "seed", minimum=0)
        _v.check_int(self.n_buckets, "n_buckets", minimum=1)

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
        ``{"edges": [...], "by_target": {...}, "by_query": {...}}``; each breakdown maps
        ``"pairs"``, ``"hitrate"``, ``"ndcg"`` to one list entry per bucket, over all
        pairs (in-set then out-of-set), with ``None`` for empty buckets.
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
    hardneg_per_song: tuple[np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable copy (strict JSON: no nan/inf)."""
        return {"metrics": {key: _clean(value) for key, value in self.metrics.items()},
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
    queries = np.unique(np.concatenate([
        data.pairs_in[:, 0], data.pairs_out[:, 0], data.hard_negative_pairs.ravel(),
        genre_songs, artist_songs]))

    if on_stage is not None:
        on_stage("knn")
    t_knn = time.perf_counter()
    # Looked up on the module at call time, so the single search is observable in tests.
    table = _knn.knn_table(emb, queries, k=max(k, coherence_k), present=present_mask)
    t_metrics = time.perf_counter()
    if on_stage is not None:
        on_stage("metrics")

    ranks_in = next_song_ranks(table, data.pairs_in)
    ranks_out = next_song_ranks(table, data.pairs_out)
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

    all_pairs = np.concatenate([data.pairs_in, data.pairs_out])
    all_ranks = np.concatenate([ranks_in, ranks_out])
    n_buckets = edges.size - 1
    counts = data.train_counts
    buckets = {
        "edges": edges.tolist(),
        "by_target": _bucket_lists(bucketed_ranking_metrics(
            all_ranks, assign_buckets(counts[all_pairs[:, 1]], edges), n_buckets, k)),
        "by_query": _bucket_lists(bucketed_ranking_metrics(
            all_ranks, assign_buckets(counts[all_pairs[:, 0]], edges), n_buckets, k)),
    }
    t_end = time.perf_counter()
    timings = {"knn": t_metrics - t_knn, "metrics": t_end - t_metrics,
               "total": t_end - t_start}
    return EvaluationResult(metrics=metrics, buckets=buckets, timings=timings,
                            hardneg_per_song=(hardneg_songs, hardneg_neighbours))


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


def _bucket_lists(result: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    return {"pairs": [int(v) for v in result["pairs"]],
            "hitrate": [_clean(v) for v in result["hitrate"]],
            "ndcg": [_clean(v) for v in result["ndcg"]]}


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
