"""What a study's trials share and what readers of a study ask of its trials.

The data every trial trains and validates on (:func:`trial_data`, :func:`study_dataset`), the baseline trial,
the feasible Pareto front, the HardNeg safeguard rule and one trial as a table row. Study orchestration
(:mod:`hpo.study`), the final evaluation (:mod:`hpo.results`), experiments and dashboards read trials through
this module; it imports none of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config import StudyConfig
from hpo.data.dataset import PreparedDataset
from hpo.evaluation import evaluation_data
from metrics.evaluate import EvaluationSettings
from objectives.trial import TrialData
from storage.errors import InputError

#: User attributes of a songhpo study: its config (without the storage URL), the HardNeg safeguard status
#: and the fingerprint of its prepared dataset.
CONFIG_ATTR = "songhpo_config"
SAFEGUARD_ATTR = "songhpo_safeguard"
FINGERPRINT_ATTR = "dataset_fingerprint"


def safeguard_rule(safeguard: dict[str, Any], k: int | str, baseline_hardneg: float | None = None) -> str:
    """One sentence stating the study's HardNeg feasibility rule (CLI, dashboard note, report)."""
    if not safeguard.get("enabled"):
        return "off"
    tolerance = float(safeguard.get("tolerance", 0.0))
    base = "" if baseline_hardneg is None else f" (baseline HardNeg@{k} {baseline_hardneg:.4g})"
    support = (f"{safeguard.get('hard_negative_pairs', '-')} hard-negative pairs over "
               f"{safeguard.get('songs_with_hard_negative', '-')} songs")
    if safeguard.get("rule", "point") == "point":
        return (f"HardNeg@{k} <= (1 + {tolerance:g}) x baseline HardNeg{base}; {support}; the margin is "
                f"HardNeg - (1 + {tolerance:g}) x baseline")
    confidence = float(safeguard.get("confidence", 0.95))
    return (f"infeasible when a one-sided paired t-test over the songs both support finds HardNeg@{k} above "
            f"(1 + {tolerance:g}) x baseline{base} at {confidence:.0%} confidence; {support}; the margin is the "
            "lower confidence bound of the per-song excess (<= 0 feasible)")



