"""The constraint-aware Pareto-front charts, for optuna-dashboard and the HTML report.

optuna-dashboard 0.21 draws its own Pareto front without Optuna 5's constraints, so infeasible trials
can appear on it. These charts mark the feasible front (:func:`hpo.trials.feasible_pareto_front`), grey
infeasible trials and mark the baseline: :func:`pareto_figure` as 2-D panels (one per objective pair),
:func:`pareto_3d_figure` in 3-D. :func:`publish_pareto_chart` saves the 2-D chart into the study, where
the dashboard shows it on the study page. Every trace carries the trial numbers as ``customdata``.
"""

from __future__ import annotations

import itertools

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from dashboards._layout import set_title, wrap
from dashboards.selection import is_feasible

PARETO_GRAPH_ID = "songhpo-feasible-pareto"
FRONT = "feasible Pareto front"
FEASIBLE = "feasible"
INFEASIBLE = "infeasible (HardNeg safeguard)"
BASELINE = "baseline (gensim defaults)"
_STYLE = {
    FRONT: {"color": "#d62728", "size": 10, "symbol": "circle"},
    FEASIBLE: {"color": "#9ecae1", "size": 7, "symbol": "circle"},
    INFEASIBLE: {"color": "#bdbdbd", "size": 7, "symbol": "x"},
    BASELINE: {"color": "#000000", "size": 14, "symbol": "star"},
}
# Scatter3d knows fewer marker symbols than 2-D scatter, and draws its "x" as an emoji that most fonts lack
# (an empty box): infeasible trials are crosses there (dashboards._layout.SYMBOLS_3D).
_SYMBOL_3D = {"circle": "circle", "x": "cross", "star": "diamond"}
#: Longest line of a 3-D axis title, in characters: the scene clips what runs past its edge.
AXIS_TITLE_CHARS = 20


def _groups(study: optuna.Study, front: list[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    """Completed trials by how they are drawn; the baseline is also in its feasibility group."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front_numbers = {t.number for t in front}
    return {
        FRONT: [t for t in trials if t.number in front_numbers],
        FEASIBLE: [t for t in trials if t.number not in front_numbers and is_feasible(t)],
        INFEASIBLE: [t for t in trials if not is_feasible(t)],
        BASELINE: [t for t in trials if t.user_attrs.get("baseline")],
    }


def _hover(trial: FrozenTrial, names: list[str]) -> str:
    values = "<br>".join(f"{n}: {v:.4g}" for n, v in zip(names, trial.values))
    params = "<br>".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in trial.params.items())
    hardneg = trial.user_attrs.get("hardneg")
    extra = f"<br>hardneg: {hardneg:.4g}" if isinstance(hardneg, (int, float)) else ""
    flags = (("baseline", trial.user_attrs.get("baseline")), ("infeasible", not is_feasible(trial)))
    tags = [tag for tag, on in flags if on]
    head = f"trial {trial.number}" + (f" ({', '.join(tags)})" if tags else "")
    return f"{head}<br>{values}{extra}<br>{params}"


def pareto_figure(study: optuna.Study, front: list[FrozenTrial]) -> go.Figure:
    """Scatter (2 objectives), scatter-matrix of every objective pair (3+), or values by trial (1).

    ``front`` is the feasible Pareto front (see :func:`hpo.trials.feasible_pareto_front`); it is drawn in
    red, other feasible trials in light blue, infeasible trials in grey, the baseline as a star. Trace
    names are :data:`FRONT`, :data:`FEASIBLE`, :data:`INFEASIBLE` and :data:`BASELINE`.
    """
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    groups = _groups(study, front)
    figure = go.Figure()
    for label, members in groups.items():
        common = {"name": label, "marker": _STYLE[label], "text": [_hover(t, names) for t in members],
                  "hoverinfo": "text", "customdata": [t.number for t in members]}
        if len(names) == 1:
            figure.add_trace(go.Scatter(x=[t.number for t in members], y=[t.values[0] for t in members],
                                        mode="markers", **common))
        elif len(names) == 2:
            figure.add_trace(go.Scatter(x=[t.values[0] for t in members], y=[t.values[1] for t in members],
                                        mode="markers", **common))
        else:
            figure.add_trace(go.Splom(
                dimensions=[{"label": n, "values": [t.values[i] for t in members]} for i, n in enumerate(names)],
                diagonal_visible=False, showupperhalf=False, **common))
    if len(names) == 1:
        figure.update_layout(xaxis_title="trial", yaxis_title=_axis_title(study, 0))
    elif len(names) == 2:
        figure.update_layout(xaxis_title=_axis_title(study, 0), yaxis_title=_axis_title(study, 1))
    figure.update_layout(legend_title_text="trials", template="plotly_white")
    return set_title(figure, f"{study.study_name}: feasible Pareto front (HardNeg safeguard applied)")


def pareto_3d_figure(study: optuna.Study, front: list[FrozenTrial]) -> go.Figure | None:
    """The first three objectives in 3-D, styled like :func:`pareto_figure`; ``None`` below 3 objectives."""
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    if len(names) < 3:
        return None
    figure = go.Figure()
    for label, members in _groups(study, front).items():
        style = _STYLE[label]
        figure.add_trace(go.Scatter3d(
            x=[t.values[0] for t in members], y=[t.values[1] for t in members], z=[t.values[2] for t in members],
            mode="markers", name=label, text=[_hover(t, names) for t in members], hoverinfo="text",
            customdata=[t.number for t in members],
            marker={"color": style["color"], "size": style["size"] * (0.6 if label != INFEASIBLE else 1.0),
                    "symbol": _SYMBOL_3D[style["symbol"]]}))
    # Axis titles wrapped and the camera a little further out than plotly's default (1.25, 1.25, 1.25), so
    # that the titles stay inside the scene; the legend goes under it, leaving the scene the whole width.
    figure.update_layout(
        scene={f"{axis}axis_title": wrap(_axis_title(study, i).replace(" (", "<br>("), AXIS_TITLE_CHARS)
               for i, axis in enumerate("xyz")},
        scene_camera={"eye": {"x": 1.5, "y": 1.5, "z": 1.0}},
        legend={"title": {"text": "trials"}, "orientation": "h", "x": 0, "y": 0, "yanchor": "top"},
        margin={"l": 10, "r": 10, "b": 50}, template="plotly_white", height=650)
    return set_title(figure, f"{study.study_name}: feasible Pareto front in 3-D (HardNeg safeguard applied)")


def _axis_title(study: optuna.Study, index: int) -> str:
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    better = "higher" if study.directions[index] == optuna.study.StudyDirection.MAXIMIZE else "lower"
    return f"{names[index]} ({better} is better)"


def publish_pareto_chart(study: optuna.Study, front: list[FrozenTrial]) -> str:
    """Save (or overwrite) the chart in the study so optuna-dashboard shows it; returns its id."""
    from optuna_dashboard import save_plotly_graph_object

    return save_plotly_graph_object(study, pareto_figure(study, front), graph_object_id=PARETO_GRAPH_ID)


def objective_pairs(names: list[str]) -> list[tuple[int, int]]:
    """Index pairs of objectives for 2-D projections."""
    return list(itertools.combinations(range(len(names)), 2))
