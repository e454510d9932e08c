"""Playlist continuation, the downstream task of the RecSys Challenge 2018.

Each held-out sequence is cut after its first ``seed_size`` songs; the vocabulary is ranked by cosine
similarity to the centroid of the seed, and the rest of the sequence is scored with the challenge's
R-precision and NDCG@k. This is a report-only metric: it is never an optimisation objective.

Rules (stated once, applied everywhere):

* Seed = the first ``seed_size`` tokens of the sequence. Tokens ``-1`` (out of the vocabulary) and
  songs without a usable vector (absent, or an all-zero row) are dropped from the seed; a sequence
  whose usable seed is empty is skipped (counted in ``skipped_empty_seed``).
* Targets = the distinct songs after the first ``seed_size`` tokens that are not seed songs. Tokens
  ``-1`` are not targets (no vocabulary model can recommend them, and distinct unknown songs cannot
  be told apart). Targets without a vector still count in R (they are misses). A sequence without
  targets is skipped (counted in ``skipped_no_targets``).
* Ranking = songs with a usable vector, seed songs excluded, by decreasing inner product of their
  L2-normalised vectors with the mean of the L2-normalised seed vectors (equal to cosine order).
  Exact search (faiss, re-scored in float64: the same ranking whatever the number of threads); ties go
  to the lower song id.
* R-precision = |targets in the top R| / R, with R = number of targets.
* NDCG@k = DCG / IDCG with binary relevance: DCG = sum over ranks i <= k holding a target of
  1 / log2(i + 1); IDCG = sum over i = 1 .. min(R, k) of 1 / log2(i + 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from metrics._search import flat_index, top_inner_products
from metrics._validation import (
    as_csr,
    as_embeddings,
    check_int,
    effective_present,
    normalised_float32,
)

__all__ = ["playlist_continuation"]


def playlist_continuation(
    embeddings: npt.ArrayLike,
    tokens: npt.ArrayLike,
    offsets: npt.ArrayLike,
    *,
    present: npt.ArrayLike | None = None,
    seed_size: int = 5,
    k: int = 100,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """R-precision and NDCG@k of seed-centroid playlist continuation (see the module rules).

    Parameters
    ----------
    embeddings
        ``(n_songs, d)`` real matrix; row ``i`` is song ``i``.
    tokens, offsets
        Held-out sequences in CSR form: sequence ``j`` is ``tokens[offsets[j]:offsets[j + 1]]``; tokens
        are song ids in ``[0, n_songs)`` or ``-1`` (outside the vocabulary). ``offsets`` is
        non-decreasing, starts at 0 and ends at ``len(tokens)``.
    present
        ``(n_songs,)`` bool, songs that have a vector; ``None`` means every non-zero row.
    seed_size
        Number of leading tokens given as the seed (>= 1).
    k
        Cut-off of NDCG (>= 1).
    batch_size
        Sequences per faiss search call (bounds the temporary ``(batch, depth)`` arrays).

    Returns
    -------
    dict
        ``rprecision`` and ``ndcg`` (means over the scored sequences, ``None`` when none was scored),
        ``playlists`` (sequences scored), ``skipped_empty_seed``, ``skipped_no_targets``.
    """
    emb = as_embeddings(embeddings)
    n_songs = emb.shape[0]
    seed_size = check_int(seed_size, "seed_size", minimum=1)
    k = check_int(k, "k", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    tok, off = as_csr(tokens, offsets, n_songs, oov=True)
    usable = effective_present(emb, present)

    rows = np.flatnonzero(usable)
    # Index position of every song (-1 when it has no vector), to map faiss answers back to song ids.
    index_of = np.full(n_songs, -1, dtype=np.int64)
    index_of[rows] = np.arange(rows.size)
    vectors = normalised_float32(emb, rows)

    queries: list[np.ndarray] = []  # usable seed songs
    excluded: list[np.ndarray] = []  # every in-vocabulary seed song (removed from the ranking)
    targets: list[np.ndarray] = []
    skipped_seed = skipped_targets = 0
    for j in range(len(off) - 1):
        sequence = tok[off[j]:off[j + 1]]
        seed = np.unique(sequence[:seed_size])
        seed = seed[seed >= 0]
        rest = np.unique(sequence[seed_size:])
        rest = rest[rest >= 0]
        rest = rest[~np.isin(rest, seed)]
        query = seed[usable[seed]]
        if query.size == 0:
            skipped_seed += 1
            continue
        if rest.size == 0:
            skipped_targets += 1
            continue
        queries.append(query)
        excluded.append(seed)
        targets.append(rest)

    rprecision = np.zeros(len(queries))
    ndcg = np.zeros(len(queries))
    if queries:
        index = flat_index(vectors)
        discounts = 1.0 / np.log2(np.arange(2, max(k, max(t.size for t in targets)) + 2))
        ideal = np.cumsum(discounts)
        for start in range(0, len(queries), batch_size):
            stop = min(start + batch_size, len(queries))
            centroids = np.stack([_centroid(vectors, index_of[q]) for q in queries[start:stop]])
            # Deep enough that, after removing the seed songs, the top max(k, R) songs remain.
            depth = max(k, max(t.size for t in targets[start:stop])) + max(e.size for e in excluded[start:stop])
            depth = min(depth, rows.size)
            _, found = top_inner_products(index, vectors, centroids, depth)
            for i, j in enumerate(range(start, stop)):
                ranked = rows[found[i][found[i] >= 0]]
                ranked = ranked[~np.isin(ranked, excluded[j])]
                hits = np.isin(ranked, targets[j])
                r = targets[j].size
                rprecision[j] = hits[:r].sum() / r
                top = hits[:k]
                ndcg[j] = discounts[: top.size][top].sum() / ideal[min(r, k) - 1]
    scored = len(queries)
    return {
        "rprecision": float(rprecision.mean()) if scored else None,
        "ndcg": float(ndcg.mean()) if scored else None,
        "playlists": scored,
        "skipped_empty_seed": skipped_seed,
        "skipped_no_targets": skipped_targets,
    }


def _centroid(vectors: np.ndarray, positions: np.ndarray) -> np.ndarray:
    # Mean of unit vectors; normalised so the query is a unit vector too (the order is the same). Opposite
    # seed vectors can cancel out exactly: the zero query then ranks every song at similarity 0.
    mean = vectors[positions].astype(np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    query: np.ndarray = (mean / norm if norm > 0 else mean).astype(np.float32)
    return query
