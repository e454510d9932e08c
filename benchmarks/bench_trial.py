"""Benchmark of one study trial: where the time goes, against raw gensim training.

Run by hand::

    python benchmarks/bench_trial.py [--prepared DIR] [--sequences 20000] [--tracks 5000] [--repeat 2]

For each configuration, in the same process:

* baseline "raw gensim": ``Word2Vec(...)`` with the very same keyword arguments, seed and one worker
  thread, on the same sentences, and nothing else;
* a real songhpo trial: ``study.optimize`` on a SQLite storage with the configuration enqueued, so the
  time includes sampling, training, alignment, the kNN table, every metric and all storage writes.

The table (stdout) splits the trial into training, kNN, metrics and storage/other, and reports the
overhead beyond training as a ratio to the raw gensim time. Target: < 10 %. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
from gensim.models import Word2Vec

from hpo._table import format_table
from hpo.config import parse_config
from hpo.data.dataset import PreparedDataset
from hpo.data.prepare import PrepareParams, prepare_dataset
from hpo.data.readers import read_input
from hpo.data.synth import SynthParams, write_synthetic
from hpo.study import create_study, load_study
from hpo.trials import trial_data
from objectives.trial import HardNegReference, Objective, Safeguard
from objectives.word2vec import stable_hash, word2vec_kwargs

CONFIGURATIONS = {
    "gensim defaults": {"vector_size": 100, "window": 5, "ns_exponent": 0.75, "negative": 5, "alpha": 0.025},
    "small": {"vector_size": 32, "window": 2, "ns_exponent": 0.0, "negative": 3, "alpha": 0.01},
    "large": {"vector_size": 200, "window": 10, "ns_exponent": 0.5, "negative": 15, "alpha": 0.05},
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, help="a prepared dataset (default: a fresh synthetic one)")
    parser.add_argument("--sequences", type=int, default=20_000)
    parser.add_argument("--tracks", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration (median reported)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = args.prepared
        if prepared is None:
            _log(f"synthetic dataset: {args.sequences} sessions, {args.tracks} tracks")
            write_synthetic(Path(tmp) / "raw", SynthParams(sequences=args.sequences, tracks=args.tracks))
            prepared = Path(tmp) / "prepared"
            prepare_dataset(read_input(Path(tmp) / "raw"), prepared, PrepareParams())
        dataset = PreparedDataset.load(prepared)
        config = parse_config(
            {"name": "bench", "dataset": str(prepared), "storage": f"sqlite:///{tmp}/bench.db", "trials": 10_000,
             "search_preset": "paper"},
            "bench",
        )
        create_study(config)
        study, config = load_study("bench", config.storage)
        data = trial_data(config, dataset)
        objective = Objective(data, config.search_space, config.objectives, seed=0, workers=1,
                              safeguard=Safeguard(rule="point"), baseline_reference=lambda: HardNegReference(0.01))
        # Warm-up: imports and first-call costs of faiss/sklearn are paid once per worker, not per trial.
        study.optimize(objective, n_trials=1)

        rows = []
        for name, params in CONFIGURATIONS.items():
            raw_times, walls, parts = [], [], []
            for run in range(args.repeat):
                _log(f"{name}: run {run + 1}/{args.repeat}")
                start = time.perf_counter()
                Word2Vec(data.sentences, workers=1, seed=123, hashfxn=stable_hash, **word2vec_kwargs(params))
                raw_times.append(time.perf_counter() - start)
                study.enqueue_trial(params)
                start = time.perf_counter()
                study.optimize(objective, n_trials=1)
                walls.append(time.perf_counter() - start)
                attrs = study.trials[-1].user_attrs
                parts.append((attrs["train_seconds"], attrs["knn_seconds"], attrs["metrics_seconds"]))
            raw = statistics.median(raw_times)
            wall = statistics.median(walls)
            train, knn, metric = (statistics.median(p[i] for p in parts) for i in range(3))
            other = wall - train - knn - metric
            rows.append([name, raw, wall, train, knn, metric, other, (wall - raw) / raw * 100, wall / raw])
        headers = ["configuration", "raw gensim s", "trial s", "train s", "kNN s", "metrics s", "storage+other s",
                   "overhead %", "trial/raw"]
        print(f"dataset: {dataset.n_songs} songs, {len(dataset.train_tokens)} training plays, "
              f"{dataset.counts['pairs']['validation']} validation pairs; median of {args.repeat} runs; 1 gensim thread")
        print(format_table(headers, rows, digits=3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
