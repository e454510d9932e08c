"""Which configurations the report and the dashboard compare, chosen on **validation** values.

* **baseline** - trial 0, gensim's defaults (:func:`hpo.trials.baseline_trial`).
* **best NDCG** - the feasible completed trial with the highest validation NDCG (the single-objective
  choice of the paper's comparison).
* **best clustering** - the feasible completed trial with the highest mean of its min-max normalised
  clustering metrics: the CH-artist / CH-genre objectives of the study; when neither is an objective,
  the CH metrics that were measured; when none was, the local artist / genre coherences.
* **balanced compromise** - :data:`BALANCED_RULE`: on the feasible Pareto front, each objective is min-max
  normalised over the front so that 1 is the front's best value in that objective's direction, and
  the trial closest (Euclidean) to the utopia point (1, ..., 1) is chosen.

Infeasible trials (HardNeg safeguard) are never chosen. Ties go to Pareto-front members, then to the
lowest trial number, so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo.trials import baseline_trial, feasible_pareto_front

BALANCED_RULE = (
    "balanced compromise = the feasible Pareto-front trial closest (Euclidean distance) to the utopia point "
    "after min-max normalising every objective over the front (1 = the front's best value in the objective's "
    "direction)"
)
BEST_NDCG_RULE = "best NDCG = the feasible trial with the highest validation NDCG"
#: Clustering metrics in order of preference for the best-clustering choice.
CH_METRICS = ("ch_artist", "ch_genre")
COHERENCE_METRICS = ("coherence_artist", "coherence_genre")


@dataclass(frozen=True)
class SelectedConfiguration:
    """One compared configuration.

    Attributes
    ----------
    role : str
        ``"baseline"``, ``"best_ndcg"``, ``"best_clustering"`` or ``"balanced"``.
    label : str
        Human-readable name used in legends and tables.
    trial : FrozenTrial
        The chosen completed trial.
    rule : str
        How it was chosen (shown in the report).
    """

    role: str
    label: str
    trial: FrozenTrial
    rule: str


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether ``trial`` satisfies its constraints (the HardNeg safeguard); no constraint = feasible."""
    return all(v <= 0.0 for v in trial.constraints.values())


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed feasible trials in trial-number order."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted((t for t in trials if is_feasible(t)), key=lambda t: t.number)


def normalised_objectives(values: np.ndarray, maximise: Sequence[bool]) -> np.ndarray:
    """Min-max normalise each column of ``values`` (n, m) so that 1 is the best value, 0 the worst.

    ``maximise[j]`` gives column j's direction. A constant column (one trial, or all equal) is 1
    everywhere: no trial is worse than another in it.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be (n, m), got shape {values.shape}")
    out = np.ones_like(values)
    for j, up in enumerate(maximise):
        column = values[:, j]
        low, high = column.min(initial=np.inf), column.max(initial=-np.inf)
        if values.shape[0] and high > low:
            scaled = (column - low) / (high - low)
            out[:, j] = scaled if up else 1.0 - scaled
    return out


def _tie_key(trial: FrozenTrial, score: float, front: set[int]) -> tuple[float, int, int]:
    # Higher score first, then front members, then the lowest number.
    return (-score, trial.number not in front, trial.number)


def balanced_compromise(study: optuna.Study, front: list[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The trial chosen by :data:`BALANCED_RULE`, or ``None`` when the feasible front is empty."""
    front = feasible_pareto_front(study) if front is None else front
    if not front:
        return None
    maximise = [d == StudyDirection.MAXIMIZE for d in study.directions]
    normalised = normalised_objectives(np.array([t.values for t in front]), maximise)
    distance = np.linalg.norm(normalised - 1.0, axis=1)
    members = {t.number for t in front}
    return min(zip(front, distance), key=lambda pair: _tie_key(pair[0], -float(pair[1]), members))[0]


def clustering_metrics(study: optuna.Study) -> tuple[str, ...]:
    """The metrics the best-clustering choice averages (see the module docstring)."""
    objectives = tuple(study.metric_names or ())
    chosen = tuple(m for m in CH_METRICS if m in objectives)
    if chosen:
        return chosen
    trials = feasible_trials(study)
    for family in (CH_METRICS, COHERENCE_METRICS):
        measured = tuple(m for m in family if any(_number(t.user_attrs.get(m)) is not None for t in trials))
        if measured:
            return measured
    return ()


def best_clustering(study: optuna.Study, front: list[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The feasible trial with the highest mean normalised clustering metric, or ``None``."""
    metrics = clustering_metrics(study)
    candidates = [t for t in feasible_trials(study) if all(_number(t.user_attrs.get(m)) is not None for m in metrics)]
    if not metrics or not candidates:
        return None
    values = np.array([[float(t.user_attrs[m]) for m in metrics] for t in candidates])
    score = normalised_objectives(values, [True] * len(metrics)).mean(axis=1)
    members = {t.number for t in (feasible_pareto_front(study) if front is None else front)}
    return min(zip(candidates, score), key=lambda pair: _tie_key(pair[0], float(pair[1]), members))[0]


def best_by_metric(study: optuna.Study, metric: str, front: list[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The feasible trial with the highest validation ``metric`` (a user attribute), or ``None``."""
    candidates = [t for t in feasible_trials(study) if _number(t.user_attrs.get(metric)) is not None]
    if not candidates:
        return None
    members = {t.number for t in (feasible_pareto_front(study) if front is None else front)}
    return min(candidates, key=lambda t: _tie_key(t, float(t.user_attrs[metric]), members))


def select_configurations(study: optuna.Study) -> list[SelectedConfiguration]:
    """Baseline, best NDCG, best clustering and balanced compromise, in that order.

    A role is left out when nothing qualifies (no completed baseline, no feasible trial). Two roles may
    name the same trial.
    """
    front = feasible_pareto_front(study)
    chosen: list[SelectedConfiguration] = []
    baseline = baseline_trial(study)
    if baseline is not None:
        chosen.append(SelectedConfiguration("baseline", "baseline (gensim defaults)", baseline,
                                            "baseline = trial 0, gensim's default parameters"))
    best_ndcg = best_by_metric(study, "ndcg", front)
    if best_ndcg is not None:
        chosen.append(SelectedConfiguration("best_ndcg", "best NDCG", best_ndcg, BEST_NDCG_RULE))
    metrics = clustering_metrics(study)
    clustering = best_clustering(study, front)
    if clustering is not None:
        rule = (f"best clustering = the feasible trial with the highest mean of min-max normalised "
                f"{' and '.join(metrics)} (validation)")
        chosen.append(SelectedConfiguration("best_clustering", "best clustering", clustering, rule))
    balanced = balanced_compromise(study, front)
    if balanced is not None:
        chosen.append(SelectedConfiguration("balanced", "balanced compromise", balanced, BALANCED_RULE))
    return chosen


def merge_same_trials(configs: Sequence[SelectedConfiguration]) -> list[SelectedConfiguration]:
    """One entry per trial, in first-appearance order; roles naming the same trial share a joined label.

    For display (curves, table columns): the role is the first one's, so a baseline stays ``"baseline"``.
    """
    merged: dict[int, SelectedConfiguration] = {}
    for config in configs:
        first = merged.get(config.trial.number)
        if first is None:
            merged[config.trial.number] = config
        else:
            merged[config.trial.number] = SelectedConfiguration(
                first.role, f"{first.label} = {config.label}", first.trial, f"{first.rule}; {config.rule}")
    return list(merged.values())


def _number(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (unavailable metrics are ``None``, never 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if np.isfinite(value) else None
