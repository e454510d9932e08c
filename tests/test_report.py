"""The HTML report: figure data checked against independent computations, the snapshot path, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import warnings
from html import escape as html_escape
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState
from scipy.stats import spearmanr

from dashboards import figures as fig
from dashboards.pareto import BASELINE, FEASIBLE, FRONT, INFEASIBLE, pareto_3d_figure, pareto_figure
from dashboards.report import build_report
from dashboards.selection import BALANCED_RULE, select_configurations
from hpo.trials import feasible_pareto_front
from tests.conftest import SharedStudy, assert_one_line_error, run_cli, run_python, run_tiny_study

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# --------------------------------------------------------------------------- independent references


def brute_front(study: optuna.Study) -> set[int]:
    """Feasible non-dominated trials, by the definition (independent of hpo.study)."""
    signs = np.array([1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions])
    trials = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if max(t.constraints.values(), default=0) <= 0]
    points = {t.number: signs * np.array(t.values) for t in trials}
    return {n for n, p in points.items()
            if not any(np.all(q >= p) and np.any(q > p) for m, q in points.items() if m != n)}


def brute_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by ``points`` (maximisation) above ``reference``: exact cell decomposition."""
    if len(points) == 0:
        return 0.0
    axes = [np.unique(np.concatenate([[reference[j]], points[:, j]])) for j in range(points.shape[1])]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        upper = np.array([axes[j][i + 1] for j, i in enumerate(cell)])
        if np.any(np.all(points >= upper, axis=1)):
            total += float(np.prod([axes[j][i + 1] - axes[j][i] for j, i in enumerate(cell)]))
    return total


def add_trial(study: optuna.Study, values: list[float], *, feasible: bool = True, params: dict[str, float] | None = None,
              **attrs: Any) -> None:
    params = params or {"x": 0.5}
    study.add_trial(optuna.trial.create_trial(
        values=values, params=params, distributions={k: FloatDistribution(0.0, 1.0) for k in params},
        user_attrs={"feasible": feasible, **attrs}, constraints={"hardneg": -0.01 if feasible else 0.02}))


def _buckets(scale: float) -> dict[str, Any]:
    return {"edges": [1.0, 3.0, 10.0, 100.0],
            "by_target": {"pairs": [10, 20, 30], "hitrate": [0.1 * scale, 0.2 * scale, None],
                          "ndcg": [0.05 * scale, 0.1 * scale, None]},
            "by_query": {"pairs": [10, 20, 30], "hitrate": [0.1, 0.2, 0.3], "ndcg": [0.05, 0.1, 0.2]}}


@pytest.fixture
def crafted() -> optuna.Study:
    """Six trials whose choices are known: see the comments."""
    study = optuna.create_study(directions=["maximize"] * 3)
    study.set_metric_names(["ndcg", "ch_artist", "ch_genre"])
    rows = [  # ndcg, ch_artist, ch_genre, hardneg, feasible
        (0.05, 2.0, 10.0, 0.020, True),     # 0 baseline, dominated by 2
        (0.12, 3.0, 12.0, 0.030, False),    # 1 highest NDCG but infeasible: never chosen
        (0.10, 5.0, 40.0, 0.021, True),     # 2 best feasible NDCG
        (0.06, 60.0, 300.0, 0.015, True),   # 3 best normalised clustering (raw CH mean would pick 4)
        (0.08, 40.0, 350.0, 0.019, True),   # 4 closest to the utopia point
        (0.09, 30.0, 200.0, 0.018, True),   # 5 on the front
    ]
    for i, (ndcg, ch_a, ch_g, hardneg, feasible) in enumerate(rows):
        extra = {"baseline": True} if i == 0 else {}
        add_trial(study, [ndcg, ch_a, ch_g], feasible=feasible, params={"x": i / 10},
                  ndcg=ndcg, ch_artist=ch_a, ch_genre=ch_g, hardneg=hardneg, ndcg_in=ndcg * 0.9,
                  coherence_genre=None, buckets=_buckets(1.0 + i), **extra)
    return study


