"""``songhpo dashboard`` (optuna-dashboard with our note and charts) and ``songhpo report`` (HTML report)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hpo.cli.common import storage_argument
from storage.errors import InputError

_log = logging.getLogger("songhpo")


def add_dashboard_commands(commands: Any) -> None:
    """Register ``dashboard`` and ``report`` on the top-level subparsers."""
    dashboard = commands.add_parser(
        "dashboard",
        help="optuna-dashboard on the study storage, with our note and charts",
        description="Save a note (dataset, objectives, HardNeg constraint, baseline values) and our charts "
        "(constraint-aware Pareto front, popularity buckets, side-effects table) into every songhpo study of "
        "the storage, then serve optuna-dashboard on it until Ctrl-C, with the trial vectors the studies keep as "
        "artifacts downloadable from each trial's page. Listens on 127.0.0.1 by default.",
    )
    storage_argument(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    dashboard.add_argument("--artifact-dir", default=None, metavar="DIR",
                           help="serve trial vectors from this directory (default: each study's artifact directory, "
                           "<db stem>-artifacts/ next to a SQLite file or the config's [artifacts] store)")
    dashboard.set_defaults(handler=_cmd_dashboard)

    report = commands.add_parser(
        "report",
        help="a self-contained HTML report of a study",
        description="Write one HTML file (plotly, nothing loaded from the network) with the feasible Pareto front "
        "(2-D pairs and 3-D), popularity-bucket curves and the side-effects table of the baseline, the best-NDCG, "
        "the best-clustering and the balanced-compromise trials (test values with 95% CIs when a test snapshot "
        "exists), the optimisation history, the hypervolume, parameter importances and parallel coordinates.",
    )
    report.add_argument("name", help="study name")
    storage_argument(report)
    report.add_argument("--out", type=Path, default=Path("report.html"),
                        help="HTML file to write ('-' for stdout; default report.html)")
    report.add_argument("--png", type=Path, default=None, metavar="DIR",
                        help="also write each figure as DIR/<figure>.png (needs kaleido and Chrome/Chromium)")
    report.set_defaults(handler=_cmd_report)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboards.launch import serve_dashboard

    serve_dashboard(args.storage, host=args.host, port=args.port, out=sys.stdout, artifact_dir=args.artifact_dir)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dashboards.report import PngExportUnavailable, build_report, latest_snapshot
    from hpo._atomic import STDOUT, check_replaceable
    from hpo.study import load_study
    from storage.db import sqlite_file

    out: Path = args.out
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory; expected an HTML file path")
    if out != STDOUT:
        check_replaceable(out, [p for p in [sqlite_file(args.storage)] if p is not None])
    if args.png is not None and args.png.exists() and not args.png.is_dir():
        raise InputError(f"--png {args.png}: is a file; expected a directory")
    study, _ = load_study(args.name, args.storage)
    snapshot = latest_snapshot(args.storage, args.name)
    report = build_report(study, snapshot)
    if out == STDOUT:
        sys.stdout.write(report.to_html())
        sys.stdout.flush()
    else:
        report.write_html(out)
    pngs: list[str] | None = None
    if args.png is not None:
        try:
            pngs = [str(p) for p in report.write_pngs(args.png)]
        except PngExportUnavailable as exc:
            _log.warning("--png: %s; PNG files skipped", exc)
    summary = json.dumps({"study": study.study_name, "report": str(out), "png": pngs,
                          "snapshot": None if snapshot is None else snapshot.get("snapshot_id"),
                          "configurations": {c.role: c.trial.number for c in report.selection}},
                         indent=2, sort_keys=True)
    # The summary is the result, unless the page itself went to stdout.
    print(summary, file=sys.stderr if out == STDOUT else sys.stdout)
    return 0
