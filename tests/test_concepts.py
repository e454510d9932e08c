"""metrics.concepts: concept vectors, S and A, betweenness, the tree, structure and alignment tables.

References are independent: scikit-learn fits and scores, networkx for betweenness and graph
structure, plain-Python loops for S and for the literal greedy tree algorithm, and a planted
genre -> sub-genre structure the mined tree must recover.
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, log_loss

from metrics import concepts as mc

# --------------------------------------------------------------------------------------------------
# helpers


def _csr(concepts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(concepts) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in concepts], out=offsets[1:])
    return offsets, np.concatenate(concepts).astype(np.int64)


def _clustered(seed: int = 0, n_clusters: int = 6, per: int = 40, background: int = 300, d: int = 8):
    """Normalised points in clusters plus background; one concept per cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d)) * 3
    X = np.vstack([c + rng.normal(size=(per, d)) for c in centres] + [rng.normal(size=(background, d)) * 3])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    concepts = [np.arange(i * per, (i + 1) * per) for i in range(n_clusters)]
    return X, concepts


def planted_hierarchy(seed: int = 0, genres: int = 5, subgenres: int = 4, per: int = 60, d: int = 16,
                      background: int = 1500):
    """Songs around sub-genre centroids, sub-genre centroids near their genre centroid.

    Concepts = every genre (its sub-genres' songs) and every sub-genre, in a shuffled order.
    Returns the L2-normalised embeddings, the CSR concepts, the planted parent of every concept
    (-1 for genres) and its genre (cluster).
    """
    rng = np.random.default_rng(seed)
    genre_centres = rng.normal(size=(genres, d)) * 3.0
    blocks, sub_members, start = [], [], 0
    for g in range(genres):
        for _ in range(subgenres):
            centre = genre_centres[g] + rng.normal(size=d) * 2.0
            blocks.append(centre + rng.normal(size=(per, d)) * 0.3)
            sub_members.append(np.arange(start, start + per))
            start += per
    blocks.append(rng.normal(size=(background, d)) * 3.0)  # songs in no concept
    X = np.vstack(blocks)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    concepts, true_parent, cluster = [], [], []
    for g in range(genres):
        concepts.append(np.concatenate(sub_members[g * subgenres : (g + 1) * subgenres]))
        true_parent.append(-1)
        cluster.append(g)
    for g in range(genres):
        for s in range(subgenres):
            concepts.append(sub_members[g * subgenres + s])
            true_parent.append(g)
            cluster.append(g)
    # Shuffle so that the planted order (genres first) cannot help tie-breaking.
    perm = rng.permutation(len(concepts))
    position = np.argsort(perm)
    concepts = [concepts[p] for p in perm]
    true_parent = np.array([position[true_parent[p]] if true_parent[p] >= 0 else -1 for p in perm])
    cluster = np.array(cluster)[perm]
    offsets, members = _csr(concepts)
    return X, offsets, members, true_parent, cluster


# --------------------------------------------------------------------------------------------------
# concept vectors


def test_concept_split_sizes_disjoint_and_seeded() -> None:
    positives = np.arange(100, 150)
    eligible = np.arange(0, 400)
    parts = mc.concept_split(positives, eligible, k=3, seed=11)
    pos = [parts[s][0] for s in ("train", "validation", "test")]
    neg = [parts[s][1] for s in ("train", "validation", "test")]
    assert [p.size for p in pos] == [35, 5, 10]  # 70/10/20 of 50
    assert [n.size for n in neg] == [35, 5, 10]  # negative_ratio 1
    assert sorted(np.concatenate(pos).tolist()) == positives.tolist()
    all_neg = np.concatenate(neg)
    assert np.unique(all_neg).size == all_neg.size
    assert not np.isin(all_neg, positives).any() and np.isin(all_neg, eligible).all()
    again = mc.concept_split(positives, eligible, k=3, seed=11)
    other = mc.concept_split(positives, eligible, k=4, seed=11)
    assert all(np.array_equal(parts[s][i], again[s][i]) for s in parts for i in range(2))
    assert not np.array_equal(parts["train"][1], other["train"][1])
    ratio = mc.concept_split(positives, eligible, k=3, seed=11, negative_ratio=3)
    assert sum(ratio[s][1].size for s in ratio) == 150


