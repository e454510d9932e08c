"""Benchmark of a search space: how many of its uniformly drawn configurations train, and what they cost.

Run by hand::

    python benchmarks/bench_space.py PREPARED [PREPARED ...] [--spaces default,paper] [--samples 30] [--seed 0]
                                     [--out rows.jsonl]

For each prepared dataset, in one process: gensim's defaults (the baseline of every ratio), then
``--samples`` configurations drawn uniformly (log-uniformly for log ranges) from each named space: the
``default`` and ``paper`` presets of :mod:`hpo.config`, as a study would resolve them for that dataset
(``min_count`` is added to the default preset on sparse data). Each is trained with one gensim thread and
evaluated on validation.

A configuration is **untrained** when its NDCG@100 or its CH-artist (CH-genre on data without artists)
is below 20% of the baseline's (issue 13's definition); the table also gives the share with local
coherence in place of CH (CH collapses under heavy training while coherence holds). The table gives, per dataset and space: the
untrained share (and its ratio to the ``paper`` space's, the named baseline of this benchmark), the
median and best NDCG and CH ratios to gensim's defaults, and the mean CPU seconds of a trial (training
and evaluation, one thread; process time, so other load on the machine does not inflate it) with its
ratio to gensim's defaults. Progress goes to stderr, the table to stdout, raw rows to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpo._table import format_table
from hpo.config import Distribution, parse_config
from hpo.data.dataset import PreparedDataset
from hpo.search import _from_unit, resolve_search_space
from hpo.trials import trial_data
from objectives.trial import run_configuration

UNTRAINED_SHARE = 0.2


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def untrained(metrics: dict[str, Any], baseline: dict[str, Any], family: str = "ch") -> bool:
    """Issue 13's definition: NDCG or CH-artist (CH-genre without artists) under 20% of the baseline's.

    ``family="coherence"`` puts local coherence (artist, else genre) in place of CH: heavy training can
    drop CH-artist below 20% of the defaults' while artist coherence holds, so CH alone calls such
    embeddings untrained.
    """
    label = "artist" if baseline.get("ch_artist") is not None else "genre"
    clustering = f"ch_{label}" if family == "ch" else f"coherence_{label}"
    return any((metrics.get(key) or 0.0) < UNTRAINED_SHARE * baseline[key] for key in ("ndcg", clustering)
               if baseline.get(key) is not None)


def draw(space: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One configuration drawn uniformly from ``space`` (fixed entries pass through)."""
    return {name: _from_unit(spec, float(rng.random())) if isinstance(spec, Distribution) else spec
            for name, spec in space.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", nargs="+", type=Path, help="prepared dataset directories")
    parser.add_argument("--spaces", default="default,paper", help="presets to measure (default: default,paper)")
    parser.add_argument("--samples", type=int, default=30, help="configurations per space and dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="append one JSON row per trained configuration; rows already there "
                        "(same dataset, space and draw) are reused, so an interrupted run resumes")
    args = parser.parse_args()
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]

    done: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if args.out and args.out.exists():
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            done.setdefault((row["dataset"], row["space"]), []).append(row)
    table = []
    for path in args.prepared:
        dataset = PreparedDataset.load(path)
        name = path.name
        base_config = parse_config({"name": "bench", "dataset": str(path), "seed": args.seed}, "bench")
        data = trial_data(base_config, dataset)
        _log(f"{name}: gensim defaults")
        cpu = time.process_time()
        baseline = run_configuration(data, {}, seed=args.seed)
        baseline_cpu = time.process_time() - cpu
        rows: dict[str, list[dict[str, Any]]] = {}
        for space_name in spaces:
            config = parse_config({"name": "bench", "dataset": str(path), "search_preset": space_name}, "bench")
            space = resolve_search_space(config, dataset).search_space
            rng = np.random.default_rng([args.seed, spaces.index(space_name)])
            rows[space_name] = []
            previous = done.get((name, space_name), [])
            for i in range(args.samples):
                params = draw(space, rng)
                if i < len(previous):
                    rows[space_name].append(previous[i])
                    continue
                cpu = time.process_time()
                outcome = run_configuration(data, params, seed=args.seed + 1 + i)
                row = {"dataset": name, "space": space_name, "params": params, **outcome.metrics,
                       "train_seconds": outcome.timings["train_seconds"], "cpu_seconds": time.process_time() - cpu,
                       "untrained": untrained(outcome.metrics, baseline.metrics)}
                rows[space_name].append(row)
                _log(f"{name} {space_name} {i + 1}/{args.samples}: ndcg {row['ndcg']:.4g} "
                     f"{'untrained' if row['untrained'] else ''} ({row['train_seconds']:.0f} s)")
                if args.out:
                    with args.out.open("a") as handle:
                        handle.write(json.dumps(row, default=float) + "\n")
        reference = rows.get("paper")
        for space_name, space_rows in rows.items():
            share = sum(r["untrained"] for r in space_rows) / len(space_rows)
            coherence_share = sum(untrained(r, baseline.metrics, "coherence") for r in space_rows) / len(space_rows)
            ref_share = None if reference is None else sum(r["untrained"] for r in reference) / len(reference)
            clustering = "ch_artist" if baseline.metrics.get("ch_artist") is not None else "ch_genre"
            ndcg = [r["ndcg"] / baseline.metrics["ndcg"] for r in space_rows]
            ch = [(r[clustering] or 0.0) / baseline.metrics[clustering] for r in space_rows]
            seconds = statistics.fmean(r["cpu_seconds"] for r in space_rows)
            table.append([
                name, space_name, len(space_rows), f"{share:.0%}", f"{coherence_share:.0%}",
                "-" if not ref_share else f"{share / ref_share:.2f}",
                f"{statistics.median(ndcg):.2f}", f"{max(ndcg):.2f}", clustering,
                f"{statistics.median(ch):.2f}", f"{max(ch):.2f}",
                f"{seconds:.1f}", f"{seconds / baseline_cpu:.1f}",
            ])
    print(format_table(["dataset", "space", "n", "untrained", "untrained (coherence)", "vs paper", "NDCG med", "NDCG best", "CH",
                        "CH med", "CH best", "CPU s", "x defaults"], table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
