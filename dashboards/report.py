"""The self-contained HTML report of a study (``songhpo report``).

:func:`build_report` gathers everything from the Optuna study and, when one exists, the latest test
snapshot of :mod:`storage.results` (passed in, so the report is testable without a database of
results): the feasible Pareto front (2-D pairs and 3-D), popularity-bucket curves and the side-effects
table of the compared configurations (:mod:`dashboards.selection`, chosen on validation), the
optimisation history, the hypervolume, parameter importances per objective and parallel coordinates.
:meth:`Report.to_html` renders one HTML file with plotly.js inlined once (nothing is loaded from the
network); :meth:`Report.write_pngs` exports each figure with kaleido when a Chromium is available.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
import plotly.io as pio
from optuna.study import StudyDirection
from optuna.trial import TrialState

from dashboards import figures as fig
from dashboards.pareto import pareto_3d_figure, pareto_figure
from dashboards.selection import SelectedConfiguration, is_feasible, select_configurations
from hpo._atomic import atomic_write_text
from hpo.trials import SAFEGUARD_ATTR, baseline_trial, feasible_pareto_front, infeasibility_warning, safeguard_rule

_log = logging.getLogger(__name__)

#: Figure ids in report order, with their section titles.
SECTIONS: dict[str, str] = {
    "pareto": "Feasible Pareto front (2-D pairs)",
    "pareto-3d": "Feasible Pareto front (3-D)",
    "buckets": "Popularity buckets",
    "history": "Optimisation history",
    "hypervolume": "Hypervolume",
    "importances": "Parameter importances",
    "parallel": "Parallel coordinates",
}
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


class PngExportUnavailable(RuntimeError):
    """No static image exporter (kaleido and a Chrome/Chromium) is available."""


def latest_snapshot(storage_url: str, study_name: str) -> dict[str, Any] | None:
    """The study's latest test snapshot from :func:`storage.results.load_latest_snapshot`, or ``None``.

    ``None`` as well when the results module is not installed (older checkouts).
    """
    try:
        from storage.results import load_latest_snapshot
    except ImportError:
        return None
    return load_latest_snapshot(storage_url, study_name)


@dataclass
class Report:
    """Everything the report shows; figures are ``None`` when there is not enough data for them.

    Attributes
    ----------
    study : optuna.Study
    figures : dict[str, go.Figure | None]
        Keyed by :data:`SECTIONS` ids, in report order.
    selection : list[SelectedConfiguration]
        Baseline, best NDCG, best clustering, balanced compromise (chosen on validation).
    results : list[figures.ConfigurationResult]
        The same configurations with the values shown (test when in the snapshot, else validation).
    side_effects : figures.SideEffects
    snapshot : dict or None
    notes : list[str]
        Warnings shown at the top (safeguard dropped or weak, no snapshot, incomplete snapshot, ...).
    """

    study: optuna.Study
    figures: dict[str, go.Figure | None]
    selection: list[SelectedConfiguration]
    results: list[fig.ConfigurationResult]
    side_effects: fig.SideEffects
    snapshot: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    def to_html(self) -> str:
        """One self-contained HTML document (plotly.js inlined once)."""
        return _render(self)

    def write_html(self, path: str | Path) -> Path:
        """Write :meth:`to_html` to ``path`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        atomic_write_text(path, self.to_html())
        return path

    def write_pngs(self, directory: str | Path) -> list[Path]:
        """Write every figure (and the side-effects table) as ``<id>.png`` in ``directory``.

        Raises :class:`PngExportUnavailable` when kaleido or its Chromium is missing; then nothing is
        written. Files appear only once all were exported.
        """
        items = [(name, figure) for name, figure in self.figures.items() if figure is not None]
        if self.side_effects.rows:
            items.append(("side-effects", fig.side_effects_figure(self.study, self.side_effects)))
        return export_pngs(items, directory)


def export_pngs(items: list[tuple[str, go.Figure]], directory: str | Path) -> list[Path]:
    """Write each ``(name, figure)`` as ``<name>.png`` (1200 px wide) in ``directory`` with kaleido.

    Raises :class:`PngExportUnavailable` when kaleido or its Chromium is missing; then nothing is
    written. Files appear only once all were exported.
    """
    directory = Path(directory)
    if importlib.util.find_spec("kaleido") is None:  # plotly drives it; we only check it is there
        raise PngExportUnavailable("kaleido is not installed (pip install kaleido)")
    for noisy in ("kaleido", "choreographer", "logistro"):  # they log every tab at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".png-", dir=directory))
    failed = True
    try:
        paths = [staging / f"{name}.png" for name, _ in items]
        try:
            pio.write_images([f for _, f in items], paths, width=1200, height=[_height(f) for _, f in items])
        except Exception as exc:  # noqa: BLE001 - kaleido reports a missing browser in several ways
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PngExportUnavailable(f"static export failed ({type(exc).__name__}: {reason[:200]})") from exc
        written = []
        for path in paths:
            target = directory / path.name
            os.replace(path, target)
            written.append(target)
        failed = False
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if failed and created:
            shutil.rmtree(directory, ignore_errors=True)


def _height(figure: go.Figure) -> int:
    return int(figure.layout.height or 600)


def build_report(study: optuna.Study, snapshot: Mapping[str, Any] | None = None) -> Report:
    """Build the report of ``study``; ``snapshot`` is the latest test snapshot (see :func:`latest_snapshot`).

    Configurations are always chosen on validation; with a snapshot, the bucket curves and the
    side-effects table show test means with 95% intervals for those in it.
    """
    snapshot = dict(snapshot) if snapshot else None
    front = feasible_pareto_front(study)
    selection = select_configurations(study)
    results = fig.configuration_results(selection, snapshot)
    effects = fig.side_effects(study, results)
    figures: dict[str, go.Figure | None] = {
        "pareto": pareto_figure(study, front) if _completed(study) else None,
        "pareto-3d": pareto_3d_figure(study, front) if _completed(study) else None,
        "buckets": fig.bucket_figure(study, results),
        "history": fig.history_figure(study),
        "hypervolume": fig.hypervolume_figure(study),
        "importances": fig.importance_figure(study),
        "parallel": fig.parallel_figure(study),
    }
    return Report(study, figures, selection, results, effects, snapshot, _notes(study, snapshot, selection))


def _completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _notes(
    study: optuna.Study, snapshot: Mapping[str, Any] | None, selection: list[SelectedConfiguration]
) -> list[str]:
    notes = []
    safeguard = study.user_attrs.get(SAFEGUARD_ATTR) or {}
    for warning in (safeguard.get("warning"), infeasibility_warning(study)):
        if warning:
            notes.append(f"HardNeg safeguard: {warning}")
    if snapshot is None:
        notes.append("No test snapshot yet: bucket curves and side effects show validation values of one run "
                     "(no confidence intervals). Run 'songhpo study evaluate' for the test evaluation.")
    else:
        if not snapshot.get("complete", True):
            notes.append(f"Test snapshot {snapshot.get('snapshot_id')} is incomplete: some members were not evaluated.")
        present = {int(m["trial"]) for m in snapshot.get("members", [])}
        missing = sorted({c.trial.number for c in selection} - present)
        if missing:
            notes.append("Not in the test snapshot (shown on validation, dashed): trial "
                         + ", ".join(str(n) for n in missing) + ".")
    if not any(c.role == "baseline" for c in selection):
        notes.append("The baseline trial (gensim defaults) is not complete: no change vs baseline can be shown.")
    return notes


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px auto; max-width: 1400px;
       color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.note { background: #fff5d6; border-left: 4px solid #e0a800; padding: 6px 10px; margin: 6px 0; }
.dir, .delta { color: #555; font-size: 0.9em; }
.missing { color: #777; font-style: italic; }
.figure { margin: 8px 0 24px 0; }
"""


def _render(report: Report) -> str:
    study = report.study
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>songhpo report: {html.escape(study.study_name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>songhpo report: {html.escape(study.study_name)}</h1>",
        *(f'<div class="note">{html.escape(n)}</div>' for n in report.notes),
        _summary_html(report),
        "<h2>Compared configurations</h2>",
        _selection_html(report),
    ]
    plotly_included = False
    for name in SECTIONS:
        if name == "history":
            # The side effects come right after the front and the bucket curves, as in the paper.
            parts.append(_side_effects_section(report))
        figure = report.figures.get(name)
        parts.append(f'<h2 id="section-{name}">{html.escape(SECTIONS[name])}</h2>')
        if figure is None:
            parts.append(f'<p class="missing">{html.escape(_why_missing(report, name))}</p>')
            continue
        parts.append('<div class="figure">' + pio.to_html(
            figure, include_plotlyjs=not plotly_included, full_html=False, div_id=f"figure-{name}",
            config=_PLOTLY_CONFIG, default_height=f"{_height(figure)}px") + "</div>")
        plotly_included = True
    parts.append("</body></html>")
    return "\n".join(parts)


def _side_effects_section(report: Report) -> str:
    table = (fig.side_effects_html(report.side_effects) if report.side_effects.rows
             else '<p class="missing">No completed configuration to compare.</p>')
    return ('<h2 id="section-side-effects">Side effects: every metric vs the baseline</h2>\n'
            "<p>Each configuration's value (test: mean [95% CI]; validation: one run) and its change vs the baseline "
            "on the same split; green = better, red = worse in the metric's direction. Objectives in bold. "
            "Tuning one objective typically costs the metrics it does not optimise.</p>\n" + table)


def _why_missing(report: Report, name: str) -> str:
    n_objectives = len(report.study.directions)
    if name == "pareto-3d" and n_objectives < 3:
        return f"The study has {n_objectives} objective(s): the 2-D chart above shows the whole front."
    if name == "hypervolume" and n_objectives < 2:
        return "Hypervolume needs at least two objectives."
    if name == "buckets":
        return "No popularity-bucket metrics recorded for the compared configurations."
    if name == "importances":
        return "Parameter importances need at least 3 completed trials."
    return "Not enough completed (feasible) trials yet."


def _summary_html(report: Report) -> str:
    study = report.study
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    infeasible = sum(not is_feasible(t) for t in complete)
    safeguard = study.user_attrs.get(SAFEGUARD_ATTR) or {}
    names = study.metric_names or []
    objectives = ", ".join(f"{n} ({'max' if d == StudyDirection.MAXIMIZE else 'min'})"
                           for n, d in zip(names, study.directions))
    baseline = baseline_trial(study)
    base_hardneg = None if baseline is None else baseline.user_attrs.get("hardneg")
    guard = safeguard_rule(safeguard, fig.evaluation_k(study), base_hardneg)
    rows = [
        ("objectives", objectives),
        ("trials", ", ".join(f"{k} {v}" for k, v in counts.items() if v)),
        ("infeasible (HardNeg safeguard)", str(infeasible)),
        ("feasible Pareto front", f"{len(feasible_pareto_front(study))} trials (validation)"),
        ("HardNeg safeguard", guard),
        ("dataset fingerprint", str(study.user_attrs.get("dataset_fingerprint", "-"))),
    ]
    snapshot = report.snapshot
    if snapshot:
        rows.append(("test snapshot", f"#{snapshot.get('snapshot_id')} created {snapshot.get('created')}, "
                                      f"{snapshot.get('seeds')} seeds, {len(snapshot.get('members', []))} members"
                                      + ("" if snapshot.get("complete", True) else " (incomplete)")))
    else:
        rows.append(("test snapshot", "none"))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _selection_html(report: Report) -> str:
    if not report.selection:
        return '<p class="missing">No completed trial yet.</p>'
    front = {t.number for t in feasible_pareto_front(report.study)}
    splits = {r.config.trial.number: r.split for r in report.results}
    names = report.study.metric_names or []
    lines = ["<table class=\"selection\"><thead><tr><th>configuration</th><th>trial</th><th>on front</th>"
             + "".join(f"<th>{html.escape(n)} (validation)</th>" for n in names)
             + "<th>parameters</th><th>shown on</th><th>rule</th></tr></thead><tbody>"]
    for config in report.selection:
        trial = config.trial
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        values = "".join(f"<td>{v:.4g}</td>" for v in trial.values)
        lines.append(
            f'<tr data-role="{config.role}"><td>{html.escape(config.label)}</td><td>{trial.number}</td>'
            f"<td>{'yes' if trial.number in front else 'no'}</td>{values}<td>{html.escape(params)}</td>"
            f"<td>{splits.get(trial.number, '-')}</td><td>{html.escape(config.rule)}</td></tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)
