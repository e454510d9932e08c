"""``songhpo study evaluate`` (final test evaluation) and ``songhpo pareto show|export`` (snapshots)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import IO, Any

from hpo._table import format_table, format_value
from hpo.cli.common import storage_argument
from storage.errors import InputError

_log = logging.getLogger("songhpo")
EXPORT_FORMATS = ("csv", "json", "parquet")


def add_result_commands(commands: Any, study_commands: Any) -> None:
    """Register ``study evaluate`` under ``study_commands`` and ``pareto show|export`` under ``commands``."""
    evaluate = study_commands.add_parser(
        "evaluate",
        help="re-train the Pareto front and the baseline with several seeds and evaluate them on test",
        description="Re-train every trial of the feasible Pareto front, and the baseline, with --seeds seeds "
        "(seed i = trial seed + 1000 i), evaluate them on the test split, and store a Pareto-front snapshot with "
        "95%% confidence intervals in the songhpo_ tables of the storage. Each (trial, seed) is committed as it "
        "finishes and never recomputed: an interrupted run continues where it stopped, and more --seeds reuse "
        "the seeds already done.",
    )
    evaluate.add_argument("name", help="study name")
    storage_argument(evaluate)
    evaluate.add_argument("--seeds", type=int, default=3, help="re-training seeds per trial (default 3)")
    evaluate.add_argument("--dataset", default=None, help="prepared dataset path on this machine (default: the study's)")
    evaluate.add_argument("--json", action="store_true", help="print a JSON summary instead of the table")
    evaluate.set_defaults(handler=_cmd_evaluate)

    pareto = commands.add_parser("pareto", help="show or export Pareto-front snapshots (test, with CIs)",
                                 description="Show or export the latest Pareto-front snapshot of a study.")
    sub = pareto.add_subparsers(title="pareto commands", metavar="COMMAND")
    show = sub.add_parser(
        "show", help="table of the latest snapshot (or the validation front)",
        description="Print the latest Pareto-front snapshot (test means with 95%% confidence intervals). Without "
        "a snapshot, print the feasible validation front and say so.",
    )
    show.add_argument("name", help="study name")
    storage_argument(show)
    show.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    show.set_defaults(handler=_cmd_show)

    export = sub.add_parser(
        "export", help="write the latest snapshot as CSV, JSON or Parquet",
        description="Write the latest Pareto-front snapshot, one row per member with flat columns (trial, baseline, "
        "on_front, n_seeds, params.*, validation.*, test.<metric>.mean/low/high/n), atomically.",
    )
    export.add_argument("name", help="study name")
    storage_argument(export)
    export.add_argument("--format", choices=EXPORT_FORMATS, default=None,
                        help="file format (default: from the --out suffix)")
    export.add_argument("--out", required=True, type=Path, help="output file ('-' for stdout, with --format)")
    export.add_argument("--force", action="store_true", help="replace --out if it exists")
    export.set_defaults(handler=_cmd_export)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise InputError(f"--seeds {args.seeds}: expected a positive integer")
    from hpo.results import evaluate_front
    from hpo.study import load_study
    from storage.results import load_snapshot

    study, config = load_study(args.name, args.storage)
    report = evaluate_front(study, config, seeds=args.seeds, dataset_path=args.dataset)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    snapshot = load_snapshot(args.storage, report.snapshot_id)
    assert snapshot is not None
    _print_snapshot(snapshot)
    return 0


def _latest(name: str, storage: str) -> dict[str, Any] | None:
    from storage.results import load_latest_snapshot

    return load_latest_snapshot(storage, name)


def _cmd_show(args: argparse.Namespace) -> int:
    snapshot = _latest(args.name, args.storage)
    if snapshot is None:
        from hpo.study import load_study
        from hpo.trials import feasible_pareto_front, trial_row

        study, _ = load_study(args.name, args.storage)
        rows = [trial_row(t, study.metric_names) for t in feasible_pareto_front(study)]
        if args.json:
            json.dump({"snapshot": None, "validation_front": rows}, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
            return 0
        print(f"no test snapshot of {args.name} yet: feasible Pareto front on VALIDATION "
              f"(run 'songhpo study evaluate {args.name}' for test metrics with confidence intervals)")
        if rows:
            headers = list(dict.fromkeys(k for row in rows for k in row))
            print(format_table(headers, [[row.get(h) for h in headers] for row in rows]))
        else:
            print("no completed feasible trial yet")
        return 0
    if args.json:
        json.dump(snapshot, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    _print_snapshot(snapshot)
    return 0


def format_interval(stats: dict[str, Any] | None) -> str:
    """``mean [low, high]`` to 4 significant digits; the mean alone with one seed; ``-`` when unavailable."""
    if not stats or stats.get("mean") is None:
        return "-"
    if stats.get("low") is None:
        return format_value(stats["mean"])
    return f"{format_value(stats['mean'])} [{format_value(stats['low'])}, {format_value(stats['high'])}]"


def _print_snapshot(snapshot: dict[str, Any]) -> None:
    metrics = list(dict.fromkeys([*snapshot["objectives"], "hardneg"]))
    done = sum(m["n_seeds"] for m in snapshot["members"])
    total = snapshot["seeds"] * len(snapshot["members"])
    state = "complete" if snapshot["complete"] else f"INCOMPLETE: {done} of {total} runs; rerun 'songhpo study evaluate'"
    print(f"Pareto-front snapshot {snapshot['snapshot_id']} of {snapshot['study']} on TEST "
          f"({snapshot['seeds']} seeds, mean [95% CI]; created {snapshot['created']}; {state})")
    constraint = snapshot["constraint"]
    if constraint.get("enabled"):
        print(f"front selected on validation under the HardNeg safeguard (tolerance {constraint.get('tolerance')}, "
              f"baseline HardNeg {format_value(constraint.get('baseline_hardneg'))})")
    elif constraint.get("warning"):
        print(f"warning: {constraint['warning']}")
    headers = ["trial", "role", *(f"{m} (test)" for m in metrics), *(f"{m} (val)" for m in snapshot["objectives"]), "seeds"]
    rows = []
    for member in snapshot["members"]:
        role = "baseline" if member["baseline"] and not member["on_front"] else (
            "front+baseline" if member["baseline"] else "front")
        rows.append([member["trial"], role, *(format_interval(member["test"].get(m)) for m in metrics),
                     *(member["validation"].get(m) for m in snapshot["objectives"]), member["n_seeds"]])
    print(format_table(headers, rows))


def _cmd_export(args: argparse.Namespace) -> int:
    from hpo._atomic import STDOUT, atomic_write, check_out
    from storage.db import sqlite_file
    from storage.results import snapshot_frame

    fmt = args.format or args.out.suffix.lower().lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"--out {args.out}: cannot tell the format from the suffix; pass --format csv, json or parquet")
    to_stdout = args.out == STDOUT
    if to_stdout:
        pass
    elif args.out.is_dir():
        raise InputError(f"--out {args.out}: is a directory; give a file name such as {args.out / ('front.' + fmt)}")
    if not to_stdout:
        check_out(args.out, force=args.force, inputs=[p for p in [sqlite_file(args.storage)] if p is not None])
    snapshot = _latest(args.name, args.storage)
    if snapshot is None:
        from hpo.study import load_study

        load_study(args.name, args.storage)  # a clear error when the study does not exist either
        raise InputError(f"study {args.name!r} has no Pareto-front snapshot yet; run 'songhpo study evaluate {args.name}' first")
    frame = snapshot_frame(snapshot)
    summary = json.dumps({"out": str(args.out), "format": fmt, "snapshot_id": snapshot["snapshot_id"],
                          "rows": len(frame), "columns": len(frame.columns), "complete": snapshot["complete"]})
    if to_stdout:
        _write_frame(frame, sys.stdout.buffer, fmt)
        sys.stdout.flush()
        print(summary, file=sys.stderr)
        return 0
    try:
        atomic_write(args.out, lambda path: _write_frame(frame, path, fmt))
    except OSError as exc:
        raise InputError(f"--out {args.out}: cannot write ({exc.strerror or exc})") from exc
    print(summary)
    return 0


def _write_frame(frame: Any, target: Path | IO[bytes], fmt: str) -> None:
    """``frame`` as ``fmt`` into a file path or a binary stream (stdout)."""
    if fmt == "parquet":
        frame.to_parquet(target, index=False)
        return
    if fmt == "csv":
        text = frame.to_csv(index=False)
    else:
        # Not DataFrame.to_json: it rounds floats to 10 digits. NaN (unavailable) becomes null.
        records = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
        text = json.dumps(records, indent=2, allow_nan=False) + "\n"
    if isinstance(target, Path):
        target.write_text(text, encoding="utf-8")
    else:
        target.write(text.encode("utf-8"))


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
