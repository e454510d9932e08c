"""The constraint-aware Pareto-front chart, for optuna-dashboard and the reports.

optuna-dashboard 0.21 draws its own Pareto front without Optuna 5's constraints, so infeasible trials
can appear on it. This chart marks the feasible front, greys infeasible trials and marks the baseline;
:func:`publish_pareto_chart` saves it into the study, where the dashboard shows it on the study page.
"""

from __future__ import annotations

import itertools

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

PARETO_GRAPH_ID = "songhpo-feasible-pareto"


def _is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0.0 for v in trial.constraints.values())


def _hover(trial: FrozenTrial, names: list[str]) -> str:
    values = "<br>".join(f"{n}: {v:.4g}" for n, v in zip(names, trial.values))
    params = "<br>".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in trial.params.items())
    hardneg = trial.user_attrs.get("hardneg")
    extra = f"<br>hardneg: {hardneg:.4g}" if isinstance(hardneg, (int, float)) else ""
    return f"trial {trial.number}<br>{values}{extra}<br>{params}"


def pareto_figure(study: optuna.Study, front: list[FrozenTrial]) -> go.Figure:
    """Scatter (2 objectives) or scatter-matrix (3+) of completed trials.

    ``front`` is the feasible Pareto front (see :func:`hpo.study.feasible_pareto_front`); it is drawn in
    colour, other feasible trials in light blue, infeasible trials in grey, the baseline as a star.
    """
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front_numbers = {t.number for t in front}
    groups = {
        "feasible Pareto front": [t for t in trials if t.number in front_numbers],
        "feasible": [t for t in trials if t.number not in front_numbers and _is_feasible(t)],
        "infeasible (HardNeg safeguard)": [t for t in trials if not _is_feasible(t)],
        "baseline (gensim defaults)": [t for t in trials if t.user_attrs.get("baseline")],
    }
    style = {
        "feasible Pareto front": {"color": "#d62728", "size": 10, "symbol": "circle"},
        "feasible": {"color": "#9ecae1", "size": 7, "symbol": "circle"},
        "infeasible (HardNeg safeguard)": {"color": "#bdbdbd", "size": 7, "symbol": "x"},
        "baseline (gensim defaults)": {"color": "#000000", "size": 14, "symbol": "star"},
    }
    figure = go.Figure()
    if len(names) == 1:
        for label, members in groups.items():
            figure.add_trace(go.Scatter(
                x=[t.number for t in members], y=[t.values[0] for t in members], mode="markers", name=label,
                marker=style[label], text=[_hover(t, names) for t in members], hoverinfo="text"))
        figure.update_layout(xaxis_title="trial", yaxis_title=names[0])
    elif len(names) == 2:
        for label, members in groups.items():
            figure.add_trace(go.Scatter(
                x=[t.values[0] for t in members], y=[t.values[1] for t in members], mode="markers", name=label,
                marker=style[label], text=[_hover(t, names) for t in members], hoverinfo="text"))
        figure.update_layout(xaxis_title=names[0], yaxis_title=names[1])
    else:
        for label, members in groups.items():
            figure.add_trace(go.Splom(
                dimensions=[{"label": n, "values": [t.values[i] for t in members]} for i, n in enumerate(names)],
                name=label, marker=style[label], text=[_hover(t, names) for t in members], hoverinfo="text",
                diagonal_visible=False, showupperhalf=False))
    figure.update_layout(
        title=f"{study.study_name}: feasible Pareto front (HardNeg safeguard applied)", legend_title_text="trials",
        template="plotly_white")
    return figure


def publish_pareto_chart(study: optuna.Study, front: list[FrozenTrial]) -> str:
    """Save (or overwrite) the chart in the study so optuna-dashboard shows it; returns its id."""
    from optuna_dashboard import save_plotly_graph_object

    return save_plotly_graph_object(study, pareto_figure(study, front), graph_object_id=PARETO_GRAPH_ID)


def objective_pairs(names: list[str]) -> list[tuple[int, int]]:
    """Index pairs of objectives for 2-D projections."""
    return list(itertools.combinations(range(len(names)), 2))
