"""Benchmark of training throughput on one machine: gensim threads against worker processes.

Run by hand, on an otherwise idle machine (it measures what the cores give)::

    python benchmarks/bench_throughput.py PREPARED [--trials 12] [--seed 0] [--workdir DIR]

The workload is the same for every mode: a default study (NSGA-II) whose ``sampler.population_size``
equals its budget of ``--trials``, so that every trial is fixed before any runs (gensim's defaults, the
literature setting, then the Latin hypercube of the first generation; :func:`hpo.search.initial_design`),
each with its recorded training seed. Each mode runs that study from scratch in its own SQLite file with
the real ``songhpo study run`` CLI:

* ``1 process x 1 thread``: ``training.workers = 1``, one worker process (the named baseline);
* ``1 process x 2 threads``: ``training.workers = 2``, one worker process;
* ``2 processes x 1 thread``: ``training.workers = 1``, two worker processes on the same study.

The table gives each mode's wall seconds from the start to the completion of the last of the fixed
trials (as the storage records it), trials per hour, the ratio to the baseline's trials per hour, and how
many trials reproduce the baseline's validation NDCG bit for bit (gensim is deterministic with one thread
only). Two processes may each start a trial while the last fixed one runs (a trial beyond the budget, as
in any study with several workers); it is counted in ``extra`` and left out of the rate. Progress on
stderr, the table on stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo._table import format_table

MODES = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _songhpo(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "hpo", "-q", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "SONGHPO_PROGRESS": "0"})


def _finish(child: subprocess.Popen[bytes], what: str) -> None:
    _, err = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{what} failed (exit {child.returncode}):\n{err.decode(errors='replace')}")


def run_mode(prepared: Path, root: Path, processes: int, threads: int, trials: int, seed: int) -> dict[str, Any]:
    """Run the fixed study with ``processes`` worker processes of ``threads`` gensim threads each."""
    db = root / "study.db"
    config = root / "study.toml"
    config.write_text(f'name = "throughput"\ndataset = "{prepared}"\nstorage = "sqlite:///{db}"\n'
                      f"trials = {trials}\nseed = {seed}\n[sampler]\npopulation_size = {trials}\n"
                      f'[training]\nworkers = {threads}\n[artifacts]\npolicy = "none"\n')
    _finish(_songhpo("study", "create", str(config)), "study create")
    start = datetime.now()  # the storage's timestamps are naive local times
    children = [_songhpo("study", "run", str(config)) for _ in range(processes)]
    for child in children:
        _finish(child, "study run")
    study = optuna.load_study(study_name="throughput", storage=f"sqlite:///{db}")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete = [t for t in done if t.number < trials]
    if len(complete) < trials:
        raise SystemExit(f"only {len(complete)} of the {trials} fixed trials completed")
    last = max(t.datetime_complete for t in complete if t.datetime_complete is not None)
    return {"wall_s": (last - start).total_seconds(), "trials": trials, "extra": len(done) - trials,
            "cpu_s": sum(float(t.user_attrs.get("cpu_seconds", 0.0)) for t in complete),
            "ndcg": {t.number: t.user_attrs["ndcg"] for t in complete},
            "params": {t.number: t.params for t in complete}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", type=Path, help="prepared dataset directory")
    parser.add_argument("--trials", type=int, default=12, help="trials of the fixed study (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="where the study files go (default: a temporary directory)")
    args = parser.parse_args()
    if args.trials < 2:
        parser.error(f"--trials {args.trials}: expected at least 2 (gensim's defaults and one design trial)")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="bench_throughput-", dir=args.workdir))
    rows: list[dict[str, Any]] = []
    try:
        for label, processes, threads in MODES:
            _log(f"{label}: {args.trials} trials on {args.prepared.name}")
            root = workdir / label.replace(" ", "_")
            root.mkdir()
            rows.append({"mode": label, **run_mode(args.prepared.resolve(), root, processes, threads, args.trials,
                                                   args.seed)})
            _log(f"  {rows[-1]['wall_s']:.0f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    baseline = rows[0]
    if any(row["params"] != baseline["params"] for row in rows):
        raise SystemExit("the modes ran different configurations; the comparison is void")
    table = []
    for row in rows:
        per_hour = 3600 * row["trials"] / row["wall_s"]
        same = sum(row["ndcg"][n] == baseline["ndcg"][n] for n in baseline["ndcg"])
        table.append([row["mode"], row["trials"], row["extra"], row["wall_s"], row["cpu_s"] / row["trials"], per_hour,
                      per_hour / (3600 * baseline["trials"] / baseline["wall_s"]),
                      f"{same} of {len(baseline['ndcg'])}"])
    print(f"{args.prepared.name}: the same {args.trials} fixed trials (seed {args.seed}) per mode, "
          f"{os.cpu_count()} cores; baseline = 1 process x 1 thread")
    print(format_table(["mode", "trials", "extra", "wall s", "CPU s per trial", "trials per hour", "vs baseline",
                        "NDCG identical to baseline"], table, digits=3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
