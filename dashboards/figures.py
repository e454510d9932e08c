"""Figures and tables of a study: popularity-bucket curves, side effects, history, hypervolume, importances.

Values of the compared configurations come from the latest **test** snapshot when the configuration is
in it (means with 95% confidence intervals over seeds), otherwise from the trial's **validation** user
attributes (one run, no interval). Each result says which split it is on; a change vs the baseline is
only ever computed against the baseline on the same split.

Orientation: objective values are shown raw, so for a maximised objective higher is better; axis
titles and table rows say "higher/lower is better". Where a sign or an ordering is derived - best-so-far
lines, the colour of parallel coordinates, the direction of a parameter's effect - it follows the
objective's direction, so "better" means higher for maximised objectives and lower for HardNeg.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from dashboards._layout import set_title, wrap
from dashboards.selection import SelectedConfiguration, is_feasible, merge_same_trials
from hpo.config import METRIC_DIRECTIONS

#: Metrics of the side-effects table (after the study's objectives), in display order.
SIDE_EFFECT_METRICS = ("ndcg", "ndcg_in", "ndcg_out", "hitrate", "hitrate_in", "hitrate_out", "hardneg",
                       "coherence_genre", "coherence_artist", "ch_genre", "ch_artist")
_COLOURS = {"baseline": "#000000", "best_ndcg": "#1f77b4", "best_clustering": "#2ca02c", "balanced": "#ff7f0e"}
_BETTER, _WORSE = "#d9f2d9", "#f8d7d7"


class Estimate(NamedTuple):
    """A value with an optional 95% interval (``None`` = unavailable, never 0)."""

    mean: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class ConfigurationResult:
    """Metrics and target-popularity buckets of one compared configuration on one split.

    Attributes
    ----------
    config : SelectedConfiguration
    split : str
        ``"test"`` (from the snapshot, with intervals) or ``"validation"`` (the trial's own values).
    metrics : dict[str, Estimate]
        Every metric of :data:`SIDE_EFFECT_METRICS` that was recorded.
    buckets : dict or None
        ``{"edges": [B + 1 floats], "pairs": [B ints], "hitrate": [B Estimates], "ndcg": [B Estimates]}``,
        by target-song popularity bucket (0 = least played); ``None`` when not recorded.
    """

    config: SelectedConfiguration
    split: str
    metrics: dict[str, Estimate]
    buckets: dict[str, Any] | None


def configuration_results(
    configs: Sequence[SelectedConfiguration], snapshot: Mapping[str, Any] | None = None
) -> list[ConfigurationResult]:
    """Each configuration on test when the snapshot has it, else on validation (see module docstring).

    Configurations naming the same trial are merged into one (:func:`~dashboards.selection.merge_same_trials`).
    """
    members = {int(m["trial"]): m for m in (snapshot or {}).get("members", [])}
    results = []
    for config in merge_same_trials(configs):
        member = members.get(config.trial.number)
        if member is not None:
            metrics = {name: Estimate(_num(v.get("mean")), _num(v.get("low")), _num(v.get("high")))
                       for name, v in (member.get("test") or {}).items() if isinstance(v, Mapping)}
            results.append(ConfigurationResult(config, "test", metrics, _snapshot_buckets(member.get("test_buckets"))))
        else:
            attrs = config.trial.user_attrs
            metrics = {name: Estimate(_num(attrs.get(name))) for name in SIDE_EFFECT_METRICS if name in attrs}
            results.append(ConfigurationResult(config, "validation", metrics, _trial_buckets(attrs.get("buckets"))))
    return results


def _snapshot_buckets(buckets: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not buckets or not buckets.get("by_target"):
        return None
    target = buckets["by_target"]

    def series(name: str) -> list[Estimate]:
        block = target.get(name) or {}
        means = block.get("mean") or []
        lows = block.get("low") or [None] * len(means)
        highs = block.get("high") or [None] * len(means)
        return [Estimate(_num(m), _num(lo), _num(hi)) for m, lo, hi in zip(means, lows, highs)]

    return {"edges": list(buckets["edges"]), "pairs": list(target.get("pairs") or []),
            "hitrate": series("hitrate"), "ndcg": series("ndcg")}


def _trial_buckets(buckets: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not buckets or not buckets.get("by_target"):
        return None
    target = buckets["by_target"]
    return {"edges": list(buckets["edges"]), "pairs": list(target.get("pairs") or []),
            "hitrate": [Estimate(_num(v)) for v in target.get("hitrate") or []],
            "ndcg": [Estimate(_num(v)) for v in target.get("ndcg") or []]}


# --------------------------------------------------------------------------- side effects


@dataclass(frozen=True)
class SideEffectCell:
    """One configuration's value of one metric and its change vs the baseline on the same split."""

    value: Estimate
    delta: float | None = None
    relative: float | None = None
    verdict: str | None = None  # "better", "worse", "same" (in the metric's direction) or None


@dataclass(frozen=True)
class SideEffectRow:
    metric: str
    direction: str  # "maximize" or "minimize"
    objective: bool
    cells: list[SideEffectCell]


@dataclass(frozen=True)
class SideEffects:
    """The side-effects table: every metric (rows) for every compared configuration (columns)."""

    results: list[ConfigurationResult]
    rows: list[SideEffectRow] = field(default_factory=list)

    def row(self, metric: str) -> SideEffectRow:
        return next(r for r in self.rows if r.metric == metric)


def side_effects(study: optuna.Study, results: Sequence[ConfigurationResult]) -> SideEffects:
    """Every metric for each configuration with its change vs the baseline on the same split.

    The study's objectives come first (their direction from the study), then the other metrics of
    :data:`SIDE_EFFECT_METRICS`. Rows where no configuration has a value are left out.
    """
    objectives = list(study.metric_names or [])
    directions = {n: ("maximize" if d == StudyDirection.MAXIMIZE else "minimize")
                  for n, d in zip(objectives, study.directions)}
    baselines: dict[str, dict[str, Estimate]] = {}
    for result in results:
        if result.config.role == "baseline":
            baselines[result.split] = result.metrics
            # A configuration missing from the snapshot is compared with the baseline's own validation run.
            attrs = result.config.trial.user_attrs
            own = {m: Estimate(_num(attrs.get(m))) for m in SIDE_EFFECT_METRICS if m in attrs}
            baselines.setdefault("validation", own)
    rows = []
    for metric in [*objectives, *(m for m in SIDE_EFFECT_METRICS if m not in objectives)]:
        direction = directions.get(metric, METRIC_DIRECTIONS.get(metric, "maximize"))
        cells = []
        for result in results:
            value = result.metrics.get(metric, Estimate(None))
            reference = baselines.get(result.split, {}).get(metric, Estimate(None)).mean
            if result.config.role == "baseline" or value.mean is None or reference is None:
                cells.append(SideEffectCell(value))
                continue
            delta = value.mean - reference
            relative = delta / abs(reference) if reference != 0 else None
            scale = max(abs(value.mean), abs(reference), 1e-300)
            if abs(delta) <= 1e-9 * scale:
                verdict = "same"
            else:
                verdict = "better" if (delta > 0) == (direction == "maximize") else "worse"
            cells.append(SideEffectCell(value, delta, relative, verdict))
        if any(c.value.mean is not None for c in cells):
            rows.append(SideEffectRow(metric, direction, metric in objectives, cells))
    return SideEffects(list(results), rows)


def _column_title(result: ConfigurationResult) -> str:
    return f"{result.config.label}<br>trial {result.config.trial.number}, {result.split}"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _value_text(value: Estimate) -> str:
    if value.mean is None:
        return "-"
    if value.low is None or value.high is None:
        return _fmt(value.mean)
    return f"{_fmt(value.mean)} [{_fmt(value.low)}, {_fmt(value.high)}]"


def _value_lines(value: Estimate) -> str:
    """:func:`_value_text` on two lines, the interval's bounds to 3 significant digits (table figure cells)."""
    if value.mean is None or value.low is None or value.high is None:
        return _value_text(value)
    return f"{_fmt(value.mean)}<br>[{_fmt(value.low, 3)}, {_fmt(value.high, 3)}]"


def _delta_text(cell: SideEffectCell) -> str:
    if cell.delta is None:
        return ""
    relative = "" if cell.relative is None else f" ({cell.relative:+.1%})"
    return f"{cell.delta:+.3g}{relative}"


def side_effects_html(table: SideEffects) -> str:
    """The table as an HTML ``<table>`` (values with intervals, change vs baseline coloured by verdict)."""
    head = "".join(f"<th>{_column_title(r)}</th>" for r in table.results)
    lines = [f'<table class="side-effects"><thead><tr><th>metric</th>{head}</tr></thead><tbody>']
    for row in table.rows:
        arrow = "higher" if row.direction == "maximize" else "lower"
        name = f"<b>{html.escape(row.metric)}</b>" if row.objective else html.escape(row.metric)
        cells = []
        for cell in row.cells:
            style = {"better": f' style="background:{_BETTER}"', "worse": f' style="background:{_WORSE}"'}.get(
                cell.verdict or "", "")
            delta = f'<br><span class="delta">{html.escape(_delta_text(cell))}</span>' if cell.delta is not None else ""
            value = html.escape(_value_text(cell.value))
            cells.append(f'<td data-verdict="{cell.verdict or ""}"{style}>{value}{delta}</td>')
        lines.append(f'<tr><td>{name} <span class="dir">({arrow} is better)</span></td>{"".join(cells)}</tr>')
    lines.append("</tbody></table>")
    return "\n".join(lines)


#: Longest line of a side-effects table header cell, in characters (a column of a 600 px dashboard card).
HEADER_CHARS = 18
#: Font size of the side-effects table figure, and the height of one line of its cells, in px.
TABLE_FONT = 11
HEADER_LINE_PX = 15


def _header_title(result: ConfigurationResult) -> str:
    """A column header of the table figure: one line per role (``a = b`` names a trial chosen twice) and
    lines of at most :data:`HEADER_CHARS` characters; a plotly table cell never wraps by itself."""
    label = result.config.label.replace(" = ", "<br>")
    return wrap(f"{label}<br>trial {result.config.trial.number}, {result.split}", HEADER_CHARS)


def side_effects_figure(study: optuna.Study, table: SideEffects) -> go.Figure:
    """The table as a plotly Table figure (for optuna-dashboard, which shows plotly figures only).

    Header cells are wrapped (:func:`_header_title`) and the header row is as tall as its longest cell,
    so nothing of it is cut, in the dashboard's card or in the report's PNG.
    """
    header = ["metric", *(_header_title(r) for r in table.results)]
    header_lines = max(h.count("<br>") + 1 for h in header)
    columns: list[list[str]] = [[wrap(f"{r.metric} ({'↑' if r.direction == 'maximize' else '↓'})", HEADER_CHARS - 2)
                                 for r in table.rows]]
    fills: list[list[str]] = [["#ffffff"] * len(table.rows)]
    for j in range(len(table.results)):
        cells = [r.cells[j] for r in table.rows]
        # One line each for the value, its interval and the change: five columns fit a 600 px dashboard card.
        columns.append([_value_lines(c.value) + ("" if c.delta is None else f"<br>{_delta_text(c)}") for c in cells])
        fills.append([{"better": _BETTER, "worse": _WORSE}.get(c.verdict or "", "#ffffff") for c in cells])
    header_height = HEADER_LINE_PX * header_lines + 12
    lines = max((cell.count("<br>") + 1 for column in columns for cell in column), default=1)
    figure = go.Figure(go.Table(
        columnwidth=[1.15] + [1.2] * len(table.results),
        header={"values": header, "fill_color": "#eeeeee", "align": "left", "height": header_height,
                "font": {"size": TABLE_FONT}},
        cells={"values": columns, "fill_color": fills, "align": "left", "height": HEADER_LINE_PX * lines + 10,
               "font": {"size": TABLE_FONT}}))
    figure.update_layout(height=60 + header_height + (HEADER_LINE_PX * lines + 10) * len(table.rows),
                         template="plotly_white", margin={"l": 2, "r": 2, "b": 10})
    return set_title(figure, f"{study.study_name}: side effects - every metric vs the baseline "
                             "(green better, red worse)")


# --------------------------------------------------------------------------- popularity buckets


def error_bars(series: Sequence[Any]) -> dict[str, Any] | None:
    """Plotly ``error_y`` of the asymmetric intervals of ``series`` (items with ``mean``, ``low``, ``high``,
    such as :class:`Estimate`); ``None`` when no item has an interval. A missing bound draws no bar."""
    if not any(e.low is not None and e.high is not None for e in series):
        return None
    return {"type": "data", "symmetric": False,
            "array": [None if e.high is None or e.mean is None else e.high - e.mean for e in series],
            "arrayminus": [None if e.low is None or e.mean is None else e.mean - e.low for e in series]}


def bucket_labels(edges: Sequence[float]) -> list[str]:
    """Bucket names from edges: bucket 0 is ``[e0, e1]``, bucket b > 0 is ``(e_b, e_b+1]`` (training plays)."""
    labels = []
    for b in range(len(edges) - 1):
        low, high = edges[b], edges[b + 1]
        labels.append(f"{b}: [{low:g}, {high:g}]" if b == 0 else f"{b}: ({low:g}, {high:g}]")
    return labels


def bucket_figure(study: optuna.Study, results: Sequence[ConfigurationResult]) -> go.Figure | None:
    """HitRate@K and NDCG@K by target-song popularity bucket, one curve per configuration.

    Test curves have 95% interval error bars; validation curves (a configuration missing from the
    snapshot, or no snapshot) are dashed and have none. ``None`` when no configuration has buckets.
    """
    with_buckets = [r for r in results if r.buckets and r.buckets.get("edges")]
    if not with_buckets:
        return None
    k = evaluation_k(study)
    labels = bucket_labels(with_buckets[0].buckets["edges"])
    figure = make_subplots(rows=1, cols=2, subplot_titles=(f"HitRate@{k}", f"NDCG@{k}"))
    for result in with_buckets:
        assert result.buckets is not None
        colour = _COLOURS.get(result.config.role, "#7f7f7f")
        name = f"{result.config.label} (trial {result.config.trial.number}, {result.split})"
        pairs = result.buckets["pairs"]
        for col, metric in ((1, "hitrate"), (2, "ndcg")):
            series: list[Estimate] = result.buckets[metric]
            means = [e.mean for e in series]
            figure.add_trace(go.Scatter(
                x=labels[: len(means)], y=means, error_y=error_bars(series), mode="lines+markers", name=name,
                legendgroup=name, showlegend=col == 1,
                line={"color": colour, "dash": "solid" if result.split == "test" else "dash"},
                customdata=[[p] for p in pairs[: len(means)]],
                hovertemplate=f"{name}<br>%{{x}}<br>{metric}: %{{y:.4g}}<br>pairs: %{{customdata[0]}}<extra></extra>",
            ), row=1, col=col)
    splits = sorted({r.split for r in with_buckets})
    note = "test snapshot, 95% CI over seeds" if splits == ["test"] else (
        "validation, one run (no CI)" if splits == ["validation"] else "test with 95% CI; dashed = validation only")
    figure.update_xaxes(title_text="target popularity bucket (training plays)", row=1, col=1)
    figure.update_yaxes(title_text=f"HitRate@{k}", row=1, col=1)
    figure.update_yaxes(title_text=f"NDCG@{k}", row=1, col=2)
    # Legend under the panels: the dashboard shows charts at half width, where a side legend crowds them.
    figure.update_layout(template="plotly_white", height=640, margin={"b": 210},
                         legend={"orientation": "h", "x": 0, "y": -0.42, "yanchor": "top"})
    return set_title(figure, f"{study.study_name}: next-song quality by target popularity ({note})",
                     extra=SUBPLOT_TITLE_PX)


# --------------------------------------------------------------------------- history and hypervolume


def _names(study: optuna.Study) -> list[str]:
    return list(study.metric_names or [f"objective {i}" for i in range(len(study.directions))])


def _maximise(study: optuna.Study) -> list[bool]:
    return [d == StudyDirection.MAXIMIZE for d in study.directions]


def best_so_far(trials: Sequence[FrozenTrial], index: int, maximise: bool) -> list[float | None]:
    """Best feasible value of objective ``index`` among trials up to each one (trial-number order)."""
    best: float | None = None
    out: list[float | None] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if is_feasible(trial):
            value = trial.values[index]
            if best is None or (value > best if maximise else value < best):
                best = value
        out.append(best)
    return out


def history_figure(study: optuna.Study) -> go.Figure | None:
    """Each objective by trial: feasible and infeasible trials, the feasible best-so-far, the baseline."""
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if not trials:
        return None
    names, maximise = _names(study), _maximise(study)
    titles = [f"{n} ({'higher' if up else 'lower'} is better)" for n, up in zip(names, maximise)]
    figure = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.06, subplot_titles=titles)
    feasible = [t for t in trials if is_feasible(t)]
    infeasible = [t for t in trials if not is_feasible(t)]
    for i, (name, up) in enumerate(zip(names, maximise)):
        row = i + 1
        figure.add_trace(go.Scatter(
            x=[t.number for t in feasible], y=[t.values[i] for t in feasible], mode="markers", name="feasible trial",
            legendgroup="feasible", showlegend=i == 0, marker={"color": "#1f77b4", "size": 7}), row=row, col=1)
        figure.add_trace(go.Scatter(
            x=[t.number for t in infeasible], y=[t.values[i] for t in infeasible], mode="markers",
            name="infeasible (HardNeg safeguard)", legendgroup="infeasible", showlegend=i == 0,
            marker={"color": "#bdbdbd", "size": 7, "symbol": "x"}), row=row, col=1)
        figure.add_trace(go.Scatter(
            x=[t.number for t in trials], y=best_so_far(trials, i, up), mode="lines",
            line={"shape": "hv", "color": "#d62728"}, name="best feasible so far", legendgroup="best",
            showlegend=i == 0), row=row, col=1)
        baseline = next((t for t in trials if t.user_attrs.get("baseline")), None)
        if baseline is not None:
            label = {"annotation_text": "baseline", "annotation_position": "top left"} if i == 0 else {}
            figure.add_hline(y=baseline.values[i], line_dash="dot", line_color="#000000", row=row, col=1, **label)
        figure.update_yaxes(title_text=name, row=row, col=1)
    figure.update_xaxes(title_text="trial", row=len(names), col=1)
    figure.update_layout(template="plotly_white", height=260 * len(names) + 120)
    return set_title(figure, f"{study.study_name}: optimisation history", extra=SUBPLOT_TITLE_PX)