def test_concept_vectors_equal_independent_sklearn_fits() -> None:
    X, concepts = _clustered()
    offsets, members = _csr(concepts)
    cs = (0.1, 1.0, 10.0)
    vectors = mc.learn_concept_vectors(X, offsets, members, seed=5, cs=cs, max_iter=5000, tol=1e-10)
    default_tol = mc.learn_concept_vectors(X, offsets, members, seed=5, cs=cs)
    eligible = np.arange(X.shape[0])
    for k, positives in enumerate(concepts):
        parts = mc.concept_split(positives, eligible, k=k, seed=5)

        def xy(split: str, parts: dict = parts) -> tuple[np.ndarray, np.ndarray]:
            p, n = parts[split]
            return X[np.r_[p, n]], np.r_[np.ones(p.size), np.zeros(n.size)]

        # Validation picks C by class-balanced log-loss: refit every C from scratch with sklearn.
        x_val, y_val = xy("validation")
        weights = np.where(y_val == 1, 0.5 / y_val.sum(), 0.5 / (1 - y_val).sum())
        fits = {c: LogisticRegression(C=c, class_weight="balanced", max_iter=5000, tol=1e-10).fit(*xy("train"))
                for c in cs}
        losses = {c: log_loss(y_val, m.predict_proba(x_val)[:, 1], sample_weight=weights) for c, m in fits.items()}
        best = min(cs, key=lambda c: (losses[c], c))
        assert vectors.c[k] == best
        ref = fits[best]
        np.testing.assert_allclose(vectors.weights[k], ref.coef_[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(vectors.bias[k], ref.intercept_[0], atol=1e-5)
        # At the default tolerance the probabilities are those of the exact optimum to within 0.01.
        if default_tol.c[k] == best:
            np.testing.assert_allclose(expit(X @ default_tol.weights[k] + default_tol.bias[k]),
                                       ref.predict_proba(X)[:, 1], atol=1e-2)
        x_test, y_test = xy("test")
        assert vectors.accuracy[k] == pytest.approx(balanced_accuracy_score(y_test, ref.predict(x_test)))
        assert np.array_equal(vectors.test_members[vectors.test_offsets[k] : vectors.test_offsets[k + 1]],
                              np.sort(parts["test"][0]))
        assert tuple(vectors.n_positive[k]) == (28, 4, 8)
    assert (vectors.accuracy > 0.9).all()  # well separated clusters are learned


def test_concept_vectors_do_not_depend_on_jobs_or_batches() -> None:
    # 260 concepts: above the in-process threshold, so n_jobs=2 really runs joblib workers.
    rng = np.random.default_rng(2)
    X = rng.normal(size=(600, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    concepts = [rng.choice(600, size=rng.integers(5, 12), replace=False) for _ in range(260)]
    offsets, members = _csr(concepts)
    done: list[int] = []
    serial = mc.learn_concept_vectors(X, offsets, members, seed=1, cs=(1.0,), n_jobs=1, batch_size=7,
                                      on_batch=done.append)
    parallel = mc.learn_concept_vectors(X, offsets, members, seed=1, cs=(1.0,), n_jobs=2, batch_size=50)
    assert sum(done) == 260
    for name in ("weights", "bias", "accuracy", "c", "n_positive", "test_offsets", "test_members"):
        np.testing.assert_array_equal(getattr(serial, name), getattr(parallel, name), err_msg=name)
    sub = serial.subset([3, 1])
    assert np.array_equal(sub.weights, serial.weights[[3, 1]])
    assert np.array_equal(sub.test_members, np.r_[serial.test_members[serial.test_offsets[3] : serial.test_offsets[4]],
                                                  serial.test_members[serial.test_offsets[1] : serial.test_offsets[2]]])


def test_concept_vectors_reject_bad_input() -> None:
    X, concepts = _clustered()
    with pytest.raises(ValueError, match="concept 1 has 4 distinct members"):
        mc.learn_concept_vectors(X, *_csr([concepts[0], np.array([1, 2, 3, 4, 4])]))
    with pytest.raises(ValueError, match="offsets"):
        mc.learn_concept_vectors(X, np.array([0, 5]), np.arange(6))
    with pytest.raises(ValueError, match="members"):
        mc.learn_concept_vectors(X, np.array([0, 5]), np.array([0, 1, 2, 3, 10_000]))
    with pytest.raises(ValueError, match="finite"):
        bad = X.copy()
        bad[0, 0] = np.nan
        mc.learn_concept_vectors(bad, *_csr(concepts))
    with pytest.raises(ValueError, match="cs"):
        mc.learn_concept_vectors(X, *_csr(concepts), cs=(0.0,))


# --------------------------------------------------------------------------------------------------
# S and A


def test_similarity_matches_loops_and_adjacency_excludes_diagonal() -> None:
    X, concepts = _clustered(seed=3)
    vectors = mc.learn_concept_vectors(X, *_csr(concepts), seed=0, cs=(10.0,))
    S = mc.concept_similarity(X, vectors)
    K = len(vectors)
    for i, j in itertools.product(range(K), range(K)):
        rows = vectors.test_members[vectors.test_offsets[i] : vectors.test_offsets[i + 1]]
        expected = np.mean([expit(X[r] @ vectors.weights[j] + vectors.bias[j]) for r in rows])
        assert S[i, j] == pytest.approx(expected, abs=1e-12)
    A = mc.concept_adjacency(S)
    assert not A.diagonal().any()
    off = ~np.eye(K, dtype=bool)
    assert np.array_equal(A[off], (S > 0.5)[off])
    # Distinct clusters: each concept's songs fire its own classifier, not the others'.
    assert (np.diag(S) > 0.8).all() and not A.any()


def test_similarity_is_chunk_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    X, concepts = _clustered(seed=4)
    vectors = mc.learn_concept_vectors(X, *_csr(concepts), seed=0, cs=(1.0,))
    whole = mc.concept_similarity(X, vectors)
    monkeypatch.setattr(mc, "_SIMILARITY_ELEMENTS", 7 * len(vectors))  # 7 rows per block, splitting concepts
    np.testing.assert_allclose(mc.concept_similarity(X, vectors), whole, rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# betweenness


def _networkx_betweenness(A: np.ndarray) -> np.ndarray:
    graph = nx.Graph()
    graph.add_nodes_from(range(A.shape[0]))
    graph.add_edges_from((int(i), int(j)) for i, j in np.argwhere(A | A.T) if i != j)
    values = nx.betweenness_centrality(graph)
    return np.array([values[i] for i in range(A.shape[0])])


@pytest.mark.parametrize("backend", mc.BETWEENNESS_BACKENDS)
def test_betweenness_equals_networkx(backend: str) -> None:
    rng = np.random.default_rng(0)
    for n, p in [(40, 0.08), (60, 0.2), (30, 0.5), (25, 0.03), (3, 1.0), (2, 1.0), (1, 0.0)]:
        A = rng.random((n, n)) < p  # directed and asymmetric, diagonal set at random: all must be handled
        np.testing.assert_allclose(mc.betweenness(A, backend=backend), _networkx_betweenness(A), atol=1e-12)
    with pytest.raises(ValueError, match="backend"):
        mc.betweenness(np.zeros((3, 3), dtype=bool), backend="graphviz")


def test_betweenness_split_over_processes_equals_networkx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mc, "_PARALLEL_MIN_WORK", 0)  # force the source-subset path on a small graph
    A = np.random.default_rng(4).random((80, 80)) < 0.1
    np.testing.assert_allclose(mc.betweenness(A, n_jobs=2), _networkx_betweenness(A), atol=1e-12)


def test_betweenness_of_a_star_is_its_centre() -> None:
    A = np.zeros((5, 5), dtype=bool)
    A[1:, 0] = True  # every leaf points to the hub
    b = mc.betweenness(A)
    assert b[0] == pytest.approx(1.0) and np.allclose(b[1:], 0.0)


# --------------------------------------------------------------------------------------------------
# the tree


def _literal_tree(S: np.ndarray, centrality: np.ndarray, min_sim: float) -> np.ndarray:
    """The algorithm as written: for each node, scan every already-added node."""
    order = sorted(range(len(centrality)), key=lambda i: (-centrality[i], i))
    parent = np.full(len(order), -1)
    added: list[int] = []
    for node in order:
        if added:
            best = max(added, key=lambda p: (S[p, node], -added.index(p)))
            if S[best, node] > min_sim:
                parent[node] = best
        added.append(node)
    return parent


def test_tree_equals_literal_algorithm() -> None:
    rng = np.random.default_rng(1)
    for trial in range(20):
        K = int(rng.integers(1, 40))
        S = rng.random((K, K))
        if trial % 3 == 0:
            S = np.round(S, 1)  # many ties in similarity
        centrality = np.round(rng.random(K), 1) if trial % 2 else rng.random(K)
        parent, order = mc.mine_tree(S, centrality, min_sim=0.3)
        assert np.array_equal(parent, _literal_tree(S, centrality, 0.3))
        assert sorted(order.tolist()) == list(range(K))
        assert parent[order[0]] == -1


def test_tree_hand_example() -> None:
    # Node 2 is most central, then 0, then 1, then 3.
    S = np.array([
        [1.0, 0.6, 0.3, 0.1],
        [0.2, 1.0, 0.1, 0.15],
        [0.9, 0.4, 1.0, 0.05],
        [0.0, 0.0, 0.0, 1.0],
    ])
    parent, order = mc.mine_tree(S, np.array([0.5, 0.2, 0.9, 0.0]), min_sim=0.2)
    assert order.tolist() == [2, 0, 1, 3]
    # 0 under 2 (S[2,0]=0.9); 1 under 0 (S[0,1]=0.6 > S[2,1]=0.4); 3: best S[p,3] = 0.15 <= 0.2 -> root.
    assert parent.tolist() == [2, 0, -1, -1]
    assert mc.tree_edges(parent).tolist() == [[2, 0], [0, 1]]


def test_random_tree_is_a_uniformly_seeded_tree() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 10, 200):
        parent = mc.random_tree(n, rng)
        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        graph.add_edges_from(mc.tree_edges(parent).tolist())
        assert nx.is_tree(graph) and (parent < 0).sum() == 1
    a = mc.random_tree(50, np.random.default_rng(3))
    b = mc.random_tree(50, np.random.default_rng(3))
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------------------------------
# structure and alignment


def _nx_structure(edges: np.ndarray, n: int) -> dict[str, int]:
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((int(a), int(b)) for a, b in edges if a != b)
    return {"edges": graph.number_of_edges(), "components": nx.number_connected_components(graph),
            "isolated": nx.number_of_isolates(graph)}


def test_graph_structure_equals_networkx() -> None:
    rng = np.random.default_rng(5)
    for n in (1, 7, 50):
        edges = rng.integers(0, n, size=(rng.integers(0, 3 * n), 2))
        assert mc.graph_structure(edges, n) == _nx_structure(edges, n)


def test_structure_table_rows() -> None:
    rng = np.random.default_rng(7)
    K = 30
    S = rng.random((K, K)) * 0.8
    A = mc.concept_adjacency(S)
    parent, _ = mc.mine_tree(S, mc.betweenness(A), min_sim=0.2)
    rows = {r["graph"]: r for r in mc.structure_table(S, A, parent, seed=1)}
    assert list(rows) == ["tree", "A", "sparse A", "top-1", "random sparse A", "random top-1"]
    m = int((parent >= 0).sum())
    assert rows["tree"]["edges"] == m
    assert rows["tree"]["components"] == (parent < 0).sum() and rows["tree"]["isolated"] == 0
    assert rows["A"] == {"graph": "A", **_nx_structure(np.argwhere(A), K), "density": rows["A"]["density"]}
    # Sparse A: the m pairs with the largest max(S_ij, S_ji).
    pairs = sorted(((max(S[i, j], S[j, i]), i, j) for i in range(K) for j in range(i + 1, K)), reverse=True)[:m]
    assert rows["sparse A"]["edges"] == m
    assert {k: rows["sparse A"][k] for k in ("components", "isolated")} == {
        k: v for k, v in _nx_structure(np.array([(i, j) for _, i, j in pairs]), K).items() if k != "edges"}
    masked = S.copy()
    np.fill_diagonal(masked, -1)
    top1 = np.stack([np.arange(K), masked.argmax(1)], 1)
    assert {k: rows["top-1"][k] for k in ("edges", "components", "isolated")} == _nx_structure(top1, K)
    assert rows["top-1"]["isolated"] == 0 and rows["random top-1"]["isolated"] == 0
    assert rows["random sparse A"]["edges"] == m
    assert rows["A"]["density"] == pytest.approx(rows["A"]["edges"] / (K * (K - 1) / 2))


def test_edge_similarity_against_sklearn_and_sets() -> None:
    from sklearn.metrics.pairwise import cosine_similarity

    rng = np.random.default_rng(0)
    dense = rng.poisson(0.7, size=(12, 9)).astype(float)
    dense[3] = 0  # an empty profile
    edges = np.array([(a, b) for a in range(12) for b in range(12) if a != b])
    cos = mc.edge_similarity(sp.csr_matrix(dense), edges, "cosine")
    np.testing.assert_allclose(cos, cosine_similarity(dense)[edges[:, 0], edges[:, 1]], atol=1e-12)
    jac = mc.edge_similarity(dense, edges, "jaccard")
    sets = [set(np.flatnonzero(row)) for row in dense]
    expected = [len(sets[a] & sets[b]) / len(sets[a] | sets[b]) if sets[a] | sets[b] else 0.0 for a, b in edges]
    np.testing.assert_allclose(jac, expected)
    with pytest.raises(ValueError, match="metric"):
        mc.edge_similarity(dense, edges, "euclid")


def test_alignment_tree_vs_random_trees() -> None:
    # Profiles: concept i's label is i // 5; a tree linking same-label concepts scores 1 on every edge.
    K = 40
    labels = np.arange(K) // 5
    profiles = sp.csr_matrix((np.ones(K), (np.arange(K), labels)), shape=(K, 8))
    parent = np.array([-1 if i % 5 == 0 else i - 1 for i in range(K)])
    (row,) = mc.alignment(parent, {"label": (profiles, "cosine")}, n_random=30, seed=0)
    assert row["tree"] == pytest.approx(1.0) and row["edges"] == K - 8
    # A random tree links same-label concepts with probability ~4/39.
    assert 0.0 < row["random_tree"] < 0.3 and row["random_tree_sd"] > 0
    empty = mc.alignment(np.full(3, -1), {"label": (np.eye(3), "cosine")}, n_random=2)
    assert empty[0]["tree"] is None and empty[0]["edges"] == 0


def test_accuracy_helpers() -> None:
    parent = np.array([-1, 0, 0, 1, -1])
    cluster = np.array([0, 0, 1, 0, 1])
    assert mc.edge_accuracy(parent, cluster) == pytest.approx(2 / 3)
    assert mc.edge_accuracy(np.full(3, -1), np.zeros(3)) is None
    truth = np.array([-1, 0, 3, 1, -1])
    assert mc.parent_accuracy(parent, truth) == pytest.approx(4 / 5)
    reversed_edge = np.array([1, -1, -1, -1, -1])  # truth says 1 -> 0, mined says 0 -> 1
    assert mc.parent_accuracy(reversed_edge, np.array([-1, 0, -1, -1, -1]), directed=False) == pytest.approx(4 / 5)
    assert mc.parent_accuracy(reversed_edge, np.array([-1, 0, -1, -1, -1])) == pytest.approx(3 / 5)


# --------------------------------------------------------------------------------------------------
# planted structure, end to end


def test_planted_genre_subgenre_structure_is_recovered() -> None:
    X, offsets, members, true_parent, cluster = planted_hierarchy(seed=0)
    vectors = mc.learn_concept_vectors(X, offsets, members, seed=0)
    assert (vectors.accuracy >= 0.7).all()
    S = mc.concept_similarity(X, vectors)
    A = mc.concept_adjacency(S)
    parent, _ = mc.mine_tree(S, mc.betweenness(A), min_sim=0.2)
    K = parent.size
    rng = np.random.default_rng(0)
    randoms = [mc.random_tree(K, rng) for _ in range(200)]
    edge = mc.edge_accuracy(parent, cluster)
    edge_random = float(np.mean([mc.edge_accuracy(r, cluster) for r in randoms]))
    exact = mc.parent_accuracy(parent, true_parent)
    exact_random = float(np.mean([mc.parent_accuracy(r, true_parent) for r in randoms]))
    sub = true_parent >= 0
    sub_exact = float(np.mean(parent[sub] == true_parent[sub]))
    print(f"\nplanted 5 genres x 4 sub-genres: same-genre edge accuracy {edge:.3f} (random tree {edge_random:.3f}); "
          f"exact parent accuracy {exact:.3f} (random tree {exact_random:.3f}); sub-genres under their genre "
          f"{sub_exact:.3f}")
    assert edge >= 0.85 and edge >= 4 * edge_random
    assert exact >= 0.6 and exact >= 10 * exact_random
    assert (parent[~sub] == -1).all()  # genres are not similar to one another: each heads a branch
    table = {r["graph"]: r for r in mc.structure_table(S, A, parent)}
    assert table["tree"]["components"] == 5 and table["tree"]["isolated"] == 0
