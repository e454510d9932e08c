"""metrics.knn: exact cosine kNN table against a brute-force numpy ranking."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics.knn import KnnTable, knn_table
from tests.test_metrics_reference import brute_knn, cosine_matrix, present_mask

ATOL = 1e-5  # float32 search vs float64 reference


def assert_table_correct(table, embeddings, k, present=None):
    """Tie-aware exactness check: valid whatever order faiss gives equal scores.

    For every query: neighbours are distinct present songs other than itself, as many as
    there are candidates (up to k), padded with -1/nan; each score is the true cosine of
    that neighbour; and the score sequence equals the brute-force top-k sequence, i.e.
    nothing better was missed.
    """
    ok = present_mask(embeddings, present)
    cos = cosine_matrix(embeddings)
    _, ref_sims = brute_knn(embeddings, table.queries, k, present)
    assert table.neighbours.shape == table.scores.shape == (table.queries.size, k)
    assert table.neighbours.dtype == np.int64 and table.scores.dtype == np.float32
    for row, q in enumerate(table.queries):
        ids, sims = table.neighbours[row], table.scores[row]
        expected_n = min(k, int(ok.sum()) - 1) if ok[q] else 0
        valid = ids >= 0
        assert valid.sum() == expected_n, (q, ids)
        assert valid[:expected_n].all()
        assert np.isnan(sims[~valid]).all()
        got = ids[valid]
        assert len(set(got.tolist())) == got.size
        assert q not in got
        assert ok[got].all()
        np.testing.assert_allclose(sims[valid], cos[q, got], atol=ATOL)
        np.testing.assert_allclose(sims[valid], ref_sims[row, :expected_n], atol=ATOL)
        assert bool(table.query_present[row]) == bool(ok[q])


def test_matches_bruteforce_ids_exactly_on_random_data():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((400, 16))
    queries = rng.integers(0, 400, 150)
    k = 12
    table = knn_table(emb, queries, k=k)
    ref_ids, ref_sims = brute_knn(emb, table.queries, k)
    # The comparison of ids is only meaningful without near-ties in the reference.
    gaps = -np.diff(np.sort(cosine_matrix(emb)[table.queries], axis=1)[:, ::-1][:, :k + 2])
    assert gaps.min() > 1e-6
    np.testing.assert_array_equal(table.queries, np.unique(queries))
    np.testing.assert_array_equal(table.neighbours, ref_ids)
    np.testing.assert_allclose(table.scores, ref_sims, atol=ATOL)


@pytest.mark.parametrize("batch_size", [1, 7, 64, 8192])
def test_batching_does_not_change_the_result(batch_size):
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((120, 5)).astype(np.float32)
    whole = knn_table(emb, np.arange(120), k=9)
    batched = knn_table(emb, np.arange(120), k=9, batch_size=batch_size)
    np.testing.assert_array_equal(batched.neighbours, whole.neighbours)
    np.testing.assert_array_equal(batched.scores, whole.scores)


def test_present_mask_and_zero_rows_are_never_neighbours():
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((60, 4))
    emb[[3, 17]] = 0.0
    present = np.ones(60, dtype=bool)
    present[[5, 6, 40]] = False
    table = knn_table(emb, np.arange(60), k=10, present=present)
    absent = [3, 5, 6, 17, 40]
    assert not np.isin(table.neighbours, absent).any()
    for song in absent:
        row = table.rows([song])[0]
        assert (table.neighbours[row] == -1).all()
        assert np.isnan(table.scores[row]).all()
        assert not table.query_present[row]
    assert_table_correct(table, emb, 10, present)


def test_k_larger_than_number_of_candidates_pads_with_minus_one():
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((6, 3))
    present = np.array([True, True, True, True, False, True])
    table = knn_table(emb, [0, 4], k=8, present=present)
    row0 = table.neighbours[0]
    assert (row0[:4] >= 0).all() and (row0[4:] == -1).all()
    assert sorted(row0[:4].tolist()) == [1, 2, 3, 5]
    assert np.isnan(table.scores[0, 4:]).all()
    assert (table.neighbours[1] == -1).all()
    assert_table_correct(table, emb, 8, present)


def test_single_present_song_has_no_neighbours_but_is_present():
    emb = np.zeros((4, 2))
    emb[2] = [1.0, 2.0]
    table = knn_table(emb, [0, 2], k=3)
    assert (table.neighbours == -1).all()
    assert table.query_present.tolist() == [False, True]


def test_duplicate_vectors_self_removed_wherever_it_appears():
    rng = np.random.default_rng(4)
    emb = rng.standard_normal((30, 6))
    emb[1:6] = emb[0] * np.array([1.0, 2.0, 0.5, 3.0, 1.0])[:, None]  # 6 copies of one direction
    table = knn_table(emb, np.arange(6), k=3)
    for row, q in enumerate(range(6)):
        ids = table.neighbours[row]
        assert q not in ids
        assert set(ids.tolist()) <= set(range(6)) - {q}
        np.testing.assert_allclose(table.scores[row], 1.0, atol=ATOL)
    # k + 1 >= copies: every other copy, then the true next-best song.
    table = knn_table(emb, [0], k=7)
    assert set(table.neighbours[0, :5].tolist()) == {1, 2, 3, 4, 5}
    assert_table_correct(table, emb, 7)


def test_exact_ties_go_to_the_lower_song_id():
    emb = np.random.default_rng(8).standard_normal((40, 5))
    emb[[7, 2, 30, 11, 25]] = emb[19]  # six bit-identical rows: equal cosines to any query
    table = knn_table(emb, [19, 2], k=4)
    assert table.queries.tolist() == [2, 19]
    assert table.neighbours.tolist() == [[7, 11, 19, 25], [2, 7, 11, 25]]


def test_near_ties_do_not_depend_on_the_thread_count():
    # Clusters of near-copies, as Word2Vec gives rare songs that share their contexts: float32 inner
    # products of such rows differ in the last bits, and faiss's BLAS sums in an order that follows the
    # thread count (1 vs 2 threads reordered 1,100 of these 4,000 rows before the float64 re-scoring).
    rng = np.random.default_rng(9)
    emb = (rng.standard_normal((400, 100))[rng.integers(0, 400, 4000)]
           + 1e-4 * rng.standard_normal((4000, 100))).astype(np.float32)
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = knn_table(emb, np.arange(4000), k=20)
        faiss.omp_set_num_threads(2)
        two = knn_table(emb, np.arange(4000), k=20)
    finally:
        faiss.omp_set_num_threads(before)
    np.testing.assert_array_equal(one.neighbours, two.neighbours)
    np.testing.assert_array_equal(one.scores, two.scores)


def test_real_data_with_ties_digits():
    # sklearn's bundled digits (1797 x 64 small integers): a real data set, with exact
    # duplicate images and many tied cosines.
    from sklearn.datasets import load_digits

    emb = load_digits().data
    rng = np.random.default_rng(5)
    queries = rng.choice(emb.shape[0], 200, replace=False)
    table = knn_table(emb, queries, k=20)
    assert_table_correct(table, emb, 20)


def test_no_queries_gives_an_empty_table():
    table = knn_table(np.eye(3), np.array([], dtype=np.int64), k=2)
    assert table.neighbours.shape == (0, 2) and table.queries.shape == (0,)
    assert (table.rows([0, 1, 2]) == -1).all()


def test_rows_lookup_and_read_only():
    emb = np.random.default_rng(6).standard_normal((10, 3))
    table = knn_table(emb, [7, 2, 2, 9], k=2)
    assert table.queries.tolist() == [2, 7, 9]
    assert table.rows([9, 2, 3, 7]).tolist() == [2, 0, -1, 1]
    assert table.rows(np.array([[2, 3]])).shape == (1, 2)
    with pytest.raises(ValueError, match="song_ids"):
        table.rows([10])
    with pytest.raises(ValueError):
        table.neighbours[0, 0] = 5


def test_faiss_thread_setting_is_left_alone():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        knn_table(np.random.default_rng(7).standard_normal((50, 4)), np.arange(50), k=3)
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("kwargs, match", [
    ({"embeddings": np.ones(5)}, "embeddings"),
    ({"embeddings": np.array([[1.0, np.nan], [1.0, 2.0]])}, "non-finite"),
    ({"embeddings": np.ones((3, 2), dtype=bool)}, "embeddings"),
    ({"queries": [3]}, "queries"),
    ({"queries": [-1]}, "queries"),
    ({"queries": [0.5]}, "queries"),
    ({"k": 0}, "k"),
    ({"k": True}, "k"),
    ({"present": np.ones(2, dtype=bool)}, "present"),
    ({"present": np.ones(3)}, "present"),
    ({"batch_size": 0}, "batch_size"),
])
def test_invalid_arguments_raise_value_error_naming_them(kwargs, match):
    args = {"embeddings": np.ones((3, 2)), "queries": [0, 1], "k": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        knn_table(**args)


def test_table_constructor_validates():
    with pytest.raises(ValueError, match="sorted and unique"):
        KnnTable(queries=np.array([2, 1]), neighbours=np.zeros((2, 1), dtype=np.int64),
                 scores=np.zeros((2, 1)), k=1, n_songs=3)
    with pytest.raises(ValueError, match="neighbours"):
        KnnTable(queries=np.array([1]), neighbours=np.zeros((1, 2), dtype=np.int64),
                 scores=np.zeros((1, 2)), k=1, n_songs=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 40), d=st.integers(1, 6), k=st.integers(1, 45),
       seed=st.integers(0, 2**32 - 1), p_absent=st.sampled_from([0.0, 0.2, 0.6]),
       integer_grid=st.booleans())
def test_property_matches_bruteforce(n, d, k, seed, p_absent, integer_grid):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, d))
    if integer_grid:  # small integer vectors: zero rows, duplicates and exact ties
        emb = np.round(emb).astype(np.int64)
    present = rng.random(n) >= p_absent
    queries = rng.integers(0, n, rng.integers(0, 2 * n + 1))
    table = knn_table(emb, queries, k=k, present=present, batch_size=int(rng.integers(1, 20)))
    np.testing.assert_array_equal(table.queries, np.unique(queries))
    assert_table_correct(table, emb, k, present)
