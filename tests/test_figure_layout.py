"""Nothing of a chart is clipped: titles wrapped for a dashboard card (about 600 px), the 3-D axis titles inside
the scene, the side-effects header whole, and infeasible trials drawn in 3-D with a glyph every font has.

The layouts are checked on the figure objects (margins from the number of title lines), and then rendered by
headless Chromium with plotly.py's plotly.js (the one kaleido uses for the PNGs) at a dashboard card's width
and at the PNG width: every title must lie inside its figure and overlap no other text, every table cell's
text must fit its cell.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
import plotly.io as pio
import plotly.offline
import pytest
from optuna.distributions import FloatDistribution

from dashboards import figures as fig
from dashboards._layout import SYMBOLS_3D, TITLE_CHARS, TITLE_LINE_PX, TITLE_PAD_PX, title_margin, wrap
from dashboards.pareto import AXIS_TITLE_CHARS, INFEASIBLE, pareto_3d_figure
from dashboards.report import build_report
from hpo.trials import feasible_pareto_front
from tests.test_browser import Browser, browser, chromium  # noqa: F401 - the Chromium fixtures

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

#: A study name as long as real ones get: every title holding it must wrap.
NAME = "yes_big-nsga2-safeguard-seed-1-population-40"
METRICS = ("ndcg", "ndcg_in", "ndcg_out", "hitrate", "hardneg", "coherence_genre", "coherence_artist", "ch_genre",
           "ch_artist")


def _buckets(scale: float) -> dict[str, Any]:
    return {"edges": [1.0, 3.0, 10.0, 100.0, 1000.0],
            "by_target": {"pairs": [10, 20, 30, 40], "hitrate": [0.1 * scale, 0.2 * scale, 0.25, 0.3],
                          "ndcg": [0.05 * scale, 0.1 * scale, 0.12, 0.15]},
            "by_query": {"pairs": [10, 20, 30, 40], "hitrate": [0.1, 0.2, 0.3, 0.3], "ndcg": [0.05, 0.1, 0.2, 0.2]}}


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    """Three objectives; four distinct compared configurations; infeasible trials."""
    study = optuna.create_study(study_name=NAME, directions=["maximize"] * 3)
    study.set_metric_names(["ndcg", "ch_artist", "ch_genre"])
    rows = [  # ndcg, ch_artist, ch_genre, hardneg, feasible
        (0.05, 2.0, 10.0, 0.020, True), (0.12, 3.0, 12.0, 0.030, False), (0.10, 5.0, 40.0, 0.021, True),
        (0.06, 60.0, 300.0, 0.015, True), (0.08, 40.0, 350.0, 0.019, True), (0.09, 30.0, 200.0, 0.018, True),
        (0.02, 1.0, 5.0, 0.040, False),
    ]
    for i, (ndcg, ch_a, ch_g, hardneg, feasible) in enumerate(rows):
        attrs = {"feasible": feasible, "ndcg": ndcg, "ch_artist": ch_a, "ch_genre": ch_g, "hardneg": hardneg,
                 "ndcg_in": ndcg * 0.9, "ndcg_out": ndcg * 1.1, "hitrate": ndcg * 2, "coherence_genre": 0.5,
                 "coherence_artist": 0.25, "buckets": _buckets(1.0 + i), **({"baseline": True} if i == 0 else {})}
        study.add_trial(optuna.trial.create_trial(
            values=[ndcg, ch_a, ch_g], params={"x": i / 10}, distributions={"x": FloatDistribution(0.0, 1.0)},
            user_attrs=attrs, constraints={"hardneg": -0.01 if feasible else 0.02}))
    return study


def _snapshot(study: optuna.Study) -> dict[str, Any]:
    """A test snapshot of every trial, with intervals (the longest cells the side-effects table gets)."""
    members = []
    for trial in study.trials:
        test = {m: {"mean": v * 1.0123456, "low": v * 0.9012345, "high": v * 1.1234567, "n": 3}
                for m in METRICS if isinstance(v := trial.user_attrs.get(m), float)}
        target = trial.user_attrs["buckets"]["by_target"]
        buckets = {"edges": trial.user_attrs["buckets"]["edges"], "by_target": {"pairs": target["pairs"], **{
            m: {"mean": target[m], "low": [v * 0.9 for v in target[m]], "high": [v * 1.1 for v in target[m]]}
            for m in ("hitrate", "ndcg")}}}
        members.append({"trial": trial.number, "baseline": trial.number == 0, "test": test, "test_buckets": buckets})
    return {"snapshot_id": 1, "created": "2026-01-01T00:00:00", "seeds": 3, "complete": True, "members": members}


@pytest.fixture(scope="module")
def figures(study: optuna.Study) -> dict[str, Any]:
    report = build_report(study, _snapshot(study))
    assert len(report.results) == 4, [r.config.label for r in report.results]
    found = {name: figure for name, figure in report.figures.items() if figure is not None}
    found["side-effects"] = fig.side_effects_figure(study, report.side_effects)
    assert set(found) == {"pareto", "pareto-3d", "buckets", "history", "hypervolume", "importances", "parallel",
                          "side-effects"}
    return found


def test_wrap_keeps_breaks_and_cuts_long_words() -> None:
    assert wrap("a b c", 10) == "a b c"
    assert wrap("alpha beta gamma delta", 11) == "alpha beta<br>gamma delta"
    assert wrap("one<br>two three", 5) == "one<br>two<br>three"
    assert wrap("x" * 12, 5) == "xxxxx<br>xxxxx<br>xx"


def test_every_title_is_wrapped_for_a_dashboard_card(figures: dict[str, Any]) -> None:
    for name, figure in figures.items():
        title = figure.layout.title
        lines = title.text.split("<br>")
        assert len(lines) >= 2 and all(len(line) <= TITLE_CHARS for line in lines), (name, lines)
        assert NAME in "".join(lines) or NAME in " ".join(lines), name  # nothing lost in the wrapping
        # Hung from the top of the figure, over a margin that holds every line and what sits under the title.
        assert (title.yref, title.y, title.yanchor) == ("container", 1.0, "top"), name
        subplot_titles = [a for a in figure.layout.annotations if a.yref == "paper" and a.text]
        extra = fig.SUBPLOT_TITLE_PX if subplot_titles else 40 if name == "parallel" else 0
        needed = title.pad.t + len(lines) * TITLE_LINE_PX + TITLE_PAD_PX + extra
        assert figure.layout.margin.t >= needed == title_margin(len(lines), extra), name


def test_the_3d_front_draws_every_group_with_a_glyph_every_font_has(study: optuna.Study) -> None:
    figure = pareto_3d_figure(study, feasible_pareto_front(study))
    symbols = {trace.name: trace.marker.symbol for trace in figure.data}
    # Plotly's 3-D "x" is the emoji U+274C: an empty box without an emoji font.
    assert set(symbols.values()) <= SYMBOLS_3D and "x" not in symbols.values()
    assert symbols[INFEASIBLE] == "cross"
    assert [len(t.customdata) for t in figure.data if t.name == INFEASIBLE] == [2]
    scene = figure.layout.scene
    for axis in (scene.xaxis, scene.yaxis, scene.zaxis):
        lines = axis.title.text.split("<br>")
        assert len(lines) >= 2 and all(len(line) <= AXIS_TITLE_CHARS for line in lines), lines
        assert lines[-1] == "(higher is better)"
    eye = scene.camera.eye
    assert math.dist((eye.x, eye.y, eye.z), (0, 0, 0)) > math.dist((1.25, 1.25, 1.25), (0, 0, 0)) - 0.1
    assert figure.layout.legend.orientation == "h"  # under the scene, which keeps the whole width


def test_the_side_effects_header_is_wrapped_and_its_row_holds_it(figures: dict[str, Any]) -> None:
    table = figures["side-effects"].data[0]
    header = list(table.header.values)
    assert len(header) == 5
    lines = [cell.split("<br>") for cell in header]
    assert all(len(line) <= fig.HEADER_CHARS for cell in lines for line in cell), lines
    assert table.header.height >= fig.HEADER_LINE_PX * max(map(len, lines))
    # Value, interval and change on their own lines (one line would not fit a column of a card).
    assert all(len(line) <= fig.HEADER_CHARS + 4 for column in table.cells.values[1:] for cell in column
               for line in cell.split("<br>"))


# --------------------------------------------------------------------------- rendered by Chromium

#: Widths the charts are seen at: a card of the dashboard, and the report's PNG export.
WIDTHS = (600, 1200)

_CHECK = """
(() => {
  const box = e => e.getBoundingClientRect();
  const overlap = (a, b) => a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1;
  const problems = [];
  for (const div of document.querySelectorAll('.js-plotly-plot')) {
    const name = div.id;
    const svg = box(div.querySelector('.main-svg'));
    const title = div.querySelector('.gtitle');
    if (!title) { problems.push(name + ': no title'); continue; }
    const t = box(title);
    if (t.width === 0) problems.push(name + ': empty title');
    if (t.left < svg.left - 1 || t.right > svg.right + 1 || t.top < svg.top - 1)
      problems.push(name + ': title outside the figure ' + JSON.stringify([t.left, t.top, t.right, svg.right]));
    const others = [...div.querySelectorAll('text')].filter(e => !title.contains(e) && e.textContent.trim()
                                                             && box(e).width > 0);
    const areas = [...div.querySelectorAll('.bg, .cell-rect')].filter(e => box(e).width > 0);
    for (const e of [...others, ...areas]) {
      if (overlap(t, box(e))) problems.push(name + ': title overlaps ' + (e.textContent || e.getAttribute('class')));
    }
    for (const cell of div.querySelectorAll('.column-cell')) {
      const rect = box(cell.querySelector('.cell-rect'));
      for (const text of cell.querySelectorAll('text')) {
        const b = box(text);
        if (b.width > 0 && (b.right > rect.right + 1 || b.bottom > rect.bottom + 1))
          problems.push(name + ': table text cut: ' + text.textContent);
      }
    }
  }
  return problems;
})()
"""


def test_rendered_charts_clip_no_title_and_no_table_text(browser: Browser, figures: dict[str, Any],  # noqa: F811
                                                         tmp_path: Path) -> None:
    (tmp_path / "plotly.min.js").write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
    divs = []
    for width in WIDTHS:
        for name, figure in figures.items():
            divs.append(pio.to_html(figure, include_plotlyjs=False, full_html=False, div_id=f"{name}@{width}",
                                    default_width=f"{width}px", default_height=f"{figure.layout.height or 450}px",
                                    config={"responsive": False}))
    page = tmp_path / "figures.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><script src="plotly.min.js"></script></head>'
                    '<body style="margin:0">' + "\n".join(divs) + "</body></html>", encoding="utf-8")
    session = browser.open(page.as_uri())
    count = len(divs)
    browser.wait(session, f"document.querySelectorAll('.js-plotly-plot .main-svg .gtitle').length === {count}")
    browser.settle(session)
    problems = browser.evaluate(session, _CHECK)
    assert problems == [], json.dumps(problems, indent=1)
    assert browser.problems(session) == []