# --------------------------------------------------------------------------- Pareto charts


def test_pareto_charts_draw_exactly_the_feasible_front(tiny_study: SharedStudy) -> None:
    study = tiny_study.study
    front = feasible_pareto_front(study)
    expected = brute_front(study)
    assert {t.number for t in front} == expected
    completed = study.get_trials(states=(TrialState.COMPLETE,))
    infeasible = {t.number for t in completed if not t.user_attrs["feasible"]}
    assert infeasible, "the fixture study should have infeasible trials to grey"
    by_name = {t.name: t for t in pareto_figure(study, front).data}
    assert set(by_name[FRONT].customdata) == expected
    assert set(by_name[INFEASIBLE].customdata) == infeasible
    assert set(by_name[FEASIBLE].customdata) == {t.number for t in completed} - expected - infeasible
    assert list(by_name[BASELINE].customdata) == [0]
    values = {t.number: t.values for t in completed}
    for j in range(3):  # every pair panel of the scatter matrix shows the front's own values
        assert list(by_name[FRONT].dimensions[j]["values"]) == [values[n][j] for n in by_name[FRONT].customdata]
    three = {t.name: t for t in pareto_3d_figure(study, front).data}
    assert set(three[FRONT].customdata) == expected
    assert [(x, y, z) for x, y, z in zip(three[FRONT].x, three[FRONT].y, three[FRONT].z)] == [
        tuple(values[n]) for n in three[FRONT].customdata]
    assert set(three[INFEASIBLE].customdata) == infeasible
    assert "trial 0 (baseline)" in three[BASELINE].text[0] and "vector_size: 100" in three[BASELINE].text[0]


def test_two_objective_chart_and_no_3d(crafted: optuna.Study) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["ndcg", "hardneg"])
    add_trial(study, [0.1, 0.02], baseline=True)
    add_trial(study, [0.2, 0.03])
    add_trial(study, [0.3, 0.01], feasible=False)
    add_trial(study, [0.05, 0.05])  # dominated by trial 0
    front = feasible_pareto_front(study)
    by_name = {t.name: t for t in pareto_figure(study, front).data}
    assert list(by_name[FRONT].customdata) == [0, 1] and list(by_name[FRONT].y) == [0.02, 0.03]
    assert list(by_name[INFEASIBLE].customdata) == [2]
    assert pareto_3d_figure(study, front) is None
    assert "lower is better" in pareto_figure(study, front).layout.yaxis.title.text


# --------------------------------------------------------------------------- selection


def test_selection_rules(crafted: optuna.Study) -> None:
    chosen = {c.role: c.trial.number for c in select_configurations(crafted)}
    # Independent computation of the balanced rule over the feasible front {2, 3, 4, 5}.
    front = [crafted.trials[n] for n in (2, 3, 4, 5)]
    values = np.array([t.values for t in front])
    normalised = (values - values.min(axis=0)) / (values.max(axis=0) - values.min(axis=0))
    balanced = front[int(np.argmin(np.linalg.norm(normalised - 1.0, axis=1)))].number
    assert chosen == {"baseline": 0, "best_ndcg": 2, "best_clustering": 3, "balanced": balanced}
    assert balanced == 4
    rules = {c.role: c.rule for c in select_configurations(crafted)}
    assert rules["balanced"] == BALANCED_RULE and "ch_artist and ch_genre" in rules["best_clustering"]


