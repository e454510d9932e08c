"""The results page of an experiment (``songhpo experiment report``): tables, figures, claim verdicts.

Input is the ``results.json`` document of :func:`hpo.experiment.run_experiment`; nothing here trains or
queries a database. Statistics:

- every test value is the mean over the seeds with a two-sided 95% Student-t interval;
- a change vs the baseline is the difference of means with a 95% Welch interval (configuration seeds
  and baseline seeds are independent re-trainings), and is *significant* when that interval excludes 0;
- a configuration whose test runs are the baseline's own (a mode that chose the baseline: same parameters,
  same seeds) differs from it by exactly 0, interval [0, 0]; claims leave such a mode out, and a claim left
  with nothing to compare is *not testable* (the budget was too small), never "not supported";
- a popularity trend is the Spearman correlation between decile index and mean NDCG over the deciles
  whose songs all have at least gensim's ``min_count`` training plays (rarer songs have no vector).

Each verdict's rule is printed on the page next to it (see :func:`claim_verdicts`).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from dashboards.figures import error_bars
from hpo._atomic import atomic_write_text
from hpo.results import confidence_interval

__all__ = [
    "CORE_METRICS",
    "Difference",
    "Verdict",
    "difference_interval",
    "mean_interval",
    "claim_verdicts",
    "compare",
    "render_markdown",
    "same_runs",
    "write_results_page",
]

LEVEL = 0.95
#: Metrics counted when asking whether a configuration hurt something (sub-variants in/out excluded).
CORE_METRICS = ("ndcg", "hitrate", "ch_artist", "ch_genre", "coherence_artist", "coherence_genre", "hardneg")
#: Every metric of the side-effects table, in display order.
TABLE_METRICS = ("ndcg", "ndcg_in", "ndcg_out", "hitrate", "hitrate_in", "hitrate_out", "ch_artist", "ch_genre",
                 "coherence_artist", "coherence_genre", "hardneg", "continuation_rprecision", "continuation_ndcg")
DOWNSTREAM = ("continuation_rprecision", "continuation_ndcg")
_MINIMISED = {"hardneg"}
#: Modes a scale study may repeat.
SCALE_BASES = ("nsga2", "nsga2-free")
#: Main comparison columns: the mode's first chosen configuration.
MAIN_LABELS = ("baseline", "ndcg", "clustering", "random", "nsga2", "nsga2 best-ndcg", "nsga2-free")
#: The multi-objective configurations the claims are judged on: the balanced compromises of random search and
#: of NSGA-II with and without the safeguard (the claims are about multi-objective optimisation, not a sampler).
MULTI_LABELS = ("random", "nsga2", "nsga2-free")
_COLOURS = {"baseline": "#636363", "ndcg": "#d62728", "clustering": "#9467bd", "random": "#ff7f0e",
            "nsga2": "#1f77b4", "nsga2 best-ndcg": "#17becf", "nsga2-free": "#2ca02c"}


# -- statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval (``low``/``high`` ``None`` with fewer than two values)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its 95% Welch interval; ``significant`` when it excludes 0."""

    delta: float | None
    low: float | None
    high: float | None
    relative: float | None

    @property
    def significant(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_interval(values: Sequence[Any], level: float = LEVEL) -> Interval:
    """Mean and Student-t interval of the finite values (:func:`hpo.results.confidence_interval`)."""
    ci = confidence_interval(values, level)
    return Interval(ci["mean"], ci["low"], ci["high"], ci["n"])


def difference_interval(a: Sequence[Any], b: Sequence[Any], level: float = LEVEL) -> Difference:
    """Welch interval of ``mean(a) - mean(b)`` (unequal variances, Welch-Satterthwaite degrees of freedom).

    With no spread in either sample the interval is the point difference; with fewer than two values
    on a side the bounds are ``None``.
    """
    xs, ys = _finite(a), _finite(b)
    if not xs or not ys:
        return Difference(None, None, None, None)
    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    delta = mx - my
    relative = delta / abs(my) if my != 0 else None
    if len(xs) < 2 or len(ys) < 2:
        return Difference(delta, None, None, relative)
    if min(xs) == max(xs) and min(ys) == max(ys):
        # By hand: scipy's variance of a constant sample can be rounding noise instead of 0 (then a
        # spurious ~1e-17 interval), and with a true 0 its interval is NaN.
        return Difference(delta, delta, delta, relative)
    with warnings.catch_warnings():
        # Seeds that agree to the last bits make scipy warn about precision loss in that sample's
        # variance; that variance is ~1e-32 either way, negligible in the interval, so the warning is noise.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        ci = stats.ttest_ind(xs, ys, equal_var=False).confidence_interval(level)
    return Difference(delta, float(ci.low), float(ci.high), relative)


def same_runs(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two configurations' test runs are the same trainings: the same Word2Vec parameters, training
    fraction and seeds (say, a mode that chose its study's baseline, compared with the baseline). Their
    difference is exactly 0, not a Welch interval around it."""
    runs_a, runs_b = a.get("test_runs") or [], b.get("test_runs") or []
    return (bool(runs_a) and a.get("params") == b.get("params") and a.get("fraction") == b.get("fraction")
            and [r.get("seed") for r in runs_a] == [r.get("seed") for r in runs_b])


def compare(a: Mapping[str, Any], b: Mapping[str, Any], metric: str, level: float = LEVEL) -> Difference:
    """``metric`` of configuration ``a`` minus that of ``b`` over their test runs: the Welch interval of
    :func:`difference_interval`, or exactly ``[0, 0]`` when both are the same runs (:func:`same_runs`)."""
    if same_runs(a, b):
        values = _finite(_seed_values(b, metric))
        if not values:
            return Difference(None, None, None, None)
        return Difference(0.0, 0.0, 0.0, 0.0 if math.fsum(values) != 0 else None)
    return difference_interval(_seed_values(a, metric), _seed_values(b, metric), level)


def _better(metric: str, diff: Difference) -> bool:
    return diff.significant and (diff.delta < 0 if metric in _MINIMISED else diff.delta > 0)  # type: ignore[operator]


def _worse(metric: str, diff: Difference) -> bool:
    return diff.significant and not _better(metric, diff)


# -- reading the document ------------------------------------------------------------------------------


def _seed_values(config: Mapping[str, Any], metric: str) -> list[Any]:
    return [run["metrics"].get(metric) for run in config.get("test_runs", [])]


def _bucket_matrix(config: Mapping[str, Any], metric: str = "ndcg") -> np.ndarray | None:
    """(seeds, buckets) test ``metric`` by target-song popularity bucket, or ``None``."""
    rows = [run["buckets"]["by_target"][metric] for run in config.get("test_runs", []) if run.get("buckets")]
    if not rows:
        return None
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float)


def _edges(document: Mapping[str, Any]) -> list[float] | None:
    for config in document["configurations"]:
        for run in config.get("test_runs", []):
            if run.get("buckets"):
                return list(run["buckets"]["edges"])
    return None


def _main_configurations(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Full-data configurations by label: baseline, each mode's choice (scale points excluded)."""
    return {c["label"]: c for c in document["configurations"]
            if c["label"] in MAIN_LABELS and c["fraction"] == 1.0 and c.get("test_runs")}


def _objectives(document: Mapping[str, Any], mode: str) -> list[str]:
    study = next((s for s in document["studies"] if s["mode"] == mode), None)
    return list(study["objectives"]) if study else []


def _available(document: Mapping[str, Any], metric: str) -> bool:
    return any(v is not None for c in document["configurations"] for v in _seed_values(c, metric))


# -- formatting ----------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def _ci(interval: Interval) -> str:
    if interval.mean is None:
        return "n/a"
    if interval.low is None:
        return _num(interval.mean)
    return f"{_num(interval.mean)} [{_num(interval.low)}, {_num(interval.high)}]"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f}%"


def _change(metric: str, diff: Difference) -> str:
    if diff.delta is None:
        return "n/a"
    mark = "▲" if _better(metric, diff) else "▼" if _worse(metric, diff) else "≈"
    bounds = "" if diff.low is None else f" [{_num(diff.low, 3)}, {_num(diff.high, 3)}]"
    return f"{mark} {_pct(diff.relative)} (Δ {_num(diff.delta, 3)}{bounds})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# -- analyses ---------------------------------------------------------------------------------------------


def _changes(document: Mapping[str, Any]) -> dict[str, dict[str, Difference]]:
    """``{label: {metric: difference vs the baseline}}`` for every main configuration but the baseline."""
    main = _main_configurations(document)
    baseline = main.get("baseline")
    if baseline is None:
        return {}
    return {label: {m: compare(c, baseline, m) for m in TABLE_METRICS}
            for label, c in main.items() if label != "baseline"}


def _chose_baseline(document: Mapping[str, Any]) -> list[str]:
    """Main configurations (baseline aside) that are the baseline itself: their search found nothing better
    on validation, so they test nothing (:func:`same_runs`)."""
    main = _main_configurations(document)
    baseline = main.get("baseline")
    return [] if baseline is None else [label for label, c in main.items()
                                        if label != "baseline" and same_runs(c, baseline)]


def _budget_note(document: Mapping[str, Any], labels: Sequence[str]) -> str:
    """Why a claim cannot be tested when the configurations it needs are the baseline."""
    trials = document["settings"].get("trials")
    which = ", ".join(labels)
    return (f"{which} chose the baseline (gensim's defaults): no trial beat it on validation within the budget of "
            f"{trials} trials, so there is no tuned configuration to compare; the budget was too small "
            "(raise --trials)")


def _eligible_deciles(document: Mapping[str, Any]) -> list[int]:
    """Indices of the popularity deciles whose every song has at least gensim's ``min_count`` training plays.

    A decile covers play counts in ``(low, high]``; ``min_count`` is not searched, so it is the baseline's.
    """
    edges = _edges(document)
    if edges is None:
        return []
    baseline = _main_configurations(document).get("baseline") or {}
    min_count = int((baseline.get("params") or {}).get("min_count", 5))
    return [j for j in range(len(edges) - 1) if math.floor(edges[j]) + 1 >= min_count]


def _column_means(matrix: np.ndarray) -> np.ndarray:
    """Mean over seeds of each decile; NaN where no seed has a value (a decile without pairs)."""
    counts = np.sum(np.isfinite(matrix), axis=0)
    sums = np.nansum(matrix, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _spearman(means: np.ndarray) -> float:
    """Spearman correlation between decile index and ``means`` over the deciles that have a value."""
    keep = np.isfinite(means)
    if keep.sum() < 3:
        return float("nan")
    return float(stats.spearmanr(np.flatnonzero(keep), means[keep]).statistic)


def _popularity_disparity(matrix: np.ndarray) -> list[float]:
    """Per seed: mean NDCG of the more popular half of the deciles minus that of the less popular half."""
    half = matrix.shape[1] // 2
    return [float(np.nanmean(row[-half:]) - np.nanmean(row[:half])) for row in matrix]


@dataclass(frozen=True)
class Verdict:
    key: str  # side_effects, mitigation, popularity, rebalancing, downstream, scale
    claim: str
    rule: str
    verdict: str  # "supported", "partly supported", "not supported", "not testable"
    evidence: str


def claim_verdicts(document: Mapping[str, Any]) -> list[Verdict]:
    """One :class:`Verdict` per paper claim, from the test runs of an experiment document."""
    main = _main_configurations(document)
    changes = _changes(document)
    verdicts = []
    core = [m for m in CORE_METRICS if _available(document, m)]
    # A mode that chose the baseline tuned nothing: it is left out of every claim (a budget too small to beat
    # gensim's defaults is not evidence against a claim), and a claim left with nothing is not testable.
    untuned = _chose_baseline(document)
    tuned = {label: diffs for label, diffs in changes.items() if label not in untuned}

    # 1. single-objective tuning hurts unoptimised metrics
    single = [mode for mode in ("ndcg", "clustering") if mode in changes]
    hurt: dict[str, list[str]] = {}
    for mode in single:
        if mode in tuned:
            optimised = set(_objectives(document, mode))
            hurt[mode] = [m for m in core if m not in optimised and _worse(m, changes[mode][m])]
    rule1 = ("each single-objective configuration is compared with the baseline on every unoptimised core metric "
             f"({', '.join(core)}); supported when both single-objective modes make at least one significantly "
             "worse")
    if not single:
        verdicts.append(Verdict("side_effects", "Single-objective tuning hurts unoptimised metrics", rule1, "not testable",
                                "no single-objective mode was run"))
    elif not hurt:
        verdicts.append(Verdict("side_effects", "Single-objective tuning hurts unoptimised metrics", rule1, "not testable",
                                _budget_note(document, single)))
    else:
        evidence = "; ".join(
            f"{mode}: " + (", ".join(f"{m} {_change(m, changes[mode][m])}" for m in worse) or "nothing significantly worse")
            for mode, worse in hurt.items())
        skipped = [mode for mode in single if mode not in hurt]
        if skipped:
            evidence += f"; {_budget_note(document, skipped)}"
        n_hurt = sum(bool(w) for w in hurt.values())
        verdict = "supported" if n_hurt == len(hurt) == 2 else "partly supported" if n_hurt else "not supported"
        verdicts.append(Verdict("side_effects", "Single-objective tuning hurts unoptimised metrics", rule1, verdict, evidence))

    # 2. multi-objective mitigates
    rule2 = ("a multi-objective balanced compromise (random search or NSGA-II, with or without the safeguard) must "
             "significantly improve at least one of its objectives and make fewer core metrics significantly worse "
             "than each single-objective configuration")
    multi = [label for label in MULTI_LABELS if label in tuned]
    if multi and hurt:
        so_worse = {mode: sum(_worse(m, changes[mode][m]) for m in core) for mode in hurt}
        parts, outcomes = [], []
        for label in multi:
            worse = [m for m in core if _worse(m, changes[label][m])]
            improved = [m for m in _objectives(document, label) if _better(m, changes[label][m])]
            outcomes.append((bool(improved) and all(len(worse) < n for n in so_worse.values()),
                             bool(improved) and any(len(worse) < n for n in so_worse.values())))
            parts.append(f"{label} improves {', '.join(improved) or 'no objective'} significantly and worsens "
                         f"{len(worse)} core metric(s){' (' + ', '.join(worse) + ')' if worse else ''}")
        evidence = "; ".join(parts) + "; single-objective modes worsen " + ", ".join(
            f"{mode}: {n}" for mode, n in so_worse.items())
        verdict = ("supported" if any(ok for ok, _ in outcomes)
                   else "partly supported" if any(partly for _, partly in outcomes) else "not supported")
        verdicts.append(Verdict("mitigation", "Multi-objective optimisation mitigates those side effects", rule2,
                                verdict, evidence))
    else:
        needed = [label for label in (*MULTI_LABELS, *single) if label in changes and label not in tuned]
        verdicts.append(Verdict("mitigation", "Multi-objective optimisation mitigates those side effects", rule2, "not testable",
                                _budget_note(document, needed) if needed
                                else "needs the nsga2 mode and a single-objective mode"))

    # 3a. next-song quality anti-correlated with popularity (baseline)
    rule3 = ("baseline test NDCG@K by target-song popularity decile, over the deciles whose songs all have at least "
             "min_count training plays (rarer songs get no vector from gensim, whatever the embedding): the Spearman "
             "correlation between decile and NDCG is negative, and the least popular of those deciles scores "
             "significantly above the most popular one")
    baseline = main.get("baseline")
    full_matrix = None if baseline is None else _bucket_matrix(baseline)
    eligible = _eligible_deciles(document)
    if full_matrix is None or len(eligible) < 3:
        evidence = ("no bucket results" if full_matrix is None else
                    f"only {len(eligible)} decile(s) hold songs with at least min_count training plays: too few for a trend")
        verdicts.append(Verdict("popularity", "Next-song quality is anti-correlated with popularity", rule3, "not testable",
                                evidence))
        verdicts.append(Verdict("rebalancing", "Tuning rebalances quality across popularity levels",
                                "needs the popularity trend above", "not testable", evidence))
    else:
        matrix = full_matrix[:, eligible]
        means = _column_means(matrix)
        rho = _spearman(means)
        rho_all = _spearman(_column_means(full_matrix))
        low_vs_high = difference_interval(matrix[:, 0], matrix[:, -1])
        verdict = ("supported" if rho < 0 and low_vs_high.significant and low_vs_high.delta > 0  # type: ignore[operator]
                   else "partly supported" if rho < 0 else "not supported")
        evidence = (f"Spearman ρ = {rho:+.2f} over deciles {eligible[0] + 1}-{eligible[-1] + 1} ({rho_all:+.2f} over all "
                    f"{full_matrix.shape[1]}); decile {eligible[0] + 1} {_num(float(means[0]))} vs decile "
                    f"{eligible[-1] + 1} {_num(float(means[-1]))} "
                    f"(Δ {_num(low_vs_high.delta, 3)} [{_num(low_vs_high.low, 3)}, {_num(low_vs_high.high, 3)}])")
        verdicts.append(Verdict("popularity", "Next-song quality is anti-correlated with popularity", rule3, verdict, evidence))

        # 3b. tuning rebalances across popularity levels
        rule3b = ("disparity = mean NDCG of the more popular half of those deciles minus the less popular half, per seed; "
                  "a tuned "
                  "configuration rebalances when |disparity| shrinks significantly vs the baseline (Welch interval of "
                  "the disparity difference excludes 0 in that direction); supported when a multi-objective compromise "
                  "rebalances, partly when a single-objective configuration does")
        base_disp = _popularity_disparity(matrix)
        parts, rebalanced, compared = [], [], 0
        for label, config in main.items():
            other = _bucket_matrix(config)
            if label == "baseline" or label in untuned or other is None:
                continue
            compared += 1
            disp = _popularity_disparity(other[:, eligible])
            diff = difference_interval(disp, base_disp)
            shrinks = diff.significant and abs(np.mean(disp)) < abs(np.mean(base_disp))
            if shrinks:
                rebalanced.append(label)
            parts.append(f"{label}: {_num(float(np.mean(disp)), 3)} (Δ {_num(diff.delta, 3)} "
                         f"[{_num(diff.low, 3)}, {_num(diff.high, 3)}])")
        evidence = "; ".join([f"baseline disparity {_num(float(np.mean(base_disp)), 3)}", *parts,
                              *([_budget_note(document, untuned)] if untuned else [])])
        verdict = ("not testable" if not compared and untuned else "supported" if set(rebalanced) & set(MULTI_LABELS)
                   else "partly supported" if rebalanced else "not supported")
        verdicts.append(Verdict("rebalancing", "Tuning rebalances quality across popularity levels", rule3b, verdict, evidence))

    # 4. downstream benefit
    rule4 = ("playlist continuation (R-precision and NDCG@K on held-out test playlists, never optimised): supported "
             "when a multi-objective compromise improves at least one significantly and worsens none; partly when a "
             "single-objective configuration does")
    if tuned and _available(document, DOWNSTREAM[0]):
        good = {label: [m for m in DOWNSTREAM if _better(m, d[m])] for label, d in tuned.items()}
        bad = {label: [m for m in DOWNSTREAM if _worse(m, d[m])] for label, d in tuned.items()}
        winners = [label for label in tuned if good[label] and not bad[label]]
        evidence = "; ".join(f"{label}: " + ", ".join(f"{m.removeprefix('continuation_')} {_change(m, d[m])}"
                                                     for m in DOWNSTREAM) for label, d in tuned.items())
        if untuned:
            evidence += f"; {_budget_note(document, untuned)}"
        verdict = ("supported" if set(winners) & set(MULTI_LABELS)
                   else "partly supported" if winners else "not supported")
        verdicts.append(Verdict("downstream", "Benefits reach a downstream task (playlist continuation)", rule4, verdict,
                                evidence))
    elif changes and _available(document, DOWNSTREAM[0]):
        verdicts.append(Verdict("downstream", "Benefits reach a downstream task (playlist continuation)", rule4,
                                "not testable", _budget_note(document, untuned)))
    else:
        verdicts.append(Verdict("downstream", "Benefits reach a downstream task (playlist continuation)", rule4, "not testable",
                                "no continuation scores"))

    # 5. more data allows better configurations
    rule5 = ("scale study, per repeated mode: the tuned (NSGA-II compromise) test NDCG at the largest fraction of the "
             "training sequences is significantly above the one at the smallest, and its gain over the same-scale "
             "baseline is larger there; supported when some mode shows both, partly when it shows the first only")
    series = {base: points for base in SCALE_BASES if len(points := _scale_points(document, base)) >= 2}
    # The claim is about the configurations tuned on the most data: a series whose largest study chose its
    # baseline tuned nothing there.
    untested = [f"{base} at {points[-1]['fraction'] * 100:g}%" for base, points in series.items()
                if same_runs(points[-1]["tuned"], points[-1]["baseline"])]
    series = {base: points for base, points in series.items()
              if not same_runs(points[-1]["tuned"], points[-1]["baseline"])}
    if untested and not series:
        verdicts.append(Verdict("scale", "More training data allows better configurations", rule5, "not testable",
                                _budget_note(document, untested)))
    elif series:
        parts, outcomes = [], []
        for base, points in series.items():
            small, full = points[0], points[-1]
            absolute = compare(full["tuned"], small["tuned"], "ndcg")
            gain_full = compare(full["tuned"], full["baseline"], "ndcg")
            gain_small = compare(small["tuned"], small["baseline"], "ndcg")
            better = absolute.significant and absolute.delta > 0  # type: ignore[operator]
            outcomes.append((better, (gain_full.delta or 0.0) > (gain_small.delta or 0.0)))
            parts.append(
                f"{base}: tuned NDCG {small['fraction'] * 100:g}% → {full['fraction'] * 100:g}% of the data Δ "
                f"{_num(absolute.delta, 3)} [{_num(absolute.low, 3)}, {_num(absolute.high, 3)}], gain over the baseline "
                f"{_num(gain_small.delta, 3)} [{_num(gain_small.low, 3)}, {_num(gain_small.high, 3)}] → "
                f"{_num(gain_full.delta, 3)} [{_num(gain_full.low, 3)}, {_num(gain_full.high, 3)}], median seconds per "
                f"trial {small['seconds']:.1f} → {full['seconds']:.1f}")
        verdict = ("supported" if any(b and g for b, g in outcomes)
                   else "partly supported" if any(b for b, _ in outcomes) else "not supported")
        verdicts.append(Verdict("scale", "More training data allows better configurations", rule5, verdict,
                                "; ".join([*parts, *([_budget_note(document, untested)] if untested else [])])))
    else:
        verdicts.append(Verdict("scale", "More training data allows better configurations", rule5, "not testable",
                                "the scale study needs at least two fractions"))
    return verdicts


def _scale_points(document: Mapping[str, Any], base: str) -> list[dict[str, Any]]:
    """Per training fraction (ascending) of the scale study repeating mode ``base``: its study, tuned
    configuration (the balanced compromise) and baseline."""
    points = []
    for study in document["studies"]:
        if study.get("scale_of", "nsga2" if study["mode"] in ("scale", "nsga2") else None) != base:
            continue
        configs = [c for c in document["configurations"] if c["study"] == study["study"] and c.get("test_runs")]
        tuned = next((c for c in configs if c["mode"] in ("scale", base) and c["label"] != "nsga2 best-ndcg"), None)
        baseline = next((c for c in configs if c["mode"] == "study-baseline"), None)
        if tuned is None or baseline is None:
            continue
        seconds = statistics.median(study["trial_seconds"]) if study["trial_seconds"] else float("nan")
        points.append({"fraction": study["fraction"], "study": study, "tuned": tuned, "baseline": baseline,
                       "seconds": seconds})
    return sorted(points, key=lambda p: p["fraction"])


# -- figures ------------------------------------------------------------------------------------------------


def bucket_figure(document: Mapping[str, Any]) -> go.Figure | None:
    """Test NDCG@K by target-song popularity decile, one line per main configuration, 95% error bars."""
    edges = _edges(document)
    main = _main_configurations(document)
    if edges is None or not main:
        return None
    figure = go.Figure()
    for label, config in main.items():
        matrix = _bucket_matrix(config)
        if matrix is None:
            continue
        intervals = [mean_interval(matrix[:, j]) for j in range(matrix.shape[1])]
        x = list(range(1, matrix.shape[1] + 1))
        figure.add_trace(go.Scatter(
            x=x, y=[i.mean for i in intervals], name=label, mode="lines+markers",
            line={"color": _COLOURS.get(label)}, error_y=error_bars(intervals)))
    k = document["settings"]["k"]
    figure.update_layout(
        title=f"Test NDCG@{k} by popularity decile of the target song (1 = least played), mean and 95% CI",
        xaxis_title="target-song popularity decile (training play count)", yaxis_title=f"NDCG@{k}",
        height=520, template="plotly_white")
    return figure


def scale_figure(document: Mapping[str, Any]) -> go.Figure | None:
    """Test NDCG of the tuned configuration and the baseline per training fraction; seconds per trial."""
    series = {base: points for base in SCALE_BASES if len(points := _scale_points(document, base)) >= 2}
    if not series:
        return None
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Test NDCG@K (mean, 95% CI)", "Median seconds per trial"))
    baseline_drawn = False
    for base, points in series.items():
        x = [p["fraction"] * 100 for p in points]
        curves = [("tuned", f"{base} compromise", _COLOURS[base])]
        if not baseline_drawn:  # every series shares the same baselines (defaults, same subsets, same seeds)
            curves.append(("baseline", "baseline (gensim defaults)", _COLOURS["baseline"]))
            baseline_drawn = True
        for key, name, colour in curves:
            intervals = [mean_interval(_seed_values(p[key], "ndcg")) for p in points]
            figure.add_trace(go.Scatter(
                x=x, y=[i.mean for i in intervals], mode="lines+markers", line={"color": colour}, name=name,
                error_y=error_bars(intervals)), row=1, col=1)
        figure.add_trace(go.Bar(x=[f"{v:g}%" for v in x], y=[p["seconds"] for p in points],
                                name=f"{base} seconds per trial", marker_color=_COLOURS[base]), row=1, col=2)
    figure.update_xaxes(title_text="% of training sequences", type="log", row=1, col=1)
    figure.update_xaxes(title_text="% of training sequences", type="category", row=1, col=2)
    figure.update_layout(height=480, template="plotly_white", title="Scale study", barmode="group")
    return figure


def search_figure(document: Mapping[str, Any]) -> go.Figure | None:
    """Validation NDCG against the clustering objective for every trial of every mode's study."""
    clustering = next((s["objectives"][0] for s in document["studies"] if s["mode"] == "clustering"), None)
    studies = [s for s in document["studies"] if s["mode"] in ("ndcg", "clustering", "random", "nsga2", "nsga2-free")]
    if clustering is None or not studies:
        return None
    figure = go.Figure()
    for study in studies:
        trials = [t for t in study["trials"] if t.get("ndcg") is not None and t.get(clustering) is not None]
        figure.add_trace(go.Scatter(
            x=[t["ndcg"] for t in trials], y=[t[clustering] for t in trials], mode="markers", name=study["mode"],
            marker={"color": _COLOURS.get(study["mode"]), "size": 8, "opacity": 0.7,  # modes share start-up draws
                    "symbol": ["circle" if t["feasible"] else "x" for t in trials]}))
    figure.update_layout(title="Every trial on validation (x = infeasible under the HardNeg safeguard)",
                         xaxis_title="NDCG@K (validation)", yaxis_title=f"{clustering} (validation)", height=520,
                         template="plotly_white")
    return figure


# -- the page ----------------------------------------------------------------------------------------------------


def render_markdown(document: Mapping[str, Any], *, title: str, commands: Sequence[str],
                    figures: Sequence[str], notes: str | None = None) -> str:
    """The results page as Markdown; ``figures`` are the PNG file names written next to it, ``notes`` an
    optional Markdown text placed after the verdicts."""
    settings, dataset = document["settings"], document["dataset"]
    counts = dataset["counts"]
    main = _main_configurations(document)
    changes = _changes(document)
    k = settings["k"]
    out: list[str] = [f"# Results: {title}", ""]
    compute = sum(s["optimisation_seconds"] + s.get("evaluated_runs_seconds", 0.0) for s in document["studies"])
    out += [
        f"Dataset `{Path(dataset['path']).name}` (fingerprint `{dataset['fingerprint'][:12]}`): "
        f"{counts.get('sequences')} sequences ({counts.get('train_sequences')} training), {counts.get('songs')} songs, "
        f"{counts.get('artists')} artists, {counts.get('genres')} genres, {counts.get('hard_negative_pairs')} "
        f"hard-negative pairs over {counts.get('songs_with_hard_negative')} songs. Validation pairs "
        f"{_pairs(counts, 'validation')}, test pairs {_pairs(counts, 'test')}.",
        "",
        f"Every search mode had the same budget of **{settings['trials']} completed trials** (the baseline, trial 0, "
        f"included); NSGA-II generations of {settings['population_size']}; K = {k}; study seed {settings['seed']}. Each "
        f"chosen configuration was re-trained with **{settings['seeds']} seeds** and evaluated on the test split; "
        "intervals are 95% Student-t over seeds, changes are differences of means with 95% Welch intervals "
        "(▲ significantly better, ▼ significantly worse, ≈ interval includes 0). Single-objective modes and "
        "nsga2-free run without the HardNeg safeguard; random search and nsga2 with it (when the dataset has hard "
        "negatives). "
        f"Compute: {compute / 60:.1f} min of single-threaded trials and test runs (songhpo {document['songhpo']})."
        + "".join(f" Fixed in every study, the baseline included: {name} = {value}." for name, value
                  in settings.get("fixed") or []),
        "",
        "## Verdicts per paper claim",
        "",
    ]
    verdicts = claim_verdicts(document)
    out.append(_table(["claim", "verdict", "our numbers", "rule"],
                      [[v.claim, f"**{v.verdict}**", v.evidence, v.rule] for v in verdicts]))
    if notes:
        out += ["", "## Notes", "", notes.strip()]
    out += ["", "## Headline (test split)", ""]
    headline = [m for m in ("ndcg", "ch_artist", "ch_genre", "hardneg", "continuation_rprecision") if _available(document, m)]
    rows = []
    for label, config in main.items():
        cells = [label, str(config["trial"])]
        for m in headline:
            interval = _ci(mean_interval(_seed_values(config, m)))
            if label != "baseline" and label in changes:
                interval += f"<br>{_change(m, changes[label][m])}"
            cells.append(interval)
        rows.append(cells)
    out.append(_table(["configuration", "trial", *[_metric_title(m, k) for m in headline]], rows))
    out += ["", "How each configuration was chosen (on validation only):", ""]
    untuned = _chose_baseline(document)
    out += [f"- **{label}** ({c['study']}, trial {c['trial']}): {c['rule']}."
            + (" That is the baseline's configuration: nothing beat gensim's defaults on validation within the "
               "budget, so its changes are exactly 0 and the claims leave it out." if label in untuned else "")
            for label, c in main.items()]

    out += ["", "## Side effects: every metric, every mode (test split, change vs baseline)", ""]
    labels = [label for label in main if label != "baseline"]
    rows = []
    for m in TABLE_METRICS:
        if not _available(document, m):
            continue
        base = _ci(mean_interval(_seed_values(main["baseline"], m))) if "baseline" in main else "n/a"
        rows.append([_metric_title(m, k), base, *[_change(m, changes[label][m]) for label in labels]])
    out.append(_table(["metric", "baseline", *labels], rows))
    unavailable = [m for m in TABLE_METRICS if not _available(document, m)]
    if unavailable:
        out += ["", f"Unavailable on this dataset (no labels or no hard negatives): {', '.join(unavailable)}."]

    out += ["", "## Popularity buckets", ""]
    if "buckets.png" in figures:
        out += ["![NDCG by popularity decile](" + _figure_path(title, "buckets.png") + ")", ""]
    edges = _edges(document)
    if edges is not None:
        header = ["decile (plays)", *main.keys()]
        matrices = {label: _bucket_matrix(c) for label, c in main.items()}
        rows = []
        for j in range(len(edges) - 1):
            cells = [f"{j + 1} ({edges[j]:g}, {edges[j + 1]:g}]"]
            for label in main:
                matrix = matrices[label]
                cells.append("n/a" if matrix is None else _ci(mean_interval(matrix[:, j])))
            rows.append(cells)
        out.append(_table(header, rows))
        out += ["", f"Test NDCG@{k} by the popularity decile of the target song (decile edges in training plays)."]
        eligible = _eligible_deciles(document)
        if eligible and eligible[0] > 0:
            out += [f"Deciles 1-{eligible[0]} hold songs with fewer training plays than gensim's min_count, which is "
                    "not searched (as in the paper): they get no vector in any configuration, so they score 0; the "
                    f"popularity verdicts use deciles {eligible[0] + 1}-{len(edges) - 1}."]

    out += ["", "## Downstream: playlist continuation (test playlists, never optimised)", ""]
    if _available(document, DOWNSTREAM[0]):
        rows = []
        for label, config in main.items():
            cells = [label]
            for m in DOWNSTREAM:
                cell = _ci(mean_interval(_seed_values(config, m)))
                if label in changes:
                    cell += f"<br>{_change(m, changes[label][m])}"
                cells.append(cell)
            playlists = _seed_values(config, "continuation_playlists")
            cells.append(str(int(playlists[0])) if playlists and playlists[0] is not None else "n/a")
            rows.append(cells)
        out.append(_table(["configuration", "R-precision", f"NDCG@{k}", "playlists"], rows))
        out += ["", "Each held-out test playlist is seeded with its first 5 songs; the vocabulary is ranked by cosine "
                "similarity to the seed centroid (seed songs excluded) and the remaining songs are the relevant set."]

    out += ["", "## Search", ""]
    if "search.png" in figures:
        out += ["![trials on validation](" + _figure_path(title, "search.png") + ")", ""]
    rows = []
    for s in document["studies"]:
        if s["mode"] == "scale":
            continue
        best = ", ".join(f"{m} {_num(v)}" for m, v in s["best_validation"].items())
        safeguard = s.get("safeguard") or {}
        rows.append([s["mode"], s["study"], s["sampler"], ", ".join(s["objectives"]), str(s["trials_complete"]),
                     str(s["trials_failed"]), str(s["infeasible"]), str(s["front_size"]), best,
                     "on" if safeguard.get("enabled") else "off",
                     f"{statistics.median(s['trial_seconds']):.1f}" if s["trial_seconds"] else "n/a"])
    out.append(_table(["mode", "study", "sampler", "objectives", "trials", "failed", "infeasible", "front",
                       "best on validation (feasible)", "safeguard", "median s/trial"], rows))

    out += ["", "## Scale study (NSGA-II on nested subsets of the training sequences)", ""]
    series = {base: points for base in SCALE_BASES if (points := _scale_points(document, base))}
    if "scale.png" in figures:
        out += ["![scale study](" + _figure_path(title, "scale.png") + ")", ""]
    if series:
        rows = []
        for base, points in series.items():
            for p in points:
                s = p["study"]
                tuned, baseline = p["tuned"], p["baseline"]
                gain = compare(tuned, baseline, "ndcg")
                best = ", ".join(f"{m} {_num(v)}" for m, v in s["best_validation"].items())
                rows.append([base, f"{p['fraction'] * 100:g}%", str(s["training_sequences"]), best,
                             _ci(mean_interval(_seed_values(tuned, "ndcg"))),
                             _ci(mean_interval(_seed_values(baseline, "ndcg"))), _change("ndcg", gain),
                             f"trial {tuned['trial']}: {_params_text(tuned['params'])}", f"{p['seconds']:.1f}",
                             f"{s['optimisation_seconds'] / 60:.1f}"])
        out.append(_table(["study", "training data", "sequences", "best on validation (feasible)",
                           f"tuned test NDCG@{k}", f"baseline test NDCG@{k}", "tuned vs baseline", "chosen parameters",
                           "median s/trial", "study minutes"], rows))
        out += ["", "Evaluation pairs are the same at every scale; a song the subset never plays has no vector, so "
                "its pairs count as misses. The 10% subset is contained in the 25% one, and so on. The tuned "
                "configuration is the balanced compromise of each study's feasible front."]

    out += ["", "## Chosen configurations", ""]
    rows = []
    for c in document["configurations"]:
        if c["mode"] == "study-baseline":
            continue
        rows.append([c["label"], c["study"], str(c["trial"]), _params_text(c["params"]), str(len(c["test_runs"]))])
    out.append(_table(["configuration", "study", "trial", "Word2Vec parameters", "test seeds"], rows))

    check = _determinism(document)
    if check is not None:
        out += ["", f"Determinism check: the baseline was re-trained on test in {check[0]} studies with the same seeds; "
                f"the largest difference between them over every metric is {check[1]:.3g}."]
    out += ["", "## How to reproduce", "", "```sh", *commands, "```", ""]
    return "\n".join(out)


def _params_text(params: Mapping[str, Any]) -> str:
    """The paper's five searched parameters, compactly."""
    return ", ".join(f"{n}={_num(v, 3) if isinstance(v, float) else v}" for n, v in params.items()
                     if n in ("vector_size", "window", "ns_exponent", "negative", "alpha"))


def _pairs(counts: Mapping[str, Any], split: str) -> str:
    pairs = (counts.get("pairs") or {}).get(split) or {}
    return f"{pairs.get('in', 0)} in-set + {pairs.get('out', 0)} out-of-set"


def _metric_title(metric: str, k: int) -> str:
    titles = {"ndcg": f"NDCG@{k}", "ndcg_in": f"NDCG@{k} in-set", "ndcg_out": f"NDCG@{k} out-of-set",
              "hitrate": f"HitRate@{k}", "hitrate_in": f"HitRate@{k} in-set", "hitrate_out": f"HitRate@{k} out-of-set",
              "ch_artist": "CH-artist", "ch_genre": "CH-genre", "coherence_artist": "artist coherence",
              "coherence_genre": "genre coherence", "hardneg": f"HardNeg@{k} (lower is better)",
              "continuation_rprecision": "continuation R-precision", "continuation_ndcg": f"continuation NDCG@{k}"}
    return titles.get(metric, metric)


def _figure_path(title: str, name: str) -> str:
    return f"{_slug(title)}-{name}"


def _slug(title: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in title).strip("-") or "results"


def _determinism(document: Mapping[str, Any]) -> tuple[int, float] | None:
    """(number of full-data baseline evaluations, largest metric difference between them)."""
    baselines = [c for c in document["configurations"]
                 if c["fraction"] == 1.0 and c["trial"] == 0 and c.get("test_runs")
                 and c["mode"] in ("baseline", "study-baseline")]
    if len(baselines) < 2:
        return None
    largest = 0.0
    reference = baselines[0]
    for other in baselines[1:]:
        for run_a, run_b in zip(reference["test_runs"], other["test_runs"]):
            for metric in TABLE_METRICS:
                a, b = run_a["metrics"].get(metric), run_b["metrics"].get(metric)
                if a is not None and b is not None:
                    largest = max(largest, abs(float(a) - float(b)))
    return len(baselines), largest


def write_results_page(document: Mapping[str, Any], out: str | Path, *, title: str | None = None,
                       commands: Sequence[str] = (), png: bool = True, notes: str | None = None) -> list[Path]:
    """Write the Markdown page ``out`` and, with ``png``, its figures ``<slug>-<figure>.png`` next to it.

    Returns the written paths. Figures are exported first (atomically); the page is written last.
    """
    from dashboards.report import export_pngs

    out = Path(out)
    title = title or Path(document["dataset"]["path"]).name
    written: list[Path] = []
    names: list[str] = []
    if png:
        figures = {"buckets.png": bucket_figure(document), "scale.png": scale_figure(document),
                   "search.png": search_figure(document)}
        items = [(f"{_slug(title)}-{name.removesuffix('.png')}", figure) for name, figure in figures.items()
                 if figure is not None]
        written += export_pngs(items, out.parent)
        names = [name for name, figure in figures.items() if figure is not None]
    if not commands:
        s = document["settings"]
        outs = s["out"] if isinstance(s["out"], list) else [s["out"]]
        commands = [*(f"songhpo experiment run --dataset {s['dataset']} --out {o} --trials {s['trials']} "
                      f"--seeds {s['seeds']}" for o in outs), f"songhpo experiment report {' '.join(outs)} --out {out}"]
    atomic_write_text(out, render_markdown(document, title=title, commands=commands, figures=names,
                                               notes=notes))
    return [*written, out]