def hypervolume_reference(study: optuna.Study, margin: float = 0.01) -> list[float] | None:
    """Per objective, the worst feasible value moved ``margin`` x the feasible range further (worse).

    So every feasible trial dominates the reference point. ``None`` without a feasible trial.
    """
    feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]
    if not feasible:
        return None
    values = np.array([t.values for t in feasible], dtype=np.float64)
    reference = []
    for j, up in enumerate(_maximise(study)):
        low, high = float(values[:, j].min()), float(values[:, j].max())
        span = high - low or abs(high) or 1.0
        reference.append(low - margin * span if up else high + margin * span)
    return reference


def hypervolume_figure(study: optuna.Study) -> go.Figure | None:
    """Hypervolume of the feasible trials so far (Optuna's computation); ``None`` below 2 objectives."""
    if len(study.directions) < 2:
        return None
    reference = hypervolume_reference(study)
    if reference is None:
        return None
    figure = optuna.visualization.plot_hypervolume_history(study, reference)
    point = ", ".join(f"{n}={v:.4g}" for n, v in zip(_names(study), reference))
    figure.update_layout(template="plotly_white")
    return set_title(figure, f"{study.study_name}: hypervolume of the feasible trials (reference point {point})")


# --------------------------------------------------------------------------- importances


def oriented_correlation(study: optuna.Study, param: str, index: int) -> float | None:
    """Spearman correlation between ``param`` and objective ``index``, signed so > 0 means "better".

    For a maximised objective that is the plain correlation, for a minimised one its negative. ``None``
    for categorical parameters, constant columns or fewer than 3 trials.
    """
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if param in t.params]
    if len(trials) < 3 or isinstance(trials[0].distributions.get(param), CategoricalDistribution):
        return None
    x = np.array([float(t.params[param]) for t in trials])
    y = np.array([t.values[index] for t in trials], dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    # Imported here, not at the top, so that loading the dashboards stays light; its one caller,
    # importance_figure, has loaded scipy.stats already through optuna's PED-ANOVA evaluator.
    from scipy.stats import spearmanr

    rho = float(spearmanr(x, y).statistic)
    if not math.isfinite(rho):
        return None
    return rho if study.directions[index] == StudyDirection.MAXIMIZE else -rho


def param_importances(study: optuna.Study, index: int) -> dict[str, float]:
    """PED-ANOVA importances of the parameters for reaching a **good** value of objective ``index``.

    Optuna's evaluator treats low target values as good, so a maximised objective is negated; without
    that the importances would explain how to reach the *worst* values. Over all completed trials.
    """
    sign = -1.0 if study.directions[index] == StudyDirection.MAXIMIZE else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "computes importances to achieve low target values": intended
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
            target=lambda t: sign * t.values[index])
    return dict(importances)


