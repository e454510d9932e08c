"""metrics.evaluate: the orchestrator equals the separate functions, with one kNN search."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metrics._search
import metrics.knn
from metrics.clustering import calinski_harabasz
from metrics.coherence import local_coherence, sample_songs
from metrics.evaluate import METRIC_KEYS, EvaluationData, EvaluationSettings, evaluate
from metrics.false_neighbours import hardneg_at_k
from metrics.knn import knn_table
from metrics.next_song import hit_rate, ndcg, next_song_ranks
from metrics.popularity import assign_buckets, bucket_edges, bucketed_ranking_metrics
from tests.test_metrics_reference import brute_knn, neighbour_dict, present_mask, ref_hit_rate, ref_ndcg, ref_ranks


def make_case(seed, n=300, d=12, n_pairs=400, n_hard=60, p_absent=0.05):
    """Clustered embedding with labels, pairs inside clusters, hard negatives, counts."""
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, 12, n)
    emb = rng.standard_normal((12, d))[clusters] * 1.5 + rng.standard_normal((n, d))
    emb[rng.random(n) < 0.02] = 0.0
    present = rng.random(n) >= p_absent

    def pairs(m):
        q = rng.integers(0, n, m)
        same = np.array([rng.choice(np.flatnonzero(clusters == clusters[s])) for s in q])
        t = np.where(rng.random(m) < 0.7, same, rng.integers(0, n, m))
        keep = q != t
        return np.c_[q, t][keep]

    genre = clusters % 5
    genre[rng.random(n) < 0.2] = -1
    artist = clusters * 10 + rng.integers(0, 10, n)
    artist[rng.random(n) < 0.1] = -1
    data = EvaluationData(
        pairs_in=pairs(n_pairs // 2), pairs_out=pairs(n_pairs - n_pairs // 2),
        hard_negative_pairs=rng.integers(0, n, (n_hard, 2)),
        artist_labels=artist, genre_labels=genre,
        train_counts=rng.zipf(1.8, n).clip(max=10_000))
    return emb, present, data


def test_evaluate_equals_separately_computed_metrics():
    emb, present, data = make_case(0)
    cfg = EvaluationSettings(k=20, coherence_k=30, coherence_sample=150, ch_sample=200,
                             seed=7, n_buckets=4)
    result = evaluate(emb, data, cfg, present=present)
    m = result.metrics
    assert tuple(m) == METRIC_KEYS

    ok = present_mask(emb, present)
    genre_songs = sample_songs(ok & (data.genre_labels >= 0), 150, 7)
    artist_songs = sample_songs(ok & (data.artist_labels >= 0), 150, 7)
    table = knn_table(emb, np.arange(data.n_songs), k=30, present=present)
    r_in = next_song_ranks(table, data.pairs_in)
    r_out = next_song_ranks(table, data.pairs_out)
    assert m["ndcg_in"] == pytest.approx(ndcg(r_in, 20))
    assert m["ndcg_out"] == pytest.approx(ndcg(r_out, 20))
    assert m["ndcg"] == pytest.approx((ndcg(r_in, 20) + ndcg(r_out, 20)) / 2)
    assert m["hitrate_in"] == pytest.approx(hit_rate(r_in, 20))
    assert m["hitrate_out"] == pytest.approx(hit_rate(r_out, 20))
    assert m["hitrate"] == pytest.approx((hit_rate(r_in, 20) + hit_rate(r_out, 20)) / 2)
    assert 0 < m["hitrate_in"] < 1 and m["ndcg"] > 0  # a non-trivial case
    assert (m["hardneg"], m["hardneg_support"]) == \
        pytest.approx(hardneg_at_k(table, data.hard_negative_pairs, 20))
    assert (m["coherence_genre"], m["coherence_genre_support"]) == \
        pytest.approx(local_coherence(table, data.genre_labels, genre_songs, 30))
    assert (m["coherence_artist"], m["coherence_artist_support"]) == \
        pytest.approx(local_coherence(table, data.artist_labels, artist_songs, 30))
    assert m["coherence_genre_support"] == 150
    assert (m["ch_genre"], m["ch_genre_songs"]) == pytest.approx(
        calinski_harabasz(emb, data.genre_labels, present=present, max_songs=200, seed=7))
    assert (m["ch_artist"], m["ch_artist_songs"]) == pytest.approx(
        calinski_harabasz(emb, data.artist_labels, present=present, max_songs=200, seed=7))
    assert m["pairs_in"] == len(data.pairs_in) and m["pairs_out"] == len(data.pairs_out)
    assert m["songs_present"] == int(ok.sum()) and m["songs_total"] == 300

    edges = bucket_edges(data.train_counts, 4)
    assert result.buckets["edges"] == pytest.approx(edges.tolist())
    pairs = np.r_[data.pairs_in, data.pairs_out]
    ranks = np.r_[r_in, r_out]
    for key, col in (("by_target", 1), ("by_query", 0)):
        expected = bucketed_ranking_metrics(
            ranks, assign_buckets(data.train_counts[pairs[:, col]], edges), 4, 20)
        got = result.buckets[key]
        assert got["pairs"] == expected["pairs"].tolist()
        for name in ("hitrate", "ndcg"):
            assert _nan(got[name]) == pytest.approx(expected[name].tolist(), nan_ok=True)
    assert set(result.timings) == {"knn", "metrics", "total"}
    assert result.timings["total"] >= result.timings["knn"] >= 0


def test_evaluate_headline_against_bruteforce_reference():
    emb, present, data = make_case(1, n=150)
    result = evaluate(emb, data, EvaluationSettings(k=10), present=present)
    ids, _ = brute_knn(emb, np.arange(150), 10, present)
    lists = neighbour_dict(ids, np.arange(150))
    r_in, r_out = ref_ranks(lists, data.pairs_in), ref_ranks(lists, data.pairs_out)
    assert result.metrics["hitrate_in"] == pytest.approx(ref_hit_rate(r_in, 10))
    assert result.metrics["ndcg_out"] == pytest.approx(ref_ndcg(r_out, 10))


def test_evaluate_runs_exactly_one_knn_search(monkeypatch):
    emb, present, data = make_case(2)
    calls, indexes = [], []
    real_knn_table = metrics.knn.knn_table
    real_index = metrics._search.faiss.IndexFlatIP

    def spy_knn_table(*args, **kwargs):
        calls.append(kwargs.get("k"))
        return real_knn_table(*args, **kwargs)

    def spy_index(*args):
        index = real_index(*args)
        indexes.append(index)
        return index

    monkeypatch.setattr(metrics.knn, "knn_table", spy_knn_table)
    monkeypatch.setattr(metrics._search.faiss, "IndexFlatIP", spy_index)
    evaluate(emb, data, EvaluationSettings(k=15, coherence_k=25), present=present)
    assert calls == [25]  # one table, k = max(k, coherence_k)
    assert len(indexes) == 1


def test_evaluate_table_covers_exactly_the_needed_songs(monkeypatch):
    emb, present, data = make_case(3)
    seen = []
    real_knn_table = metrics.knn.knn_table

    def spy_knn_table(*args, **kwargs):
        seen.append(real_knn_table(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(metrics.knn, "knn_table", spy_knn_table)
    cfg = EvaluationSettings(k=10, coherence_sample=40, seed=1)
    evaluate(emb, data, cfg, present=present)
    ok = present_mask(emb, present)
    needed = np.unique(np.concatenate([
        data.pairs_in[:, 0], data.pairs_out[:, 0], data.hard_negative_pairs.ravel(),
        sample_songs(ok & (data.genre_labels >= 0), 40, 1),
        sample_songs(ok & (data.artist_labels >= 0), 40, 1)]))
    np.testing.assert_array_equal(seen[0].queries, needed)
    assert needed.size < data.n_songs


def test_unavailable_metrics_are_none_and_json_is_strict():
    emb, present, data = make_case(4)
    data = EvaluationData(pairs_in=data.pairs_in, pairs_out=np.zeros((0, 2), dtype=int),
                          hard_negative_pairs=np.zeros((0, 2), dtype=int),
                          artist_labels=np.full(data.n_songs, -1),
                          genre_labels=data.genre_labels, train_counts=data.train_counts)
    result = evaluate(emb, data, EvaluationSettings(k=10), present=present)
    m = result.metrics
    assert m["ndcg_out"] is None and m["hitrate_out"] is None
    assert m["ndcg"] == m["ndcg_in"] and m["hitrate"] == m["hitrate_in"]
    assert m["hardneg"] is None and m["hardneg_support"] == 0
    assert m["coherence_artist"] is None and m["coherence_artist_support"] == 0
    assert m["ch_artist"] is None and m["ch_artist_songs"] == 0
    assert m["coherence_genre"] is not None and m["ch_genre"] is not None
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(text)["metrics"] == m


def test_no_pairs_at_all_gives_none_headline():
    emb, present, data = make_case(5, n=50)
    empty = np.zeros((0, 2), dtype=int)
    data = EvaluationData(pairs_in=empty, pairs_out=empty, hard_negative_pairs=empty,
                          artist_labels=data.artist_labels, genre_labels=data.genre_labels,
                          train_counts=data.train_counts)
    result = evaluate(emb, data, EvaluationSettings(k=5))
    assert result.metrics["ndcg"] is None and result.metrics["hitrate"] is None
    assert result.buckets["by_target"]["pairs"] == [0] * 10
    assert result.buckets["by_target"]["hitrate"] == [None] * 10


def test_absent_songs_count_as_misses():
    # Song 1 is 0's nearest neighbour; once absent, the pair (0, 1) becomes a miss and
    # a pair whose query is absent is a miss too: they stay in the denominator.
    emb = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    base = dict(pairs_out=np.array([[2, 3]]), hard_negative_pairs=np.zeros((0, 2), int),
                artist_labels=np.full(4, -1), genre_labels=np.full(4, -1),
                train_counts=np.array([5, 4, 3, 2]))
    data = EvaluationData(pairs_in=np.array([[0, 1], [1, 0]]), **base)
    full = evaluate(emb, data, EvaluationSettings(k=1))
    assert full.metrics["hitrate_in"] == 1.0
    dropped = evaluate(emb, data, EvaluationSettings(k=1),
                       present=np.array([True, False, True, True]))
    assert dropped.metrics["hitrate_in"] == 0.0
    assert dropped.metrics["pairs_in"] == 2 and dropped.metrics["songs_present"] == 3


def test_given_bucket_edges_are_used_and_checked():
    emb, present, data = make_case(6, n=80)
    edges = np.array([0.0, 2.0, 1e9])
    data2 = EvaluationData(pairs_in=data.pairs_in, pairs_out=data.pairs_out,
                           hard_negative_pairs=data.hard_negative_pairs,
                           artist_labels=data.artist_labels, genre_labels=data.genre_labels,
                           train_counts=data.train_counts, bucket_edges=edges)
    result = evaluate(emb, data2, EvaluationSettings(k=5, n_buckets=2))
    assert result.buckets["edges"] == edges.tolist()
    with pytest.raises(ValueError, match="n_buckets"):
        evaluate(emb, data2, EvaluationSettings(k=5))


def test_validation():
    emb, present, data = make_case(7, n=40)
    with pytest.raises(ValueError, match="embeddings"):
        evaluate(emb[:-1], data)
    with pytest.raises(ValueError, match="present"):
        evaluate(emb, data, present=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="pairs_in"):
        EvaluationData(pairs_in=[[0, 40]], pairs_out=data.pairs_out,
                       hard_negative_pairs=data.hard_negative_pairs,
                       artist_labels=data.artist_labels, genre_labels=data.genre_labels,
                       train_counts=data.train_counts)
    with pytest.raises(ValueError, match="genre_labels"):
        EvaluationData(pairs_in=data.pairs_in, pairs_out=data.pairs_out,
                       hard_negative_pairs=data.hard_negative_pairs,
                       artist_labels=data.artist_labels, genre_labels=data.genre_labels[:-1],
                       train_counts=data.train_counts)
    with pytest.raises(ValueError, match="train_counts"):
        EvaluationData(pairs_in=data.pairs_in, pairs_out=data.pairs_out,
                       hard_negative_pairs=data.hard_negative_pairs,
                       artist_labels=data.artist_labels, genre_labels=data.genre_labels,
                       train_counts=-data.train_counts)
    with pytest.raises(ValueError, match="coherence_k"):
        EvaluationSettings(coherence_k=0)
    with pytest.raises(ValueError, match="seed"):
        EvaluationSettings(seed=-1)


def _nan(values):
    return [math.nan if v is None else v for v in values]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(8, 60), k=st.integers(1, 12))
def test_property_relabelling_songs_changes_no_metric(seed, n, k):
    # Gaussian vectors: ties have probability zero, so the neighbour order is unique.
    # Samples cover every song (sample sizes >= n), otherwise a relabelling would
    # legitimately draw different songs.
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, 4))
    present = rng.random(n) > 0.1
    data = EvaluationData(
        pairs_in=rng.integers(0, n, (30, 2)), pairs_out=rng.integers(0, n, (20, 2)),
        hard_negative_pairs=rng.integers(0, n, (10, 2)),
        artist_labels=rng.integers(-1, n // 3 + 1, n), genre_labels=rng.integers(-1, 3, n),
        train_counts=rng.integers(0, 50, n))
    cfg = EvaluationSettings(k=k, coherence_sample=n, ch_sample=n, n_buckets=3)
    perm = rng.permutation(n)  # old song i becomes song perm[i]
    inverse = np.argsort(perm)
    moved = EvaluationData(
        pairs_in=perm[data.pairs_in], pairs_out=perm[data.pairs_out],
        hard_negative_pairs=perm[data.hard_negative_pairs],
        artist_labels=data.artist_labels[inverse], genre_labels=data.genre_labels[inverse],
        train_counts=data.train_counts[inverse])
    a = evaluate(emb, data, cfg, present=present)
    b = evaluate(emb[inverse], moved, cfg, present=present[inverse])
    for key in METRIC_KEYS:
        if a.metrics[key] is None:
            assert b.metrics[key] is None, key
        else:
            assert b.metrics[key] == pytest.approx(a.metrics[key], rel=1e-6), key
    assert b.buckets["edges"] == a.buckets["edges"]
    for key in ("by_target", "by_query"):
        assert b.buckets[key]["pairs"] == a.buckets[key]["pairs"]
        for name in ("hitrate", "ndcg"):
            assert _nan(b.buckets[key][name]) == pytest.approx(_nan(a.buckets[key][name]),
                                                               nan_ok=True)
    for key in ("ndcg", "hitrate", "hardneg", "coherence_genre", "coherence_artist"):
        value = a.metrics[key]
        assert value is None or 0.0 <= value <= 1.0
    if a.metrics["ndcg"] is not None:
        assert a.metrics["ndcg"] <= a.metrics["hitrate"] + 1e-12