def test_selection_follows_directions_and_falls_back_to_measured_clustering() -> None:
    # NDCG up, HardNeg down; CH metrics are not objectives, so best clustering uses the measured CH.
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["ndcg", "hardneg"])
    add_trial(study, [0.10, 0.010], ndcg=0.10, ch_artist=5.0, ch_genre=1.0, baseline=True)
    add_trial(study, [0.20, 0.050], ndcg=0.20, ch_artist=1.0, ch_genre=9.0)
    add_trial(study, [0.18, 0.015], ndcg=0.18, ch_artist=4.0, ch_genre=8.0)
    add_trial(study, [0.30, 0.001], ndcg=0.30, ch_artist=9.0, ch_genre=9.0, feasible=False)
    chosen = {c.role: c.trial.number for c in select_configurations(study)}
    # Front {0, 1, 2}; normalised (1 = best): 0 -> (0, 1), 1 -> (1, 0), 2 -> (0.8, 0.875).
    assert chosen == {"baseline": 0, "best_ndcg": 1, "best_clustering": 2, "balanced": 2}
    assert "ch_artist and ch_genre" in next(c.rule for c in select_configurations(study) if c.role == "best_clustering")


# --------------------------------------------------------------------------- side effects and buckets


def test_side_effects_are_changes_vs_the_baseline(tiny_study: SharedStudy) -> None:
    study = tiny_study.study
    report = build_report(study)
    table = report.side_effects
    assert [r.split for r in table.results] == ["validation"] * len(table.results)
    baseline = study.trials[0].user_attrs
    assert [r.metric for r in table.rows][:3] == ["ndcg", "ch_artist", "ch_genre"]
    for row in table.rows:
        for result, cell in zip(table.results, row.cells):
            attrs = result.config.trial.user_attrs
            assert cell.value.mean == attrs[row.metric]
            if result.config.role == "baseline":
                assert cell.delta is None
                continue
            assert cell.delta == pytest.approx(attrs[row.metric] - baseline[row.metric])
            if cell.verdict != "same":
                up = attrs[row.metric] > baseline[row.metric]
                assert cell.verdict == ("better" if up != (row.metric == "hardneg") else "worse")
    html = report.to_html()
    assert 'id="section-side-effects"' in html and "(lower is better)" in html


def test_side_effect_verdicts_and_unavailable_metrics(crafted: optuna.Study) -> None:
    report = build_report(crafted)
    table = report.side_effects
    roles = [r.config.role for r in table.results]
    hardneg = table.row("hardneg").cells
    # Best clustering (trial 3) has a lower HardNeg than the baseline: better; best NDCG (trial 2) higher: worse.
    assert hardneg[roles.index("best_clustering")].verdict == "better"
    assert hardneg[roles.index("best_ndcg")].verdict == "worse"
    assert hardneg[roles.index("best_ndcg")].relative == pytest.approx((0.021 - 0.020) / 0.020)
    # A metric nobody has (coherence_genre is None everywhere) is not a row; never shown as 0.
    assert "coherence_genre" not in [r.metric for r in table.rows]


def test_bucket_curves_on_validation(crafted: optuna.Study) -> None:
    report = build_report(crafted)
    figure = report.figures["buckets"]
    traces = [t for t in figure.data if t.xaxis == "x"]
    chosen = {c.label: c.trial for c in report.selection}
    assert len(traces) == len(chosen)
    for trace in traces:
        trial = next(t for label, t in chosen.items() if trace.name.startswith(label))
        assert list(trace.y) == trial.user_attrs["buckets"]["by_target"]["hitrate"]
        assert trace.error_y.array is None and trace.line.dash == "dash"  # validation: no CI
    assert list(traces[0].x) == ["0: [1, 3]", "1: (3, 10]", "2: (10, 100]"]
    ndcg = [t for t in figure.data if t.xaxis == "x2"]
    assert list(ndcg[0].y) == crafted.trials[0].user_attrs["buckets"]["by_target"]["ndcg"]


