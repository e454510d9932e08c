"""The paper's experiments on one prepared dataset (``songhpo experiment run``).

Every search mode gets the same budget of completed trials (the baseline, trial 0, included):

==============  ======================================  =========  =====================
mode            objectives                              sampler    HardNeg safeguard
==============  ======================================  =========  =====================
``baseline``    (gensim defaults only: one trial)       -          -
``literature``  (the literature setting only: one trial) -         -
``ndcg``        NDCG@K                                  TPE        off
``clustering``  CH-artist (CH-genre without artists)    TPE        off
``random``      the multi-objective list                random     on
``nsga2``       the multi-objective list                NSGA-II    on
``nsga2-free``  the multi-objective list                NSGA-II    off
==============  ======================================  =========  =====================

The multi-objective list is NDCG, CH-artist and CH-genre, less those the dataset has no labels for.
``literature`` is an anchor, not a search: a one-trial study like ``baseline`` whose parameters fix the
published music setting (:data:`hpo.search.LITERATURE_SETTINGS`: Caselles-Dupré et al. 2018, vector_size
50, window 3, epochs 110, sample 1e-5, ns_exponent -0.5; the rest gensim's defaults), so its one trial,
trial 0, trains that setting with the study seed and is re-trained on test with the same seeds as every
chosen configuration. Parameters fixed with ``--fix`` apply to it too and win over the literature value.
Single-objective modes run without the safeguard, as the paper's single-objective studies did; random
search and NSGA-II share objectives and safeguard, so comparing them compares samplers only; ``nsga2-free``
is NSGA-II without the safeguard, so that the price of the safeguard is measured and the multi-objective
study can be compared with the single-objective ones on equal terms. On a dataset without hard negatives
the safeguard is dropped anyway and ``nsga2-free`` would repeat ``nsga2`` trial for trial: it is skipped.

Chosen configurations (on validation): the literature study's one trial; the best trial of a
single-objective study; the balanced
compromise of the feasible front (:func:`dashboards.selection.balanced_compromise`) for random search
and both NSGA-II modes, plus NSGA-II's best-NDCG front member. Each is re-trained with ``seeds`` seeds and
evaluated on the test split (:func:`hpo.results.evaluate_front`), together with its study's baseline.

The scale study runs the NSGA-II study again on nested seeded subsets of the training sequences
(``training.fraction``), for each of ``scale_modes`` (``nsga2``, ``nsga2-free`` or both); 100% is that
mode's own study. Evaluation pairs are the same at every
scale, so a song a subset never plays cannot be retrieved there.

Everything lives in one storage (default ``OUT/experiment.db``); ``OUT/results.json`` gathers what the
results page needs (:mod:`dashboards.experiment`). Re-running the same command resumes: studies continue
to their budget and test runs already stored are reused.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import __version__
from hpo._atomic import atomic_write_text
from hpo.choices import DEFAULT_SCALES, MODES
from hpo.config import SEARCH_PRESETS, StudyConfig, parse_config
from hpo.data.dataset import PreparedDataset
from hpo.results import evaluate_front, retrain_seed, training_params
from hpo.search import LITERATURE_SETTINGS, population_size
from hpo.study import create_study, run_worker
from hpo.trials import SAFEGUARD_ATTR, baseline_trial, feasible_pareto_front, training_subset_size
from storage import results as store
from storage.errors import InputError

__all__ = ["MODES", "ExperimentSettings", "StudyPlan", "experiment_runs", "load_results", "merge_results",
           "plan_studies", "prepare_command", "run_commands", "run_experiment", "study_seeds"]

_log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
RESULTS_FORMAT = "songhpo-experiment"
RESULTS_VERSION = 1
#: The literature setting of the ``literature`` mode (a key of :data:`hpo.search.LITERATURE_SETTINGS`).
LITERATURE = "caselles-dupre-2018"
LITERATURE_RULE = ("the literature music setting (Caselles-Dupré et al. 2018: "
                   + ", ".join(f"{n} {v:g}" for n, v in LITERATURE_SETTINGS[LITERATURE].items())
                   + "; the rest gensim's defaults)")
#: Validation metrics kept for every trial of every study in results.json (the CH-proxy analysis needs the
#: coherences of every trial, not only of the chosen ones).
TRIAL_METRICS = ("ndcg", "ch_artist", "ch_genre", "coherence_artist", "coherence_genre", "hardneg")


@dataclass(frozen=True)
class ExperimentSettings:
    """What ``songhpo experiment run`` was asked; every study of the experiment derives from it.

    ``trials`` is the budget of completed trials of every search mode; ``seeds`` the test re-trainings of
    each chosen configuration; ``scales`` the training fractions of the scale study (empty: none).
    """

    dataset: Path
    out: Path
    storage: str | None = None
    name: str = "exp"
    trials: int = 40
    seeds: int = 3
    seed: int = 0
    #: NSGA-II generation size; ``None`` follows the budget (:func:`hpo.search.population_size`).
    population_size: int | None = None
    k: int = 100
    modes: tuple[str, ...] = MODES
    scales: tuple[float, ...] = DEFAULT_SCALES
    scale_modes: tuple[str, ...] = ("nsga2",)
    fixed: tuple[tuple[str, int | float], ...] = ()
    #: songhpo's space (epochs, sample, min_count on sparse data, ...); ``paper`` is the paper's five.
    search_preset: str = "default"

    def validate(self) -> None:
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise InputError(f"--modes: unknown mode {unknown[0]!r}; expected some of {', '.join(MODES)}")
        if not self.modes:
            raise InputError("--modes: at least one mode is needed")
        unknown = [m for m in self.scale_modes if m not in ("nsga2", "nsga2-free")]
        if unknown:
            raise InputError(f"--scale-modes: unknown mode {unknown[0]!r}; expected nsga2 and/or nsga2-free")
        bad = [s for s in self.scales if not 0.0 < s <= 1.0]
        if bad:
            raise InputError(f"--scales: {bad[0]} is not a fraction in (0, 1]")
        if self.trials < 2:
            raise InputError(f"--trials {self.trials}: expected at least 2 (the baseline and one searched trial)")
        if self.seeds < 1:
            raise InputError(f"--seeds {self.seeds}: expected a positive integer")
        if self.population_size is not None and self.population_size < 2:
            raise InputError(f"--population-size {self.population_size}: expected at least 2")
        if self.k < 1:
            raise InputError(f"--k {self.k}: expected a positive integer")
        if self.search_preset not in SEARCH_PRESETS:
            raise InputError(f"--search-preset {self.search_preset!r}: expected one of {', '.join(SEARCH_PRESETS)}")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / 'experiment.db').resolve()}"


@dataclass(frozen=True)
class StudyPlan:
    """One study of the experiment: its mode, training fraction and config; ``scale_of`` is the mode a
    scale-study point repeats (``None`` outside the scale study)."""

    mode: str
    fraction: float
    config: StudyConfig
    scale_of: str | None = None


@dataclass
class ChosenConfiguration:
    """A configuration chosen on validation, with its test runs (one per seed)."""

    label: str
    mode: str
    study: str
    fraction: float
    trial: int
    rule: str
    params: dict[str, Any]
    validation: dict[str, Any]
    test_runs: list[dict[str, Any]] = field(default_factory=list)


def multi_objectives(dataset: PreparedDataset) -> list[str]:
    """NDCG plus the Calinski-Harabasz proxies the dataset has labels for."""
    counts = dataset.counts
    return ["ndcg", *(["ch_artist"] if counts.get("artists", 0) else []), *(["ch_genre"] if counts.get("genres", 0) else [])]


def clustering_objective(dataset: PreparedDataset) -> str | None:
    """CH-artist where artists exist, else CH-genre, else ``None`` (no clustering mode possible)."""
    counts = dataset.counts
    if counts.get("artists", 0):
        return "ch_artist"
    return "ch_genre" if counts.get("genres", 0) else None


def plan_studies(settings: ExperimentSettings, dataset: PreparedDataset) -> list[StudyPlan]:
    """The studies of the experiment, in the order they run (cheapest first)."""
    multi = multi_objectives(dataset)
    base: dict[str, Any] = {
        "dataset": str(settings.dataset), "storage": settings.storage_url, "seed": settings.seed,
        "trials": settings.trials, "evaluation": {"k": settings.k}, "training": {"workers": 1},
        # Fixed Word2Vec parameters (say min_count = 1) hold in every study, the baseline included.
        "search_space": dict(settings.fixed), "search_preset": settings.search_preset,
    }
    per_mode: dict[str, dict[str, Any]] = {
        "baseline": {"trials": 1, "objectives": multi, "sampler": {"name": "nsga2"}},
        # Trial 0 of a study trains gensim's defaults for every searched parameter and the fixed values for the
        # others: with the literature values fixed, it is the literature setting (--fix values win).
        "literature": {"trials": 1, "objectives": multi, "sampler": {"name": "nsga2"},
                       "search_space": {**LITERATURE_SETTINGS[LITERATURE], **dict(settings.fixed)}},
        "ndcg": {"objectives": ["ndcg"], "sampler": {"name": "tpe"}, "constraint": {"enabled": False}},
        "random": {"objectives": multi, "sampler": {"name": "random"}},
        "nsga2": {"objectives": multi, "sampler": {"name": "nsga2", "population_size": settings.population_size}},
    }
    if dataset.counts.get("hard_negative_pairs", 0):
        per_mode["nsga2-free"] = {**per_mode["nsga2"], "constraint": {"enabled": False}}
    elif "nsga2-free" in settings.modes:
        _log.info("dataset %s has no hard negatives, so nsga2 runs without the safeguard: nsga2-free is skipped",
                  dataset.path)
    clustering = clustering_objective(dataset)
    if clustering is not None:
        per_mode["clustering"] = {"objectives": [clustering], "sampler": {"name": "tpe"},
                                  "constraint": {"enabled": False}}
    elif "clustering" in settings.modes:
        _log.warning("dataset %s has neither artist nor genre labels: the clustering mode is skipped", dataset.path)

    plans = []
    for mode in settings.modes:
        if mode in per_mode:
            name = f"{settings.name}-{mode}"
            plans.append(StudyPlan(mode, 1.0, parse_config({**base, **per_mode[mode], "name": name}, name)))
    for scale_of in settings.scale_modes:
        if scale_of not in per_mode:
            continue  # nsga2-free on data without hard negatives: logged above
        prefix = "scale" if scale_of == "nsga2" else "free-scale"
        for fraction in sorted(set(settings.scales)):
            if fraction == 1.0 and scale_of in settings.modes:
                continue  # the mode's own study is the 100% point
            name = f"{settings.name}-{prefix}-{fraction * 100:g}pct"
            training = {"workers": 1, "fraction": fraction}
            plans.append(StudyPlan("scale", fraction, parse_config(
                {**base, **per_mode[scale_of], "training": training, "name": name}, name), scale_of))
    return plans


def _chosen_trials(plan: StudyPlan, study: optuna.Study) -> list[tuple[str, FrozenTrial, str]]:
    """``(label, trial, rule)`` of the configurations the plan's mode contributes."""
    from dashboards.selection import BALANCED_RULE, balanced_compromise, best_by_metric

    baseline = baseline_trial(study)
    if plan.mode == "baseline":
        return [] if baseline is None else [("baseline", baseline, "gensim's default parameters (trial 0)")]
    if plan.mode == "literature":
        return [] if baseline is None else [("literature", baseline, LITERATURE_RULE)]
    if plan.mode in ("ndcg", "clustering"):
        metric = plan.config.objectives[0]
        best = best_by_metric(study, metric)
        return [] if best is None else [(plan.mode, best, f"highest validation {metric} of the study")]
    front = feasible_pareto_front(study)
    chosen = []
    label = plan.mode if plan.mode != "scale" else f"{plan.scale_of} @ {plan.fraction * 100:g}%"
    compromise = balanced_compromise(study, front)
    if compromise is not None:
        chosen.append((label, compromise, BALANCED_RULE))
    if plan.mode == "nsga2":
        best = best_by_metric(study, "ndcg", front)
        if best is not None:
            chosen.append(("nsga2 best-ndcg", best, "feasible front member with the highest validation ndcg"))
    return chosen


