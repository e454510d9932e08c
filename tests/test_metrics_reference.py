"""Independent brute-force references for the metrics tests (plus checks of the references).

Everything here is written from the definitions in SPEC section 4 with plain numpy and
Python loops, deliberately sharing no code with ``metrics/``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest


def brute_knn(embeddings, queries, k, present=None):
    """Top-k cosine neighbours by full float64 similarity matrix and argsort.

    Returns (ids, sims) of shape (len(queries), k), -1 / nan padded; absent queries and
    zero rows get only padding. Ties are broken by song id (stable sort).
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    n = emb.shape[0]
    norms = np.linalg.norm(emb, axis=1)
    ok = norms > 0
    if present is not None:
        ok &= np.asarray(present, dtype=bool)
    unit = np.zeros_like(emb)
    unit[ok] = emb[ok] / norms[ok, None]
    sims_all = unit @ unit.T
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    sims = np.full((len(queries), k), np.nan)
    for row, q in enumerate(queries):
        if not ok[q]:
            continue
        cand = [j for j in range(n) if ok[j] and j != q]
        order = sorted(cand, key=lambda j: -sims_all[q, j])[:k]  # stable: ties by id
        ids[row, :len(order)] = order
        sims[row, :len(order)] = sims_all[q, order]
    return ids, sims


def cosine_matrix(embeddings):
    emb = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1)
    unit = emb / np.where(norms > 0, norms, 1.0)[:, None]
    return unit @ unit.T


def present_mask(embeddings, present=None):
    ok = np.linalg.norm(np.asarray(embeddings, dtype=np.float64), axis=1) > 0
    if present is not None:
        ok &= np.asarray(present, dtype=bool)
    return ok


def ref_ranks(neighbour_lists, pairs):
    """neighbour_lists: dict song -> list of neighbour ids (best first)."""
    out = []
    for q, t in pairs:
        lst = [int(x) for x in neighbour_lists.get(int(q), []) if x >= 0]
        out.append(lst.index(int(t)) + 1 if int(t) in lst else 0)
    return np.array(out, dtype=np.int64)


def ref_hit_rate(ranks, k):
    if len(ranks) == 0:
        return float("nan")
    return sum(1 for r in ranks if 1 <= r <= k) / len(ranks)


def ref_ndcg(ranks, k):
    if len(ranks) == 0:
        return float("nan")
    return sum(1.0 / math.log2(r + 1) for r in ranks if 1 <= r <= k) / len(ranks)


def ref_hardneg(neighbour_lists, hard_pairs, present, k):
    negs: dict[int, set[int]] = {}
    for a, b in hard_pairs:
        a, b = int(a), int(b)
        if a == b:
            continue
        negs.setdefault(a, set()).add(b)
        negs.setdefault(b, set()).add(a)
    fractions = []
    for song, its in negs.items():
        if not present[song]:
            continue
        top = [x for x in neighbour_lists[song][:k] if x >= 0]
        fractions.append(sum(1 for x in top if x in its) / k)
    if not fractions:
        return None, 0
    return sum(fractions) / len(fractions), len(fractions)


def ref_coherence(neighbour_lists, labels, songs, present, k):
    fractions = []
    for s in sorted(set(int(x) for x in songs)):
        if labels[s] < 0 or not present[s]:
            continue
        top = [x for x in neighbour_lists[s][:k] if x >= 0]
        fractions.append(sum(1 for x in top if labels[x] == labels[s]) / k)
    if not fractions:
        return None, 0
    return sum(fractions) / len(fractions), len(fractions)


def neighbour_dict(ids, queries):
    return {int(q): [int(x) for x in ids[i]] for i, q in enumerate(queries)}


# --- the references themselves, on cases small enough to do by hand -------------------

def test_brute_knn_hand_example():
    # Four unit vectors at 0, 10, 30 and 90 degrees, plus an all-zero row.
    angles = np.deg2rad([0.0, 10.0, 30.0, 90.0])
    emb = np.vstack([np.c_[np.cos(angles), np.sin(angles)], [[0.0, 0.0]]])
    ids, sims = brute_knn(emb, [0, 3, 4], k=4)
    assert ids[0].tolist() == [1, 2, 3, -1]
    assert ids[1].tolist() == [2, 1, 0, -1]
    assert ids[2].tolist() == [-1, -1, -1, -1]
    assert sims[0, 0] == pytest.approx(math.cos(math.radians(10)))
    assert np.isnan(sims[0, 3])


def test_ranking_references_hand_example():
    lists = {0: [5, 6, 7], 1: [7, 5, -1]}
    ranks = ref_ranks(lists, [(0, 6), (1, 5), (1, 6), (2, 5)])
    assert ranks.tolist() == [2, 2, 0, 0]
    assert ref_hit_rate(ranks, 1) == 0.0
    assert ref_hit_rate(ranks, 2) == 0.5
    assert ref_ndcg(ranks, 2) == pytest.approx((2 / math.log2(3)) / 4)
    present = np.ones(8, dtype=bool)
    hn, support = ref_hardneg({0: [5, 6, 7], 6: [0, 1, 2], 5: [1, 2, 3]},
                              [(0, 6), (6, 0), (5, 5)], present, 2)
    assert (hn, support) == (pytest.approx((0.5 + 0.5) / 2), 2)
    labels = np.array([1, 1, -1, 0, 0, 1, 0, 1])
    coh, support = ref_coherence({0: [5, 6, 7], 2: [0, 1, 3]}, labels, [0, 2], present, 3)
    assert (coh, support) == (pytest.approx(2 / 3), 1)
