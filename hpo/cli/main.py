"""The ``songhpo`` command line.

User mistakes (:class:`hpo.errors.InputError`) print one line on stderr and exit with code 2; logs go
to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hpo import __version__
from hpo._table import format_table, format_value
from hpo.errors import InputError

_log = logging.getLogger("songhpo")

Handler = Callable[[argparse.Namespace], int]
DEFAULT_STORAGE = "sqlite:///songhpo.db"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``songhpo`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Third-party libraries log a lot at INFO (gensim per epoch); keep ours.
    for noisy in ("gensim", "faiss", "alembic", "smart_open", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.parse_args([*(argv or sys.argv[1:]), "--help"])
        return 2
    try:
        return handler(args)
    except InputError as exc:
        print(f"songhpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("songhpo: interrupted", file=sys.stderr)
        _exit_now_after_interrupt(130)
    except BrokenPipeError:
        # The reader went away (`songhpo study status ... | head -1`): stop quietly, as Unix tools killed by
        # SIGPIPE do; stdout points at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _exit_now_after_interrupt(code: int) -> NoReturn:
    """Exit at once with ``code`` after Ctrl-C, skipping the interpreter's shutdown.

    Two things in that shutdown would turn a handled Ctrl-C into a different exit: Ctrl-C can land while
    Optuna starts a trial's heartbeat thread, after the thread runs and before the code that stops it is
    armed, and the interpreter would wait for it forever; and a KeyboardInterrupt raised inside compiled
    code (gensim's training loop) marks itself unhandled, so CPython ends the process by SIGINT instead of
    the exit code. The trials this process ran are already marked FAIL (``hpo.study``) and every write is
    committed, so nothing is lost by not running the shutdown.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="songhpo",
        description="Multi-objective hyper-parameter optimisation of Word2Vec song embeddings.",
    )
    parser.add_argument("--version", action="version", version=f"songhpo {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    data = commands.add_parser("data", help="generate or prepare datasets", description="Generate or prepare datasets.")
    data_commands = data.add_subparsers(title="data commands", metavar="COMMAND")

    synth = data_commands.add_parser(
        "synth",
        help="write a synthetic dataset with planted structure",
        description="Write plays.csv and tracks.csv of synthetic sessions (genres -> artists -> tracks, "
        "Zipf popularity, chart hits that become hard negatives).",
    )
    synth.add_argument("--out", required=True, type=Path, help="output directory (must not exist)")
    synth.add_argument("--sequences", type=int, default=20_000, help="number of sessions (default 20000)")
    synth.add_argument("--tracks", type=int, default=5_000, help="number of tracks (default 5000)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--force", action="store_true", help="replace --out if it exists")
    synth.set_defaults(handler=_cmd_synth)

    prepare = data_commands.add_parser(
        "prepare",
        help="split, code and write a prepared dataset",
        description="Read INPUT (generic plays/tracks tables or a yes.com directory), make the in-set and "
        "out-of-set validation/test splits, find chi-squared hard negatives, and write a prepared dataset "
        "directory atomically. Prints the manifest counts as JSON on stdout.",
    )
    prepare.add_argument("input", type=Path, help="dataset directory")
    prepare.add_argument("--out", required=True, type=Path, help="output directory (must not exist)")
    prepare.add_argument("--format", default="auto", choices=["auto", "generic", "yes", "mpd"], help="input format")
    prepare.add_argument("--val", type=float, default=0.1, help="fraction of sequences held out for validation")
    prepare.add_argument("--test", type=float, default=0.1, help="fraction of sequences held out for test")
    prepare.add_argument("--seed", type=int, default=0, help="random seed of the splits (default 0)")
    prepare.add_argument("--hardneg-scope", default="bigram", choices=["bigram", "sequence"],
                         help="co-occurrence of the chi-squared test: adjacent bigrams (paper) or whole sequences")
    prepare.add_argument("--hardneg-rule", default="pvalue", choices=["pvalue", "paper"],
                         help="pvalue: not significantly positively associated at --critical-value; "
                         "paper: chi2 below 1e-7 x total plays")
    prepare.add_argument("--min-cooc", type=int, default=None,
                         help="minimum co-occurrence of a hard negative (default max(2, ceil(1e-7 x plays)))")
    prepare.add_argument("--critical-value", type=float, default=3.841, help="chi2 critical value (p=0.05: 3.841)")
    prepare.add_argument("--drop-short", action="store_true", help="drop sequences with fewer than 2 plays")
    prepare.add_argument("--allow-missing-metadata", action="store_true",
                         help="accept played tracks absent from the tracks table (unknown artist and genre)")
    prepare.add_argument("--force", action="store_true", help="replace --out if it exists")
    prepare.set_defaults(handler=_cmd_prepare)

    verify = data_commands.add_parser(
        "verify",
        help="check a prepared dataset against its manifest",
        description="Check every file of a prepared dataset: the SHA-256 recorded in manifest.json, sizes and "
        "shapes, song ids in range, offsets, and every count of the manifest against the files. Prints a JSON "
        "summary; any inconsistency is one error line naming the file (exit code 2).",
    )
    verify.add_argument("dataset", type=Path, help="prepared dataset directory")
    verify.set_defaults(handler=_cmd_verify)

    from hpo.cli.concepts import add_concepts_command
    from hpo.cli.dashboard import add_dashboard_commands
    from hpo.cli.eval import add_eval_command
    from hpo.cli.experiment import add_experiment_commands
    from hpo.cli.results import add_result_commands

    add_eval_command(commands)
    study_commands = _add_study_commands(commands)
    add_result_commands(commands, study_commands)
    add_dashboard_commands(commands)
    add_concepts_command(commands)
    add_experiment_commands(commands)
    _add_demo_command(commands)
    return parser


def _storage_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=os.environ.get("SONGHPO_STORAGE", DEFAULT_STORAGE),
        help=f"SQLAlchemy storage URL (default: $SONGHPO_STORAGE or {DEFAULT_STORAGE})",
    )


