"""Concept hierarchies over an embedding space (Afchar, Hennequin, Guigue, ISMIR 2022; SPEC section 6).

A *concept* is a set of songs (a playlist, a tag, a genre, an artist). The pipeline:

1. :func:`learn_concept_vectors` - one concept activation vector (CAV) per concept: a scikit-learn
   logistic regression of the concept's songs against a seeded sample of other songs, on a 70/10/20
   split of both; validation picks the regularisation ``C``, test gives the balanced accuracy.
   Concepts are fitted in batches by joblib workers.
2. :func:`concept_similarity` - ``S[i, j]`` = mean over the test positives ``x`` of concept ``i`` of
   ``sigmoid(<w_j, x> + b_j)`` (bias included); :func:`concept_adjacency` - ``A[i, j] = S[i, j] > 1/2``,
   diagonal excluded.
3. :func:`betweenness` - betweenness centrality of the undirected graph of ``A`` (igraph, or rustworkx;
   equal to networkx's ``betweenness_centrality`` with its default normalisation).
4. :func:`mine_tree` - the greedy hierarchy of Heymann & Garcia-Molina: nodes in decreasing
   betweenness, each attached to the already-added node ``p`` maximising ``S[p, c]``, or to the root
   when that similarity is ``<= min_sim``.
5. :func:`structure_table` and :func:`alignment` - the paper's evaluations: sparsity and connectivity
   of the tree against graphs read directly off ``S`` / ``A`` and random graphs, and the mean
   similarity along tree edges under other sources of concept similarity against random trees.

Concepts are given in CSR form everywhere: ``offsets`` ``(K + 1,)`` and ``members`` (row indices of
the embedding matrix), concept ``k`` being ``members[offsets[k]:offsets[k + 1]]``. Trees are parent
arrays: ``parent[c]`` is the parent concept of ``c`` or ``-1`` for the (implicit) root.
Everything here is pure numpy / scipy / scikit-learn / igraph, without I/O.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.special import expit

__all__ = [
    "BETWEENNESS_BACKENDS",
    "ConceptVectors",
    "alignment",
    "betweenness",
    "concept_adjacency",
    "concept_similarity",
    "concept_split",
    "edge_accuracy",
    "edge_similarity",
    "graph_structure",
    "learn_concept_vectors",
    "mine_tree",
    "parent_accuracy",
    "random_tree",
    "structure_table",
    "tree_edges",
]

#: Fractions of the train / validation / test split of positives and of negatives.
SPLIT = (0.7, 0.1, 0.2)
#: Smallest concept that still has >= 3 training, 1 validation and 1 test example.
MIN_CONCEPT_SIZE = 5
_DEFAULT_CS = (0.1, 1.0, 10.0, 100.0)
# Below this many concepts learn_concept_vectors fits in-process whatever n_jobs.
_PARALLEL_MIN_CONCEPTS = 256
# Rows of test positives scored against every CAV at once in concept_similarity: bounds the
# temporary (rows, K) block to ~32 MB of float64 whatever K.
_SIMILARITY_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ConceptVectors:
    """Concept activation vectors of ``K`` concepts and how well they were learned.

    Attributes
    ----------
    weights : np.ndarray, shape (K, d), float64
        Normal vector ``w_k`` of each concept's separating hyperplane.
    bias : np.ndarray, shape (K,), float64
        Intercept ``b_k``; the concept's activation on ``x`` is ``sigmoid(<w_k, x> + b_k)``.
    accuracy : np.ndarray, shape (K,), float64
        Balanced accuracy (mean of the true-positive and true-negative rates) on the test split.
    validation_accuracy : np.ndarray, shape (K,), float64
        The same on the validation split (which chose ``c``; optimistic).
    c : np.ndarray, shape (K,), float64
        Inverse L2 regularisation strength chosen on validation log-loss.
    n_positive : np.ndarray, shape (K, 3), int64
        Positives in the train / validation / test splits.
    n_negative : np.ndarray, shape (K, 3), int64
        Sampled negatives in the train / validation / test splits.
    test_offsets, test_members : np.ndarray
        CSR of each concept's test positives (row indices of the embedding matrix); ``S`` averages
        over them, so ``S`` never scores a song a concept was trained on.
    """

    weights: np.ndarray
    bias: np.ndarray
    accuracy: np.ndarray
    validation_accuracy: np.ndarray
    c: np.ndarray
    n_positive: np.ndarray
    n_negative: np.ndarray
    test_offsets: np.ndarray
    test_members: np.ndarray

    def __len__(self) -> int:
        return int(self.bias.shape[0])

    def subset(self, keep: npt.ArrayLike) -> ConceptVectors:
        """The concepts selected by ``keep`` (a boolean mask or indices), in that order."""
        idx = np.arange(len(self))[np.asarray(keep)]
        starts, ends = self.test_offsets[idx], self.test_offsets[idx + 1]
        sizes = ends - starts
        offsets = np.zeros(idx.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        members = np.concatenate([self.test_members[s:e] for s, e in zip(starts, ends)]) if idx.size else (
            np.zeros(0, dtype=np.int64))
        return ConceptVectors(
            weights=self.weights[idx], bias=self.bias[idx], accuracy=self.accuracy[idx],
            validation_accuracy=self.validation_accuracy[idx], c=self.c[idx], n_positive=self.n_positive[idx],
            n_negative=self.n_negative[idx], test_offsets=offsets, test_members=members.astype(np.int64),
        )


# --------------------------------------------------------------------------------------------------
# 1. Concept activation vectors


def learn_concept_vectors(
    embeddings: npt.ArrayLike,
    offsets: npt.ArrayLike,
    members: npt.ArrayLike,
    *,
    eligible: npt.ArrayLike | None = None,
    seed: int = 0,
    negative_ratio: float = 1.0,
    cs: Sequence[float] = _DEFAULT_CS,
    max_iter: int = 500,
    tol: float = 1e-4,
    n_jobs: int | None = 1,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> ConceptVectors:
    """Fit one logistic regression per concept (its songs vs a seeded sample of other songs).

    For concept ``k`` with ``n`` distinct members, ``round(negative_ratio * n)`` negatives are drawn
    uniformly without replacement from the eligible rows outside the concept. Positives and negatives
    are each shuffled and split 70/10/20 (at least one validation and one test example each). A
    :class:`sklearn.linear_model.LogisticRegression` (lbfgs, L2, ``class_weight="balanced"``) is fitted
    on the training split for every ``C`` in ``cs`` (warm-started); the ``C`` with the lowest
    class-balanced validation log-loss is kept (ties: the smaller ``C``). The balanced accuracy of that
    model on the test split is the concept's score.

    Randomness is drawn from ``numpy.random.default_rng([seed, k])`` for concept ``k``, so results do
    not depend on ``n_jobs`` nor ``batch_size``.

    Parameters
    ----------
    embeddings : array_like, shape (n, d)
        Feature rows (finite), e.g. L2-normalised song vectors.
    offsets : array_like of int, shape (K + 1,)
        CSR offsets of the concepts into ``members`` (non-decreasing, ``offsets[0] == 0``).
    members : array_like of int
        Row indices of ``embeddings``; duplicates inside a concept are ignored. Every concept needs at
        least :data:`MIN_CONCEPT_SIZE` distinct members.
    eligible : array_like of bool, shape (n,), optional
        Rows that may be drawn as negatives (default: all). Members need not be eligible.
    seed : int
        Seed of the negative samples and the splits.
    negative_ratio : float
        Negatives per positive (``> 0``; 1 gives balanced data, as the paper's balanced batches).
    cs : sequence of float
        Candidate inverse regularisation strengths (``> 0``).
    max_iter, tol : int, float
        lbfgs iteration cap and stopping tolerance of every fit (scikit-learn's meaning).
    n_jobs : int or None
        joblib workers (``-1`` = all cores; ``1`` or ``None`` runs in this process, as does any call
        with fewer than 256 concepts, where starting workers costs more than it saves).
    batch_size : int
        Concepts per joblib task (amortises the per-task overhead).
    on_batch : callable, optional
        Called with the number of concepts of each finished batch (progress bars).

    Returns
    -------
    ConceptVectors
        In the order of the concepts.
    """
    X = np.asarray(embeddings)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D (n, d) array, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating) or not np.isfinite(X).all():
        raise ValueError("embeddings must be finite floats")
    concepts = _as_csr(offsets, members, X.shape[0])
    eligible_mask = np.ones(X.shape[0], dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    if eligible_mask.shape != (X.shape[0],):
        raise ValueError(f"eligible must have shape ({X.shape[0]},), got {eligible_mask.shape}")
    if not negative_ratio > 0:
        raise ValueError(f"negative_ratio must be > 0, got {negative_ratio}")
    cs = tuple(sorted(float(c) for c in cs))
    if not cs or min(cs) <= 0:
        raise ValueError(f"cs must be a non-empty sequence of positive numbers, got {cs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for k, concept in enumerate(concepts):
        if concept.size < MIN_CONCEPT_SIZE:
            raise ValueError(f"concept {k} has {concept.size} distinct members; expected >= {MIN_CONCEPT_SIZE}")
    eligible_rows = np.flatnonzero(eligible_mask)
    tasks = [list(range(start, min(start + batch_size, len(concepts)))) for start in range(0, len(concepts), batch_size)]
    fit: dict[str, Any] = {"cs": cs, "max_iter": int(max_iter), "tol": float(tol)}

    def batch(ks: list[int]) -> list[dict[str, Any]]:
        # Splits are drawn and rows gathered here, so a worker receives only the rows it fits on,
        # not the whole matrix (which joblib would hash and memory-map for every task).
        return [_concept_data(X, eligible_rows, k, concepts[k], seed=int(seed), negative_ratio=float(negative_ratio))
                for k in ks]

    results: list[dict[str, Any]] = []
    # Starting joblib workers costs about as much as fitting ~100 concepts: not worth it for few.
    if n_jobs in (None, 1) or len(concepts) < _PARALLEL_MIN_CONCEPTS:
        for ks in tasks:
            results.extend(_fit_batch(batch(ks), **fit))
            if on_batch is not None:
                on_batch(len(ks))
    else:
        from joblib import Parallel, delayed

        # The generator is consumed as workers free up, so gathering overlaps with fitting.
        parallel = Parallel(n_jobs=n_jobs, return_as="generator")
        for ks, fitted in zip(tasks, parallel(delayed(_fit_batch)(batch(ks), **fit) for ks in tasks)):
            results.extend(fitted)
            if on_batch is not None:
                on_batch(len(ks))
    return _collect(results, X.shape[1])


def _as_csr(offsets: npt.ArrayLike, members: npt.ArrayLike, n_rows: int) -> list[np.ndarray]:
    offsets = np.asarray(offsets)
    members = np.asarray(members)
    if offsets.ndim != 1 or offsets.size < 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError("offsets must be a 1-D integer array of K + 1 positions")
    if offsets[0] != 0 or offsets[-1] != members.size or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must start at 0, be non-decreasing and end at len(members)")
    if members.size and (not np.issubdtype(members.dtype, np.integer) or members.min() < 0 or members.max() >= n_rows):
        raise ValueError(f"members must be integer row indices in [0, {n_rows})")
    return [np.unique(members[offsets[k] : offsets[k + 1]]).astype(np.int64) for k in range(offsets.size - 1)]


def _split_sizes(n: int) -> tuple[int, int, int]:
    """(train, validation, test) sizes of ``n`` examples: 70/10/20, >= 1 validation and test."""
    n_test = max(1, round(SPLIT[2] * n))
    n_val = max(1, round(SPLIT[1] * n))
    return n - n_val - n_test, n_val, n_test


def _fit_batch(items: list[dict[str, Any]], *, cs: tuple[float, ...], max_iter: int, tol: float) -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_limits

    # These fits are tiny: multi-threaded BLAS only adds synchronisation (measured 13x slower with 2
    # threads than with 1), and parallelism comes from running batches in separate workers.
    with threadpool_limits(limits=1):
        return [_fit_concept(item, cs=cs, max_iter=max_iter, tol=tol) for item in items]


def _sample_negatives(rng: np.random.Generator, eligible_rows: np.ndarray, positives: np.ndarray, n: int) -> np.ndarray:
    # Drawing n + |positives| distinct eligible rows leaves >= n outside the concept (when that many
    # exist) without materialising the complement of the concept, which is huge for big catalogues.
    draw = rng.choice(eligible_rows.size, size=min(eligible_rows.size, n + positives.size), replace=False)
    rows = eligible_rows[draw]
    rows = rows[~np.isin(rows, positives)]
    return rows[:n]


def concept_split(
    positives: npt.ArrayLike, eligible_rows: npt.ArrayLike, *, k: int, seed: int = 0, negative_ratio: float = 1.0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The examples concept ``k`` is trained, validated and tested on (as :func:`learn_concept_vectors`).

    Parameters
    ----------
    positives : array_like of int
        Distinct member rows of the concept.
    eligible_rows : array_like of int
        Sorted distinct rows that may be drawn as negatives.
    k, seed : int
        The concept's position and the global seed: randomness comes from ``default_rng([seed, k])``.
    negative_ratio : float
        Negatives per positive (at least 3 negatives are drawn).

    Returns
    -------
    dict
        ``{"train" | "validation" | "test": (positive_rows, negative_rows)}``; 70/10/20 of each, with
        at least one validation and one test example of each class.
    """
    positives = np.asarray(positives, dtype=np.int64)
    eligible_rows = np.asarray(eligible_rows, dtype=np.int64)
    rng = np.random.default_rng([seed, k])
    negatives = _sample_negatives(rng, eligible_rows, positives, max(3, round(negative_ratio * positives.size)))
    if negatives.size < 3:
        raise ValueError(f"concept {k}: only {negatives.size} rows outside it can be negatives; expected >= 3")
    pos = rng.permutation(positives)
    neg = rng.permutation(negatives)
    p_tr, p_va, _ = _split_sizes(pos.size)
    n_tr, n_va, _ = _split_sizes(neg.size)
    return {
        "train": (pos[:p_tr], neg[:n_tr]),
        "validation": (pos[p_tr : p_tr + p_va], neg[n_tr : n_tr + n_va]),
        "test": (pos[p_tr + p_va :], neg[n_tr + n_va :]),
    }


def _concept_data(X: np.ndarray, eligible_rows: np.ndarray, k: int, positives: np.ndarray, *, seed: int,
                  negative_ratio: float) -> dict[str, Any]:
    parts = concept_split(positives, eligible_rows, k=k, seed=seed, negative_ratio=negative_ratio)
    data = {}
    for name, (p, n) in parts.items():
        data[name] = (X[np.concatenate([p, n])].astype(np.float64), np.r_[np.ones(p.size), np.zeros(n.size)])
    return {
        "k": k,
        "data": data,
        "n_positive": tuple(parts[name][0].size for name in ("train", "validation", "test")),
        "n_negative": tuple(parts[name][1].size for name in ("train", "validation", "test")),
        "test": np.sort(parts["test"][0]),
    }


def _fit_concept(item: dict[str, Any], *, cs: tuple[float, ...], max_iter: int, tol: float) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    data = item["data"]
    model = LogisticRegression(class_weight="balanced", max_iter=max_iter, tol=tol, warm_start=True)
    best: tuple[float, float, np.ndarray, float] | None = None
    x_val, y_val = data["validation"]
    for c in cs:
        model.set_params(C=c)
        with warnings.catch_warnings():
            # A capped lbfgs run still gives a usable hyperplane; validation judges it.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(*data["train"])
        loss = _balanced_log_loss(x_val @ model.coef_[0] + model.intercept_[0], y_val)
        if best is None or loss < best[0]:
            best = (loss, c, model.coef_[0].copy(), float(model.intercept_[0]))
    assert best is not None
    _, c, w, b = best
    return {
        **{key: value for key, value in item.items() if key != "data"},
        "w": w,
        "b": b,
        "c": c,
        "accuracy": _balanced_accuracy(data["test"][0] @ w + b, data["test"][1]),
        "validation_accuracy": _balanced_accuracy(x_val @ w + b, y_val),
    }


def _balanced_log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    # -log sigmoid(z) = logaddexp(0, -z): stable for large |z|.
    loss = np.where(y == 1, np.logaddexp(0.0, -logits), np.logaddexp(0.0, logits))
    return 0.5 * float(loss[y == 1].mean() + loss[y == 0].mean())


def _balanced_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Balanced accuracy of ``logits > 0`` against 0/1 labels ``y`` (both ``(n,)``; both classes present)."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, logits > 0))  # logit > 0: probability > 1/2, sklearn's predict()


def _collect(results: list[dict[str, Any]], dim: int) -> ConceptVectors:
    results.sort(key=lambda r: r["k"])
    n = len(results)
    tests = [r["test"] for r in results]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([t.size for t in tests], out=offsets[1:])
    return ConceptVectors(
        weights=np.array([r["w"] for r in results], dtype=np.float64).reshape(n, dim),
        bias=np.array([r["b"] for r in results], dtype=np.float64),
        accuracy=np.array([r["accuracy"] for r in results], dtype=np.float64),
        validation_accuracy=np.array([r["validation_accuracy"] for r in results], dtype=np.float64),
        c=np.array([r["c"] for r in results], dtype=np.float64),
        n_positive=np.array([r["n_positive"] for r in results], dtype=np.int64).reshape(n, 3),
        n_negative=np.array([r["n_negative"] for r in results], dtype=np.int64).reshape(n, 3),
        test_offsets=offsets,
        test_members=np.concatenate(tests).astype(np.int64) if n else np.zeros(0, dtype=np.int64),
    )


# --------------------------------------------------------------------------------------------------
# 2. Similarity and adjacency


def concept_similarity(embeddings: npt.ArrayLike, vectors: ConceptVectors) -> np.ndarray:
    """``S[i, j]`` = mean over test positives ``x`` of concept ``i`` of ``sigmoid(<w_j, x> + b_j)``.

    Parameters
    ----------
    embeddings : array_like, shape (n, d)
        The rows the vectors were learned on.
    vectors : ConceptVectors
        ``K`` concepts (typically those kept after the accuracy filter, see
        :meth:`ConceptVectors.subset`).

    Returns
    -------
    np.ndarray, shape (K, K), float64
        Row ``i`` is where concept ``i``'s songs fall with respect to every concept's hyperplane; the
        diagonal is concept ``i``'s own recall-like score and is ignored downstream.
    """
    X = np.asarray(embeddings)
    K = len(vectors)
    S = np.zeros((K, K), dtype=np.float64)
    offsets, rows = vectors.test_offsets, vectors.test_members
    if K == 0:
        return S
    counts = np.diff(offsets)
    if np.any(counts == 0):
        raise ValueError("every concept needs at least one test positive")
    owner = np.repeat(np.arange(K), counts)
    step = max(1, _SIMILARITY_ELEMENTS // K)
    for start in range(0, rows.size, step):
        block = X[rows[start : start + step]].astype(np.float64) @ vectors.weights.T + vectors.bias
        activation = expit(block)  # the logistic function, without overflow for large |block|
        _add_rows(S, owner[start : start + step], activation)
    return S / counts[:, None]


def _add_rows(S: np.ndarray, owner: np.ndarray, values: np.ndarray) -> None:
    # owner is sorted (concepts are contiguous), so sums of runs are a reduceat, far faster than add.at.
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    S[owner[starts]] += np.add.reduceat(values, starts, axis=0)


def concept_adjacency(similarity: npt.ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """``A[i, j] = S[i, j] > threshold`` for ``i != j`` (bool ``(K, K)``; the diagonal is False)."""
    S = _as_square(similarity, "similarity")
    A = S > threshold
    np.fill_diagonal(A, False)
    return A


def _as_square(matrix: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(matrix)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square (K, K) matrix, got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------------------------------
# 3. Betweenness


def _undirected_pairs(adjacency: np.ndarray) -> np.ndarray:
    """(m, 2) pairs i < j with an edge in either direction."""
    sym = adjacency | adjacency.T
    return np.argwhere(np.triu(sym, 1))


BETWEENNESS_BACKENDS = ("igraph", "rustworkx")
# Below this many edge visits (nodes x edges, ~5 ns each in igraph) one process is faster than
# starting workers for igraph's source-subset runs.
_PARALLEL_MIN_WORK = 5e8


def betweenness(adjacency: npt.ArrayLike, *, backend: str = "igraph", n_jobs: int | None = 1) -> np.ndarray:
    """Betweenness centrality of every node of the undirected graph of ``adjacency``.

    ``{i, j}`` is an edge when ``A[i, j]`` or ``A[j, i]`` (the diagonal is ignored). The value is
    networkx's ``betweenness_centrality(G)`` (default normalisation for undirected graphs): the sum
    over unordered pairs ``{s, t}`` (``s, t != v``) of the share of shortest ``s``-``t`` paths through
    ``v``, divided by ``(n - 1)(n - 2) / 2``.

    Parameters
    ----------
    adjacency : array_like of bool, shape (K, K)
    backend : {"igraph", "rustworkx"}
        Library running Brandes' algorithm. igraph (C) is the default: on the paper-scale graph (3,500
        nodes, 11% density) it took 12-17 s in one process where rustworkx (Rust, all cores) took
        205-380 s and networkx about 15 minutes (``benchmarks/bench_concepts.py``).
    n_jobs : int or None
        igraph only: processes sharing the sources (Brandes' algorithm is a sum over sources; igraph
        computes it for a subset of sources), ``-1`` for all cores. Small graphs (``nodes x edges <
        5e8``) always run in this process. Sums of partial results may differ from one process in the
        last bits (~1e-15 relative).

    Returns
    -------
    np.ndarray, shape (K,), float64
    """
    A = _as_square(adjacency, "adjacency").astype(bool)
    n = A.shape[0]
    pairs = _undirected_pairs(A)
    if backend == "igraph":
        workers = _n_workers(n_jobs)
        if workers > 1 and float(n) * len(pairs) >= _PARALLEL_MIN_WORK:
            from joblib import Parallel, delayed

            chunks = np.array_split(np.arange(n), workers)
            parts = Parallel(n_jobs=workers)(delayed(_igraph_betweenness)(pairs, n, c) for c in chunks)
            raw = np.sum(parts, axis=0)
        else:
            raw = _igraph_betweenness(pairs, n, None)
        # igraph counts each unordered pair once, unnormalised.
        normalised: np.ndarray = raw * (2.0 / ((n - 1) * (n - 2))) if n > 2 else raw
        return normalised
    if backend == "rustworkx":
        import rustworkx as rx

        graph = rx.PyGraph(multigraph=False)
        graph.add_nodes_from(range(n))
        if pairs.size:
            graph.extend_from_edge_list(list(map(tuple, pairs.tolist())))
        mapping = rx.graph_betweenness_centrality(graph, normalized=True, endpoints=False)
        return np.array([mapping[i] for i in range(n)], dtype=np.float64)
    raise ValueError(f"backend must be one of {BETWEENNESS_BACKENDS}, got {backend!r}")


def _n_workers(n_jobs: int | None) -> int:
    import os

    if n_jobs is None or n_jobs == 1:
        return 1
    cores = os.cpu_count() or 1
    return max(1, cores + 1 + n_jobs if n_jobs < 0 else n_jobs)


def _igraph_betweenness(pairs: np.ndarray, n: int, sources: np.ndarray | None) -> np.ndarray:
    """Unnormalised igraph betweenness from the shortest paths starting at ``sources`` (None: all)."""
    import igraph

    graph = igraph.Graph(n=n, edges=np.asarray(pairs).tolist(), directed=False)
    values = graph.betweenness(directed=False, sources=None if sources is None else sources.tolist())
    return np.asarray(values, dtype=np.float64).reshape(n)


# --------------------------------------------------------------------------------------------------
# 4. The tree


def mine_tree(similarity: npt.ArrayLike, centrality: npt.ArrayLike, *, min_sim: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Greedy hierarchy (Heymann & Garcia-Molina 2006, as adapted by Afchar et al.).

    Nodes are added in decreasing ``centrality`` (ties: lower index first). The first goes under the
    root; each next node ``c`` goes under the already-added node ``p`` maximising ``S[p, c]`` (ties:
    the earliest added), or under the root when that maximum is ``<= min_sim``.

    Returns
    -------
    parent : np.ndarray, shape (K,), int64
        Parent concept of each node, ``-1`` for the root.
    order : np.ndarray, shape (K,), int64
        The nodes in the order they were added.
    """
    S = _as_square(similarity, "similarity").astype(np.float64)
    centrality = np.asarray(centrality, dtype=np.float64)
    K = S.shape[0]
    if centrality.shape != (K,):
        raise ValueError(f"centrality must have shape ({K},), got {centrality.shape}")
    order = np.lexsort((np.arange(K), -centrality)).astype(np.int64)
    parent = np.full(K, -1, dtype=np.int64)
    # best[c] / best_at[c]: max over added p of S[p, c] and its argmax, updated as nodes are added,
    # which makes the whole construction O(K^2) instead of O(K^3).
    best = np.full(K, -np.inf)
    best_at = np.full(K, -1, dtype=np.int64)
    for node in order:
        if best_at[node] >= 0 and best[node] > min_sim:
            parent[node] = best_at[node]
        row = S[node]
        better = row > best  # strict: the earliest added parent wins ties
        best[better] = row[better]
        best_at[better] = node
    return parent, order


def tree_edges(parent: npt.ArrayLike) -> np.ndarray:
    """``(m, 2)`` (parent, child) edges between concepts; edges to the root are left out."""
    parent = np.asarray(parent, dtype=np.int64)
    child = np.flatnonzero(parent >= 0)
    return np.stack([parent[child], child], axis=1)


def random_tree(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random recursive tree on ``n`` nodes: in a random order, each node after the first attaches
    to a uniformly chosen earlier node (one component, ``n - 1`` edges). Returns a parent array."""
    order = rng.permutation(n)
    parent = np.full(n, -1, dtype=np.int64)
    if n > 1:
        picks = (rng.random(n - 1) * np.arange(1, n)).astype(np.int64)  # uniform in [0, i) for node i
        parent[order[1:]] = order[picks]
    return parent


# --------------------------------------------------------------------------------------------------
# 5. Evaluations


def graph_structure(edges: npt.ArrayLike, n_nodes: int) -> dict[str, int]:
    """Undirected ``edges`` count, connected components and isolated nodes of a graph on ``n_nodes``.

    Duplicate and reversed edges count once; self-loops are ignored.
    """
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    e = e[e[:, 0] != e[:, 1]]
    e = np.unique(np.sort(e, axis=1), axis=0)
    graph = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_nodes, n_nodes)).tocsr()
    n_components = connected_components(graph, directed=False)[0] if n_nodes else 0
    degree = np.bincount(e.ravel(), minlength=n_nodes)
    return {"edges": len(e), "components": int(n_components), "isolated": int((degree == 0).sum())}


def structure_table(similarity: npt.ArrayLike, adjacency: npt.ArrayLike, parent: npt.ArrayLike, *,
                    seed: int = 0) -> list[dict[str, Any]]:
    """The paper's Table 2: sparsity and connectivity of the tree against other graphs on the concepts.

    Rows (``graph``, ``edges``, ``density``, ``components``, ``isolated``), all undirected:

    * ``tree``: the mined hierarchy without its root (nodes under the root start components);
    * ``A``: the similarity graph;
    * ``sparse A``: the ``m`` pairs with the highest ``max(S[i, j], S[j, i])``, ``m`` = tree edges;
    * ``top-1``: every node linked to its most similar other node (``argmax_j S[i, j]``);
    * ``random sparse A``: ``m`` pairs drawn uniformly (seeded);
    * ``random top-1``: every node linked to a uniformly drawn other node (seeded).
    """
    S = _as_square(similarity, "similarity").astype(np.float64)
    A = _as_square(adjacency, "adjacency").astype(bool)
    K = S.shape[0]
    rng = np.random.default_rng(seed)
    tree = tree_edges(parent)
    m = len(tree)
    iu, ju = np.triu_indices(K, 1)
    graphs: dict[str, np.ndarray] = {"tree": tree, "A": _undirected_pairs(A)}
    if K > 1:
        pair_sim = np.maximum(S[iu, ju], S[ju, iu])
        top = np.argsort(-pair_sim, kind="stable")[:m]
        graphs["sparse A"] = np.stack([iu[top], ju[top]], axis=1)
        masked = S.copy()
        np.fill_diagonal(masked, -np.inf)
        graphs["top-1"] = np.stack([np.arange(K), masked.argmax(axis=1)], axis=1)
        pick = rng.choice(iu.size, size=min(m, iu.size), replace=False)
        graphs["random sparse A"] = np.stack([iu[pick], ju[pick]], axis=1)
        other = rng.integers(0, K - 1, size=K)
        other += other >= np.arange(K)  # uniform over the K - 1 other nodes
        graphs["random top-1"] = np.stack([np.arange(K), other], axis=1)
    total_pairs = K * (K - 1) / 2
    rows = []
    for name, edges in graphs.items():
        stats = graph_structure(edges, K)
        rows.append({"graph": name, "edges": stats["edges"],
                     "density": stats["edges"] / total_pairs if total_pairs else None,
                     "components": stats["components"], "isolated": stats["isolated"]})
    return rows


def edge_similarity(profiles: sp.spmatrix | np.ndarray, edges: npt.ArrayLike, metric: str = "cosine") -> np.ndarray:
    """Similarity of the two endpoints of every edge under a profile source.

    Parameters
    ----------
    profiles : sparse or dense array, shape (K, L)
        One non-negative profile per concept (e.g. label counts of its songs, or its song set).
    edges : array_like of int, shape (m, 2)
    metric : {"cosine", "jaccard"}
        ``cosine`` of the profiles (0 when one is empty), or ``jaccard`` of their supports
        ``|A & B| / |A | B|``.

    Returns
    -------
    np.ndarray, shape (m,), float64
    """
    P = sp.csr_matrix(profiles, dtype=np.float64)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if metric == "cosine":
        norms = np.sqrt(np.asarray(P.multiply(P).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        P = sp.diags(scale) @ P
        return np.asarray(P[e[:, 0]].multiply(P[e[:, 1]]).sum(axis=1)).ravel()
    if metric == "jaccard":
        B = (P != 0).astype(np.float64).tocsr()
        sizes = np.asarray(B.sum(axis=1)).ravel()
        inter = np.asarray(B[e[:, 0]].multiply(B[e[:, 1]]).sum(axis=1)).ravel()
        union = sizes[e[:, 0]] + sizes[e[:, 1]] - inter
        jaccard: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        return jaccard
    raise ValueError(f"metric must be 'cosine' or 'jaccard', got {metric!r}")


def alignment(
    parent: npt.ArrayLike,
    sources: Mapping[str, tuple[sp.spmatrix | np.ndarray, str]],
    *,
    n_random: int = 20,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The paper's Table 1: mean similarity along tree edges under other sources vs random trees.

    Parameters
    ----------
    parent : array_like of int, shape (K,)
        The mined tree (edges to the root are left out).
    sources : mapping name -> (profiles, metric)
        See :func:`edge_similarity`.
    n_random : int
        Seeded random recursive trees (:func:`random_tree`) forming the baseline.

    Returns
    -------
    list of dict
        Per source: ``source``, ``metric``, ``tree`` (mean over tree edges), ``tree_ci95`` (1.96 x the
        standard error), ``random_tree`` (mean over the random trees of their edge means),
        ``random_tree_sd`` (their standard deviation), ``edges`` (tree edges scored). ``tree`` is
        ``None`` when the tree has no edge between concepts.
    """
    parent = np.asarray(parent, dtype=np.int64)
    edges = tree_edges(parent)
    rng = np.random.default_rng(seed)
    randoms = [tree_edges(random_tree(parent.size, rng)) for _ in range(n_random)]
    rows = []
    for name, (profiles, metric) in sources.items():
        values = edge_similarity(profiles, edges, metric)
        random_means = [float(edge_similarity(profiles, r, metric).mean()) for r in randoms if len(r)]
        rows.append({
            "source": name,
            "metric": metric,
            "edges": len(edges),
            "tree": float(values.mean()) if values.size else None,
            "tree_ci95": float(1.96 * values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else None,
            "random_tree": float(np.mean(random_means)) if random_means else None,
            "random_tree_sd": float(np.std(random_means, ddof=1)) if len(random_means) > 1 else None,
        })
    return rows


def edge_accuracy(parent: npt.ArrayLike, cluster: npt.ArrayLike) -> float | None:
    """Share of tree edges (root edges excluded) whose endpoints are in the same ground-truth cluster
    (the paper's Table 3 accuracy). ``None`` without edges."""
    edges = tree_edges(parent)
    cluster = np.asarray(cluster)
    if not len(edges):
        return None
    return float(np.mean(cluster[edges[:, 0]] == cluster[edges[:, 1]]))


def parent_accuracy(parent: npt.ArrayLike, true_parent: npt.ArrayLike, *, directed: bool = True) -> float:
    """Share of nodes whose mined parent is their true parent (``-1`` = root on both sides).

    With ``directed=False`` an edge also counts when it is the true edge reversed (the node is the true
    parent of its mined parent)."""
    parent = np.asarray(parent, dtype=np.int64)
    true_parent = np.asarray(true_parent, dtype=np.int64)
    if parent.shape != true_parent.shape:
        raise ValueError(f"parent {parent.shape} and true_parent {true_parent.shape} differ in shape")
    hit = parent == true_parent
    if not directed:
        nodes = np.arange(parent.size)
        has = parent >= 0
        hit[has] |= true_parent[parent[has]] == nodes[has]
    return float(hit.mean()) if parent.size else 0.0
