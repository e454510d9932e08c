"""``songhpo study init|create|run|status|pareto|list``: create, run and inspect studies."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hpo._table import format_value
from hpo.cli.common import print_json, print_rows, storage_argument
from storage.errors import InputError

__all__ = ["add_study_commands", "pareto_rows"]

_log = logging.getLogger("songhpo")


def add_study_commands(commands: Any) -> Any:
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
    storage_argument(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=_cmd_study_status)

    pareto = sub.add_parser("pareto", help="the feasible Pareto front on validation",
                            description="Print the feasible Pareto-front trials (HardNeg safeguard applied) with their "
                            "objective values and parameters.")
    pareto.add_argument("name", help="study name")
    storage_argument(pareto)
    pareto.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pareto.set_defaults(handler=_cmd_study_pareto)

    listing = sub.add_parser("list", help="studies in a storage", description="List the studies in a storage.")
    storage_argument(listing)
    listing.set_defaults(handler=_cmd_study_list)
    return sub


def _cmd_study_init(args: argparse.Namespace) -> int:
    from hpo._atomic import STDOUT, atomic_write_text, check_out
    from hpo.config import EXAMPLE_CONFIG

    if args.out == STDOUT:
        sys.stdout.write(EXAMPLE_CONFIG)
        return 0
    if args.out.is_dir():
        raise InputError(f"--out {args.out}: is a directory; give a file name such as {args.out / 'study.toml'}")
    check_out(args.out, force=args.force)
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
    print_json({"study": study.study_name, "storage": safe_url(config.storage), "objectives": config.objectives})
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
    print_json({"study": study.study_name, "worker": report.worker, "completed": report.completed,
                 "failed": report.failed, "seconds": round(report.seconds, 2)})
    return 0


def _cmd_study_status(args: argparse.Namespace) -> int:
    from hpo.study import load_study, study_status
    from hpo.trials import safeguard_rule

    study, config = load_study(args.name, args.storage)
    status = study_status(study)
    if args.json:
        print_json(status)
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


def pareto_rows(study: Any) -> list[dict[str, Any]]:
    from hpo.trials import feasible_pareto_front, trial_row

    return [trial_row(t, study.metric_names) for t in feasible_pareto_front(study)]


def _cmd_study_pareto(args: argparse.Namespace) -> int:
    from hpo.study import load_study

    study, _ = load_study(args.name, args.storage)
    rows = pareto_rows(study)
    if args.json:
        print_json(rows)
    else:
        print_rows(rows, f"feasible Pareto front of {study.study_name} (validation)")
    return 0


def _cmd_study_list(args: argparse.Namespace) -> int:
    import optuna

    from hpo.study import open_storage_url, require_sqlite_file, safe_url
    from hpo.trials import CONFIG_ATTR

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
    print_rows(rows, "studies")
    return 0