def _snapshot(study: optuna.Study, members: list[int]) -> dict[str, Any]:
    """A snapshot in the documented shape of storage.results.load_latest_snapshot."""
    out = []
    for n in members:
        t = study.trials[n]
        test = {m: {"mean": t.user_attrs[m] * 1.1, "low": t.user_attrs[m], "high": t.user_attrs[m] * 1.2, "n": 3}
                for m in ("ndcg", "ch_artist", "ch_genre", "hardneg")}
        hit = [0.1 + n / 100, 0.2 + n / 100, 0.3]
        out.append({
            "trial": n, "baseline": n == 0, "params": t.params, "validation": {m: t.user_attrs.get(m) for m in test},
            "test": test,
            "test_buckets": {"edges": [1.0, 3.0, 10.0, 100.0], "by_target": {
                "pairs": [11, 21, 31],
                "hitrate": {"mean": hit, "low": [h - 0.01 for h in hit], "high": [h + 0.02 for h in hit]},
                "ndcg": {"mean": [h / 2 for h in hit], "low": [h / 2 - 0.01 for h in hit],
                         "high": [h / 2 + 0.01 for h in hit]}},
                "by_query": {}},
        })
    return {"snapshot_id": 7, "study": study.study_name, "created": "2026-01-01T00:00:00", "objectives": study.metric_names,
            "constraint": {}, "seeds": 3, "complete": True, "members": out}


def test_snapshot_gives_test_means_with_intervals(crafted: optuna.Study) -> None:
    # Trial 2 (best NDCG) is left out of the snapshot: it stays on validation and is named in a note.
    snapshot = _snapshot(crafted, [0, 3, 4, 5])
    report = build_report(crafted, snapshot)
    splits = {r.config.role: r.split for r in report.results}
    assert splits == {"baseline": "test", "best_ndcg": "validation", "best_clustering": "test", "balanced": "test"}
    assert any("trial 2" in n for n in report.notes)
    members = {m["trial"]: m for m in snapshot["members"]}
    traces = {t.name: t for t in report.figures["buckets"].data if t.xaxis == "x"}
    for result in report.results:
        trace = traces[f"{result.config.label} (trial {result.config.trial.number}, {result.split})"]
        if result.split == "test":
            block = members[result.config.trial.number]["test_buckets"]["by_target"]["hitrate"]
            assert list(trace.y) == block["mean"]
            assert list(trace.error_y.array) == pytest.approx([h - m for h, m in zip(block["high"], block["mean"])])
            assert list(trace.error_y.arrayminus) == pytest.approx([m - lo for m, lo in zip(block["mean"], block["low"])])
            assert trace.line.dash == "solid"
        else:
            assert trace.error_y.array is None
    table = report.side_effects
    row = table.row("ndcg")
    roles = [r.config.role for r in table.results]
    base_test = members[0]["test"]["ndcg"]["mean"]
    balanced = row.cells[roles.index("balanced")]
    assert balanced.value == (members[4]["test"]["ndcg"]["mean"], members[4]["test"]["ndcg"]["low"],
                              members[4]["test"]["ndcg"]["high"])
    assert balanced.delta == pytest.approx(members[4]["test"]["ndcg"]["mean"] - base_test)
    # The validation-only column is compared with the baseline's validation value, never with test.
    assert row.cells[roles.index("best_ndcg")].delta == pytest.approx(0.10 - 0.05)
    html = report.to_html()
    assert f"{members[4]['test']['ndcg']['mean']:.4g} [{members[4]['test']['ndcg']['low']:.4g}, " in html
    assert "#7 created 2026-01-01T00:00:00, 3 seeds" in html


# --------------------------------------------------------------------------- history, hypervolume, importances


