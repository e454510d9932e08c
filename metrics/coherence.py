"""Local genre / artist coherence@k (paper section 2.3) and the seeded song sample it uses.

Coherence of a song is the fraction of its ``k`` nearest neighbours that share its label
(genre or artist); the metric is the mean over a seeded sample of labelled songs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from metrics import _validation as _v
from metrics.knn import KnnTable

__all__ = ["local_coherence", "sample_songs"]


def sample_songs(eligible_mask: npt.ArrayLike, max_songs: int,
                 seed: int | np.random.Generator) -> np.ndarray:
    """Seeded uniform sample, without replacement, of at most ``max_songs`` eligible songs.

    Parameters
    ----------
    eligible_mask : array_like of bool, shape (n_songs,)
        Songs that may be drawn.
    max_songs : int
        Sample size cap, ``>= 0``. When at most ``max_songs`` songs are eligible, all of
        them are returned and the generator is not used.
    seed : int or numpy.random.Generator
        Non-negative seed for ``numpy.random.default_rng``, or a generator (advanced).

    Returns
    -------
    np.ndarray
        Sorted int64 song ids, ``min(max_songs, eligible_mask.sum())`` of them. Same
        mask, cap and seed give the same sample.
    """
    mask = np.asarray(eligible_mask)
    if mask.ndim != 1:
        raise ValueError(f"eligible_mask must be 1-D, got shape {mask.shape}")
    mask = _v.as_mask(mask, mask.shape[0], "eligible_mask")
    max_songs = _v.check_int(max_songs, "max_songs", minimum=0)
    rng = _v.as_generator(seed)
    eligible = np.flatnonzero(mask).astype(np.int64)
    if eligible.size <= max_songs:
        return eligible
    return np.sort(rng.choice(eligible, size=max_songs, replace=False))


def local_coherence(table: KnnTable, labels: npt.ArrayLike, songs: npt.ArrayLike,
                    k: int) -> tuple[float | None, int]:
    """Mean fraction of the top-``k`` neighbours that share the song's label.

    Parameters
    ----------
    table : KnnTable
        Neighbour table with ``table.k >= k``; it must contain every song of ``songs``
        as a query (``ValueError`` otherwise).
    labels : array_like of int, shape (table.n_songs,)
        Label of every song, ``-1`` when unknown. A neighbour with an unknown label never
        matches.
    songs : array_like of int, shape (n,)
        Songs to average over, typically :func:`sample_songs` of the labelled present
        songs. Duplicates are counted once.
    k : int
        Cut-off, ``1 <= k <= table.k``.

    Returns
    -------
    value : float or None
        Mean over the eligible songs of ``|{j in top-k(s): label(j) == label(s)}| / k``, in
        ``[0, 1]``; the denominator is ``k`` even for rows padded with ``-1``. ``None``
        when no song is eligible.
    support : int
        Number of eligible songs: songs of ``songs`` with a known label (``>= 0``) that
        are present in the embedding.
    """
    if not isinstance(table, KnnTable):
        raise ValueError(f"table must be a KnnTable, got {type(table).__name__}")
    k = _v.check_int(k, "k", minimum=1, maximum=table.k)
    labels = _v.as_labels(labels, table.n_songs, "labels")
    unique = np.unique(_v.as_song_ids(songs, table.n_songs, "songs"))
    present, rows = _v.present_query_rows(table, unique, "of songs")
    keep = labels[present] >= 0
    present, rows = present[keep], rows[keep]
    if present.size == 0:
        return None, 0

    fractions = np.empty(present.size, dtype=np.float64)
    own = labels[present]
    for chunk in _v.row_chunks(present.size, k):
        neighbours = table.neighbours[rows[chunk], :k]
        # -1 pads would index the last song; mask them to the unknown label instead.
        neighbour_labels = np.where(neighbours >= 0, labels[neighbours], -1)
        same = neighbour_labels == own[chunk, None]
        fractions[chunk] = np.count_nonzero(same, axis=1) / k
    return float(fractions.mean()), int(present.size)