def _study_summary(plan: StudyPlan, study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds()
                 for t in complete if t.datetime_start and t.datetime_complete]
    from dashboards.selection import feasible_trials

    front = feasible_pareto_front(study)
    feasible = feasible_trials(study)
    best = {}
    for index, (metric, direction) in enumerate(zip(study.metric_names or [], study.directions)):
        values = [t.values[index] for t in feasible]
        if values:
            best[metric] = max(values) if direction == optuna.study.StudyDirection.MAXIMIZE else min(values)
    return {
        "study": study.study_name, "mode": plan.mode, "fraction": plan.fraction, "seed": plan.config.seed,
        "scale_of": plan.scale_of or (plan.mode if plan.mode in ("nsga2", "nsga2-free") else None),
        "objectives": list(plan.config.objectives), "sampler": plan.config.sampler.name,
        "population_size": population_size(plan.config),
        "safeguard": study.user_attrs.get(SAFEGUARD_ATTR),
        "trials_complete": len(complete), "trials_failed": sum(t.state == TrialState.FAIL for t in trials),
        "infeasible": sum(not t.user_attrs.get("feasible", True) for t in complete),
        "front_size": len(front), "best_validation": best,
        "trial_seconds": durations, "optimisation_seconds": sum(durations),
        "training_sequences": None,
        # "baseline": trained with gensim's defaults (the literature study's trial 0 is not); "seed" and
        # "training_params" say which trials of different studies are the same training (dashboards.experiment).
        "trials": [{"number": t.number, "values": list(t.values), "feasible": bool(t.user_attrs.get("feasible", True)),
                    "params": dict(t.params),
                    "baseline": bool(t.user_attrs.get("baseline")) and plan.mode != "literature",
                    "seed": t.user_attrs.get("seed"), "training_params": _training_params(t),
                    **{m: t.user_attrs.get(m) for m in TRIAL_METRICS}}
                   for t in complete],
    }


