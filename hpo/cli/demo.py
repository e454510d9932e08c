"""``songhpo demo``: synthetic data -> prepare -> a short multi-objective study on SQLite."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from hpo.cli.common import print_rows
from hpo.cli.study import pareto_rows

__all__ = ["add_demo_command"]

_log = logging.getLogger("songhpo")


def add_demo_command(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="synthetic data -> prepare -> short multi-objective study on SQLite",
        description="Generate a synthetic dataset, prepare it, run a short NSGA-II study (NDCG, CH-artist, CH-genre "
        "with the HardNeg safeguard) on a SQLite file, and print the Pareto front and the next commands.",
    )
    demo.add_argument("--out", type=Path, default=Path("songhpo-demo"), help="working directory (default songhpo-demo)")
    demo.add_argument("--trials", type=int, default=16, help="completed trials (default 16)")
    demo.add_argument("--sequences", type=int, default=6_000, help="synthetic sessions (default 6000)")
    demo.add_argument("--tracks", type=int, default=2_000, help="synthetic tracks (default 2000)")
    demo.add_argument("--seed", type=int, default=0, help="seed of data, splits and sampler (default 0)")
    demo.add_argument("--force", action="store_true", help="start over if --out exists")
    demo.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from hpo._atomic import check_out
    from hpo.config import parse_config
    from hpo.data.prepare import PrepareParams
    from hpo.data.synth import SynthParams
    from hpo.study import load_study

    out: Path = args.out.resolve()
    check_out(out, force=args.force, directory=True)  # --force never deletes the current directory, home or a root
    synth = SynthParams(sequences=args.sequences, tracks=args.tracks, seed=args.seed)
    synth.validate()
    prepare = PrepareParams(seed=args.seed)
    prepare.validate()
    storage = f"sqlite:///{out / 'songhpo.db'}"
    config = parse_config(
        {
            "name": "demo",
            "dataset": str(out / "prepared"),
            "storage": storage,
            "seed": args.seed,
            "trials": args.trials,
            "sampler": {"name": "nsga2"},
            # min_count 1 so every song of the small demo catalogue gets a vector.
            "search_space": {"min_count": 1},
        },
        "demo",
    )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    try:
        _run_demo(out, synth, prepare, config)
    except BaseException:
        # Nothing half-written: a demo that did not finish leaves no directory behind.
        shutil.rmtree(out, ignore_errors=True)
        raise
    rows = pareto_rows(load_study("demo", storage, config=config)[0])
    print_rows(rows, "feasible Pareto front of demo (validation; baseline = gensim defaults)")
    print()
    print("next:")
    print(f"  songhpo study status demo --storage {storage}")
    print(f"  songhpo study run {out / 'study.toml'}   # after raising 'trials' there; start several workers at once")
    print(f"  songhpo study evaluate demo --storage {storage} --seeds 3   # the front on the test split, with CIs")
    print(f"  songhpo report demo --storage {storage} --out {out / 'report.html'}")
    print(f"  songhpo dashboard --storage {storage}   # optuna-dashboard on http://127.0.0.1:8080")
    # A front member that is not the baseline when there is one: its vectors are in the artifact store.
    pick = next((r["trial"] for r in rows if not r["baseline"]), rows[0]["trial"] if rows else 0)
    print(f"  songhpo export demo --trial {pick} --storage {storage} --out {out / f'demo-trial{pick}.txt'}"
          "   # its vectors (word2vec text)")
    print(f"  python -c \"from hpo import api; print(api.front('demo', '{storage}'))\"   # the front as a DataFrame")
    return 0


def _run_demo(out: Path, synth: Any, prepare: Any, config: Any) -> None:
    from hpo._atomic import atomic_write_text
    from hpo.data.prepare import prepare_dataset
    from hpo.data.readers import read_input
    from hpo.data.synth import write_synthetic
    from hpo.study import create_study, load_study, run_worker

    _log.info("demo 1/3: synthetic data (%d sessions, %d tracks)", synth.sequences, synth.tracks)
    write_synthetic(out / "data", synth)
    _log.info("demo 2/3: preparing splits and hard negatives")
    prepare_dataset(read_input(out / "data"), out / "prepared", prepare)
    atomic_write_text(out / "study.toml", _demo_toml(config))
    _log.info("demo 3/3: NSGA-II study of %d trials on %s", config.trials, out / "songhpo.db")
    create_study(config)
    study, config = load_study("demo", config.storage, config=config)
    run_worker(study, config)


def _demo_toml(config: Any) -> str:
    return (
        "# Written by 'songhpo demo'; see 'songhpo study init' for every option.\n"
        f'name = "{config.name}"\n'
        f'dataset = "prepared"\n'
        f'storage = "sqlite:///songhpo.db"\n'
        f"seed = {config.seed}\n"
        f"trials = {config.trials}\n"
        '\n[sampler]\nname = "nsga2"\n'
        "\n[search_space]\nmin_count = 1\n"
    )
