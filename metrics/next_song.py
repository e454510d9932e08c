"""Next-song prediction metrics: rank of the true next song, HitRate@K and NDCG@K.

The recommender for a query song is its cosine neighbour list (a :class:`KnnTable` row);
a pair ``(query, target)`` is a hit at ``K`` when ``target`` is among the first ``K``
neighbours. With exactly one relevant item, the ideal DCG is 1, so NDCG@K of a pair is
``1 / log2(rank + 1)`` for ranks ``<= K`` and 0 otherwise.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from metrics import _validation as _v
from metrics.knn import KnnTable

__all__ = ["hit_rate", "ndcg", "next_song_ranks"]


def next_song_ranks(table: KnnTable, pairs: npt.ArrayLike) -> np.ndarray:
    """1-based rank of each pair's target in its query's neighbour list.

    Parameters
    ----------
    table : KnnTable
        Neighbour table; it should contain every query song of ``pairs``.
    pairs : array_like of int, shape (n, 2)
        ``(query, target)`` song ids in ``[0, table.n_songs)``.

    Returns
    -------
    np.ndarray
        ``(n,)`` int64 ranks in ``1 .. table.k``, or ``0`` when the target is not among the
        ``table.k`` neighbours. Also ``0`` when the query or the target is absent from
        the embedding, when the query was not queried in ``table``, and when
        ``query == target`` (a song is never its own neighbour). Absent songs thus count as
        misses, so a model cannot improve its score by dropping hard songs.
    """
    if not isinstance(table, KnnTable):
        raise ValueError(f"table must be a KnnTable, got {type(table).__name__}")
    pairs = _v.as_pairs(pairs, table.n_songs, "pairs")
    ranks = np.zeros(pairs.shape[0], dtype=np.int64)
    rows = table.rows(pairs[:, 0])
    known = np.flatnonzero(rows >= 0)
    for chunk in _v.row_chunks(known.size, table.k):
        sel = known[chunk]
        # Neighbour ids in a row are distinct, so there is at most one hit per pair.
        hits = table.neighbours[rows[sel]] == pairs[sel, 1][:, None]
        found = hits.any(axis=1)
        ranks[sel] = np.where(found, hits.argmax(axis=1) + 1, 0)
    return ranks


def hit_rate(ranks: npt.ArrayLike, k: int) -> float:
    """HitRate@k: fraction of pairs whose target is ranked in ``1 .. k``.

    Parameters
    ----------
    ranks : array_like of int, shape (n,)
        Ranks from :func:`next_song_ranks` (0 = not found).
    k : int
        Cut-off, ``>= 1``. It must not exceed the ``k`` of the table the ranks come from
        (targets beyond the table are reported as 0 and would count as misses).

    Returns
    -------
    float
        In ``[0, 1]``; ``nan`` when ``ranks`` is empty (undefined, never 0).
    """
    ranks = _v.as_ranks(ranks)
    k = _v.check_int(k, "k", minimum=1)
    if ranks.size == 0:
        return float("nan")
    return float(np.count_nonzero(_hits(ranks, k)) / ranks.size)


def ndcg(ranks: npt.ArrayLike, k: int) -> float:
    """NDCG@k with one relevant item: mean of ``1 / log2(rank + 1)`` over hits, 0 otherwise.

    Parameters
    ----------
    ranks : array_like of int, shape (n,)
        Ranks from :func:`next_song_ranks` (0 = not found).
    k : int
        Cut-off, ``>= 1``; same caveat as :func:`hit_rate`.

    Returns
    -------
    float
        In ``[0, 1]`` and never above :func:`hit_rate` of the same ranks; ``nan`` when
        ``ranks`` is empty.
    """
    ranks = _v.as_ranks(ranks)
    k = _v.check_int(k, "k", minimum=1)
    if ranks.size == 0:
        return float("nan")
    return float(_gains(ranks, k).sum() / ranks.size)


def _hits(ranks: np.ndarray, k: int) -> np.ndarray:
    return (ranks >= 1) & (ranks <= k)


def _gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-pair discounted gain ``1 / log2(rank + 1)``, 0 for misses (float64)."""
    hit = _hits(ranks, k)
    gains = np.zeros(ranks.shape, dtype=np.float64)
    gains[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return gains
