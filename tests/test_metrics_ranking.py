"""Table-based metrics (ranks, HitRate, NDCG, HardNeg, coherence), Calinski-Harabasz,
song sampling and popularity buckets, against independent brute-force references."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import calinski_harabasz_score

from metrics.clustering import calinski_harabasz
from metrics.coherence import local_coherence, sample_songs
from metrics.false_neighbours import hardneg_at_k
from metrics.knn import knn_table
from metrics.next_song import hit_rate, ndcg, next_song_ranks
from metrics.popularity import assign_buckets, bucket_edges, bucketed_ranking_metrics, equal_pair_edges
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

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _world(seed, n=200, d=8, k=15, p_absent=0.1):
    """Random embedding (Gaussian: no ties), present mask, table over all songs, reference."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, d))
    emb[rng.random(n) < 0.03] = 0.0
    present = rng.random(n) >= p_absent
    table = knn_table(emb, np.arange(n), k=k, present=present)
    ref_ids, _ = brute_knn(emb, np.arange(n), k, present)
    return rng, emb, present_mask(emb, present), table, neighbour_dict(ref_ids, np.arange(n))


# --- next-song ranks, HitRate, NDCG ----------------------------------------------------

def test_ranks_hitrate_ndcg_match_bruteforce():
    rng, emb, ok, table, lists = _world(0)
    queries = rng.integers(0, 200, 500)
    # Half the targets drawn from the true neighbour lists so that ranks are spread out.
    targets = np.where(rng.random(500) < 0.5, rng.integers(0, 200, 500),
                       [lists[q][rng.integers(0, 15)] for q in queries])
    targets = np.where(targets < 0, 0, targets)
    pairs = np.c_[queries, targets]
    ranks = next_song_ranks(table, pairs)
    expected = ref_ranks(lists, pairs)
    np.testing.assert_array_equal(ranks, expected)
    assert ranks.dtype == np.int64
    assert (ranks > 0).sum() > 150  # the test exercises hits, not only misses
    for k in (1, 3, 10, 15):
        assert hit_rate(ranks, k) == pytest.approx(ref_hit_rate(expected, k))
        assert ndcg(ranks, k) == pytest.approx(ref_ndcg(expected, k))


def test_ranks_zero_for_absent_unqueried_and_self_pairs():
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((20, 3))
    present = np.ones(20, dtype=bool)
    present[4] = False
    table = knn_table(emb, [0, 1, 4], k=19, present=present)
    first = table.neighbours[0, 0]
    ranks = next_song_ranks(table, [[0, first], [0, 4], [4, 0], [2, 0], [0, 0]])
    # present target: rank 1; absent target; absent query; query not in table; self.
    assert ranks.tolist() == [1, 0, 0, 0, 0]
    assert next_song_ranks(table, np.zeros((0, 2), dtype=int)).shape == (0,)


def test_hitrate_ndcg_on_hand_ranks_and_empty():
    ranks = np.array([1, 2, 3, 0, 11])
    assert hit_rate(ranks, 10) == pytest.approx(3 / 5)
    assert ndcg(ranks, 10) == pytest.approx((1 + 1 / math.log2(3) + 0.5) / 5)
    assert hit_rate(ranks, 11) == pytest.approx(4 / 5)
    assert math.isnan(hit_rate([], 10)) and math.isnan(ndcg([], 10))


@pytest.mark.parametrize("fn", [hit_rate, ndcg])
def test_ranking_validation(fn):
    with pytest.raises(ValueError, match="ranks"):
        fn([-1, 2], 3)
    with pytest.raises(ValueError, match="ranks"):
        fn([[1, 2]], 3)
    with pytest.raises(ValueError, match="k"):
        fn([1, 2], 0)


def test_next_song_ranks_validation():
    table = knn_table(np.eye(3), [0], k=1)
    with pytest.raises(ValueError, match="pairs"):
        next_song_ranks(table, [[0, 3]])
    with pytest.raises(ValueError, match="pairs"):
        next_song_ranks(table, [0, 1, 2])
    with pytest.raises(ValueError, match="table"):
        next_song_ranks(np.zeros((1, 1)), [[0, 1]])


@PROPS
@given(ranks=st.lists(st.integers(0, 60), max_size=200), k=st.integers(1, 60))
def test_property_ndcg_below_hitrate_and_in_unit_interval(ranks, k):
    hr, nd = hit_rate(ranks, k), ndcg(ranks, k)
    if not ranks:
        assert math.isnan(hr) and math.isnan(nd)
        return
    assert 0.0 <= nd <= hr + 1e-12 <= 1.0 + 1e-12
    assert hit_rate(ranks, k) <= hit_rate(ranks, k + 1)
    assert nd == pytest.approx(ref_ndcg(ranks, k))


