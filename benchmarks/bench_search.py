"""Benchmark of the search: what each sampler's default study finds, per trial and per compute-hour.

Run by hand (long: every study trains real embeddings; resumable, so stop and start it at will)::

    python benchmarks/bench_search.py PREPARED [PREPARED ...] --out DIR [--plan "nsga2:40,80 gp:40 tpe:40 random:80"]
        [--seeds 0,1,2] [--anchor-seeds 0] [--anchor-budget 40] [--carry CARRY]

For every prepared dataset, study seed, and sampler:budget of ``--plan``, a default study (``search_preset =
"default"``, objectives NDCG, CH-artist and CH-genre less those the dataset has no labels for, the HardNeg
safeguard on) runs to its budget of completed trials in ``DIR/<dataset>.db``. ``gp`` needs PyTorch. In the
same run, per dataset and seed, the anchors: gensim's defaults (trial 0 of every study), the published
music setting of Caselles-Dupré et al. (RecSys 2018) trained with the study seed, and the best trial of a
single-objective TPE study on NDCG (``--anchor-budget`` trials, no safeguard; for ``--anchor-seeds``).
Random search does not depend on its budget (no first generation, no population), so its first 40 trials
*are* a 40-trial random search: one 80-trial run serves both budgets (marked ``prefix``).

Everything is measured on validation, in ratios to gensim's defaults of the same study:

* ``HV``: hypervolume of the feasible trials' objectives divided by the baseline's, with the origin as
  reference point (the baseline alone scores 1.00), after the first 10, 20, 40 and 80 completed trials;
* ``NDCG``: the best validation NDCG of a feasible trial;
* ``balanced``: NDCG, CH-artist and CH-genre of the balanced compromise of the feasible front
  (:func:`dashboards.selection.balanced_compromise`);
* ``untrained``: share of trials with NDCG or CH-artist (CH-genre without artists) below 20% of the
  baseline's (issue 13's definition), and the same with local coherence in place of CH;
* ``CPU h``: the CPU hours the study's trials used (``cpu_seconds`` of every trial), and ``HV-1 per CPU h``;
* the anchors against each front: in how many studies a feasible front member dominates each anchor;
* the issue's two targets, as "studies that reach it / studies": the best feasible NDCG at or above the
  literature setting's (trained with the same seed), and a front member with at least +8% NDCG whose
  CH objectives stay at or above 95% of the defaults';
* a second table: the anchors' own ratios to gensim's defaults (the literature setting trained with each
  study seed, cached in ``DIR/anchors.json``; the TPE anchor's best) next to each study's best feasible
  NDCG and its balanced compromise.

Means over seeds with 95% Student-t intervals (shares in percent, their intervals clipped to 0-100%); the
named baseline of every ratio column is random search at the same budget, in the same run. Progress goes
to stderr, the table to stdout (``--markdown``: as README.md shows it), the numbers to
``RESULTS/summary-<plan>.json``.

The study databases in ``--out`` are scratch; what a finished study and an anchor measured is kept in
``--results`` (default ``benchmarks/results/search``, committed): ``studies.json`` holds each finished
study's summary under ``<dataset>:<fingerprint>:<study>`` with the commit that ran it, ``anchors.json`` the
literature setting's ratios and the TPE anchor's best. A later run, on another machine or after ``--out`` is
gone, trains only what is missing, so the full plan (about 8 CPU hours per dataset) can be spread over
several sessions.

A single study can outlast a sitting too (an 80-trial aotm2011 study takes 1-4 CPU hours). With ``--carry
CARRY``, a stop carries its unfinished studies to the next sitting: on Ctrl-C, SIGTERM or SIGHUP (unless
started under ``nohup``, which ignores SIGHUP) the bench fails the running trial, writes each unfinished
dataset's scratch database as a gzip-compressed SQL dump ``CARRY/<dataset>.sql.gz`` (text inside, never a
pickle; compressed because an 80-trial aotm2011 database dumps to about 6 MB of SQL, under 1 MB gzipped, and
the dumps are committed) and exits 128 + the signal's number (130 for Ctrl-C). At start, a dump whose database is not in
``--out`` is restored into it (a database that holds fewer completed trials of a study than its dump stops
the bench), and the studies go on to their budgets: the stopped trial stays failed, and the resumed worker
claims a new worker number, so it draws configurations the first sitting did not. A dump is removed once
every anchor and study of its dataset has reached its budget. ``kill -9`` writes nothing: the dump of the
previous stop, if any, stays as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from dashboards.experiment import markdown_table
from dashboards.selection import balanced_compromise
from hpo._atomic import atomic_write, atomic_write_text
from hpo._table import format_table
from hpo.cli.main import _exit_now_after_interrupt
from hpo.config import parse_config
from hpo.data.dataset import PreparedDataset
from hpo.experiment import multi_objectives
from hpo.results import confidence_interval
from hpo.search import LITERATURE_SETTINGS
from hpo.study import create_study, load_study, run_worker
from hpo.trials import baseline_trial, dominates, feasible_pareto_front, trial_data
from objectives.stopping import STOP_SIGNALS, stop_signal, stop_signals_as_ctrl_c
from objectives.trial import run_configuration

DUMP_SUFFIX = ".sql.gz"
"""File name ending of a carried-over dump: ``CARRY/<dataset>.sql.gz``."""

CHECKPOINTS = (10, 20, 40, 80)
UNTRAINED_SHARE = 0.2


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _study(dataset: Path, storage: str, name: str, seed: int, budget: int, *, run: bool = True,
           **settings: Any) -> optuna.Study | None:
    """Create (or resume) study ``name`` and run it to ``budget`` completed trials (``None`` when its worker
    stopped short of it); with ``run=False``, the study if it has reached ``budget`` (``None`` when it does
    not exist or is still short of it)."""
    # The bench needs metrics only: storing the front's vectors would fill --out for nothing.
    config = parse_config({"name": name, "dataset": str(dataset), "storage": storage, "seed": seed,
                           "trials": budget, "artifacts": {"policy": "none"}, **settings}, name)
    if not run:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            return None
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if done < budget or baseline_trial(study) is None:
            _log(f"{name}: {done} of {budget} trials, left out")
            return None
        return study
    create_study(config, exist_ok=True)
    study, config = load_study(name, storage, config=config)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if done < budget:
        _log(f"{name}: {done} -> {budget} trials")
        run_worker(study, config)
        # The worker gives up after too many failed trials: such a study is not finished.
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if done < budget:
            _log(f"{name}: stopped at {done} of {budget} trials, left out")
            return None
    return study


def _ratios(trial: FrozenTrial, baseline: FrozenTrial, metrics: list[str]) -> np.ndarray:
    return np.array([trial.user_attrs[m] / baseline.user_attrs[m] for m in metrics])


def _hypervolume(points: list[np.ndarray]) -> float:
    """Hypervolume dominated by ``points`` (ratios, maximised) with the origin as reference point."""
    from optuna._hypervolume import compute_hypervolume

    if not points:
        return 0.0
    losses = -np.maximum(np.array(points), 0.0)
    return float(compute_hypervolume(losses, np.zeros(losses.shape[1])))


def _untrained(trial: FrozenTrial, baseline: FrozenTrial, metric: str) -> bool:
    return any((trial.user_attrs.get(m) or 0.0) < UNTRAINED_SHARE * baseline.user_attrs[m] for m in ("ndcg", metric))


def summarise(study: optuna.Study, metrics: list[str], anchors: dict[str, np.ndarray]) -> dict[str, Any]:
    """The numbers of one study (see the module docstring)."""
    baseline = baseline_trial(study)
    assert baseline is not None, f"{study.study_name} has no completed baseline"
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    clustering = "ch_artist" if "ch_artist" in metrics else metrics[-1]
    row: dict[str, Any] = {"study": study.study_name, "trials": len(complete)}
    # A budget off the fixed checkpoints (the 60-trial target) gets its own.
    for checkpoint in sorted({*CHECKPOINTS, len(complete)}):
        first = complete[:checkpoint]
        if len(first) < checkpoint:
            continue
        feasible = [t for t in first if t.user_attrs.get("feasible", True)]
        row[f"hv@{checkpoint}"] = _hypervolume([_ratios(t, baseline, metrics) for t in feasible])
        row[f"ndcg@{checkpoint}"] = max(t.user_attrs["ndcg"] for t in feasible) / baseline.user_attrs["ndcg"]
        row[f"cpu_hours@{checkpoint}"] = sum(float(t.user_attrs.get("cpu_seconds", 0.0)) for t in first) / 3600
    row["untrained"] = sum(_untrained(t, baseline, clustering) for t in complete) / len(complete)
    # The same with local coherence in place of Calinski-Harabasz: heavy training can lower CH-artist below 20%
    # of the defaults' while artist coherence holds (CH stops tracking the local structure it stands for).
    coherence = clustering.replace("ch_", "coherence_")
    row["untrained_coherence"] = sum(_untrained(t, baseline, coherence) for t in complete) / len(complete)
    row["infeasible"] = sum(not t.user_attrs.get("feasible", True) for t in complete) / len(complete)
    front = feasible_pareto_front(study)
    balanced = balanced_compromise(study, front)
    if balanced is not None:
        row.update({f"balanced_{m}": balanced.user_attrs[m] / baseline.user_attrs[m] for m in metrics})
    front_points = [_ratios(t, baseline, metrics) for t in front]
    # Issue 13's target: a front member with >= +8% NDCG whose clustering objectives lose at most 5%.
    balanced_ok = [p for p in front_points if p[0] >= 1.08 and all(v >= 0.95 for v in p[1:])]
    row["target_member_ndcg"] = max((float(p[0]) for p in balanced_ok), default=None)
    # Every ratio is of a maximised objective.
    row["anchors_dominated_by"] = {name: sum(dominates(p, point, [True] * len(point)) for p in front_points)
                                   for name, point in anchors.items()}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", nargs="+", type=Path, help="prepared dataset directories")
    parser.add_argument("--out", type=Path, required=True, help="scratch directory of the study databases")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results" / "search",
                        help="directory of the kept summaries (studies.json, anchors.json, summary-<plan>.json)")
    parser.add_argument("--commit", default=None, help="the code's commit, recorded with each summary "
                        "(default: git rev-parse of the script's checkout)")
    parser.add_argument("--plan", default="nsga2:40,80 gp:40 tpe:40 random:80", help="sampler:budget,... list")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--anchor-seeds", default="0", help="study seeds of the single-objective TPE anchor")
    parser.add_argument("--anchor-budget", type=int, default=40, help="trials of the single-objective TPE anchor")
    parser.add_argument("--no-run", action="store_true",
                        help="train nothing: summarise the studies that reached their budget (the others are left out)")
    parser.add_argument("--markdown", action="store_true", help="print the tables in Markdown (as in README.md)")
    parser.add_argument("--carry", type=Path, default=None,
                        help="directory of SQL dumps that carry unfinished studies from one sitting to the next: "
                        "restored into --out when its database is absent, written at Ctrl-C, SIGTERM or SIGHUP")
    args = parser.parse_args()
    if args.carry is not None and args.no_run:
        parser.error("--carry restores and keeps studies to run; --no-run runs none")
    plan = {item.split(":")[0]: sorted(int(b) for b in item.split(":")[1].split(",")) for item in args.plan.split()}
    seeds = [int(s) for s in args.seeds.split(",") if s]
    anchor_seeds = [int(s) for s in args.anchor_seeds.split(",") if s]
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    commit = args.commit or _checkout_commit()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    if args.carry is not None:
        for path in args.prepared:
            restore_carried(args.carry / f"{path.name}{DUMP_SUFFIX}", args.out / f"{path.name}.db")
        # A bench started in the background by a script inherits SIGINT ignored: take it back.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    done: set[str] = set()
    try:
        with stop_signals_as_ctrl_c() if args.carry is not None else contextlib.nullcontext():
            summary, table, anchor_rows = _run_plan(args, plan, seeds, anchor_seeds, commit, done)
    except KeyboardInterrupt as stop:
        if args.carry is None:
            raise
        _carry_unfinished(args.prepared, args.out, args.carry, done)
        _log("interrupted")
        # Exit as `songhpo` does after Ctrl-C: at once, or a heartbeat thread caught half-started could hold the
        # interpreter's shutdown for good.
        _exit_now_after_interrupt(128 + stop_signal(stop))
    if args.carry is not None:
        _carry_unfinished(args.prepared, args.out, args.carry, done)
    slug = "_".join(item.replace(":", "-").replace(",", "-") for item in args.plan.split())
    atomic_write_text(args.results / f"summary-{slug}.json", json.dumps(summary, indent=1, default=float) + "\n")
    headers = ["dataset", "sampler", "budget", "seeds", "HV@40", "HV@budget", "HV vs random", "best NDCG",
               "NDCG vs random", "balanced NDCG / CH-artist / CH-genre", "untrained (CH / coherence)", "infeasible", "CPU h",
               "HV-1 per CPU h", "front dominates defaults / literature / tpe-ndcg",
               "studies with NDCG >= literature / +8% member"]
    show = markdown_table if args.markdown else format_table
    print(show(headers, table))
    print()
    print(show(["dataset", "configuration", "seeds", "NDCG", "other objectives (CH-artist / CH-genre, ratios)"],
               anchor_rows))
    return 0


def _run_plan(args: argparse.Namespace, plan: dict[str, list[int]], seeds: list[int], anchor_seeds: list[int],
              commit: str, done: set[str]) -> tuple[dict[str, Any], list[list[str]], list[list[str]]]:
    """Run (or, with ``--no-run``, only summarise) every dataset's anchors and studies: the summary, the
    main table's rows and the anchor table's rows. Each dataset whose anchors and studies have all reached
    their budgets joins ``done`` as it finishes."""
    summary: dict[str, Any] = {}
    table: list[list[str]] = []
    anchor_rows: list[list[str]] = []
    samplers = list(plan)
    budgets = sorted({b for bs in plan.values() for b in bs})
    studies_file, anchors_file = args.results / "studies.json", args.results / "anchors.json"
    for path in args.prepared:
        dataset = PreparedDataset.load(path)
        metrics = multi_objectives(dataset)
        storage = f"sqlite:///{(args.out / (path.name + '.db')).resolve()}"
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        tpe_best: list[np.ndarray] = []
        left_out = False
        for seed in anchor_seeds:
            name = f"anchor-tpe-ndcg-s{seed}"
            key = f"{path.name}:{dataset.fingerprint}:{name}@{args.anchor_budget}"
            kept = _recall(anchors_file).get(key)
            if kept is None:
                tpe = _study(path, storage, name, seed, args.anchor_budget, run=not args.no_run,
                             objectives=["ndcg"], sampler={"name": "tpe"}, constraint={"enabled": False})
                if tpe is None:
                    left_out = True
                    continue
                base = baseline_trial(tpe)
                assert base is not None
                best = max(tpe.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.values[0])
                kept = {"ratios": {m: best.user_attrs[m] / base.user_attrs[m] for m in metrics}, "commit": commit}
                _remember(anchors_file, key, kept)
            tpe_best.append(np.array([kept["ratios"][m] for m in metrics]))
        for seed in seeds:
            anchors = {"defaults": np.ones(len(metrics))}
            literature = _literature_ratios(dataset, metrics, seed, anchors_file, train=not args.no_run)
            if literature is not None:  # --no-run leaves an anchor that was never trained out
                anchors["literature"] = literature
            if tpe_best:  # --anchor-seeds '' skips the TPE anchor
                anchors["tpe-ndcg"] = tpe_best[seeds.index(seed) % len(tpe_best)]
            summary.setdefault(path.name, {}).setdefault("anchors", {})[seed] = {k: v.tolist() for k, v in anchors.items()}
            for sampler, sampler_budgets in plan.items():
                for budget in sampler_budgets:
                    name = f"{sampler}-{budget}-s{seed}"
                    key = f"{path.name}:{dataset.fingerprint}:{name}"
                    row = _recall(studies_file).get(key)
                    if row is None:
                        study = _study(path, storage, name, seed, budget, run=not args.no_run,
                                       objectives=metrics, sampler={"name": sampler})
                        if study is None:
                            left_out = True
                            continue
                        row = {**summarise(study, metrics, anchors), "commit": commit}
                        _remember(studies_file, key, row)
                    if "literature" in anchors:  # the first target, against the same seed's setting
                        row = {**row, "above_literature": row[f"ndcg@{budget}"] >= anchors["literature"][0]}
                    runs.setdefault((sampler, budget), []).append(row)
        summary[path.name]["runs"] = {f"{s}@{b}": rows for (s, b), rows in runs.items()}
        anchor_rows.extend(_anchor_rows(path.name, summary[path.name]["anchors"], runs, plan, metrics))
        for budget in budgets:
            reference = _runs_at(runs, "random", budget)
            for sampler in samplers:
                rows = _runs_at(runs, sampler, budget)
                if rows is not None:
                    table.append(_table_row(path.name, sampler, budget, rows, reference, metrics,
                                            prefix=(sampler, budget) not in runs))
        if not left_out:
            done.add(path.name)
    return summary, table, anchor_rows


def restore_carried(dump: Path, database: Path) -> None:
    """Restore SQL dump ``dump`` (written by :func:`carry_over`) into SQLite file ``database``, atomically.

    Nothing happens when there is no dump, or when ``database`` exists and every study in the dump has as
    many completed trials in it (the dump was written from it, or from an earlier state of it). A database
    behind its dump (an old scratch directory beside a newer committed dump) stops the bench: going on
    would run trials the dump holds already, and the next stop would overwrite the dump with less.
    """
    if not dump.exists():
        return
    script = _read_dump(dump)
    if database.exists():
        with contextlib.closing(sqlite3.connect(":memory:")) as carried:
            _load_dump(carried, script, dump)
            in_dump = _completed(carried)
        here = _completed_in(database)
        ahead = [f"{name} {count} > {here.get(name, 0)}" for name, count in sorted(in_dump.items())
                 if count > here.get(name, 0)]
        if ahead:
            sys.exit(f"bench_search.py: {database} is behind {dump} (completed trials, dump > database: "
                     f"{', '.join(ahead)}): remove the database to restore the dump")
        _log(f"{database} exists and holds every trial of {dump}: the dump is not restored")
        return

    def load(tmp: Path) -> None:
        with contextlib.closing(sqlite3.connect(tmp)) as connection:
            _load_dump(connection, script, dump)

    atomic_write(database, load)
    _log(f"restored {database} from {dump}")


def _read_dump(dump: Path) -> str:
    try:
        return gzip.decompress(dump.read_bytes()).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        # gzip raises OSError for a bad header, EOFError for a cut stream and zlib.error for a corrupt body.
        sys.exit(f"bench_search.py: {dump} is not a gzip-compressed SQL dump (as --carry writes): {exc}")


def _load_dump(connection: sqlite3.Connection, script: str, dump: Path) -> None:
    try:
        connection.executescript(script)
    except sqlite3.Error as exc:
        sys.exit(f"bench_search.py: {dump} is not an SQL dump of a study database: {exc}")
    # A dump cut short before its COMMIT would be rolled back at close, leaving an empty database.
    if connection.in_transaction:
        sys.exit(f"bench_search.py: {dump} is cut short: it ends before its COMMIT")


def _completed(connection: sqlite3.Connection) -> dict[str, int]:
    """Completed trials per study of an Optuna SQLite storage."""
    return dict(connection.execute("SELECT study_name, count(*) FROM trials JOIN studies USING (study_id) "
                                   "WHERE state = 'COMPLETE' GROUP BY study_name").fetchall())


def _completed_in(database: Path) -> dict[str, int]:
    with _read_only(database) as connection:
        return _completed(connection)


def _read_only(database: Path) -> contextlib.closing[sqlite3.Connection]:
    """A read-only connection to SQLite file ``database`` (closed on leaving the ``with``)."""
    return contextlib.closing(sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True))


def carry_over(database: Path, dump: Path) -> None:
    """Write SQLite file ``database`` as a gzip-compressed SQL dump (UTF-8 text) to ``dump``, atomically.

    The gzip header holds no time stamp, so the same database always gives the same bytes.
    """
    with _read_only(database) as connection:
        text = "\n".join(connection.iterdump()) + "\n"
    compressed = gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)
    atomic_write(dump, lambda tmp: tmp.write_bytes(compressed))


def _carry_unfinished(prepared: list[Path], out: Path, carry: Path, done: set[str]) -> None:
    """Dump the scratch database of every dataset not in ``done`` into ``carry``; remove the others' dumps.

    Stops are ignored from here on (the bench ends after this): a second one must not cut the dumps short.
    """
    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)
    for path in prepared:
        database, dump = out / f"{path.name}.db", carry / f"{path.name}{DUMP_SUFFIX}"
        if path.name in done:
            if dump.exists():
                dump.unlink()
                _log(f"{path.name}: every study reached its budget, {dump} removed")
        elif database.exists():
            carry_over(database, dump)
            _log(f"{path.name}: unfinished studies carried over to {dump}")


def _literature_ratios(dataset: PreparedDataset, metrics: list[str], seed: int, cache: Path, *,
                       train: bool = True) -> np.ndarray | None:
    """Metrics of the literature setting over gensim's defaults, both trained with ``seed`` (kept in
    ``cache`` by dataset fingerprint and seed, so a re-run for the table trains nothing); ``None`` when
    they are not kept and ``train`` is false."""
    key = f"{dataset.fingerprint}:{seed}"
    ratios = _recall(cache).get(key)
    if ratios is None:
        if not train:
            return None
        config = parse_config({"name": "anchor", "dataset": str(dataset.path), "seed": seed}, "anchor")
        data = trial_data(config, dataset)
        defaults = run_configuration(data, {}, seed=seed)
        literature = run_configuration(data, LITERATURE_SETTINGS["caselles-dupre-2018"], seed=seed)
        ratios = {m: literature.metrics[m] / defaults.metrics[m] for m in literature.metrics
                  if m in defaults.metrics and defaults.metrics[m]}
        _remember(cache, key, ratios)
    return np.array([ratios[m] for m in metrics])


def _recall(path: Path) -> dict[str, Any]:
    """The entries kept in JSON file ``path`` (empty when it does not exist yet)."""
    return json.loads(path.read_text()) if path.exists() else {}


def _remember(path: Path, key: str, value: Any) -> None:
    """Keep ``value`` under ``key`` in JSON file ``path``, atomically."""
    # Re-read before writing: another bench process on the same --results may have kept other entries meanwhile.
    kept = _recall(path)
    kept[key] = value
    atomic_write_text(path, json.dumps(dict(sorted(kept.items())), indent=1, default=float) + "\n")


def _checkout_commit() -> str:
    """The commit of the checkout this script runs from, or ``"unknown"`` outside a git checkout."""
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else "unknown"


def _anchor_rows(dataset: str, anchors: dict[int, dict[str, list[float]]], runs: dict[tuple[str, int], list[dict[str, Any]]],
                 plan: dict[str, list[int]], metrics: list[str]) -> list[list[str]]:
    """Ratios to gensim's defaults of each anchor and of each study's best feasible NDCG, over seeds."""
    rows = []
    for name in ("literature", "tpe-ndcg"):
        # The TPE anchor runs for --anchor-seeds only and is shared by the study seeds: count it once.
        points = list({tuple(a[name]): a[name] for a in anchors.values() if name in a}.values())
        if points:
            label = "caselles-dupre-2018" if name == "literature" else "tpe-ndcg best (anchor seeds)"
            rows.append([dataset, label, str(len(points)), _mean_ci([p[0] for p in points]),
                         " / ".join(_mean_ci([p[i] for p in points]) for i in range(1, len(metrics)))])
    for sampler, budgets in plan.items():
        for budget in budgets:
            found = runs.get((sampler, budget), [])
            if found:
                rows.append([dataset, f"{sampler}@{budget}: best feasible NDCG", str(len(found)),
                             _mean_ci([r[f"ndcg@{budget}"] for r in found if f"ndcg@{budget}" in r]),
                             "balanced: " + " / ".join(_mean_ci([r[f"balanced_{m}"] for r in found if f"balanced_{m}" in r])
                                                       for m in metrics[1:])])
    return rows


def _runs_at(runs: dict[tuple[str, int], list[dict[str, Any]]], sampler: str,
             budget: int) -> list[dict[str, Any]] | None:
    """The runs of ``sampler`` at ``budget``: its own, or (random search only) a longer run's first trials."""
    if (sampler, budget) in runs:
        return runs[(sampler, budget)]
    if sampler != "random":
        return None
    longer = [b for s, b in runs if s == sampler and b > budget]
    return runs[(sampler, min(longer))] if longer else None