def test_history_and_hypervolume_match_independent_computations(tiny_study: SharedStudy) -> None:
    study = tiny_study.study
    report = build_report(study)
    trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    history = report.figures["history"]
    for i in range(3):
        best = [t for t in history.data if t.name == "best feasible so far"][i]
        running, expected = None, []
        for t in trials:
            if t.user_attrs["feasible"]:
                running = t.values[i] if running is None else max(running, t.values[i])
            expected.append(running)
        assert list(best.y) == expected
    reference = np.array(fig.hypervolume_reference(study))
    feasible = np.array([t.values for t in trials if t.user_attrs["feasible"]])
    assert np.all(feasible > reference)  # every feasible trial counts
    curve = report.figures["hypervolume"].data[0]
    assert list(curve.x) == [t.number for t in trials]
    for number, value in zip(curve.x, curve.y):
        points = np.array([t.values for t in trials if t.number <= number and t.user_attrs["feasible"]])
        assert value == pytest.approx(brute_hypervolume(points, reference), rel=1e-9)


def test_history_best_so_far_of_a_minimised_objective() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["ndcg", "hardneg"])
    rows = [(0.1, 0.05, True), (0.2, 0.01, False), (0.15, 0.03, True), (0.05, 0.04, True)]
    for i, (ndcg, hardneg, ok) in enumerate(rows):
        add_trial(study, [ndcg, hardneg], feasible=ok, baseline=i == 0)
    best = [t for t in fig.history_figure(study).data if t.name == "best feasible so far"]
    assert list(best[0].y) == [0.1, 0.1, 0.15, 0.15]
    assert list(best[1].y) == [0.05, 0.05, 0.03, 0.03]  # lower is better; infeasible 0.01 ignored
    # Worst feasible values (ndcg 0.05, hardneg 0.05) moved 1% of the feasible range further.
    assert fig.hypervolume_reference(study) == pytest.approx([0.05 - 0.01 * 0.1, 0.05 + 0.01 * 0.02])


def _importance_study(maximise: bool) -> optuna.Study:
    """Objective good only when x > 0.8 (at its good end); elsewhere it is flat apart from a small y term."""
    study = optuna.create_study(directions=["maximize" if maximise else "minimize", "maximize"])
    study.set_metric_names(["ndcg", "ch_artist"])
    rng = np.random.default_rng(0)
    for _ in range(120):
        x, y = float(rng.uniform()), float(rng.uniform())
        good = (x if x > 0.8 else 0.0) + 0.01 * y
        value = good if maximise else -good
        add_trial(study, [value, y], params={"x": x, "y": y})
    return study


@pytest.mark.parametrize("maximise", [True, False])
def test_importances_explain_the_good_end_of_the_objective(maximise: bool) -> None:
    study = _importance_study(maximise)
    importances = fig.param_importances(study, 0)
    assert importances["x"] > importances["y"]
    # Raising x improves the objective in both orientations; the value is scipy's Spearman rho, signed.
    xs = [t.params["x"] for t in study.trials]
    rho = spearmanr(xs, [t.values[0] for t in study.trials]).statistic
    assert fig.oriented_correlation(study, "x", 0) == pytest.approx(rho if maximise else -rho) and rho != 0
    assert fig.oriented_correlation(study, "x", 0) > 0
    assert fig.oriented_correlation(study, "y", 1) == pytest.approx(1.0)
    figure = fig.importance_figure(study)
    bars = figure.data[0]
    assert dict(zip(bars.y, bars.x)) == pytest.approx(importances)
    assert bars.marker.color[list(bars.y).index("x")] == "#2ca02c"
    if maximise:
        # Without negating the maximised target, PED-ANOVA explains the *worst* values, where y matters.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            naive = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=lambda t: t.values[0])
        assert naive["y"] > naive["x"]