def importance_figure(study: optuna.Study) -> go.Figure | None:
    """Parameter importances per objective; bars green when raising the parameter helps, red when it hurts.

    The importance itself is unsigned; the colour and the hover's rho are the direction-aware Spearman
    correlation of :func:`oriented_correlation`. ``None`` with fewer than 3 completed trials.
    """
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 3:
        return None
    names = _names(study)
    figure = make_subplots(rows=1, cols=len(names), shared_yaxes=True,
                           subplot_titles=[f"{n} ({'higher' if up else 'lower'} is better)"
                                           for n, up in zip(names, _maximise(study))])
    for i in range(len(names)):
        importances = param_importances(study, i)
        params = sorted(importances)
        rhos = [oriented_correlation(study, p, i) for p in params]
        colours = ["#7f7f7f" if r is None else ("#2ca02c" if r > 0 else "#d62728") for r in rhos]
        figure.add_trace(go.Bar(
            y=params, x=[importances[p] for p in params], orientation="h", marker_color=colours, name=names[i],
            showlegend=False, customdata=[["n/a" if r is None else f"{r:+.2f}"] for r in rhos],
            text=["" if r is None else ("+" if r > 0 else "-") for r in rhos], textposition="outside",
            hovertemplate="%{y}: importance %{x:.3f}<br>"
                          "rho (oriented, >0 = raising it helps): %{customdata[0]}<extra></extra>",
        ), row=1, col=i + 1)
        figure.update_xaxes(title_text="importance (PED-ANOVA)", row=1, col=i + 1)
    figure.update_layout(template="plotly_white", height=420)
    return set_title(figure, f"{study.study_name}: parameter importances per objective "
                             "(green/+: raising the parameter improves the objective, red/-: it worsens it)",
                     extra=SUBPLOT_TITLE_PX)