@PROPS
@given(n=st.integers(3, 40), arc=st.floats(1.0, 3.0), offset=st.floats(-math.pi, math.pi),
       k=st.integers(1, 10), seed=st.integers(0, 2**32 - 1))
def test_property_perfect_chain_embedding_has_hitrate_one(n, arc, offset, k, seed):
    # Songs on an arc (< pi) of the unit circle with strictly shrinking gaps, so the
    # nearest neighbour of song i is always i + 1 (i - 1 is further away); gaps shrink
    # linearly so that consecutive cosines differ by > 5e-6, far above float32 rounding.
    # Each song gets a random length, which cosine similarity must ignore.
    gaps = 2.0 * n - np.arange(n - 1)
    angles = offset + arc * np.concatenate([[0.0], np.cumsum(gaps)]) / gaps.sum()
    lengths = np.random.default_rng(seed).uniform(0.1, 10.0, n)
    emb = np.c_[np.cos(angles), np.sin(angles)] * lengths[:, None]
    pairs = np.c_[np.arange(n - 1), np.arange(1, n)]
    table = knn_table(emb, pairs[:, 0], k=k)
    ranks = next_song_ranks(table, pairs)
    assert (ranks == 1).all()
    assert hit_rate(ranks, k) == 1.0 and ndcg(ranks, k) == 1.0


# --- HardNeg@K ----------------------------------------------------------------------

def test_hardneg_matches_bruteforce():
    rng, emb, ok, table, lists = _world(2)
    # Hard negatives drawn partly from true neighbours so that the metric is not ~0,
    # with duplicates, both orientations and a self-pair.
    a = rng.integers(0, 200, 300)
    b = np.where(rng.random(300) < 0.5, rng.integers(0, 200, 300),
                 [lists[s][rng.integers(0, 15)] for s in a])
    b = np.where(b < 0, (a + 1) % 200, b)
    pairs = np.r_[np.c_[a, b], np.c_[b[:20], a[:20]], [[7, 7]]]
    for k in (1, 5, 15):
        value, support = hardneg_at_k(table, pairs, k)
        ref_value, ref_support = ref_hardneg(lists, pairs, ok, k)
        assert support == ref_support
        assert value == pytest.approx(ref_value)
    assert value > 0.01


def test_hardneg_unavailable_cases_and_denominator():
    emb = np.eye(4)
    emb[3] = [1.0, 1.0, 0.0, 0.0]
    present = np.array([True, True, True, False])
    table = knn_table(emb, [0, 1, 2, 3], k=5, present=present)
    assert hardneg_at_k(table, np.zeros((0, 2), dtype=int), 3) == (None, 0)
    assert hardneg_at_k(table, [[2, 2]], 3) == (None, 0)  # self-pairs are ignored
    assert hardneg_at_k(table, [[3, 3], [3, 3]], 3) == (None, 0)
    # 0 has 2 candidates (1, 2); with k = 5 the fixed denominator gives 1/5, 1/5.
    value, support = hardneg_at_k(table, [[0, 1], [0, 3]], 5)
    assert support == 2 and value == pytest.approx((1 / 5 + 1 / 5) / 2)


def test_hardneg_validation():
    table = knn_table(np.eye(4), [0, 1], k=2)
    with pytest.raises(ValueError, match="no row"):
        hardneg_at_k(table, [[0, 2]], 2)
    with pytest.raises(ValueError, match="k"):
        hardneg_at_k(table, [[0, 1]], 3)
    with pytest.raises(ValueError, match="hard_negative_pairs"):
        hardneg_at_k(table, [[0, 9]], 1)


# --- coherence and the sample ------------------------------------------------------------

def test_local_coherence_matches_bruteforce():
    rng, emb, ok, table, lists = _world(3, k=20)
    # Labels correlated with the geometry so that coherence is well above chance.
    labels = (emb[:, 0] > 0).astype(np.int64) * 2 + (emb[:, 1] > 0)
    labels[rng.random(200) < 0.15] = -1
    songs = rng.integers(0, 200, 120)
    for k in (1, 7, 20):
        value, support = local_coherence(table, labels, songs, k)
        ref_value, ref_support = ref_coherence(lists, labels, songs, ok, k)
        assert support == ref_support
        assert value == pytest.approx(ref_value)
    assert value > 0.35  # four labels: chance is ~0.25