def _add_study_commands(commands: Any) -> Any:
    study = commands.add_parser("study", help="create, run and inspect studies", description="Create, run and inspect studies.")
    sub = study.add_subparsers(title="study commands", metavar="COMMAND")

    init = sub.add_parser("init", help="write a commented example study config",
                          description="Write a commented example study configuration (TOML).")
    init.add_argument("--out", type=Path, default=Path("study.toml"),
                      help="config file to write ('-' for stdout; default study.toml)")
    init.add_argument("--force", action="store_true", help="replace --out if it exists")
    init.set_defaults(handler=_cmd_study_init)

    create = sub.add_parser("create", help="create a study from a config",
                            description="Create the study named in CONFIG in its storage and enqueue the baseline "
                            "(gensim defaults) as trial 0.")
    create.add_argument("config", type=Path, help="study config (TOML)")
    create.add_argument("--storage", default=None, help="override the config's storage URL")
    create.set_defaults(handler=_cmd_study_create)

    run = sub.add_parser("run", help="run a worker of a study (any number may run at once)",
                         description="Run trials of a study in this process. STUDY is a config file (the study is "
                         "created if missing) or the name of a study in --storage. Start as many workers as you like, "
                         "on any machine that reaches the storage and the prepared dataset.")
    run.add_argument("study", help="config file (.toml) or study name")
    run.add_argument("--storage", default=None, help="storage URL (required with a study name unless $SONGHPO_STORAGE)")
    run.add_argument("--dataset", default=None, help="prepared dataset path on this machine (default: the study's)")
    run.add_argument("--n-trials", type=int, default=None, help="at most this many trials in this worker")
    run.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    run.set_defaults(handler=_cmd_study_run)

    status = sub.add_parser("status", help="trial counts, baseline and safeguard of a study",
                            description="Show trial counts by state, the baseline's metrics, the Pareto front size and "
                            "the HardNeg safeguard status.")
    status.add_argument("name", help="study name")
    _storage_argument(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=_cmd_study_status)

    pareto = sub.add_parser("pareto", help="the feasible Pareto front on validation",
                            description="Print the feasible Pareto-front trials (HardNeg safeguard applied) with their "
                            "objective values and parameters.")
    pareto.add_argument("name", help="study name")
    _storage_argument(pareto)
    pareto.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pareto.set_defaults(handler=_cmd_study_pareto)

    listing = sub.add_parser("list", help="studies in a storage", description="List the studies in a storage.")
    _storage_argument(listing)
    listing.set_defaults(handler=_cmd_study_list)
    return sub