# --------------------------------------------------------------------------- parallel coordinates


def parallel_figure(study: optuna.Study) -> go.Figure | None:
    """Parallel coordinates of parameters (log10 for log-scaled ones), objectives and feasibility.

    Lines are coloured by the first objective, yellow = better whatever its direction (the colour scale
    is reversed for a minimised objective). ``None`` without completed trials.
    """
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if not trials:
        return None
    names, maximise = _names(study), _maximise(study)
    dimensions: list[dict[str, Any]] = []
    params = list(dict.fromkeys(p for t in trials for p in t.params))  # search-space order
    for param in params:
        distribution = next(t.distributions[param] for t in trials if param in t.distributions)
        values = [t.params.get(param) for t in trials]
        if isinstance(distribution, CategoricalDistribution):
            choices = list(distribution.choices)
            dimensions.append({"label": param, "values": [choices.index(v) if v in choices else None for v in values],
                               "tickvals": list(range(len(choices))), "ticktext": [str(c) for c in choices]})
        elif isinstance(distribution, (FloatDistribution, IntDistribution)) and distribution.log:
            logs = [None if v is None else math.log10(v) for v in values]
            dimensions.append({"label": f"log10({param})", "values": logs})
        else:
            dimensions.append({"label": param, "values": values})
    for i, (name, up) in enumerate(zip(names, maximise)):
        dimensions.append({"label": f"{name} ({'↑' if up else '↓'})", "values": [t.values[i] for t in trials]})
    dimensions.append({"label": "feasible", "values": [int(is_feasible(t)) for t in trials],
                       "tickvals": [0, 1], "ticktext": ["no", "yes"], "range": [-0.1, 1.1]})
    figure = go.Figure(go.Parcoords(
        dimensions=dimensions,
        line={"color": [t.values[0] for t in trials], "colorscale": "Viridis", "reversescale": not maximise[0],
              "showscale": True, "colorbar": {"title": {"text": f"{names[0]}<br>(yellow = better)"}}},
    ))
    figure.update_layout(height=500, template="plotly_white")
    # The dimension labels stand above the axes, inside the top margin.
    return set_title(figure, f"{study.study_name}: parallel coordinates of completed trials", extra=40)


# --------------------------------------------------------------------------- helpers

#: Room for subplot titles between a figure's title and its panels, in px.
SUBPLOT_TITLE_PX = 30



def evaluation_k(study: optuna.Study) -> Any:
    """The study's K (cut-off of HitRate/NDCG/HardNeg), or ``"K"`` when unknown."""
    config = study.user_attrs.get("songhpo_config") or {}
    return (config.get("evaluation") or {}).get("k", "K")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