def _mean_ci(values: list[float], *, share: bool = False) -> str:
    """Mean and 95% t-interval of ``values``; a ``share`` in percent, its interval clipped to [0%, 100%]."""
    ci = confidence_interval(values)
    if ci["mean"] is None:
        return "-"
    if share:
        low, high, form = (None if ci["low"] is None else max(0.0, ci["low"]),
                           None if ci["high"] is None else min(1.0, ci["high"]), ".0%")
    else:
        low, high, form = ci["low"], ci["high"], ".3g"
    if low is None:
        return f"{ci['mean']:{form}}"
    return f"{ci['mean']:{form}} [{low:{form}}, {high:{form}}]"


def _table_row(dataset: str, sampler: str, budget: int, rows: list[dict[str, Any]],
               reference: list[dict[str, Any]] | None, metrics: list[str], *, prefix: bool) -> list[str]:
    def values(key: str, of: list[dict[str, Any]] = rows) -> list[float]:
        return [float(r[key]) for r in of if key in r]

    def ratio(key: str) -> str:
        if not reference or not values(key, reference):
            return "-"
        return f"{statistics.fmean(values(key)) / statistics.fmean(values(key, reference)):.2f}"

    hours = values(f"cpu_hours@{budget}")
    gain = [(hv - 1.0) / h for hv, h in zip(values(f"hv@{budget}"), hours) if h > 0]
    balanced = " / ".join(_mean_ci(values(f"balanced_{m}")) for m in metrics) if not prefix else "(80-trial run)"
    anchors = " / ".join(
        f"{statistics.fmean(r['anchors_dominated_by'][name] > 0 for r in rows):.0%}"
        if name in rows[0]["anchors_dominated_by"] else "-"
        for name in ("defaults", "literature", "tpe-ndcg")) if not prefix else "-"
    # Issue 13's targets, in how many studies each holds: best feasible NDCG at or above the literature
    # setting's (same seed), and a front member with >= +8% NDCG whose CH objectives lose at most 5%.
    targets = (f"{sum(bool(r.get('above_literature')) for r in rows)}/{len(rows)} / "
               f"{sum(r.get('target_member_ndcg') is not None for r in rows)}/{len(rows)}") if not prefix else "-"
    untrained = " / ".join(_mean_ci(values(key), share=True) for key in ("untrained", "untrained_coherence"))
    label = f"{budget} (prefix)" if prefix else str(budget)
    return [dataset, sampler, label, str(len(rows)), _mean_ci(values("hv@40")), _mean_ci(values(f"hv@{budget}")),
            ratio(f"hv@{budget}"), _mean_ci(values(f"ndcg@{budget}")), ratio(f"ndcg@{budget}"), balanced,
            untrained if not prefix else "-", _mean_ci(values("infeasible"), share=True) if not prefix else "-",
            _mean_ci(hours), _mean_ci(gain) if gain else "-", anchors, targets]


if __name__ == "__main__":
    sys.exit(main())
