"""Popularity buckets: next-song metrics broken down by how often songs were played.

Songs are split into equal-population buckets by their training play count (bucket 0 =
least played), and HitRate/NDCG are reported per bucket of the target song and per bucket
of the query song, which shows whether an embedding only works for popular songs.

Equal-song deciles put most of the evaluation pairs in the top decile (popular songs are the
targets of most pairs). :func:`equal_pair_edges` gives the second bucketing: edges at the
quantiles of the target's play count over the pairs, so each bucket holds about as many pairs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from metrics import _validation as _v
from metrics.next_song import _gains, _hits

__all__ = ["assign_buckets", "bucket_edges", "bucketed_ranking_metrics", "equal_pair_edges"]


def _as_counts(values: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.float64)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be numeric play counts, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all() or arr.min() < 0:
        raise ValueError(f"{name} must be finite and >= 0")
    return arr


def bucket_edges(train_counts: npt.ArrayLike, n_buckets: int = 10) -> np.ndarray:
    """Edges of ``n_buckets`` equal-population buckets of songs by training play count.

    Parameters
    ----------
    train_counts : array_like, shape (n_songs,)
        Training play count of every song (non-negative, finite; usually int).
        Must not be empty.
    n_buckets : int, default 10
        Number of buckets, ``>= 1``.

    Returns
    -------
    np.ndarray
        ``(n_buckets + 1,)`` float64, non-decreasing: the ``0, 1/B, ..., 1`` quantiles
        (linear interpolation) of the counts, so ``edges[0]`` is the minimum and
        ``edges[-1]`` the maximum count.

    Notes
    -----
    Songs with equal counts cannot be split, so with ties (typically many songs played
    once or twice) edges repeat and buckets are unequal; some buckets may be empty.
    With distinct counts, bucket sizes differ by at most one song.
    See :func:`assign_buckets` for how a count equal to an edge is assigned.
    """
    counts = _as_counts(train_counts, "train_counts")
    n_buckets = _v.check_int(n_buckets, "n_buckets", minimum=1)
    if counts.size == 0:
        raise ValueError("train_counts must not be empty")
    edges = np.quantile(counts, np.linspace(0.0, 1.0, n_buckets + 1))
    # Interpolation can produce 1-ulp inversions between equal quantiles.
    return np.maximum.accumulate(edges)


def equal_pair_edges(train_counts: npt.ArrayLike, targets: npt.ArrayLike, n_buckets: int = 10) -> np.ndarray:
    """Edges of ``n_buckets`` buckets holding about equal numbers of *pairs* by target popularity.

    Parameters
    ----------
    train_counts : array_like, shape (n_songs,)
        Training play count of every song (non-negative, finite).
    targets : array_like of int, shape (n_pairs,)
        Target song of every evaluation pair of the split (each pair counts once; a song is
        repeated as often as it is a target). Must not be empty.
    n_buckets : int, default 10
        Number of buckets, ``>= 1``.

    Returns
    -------
    np.ndarray
        ``(n_buckets + 1,)`` float64, non-decreasing: :func:`bucket_edges` of the per-pair
        target counts ``train_counts[targets]``. Assign with :func:`assign_buckets`; as there,
        ties at an edge (a popular song is the target of many pairs) go to the lowest bucket
        that can hold them, so buckets are only as equal as the ties allow.
    """
    counts = _as_counts(train_counts, "train_counts")
    ids = np.asarray(targets)
    if ids.ndim != 1 or (ids.size and (ids.dtype == np.bool_ or not np.issubdtype(ids.dtype, np.integer))):
        raise ValueError(f"targets must be 1-D song ids, got shape {ids.shape} and dtype {ids.dtype}")
    if ids.size == 0:
        raise ValueError("targets must not be empty")
    if ids.min() < 0 or ids.max() >= counts.size:
        raise ValueError(f"targets must be song ids in [0, {counts.size}), got values in [{ids.min()}, {ids.max()}]")
    return bucket_edges(counts[ids], n_buckets)


def assign_buckets(train_counts_of_songs: npt.ArrayLike, edges: npt.ArrayLike) -> np.ndarray:
    """Popularity bucket of each song from its training play count.

    Parameters
    ----------
    train_counts_of_songs : array_like, shape (n,)
        Play counts (non-negative, finite) of the songs to assign.
    edges : array_like, shape (n_buckets + 1,)
        Non-decreasing edges from :func:`bucket_edges`.

    Returns
    -------
    np.ndarray
        ``(n,)`` int64 in ``0 .. n_buckets - 1``, 0 = least popular. Bucket 0 is
        ``[edges[0], edges[1]]`` and bucket ``b > 0`` is ``(edges[b], edges[b + 1]]``, so
        a count equal to a (repeated) edge goes to the lowest bucket that can hold it and
        the least-played songs are always in bucket 0. Counts outside
        ``[edges[0], edges[-1]]`` go to the first / last bucket.
    """
    counts = _as_counts(train_counts_of_songs, "train_counts_of_songs")
    edges = _as_edges(edges)
    return np.searchsorted(edges[1:-1], counts, side="left").astype(np.int64)


def _as_edges(edges: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(edges, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"edges must be 1-D with at least 2 values, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (np.diff(arr) < 0).any():
        raise ValueError("edges must be finite and non-decreasing")
    return arr


def bucketed_ranking_metrics(ranks: npt.ArrayLike, bucket_ids: npt.ArrayLike,
                             n_buckets: int, k: int) -> dict[str, np.ndarray]:
    """Number of pairs, HitRate@k and NDCG@k per bucket.

    Parameters
    ----------
    ranks : array_like of int, shape (n,)
        Ranks from :func:`metrics.next_song.next_song_ranks` (0 = not found).
    bucket_ids : array_like of int, shape (n,)
        Bucket of each pair (of its target or of its query) in ``0 .. n_buckets - 1``.
    n_buckets : int
        Number of buckets, ``>= 1``.
    k : int
        Cut-off, ``>= 1``.

    Returns
    -------
    dict
        ``"pairs"``: ``(n_buckets,)`` int64 counts; ``"hitrate"``, ``"ndcg"``:
        ``(n_buckets,)`` float64, ``nan`` for empty buckets. Pair-weighted averages of the
        buckets equal :func:`metrics.next_song.hit_rate` / :func:`~metrics.next_song.ndcg`.
    """
    ranks = _v.as_ranks(ranks)
    n_buckets = _v.check_int(n_buckets, "n_buckets", minimum=1)
    k = _v.check_int(k, "k", minimum=1)
    bucket_ids = np.asarray(bucket_ids)
    if bucket_ids.size == 0:
        bucket_ids = np.zeros(bucket_ids.shape, dtype=np.int64)
    if bucket_ids.shape != ranks.shape:
        raise ValueError(f"bucket_ids must have shape {ranks.shape} like ranks, "
                         f"got {bucket_ids.shape}")
    if bucket_ids.dtype == np.bool_ or not np.issubdtype(bucket_ids.dtype, np.integer):
        raise ValueError(f"bucket_ids must contain integers, got dtype {bucket_ids.dtype}")
    if bucket_ids.size and (bucket_ids.min() < 0 or bucket_ids.max() >= n_buckets):
        raise ValueError(f"bucket_ids must be in [0, {n_buckets}), got values in "
                         f"[{bucket_ids.min()}, {bucket_ids.max()}]")

    pairs = np.bincount(bucket_ids, minlength=n_buckets).astype(np.int64)
    hits = np.bincount(bucket_ids, weights=_hits(ranks, k).astype(np.float64),
                       minlength=n_buckets)
    gains = np.bincount(bucket_ids, weights=_gains(ranks, k), minlength=n_buckets)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"pairs": pairs,
                "hitrate": np.where(pairs > 0, hits / pairs, np.nan),
                "ndcg": np.where(pairs > 0, gains / pairs, np.nan)}