def _add_demo_command(commands: Any) -> None:
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


def _print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def _cmd_synth(args: argparse.Namespace) -> int:
    from hpo.data.synth import SynthParams, write_synthetic

    params = SynthParams(sequences=args.sequences, tracks=args.tracks, seed=args.seed)
    _log.info("generating %d synthetic sessions over %d tracks (seed %d)", params.sequences, params.tracks, params.seed)
    counts = write_synthetic(args.out, params, overwrite=args.force)
    _print_json({"out": str(args.out), **counts})
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from hpo._atomic import check_replaceable
    from hpo.data.prepare import PrepareParams, prepare_dataset
    from hpo.data.readers import read_input

    params = PrepareParams(
        val=args.val,
        test=args.test,
        seed=args.seed,
        hardneg_scope=args.hardneg_scope,
        hardneg_rule=args.hardneg_rule,
        min_cooc=args.min_cooc,
        critical_value=args.critical_value,
    )
    params.validate()
    if args.out.exists() and not args.force:
        raise InputError(f"{args.out}: output directory already exists; choose another --out or pass --force to replace it")
    check_replaceable(args.out, [args.input])  # before reading: --force never deletes the input
    _log.info("reading %s", args.input)
    raw = read_input(args.input, args.format, drop_short=args.drop_short, allow_missing_metadata=args.allow_missing_metadata)
    manifest = prepare_dataset(raw, args.out, params, overwrite=args.force)
    _print_json(
        {
            "out": str(args.out),
            "fingerprint": manifest["fingerprint"],
            "counts": manifest["counts"],
            "hard_negatives": manifest["hard_negatives"],
            "dropped": manifest["dropped"],
        }
    )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from hpo.data.dataset import PreparedDataset

    summary = PreparedDataset.load(args.dataset, verify=False).verify()
    _print_json({**summary, "verified": True})
    return 0


def _cmd_study_init(args: argparse.Namespace) -> int:
    from hpo._atomic import STDOUT, atomic_write_text
    from hpo.config import EXAMPLE_CONFIG

    if args.out == STDOUT:
        sys.stdout.write(EXAMPLE_CONFIG)
        return 0
    if args.out.is_dir():
        raise InputError(f"--out {args.out}: is a directory; give a file name such as {args.out / 'study.toml'}")
    if args.out.exists() and not args.force:
        raise InputError(f"{args.out}: already exists; choose another --out or pass --force")
    atomic_write_text(args.out, EXAMPLE_CONFIG)
    print(args.out)
    return 0


def _load_config(path: Path, storage: str | None) -> Any:
    from hpo.config import load_config

    config = load_config(path)
    return config.model_copy(update={"storage": storage}) if storage else config


def _cmd_study_create(args: argparse.Namespace) -> int:
    from hpo.study import create_study, safe_url

    config = _load_config(args.config, args.storage)
    study = create_study(config)
    _print_json({"study": study.study_name, "storage": safe_url(config.storage), "objectives": config.objectives})
    return 0


def _cmd_study_run(args: argparse.Namespace) -> int:
    from hpo.study import create_study, load_study, run_worker, safe_url

    if args.study.endswith(".toml") or Path(args.study).is_file():
        config = _load_config(Path(args.study), args.storage)
        study = create_study(config, exist_ok=True)
    else:
        storage = args.storage or os.environ.get("SONGHPO_STORAGE")
        if not storage:
            raise InputError(f"study {args.study!r}: pass --storage URL (or a config file) to say where it lives")
        study, config = load_study(args.study, storage)
    if args.n_trials is not None and args.n_trials < 1:
        raise InputError(f"--n-trials {args.n_trials}: expected a positive integer")
    _log.info("worker joining study %s in %s", study.study_name, safe_url(config.storage))
    report = run_worker(study, config, n_trials=args.n_trials, timeout=args.timeout or config.timeout, dataset_path=args.dataset)
    _print_json({"study": study.study_name, "worker": report.worker, "completed": report.completed,
                 "failed": report.failed, "seconds": round(report.seconds, 2)})
    return 0


