"""HardNeg@K: how many of a song's nearest neighbours are its hard negatives.

Hard negatives (SPEC section 4, paper section 2.2) are song pairs that co-occur in the
training sequences without being significantly associated: an embedding that places them
close is "fooled" by co-occurrence. Lower is better.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from metrics import _validation as _v
from metrics.knn import KnnTable

__all__ = ["hardneg_at_k"]


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
    if not isinstance(table, KnnTable):
        raise ValueError(f"table must be a KnnTable, got {type(table).__name__}")
    k = _v.check_int(k, "k", minimum=1, maximum=table.k)
    n_songs = table.n_songs
    pairs = _v.as_pairs(hard_negative_pairs, n_songs, "hard_negative_pairs")
    if songs is not None:
        songs = _v.as_song_ids(songs, n_songs, "songs")
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    if pairs.shape[0] == 0:
        return None, 0

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
        return None, 0

    fractions = np.empty(songs.size, dtype=np.float64)
    for chunk in _v.row_chunks(songs.size, k):
        neighbours = table.neighbours[rows[chunk], :k]
        wanted = songs[chunk, None] * n_songs + neighbours
        pos = np.minimum(np.searchsorted(codes, wanted), codes.size - 1)
        is_hardneg = (neighbours >= 0) & (codes[pos] == wanted)
        fractions[chunk] = np.count_nonzero(is_hardneg, axis=1) / k
    return float(fractions.mean()), int(songs.size)
