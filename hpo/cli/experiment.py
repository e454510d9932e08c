"""``songhpo experiment run|report``: the paper's experiments on one prepared dataset, and their page."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from storage.errors import InputError

__all__ = ["add_experiment_commands"]


def add_experiment_commands(commands: Any) -> None:
    """Register ``experiment run`` and ``experiment report`` on the top-level ``commands``."""
    from hpo.choices import DEFAULT_SCALES, MODES

    experiment = commands.add_parser(
        "experiment", help="the paper's experiments: modes, test CIs, scale study, results page",
        description="Run the paper's comparisons on one prepared dataset and write a results page.")
    sub = experiment.add_subparsers(title="experiment commands", metavar="COMMAND")
    run = sub.add_parser(
        "run", help="run (or resume) every mode's study and the test evaluation",
        description="Run one study per mode with the same budget of completed trials (baseline, the literature "
        "setting as a one-trial anchor, single-objective "
        "NDCG with TPE, single-objective CH-artist or CH-genre with TPE, random search, NSGA-II, NSGA-II without the "
        "HardNeg safeguard), re-train the configurations each mode chooses on validation with --seeds seeds on the "
        "test split, and run the NSGA-II study again on --scales fractions of the training sequences. Studies go to "
        "OUT/experiment.db (or "
        "--storage); OUT/results.json is rewritten after every study. Running the same command again resumes.")
    run.add_argument("--dataset", required=True, type=Path, help="prepared dataset directory ('songhpo data prepare')")
    run.add_argument("--out", required=True, type=Path, help="experiment directory (created if missing)")
    run.add_argument("--storage", default=None, help="storage URL (default: sqlite:///OUT/experiment.db)")
    run.add_argument("--name", default="exp", help="prefix of the study names (default exp)")
    run.add_argument("--trials", type=int, default=40, help="completed trials per mode, baseline included (default 40)")
    run.add_argument("--seeds", type=int, default=3, help="test re-trainings per chosen configuration (default 3)")
    run.add_argument("--seed", type=int, default=0,
                     help="seed of every study (default 0); run again with other seeds into other --out directories "
                     "and give them all to 'experiment report' to see how much the outcome depends on the search seed")
    run.add_argument("--population-size", type=int, default=None,
                     help="NSGA-II generation size (default: follows the budget, about five generations: "
                     "round(trials / 5) within [8, 40])")
    run.add_argument("--k", type=int, default=100, help="neighbours K of HitRate, NDCG and HardNeg (default 100)")
    run.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    run.add_argument("--scales", default=",".join(f"{s:g}" for s in DEFAULT_SCALES),
                     help="training fractions of the scale study, comma-separated ('' for none; default "
                     f"{','.join(f'{s:g}' for s in DEFAULT_SCALES)})")
    run.add_argument("--scale-modes", default="nsga2",
                     help="modes the scale study repeats: nsga2, nsga2-free or both, comma-separated (default nsga2)")
    run.add_argument("--fix", action="append", default=[], metavar="PARAM=VALUE",
                     help="fix a Word2Vec parameter in every study, the baseline included (repeatable; e.g. min_count=1 "
                     "so that songs with fewer than 5 plays get a vector); a fixed searched parameter is not searched")
    run.add_argument("--search-preset", default="default", choices=("default", "paper"),
                     help="search space of every study: 'default' (songhpo's space with epochs and sample, "
                     "'songhpo study init' shows it; the default) or 'paper' (the paper's five parameters and ranges)")
    run.set_defaults(handler=_cmd_run)

    report = sub.add_parser(
        "report", help="write the results page (Markdown and PNG figures) of an experiment",
        description="Read OUT/results.json and write a Markdown page with the side-effects table, popularity "
        "buckets, playlist continuation, the scale study and a verdict per paper claim, with PNG figures next "
        "to it (kaleido and a Chromium are needed for the PNGs; --no-png skips them).")
    report.add_argument("experiments", type=Path, nargs="+", metavar="EXPERIMENT",
                        help="experiment directory (or its results.json); several are merged into one page when they "
                        "ran different modes, or the same modes with different --seed, on the same dataset with the "
                        "same other settings")
    report.add_argument("--out", required=True, type=Path, help="Markdown file to write (figures go next to it)")
    report.add_argument("--title", default=None, help="page title (default: the dataset's directory name)")
    report.add_argument("--command", action="append", default=[], dest="commands",
                        help="a command to list under 'How to reproduce' (repeatable)")
    report.add_argument("--notes", type=Path, default=None,
                        help="a Markdown file whose text is placed under 'Notes' after the verdicts (your reading of them)")
    report.add_argument("--before", type=Path, action="append", default=[], metavar="EXPERIMENT",
                        help="an earlier run of the same experiment (directory or results.json; repeatable, merged like "
                        "EXPERIMENT): its headline test numbers go into a 'before and after' table")
    report.add_argument("--no-png", action="store_true", help="do not export figures")
    report.set_defaults(handler=_cmd_report)


def _fractions(text: str) -> tuple[float, ...]:
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise InputError(f"--scales: {part!r} is not a number; expected fractions like 0.1,0.25,0.5,1") from None
    return tuple(values)


def _fixed(items: list[str]) -> tuple[tuple[str, int | float], ...]:
    from objectives.word2vec import TUNABLE_PARAMETERS

    fixed: dict[str, int | float] = {}
    for item in items:
        name, _, text = item.partition("=")
        name = name.strip()
        if name not in TUNABLE_PARAMETERS:
            raise InputError(f"--fix {item}: unknown parameter {name!r}; expected one of {', '.join(TUNABLE_PARAMETERS)}")
        try:
            value: int | float = int(text) if text.strip().lstrip("-").isdigit() else float(text)
        except ValueError:
            raise InputError(f"--fix {item}: {text!r} is not a number") from None
        fixed[name] = value
    return tuple(fixed.items())


def _cmd_run(args: argparse.Namespace) -> int:
    from hpo.experiment import ExperimentSettings, run_experiment

    settings = ExperimentSettings(
        dataset=args.dataset, out=args.out, storage=args.storage, name=args.name, trials=args.trials,
        seeds=args.seeds, seed=args.seed, population_size=args.population_size, k=args.k,
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()), scales=_fractions(args.scales),
        scale_modes=tuple(m.strip() for m in args.scale_modes.split(",") if m.strip()), fixed=_fixed(args.fix),
        search_preset=args.search_preset)
    document = run_experiment(settings)
    summary = {
        "results": str(args.out / "results.json"),
        "studies": {s["study"]: {"trials": s["trials_complete"], "best": s["best_validation"]} for s in document["studies"]},
        "configurations": len(document["configurations"]),
        "next": f"songhpo experiment report {args.out} --out {args.out / 'results.md'}",
    }
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dashboards.experiment import write_results_page
    from dashboards.report import PngExportUnavailable
    from hpo.experiment import load_results, merge_results, reproduce_commands

    document = merge_results([load_results(path) for path in args.experiments], [str(p) for p in args.experiments])
    notes = None
    if args.notes is not None:
        try:
            notes = args.notes.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--notes {args.notes}: cannot read it as UTF-8 text ({exc})") from exc
    before = (merge_results([load_results(path) for path in args.before], [str(p) for p in args.before])
              if args.before else None)
    # Name the directories this page was made from, not where each run first wrote (they may have moved).
    commands = args.commands or reproduce_commands(
        document, args.out, dirs=[str(p.parent if p.suffix == ".json" else p) for p in args.experiments],
        title=args.title, notes=args.notes, before=args.before)
    try:
        written = write_results_page(document, args.out, title=args.title, commands=commands, png=not args.no_png,
                                     notes=notes, before=before)
    except PngExportUnavailable as exc:
        # The figures are exported before the page is written, so nothing is left half-made.
        raise InputError(f"--out {args.out}: cannot export the page's figures: {exc}; install Chromium "
                         "(Debian: apt-get install chromium) or pass --no-png") from exc
    for path in written:
        print(path)
    return 0
