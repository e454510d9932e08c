"""Benchmark of ``metrics/``: one evaluation of a large synthetic embedding, stage by stage,
against the per-query scikit-learn loop of Caselles-Dupré et al.'s published evaluation code.

Run by hand::

    python benchmarks/bench_metrics.py [--songs 100000] [--dim 64] [--pairs 200000]
                                       [--k 100] [--threads 2] [--baseline-queries 2000]

The table goes to stdout, progress to stderr.

Data (seeded): songs in Gaussian clusters (``songs / 200`` clusters) with a Zipf-like
popularity; evaluation pairs (half in-set, half out-of-set) whose query is drawn by
popularity and whose target is, 60% of the time, a song of the same cluster; hard
negatives among the popular songs; genre = cluster mod 25 and ~40 artists per cluster,
with some labels unknown; 2% of the songs absent (as Word2Vec's ``min_count`` would do).

Baseline (``w2v_reco_hyperparameters_matter/src/main.py``): ``NearestNeighbors`` is
fitted on the embeddings and ``kneighbors(k + 1)`` is called once per query in a Python
loop, then HitRate/NDCG are accumulated pair by pair in Python. The original calls
``kneighbors`` once per *pair* with the default Euclidean metric; here it gets
``algorithm='brute', metric='cosine'`` (same task as ours) and one call per distinct
*query song* (cheaper than per pair), and the song itself is removed by id. HardNeg and
coherence are computed from the same lists with Python loops. The loop is timed on a
random subset of query songs and extrapolated linearly to all of them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import faiss
import numpy as np
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from metrics.clustering import calinski_harabasz
from metrics.coherence import local_coherence, sample_songs
from metrics.evaluate import EvaluationData, EvaluationSettings, evaluate
from metrics.false_neighbours import hardneg_at_k
from metrics.knn import knn_table
from metrics.next_song import hit_rate, ndcg, next_song_ranks
from metrics.popularity import assign_buckets, bucket_edges, bucketed_ranking_metrics


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_data(n_songs: int, dim: int, n_pairs: int, seed: int):
    rng = np.random.default_rng(seed)
    n_clusters = max(2, n_songs // 200)
    clusters = rng.integers(0, n_clusters, n_songs)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    emb = centres[clusters] + 0.8 * rng.standard_normal((n_songs, dim), dtype=np.float32)
    present = rng.random(n_songs) >= 0.02

    popularity = 1.0 / (rng.permutation(n_songs) + 10.0)
    popularity /= popularity.sum()
    train_counts = 1 + rng.poisson(popularity * 20 * n_songs)

    # Members of each cluster, contiguous, to draw a same-cluster target vectorised.
    by_cluster = np.argsort(clusters, kind="stable")
    starts = np.searchsorted(clusters[by_cluster], np.arange(n_clusters))
    sizes = np.bincount(clusters, minlength=n_clusters)

    def pairs(m: int) -> np.ndarray:
        q = rng.choice(n_songs, m, p=popularity)
        c = clusters[q]
        same = by_cluster[starts[c] + (rng.random(m) * sizes[c]).astype(np.int64)]
        t = np.where(rng.random(m) < 0.6, same, rng.choice(n_songs, m, p=popularity))
        return np.c_[q, t][q != t]

    # Hard negatives: popular songs that co-occur without association; half of them with
    # a song of their own cluster, which an embedding is likely to place close.
    popular = np.argsort(-popularity)[: n_songs // 5]
    weights = popularity[popular] / popularity[popular].sum()
    m = n_pairs // 10
    a = rng.choice(popular, m, p=weights)
    c = clusters[a]
    near = by_cluster[starts[c] + (rng.random(m) * sizes[c]).astype(np.int64)]
    b = np.where(rng.random(m) < 0.5, near, rng.choice(popular, m, p=weights))
    hard = np.c_[a, b][a != b]
    genre = clusters % 25
    genre[rng.random(n_songs) < 0.15] = -1
    artist = clusters * 40 + rng.integers(0, 40, n_songs)
    artist[rng.random(n_songs) < 0.05] = -1
    data = EvaluationData(pairs_in=pairs(n_pairs // 2), pairs_out=pairs(n_pairs - n_pairs // 2),
                          hard_negative_pairs=hard, artist_labels=artist, genre_labels=genre,
                          train_counts=train_counts)
    return emb, present, data


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def baseline(emb, present, data, queries, subset, k, coherence_genre, coherence_artist):
    """Reference-style evaluation restricted to the query songs in ``subset``."""
    ids = np.flatnonzero(present)
    neigh, t_fit = timed(NearestNeighbors(algorithm="brute", metric="cosine").fit, emb[ids])
    lists: dict[int, list[int]] = {}
    start = time.perf_counter()
    for i, song in enumerate(subset):
        found = neigh.kneighbors(emb[song:song + 1], k + 1, return_distance=False)[0]
        lists[int(song)] = [int(x) for x in ids[found] if x != song][:k]
        if i % 500 == 0:
            log(f"  baseline kneighbors {i}/{subset.size}")
    t_loop = time.perf_counter() - start

    chosen = set(lists)
    pairs = np.r_[data.pairs_in, data.pairs_out]
    sub_pairs = pairs[np.isin(pairs[:, 0], subset)]
    start = time.perf_counter()
    hits = gains = 0.0
    for q, t in sub_pairs.tolist():
        neighbours = lists[q]
        if t in neighbours:
            index_match = neighbours.index(t)
            hits += 1
            gains += 1 / math.log2(index_match + 2)
    hr, nd = hits / len(sub_pairs), gains / len(sub_pairs)
    negatives: dict[int, set[int]] = {}
    for a, b in data.hard_negative_pairs.tolist():
        if a != b:
            negatives.setdefault(a, set()).add(b)
            negatives.setdefault(b, set()).add(a)
    fractions = [sum(1 for x in lists[s] if x in negatives[s]) / k
                 for s in lists if s in negatives]
    hn = sum(fractions) / len(fractions)
    coherence = {}
    for name, labels, songs in (("genre", data.genre_labels, coherence_genre),
                                ("artist", data.artist_labels, coherence_artist)):
        sel = [s for s in songs.tolist() if s in chosen]
        coherence[name] = sum(sum(1 for x in lists[s] if labels[x] == labels[s]) / k
                              for s in sel) / len(sel)
    t_metrics = time.perf_counter() - start
    scale_queries = queries.size / subset.size
    scale_pairs = len(pairs) / len(sub_pairs)
    return {
        "lists": lists, "pairs": sub_pairs, "hr": hr, "ndcg": nd, "hardneg": hn,
        "coherence": coherence, "t_fit": t_fit, "t_loop": t_loop, "t_metrics": t_metrics,
        "t_loop_all": t_loop * scale_queries, "t_metrics_all": t_metrics * scale_pairs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="evaluate() runs (min reported)")
    args = parser.parse_args(argv)

    faiss.omp_set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    k = args.k
    load_start = os.getloadavg()[0]
    log(f"generating {args.songs} songs x {args.dim} d, {args.pairs} pairs")
    emb, present, data = make_data(args.songs, args.dim, args.pairs, args.seed)
    cfg = EvaluationSettings(k=k)

    log("evaluate() (whole, warm-up + measured run)")
    evaluate(emb[:2000], EvaluationData(
        pairs_in=data.pairs_in[:0], pairs_out=data.pairs_out[:0],
        hard_negative_pairs=data.hard_negative_pairs[:0], artist_labels=data.artist_labels[:2000],
        genre_labels=data.genre_labels[:2000], train_counts=data.train_counts[:2000]), cfg)
    runs = []
    for i in range(args.repeat):
        runs.append(timed(evaluate, emb, data, cfg, present=present))
        log(f"  run {i + 1}/{args.repeat}: {runs[-1][1]:.2f} s")
    result, t_eval = min(runs, key=lambda run: run[1])
    t_eval_median = float(np.median([t for _, t in runs]))

    log("stages one by one")
    stages: list[tuple[str, float]] = []
    ok = present & (np.linalg.norm(emb, axis=1) > 0)
    (genre_songs, artist_songs), t = timed(lambda: (
        sample_songs(ok & (data.genre_labels >= 0), cfg.coherence_sample, cfg.seed),
        sample_songs(ok & (data.artist_labels >= 0), cfg.coherence_sample, cfg.seed)))
    queries = np.unique(np.concatenate([data.pairs_in[:, 0], data.pairs_out[:, 0],
                                        data.hard_negative_pairs.ravel(), genre_songs,
                                        artist_songs]))
    stages.append(("samples + query union", t))
    table, t = timed(knn_table, emb, queries, k, present=present)
    stages.append((f"knn_table ({queries.size} queries, k={k})", t))
    (r_in, r_out), t = timed(lambda: (next_song_ranks(table, data.pairs_in),
                                      next_song_ranks(table, data.pairs_out)))
    stages.append(("next_song_ranks (in + out)", t))
    _, t = timed(lambda: [f(r, k) for f in (hit_rate, ndcg) for r in (r_in, r_out)])
    stages.append(("hit_rate + ndcg", t))
    (hn, hn_support), t = timed(hardneg_at_k, table, data.hard_negative_pairs, k)
    stages.append((f"hardneg_at_k (support {hn_support})", t))
    _, t = timed(lambda: (local_coherence(table, data.genre_labels, genre_songs, k),
                          local_coherence(table, data.artist_labels, artist_songs, k)))
    stages.append(("local_coherence (genre + artist)", t))
    _, t = timed(lambda: (calinski_harabasz(emb, data.genre_labels, present=present),
                          calinski_harabasz(emb, data.artist_labels, present=present)))
    stages.append(("calinski_harabasz (genre + artist)", t))

    def buckets():
        edges = bucket_edges(data.train_counts, 10)
        pairs = np.r_[data.pairs_in, data.pairs_out]
        ranks = np.r_[r_in, r_out]
        for col in (0, 1):
            bucketed_ranking_metrics(ranks, assign_buckets(data.train_counts[pairs[:, col]],
                                                           edges), 10, k)
    _, t = timed(buckets)
    stages.append(("popularity buckets", t))
    ours_scope = sum(t for name, t in stages
                     if not name.startswith(("calinski", "popularity")))

    log(f"baseline on {args.baseline_queries} of {queries.size} query songs")
    rng = np.random.default_rng(args.seed + 1)
    subset = np.sort(rng.choice(queries[ok[queries]], args.baseline_queries, replace=False))
    base = baseline(emb, ok, data, queries[ok[queries]], subset, k, genre_songs, artist_songs)
    base_total = base["t_fit"] + base["t_loop_all"] + base["t_metrics_all"]

    # Agreement on the subset: same neighbour lists, same numbers.
    rows = table.rows(subset)
    same_lists = np.mean([table.neighbours[r][table.neighbours[r] >= 0].tolist()
                          == base["lists"][int(s)] for r, s in zip(rows, subset)])
    sub_ranks = next_song_ranks(table, base["pairs"])
    ours_sub = {
        "HitRate@k": hit_rate(sub_ranks, k), "NDCG@k": ndcg(sub_ranks, k),
        "HardNeg@k": hardneg_at_k(table, data.hard_negative_pairs, k, songs=subset)[0],
        "Coherence genre": local_coherence(table, data.genre_labels,
                                           np.intersect1d(genre_songs, subset), k)[0],
        "Coherence artist": local_coherence(table, data.artist_labels,
                                            np.intersect1d(artist_songs, subset), k)[0],
    }
    base_sub = {"HitRate@k": base["hr"], "NDCG@k": base["ndcg"], "HardNeg@k": base["hardneg"],
                "Coherence genre": base["coherence"]["genre"],
                "Coherence artist": base["coherence"]["artist"]}

    m = result.metrics
    out = []
    out.append(f"songs {args.songs:,} (present {m['songs_present']:,}), dim {args.dim}, "
               f"pairs {m['pairs_in']:,} in + {m['pairs_out']:,} out, k {k}, "
               f"threads {args.threads}")
    out.append(f"hard-negative pairs {len(data.hard_negative_pairs):,}; distinct query songs "
               f"{queries.size:,}; 1-min load average {load_start:.2f} at start, "
               f"{os.getloadavg()[0]:.2f} at end (machine shared with other processes)")
    out.append("")
    out.append(f"{'stage (metrics/)':<48}{'seconds':>10}")
    out.append("-" * 58)
    for name, t in stages:
        out.append(f"{name:<48}{t:>10.3f}")
    out.append("-" * 58)
    out.append(f"{'sum of stages':<48}{sum(t for _, t in stages):>10.3f}")
    out.append(f"{f'evaluate(), whole, best of {args.repeat}':<48}{t_eval:>10.3f}   (knn "
               f"{result.timings['knn']:.3f}, metrics {result.timings['metrics']:.3f}; "
               f"median {t_eval_median:.3f})")
    out.append("")
    out.append(f"{'same scope: next-song + HardNeg + coherence':<48}{'seconds':>10}")
    out.append("-" * 58)
    out.append(f"{'ours (samples, knn, ranks, HR/NDCG, HN, coh.)':<48}{ours_scope:>10.3f}")
    out.append(f"{'baseline NearestNeighbors.fit':<48}{base['t_fit']:>10.3f}")
    out.append(f"{'baseline kneighbors loop, measured':<48}{base['t_loop']:>10.3f}"
               f"   ({subset.size:,} queries)")
    out.append(f"{'baseline kneighbors loop, extrapolated':<48}{base['t_loop_all']:>10.1f}"
               f"   (x {queries[ok[queries]].size / subset.size:.1f}, linear)")
    out.append(f"{'baseline Python metric loops, extrapolated':<48}"
               f"{base['t_metrics_all']:>10.2f}   (measured {base['t_metrics']:.3f} s on "
               f"{len(base['pairs']):,} pairs)")
    out.append(f"{'baseline total (estimated)':<48}{base_total:>10.1f}")
    out.append(f"{'speed-up, same scope':<48}{base_total / ours_scope:>9.0f}x")
    out.append(f"{'speed-up, vs whole evaluate() (best)':<48}{base_total / t_eval:>9.0f}x")
    out.append("")
    out.append(f"agreement on the {subset.size:,}-query subset: identical neighbour lists "
               f"{100 * same_lists:.2f}%")
    out.append(f"{'metric (subset)':<22}{'ours':>12}{'baseline':>12}{'abs diff':>12}")
    for key in ours_sub:
        a, b = ours_sub[key], base_sub[key]
        out.append(f"{key:<22}{a:>12.6f}{b:>12.6f}{abs(a - b):>12.2e}")
    out.append("")
    out.append("full-run metrics: " + ", ".join(
        f"{key} {m[key]:.4f}" for key in ("hitrate", "ndcg", "hardneg", "coherence_genre",
                                          "coherence_artist", "ch_genre", "ch_artist")))
    print("\n".join(out))


if __name__ == "__main__":
    main()
