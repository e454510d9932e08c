"""Benchmark of scale: synthetic data at a fraction of the Spotify Million Playlist Dataset, end to end.

Run by hand (the 100% row needs about 1 GB of disk and several GB of memory; run it alone)::

    nice python benchmarks/bench_scale.py [--sizes 0.01,0.1] [--workdir DIR] [--keep] [--seed 0]
    nice python benchmarks/bench_scale.py --sizes 1.0

For each size (a fraction of MPD: 1M playlists, 66.3M plays, 2.26M tracks), every stage runs as the real
``songhpo`` CLI in its own process, timed by wall clock, its peak memory read from that process's
``ru_maxrss`` (``os.wait4``):

* ``synth``: ``data synth --format parquet`` of ``fraction x 1M`` playlists over ``fraction x 2.26M`` tracks,
  66.3 plays a playlist on average;
* ``prepare``: ``data prepare`` of it (default parameters);
* one default trial: ``study create`` + ``study run --n-trials 1`` of the default study config (trial 0,
  gensim's defaults, evaluated on validation), split with the trial's user attributes into training, kNN
  and metrics seconds, and storage+other (the trial's wall time from the storage, start to completion,
  less the three: alignment, user attributes, the constraint, the artifact upload).

With ``--caps MAX_PAIRS:COHERENCE_SAMPLE,...``, the trial's vectors (kept in the study's artifact store)
are evaluated again on validation under each cap, in this process: kNN and metrics seconds, their share
of the trial's training, and NDCG@100 with its relative standard error (issue 14's targets: < 10 % of
training, < 2 %). This is how the default ``[evaluation] max_pairs`` and ``coherence_sample`` are chosen.

The named baselines are the trial's own gensim training (``kNN+metrics %``: kNN and metrics as a share
of training; issue 14's target at 100% is < 10 %) and linear growth: the second table gives each stage's
growth exponent between consecutive sizes, ``log(t2 / t1) / log(n2 / n1)`` over the number of playlists
(1.00 = linear). Issue 14's targets for prepare at 100%: < 5 minutes and < 12 GB. Progress on stderr, the
tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from hpo._table import format_table

MPD_PLAYLISTS = 1_000_000
MPD_PLAYS = 66_346_428
MPD_TRACKS = 2_262_292
STAGES = ("synth", "prepare", "train", "knn", "metrics", "storage")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_stage(name: str, *args: str) -> tuple[float, float, str]:
    """Run ``songhpo ARGS`` in a child process; return its wall seconds, its peak memory (MiB) and stdout."""
    _log(f"  {name}: songhpo {' '.join(args)}")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "hpo", "-q", *args], stdout=out, stderr=err,
                                 env={**os.environ, "SONGHPO_PROGRESS": "0"})
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"{name} failed (exit {child.returncode}):\n{err.read().decode(errors='replace')}")
        return seconds, usage.ru_maxrss / 1024, out.read().decode()  # ru_maxrss is in KiB on Linux


def measure(fraction: float, root: Path, seed: int) -> dict[str, Any]:
    """Every stage at ``fraction`` of MPD, in ``root``; one row of the table."""
    playlists = max(1, round(fraction * MPD_PLAYLISTS))
    tracks = max(240, round(fraction * MPD_TRACKS))
    mean_length = MPD_PLAYS / MPD_PLAYLISTS
    raw, prepared, db = root / "raw", root / "prepared", root / "scale.db"
    row: dict[str, Any] = {"fraction": fraction, "playlists": playlists, "tracks": tracks}
    row["synth_s"], row["synth_mb"], out = run_stage(
        "synth", "data", "synth", "--out", str(raw), "--sequences", str(playlists), "--tracks", str(tracks),
        "--mean-length", f"{mean_length:.4f}", "--format", "parquet", "--seed", str(seed))
    row["plays"] = json.loads(out)["plays"]
    row["prepare_s"], row["prepare_mb"], out = run_stage("prepare", "data", "prepare", str(raw), "--out", str(prepared),
                                                         "--seed", str(seed))
    counts = json.loads(out)["counts"]
    row["songs"] = counts["songs"]
    config = root / "study.toml"
    config.write_text(f'name = "scale"\ndataset = "{prepared}"\nstorage = "sqlite:///{db}"\ntrials = 1\nseed = {seed}\n')
    run_stage("create", "study", "create", str(config))
    row["trial_wall_s"], row["trial_mb"], _ = run_stage("trial", "study", "run", str(config), "--n-trials", "1")
    trial = optuna.load_study(study_name="scale", storage=f"sqlite:///{db}").trials[0]
    if trial.state != optuna.trial.TrialState.COMPLETE:
        raise SystemExit(f"the baseline trial did not complete: {trial.user_attrs.get('fail_reason')}")
    attrs = trial.user_attrs
    assert trial.datetime_start is not None and trial.datetime_complete is not None
    wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
    row.update(train_s=attrs["train_seconds"], knn_s=attrs["knn_seconds"], metrics_s=attrs["metrics_seconds"],
               trial_s=wall)
    row["storage_s"] = max(0.0, wall - row["train_s"] - row["knn_s"] - row["metrics_s"])
    row["eval_share"] = (row["knn_s"] + row["metrics_s"]) / row["train_s"]
    row["ndcg"], row["ndcg_se"] = attrs["ndcg"], attrs.get("ndcg_se")
    row["queries"] = attrs.get("query_songs_sampled")
    row["db"], row["prepared"] = db, prepared
    return row


def evaluate_caps(row: dict[str, Any], caps: list[tuple[int, int]], seed: int) -> list[list[Any]]:
    """The trial of ``row`` evaluated again on validation under each ``(max_pairs, coherence_sample)``."""
    from hpo.artifacts import trial_vectors
    from hpo.evaluation import evaluate_split
    from hpo.study import load_study
    from hpo.trials import study_dataset
    from metrics.evaluate import EvaluationSettings

    study, config = load_study("scale", f"sqlite:///{row['db']}")
    dataset = study_dataset(study, config)
    vectors = trial_vectors(study, study.trials[0], config, dataset)
    _log(f"  caps: the trial's vectors ({vectors.source}, {vectors.seconds:.0f} s)")
    table = []
    for max_pairs, coherence in caps:
        settings = EvaluationSettings(max_pairs=max_pairs, coherence_sample=coherence, seed=seed)
        result = evaluate_split(dataset, vectors.matrix, vectors.present, "validation", settings)
        knn, other = result.timings["knn"], result.timings["metrics"]
        ndcg, se = result.metrics["ndcg"], result.sampling["ndcg_se"]
        _log(f"  max_pairs {max_pairs}, coherence_sample {coherence}: kNN {knn:.0f} s, metrics {other:.0f} s")
        table.append([f"{100 * row['fraction']:g}%", max_pairs, coherence, result.sampling["query_songs_sampled"],
                      knn, other, 100 * (knn + other) / row["train_s"], ndcg,
                      100 * se / ndcg if ndcg and se is not None else None])
    return table


def growth(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Per pair of consecutive sizes: each stage's exponent ``log(t2 / t1) / log(n2 / n1)``."""
    out = []
    for a, b in zip(rows, rows[1:]):
        scale = math.log(b["playlists"] / a["playlists"])
        out.append([f"{a['fraction']:g} -> {b['fraction']:g}", 1.0,
                    *(math.log(b[f"{s}_s"] / a[f"{s}_s"]) / scale if a[f"{s}_s"] > 0 and b[f"{s}_s"] > 0 else None
                      for s in STAGES),
                    math.log(b["prepare_mb"] / a["prepare_mb"]) / scale])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.01,0.1", help="fractions of MPD, one row each (default 0.01,0.1)")
    parser.add_argument("--workdir", type=Path, help="where the data goes (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep each size's data in --workdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--caps", default="", help="MAX_PAIRS:COHERENCE_SAMPLE,... to evaluate the trial's vectors "
                        "again under (default: none)")
    args = parser.parse_args()
    try:
        caps = [(int(c.split(":")[0]), int(c.split(":")[1])) for c in args.caps.split(",") if c.strip()]
    except (ValueError, IndexError):
        parser.error(f"--caps {args.caps!r}: expected MAX_PAIRS:COHERENCE_SAMPLE pairs, e.g. 50000:20000,20000:5000")
    try:
        sizes = sorted(float(s) for s in args.sizes.split(",") if s.strip())
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: expected comma-separated fractions, e.g. 0.01,0.1")
    if not sizes or not all(0.0 < s <= 1.0 for s in sizes):
        parser.error(f"--sizes {args.sizes!r}: every fraction must be in (0, 1]")
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    workdir = Path(tempfile.mkdtemp(prefix="bench_scale-", dir=args.workdir))
    rows = []
    cap_rows: list[list[Any]] = []
    try:
        for fraction in sizes:
            _log(f"{fraction:g} of MPD")
            root = workdir / f"mpd-{fraction:g}"
            root.mkdir()
            rows.append(measure(fraction, root, args.seed))
            if caps:
                cap_rows.extend(evaluate_caps(rows[-1], caps, args.seed))
            if not args.keep:
                shutil.rmtree(root)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    headers = ["MPD", "playlists", "plays", "songs", "synth s", "synth MB", "prepare s", "prepare MB", "train s",
               "kNN s", "metrics s", "storage+other s", "trial MB", "kNN+metrics % of train", "NDCG rel. SE %"]
    table = [[f"{100 * r['fraction']:g}%", r["playlists"], r["plays"], r["songs"], r["synth_s"], r["synth_mb"],
              r["prepare_s"], r["prepare_mb"], r["train_s"], r["knn_s"], r["metrics_s"], r["storage_s"], r["trial_mb"],
              100 * r["eval_share"], 100 * r["ndcg_se"] / r["ndcg"] if r["ndcg"] and r["ndcg_se"] is not None else None]
             for r in rows]
    print(f"synthetic MPD-shaped data (66.3 plays a playlist, tracks scaled from 2.26M; seed {args.seed}); "
          "one default trial (gensim's defaults) each; wall seconds, peak memory in MiB; baseline = the trial's training")
    print(format_table(headers, table, digits=3))
    if len(rows) > 1:
        print()
        print("growth exponent between sizes (baseline: linear = 1.00)")
        print(format_table(["sizes", "linear", *(f"{s} s" for s in STAGES), "prepare MB"], growth(rows), digits=3))
    if cap_rows:
        print()
        print("the trial's vectors evaluated again on validation under each cap (baseline: the trial's training)")
        print(format_table(["MPD", "max_pairs", "coherence_sample", "query songs", "kNN s", "metrics s",
                            "kNN+metrics % of train", "NDCG@100", "NDCG rel. SE %"], cap_rows, digits=3))
    if args.keep:
        print(f"\ndata kept in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