def _training_params(trial: FrozenTrial) -> dict[str, Any] | None:
    return training_params(trial) if isinstance(trial.user_attrs.get("gensim_params"), dict) else None


def _test_runs(url: str, study: str, trial: FrozenTrial, seeds: int) -> list[dict[str, Any]]:
    wanted = [retrain_seed(trial, i) for i in range(seeds)]
    runs = store.model_results(url, study, trial.number, wanted, split="test")
    return [{"seed": seed, **runs[seed]} for seed in wanted if seed in runs]


def run_experiment(settings: ExperimentSettings) -> dict[str, Any]:
    """Run (or resume) every study, evaluate the chosen configurations on test, write ``results.json``.

    Returns the results document (see :mod:`dashboards.experiment` for its use).
    """
    settings.validate()
    dataset = PreparedDataset.load(settings.dataset)
    plans = plan_studies(settings, dataset)  # config errors before anything is written
    settings.out.mkdir(parents=True, exist_ok=True)
    url = settings.storage_url
    started = time.perf_counter()
    studies: list[dict[str, Any]] = []
    configurations: list[ChosenConfiguration] = []
    for index, plan in enumerate(plans, 1):
        _log.info("experiment %s: study %d/%d %s (%s, %g%% of training sequences, %d trials)", settings.name,
                  index, len(plans), plan.config.name, plan.mode, plan.fraction * 100, plan.config.trials)
        study = create_study(plan.config, exist_ok=True)
        run_worker(study, plan.config)
        summary = _study_summary(plan, study)
        summary["training_sequences"] = training_subset_size(len(dataset.train_offsets) - 1, plan.fraction)
        chosen = _chosen_trials(plan, study)
        if chosen:
            evaluate_front(study, plan.config, seeds=settings.seeds, chosen=[t for _, t, _ in chosen])
        baseline = baseline_trial(study)
        members = [(label, plan.mode, trial, rule) for label, trial, rule in chosen]
        if baseline is not None and plan.mode not in ("baseline", "literature"):
            # Every study's own baseline, on test: identical at 100% (a determinism check), the reference at
            # smaller scales.
            members.append((f"baseline of {plan.config.name}", "study-baseline", baseline,
                            "gensim's default parameters (trial 0)"))
        for label, mode, trial, rule in members:
            configurations.append(ChosenConfiguration(
                label=label, mode=mode,
                study=study.study_name, fraction=plan.fraction, trial=trial.number, rule=rule,
                params=training_params(trial),
                validation={m: trial.user_attrs.get(m) for m in _VALIDATION_KEYS},
                test_runs=_test_runs(url, study.study_name, trial, settings.seeds)))
        # A trial chosen under two labels (or the baseline chosen as a mode's best) was trained once per seed.
        runs = {(c.trial, run["seed"]): run for c in configurations if c.study == study.study_name for run in c.test_runs}
        summary["evaluated_runs_seconds"] = sum(float(run["metrics"].get(key) or 0.0) for run in runs.values()
                                                for key in ("train_seconds", "knn_seconds", "metrics_seconds"))
        studies.append(summary)
        document = _document(settings, dataset, studies, configurations, time.perf_counter() - started)
        # Written after every study, so a long experiment can be looked at (and reported) while it runs.
        atomic_write_text(settings.out / RESULTS_FILE, json.dumps(document, indent=1, default=_json_default) + "\n")
    return document