def infeasibility_warning(study: optuna.Study) -> str | None:
    """A loud warning, with the fix, when more than half of the completed trials are infeasible."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    infeasible = sum(not t.user_attrs.get("feasible", True) for t in complete)
    if 2 * infeasible <= len(complete):
        return None
    return (
        f"{infeasible} of {len(complete)} completed trials are infeasible (HardNeg above the safeguard), so the "
        "front holds few configurations besides the baseline. Fixes: raise constraint.tolerance, prepare the "
        "dataset with '--hardneg-scope sequence' (more supporting songs, a sharper test), or set "
        "constraint.enabled = false to see the unconstrained front"
    )



def trial_data(config: StudyConfig, dataset: PreparedDataset) -> TrialData:
    """Training sentences and validation arrays every trial of the study shares."""
    settings = EvaluationSettings(
        k=config.evaluation.k,
        coherence_k=config.evaluation.coherence_k,
        coherence_sample=config.evaluation.coherence_sample,
        ch_sample=config.evaluation.ch_sample,
        seed=config.seed,
        n_buckets=config.evaluation.n_buckets,
        max_pairs=config.evaluation.max_pairs,
    )
    sentences = training_subset(dataset.training_sentences(), config.training.fraction, config.seed)
    return TrialData(sentences, dataset.n_songs, evaluation_data(dataset, "validation"), settings)



def training_subset(sentences: list[list[str]], fraction: float, seed: int) -> list[list[str]]:
    """A seeded ``fraction`` of ``sentences`` (at least one), in their original order.

    The subsets of one seed are nested: the 10% subset is part of the 25% one, so a scale study adds data
    instead of drawing a different sample at every size.
    """
    if fraction >= 1.0:
        return sentences
    keep = training_subset_size(len(sentences), fraction)
    order = np.random.default_rng([seed, 0x5CA1E]).permutation(len(sentences))
    return [sentences[i] for i in np.sort(order[:keep])]



def training_subset_size(n_sequences: int, fraction: float) -> int:
    """How many of ``n_sequences`` training sequences :func:`training_subset` keeps for ``fraction``."""
    return n_sequences if fraction >= 1.0 else max(1, round(fraction * n_sequences))



def study_dataset(study: optuna.Study, config: StudyConfig, dataset_path: str | None = None) -> PreparedDataset:
    """The prepared dataset of ``study`` (``dataset_path`` overrides the config's path on this machine).

    Refuses a dataset whose fingerprint differs from the one the study was created with: every worker
    and every re-evaluation must read the same data.
    """
    try:
        dataset = PreparedDataset.load(dataset_path or config.dataset)
    except InputError as exc:
        if dataset_path is not None:
            raise
        # A worker on another machine finds nothing at the path the study was created with.
        raise InputError(f"{exc} (the study's dataset path; where the dataset lives elsewhere, pass --dataset "
                         "with this machine's copy)") from exc
    expected = study.user_attrs.get(FINGERPRINT_ATTR)
    if expected and dataset.fingerprint != expected:
        raise InputError(
            f"{dataset.path}: fingerprint {dataset.fingerprint[:12]} differs from the study's dataset "
            f"{expected[:12]}; pass --dataset with the prepared dataset the study used"
        )
    return dataset



def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number`` of ``study``; an :class:`InputError` naming the trials it has when there is none."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        numbers = sorted(trials)
        known = f"trials {numbers[0]}..{numbers[-1]}" if numbers else "no trials"
        raise InputError(f"study {study.study_name!r} has no trial {number} ({known})")
    return trials[number]


def baseline_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every baseline trial (the enqueued one and any re-run of it), in any state."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")]



def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed baseline trial (gensim defaults), if any."""
    return next((t for t in baseline_trials(study) if t.state == TrialState.COMPLETE), None)



def feasible_pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Completed, feasible, non-dominated trials (the front every table and figure of ours shows).

    Feasibility is the HardNeg constraint set on the trial; trials without it (safeguard off) are
    feasible. Equals ``study.best_trials`` of Optuna for constrained studies.
    """
    directions = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if all(v <= 0.0 for v in t.constraints.values())
    ]
    front = [t for t in trials if not any(dominates(o.values, t.values, directions) for o in trials)]
    return sorted(front, key=lambda t: t.number)


def dominates(a: Sequence[float], b: Sequence[float], maximise: Sequence[bool]) -> bool:
    """Whether objective values ``a`` Pareto-dominate ``b``: no worse in every objective, better in one.

    ``maximise[i]`` is the direction of objective ``i`` (``False``: minimised).
    """
    signed = [(x, y) if up else (-x, -y) for x, y, up in zip(a, b, maximise)]
    return all(x >= y for x, y in signed) and any(x > y for x, y in signed)



#: Keys gensim always gets from :func:`objectives.word2vec.word2vec_kwargs` (skip-gram, negative sampling).
_FIXED_KWARGS = {"sg": 1, "hs": 0}


def training_params(trial: FrozenTrial) -> dict[str, Any]:
    """The exact Word2Vec parameters the trial trained with (its ``gensim_params`` attribute)."""
    kwargs = trial.user_attrs.get("gensim_params")
    if not isinstance(kwargs, dict):
        raise InputError(f"trial {trial.number} has no 'gensim_params' attribute; it was not run by this songhpo")
    for name, value in _FIXED_KWARGS.items():
        if kwargs.get(name, value) != value:
            raise InputError(f"trial {trial.number}: gensim_params {name}={kwargs[name]!r}, expected {value}")
    return {k: v for k, v in kwargs.items() if k not in _FIXED_KWARGS}



def trial_row(trial: FrozenTrial, metric_names: list[str]) -> dict[str, Any]:
    """One trial as a flat row: number, objective values, HardNeg and feasibility, params."""
    row: dict[str, Any] = {"trial": trial.number, "baseline": bool(trial.user_attrs.get("baseline"))}
    for name, value in zip(metric_names, trial.values or []):
        row[name] = value
    row["hardneg"] = trial.user_attrs.get("hardneg")
    row["hardneg_margin"] = trial.user_attrs.get("constraint_hardneg")
    row["feasible"] = trial.user_attrs.get("feasible", True)
    for name, value in trial.params.items():
        row[name] = float(value) if isinstance(value, float) and not math.isnan(value) else value
    return row
