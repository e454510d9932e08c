"""HardNeg@K: how many of a song's nearest neighbours are its hard negatives.

Hard negatives (SPEC section 4, paper section 2.2) are song pairs that co-occur in the
training sequences without being significantly associated: an embedding that places them
close is "fooled" by co-occurrence. Lower is better.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from metrics import _validation as _v
from metrics.knn import KnnTable

__all__ = ["hardneg_at_k", "hardneg_counts", "hardneg_excess_bound"]


def hardneg_at_k(table: KnnTable, hard_negative_pairs: npt.ArrayLike, k: int, *,
                 songs: npt.ArrayLike | None = None) -> tuple[float | None, int]:
    """Mean fraction of the top-``k`` neighbours that are the song's own hard negatives.

    Parameters
    ----------
    table : KnnTable
        Neighbour table with ``table.k >= k``; it must contain every song averaged over
        (see ``songs``) as a query (``ValueError`` otherwise, since a missing row would
        silently bias the mean).
    hard_negative_pairs : array_like of int, shape (m, 2)
        Unordered pairs ``(a, b)``: ``b`` is a hard negative of ``a`` and vice versa.
        Duplicates and both orientations are allowed; self-pairs ``(a, a)`` are ignored
        (a song is never its own neighbour).
    k : int
        Cut-off, ``1 <= k <= table.k``.
    songs : array_like of int, shape (n,), optional
        Average only over these songs (those of them that have a hard negative), e.g. a
        sample or one popularity bucket. Default: every song of ``hard_negative_pairs``.

    Returns
    -------
    value : float or None
        Mean over the support songs of ``|top-k(s) ∩ hardneg(s)| / k``, in ``[0, 1]``. The
        denominator is always ``k`` (the paper's "proportion of the top-k"), also for a
        row padded with ``-1`` because fewer than ``k`` candidates exist. ``None`` when
        the support is empty (unavailable, never 0).
    support : int
        Number of songs averaged: songs (of ``songs`` when given) with at least one hard
        negative that are present in the embedding. Absent songs have no neighbours and
        are excluded.
    """
    support, counts = hardneg_counts(table, hard_negative_pairs, k, songs=songs)
    if support.size == 0:
        return None, 0
    return float(counts.mean() / k), int(support.size)


def hardneg_counts(table: KnnTable, hard_negative_pairs: npt.ArrayLike, k: int, *,
                   songs: npt.ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per support song, how many of its top-``k`` neighbours are its own hard negatives.

    Same arguments and support as :func:`hardneg_at_k` (whose value is ``counts.mean() / k``).

    Returns
    -------
    support : np.ndarray of int64, shape (n,)
        The support songs, ascending.
    counts : np.ndarray of int64, shape (n,)
        ``|top-k(s) ∩ hardneg(s)|`` of each support song, in ``[0, k]``.
    """
    if not isinstance(table, KnnTable):
        raise ValueError(f"table must be a KnnTable, got {type(table).__name__}")
    k = _v.check_int(k, "k", minimum=1, maximum=table.k)
    n_songs = table.n_songs
    pairs = _v.as_pairs(hard_negative_pairs, n_songs, "hard_negative_pairs")
    if songs is not None:
        songs = _v.as_song_ids(songs, n_songs, "songs")
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    empty = np.zeros(0, dtype=np.int64)
    if pairs.shape[0] == 0:
        return empty, empty

    a, b = pairs[:, 0], pairs[:, 1]
    # Directed codes song * n_songs + negative, both orientations; n_songs**2 fits int64
    # for any vocabulary below 3e9 songs.
    codes = np.unique(np.concatenate([a * n_songs + b, b * n_songs + a]))
    with_negatives = np.unique(pairs)
    if songs is None:
        songs = with_negatives
    else:
        songs = np.intersect1d(songs, with_negatives)
    songs, rows = _v.present_query_rows(table, songs, "to average over")
    if songs.size == 0:
        return empty, empty

    counts = np.empty(songs.size, dtype=np.int64)
    for chunk in _v.row_chunks(songs.size, k):
        neighbours = table.neighbours[rows[chunk], :k]
        wanted = songs[chunk, None] * n_songs + neighbours
        pos = np.minimum(np.searchsorted(codes, wanted), codes.size - 1)
        is_hardneg = (neighbours >= 0) & (codes[pos] == wanted)
        counts[chunk] = np.count_nonzero(is_hardneg, axis=1)
    return songs.astype(np.int64, copy=False), counts


def hardneg_excess_bound(songs: npt.ArrayLike, counts: npt.ArrayLike, reference_songs: npt.ArrayLike,
                         reference_counts: npt.ArrayLike, k: int, *, tolerance: float,
                         confidence: float = 0.95) -> tuple[float, float, int]:
    """One-sided paired test of "HardNeg@k exceeds (1 + tolerance) x the reference's", per song.

    Over the songs in both supports, ``d_s = (c_s - (1 + tolerance) r_s) / k`` with ``c`` the
    counts of :func:`hardneg_counts` and ``r`` the reference's. The excess is real when the lower
    bound of the one-sided ``confidence`` Student-t interval of the mean of ``d`` is above 0: an
    increase that the spread of the supporting songs explains is not counted against the embedding.

    The level is approximate: the test treats songs as independent, but a hard-negative pair links two
    songs (their ``d`` are positively correlated, so the interval is somewhat too narrow and real
    excesses are flagged a little more often than ``1 - confidence``), and the reference's counts come
    from one training seed and are taken as exact.

    Parameters
    ----------
    songs, counts : array_like of int, shape (n,)
        Support songs (unique) and their hard-negative neighbour counts, for the embedding tested.
    reference_songs, reference_counts : array_like of int, shape (m,)
        The same for the reference (the baseline).
    k : int
        The cut-off both were counted at.
    tolerance : float
        Allowed relative increase, ``>= 0``.
    confidence : float
        One-sided confidence level in (0, 1).

    Returns
    -------
    excess : float
        Mean of ``d`` (HardNeg@k minus the allowed level, over the shared songs). NaN when no song is shared.
    bound : float
        Its one-sided lower confidence bound; ``<= 0`` means no significant excess. With fewer than 2
        shared songs, or no spread in ``d``, it equals ``excess`` (nothing to test against). NaN when
        no song is shared.
    shared : int
        Number of songs in both supports.
    """
    from scipy.stats import ttest_1samp

    k = _v.check_int(k, "k", minimum=1)
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    songs, counts = _paired_arrays(songs, counts, "songs", "counts")
    reference_songs, reference_counts = _paired_arrays(reference_songs, reference_counts,
                                                       "reference_songs", "reference_counts")
    shared, mine, theirs = np.intersect1d(songs, reference_songs, assume_unique=True, return_indices=True)
    if shared.size == 0:
        return math.nan, math.nan, 0
    d = (counts[mine] - (1.0 + tolerance) * reference_counts[theirs]) / k
    excess = float(d.mean())
    if d.size < 2 or np.all(d == d[0]):
        return excess, excess, int(shared.size)
    test = ttest_1samp(d, 0.0, alternative="greater")
    return excess, float(test.confidence_interval(confidence).low), int(shared.size)


def _paired_arrays(songs: npt.ArrayLike, counts: npt.ArrayLike, songs_name: str,
                   counts_name: str) -> tuple[np.ndarray, np.ndarray]:
    songs = np.asarray(songs)
    counts = np.asarray(counts)
    if songs.ndim != 1 or counts.shape != songs.shape:
        raise ValueError(f"{songs_name} and {counts_name} must be 1-D of equal length, got shapes "
                         f"{songs.shape} and {counts.shape}")
    if songs.size and not (np.issubdtype(songs.dtype, np.integer) and np.issubdtype(counts.dtype, np.number)):
        raise ValueError(f"{songs_name} must be integer song ids and {counts_name} numbers")
    if np.unique(songs).size != songs.size:
        raise ValueError(f"{songs_name} must not repeat a song")
    return songs.astype(np.int64, copy=False), counts.astype(np.float64, copy=False)
