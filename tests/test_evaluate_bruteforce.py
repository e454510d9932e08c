"""``metrics.evaluate.evaluate()`` against an independent brute-force computation for EVERY key it returns.

The reference below is written from the definitions of SPEC section 4 with a full float64 cosine matrix,
Python loops and scikit-learn's own ``calinski_harabasz_score``; it calls nothing in ``metrics/``. Samples
are set to cover every song (``coherence_sample`` and ``ch_sample`` >= n_songs), so no seeded sample
separates the two computations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import calinski_harabasz_score

from metrics.evaluate import METRIC_KEYS, EvaluationData, EvaluationSettings, evaluate
from tests.test_metrics_reference import (
    brute_knn,
    neighbour_dict,
    present_mask,
    ref_coherence,
    ref_hardneg,
    ref_hit_rate,
    ref_ndcg,
    ref_ranks,
)


def _case(seed: int, n: int = 220, d: int = 10) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 8, n)
    emb = rng.standard_normal((8, d))[cluster] * 1.3 + rng.standard_normal((n, d))
    emb[rng.random(n) < 0.03] = 0.0  # zero rows are absent too
    present = rng.random(n) >= 0.06

    def pairs(m: int) -> np.ndarray:
        query = rng.integers(0, n, m)
        near = np.array([rng.choice(np.flatnonzero(cluster == cluster[q])) for q in query])
        target = np.where(rng.random(m) < 0.6, near, rng.integers(0, n, m))
        return np.c_[query, target][query != target]

    genre = cluster % 4
    genre[rng.random(n) < 0.25] = -1
    artist = cluster * 6 + rng.integers(0, 6, n)
    artist[rng.random(n) < 0.1] = -1
    hard = rng.integers(0, n, (50, 2))
    hard = hard[hard[:, 0] != hard[:, 1]]
    arrays = {"pairs_in": pairs(150), "pairs_out": pairs(250), "hard_negative_pairs": np.r_[hard, hard[:5]],
              "artist_labels": artist, "genre_labels": genre, "train_counts": rng.zipf(1.7, n).clip(max=5000)}
    return emb, present, arrays


def _reference_ch(emb: np.ndarray, labels: np.ndarray, ok: np.ndarray) -> tuple[float | None, int]:
    """sklearn on the L2-normalised vectors of present songs whose (known) label has >= 2 such songs."""
    eligible = ok & (labels >= 0)
    sizes = {label: int(np.sum(eligible & (labels == label))) for label in set(labels[eligible].tolist())}
    songs = [s for s in range(len(labels)) if eligible[s] and sizes[int(labels[s])] >= 2]
    if len({int(labels[s]) for s in songs}) < 2:
        return None, len(songs)
    unit = emb[songs] / np.linalg.norm(emb[songs], axis=1, keepdims=True)
    return float(calinski_harabasz_score(unit, labels[songs])), len(songs)


def _reference_bucket(count: float, edges: np.ndarray) -> int:
    """Bucket 0 is [e0, e1], bucket b > 0 is (e_b, e_b+1]: the lowest bucket whose upper edge holds the count."""
    for b in range(len(edges) - 1):
        if count <= edges[b + 1]:
            return b
    return len(edges) - 2


def _reference(emb: np.ndarray, present: np.ndarray, arrays: dict[str, np.ndarray], k: int, coherence_k: int,
               n_buckets: int) -> tuple[dict[str, Any], dict[str, Any]]:
    n = emb.shape[0]
    ok = present_mask(emb, present)
    ids, _ = brute_knn(emb, np.arange(n), max(k, coherence_k), present)
    lists = neighbour_dict(ids, np.arange(n))
    r_in, r_out = ref_ranks(lists, arrays["pairs_in"]), ref_ranks(lists, arrays["pairs_out"])
    metrics: dict[str, Any] = {
        "ndcg_in": ref_ndcg(r_in, k), "ndcg_out": ref_ndcg(r_out, k),
        "hitrate_in": ref_hit_rate(r_in, k), "hitrate_out": ref_hit_rate(r_out, k),
    }
    for name in ("ndcg", "hitrate"):
        sides = [v for v in (metrics[f"{name}_in"], metrics[f"{name}_out"]) if not math.isnan(v)]
        metrics[name] = sum(sides) / len(sides) if sides else None
    metrics = {key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in metrics.items()}
    metrics["hardneg"], metrics["hardneg_support"] = ref_hardneg(lists, arrays["hard_negative_pairs"], ok, k)
    for label in ("genre", "artist"):
        labels = arrays[f"{label}_labels"]
        metrics[f"coherence_{label}"], metrics[f"coherence_{label}_support"] = ref_coherence(
            lists, labels, np.arange(n), ok, coherence_k)
        metrics[f"ch_{label}"], metrics[f"ch_{label}_songs"] = _reference_ch(emb, labels, ok)
    metrics.update(pairs_in=len(arrays["pairs_in"]), pairs_out=len(arrays["pairs_out"]),
                   songs_present=int(ok.sum()), songs_total=n)

    counts = arrays["train_counts"].astype(np.float64)
    edges = np.quantile(counts, np.linspace(0, 1, n_buckets + 1))  # equal-population edges
    pairs = np.r_[arrays["pairs_in"], arrays["pairs_out"]]
    ranks = np.r_[r_in, r_out]
    # Equal-pair edges: the quantiles of the target's count with every pair counted once (a song as often as
    # it is a target).
    pair_edges = np.quantile([counts[t] for t in pairs[:, 1]], np.linspace(0, 1, n_buckets + 1))
    buckets: dict[str, Any] = {"edges": edges.tolist()}
    for key, column, side_edges in (("by_target", 1, edges), ("by_query", 0, edges),
                                    ("by_target_equal_pairs", 1, pair_edges)):
        members: list[list[int]] = [[] for _ in range(n_buckets)]
        for i, song in enumerate(pairs[:, column]):
            members[_reference_bucket(counts[song], side_edges)].append(i)
        buckets[key] = {
            "pairs": [len(m) for m in members],
            "hitrate": [ref_hit_rate(ranks[m], k) if m else None for m in members],
            "ndcg": [ref_ndcg(ranks[m], k) if m else None for m in members],
        }
    buckets["by_target_equal_pairs"]["edges"] = pair_edges.tolist()
    return metrics, buckets


def _same(got: Any, expected: Any) -> bool:
    if expected is None or got is None:
        return got is None and expected is None
    if isinstance(expected, int) and not isinstance(expected, bool):
        return got == expected
    return got == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("seed", "k", "coherence_k", "n_buckets", "drop"), [
    (0, 10, 10, 5, None),
    (1, 7, 25, 4, None),          # coherence_k > k: one table of max(k, coherence_k) serves both
    (2, 15, 5, 10, "pairs_in"),   # no in-set pairs: the headline is the out-of-set side alone
    (3, 12, 12, 3, "hard"),       # no hard negatives: HardNeg unavailable (None), support 0
    (4, 9, 9, 6, "genre"),        # one genre only: Calinski-Harabasz on genres unavailable
])
def test_every_key_of_evaluate_matches_brute_force(seed: int, k: int, coherence_k: int, n_buckets: int,
                                                    drop: str | None) -> None:
    emb, present, arrays = _case(seed)
    if drop == "pairs_in":
        arrays["pairs_in"] = np.zeros((0, 2), dtype=np.int64)
    elif drop == "hard":
        arrays["hard_negative_pairs"] = np.zeros((0, 2), dtype=np.int64)
    elif drop == "genre":
        arrays["genre_labels"] = np.where(arrays["genre_labels"] >= 0, 0, -1)
    settings = EvaluationSettings(k=k, coherence_k=coherence_k, coherence_sample=10_000, ch_sample=10_000,
                                  seed=seed, n_buckets=n_buckets)
    result = evaluate(emb, EvaluationData(**arrays), settings, present=present)
    expected, expected_buckets = _reference(emb, present, arrays, k, coherence_k, n_buckets)

    assert set(expected) == set(METRIC_KEYS) == set(result.metrics)  # every key is checked
    wrong = {key: (result.metrics[key], expected[key]) for key in METRIC_KEYS
             if not _same(result.metrics[key], expected[key])}
    assert wrong == {}
    assert set(result.buckets) == set(expected_buckets)
    assert result.buckets["edges"] == pytest.approx(expected_buckets["edges"], rel=1e-12)
    pair_edges = result.buckets["by_target_equal_pairs"]["edges"]
    assert pair_edges == pytest.approx(expected_buckets["by_target_equal_pairs"]["edges"], rel=1e-12)
    for side in ("by_target", "by_query", "by_target_equal_pairs"):
        assert set(result.buckets[side]) - {"edges"} == {"pairs", "hitrate", "ndcg", "pairs_sampled", "hitrate_se",
                                                         "ndcg_se"}
        for name in ("pairs", "hitrate", "ndcg"):
            got, want = result.buckets[side][name], expected_buckets[side][name]
            assert len(got) == len(want) == n_buckets
            assert all(_same(g, w) for g, w in zip(got, want)), (side, name, got, want)
        # No cap: every pair is evaluated, so nothing is estimated (standard errors 0, None for empty buckets).
        assert result.buckets[side]["pairs_sampled"] == result.buckets[side]["pairs"]
        for name in ("hitrate_se", "ndcg_se"):
            assert result.buckets[side][name] == [None if v is None else 0.0 for v in result.buckets[side]["ndcg"]]
    # Not a degenerate case: hits, misses and unavailable values all occur where intended.
    assert 0 < result.metrics["hitrate_out"] < 1 and result.metrics["songs_present"] < result.metrics["songs_total"]
    assert (result.metrics["ndcg_in"] is None) == (drop == "pairs_in")
    assert (result.metrics["hardneg"] is None) == (drop == "hard")
    assert (result.metrics["ch_genre"] is None) == (drop == "genre")