def test_local_coherence_unavailable_and_validation():
    table = knn_table(np.eye(3), [0, 1, 2], k=2)
    assert local_coherence(table, [-1, -1, -1], [0, 1, 2], 2) == (None, 0)
    assert local_coherence(table, [0, 0, 0], [], 2) == (None, 0)
    with pytest.raises(ValueError, match="no row"):
        local_coherence(knn_table(np.eye(3), [0], k=2), [0, 0, 0], [1], 2)
    with pytest.raises(ValueError, match="labels"):
        local_coherence(table, [0, 0], [0], 2)
    with pytest.raises(ValueError, match="labels"):
        local_coherence(table, [0, -2, 0], [0], 2)


def test_sample_songs():
    mask = np.zeros(1000, dtype=bool)
    mask[::3] = True
    sample = sample_songs(mask, 100, 42)
    assert sample.dtype == np.int64 and sample.size == 100
    assert (np.diff(sample) > 0).all() and mask[sample].all()
    np.testing.assert_array_equal(sample, sample_songs(mask, 100, 42))
    assert not np.array_equal(sample, sample_songs(mask, 100, 43))
    np.testing.assert_array_equal(sample_songs(mask, 5000, 0), np.flatnonzero(mask))
    assert sample_songs(mask, 0, 0).size == 0
    with pytest.raises(ValueError, match="max_songs"):
        sample_songs(mask, -1, 0)
    with pytest.raises(ValueError, match="eligible_mask"):
        sample_songs(mask.astype(int), 3, 0)
    with pytest.raises(ValueError, match="seed"):
        sample_songs(mask, 3, -5)


def test_sample_songs_is_uniform():
    mask = np.ones(50, dtype=bool)
    counts = np.zeros(50)
    for seed in range(400):
        counts[sample_songs(mask, 10, seed)] += 1
    # Each song is drawn with probability 1/5: 80 expected, sd ~8.
    assert counts.min() > 45 and counts.max() < 115


# --- Calinski-Harabasz ----------------------------------------------------------------

def _ch_reference(emb, labels, ok):
    """Filter by hand (loops), normalise, score with sklearn."""
    sizes = Counter(int(labels[i]) for i in range(len(labels)) if ok[i] and labels[i] >= 0)
    keep = [i for i in range(len(labels))
            if ok[i] and labels[i] >= 0 and sizes[int(labels[i])] >= 2]
    if len({int(labels[i]) for i in keep}) < 2:
        return None, len(keep)
    x = np.asarray(emb, dtype=np.float64)[keep]
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return calinski_harabasz_score(x, labels[keep]), len(keep)


def test_calinski_harabasz_matches_sklearn():
    rng = np.random.default_rng(4)
    n = 600
    labels = rng.integers(0, 120, n)  # many small labels, some singletons
    centres = rng.standard_normal((120, 10)) * 2
    emb = centres[labels] + rng.standard_normal((n, 10))
    labels[rng.random(n) < 0.1] = -1
    emb[rng.random(n) < 0.03] = 0.0
    present = rng.random(n) > 0.05
    ok = present_mask(emb, present)
    value, used = calinski_harabasz(emb, labels, present=present, max_songs=10_000)
    ref_value, ref_used = _ch_reference(emb, labels, ok)
    assert used == ref_used < n
    assert value == pytest.approx(ref_value, rel=1e-9)
    assert value > 2.0  # well-separated clusters


def test_calinski_harabasz_sample_then_refilter():
    rng = np.random.default_rng(5)
    n = 400
    labels = rng.integers(0, 150, n)
    emb = rng.standard_normal((n, 6)).astype(np.float32)
    value, used = calinski_harabasz(emb, labels, max_songs=120, seed=3)
    # The documented procedure: filter, seeded sample_songs, filter again; scored by sklearn.
    sizes = np.bincount(labels)
    sample = sample_songs(sizes[labels] >= 2, 120, 3)
    again = Counter(labels[sample].tolist())
    kept = np.array([s for s in sample if again[labels[s]] >= 2])
    assert used == kept.size < 120
    x = emb[kept].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert value == pytest.approx(calinski_harabasz_score(x, labels[kept]), rel=1e-9)
    assert calinski_harabasz(emb, labels, max_songs=120, seed=3) == (value, used)