def test_parallel_coordinates_values_and_orientation() -> None:
    study = optuna.create_study(directions=["minimize", "maximize"])
    study.set_metric_names(["hardneg", "ndcg"])
    for i, (a, v) in enumerate([(1e-3, 0.02), (1e-2, 0.01), (1e-1, 0.03)]):
        study.add_trial(optuna.trial.create_trial(
            values=[v, 0.1 * i], params={"alpha": a, "window": i + 1},
            distributions={"alpha": FloatDistribution(1e-4, 1e-1, log=True), "window": IntDistribution(1, 20)},
            user_attrs={"baseline": i == 0}, constraints={"hardneg": -1.0 if i != 1 else 1.0}))
    figure = fig.parallel_figure(study)
    dims = {d.label: list(d.values) for d in figure.data[0].dimensions}
    assert dims["log10(alpha)"] == pytest.approx([-3.0, -2.0, -1.0])
    assert dims["window"] == [1, 2, 3] and dims["hardneg (↓)"] == [0.02, 0.01, 0.03] and dims["feasible"] == [1, 0, 1]
    assert figure.data[0].line.reversescale is True  # minimised first objective: better is still yellow


# --------------------------------------------------------------------------- HTML and CLI


def test_report_html_is_one_self_contained_file(tiny_study: SharedStudy, tmp_path: Path) -> None:
    study, storage = tiny_study.study, tiny_study.storage
    out = tmp_path / "sub" / "report.html"
    result = run_cli("report", "tiny", "--storage", storage, "--out", str(out))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    selection = {c.role: c.trial.number for c in select_configurations(study)}
    assert payload["configurations"] == selection and payload["snapshot"] is None and payload["png"] is None
    html = out.read_text(encoding="utf-8")
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    for name in ("pareto", "pareto-3d", "buckets", "history", "hypervolume", "importances", "parallel"):
        assert f'id="figure-{name}"' in html
    # plotly.js is inlined exactly once and no script or stylesheet is loaded from anywhere else (the
    # browser test checks that no request leaves the file).
    assert len(re.findall(r"\* plotly\.js v\d", html)) == 1
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", html)
    assert "No test snapshot yet" in html and html_escape(BALANCED_RULE) in html
    # The Pareto figure embedded in the page holds exactly the feasible front.
    front = sorted(t.number for t in feasible_pareto_front(study))
    spec = _embedded_figure(html, "figure-pareto")
    front_trace = next(t for t in spec if t["name"] == FRONT)
    assert sorted(front_trace["customdata"]) == front
    # --out -: the page on stdout, the summary on stderr, no file named '-'.
    piped = run_cli("report", "tiny", "--storage", storage, "--out", "-", cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("<!DOCTYPE html>") and 'id="figure-pareto"' in piped.stdout
    assert json.loads(piped.stderr[piped.stderr.index("{"):])["report"] == "-" and not (tmp_path / "-").exists()
    # No temporary file is left beside the report.
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _embedded_figure(html: str, div_id: str) -> list[dict[str, Any]]:
    """The data array passed to ``Plotly.newPlot`` for ``div_id`` in the HTML."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', html)
    assert match, f"no Plotly.newPlot for {div_id}"
    data, _ = json.JSONDecoder().raw_decode(html[match.end():])
    return data


def test_report_cli_errors_are_one_line(tiny_study: SharedStudy, tmp_path: Path) -> None:
    storage = tiny_study.storage
    missing = assert_one_line_error(run_cli("report", "nope", "--storage", storage, "--out", str(tmp_path / "r.html")))
    assert missing.startswith("songhpo: error: study 'nope' not found")
    assert_one_line_error(run_cli("report", "tiny", "--storage", storage, "--out", str(tmp_path)), "is a directory")
    assert not (tmp_path / "r.html").exists()


def test_report_on_postgresql_never_prints_the_password(prepared_synth: Path, postgres_url: str, tmp_path: Path) -> None:
    # Trust authentication accepts any password, so a URL with one still connects.
    url = postgres_url.replace("postgres@", "postgres:s3cr3t-pw@")
    study, config = run_tiny_study(prepared_synth, url, trials=4)
    out = tmp_path / "pg.html"
    result = run_cli("report", "tiny", "--storage", url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "s3cr3t-pw" not in result.stdout + result.stderr + out.read_text(encoding="utf-8")
    spec = _embedded_figure(out.read_text(encoding="utf-8"), "figure-pareto")
    assert sorted(next(t for t in spec if t["name"] == FRONT)["customdata"]) == sorted(brute_front(study))
    assert not math.isnan(json.loads(result.stdout)["configurations"]["baseline"])


def test_report_uses_the_snapshot_of_the_real_evaluate_command(evaluated_study: SharedStudy, tmp_path: Path) -> None:
    from storage.results import load_latest_snapshot

    study, storage = evaluated_study.study, evaluated_study.storage
    snapshot = load_latest_snapshot(storage, "tiny")
    out = tmp_path / "e.html"
    result = run_cli("report", "tiny", "--storage", storage, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["snapshot"] == snapshot["snapshot_id"]
    members = {m["trial"]: m for m in snapshot["members"]}
    html = out.read_text(encoding="utf-8")
    buckets = [t for t in _embedded_figure(html, "figure-buckets") if t.get("xaxis", "x") == "x"]
    report = build_report(study, snapshot)
    assert len(buckets) == len(report.results)
    for trace, result_ in zip(buckets, report.results):
        member = members[result_.config.trial.number]  # every compared trial is in the snapshot
        expected = member["test_buckets"]["by_target"]["hitrate"]
        assert result_.split == "test" and trace["y"] == expected["mean"]
        assert trace["error_y"]["array"] == pytest.approx(
            [h - m for h, m in zip(expected["high"], expected["mean"])], nan_ok=True)
    baseline = members[0]["test"]["ndcg"]
    assert f"{baseline['mean']:.4g} [{baseline['low']:.4g}, {baseline['high']:.4g}]" in html


def test_png_without_an_exporter_is_a_warning(tiny_study: SharedStudy, tmp_path: Path) -> None:
    # kaleido made unimportable in the child process: the report is still written, PNGs are skipped.
    storage = tiny_study.storage
    code = ("import sys; sys.modules['kaleido'] = None; from hpo.cli.main import main; "
            f"sys.exit(main(['report', 'tiny', '--storage', {storage!r}, '--out', {str(tmp_path / 'r.html')!r}, "
            f"'--png', {str(tmp_path / 'png')!r}]))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["png"] is None and (tmp_path / "r.html").is_file()
    warnings_ = [line for line in result.stderr.splitlines() if "--png" in line]
    assert len(warnings_) == 1 and "kaleido is not installed" in warnings_[0] and "WARNING" in warnings_[0]
    assert not (tmp_path / "png").exists()


def test_report_of_an_empty_and_of_a_single_objective_study() -> None:
    empty = optuna.create_study(directions=["maximize"] * 3)
    empty.set_metric_names(["ndcg", "ch_artist", "ch_genre"])
    report = build_report(empty)
    assert all(f is None for f in report.figures.values()) and report.selection == []
    html = report.to_html()
    assert "No completed trial yet." in html and "The baseline trial (gensim defaults) is not complete" in html
    assert "plotly.js v" not in html  # no figure, no library
    single = optuna.create_study(directions=["maximize"])
    single.set_metric_names(["ndcg"])
    for i in range(5):
        add_trial(single, [0.1 * i], feasible=i != 4, params={"x": i / 5}, baseline=i == 0, ndcg=0.1 * i,
                  ch_artist=float(i % 3), ch_genre=1.0)
    report = build_report(single)
    assert {c.role: c.trial.number for c in report.selection} == {"baseline": 0, "best_ndcg": 3, "best_clustering": 2,
                                                                   "balanced": 3}
    assert report.figures["pareto-3d"] is None and report.figures["hypervolume"] is None
    front = next(t for t in report.figures["pareto"].data if t.name == FRONT)
    assert list(front.customdata) == [3] and list(front.x) == [3]  # values by trial number
    html = report.to_html()
    assert "Hypervolume needs at least two objectives." in html