def _cmd_study_status(args: argparse.Namespace) -> int:
    from hpo.study import load_study, safeguard_rule, study_status

    study, config = load_study(args.name, args.storage)
    status = study_status(study)
    if args.json:
        _print_json(status)
        return 0
    print(f"study {status['study']}: objectives {', '.join(status['objectives'] or [])} "
          f"({', '.join(status['directions'])})")
    budget = f" (budget: {status['budget']} completed)" if status.get("budget") else ""
    print("trials: " + ", ".join(f"{k} {v}" for k, v in status["trials"].items() if v) + budget)
    print(f"infeasible (HardNeg safeguard): {status['infeasible']}; feasible Pareto front: {status['pareto_front_size']} trials")
    if status["baseline"]:
        base = status["baseline"]
        metrics = ", ".join(f"{k}={format_value(v)}" for k, v in base.items() if k != "trial")
        print(f"baseline (trial {base['trial']}, gensim defaults): {metrics}")
    safeguard = status["safeguard"] or {}
    base = status["baseline"] or {}
    print(f"HardNeg safeguard: {safeguard_rule(safeguard, config.evaluation.k, base.get('hardneg'))}")
    for warning in (safeguard.get("warning"), status["infeasibility_warning"]):
        if warning:
            print(f"warning: {warning}")
    return 0


def _pareto_rows(study: Any) -> list[dict[str, Any]]:
    from hpo.study import feasible_pareto_front, trial_row

    return [trial_row(t, study.metric_names) for t in feasible_pareto_front(study)]


def _cmd_study_pareto(args: argparse.Namespace) -> int:
    from hpo.study import load_study

    study, _ = load_study(args.name, args.storage)
    rows = _pareto_rows(study)
    if args.json:
        _print_json(rows)
    else:
        _print_rows(rows, f"feasible Pareto front of {study.study_name} (validation)")
    return 0


def _print_rows(rows: list[dict[str, Any]], title: str) -> None:
    if not rows:
        print(f"{title}: no completed feasible trial yet")
        return
    headers = list(dict.fromkeys(k for row in rows for k in row))
    print(title)
    print(format_table(headers, [[row.get(h) for h in headers] for row in rows]))


def _cmd_study_list(args: argparse.Namespace) -> int:
    import optuna

    from hpo.study import CONFIG_ATTR, open_storage_url, require_sqlite_file, safe_url

    require_sqlite_file(args.storage)
    storage = open_storage_url(args.storage)
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        # Our studies keep their config; a plain Optuna study in the same storage shows its directions.
        config = summary.user_attrs.get(CONFIG_ATTR) or {}
        objectives = config.get("objectives") or [d.name.lower() for d in summary.directions]
        rows.append({"study": summary.study_name, "trials": summary.n_trials, "objectives": ", ".join(objectives),
                     "created": summary.datetime_start.isoformat(timespec="seconds") if summary.datetime_start else None})
    if not rows:
        print(f"no studies in {safe_url(args.storage)}")
        return 0
    _print_rows(rows, "studies")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from hpo._atomic import check_replaceable
    from hpo.config import parse_config
    from hpo.data.prepare import PrepareParams
    from hpo.data.synth import SynthParams
    from hpo.study import load_study

    out: Path = args.out.resolve()
    if out.exists() and not args.force:
        raise InputError(f"{out}: already exists; pass --force to start over or choose another --out")
    check_replaceable(args.out)  # --force never deletes the current directory, home or a root
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
    rows = _pareto_rows(load_study("demo", storage, config=config)[0])
    _print_rows(rows, "feasible Pareto front of demo (validation; baseline = gensim defaults)")
    print()
    print("next:")
    print(f"  songhpo study status demo --storage {storage}")
    print(f"  songhpo study run {out / 'study.toml'}   # after raising 'trials' there; start several workers at once")
    print(f"  songhpo study evaluate demo --storage {storage} --seeds 3   # the front on the test split, with CIs")
    print(f"  songhpo report demo --storage {storage} --out {out / 'report.html'}")
    print(f"  songhpo dashboard --storage {storage}   # optuna-dashboard on http://127.0.0.1:8080")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