#: Validation metrics copied into results.json for each chosen configuration.
_VALIDATION_KEYS = ("ndcg", "ndcg_in", "ndcg_out", "hitrate", "ch_artist", "ch_genre", "coherence_artist",
                    "coherence_genre", "hardneg", "hardneg_support", "trial_seconds")


def _document(settings: ExperimentSettings, dataset: PreparedDataset, studies: list[dict[str, Any]],
              configurations: Sequence[ChosenConfiguration], seconds: float) -> dict[str, Any]:
    from storage.db import safe_url

    manifest = dataset.manifest
    return {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION, "songhpo": __version__,
        "settings": {**asdict(settings), "dataset": str(settings.dataset), "out": str(settings.out),
                     "storage": safe_url(settings.storage_url)},
        "dataset": {"path": str(dataset.path), "fingerprint": dataset.fingerprint,
                    "source": manifest.get("source", {}), "parameters": manifest.get("parameters"),
                    "counts": dataset.counts, "dropped": manifest.get("dropped"),
                    "hard_negatives": manifest.get("hard_negatives")},
        "studies": studies,
        "configurations": [asdict(c) for c in configurations],
        "this_run_seconds": seconds,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def load_results(path: str | Path) -> dict[str, Any]:
    """Read an experiment's ``results.json`` (or the directory holding it), checking its format."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise InputError(f"{path}: no experiment results; run 'songhpo experiment run' first")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != RESULTS_FORMAT:
        raise InputError(f"{path}: not a songhpo experiment results file (expected format {RESULTS_FORMAT!r})")
    if document.get("version") != RESULTS_VERSION:
        raise InputError(f"{path}: results version {document.get('version')!r}, expected {RESULTS_VERSION}")
    return document


#: Settings that must agree for experiments to be reported together (the study seed may differ: several
#: searches per mode, see :func:`merge_results`).
_SHARED_SETTINGS = ("trials", "seeds", "k", "population_size", "fixed", "search_preset")
#: What a results file written before a setting existed had: nothing fixed, the paper's space, generations of 10.
_SETTING_BEFORE: dict[str, Any] = {"fixed": [], "search_preset": "paper"}


def study_seeds(document: Mapping[str, Any]) -> list[int]:
    """The study seeds whose searches a (merged) results document holds, ascending."""
    settings = document["settings"]
    return [int(s) for s in settings.get("study_seeds") or [settings.get("seed", 0)]]


def experiment_runs(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What each experiment run behind ``document`` holds: its settings, with ``modes`` and ``scales`` as the
    studies found in it (a run stopped early, or started with ``--modes``, holds fewer than it was asked for)."""
    settings = document["settings"]
    if "runs" in settings:
        return list(settings["runs"])
    studies = document["studies"]
    modes = [m for m in MODES if any(s["mode"] == m for s in studies)]
    scales = sorted({float(s["fraction"]) for s in studies if s["mode"] == "scale"})
    if scales and 1.0 in {float(x) for x in settings.get("scales", ())}:
        scales = sorted({*scales, 1.0})
    return [{**settings, "modes": modes, "scales": scales}]


def run_commands(document: Mapping[str, Any], outs: Sequence[str] | None = None) -> list[str]:
    """The ``songhpo experiment run`` command of each run behind a (merged) results document, with every
    setting that differs from the CLI's default, so that running them again reproduces the document.

    ``outs``: the experiment directory to name in each command instead of the one the run wrote to (one per
    run, in :func:`experiment_runs` order; e.g. where its results were copied to).
    """
    runs = experiment_runs(document)
    if outs is not None and len(outs) != len(runs):
        raise ValueError(f"outs: {len(outs)} directories for {len(runs)} runs")
    commands = []
    for run, out in zip(runs, outs if outs is not None else [run["out"] for run in runs]):
        words = ["songhpo experiment run", f"--dataset {shlex.quote(_shown(run['dataset']))}", f"--out {shlex.quote(str(out))}",
                 f"--trials {run['trials']}", f"--seeds {run['seeds']}", f"--seed {run.get('seed', 0)}",
                 f"--search-preset {run.get('search_preset', 'paper')}", f"--modes {','.join(run['modes'])}",
                 f"--scales '{','.join(f'{x:g}' for x in run['scales'])}'"]
        if run["scales"] and list(run.get("scale_modes", ["nsga2"])) != ["nsga2"]:
            words.append(f"--scale-modes {','.join(run['scale_modes'])}")
        if run.get("population_size") is not None:
            words.append(f"--population-size {run['population_size']}")
        if run.get("k", 100) != 100:
            words.append(f"--k {run['k']}")
        if run.get("name", "exp") != "exp":
            words.append(f"--name {run['name']}")
        words += [f"--fix {name}={value}" for name, value in run.get("fixed", ())]
        commands.append(" ".join(words))
    return commands


def prepare_command(dataset: Mapping[str, Any]) -> str | None:
    """The ``songhpo data prepare`` command that makes the prepared dataset of a results document (its
    ``"dataset"`` entry) from the raw data: the input and its format, and every parameter that differs from
    the CLI's default; ``None`` when the document does not name the raw data.

    A Million Playlist Dataset prepared from one slice names that slice; from several, their directory (a glob
    of some of its slices is not recorded). Documents written before the parameters were recorded give the
    command with the defaults. Either way the fingerprint the command prints tells whether it made the same
    dataset (a generic dataset that needed ``--drop-short`` makes the old command stop with a one-line error).
    """
    from hpo.data.prepare import PrepareParams

    source = dataset.get("source") or {}
    if not source.get("path"):
        return None
    files = source.get("input_files") or []
    raw = Path(source["path"], files[0]["name"]) if source.get("format") == "mpd" and len(files) == 1 else source["path"]
    words = ["songhpo data prepare", shlex.quote(_shown(raw)), f"--out {shlex.quote(_shown(dataset['path']))}"]
    words += [f"--format {source['format']}"] if source.get("format") else []
    defaults = asdict(PrepareParams())
    for name, value in (dataset.get("parameters") or {}).items():
        if name in defaults and value is not None and value != defaults[name]:
            words.append(f"--{name.replace('_', '-')} {value}")
    # The generic reader refuses these rows unless told to drop or keep them; the other readers drop them.
    dropped = dataset.get("dropped") or {}
    if source.get("format") == "generic":
        words += ["--drop-short"] if dropped.get("short_sequences") else []
        words += ["--allow-missing-metadata"] if dropped.get("tracks_without_metadata") else []
    return " ".join(words)


def _shown(path: str | Path) -> str:
    """``path`` as a reproduce command names it: an absolute path relative to the current directory when it lies
    beside it (a page made in the repository names ``../shared/data/...``, not this machine's root), else as
    recorded (a path recorded relative is relative to where its command ran)."""
    if not Path(path).is_absolute():
        return str(path)
    relative = os.path.relpath(path)
    return relative if not relative.startswith(f"..{os.sep}..") else str(path)


def reproduce_commands(document: Mapping[str, Any], out: str | Path, *, dirs: Sequence[str] | None = None,
                       title: str | None = None, notes: str | Path | None = None,
                       before: Sequence[str | Path] = ()) -> list[str]:
    """The commands that make results page ``out`` again: :func:`prepare_command` with the fingerprint it must
    print, :func:`run_commands`, then the ``songhpo experiment report`` line with the page's ``title``,
    ``notes`` file and ``before`` runs.

    ``dirs``: the experiment directories the page is made from, one per run (default: where each run wrote).
    """
    dirs = list(dirs) if dirs is not None else [run["out"] for run in experiment_runs(document)]
    report = ["songhpo experiment report", *map(shlex.quote, dirs), f"--out {shlex.quote(str(out))}"]
    report += [f"--title {shlex.quote(title)}"] if title else []
    report += [f"--notes {shlex.quote(str(notes))}"] if notes is not None else []
    report += [f"--before {shlex.quote(str(p))}" for p in before]
    prepare = prepare_command(document["dataset"])
    fingerprint = document["dataset"]["fingerprint"]
    dataset = ([f"# from the directory this page was made in; 'data prepare' must print \"fingerprint\": \"{fingerprint}\"",
                prepare] if prepare else [])
    return [*dataset, *run_commands(document, dirs), " ".join(report)]


def merge_results(documents: Sequence[dict[str, Any]], sources: Sequence[str]) -> dict[str, Any]:
    """One document from experiments run separately on the same dataset: modes split over machines, and/or
    the same modes searched with different study seeds (``--seed``), to see how much a search's outcome
    depends on its seed.

    They must share the dataset fingerprint and the settings of :data:`_SHARED_SETTINGS`, and no study may
    appear twice. With several study seeds every study name gets the suffix ``@seed<seed>`` (runs with
    different seeds usually reuse the same names), each study summary keeps its ``seed``, and
    ``settings["study_seeds"]`` lists them. ``sources`` name the documents in error messages.
    """
    first = documents[0]
    if len(documents) == 1:
        return first
    seeds = sorted({int(d["settings"].get("seed", 0)) for d in documents})
    merged = {**first, "studies": [], "configurations": [], "this_run_seconds": 0.0}
    seen: dict[str, str] = {}
    for document, source in zip(documents, sources):
        if document["dataset"]["fingerprint"] != first["dataset"]["fingerprint"]:
            raise InputError(f"{source}: dataset fingerprint {document['dataset']['fingerprint'][:12]} differs from "
                             f"{sources[0]}'s {first['dataset']['fingerprint'][:12]}; only one dataset per page")
        for key in _SHARED_SETTINGS:
            mine = document["settings"].get(key, _SETTING_BEFORE.get(key))
            theirs = first["settings"].get(key, _SETTING_BEFORE.get(key))
            if mine != theirs:
                flag = {"fixed": "fix"}.get(key, key).replace("_", "-")
                raise InputError(f"{source}: --{flag} {mine} differs from {sources[0]}'s {theirs}; "
                                 "compared modes need the same settings")
        seed = int(document["settings"].get("seed", 0))
        suffix = f"@seed{seed}" if len(seeds) > 1 else ""
        studies = [{**study, "study": study["study"] + suffix, "seed": study.get("seed", seed)}
                   for study in document["studies"]]
        for study in studies:
            if study["study"] in seen:
                raise InputError(f"{source}: study {study['study']!r} is also in {seen[study['study']]}; "
                                 "merge experiments that ran different modes or different --seed")
            seen[study["study"]] = source
        merged["studies"] += studies
        merged["configurations"] += [{**c, "study": c["study"] + suffix} for c in document["configurations"]]
        merged["this_run_seconds"] += document["this_run_seconds"]
    # One dataset (fingerprint) in all; a run made by a later songhpo records more of it (how it was prepared).
    dataset: dict[str, Any] = {}
    for document in reversed(documents):
        dataset.update(document["dataset"])
    merged["dataset"] = dataset
    settings = dict(first["settings"])
    settings["modes"] = [m for m in MODES if any(m in d["settings"]["modes"] for d in documents)]
    settings["scales"] = sorted({float(x) for d in documents for x in d["settings"]["scales"]})
    settings["runs"] = [run for d in documents for run in experiment_runs(d)]
    settings["study_seeds"] = seeds
    merged["settings"] = settings
    # Same order as one run would give: modes, then the scale study; seeds ascending within a mode.
    order = {mode: i for i, mode in enumerate((*MODES, "scale"))}
    merged["studies"].sort(key=lambda s: (order[s["mode"]], s["fraction"], s["seed"]))
    return merged