def test_calinski_harabasz_unavailable():
    emb = np.random.default_rng(6).standard_normal((10, 3))
    assert calinski_harabasz(emb, np.full(10, -1)) == (None, 0)
    assert calinski_harabasz(emb, np.zeros(10, dtype=int)) == (None, 10)  # one label
    assert calinski_harabasz(emb, np.arange(10)) == (None, 0)  # all singletons
    value, used = calinski_harabasz(emb, np.array([0, 0, 1, 1, -1, 2, 3, 4, 5, 6]))
    assert used == 4 and value is not None
    with pytest.raises(ValueError, match="labels"):
        calinski_harabasz(emb, np.zeros(9, dtype=int))


@PROPS
@given(n=st.integers(4, 80), n_labels=st.integers(1, 30), d=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1))
def test_property_calinski_harabasz_equals_sklearn(n, n_labels, d, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, n_labels, n)
    emb = rng.standard_normal((n, d))
    value, used = calinski_harabasz(emb, labels)
    ref_value, ref_used = _ch_reference(emb, labels, present_mask(emb))
    assert used == ref_used
    if ref_value is None:
        assert value is None
    else:
        assert value == pytest.approx(ref_value, rel=1e-7, abs=1e-9)


# --- popularity buckets ---------------------------------------------------------------

@PROPS
@given(m=st.integers(1, 30), n_buckets=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_property_equal_population_with_distinct_counts(m, n_buckets, seed):
    rng = np.random.default_rng(seed)
    counts = rng.permutation(m * n_buckets) * 3 + 1  # distinct, not contiguous
    edges = bucket_edges(counts, n_buckets)
    buckets = assign_buckets(counts, edges)
    assert edges.shape == (n_buckets + 1,)
    # Reference: rank the songs; the r-th least played song is in bucket r // m.
    expected = np.empty_like(buckets)
    expected[np.argsort(counts)] = np.arange(counts.size) // m
    np.testing.assert_array_equal(buckets, expected)


@PROPS
@given(counts=st.lists(st.integers(0, 30), min_size=1, max_size=300),
       n_buckets=st.integers(1, 12))
def test_property_buckets_monotone_with_ties(counts, n_buckets):
    counts = np.array(counts)
    edges = bucket_edges(counts, n_buckets)
    buckets = assign_buckets(counts, edges)
    assert (np.diff(edges) >= 0).all()
    assert buckets.min() >= 0 and buckets.max() < n_buckets
    assert (buckets[counts == counts.min()] == 0).all()
    order = np.argsort(counts, kind="stable")
    assert (np.diff(buckets[order]) >= 0).all()  # more plays, never a lower bucket
    for value in np.unique(counts):  # ties are never split
        assert np.unique(buckets[counts == value]).size == 1
    if np.unique(counts).size == counts.size:
        sizes = np.bincount(buckets, minlength=n_buckets)
        assert sizes.max() - sizes.min() <= 1


def test_buckets_hand_example_and_clipping():
    counts = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 5])
    edges = bucket_edges(counts, 5)
    buckets = assign_buckets(counts, edges)
    assert buckets[:6].tolist() == [0] * 6  # six tied songs share the lowest bucket
    assert buckets[6:].tolist() == [3, 3, 4, 4]
    assert assign_buckets([0, 100], edges).tolist() == [0, 4]
    with pytest.raises(ValueError, match="train_counts"):
        bucket_edges([], 3)
    with pytest.raises(ValueError, match="train_counts"):
        bucket_edges([1, -2], 3)
    with pytest.raises(ValueError, match="edges"):
        assign_buckets([1], [3.0, 1.0])


@PROPS
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=60), n_buckets=st.integers(1, 12),
       data=st.data())
def test_property_equal_pair_edges_count_every_pair_once(counts, n_buckets, data):
    counts = np.array(counts)
    targets = np.array(data.draw(st.lists(st.integers(0, counts.size - 1), min_size=1, max_size=200)))
    edges = equal_pair_edges(counts, targets, n_buckets)
    # Reference: one entry per pair, the target's count, in a plain Python list.
    per_pair = sorted(int(counts[t]) for t in targets.tolist())
    np.testing.assert_allclose(edges, np.quantile(per_pair, np.linspace(0, 1, n_buckets + 1)), rtol=1e-12)
    buckets = assign_buckets(counts[targets], edges)
    for song in np.unique(targets):  # a song's pairs are never split over buckets, however many they are
        assert np.unique(buckets[targets == song]).size == 1
    order = np.argsort(counts[targets], kind="stable")
    assert (np.diff(buckets[order]) >= 0).all()


