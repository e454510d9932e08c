"""Benchmark of the concept hierarchy (SPEC section 6): betweenness libraries and the whole pipeline.

Run by hand::

    python benchmarks/bench_concepts.py [--nodes 3500 --density 0.11] [--nx-sources 20] [--rustworkx]
        [--concepts 3500] [--prepared DIR --embeddings FILE --kind playlists --min-size 10]

Part 1, betweenness centrality of a seeded G(n, p) graph at the paper's scale (3,500 nodes, ~11%
density, as the paper's A), in the same process:

* igraph (C, the library :func:`metrics.concepts.betweenness` uses), whole graph, in one process and
  split over ``--jobs`` processes by source (as the CLI runs it);
* rustworkx (Rust, parallel over sources) with ``--rustworkx`` (about 200 s on 2 cores);
* networkx (the baseline, the paper's library): Brandes' algorithm costs the same for every source, so
  it is timed on ``--nx-sources`` seeded sources (``betweenness_centrality(G, k=...)``) and extrapolated
  to all ``n`` sources (``--full-networkx`` runs the whole graph instead: hours). Exactness is checked
  on a smaller graph where networkx runs in full, and that graph's measured ratio is reported too.

Part 2, the whole pipeline (concept vectors on all cores, S and A, betweenness, tree, structure and
alignment tables) on ``--concepts`` synthetic concepts (genres and sub-genres in a 64-d space, plus
background songs), or on a real prepared dataset and embedding file with ``--prepared/--embeddings``
(then through :func:`hpo.concepts.build_hierarchy`, as the CLI runs it). Concept vectors are also
timed in one process on a subset, to report the parallel speed-up.

Tables go to stdout, progress to stderr. Target: igraph >= 100x networkx.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from hpo._table import format_table
from metrics import concepts as mc


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _gnp(n: int, p: float, seed: int) -> np.ndarray:
    """Boolean upper-triangular adjacency of a seeded G(n, p) graph."""
    rng = np.random.default_rng(seed)
    A = np.zeros((n, n), dtype=bool)
    iu, ju = np.triu_indices(n, 1)
    keep = rng.random(iu.size) < p
    A[iu[keep], ju[keep]] = True
    return A


def _networkx_graph(A: np.ndarray):
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(range(A.shape[0]))
    graph.add_edges_from(map(tuple, np.argwhere(A | A.T).tolist()))
    return graph


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def bench_betweenness(args: argparse.Namespace) -> None:
    import networkx as nx

    mc.betweenness(np.ones((3, 3), dtype=bool))  # import igraph outside the timings
    # Exactness and a fully measured ratio on a graph networkx handles in seconds.
    small = _gnp(args.check_nodes, args.density, seed=1)
    _log(f"betweenness check: {args.check_nodes} nodes")
    ours_small, t_ours_small = _timed(mc.betweenness, small)
    graph_small = _networkx_graph(small)
    ref_small, t_nx_small = _timed(nx.betweenness_centrality, graph_small)
    ref_small = np.array([ref_small[i] for i in range(args.check_nodes)])
    max_diff = float(np.abs(ours_small - ref_small).max())

    A = _gnp(args.nodes, args.density, seed=0)
    n_edges = int(A.sum())
    density = n_edges / (args.nodes * (args.nodes - 1) / 2)
    _log(f"betweenness: {args.nodes} nodes, {n_edges} edges (density {density:.3f}); igraph ...")
    _, t_igraph = _timed(mc.betweenness, A, backend="igraph")
    rows = [["igraph, 1 process", args.nodes, n_edges, "all", t_igraph, "measured", 1.0]]
    if args.jobs != 1:
        _log(f"igraph, --jobs {args.jobs} ...")
        _, t_par = _timed(mc.betweenness, A, backend="igraph", n_jobs=args.jobs)
        rows.append([f"igraph, --jobs {args.jobs} (ours)", args.nodes, n_edges, "all", t_par, "measured",
                     t_par / t_igraph])
    else:
        t_par = t_igraph
    if args.rustworkx:
        _log("rustworkx ...")
        _, t_rx = _timed(mc.betweenness, A, backend="rustworkx")
        rows.append(["rustworkx", args.nodes, n_edges, "all", t_rx, "measured", t_rx / t_igraph])
    graph = _networkx_graph(A)
    if args.full_networkx:
        _log("networkx, all sources (hours) ...")
        _, t_nx = _timed(nx.betweenness_centrality, graph)
        how = "measured"
        sources = "all"
    else:
        k = min(args.nx_sources, args.nodes)
        _log(f"networkx, {k} sampled sources ...")
        _, t_k = _timed(nx.betweenness_centrality, graph, k=k, seed=0)
        t_nx = t_k * args.nodes / k
        how = f"{t_k:.1f} s for {k} sources x {args.nodes / k:.0f}"
        sources = str(k)
    rows.append(["networkx (baseline)", args.nodes, n_edges, sources, t_nx, how, t_nx / t_igraph])
    rows.append(["igraph, check graph", args.check_nodes, int(small.sum()), "all", t_ours_small, "measured", 1.0])
    rows.append(["networkx, check graph", args.check_nodes, int(small.sum()), "all", t_nx_small, "measured",
                 t_nx_small / t_ours_small])
    print(f"betweenness centrality, G(n, p) with p = {args.density} (seeded)")
    print(format_table(["library", "nodes", "edges", "sources", "seconds", "how", "x igraph"], rows))
    print(f"max |igraph - networkx| on the check graph: {max_diff:.2e}")
    print(f"networkx / igraph on {args.nodes} nodes: {t_nx / t_igraph:.0f}x with 1 process, "
          f"{t_nx / t_par:.0f}x with --jobs {args.jobs} (target >= 100x)")
    print()


def _synthetic_concepts(n_concepts: int, seed: int = 0, d: int = 64, per: int = 20, background: int = 20_000):
    """Genre and sub-genre concepts: ~sqrt(K) genres, the rest sub-genres of ``per`` songs each."""
    rng = np.random.default_rng(seed)
    genres = max(2, round(float(np.sqrt(n_concepts))))
    subs = n_concepts - genres
    genre_of_sub = rng.integers(0, genres, size=subs)
    genre_centres = rng.normal(size=(genres, d)) * 3.0
    sub_centres = genre_centres[genre_of_sub] + rng.normal(size=(subs, d)) * 2.0
    X = np.repeat(sub_centres, per, axis=0) + rng.normal(size=(subs * per, d))
    X = np.vstack([X, rng.normal(size=(background, d)) * 3.0])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    sub_members = np.arange(subs * per).reshape(subs, per)
    concepts = [sub_members[genre_of_sub == g].ravel() for g in range(genres)] + list(sub_members)
    concepts = [c for c in concepts if c.size >= mc.MIN_CONCEPT_SIZE]
    offsets = np.zeros(len(concepts) + 1, dtype=np.int64)
    np.cumsum([c.size for c in concepts], out=offsets[1:])
    return X, offsets, np.concatenate(concepts)


def bench_pipeline(args: argparse.Namespace) -> None:
    import scipy.sparse as sp

    timings: dict[str, float] = {}
    if args.prepared is not None:
        from hpo.concepts import HierarchySettings, build_hierarchy, file_embeddings
        from hpo.data.dataset import PreparedDataset

        dataset = PreparedDataset.load(args.prepared)
        embeddings = file_embeddings(args.embeddings, dataset)
        settings = HierarchySettings(kind=args.kind, min_size=args.min_size, n_jobs=args.jobs)
        _log(f"pipeline on {args.prepared} ({args.kind}, min size {args.min_size}) ...")
        result, total = _timed(build_hierarchy, dataset, embeddings, settings)
        timings = dict(result.timings)
        K, kept = len(result.names), int(result.kept.sum())
        A_edges = int(mc._undirected_pairs(result.adjacency).shape[0])
        label = f"{args.prepared.name} {args.kind}"
        X = embeddings.matrix.astype(np.float64)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        offsets, members = None, None
    else:
        X, offsets, members = _synthetic_concepts(args.concepts)
        K = offsets.size - 1
        label = f"synthetic, {K} concepts, {X.shape[0]} songs, d={X.shape[1]}"
        _log(f"pipeline: {label} ...")
        start = time.perf_counter()
        vectors, timings["concept_vectors"] = _timed(mc.learn_concept_vectors, X, offsets, members, n_jobs=args.jobs)
        kept_mask = vectors.accuracy >= 0.7
        kept_vectors = vectors.subset(kept_mask)
        S, timings["similarity"] = _timed(mc.concept_similarity, X, kept_vectors)
        A = mc.concept_adjacency(S)
        centrality, timings["betweenness"] = _timed(mc.betweenness, A, n_jobs=args.jobs)
        (parent, _), timings["tree"] = _timed(mc.mine_tree, S, centrality)
        _, timings["structure"] = _timed(mc.structure_table, S, A, parent)
        sets = sp.csr_matrix((np.ones(members.size), (np.repeat(np.arange(K), np.diff(offsets)), members)),
                             shape=(K, X.shape[0]))[np.flatnonzero(kept_mask)]
        _, timings["alignment"] = _timed(mc.alignment, parent, {"shared songs": (sets, "jaccard")})
        total = time.perf_counter() - start
        kept = int(kept_mask.sum())
        A_edges = int(mc._undirected_pairs(A).shape[0])

    steps = [k for k in ("concept_sets", "concept_vectors", "similarity", "betweenness", "tree", "structure",
                         "alignment") if k in timings]
    rows = [[step, timings[step], timings[step] / total] for step in steps]
    rows.append(["total", total, 1.0])
    density = A_edges / (kept * (kept - 1) / 2) if kept > 1 else 0.0
    print(f"whole pipeline: {label}; {kept} of {K} concepts kept; A has {A_edges} edges (density {density:.3f})")
    print(format_table(["step", "seconds", "share"], rows))

    # Parallel speed-up of the concept vectors, on a subset, against one in-process worker.
    if offsets is not None:
        n_sub = min(K, args.speedup_concepts)
        sub_offsets, sub_members = offsets[: n_sub + 1], members[: offsets[n_sub]]
        _log(f"concept vectors, {n_sub} concepts: 1 worker vs --jobs {args.jobs} ...")
        _, t_one = _timed(mc.learn_concept_vectors, X, sub_offsets, sub_members, n_jobs=1)
        _, t_par = _timed(mc.learn_concept_vectors, X, sub_offsets, sub_members, n_jobs=args.jobs)
        print()
        print(format_table(["concept vectors", "concepts", "seconds", "ms / concept", "x 1 worker"], [
            ["1 worker (baseline)", n_sub, t_one, 1e3 * t_one / n_sub, 1.0],
            [f"--jobs {args.jobs}", n_sub, t_par, 1e3 * t_par / n_sub, t_one / t_par],
        ]))
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3500, help="nodes of the betweenness graph")
    parser.add_argument("--density", type=float, default=0.11, help="edge probability of the graph")
    parser.add_argument("--check-nodes", type=int, default=300, help="nodes of the fully measured check graph")
    parser.add_argument("--nx-sources", type=int, default=20, help="networkx sources timed and extrapolated")
    parser.add_argument("--full-networkx", action="store_true", help="run networkx on every source (hours)")
    parser.add_argument("--rustworkx", action="store_true", help="also time rustworkx (minutes)")
    parser.add_argument("--skip-betweenness", action="store_true")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--concepts", type=int, default=3500, help="synthetic concepts of the pipeline run")
    parser.add_argument("--speedup-concepts", type=int, default=600, help="concepts of the parallel speed-up run")
    parser.add_argument("--jobs", type=int, default=-1,
                        help="workers of the concept vectors and of betweenness (default all cores)")
    parser.add_argument("--prepared", type=Path, help="a prepared dataset (with --embeddings) instead of synthetic")
    parser.add_argument("--embeddings", type=Path, help="embedding file keyed by track id")
    parser.add_argument("--kind", default="playlists", help="concept source with --prepared")
    parser.add_argument("--min-size", type=int, default=20, help="minimum concept size with --prepared")
    args = parser.parse_args()
    if (args.prepared is None) != (args.embeddings is None):
        parser.error("--prepared and --embeddings go together")
    if not args.skip_betweenness:
        bench_betweenness(args)
    if not args.skip_pipeline:
        bench_pipeline(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
