"""Exact cosine k-nearest-neighbour table: the one search every metric of a trial reads.

The table holds, for each queried song, its top-``k`` neighbours among the songs that
have a vector, by cosine similarity, with the song itself removed. It is computed once
per trial (see :func:`metrics.evaluate.evaluate`) and then every ranking, hard-negative
and coherence metric is a cheap vectorised lookup into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from metrics import _validation as _v
from metrics._search import flat_index, top_inner_products

__all__ = ["KnnTable", "knn_table"]


@dataclass(frozen=True, eq=False)
class KnnTable:
    """Top-``k`` cosine neighbours of a set of query songs.

    Attributes
    ----------
    queries : np.ndarray
        ``(n_q,)`` int64, sorted unique song ids the table was computed for.
    neighbours : np.ndarray
        ``(n_q, k)`` int64 song ids, best first. ``-1`` pads a row when fewer than ``k``
        candidates exist, and fills the whole row when the query song is absent (no
        vector, or an all-zero vector). A song never appears in its own row.
    scores : np.ndarray
        ``(n_q, k)`` float32 cosine similarities matching ``neighbours``; ``nan`` where
        the neighbour is ``-1``.
    k : int
        Number of neighbour columns.
    n_songs : int
        Size of the song-id space (ids are ``0 .. n_songs - 1``).
    query_present : np.ndarray or None
        ``(n_q,)`` bool, whether each query song has a vector. When ``None`` it is
        inferred as "the row has at least one neighbour", which differs only in the
        degenerate case of a present song with no other present song.

    Notes
    -----
    Arrays are made read-only: a table is shared by every metric of a trial. Equality is
    identity (arrays have no useful ``==``).
    """

    queries: np.ndarray
    neighbours: np.ndarray
    scores: np.ndarray
    k: int
    n_songs: int
    query_present: np.ndarray | None = None
    _row_of: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        k = _v.check_int(self.k, "k", minimum=1)
        n_songs = _v.check_int(self.n_songs, "n_songs", minimum=0)
        queries = _v.as_song_ids(self.queries, n_songs, "queries")
        if queries.size > 1 and not (np.diff(queries) > 0).all():
            raise ValueError("queries must be sorted and unique")
        n_q = queries.size
        neighbours = np.asarray(self.neighbours)
        if neighbours.shape != (n_q, k) or not np.issubdtype(neighbours.dtype, np.integer):
            raise ValueError(
                f"neighbours must be an integer array of shape ({n_q}, {k}), got "
                f"{neighbours.dtype} {neighbours.shape}")
        neighbours = neighbours.astype(np.int64, copy=False)
        if neighbours.size and (neighbours.min() < -1 or neighbours.max() >= n_songs):
            raise ValueError(f"neighbours must be song ids in [0, {n_songs}) or -1")
        scores = np.asarray(self.scores, dtype=np.float32)
        if scores.shape != (n_q, k):
            raise ValueError(f"scores must have shape ({n_q}, {k}), got {scores.shape}")
        if self.query_present is None:
            query_present = neighbours[:, 0] >= 0
        else:
            query_present = _v.as_mask(self.query_present, n_q, "query_present")
        row_of = np.full(n_songs, -1, dtype=np.int64)
        row_of[queries] = np.arange(n_q, dtype=np.int64)
        for name, value in (("queries", queries), ("neighbours", neighbours),
                            ("scores", scores), ("query_present", query_present),
                            ("_row_of", row_of)):
            # A read-only view freezes the table without copying (or freezing) the
            # caller's array.
            view = value.view()
            view.setflags(write=False)
            object.__setattr__(self, name, view)
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "n_songs", n_songs)

    def rows(self, song_ids: npt.ArrayLike) -> np.ndarray:
        """Row index into the table of each song id.

        Parameters
        ----------
        song_ids : array_like of int
            Song ids in ``[0, n_songs)``, any shape.

        Returns
        -------
        np.ndarray
            int64 array of the same shape: the row of each song, or ``-1`` when the song
            was not queried.
        """
        ids = np.asarray(song_ids)
        if ids.size == 0:
            return np.zeros(ids.shape, dtype=np.int64)
        if ids.dtype == np.bool_ or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"song_ids must contain integers, got dtype {ids.dtype}")
        if ids.min() < 0 or ids.max() >= self.n_songs:
            raise ValueError(f"song_ids must be in [0, {self.n_songs}), got values in "
                             f"[{ids.min()}, {ids.max()}]")
        rows: np.ndarray = self._row_of[ids]
        return rows


def knn_table(embeddings: npt.ArrayLike, queries: npt.ArrayLike, k: int = 100, *,
              present: npt.ArrayLike | None = None, batch_size: int = 8192) -> KnnTable:
    """Exact top-``k`` cosine neighbours of ``queries`` among the present songs.

    Vectors are L2-normalised (in float64, then cast to float32) and searched exhaustively
    with a faiss ``IndexFlatIP``, so inner product equals cosine similarity. Each query asks
    for ``k + 1`` neighbours and the query song is then removed wherever it appears (with
    duplicate vectors it need not come first, or at all), leaving ``k``.

    Parameters
    ----------
    embeddings : array_like, shape (n_songs, d)
        Real-valued song vectors; row ``i`` is song ``i``. Must be finite.
    queries : array_like of int, shape (n,)
        Song ids to compute neighbours for; duplicates and order are ignored (the table
        stores them sorted and unique).
    k : int, default 100
        Number of neighbours per query, ``>= 1``.
    present : array_like of bool, shape (n_songs,), optional
        Songs that have a vector. Absent songs (and all-zero rows, which have no direction)
        are never returned as neighbours, and an absent query gets a row of ``-1``.
        Default: every non-zero row is present.
    batch_size : int, default 8192
        Queries per faiss search call; bounds the temporary memory to about
        ``batch_size * (k + 17) * 40`` bytes on top of faiss's own blocks, plus
        ``256 * (k + 17) * dim * 8`` bytes for the float64 re-scoring.

    Returns
    -------
    KnnTable
        With ``k`` columns; rows padded with ``-1`` (score ``nan``) when fewer than ``k``
        other present songs exist.

    Notes
    -----
    Ties (equal cosine) go to the lower song id. The table does not depend on the number
    of threads (faiss's global setting, ``faiss.omp_set_num_threads``, not changed here):
    faiss's candidates are re-scored in float64 (see :mod:`metrics._search`).
    """
    emb = _v.as_embeddings(embeddings)
    n_songs = emb.shape[0]
    k = _v.check_int(k, "k", minimum=1)
    batch_size = _v.check_int(batch_size, "batch_size", minimum=1)
    query_ids = np.unique(_v.as_song_ids(queries, n_songs, "queries"))
    present_mask = _v.effective_present(emb, present)

    n_q = query_ids.size
    neighbours = np.full((n_q, k), -1, dtype=np.int64)
    scores = np.full((n_q, k), np.nan, dtype=np.float32)
    query_present = present_mask[query_ids]

    candidates = np.flatnonzero(present_mask)
    searched = np.flatnonzero(query_present)
    if candidates.size and searched.size:
        vectors = _v.normalised_float32(emb, candidates)
        index = flat_index(vectors)
        # Query vectors are rows of the indexed matrix, so each present query's own
        # similarity is computed exactly as in the index.
        position = np.searchsorted(candidates, query_ids[searched])
        n_search = min(k + 1, candidates.size)
        n_keep = min(k, n_search)
        for start in range(0, searched.size, batch_size):
            rows = searched[start:start + batch_size]
            sims, idx = top_inner_products(index, vectors, vectors[position[start:start + batch_size]], n_search)
            # Positions index ``candidates``, which is sorted: ties go to the lower song id.
            ids, sims = _drop_self(np.where(idx >= 0, candidates[idx], -1), sims, query_ids[rows], n_keep)
            neighbours[rows, :n_keep] = ids
            scores[rows, :n_keep] = sims
    return KnnTable(queries=query_ids, neighbours=neighbours, scores=scores, k=k,
                    n_songs=n_songs, query_present=query_present)


def _drop_self(ids: np.ndarray, sims: np.ndarray, query: np.ndarray,
               n_keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query from its own result row and keep the first ``n_keep`` others.

    ``ids``/``sims`` are ``(b, n_search)``; a stable sort on "is self" moves the self hit
    (at most one per row) to the end without disturbing the order of the others. Rows
    that had no self hit simply lose their last entry; rows that did have one and had no
    spare candidate get ``-1``/``nan`` in the freed slot.
    """
    is_self = ids == query[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :n_keep]
    ids = np.take_along_axis(ids, order, axis=1)
    sims = np.take_along_axis(sims, order, axis=1)
    dropped = np.take_along_axis(is_self, order, axis=1)
    ids[dropped] = -1
    sims[dropped] = np.nan
    return ids, sims