@PROPS
@given(m=st.integers(1, 20), n_buckets=st.integers(1, 10), seed=st.integers(0, 2**32 - 1))
def test_property_equal_pair_buckets_hold_equal_pair_counts(m, n_buckets, seed):
    # Every pair has its own target song, and the songs' counts are distinct: nothing ties, so each bucket
    # holds exactly m pairs (the hand example below covers a song that is the target of many pairs).
    rng = np.random.default_rng(seed)
    n_pairs = m * n_buckets
    counts = rng.permutation(n_pairs) * 2 + 1
    targets = rng.permutation(n_pairs)
    sizes = np.bincount(assign_buckets(counts[targets], equal_pair_edges(counts, targets, n_buckets)),
                        minlength=n_buckets)
    assert sizes.tolist() == [m] * n_buckets


def test_equal_pair_edges_hand_example_with_ties_at_the_edges():
    counts = np.array([1, 2, 3, 4, 100])
    targets = np.array([4, 0, 4, 1, 4, 2, 4, 3, 4, 4])  # the popular song is the target of 6 of 10 pairs
    edges = equal_pair_edges(counts, targets, 5)
    # Per-pair counts 1, 2, 3, 4, 100 x 6: quantiles at positions 0, 1.8, 3.6, 5.4, 7.2, 9.
    np.testing.assert_allclose(edges, [1, 2.8, 61.6, 100, 100, 100])
    buckets = assign_buckets(counts[targets], edges)
    # 100 equals three edges: it goes to the lowest bucket that holds it, with all six of its pairs.
    assert np.bincount(buckets, minlength=5).tolist() == [2, 2, 6, 0, 0]
    # Equal-song edges over the same five songs would give the popular song one fifth of the songs.
    assert np.bincount(assign_buckets(counts[targets], bucket_edges(counts, 5)), minlength=5).tolist() == [
        1, 1, 1, 1, 6]
    with pytest.raises(ValueError, match="targets"):
        equal_pair_edges(counts, [], 5)
    with pytest.raises(ValueError, match="targets"):
        equal_pair_edges(counts, [5], 5)
    with pytest.raises(ValueError, match="targets"):
        equal_pair_edges(counts, [0.5], 5)


def test_bucketed_ranking_metrics_match_loops():
    rng = np.random.default_rng(7)
    ranks = np.where(rng.random(500) < 0.4, rng.integers(1, 30, 500), 0)
    bucket_ids = rng.integers(0, 6, 500)
    bucket_ids[bucket_ids == 4] = 5  # bucket 4 empty
    out = bucketed_ranking_metrics(ranks, bucket_ids, 6, 10)
    for b in range(6):
        sub = ranks[bucket_ids == b].tolist()
        assert out["pairs"][b] == len(sub)
        if sub:
            assert out["hitrate"][b] == pytest.approx(ref_hit_rate(sub, 10))
            assert out["ndcg"][b] == pytest.approx(ref_ndcg(sub, 10))
        else:
            assert math.isnan(out["hitrate"][b]) and math.isnan(out["ndcg"][b])
    weights = out["pairs"][out["pairs"] > 0]
    assert np.average(out["hitrate"][out["pairs"] > 0], weights=weights) == \
        pytest.approx(hit_rate(ranks, 10))
    with pytest.raises(ValueError, match="bucket_ids"):
        bucketed_ranking_metrics(ranks, bucket_ids, 5, 10)
    with pytest.raises(ValueError, match="bucket_ids"):
        bucketed_ranking_metrics(ranks, bucket_ids[:-1], 6, 10)


def test_hardneg_restricted_to_songs_matches_bruteforce():
    rng, emb, ok, table, lists = _world(8)
    pairs = rng.integers(0, 200, (400, 2))
    songs = rng.choice(200, 50, replace=False)
    # Only the chosen songs need rows in the table.
    small = knn_table(emb, songs, k=15, present=ok)
    value, support = hardneg_at_k(small, pairs, 15, songs=songs)
    chosen = set(songs.tolist())
    negs = {}
    for a, b in pairs.tolist():
        if a != b:
            negs.setdefault(a, set()).add(b)
            negs.setdefault(b, set()).add(a)
    fractions = [sum(1 for x in lists[s][:15] if x in negs[s]) / 15
                 for s in sorted(chosen) if s in negs and ok[s]]
    assert support == len(fractions) > 20
    assert value == pytest.approx(sum(fractions) / len(fractions))
    with pytest.raises(ValueError, match="songs"):
        hardneg_at_k(small, pairs, 15, songs=[200])
