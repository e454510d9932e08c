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

import json
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

from dashboards import proxy
from dashboards.figures import error_bars
from hpo._atomic import atomic_write_text
from hpo.experiment import reproduce_commands, study_seeds
from hpo.results import confidence_interval
from hpo.trials import dominates

__all__ = [
    "CORE_METRICS",
    "Difference",
    "Verdict",
    "difference_interval",
    "mean_interval",
    "anchor_dominance",
    "claim_verdicts",
    "compare",
    "markdown_table",
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
MAIN_LABELS = ("baseline", "literature", "ndcg", "clustering", "random", "nsga2", "nsga2 best-ndcg", "nsga2-free")
#: Main configurations that no search chose (published settings): on the page, left out of the claims.
ANCHOR_LABELS = ("literature",)
#: The multi-objective configurations the claims are judged on: the balanced compromises of random search and
#: of NSGA-II with and without the safeguard (the claims are about multi-objective optimisation, not a sampler).
MULTI_LABELS = ("random", "nsga2", "nsga2-free")
_COLOURS = {"baseline": "#636363", "literature": "#8c564b", "ndcg": "#d62728", "clustering": "#9467bd", "random": "#ff7f0e",
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


#: The two bucketings of the target song's popularity: deciles of equal numbers of songs (``edges`` of the
#: buckets) and deciles of equal numbers of pairs (the breakdown's own ``edges``).
EQUAL_SONGS, EQUAL_PAIRS = "by_target", "by_target_equal_pairs"
_BUCKETINGS = {EQUAL_SONGS: "equal-song deciles", EQUAL_PAIRS: "equal-pair deciles"}


def _bucket_matrix(config: Mapping[str, Any], metric: str = "ndcg", key: str = EQUAL_SONGS) -> np.ndarray | None:
    """(seeds, buckets) test ``metric`` by target-song popularity bucket of bucketing ``key``, or ``None``
    (no run has that breakdown: results from before it existed)."""
    rows = [run["buckets"][key][metric] for run in config.get("test_runs", [])
            if run.get("buckets") and run["buckets"].get(key)]
    if not rows:
        return None
    return np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float)


def _edges(document: Mapping[str, Any], key: str = EQUAL_SONGS) -> list[float] | None:
    """Bucket edges (training plays) of bucketing ``key``; the same in every full-data test run."""
    for config in document["configurations"]:
        if config["fraction"] != 1.0:
            continue
        for run in config.get("test_runs", []):
            buckets = run.get("buckets") or {}
            if buckets.get(key):
                return list(buckets[key].get("edges", buckets["edges"]))
    return None


def _pooled(configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One configuration from the same label's choices of several study seeds: their test runs together.

    ``params`` stay when every seed chose the same parameters (so :func:`same_runs` still recognises a mode
    that chose the baseline in every seed), else ``None``; ``study`` and ``trial`` list every choice.
    """
    if len(configs) == 1:
        return dict(configs[0])
    same = all(c.get("params") == configs[0].get("params") for c in configs)
    # Two runs with the same parameters and seed under one label are one training reported twice (say, gensim's
    # defaults from two experiment directories of the same study seed). Seeds alone do not identify a training:
    # trial seeds are study seed + trial number, so two study seeds' choices can share one.
    runs = {(json.dumps(c.get("params"), sort_keys=True), r["seed"]): r
            for c in reversed(configs) for r in c.get("test_runs", [])}
    return {**configs[0], "study": ", ".join(c["study"] for c in configs),
            "trial": ", ".join(str(c["trial"]) for c in configs), "params": configs[0].get("params") if same else None,
            "test_runs": [runs[key] for key in sorted(runs, key=lambda k: (k[1], k[0]))], "pooled": len(configs)}


def _main_configurations(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Full-data configurations by label: baseline, literature, each mode's choice (scale points excluded); a
    label chosen in several study seeds pools their test runs (:func:`_pooled`)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for c in document["configurations"]:
        if c["label"] in MAIN_LABELS and c["fraction"] == 1.0 and c.get("test_runs"):
            groups.setdefault(c["label"], []).append(c)
    return {label: _pooled(groups[label]) for label in MAIN_LABELS if label in groups}


def _claim_configurations(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The main configurations the paper's claims are about: the anchors that are not a search are left out."""
    return {label: c for label, c in _main_configurations(document).items() if label not in ANCHOR_LABELS}


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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (cells as ``str``, ``|`` escaped) under ``header``."""
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
                                        if label not in ("baseline", *ANCHOR_LABELS) and same_runs(c, baseline)]


def _budget_note(document: Mapping[str, Any], labels: Sequence[str]) -> str:
    """Why a claim cannot be tested when the configurations it needs are the baseline."""
    trials = document["settings"].get("trials")
    which = ", ".join(labels)
    return (f"{which} chose the baseline (gensim's defaults): no trial beat it on validation within the budget of "
            f"{trials} trials, so there is no tuned configuration to compare; the budget was too small "
            "(raise --trials)")


def _eligible_deciles(document: Mapping[str, Any], key: str = EQUAL_SONGS) -> list[int]:
    """Indices of the popularity deciles (of bucketing ``key``) whose every song has at least gensim's
    ``min_count`` training plays.

    A decile covers play counts in ``(low, high]``; ``min_count`` is the baseline's (searched or not, the
    baseline trains gensim's default or the ``--fix`` value).
    """
    edges = _edges(document, key)
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


#: The head of the popularity range: the most popular deciles (of those with values), where the paper's
#: anti-correlation is tested on its own.
HEAD_DECILES = 3


def _popularity_rule(head: bool) -> str:
    where = (f"the {HEAD_DECILES} most popular of those deciles (the head)" if head else "all of those deciles")
    lowest = "the head's least popular decile" if head else "the least popular of those deciles"
    return ("baseline test NDCG@K by target-song popularity decile, in each bucketing (equal-song deciles: each holds a "
            "tenth of the songs; equal-pair deciles: each holds about a tenth of the test pairs), over the deciles whose "
            "songs all have at least min_count training plays (rarer songs get no vector from gensim, whatever the "
            f"embedding) and hold pairs; over {where}: the Spearman correlation between decile and mean NDCG is "
            f"negative, and {lowest} scores significantly above the most popular one (Welch interval over seeds); "
            "supported when every bucketing these results have shows both, not supported when none shows either, "
            "partly otherwise")


def _popularity_trend(document: Mapping[str, Any], baseline: Mapping[str, Any] | None, key: str,
                      head: bool) -> tuple[str, str]:
    """``(outcome, evidence)`` of the anti-correlation test in bucketing ``key`` (see :func:`_popularity_rule`);
    outcome is a verdict word, ``not testable`` without enough deciles or results."""
    name = _BUCKETINGS[key]
    matrix = None if baseline is None else _bucket_matrix(baseline, key=key)
    if matrix is None:
        why = ("not available in these results (recorded before songhpo computed them; re-run)" if key == EQUAL_PAIRS
               and baseline is not None and _bucket_matrix(baseline) is not None else "no bucket results")
        return "not testable", f"{name}: {why}"
    columns = [j for j in _eligible_deciles(document, key) if np.isfinite(_column_means(matrix[:, [j]]))[0]]
    if head:
        columns = columns[-HEAD_DECILES:]
    needed = HEAD_DECILES if head else 3
    if len(columns) < needed:
        return "not testable", (f"{name}: only {len(columns)} decile(s) with pairs hold songs with at least min_count "
                                "training plays: too few for a trend")
    sub = matrix[:, columns]
    means = _column_means(sub)
    rho = _spearman(means)
    low_vs_high = difference_interval(sub[:, 0], sub[:, -1])
    outcome = ("supported" if rho < 0 and low_vs_high.significant and low_vs_high.delta > 0  # type: ignore[operator]
               else "partly supported" if rho < 0 else "not supported")
    extra = "" if head else f" ({_spearman(_column_means(matrix)):+.2f} over all {matrix.shape[1]})"
    return outcome, (f"{name}: Spearman ρ = {rho:+.2f} over deciles {columns[0] + 1}-{columns[-1] + 1}{extra}; decile "
                     f"{columns[0] + 1} {_num(float(means[0]))} vs decile {columns[-1] + 1} {_num(float(means[-1]))} "
                     f"(Δ {_num(low_vs_high.delta, 3)} [{_num(low_vs_high.low, 3)}, {_num(low_vs_high.high, 3)}])")


def _combine_bucketings(results: Mapping[str, tuple[str, str]]) -> tuple[str, str]:
    """One verdict from the outcomes of both bucketings: supported when every tested one is, not supported when
    none shows a negative trend, partly otherwise; not testable when none could be tested."""
    tested = [outcome for outcome, _ in results.values() if outcome != "not testable"]
    evidence = "; ".join(text for _, text in results.values())
    if not tested:
        return "not testable", evidence
    if all(o == "supported" for o in tested):
        return "supported", evidence
    if all(o == "not supported" for o in tested):
        return "not supported", evidence
    return "partly supported", evidence


@dataclass(frozen=True)
class Verdict:
    key: str  # side_effects, mitigation, popularity, popularity_head, rebalancing, downstream, scale, ch_proxy
    claim: str
    rule: str
    verdict: str  # "supported", "partly supported", "not supported", "not testable"
    evidence: str


def claim_verdicts(document: Mapping[str, Any]) -> list[Verdict]:
    """One :class:`Verdict` per paper claim, from the test runs of an experiment document."""
    main = _claim_configurations(document)
    changes = {label: diffs for label, diffs in _changes(document).items() if label not in ANCHOR_LABELS}
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

    # 3a. next-song quality anti-correlated with popularity (baseline), over the whole range and at the head, in
    # both bucketings
    baseline = main.get("baseline")
    full_matrix = None if baseline is None else _bucket_matrix(baseline)
    eligible = _eligible_deciles(document)
    for head in (False, True):
        key = "popularity_head" if head else "popularity"
        claim = ("Next-song quality is anti-correlated with popularity at the head (the most popular deciles)" if head
                 else "Next-song quality is anti-correlated with popularity")
        results = {bucketing: _popularity_trend(document, baseline, bucketing, head) for bucketing in _BUCKETINGS}
        verdict, evidence = _combine_bucketings(results)
        verdicts.append(Verdict(key, claim, _popularity_rule(head), verdict, evidence))
    if full_matrix is None or len(eligible) < 3:
        evidence = ("no bucket results" if full_matrix is None else
                    f"only {len(eligible)} decile(s) hold songs with at least min_count training plays: too few for a trend")
        verdicts.append(Verdict("rebalancing", "Tuning rebalances quality across popularity levels",
                                "needs the popularity trend above", "not testable", evidence))
    else:
        matrix = full_matrix[:, eligible]
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
    verdicts.append(_proxy_verdict(document))
    return verdicts


PROXY_CLAIM = "Calinski-Harabasz is a valid proxy for local coherence (why the paper optimises CH)"
PROXY_RULE = (f"over every distinct training of every study (each counted once), on validation: Spearman ρ between "
              f"CH-artist and artist coherence and between CH-genre and genre coherence with a 95% bootstrap interval "
              f"(BCa, trials resampled in pairs); judged on the well-trained trials (validation NDCG ≥ "
              f"{proxy.WELL_TRAINED_SHARE:g} x that of gensim's defaults on the same data and study seed): a proxy holds "
              f"when the interval's lower bound is above {proxy.STRONG:g}, fails when the interval reaches 0; supported "
              "when every proxy holds, not supported when every proxy fails, partly otherwise")


def _proxy_verdict(document: Mapping[str, Any]) -> Verdict:
    pairs = proxy.ch_proxy(document)
    if pairs is None:
        return Verdict("ch_proxy", PROXY_CLAIM, PROXY_RULE, "not testable",
                       "local coherence per trial is not available in these results (recorded before songhpo kept it "
                       "for every trial): re-run the experiment")
    if not pairs:
        return Verdict("ch_proxy", PROXY_CLAIM, PROXY_RULE, "not testable", "no trial has both CH and coherence values")
    parts = []
    for pair in pairs:
        good, every = pair.well_trained, pair.overall
        text = (f"{_metric_title(pair.proxy, 0)} vs {_metric_title(pair.target, 0)}: {_rho(good)} over {good.n} "
                f"well-trained trials ({_rho(every)} over all {every.n}): {pair.outcome}")
        if pair.outcome == "fails":
            text += (f". CH does not rank embeddings by {_metric_title(pair.target, 0)} here: optimise "
                     f"`{pair.target}` itself (an accepted objective; every trial computes it already)")
        elif pair.outcome == "not testable":
            text += f" (fewer than {proxy.MIN_TRIALS} well-trained trials)"
        parts.append(text)
    tested = [p.outcome for p in pairs if p.outcome != "not testable"]
    verdict = ("not testable" if not tested else "supported" if all(o == "holds" for o in tested)
               else "not supported" if all(o == "fails" for o in tested) else "partly supported")
    return Verdict("ch_proxy", PROXY_CLAIM, PROXY_RULE, verdict, "; ".join(parts))


def _rho(correlation: proxy.Correlation) -> str:
    if correlation.rho is None:
        return "ρ n/a"
    if correlation.low is None:
        return f"ρ = {correlation.rho:+.2f}"
    return f"ρ = {correlation.rho:+.2f} [{correlation.low:+.2f}, {correlation.high:+.2f}]"


# -- anchors against the multi-objective front -----------------------------------------------------------------

#: The anchors of the page: (label, name shown).
ANCHORS = (("baseline", "gensim's defaults"), ("literature", "literature setting (Caselles-Dupré et al. 2018)"),
           ("ndcg", "single-objective best (ndcg mode)"))


def _feasible_front(study: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The feasible, non-dominated trials of a study summary (validation objective values)."""
    from hpo.config import METRIC_DIRECTIONS

    maximise = [METRIC_DIRECTIONS[m] == "maximize" for m in study["objectives"]]
    feasible = [t for t in study["trials"] if t.get("feasible", True) and t.get("values")]
    return [t for t in feasible
            if not any(dominates(o["values"], t["values"], maximise) for o in feasible if o is not t)]


def anchor_dominance(document: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per anchor label, per study seed: the nsga2 study's feasible front members (validation objective values)
    that dominate the anchor's chosen trial and those it dominates.

    Returns ``{label: [{"seed", "trial", "front", "dominated_by": [trial numbers], "dominates": [...]}]}``;
    an anchor without validation values for every objective, or a seed without an nsga2 study, is left out.
    """
    from hpo.config import METRIC_DIRECTIONS

    fronts = {proxy.study_seed(document, s): s for s in document["studies"] if s["mode"] == "nsga2" and s["fraction"] == 1.0}
    seed_of = {s["study"]: proxy.study_seed(document, s) for s in document["studies"]}
    out: dict[str, list[dict[str, Any]]] = {}
    for label, _ in ANCHORS:
        placed: list[Mapping[str, Any]] = []
        for config in document["configurations"]:
            study = fronts.get(seed_of.get(config["study"], -1))
            if config["label"] != label or config["fraction"] != 1.0 or study is None:
                continue
            # A scale run's baseline (another study prefix, same seed) is the same training: place it once.
            if any(same_runs(config, other) for other in placed):
                continue
            placed.append(config)
            objectives = study["objectives"]
            point = [(config.get("validation") or {}).get(m) for m in objectives]
            if any(v is None for v in point):
                continue
            maximise = [METRIC_DIRECTIONS[m] == "maximize" for m in objectives]
            front = _feasible_front(study)
            out.setdefault(label, []).append({
                "seed": seed_of[config["study"]], "trial": config["trial"], "front": len(front),
                "dominated_by": [t["number"] for t in front if dominates(t["values"], point, maximise)],
                "dominates": [t["number"] for t in front if dominates(point, t["values"], maximise)]})
    return out


def _scale_points(document: Mapping[str, Any], base: str) -> list[dict[str, Any]]:
    """Per training fraction (ascending) of the scale study repeating mode ``base``: its study (the first study
    seed's), every study seed's studies, tuned configuration (the balanced compromise) and baseline, each pooled
    over the study seeds (:func:`_pooled`)."""
    groups: dict[float, list[tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]]] = {}
    for study in document["studies"]:
        if study.get("scale_of", "nsga2" if study["mode"] in ("scale", "nsga2") else None) != base:
            continue
        configs = [c for c in document["configurations"] if c["study"] == study["study"] and c.get("test_runs")]
        tuned = next((c for c in configs if c["mode"] in ("scale", base) and c["label"] != "nsga2 best-ndcg"), None)
        baseline = next((c for c in configs if c["mode"] == "study-baseline"), None)
        if tuned is None or baseline is None:
            continue
        groups.setdefault(float(study["fraction"]), []).append((study, tuned, baseline))
    points = []
    for fraction, members in sorted(groups.items()):
        seconds = [x for study, _, _ in members for x in study["trial_seconds"]]
        points.append({"fraction": fraction, "study": members[0][0], "studies": [m[0] for m in members],
                       "tuned": _pooled([m[1] for m in members]), "baseline": _pooled([m[2] for m in members]),
                       "seconds": statistics.median(seconds) if seconds else float("nan")})
    return points


# -- figures ------------------------------------------------------------------------------------------------


def bucket_figure(document: Mapping[str, Any], key: str = EQUAL_SONGS) -> go.Figure | None:
    """Test NDCG@K by target-song popularity decile of bucketing ``key`` (:data:`EQUAL_SONGS` or
    :data:`EQUAL_PAIRS`), one line per main configuration, 95% error bars; ``None`` without such results."""
    edges = _edges(document, key)
    main = _main_configurations(document)
    if edges is None or not main:
        return None
    figure = go.Figure()
    for label, config in main.items():
        matrix = _bucket_matrix(config, key=key)
        if matrix is None:
            continue
        intervals = [mean_interval(matrix[:, j]) for j in range(matrix.shape[1])]
        x = list(range(1, matrix.shape[1] + 1))
        figure.add_trace(go.Scatter(
            x=x, y=[i.mean for i in intervals], name=label, mode="lines+markers",
            line={"color": _COLOURS.get(label)}, error_y=error_bars(intervals)))
    k = document["settings"]["k"]
    figure.update_layout(
        title=f"Test NDCG@{k} by {_BUCKETINGS[key][:-1]} of the target song (1 = least played), mean and 95% CI",
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
    """Validation NDCG against the clustering objective for every trial of every mode's study (the clustering
    study's objective; without one, the first clustering objective of the multi-objective studies)."""
    clustering = next((s["objectives"][0] for s in document["studies"] if s["mode"] == "clustering"), None)
    if clustering is None:
        clustering = next((m for s in document["studies"] if s["mode"] in MULTI_LABELS
                           for m in s["objectives"] if m != "ndcg"), None)
    studies = [s for s in document["studies"] if s["mode"] in ("ndcg", "clustering", "random", "nsga2", "nsga2-free")]
    if clustering is None or not studies:
        return None
    figure = go.Figure()
    seeds: dict[str, list[int]] = {}
    for study in studies:
        seeds.setdefault(study["mode"], []).append(study.get("seed", 0))
    for study in studies:
        trials = [t for t in study["trials"] if t.get("ndcg") is not None and t.get(clustering) is not None]
        mode = study["mode"]
        # One legend entry per mode, however many study seeds it ran with; the hover names study and trial.
        name = mode if len(seeds[mode]) < 2 else f"{mode} (study seeds {', '.join(map(str, sorted(seeds[mode])))})"
        figure.add_trace(go.Scatter(
            x=[t["ndcg"] for t in trials], y=[t[clustering] for t in trials], mode="markers", name=name,
            legendgroup=mode, showlegend=study.get("seed", 0) == min(seeds[mode]),
            text=[f"{study['study']} trial {t['number']}" for t in trials],
            marker={"color": _COLOURS.get(mode), "size": 8, "opacity": 0.7,  # modes share start-up draws
                    "symbol": ["circle" if t["feasible"] else "x" for t in trials]}))
    figure.update_layout(title="Every trial on validation (x = infeasible under the HardNeg safeguard)",
                         xaxis_title="NDCG@K (validation)", yaxis_title=f"{clustering} (validation)", height=520,
                         template="plotly_white")
    return figure


# -- the page ----------------------------------------------------------------------------------------------------


def render_markdown(document: Mapping[str, Any], *, title: str, commands: Sequence[str],
                    figures: Sequence[str], notes: str | None = None, before: Mapping[str, Any] | None = None) -> str:
    """The results page as Markdown; ``figures`` are the PNG file names written next to it, ``notes`` an
    optional Markdown text placed after the verdicts, ``before`` the results document of an earlier run of the
    experiment (its headline numbers go into a "before" table next to this run's)."""
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
        f"included); NSGA-II generations of {_population(document)}; K = {k}; search space preset "
        f"`{settings.get('search_preset', 'paper')}`; {_seeds_text(document)}. Each "
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
    out.append(markdown_table(["claim", "verdict", "our numbers", "rule"],
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
    out.append(markdown_table(["configuration", "trial", *[_metric_title(m, k) for m in headline]], rows))
    out += ["", "How each configuration was chosen (on validation only):", ""]
    untuned = _chose_baseline(document)
    out += [f"- **{label}** ({c['study']}, trial {c['trial']}): {c['rule']}."
            + (" That is the baseline's configuration: nothing beat gensim's defaults on validation within the "
               "budget, so its changes are exactly 0 and the claims leave it out." if label in untuned else "")
            for label, c in main.items()]

    if before is not None:
        out += ["", "## Before and after", ""]
        out += _before_section(before, document)

    out += ["", "## Anchors against the multi-objective front", ""]
    out += _anchor_section(document, main, changes)

    out += ["", "## Side effects: every metric, every mode (test split, change vs baseline)", ""]
    labels = [label for label in main if label != "baseline"]
    rows = []
    for m in TABLE_METRICS:
        if not _available(document, m):
            continue
        base = _ci(mean_interval(_seed_values(main["baseline"], m))) if "baseline" in main else "n/a"
        rows.append([_metric_title(m, k), base, *[_change(m, changes[label][m]) for label in labels]])
    out.append(markdown_table(["metric", "baseline", *labels], rows))
    unavailable = [m for m in TABLE_METRICS if not _available(document, m)]
    if unavailable:
        out += ["", f"Unavailable on this dataset (no labels or no hard negatives): {', '.join(unavailable)}."]

    out += ["", "## Popularity buckets", ""]
    for key, figure, heading in ((EQUAL_SONGS, "buckets.png", "Equal-song deciles (each holds a tenth of the songs)"),
                                 (EQUAL_PAIRS, "buckets-pairs.png",
                                  "Equal-pair deciles (each holds about a tenth of the test pairs)")):
        out += [f"### {heading}", ""]
        if figure in figures:
            out += [f"![NDCG by {_BUCKETINGS[key][:-1]}](" + _figure_path(title, figure) + ")", ""]
        out += [*_bucket_table(document, main, key), ""]
    out += [f"The paper's anti-correlation is tested over every decile with vectors and on the head (the "
            f"{HEAD_DECILES} most popular such deciles), in both bucketings: see the verdicts. Equal-song deciles put "
            "most test pairs in the top decile; equal-pair deciles split the popular songs finer."]

    out += ["", "## Is Calinski-Harabasz a proxy for local coherence?", ""]
    out += _proxy_section(document)

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
        out.append(markdown_table(["configuration", "R-precision", f"NDCG@{k}", "playlists"], rows))
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
    out.append(markdown_table(["mode", "study", "sampler", "objectives", "trials", "failed", "infeasible", "front",
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
                             f"{sum(x['optimisation_seconds'] for x in p['studies']) / 60:.1f}"])
        out.append(markdown_table(["study", "training data", "sequences", "best on validation (feasible)",
                                   f"tuned test NDCG@{k}", f"baseline test NDCG@{k}", "tuned vs baseline",
                                   "chosen parameters", "median s/trial", "study minutes"], rows))
        out += ["", "Evaluation pairs are the same at every scale; a song the subset never plays has no vector, so "
                "its pairs count as misses. The 10% subset is contained in the 25% one, and so on. The tuned "
                "configuration is the balanced compromise of each study's feasible front."]

    out += ["", "## Chosen configurations", ""]
    rows = []
    for c in document["configurations"]:
        if c["mode"] == "study-baseline":
            continue
        rows.append([c["label"], c["study"], str(c["trial"]), _params_text(c["params"]), str(len(c["test_runs"]))])
    out.append(markdown_table(["configuration", "study", "trial", "Word2Vec parameters", "test seeds"], rows))

    check = _determinism(document)
    if check is not None:
        out += ["", f"Determinism check: the baseline was re-trained on test in {check[0]} studies with the same seeds; "
                f"the largest difference between them over every metric is {check[1]:.3g}."]
    out += ["", "## How to reproduce", "", "```sh", *commands, "```", ""]
    return "\n".join(out)


def _bucket_table(document: Mapping[str, Any], main: Mapping[str, Mapping[str, Any]], key: str) -> list[str]:
    """The table of test NDCG by decile of bucketing ``key`` for every main configuration (lines)."""
    edges = _edges(document, key)
    k = document["settings"]["k"]
    if edges is None:
        return ["Not available in these results: they were recorded before songhpo computed this bucketing "
                "(re-run the experiment)." if key == EQUAL_PAIRS and _edges(document) is not None else "No bucket results."]
    matrices = {label: _bucket_matrix(c, key=key) for label, c in main.items()}
    pairs = next((run["buckets"][key]["pairs"] for c in main.values() for run in c.get("test_runs", [])
                  if run.get("buckets") and run["buckets"].get(key)), None)
    rows = []
    for j in range(len(edges) - 1):
        cells = [f"{j + 1} ({edges[j]:g}, {edges[j + 1]:g}]", "n/a" if pairs is None else str(pairs[j])]
        for label in main:
            matrix = matrices[label]
            cells.append("n/a" if matrix is None else _ci(mean_interval(matrix[:, j])))
        rows.append(cells)
    lines = [markdown_table(["decile (plays)", "test pairs", *main.keys()], rows), "",
             f"Test NDCG@{k} by the popularity decile of the target song (decile edges in training plays; a decile "
             "without pairs is n/a)."]
    eligible = _eligible_deciles(document, key)
    if eligible and eligible[0] > 0:
        which = "Decile 1 holds" if eligible[0] == 1 else f"Deciles 1-{eligible[0]} hold"
        # An equal-pair decile can reach past min_count (yes_big's first one is (1, 5]): it scores little, not 0.
        lines += [f"{which} songs with fewer training plays than the baseline's min_count: they get "
                  "no vector from gensim with that min_count, so they score 0 (or little, where a decile also holds "
                  "songs at min_count) there; the popularity verdicts use deciles "
                  f"{eligible[0] + 1}-{len(edges) - 1}."]
    return lines


def _proxy_section(document: Mapping[str, Any]) -> list[str]:
    pairs = proxy.ch_proxy(document)
    if pairs is None:
        return ["Not available in these results: local coherence was not kept for every trial when they were "
                "recorded; re-run the experiment."]
    if not pairs:
        return ["No trial has both a Calinski-Harabasz value and a local coherence (no labels)."]
    trials = proxy.distinct_trials(document)
    rows = []
    for pair in pairs:
        for subset, correlation in (("well-trained", pair.well_trained), ("all", pair.overall)):
            rows.append([f"{_metric_title(pair.proxy, 0)} vs {_metric_title(pair.target, 0)}", subset,
                         str(correlation.n), _num(correlation.rho, 3),
                         "n/a" if correlation.low is None else f"[{_num(correlation.low, 3)}, {_num(correlation.high, 3)}]",
                         pair.outcome if subset == "well-trained" else ""])
    return [markdown_table(["proxy vs target", "trials", "n", "Spearman ρ", "95% bootstrap CI", "outcome"], rows), "",
            f"Validation values of {len(trials)} distinct trainings: every completed trial of every study, each counted "
            "once (a study's trial 0 re-trains gensim's defaults, and studies with the same seed share their first "
            "generation: the same training fraction, parameters and seed is one point). Well-trained: validation NDCG "
            f"at least {proxy.WELL_TRAINED_SHARE:g} x that of gensim's defaults trained on the same data with the same "
            "study seed (collapsed embeddings score low on every metric at once and would make any two metrics "
            f"correlate). Interval: BCa bootstrap, {proxy.RESAMPLES} paired resamples of trials, seeded. The proxy holds "
            f"when the well-trained interval lies above ρ = {proxy.STRONG:g}, fails when it reaches 0, and is weak in "
            "between; where it fails, optimise `coherence_artist` / `coherence_genre` directly (accepted objective "
            "names; every trial computes them already)."]


def _anchor_section(document: Mapping[str, Any], main: Mapping[str, Mapping[str, Any]],
                    changes: Mapping[str, Mapping[str, Difference]]) -> list[str]:
    k = document["settings"]["k"]
    metrics = [m for m in ("ndcg", "ch_artist", "ch_genre", "coherence_artist", "coherence_genre", "hardneg")
               if _available(document, m)]
    dominance = anchor_dominance(document)
    several = len(study_seeds(document)) > 1
    rows = []
    for label, name in ANCHORS:
        config = main.get(label)
        if config is None:
            continue
        cells = [f"{name}", str(config["trial"])]
        for m in metrics:
            cell = _ci(mean_interval(_seed_values(config, m)))
            if label != "baseline" and label in changes:
                cell += f"<br>{_change(m, changes[label][m])}"
            cells.append(cell)
        parts = []
        for entry in dominance.get(label, []):
            seed = f"seed {entry['seed']}: " if several else ""
            parts.append(f"{seed}dominated by {_trial_list(entry['dominated_by'])} of {entry['front']}; dominates "
                         f"{_trial_list(entry['dominates'])}")
        cells.append("<br>".join(parts) or "n/a (no nsga2 study)")
        rows.append(cells)
    if not rows:
        return ["No anchor was run (modes baseline, literature, ndcg)."]
    header = ["anchor", "trial", *[_metric_title(m, k) for m in metrics], "vs the nsga2 feasible front (validation)"]
    return [markdown_table(header, rows), "",
            "Test values over the re-training seeds (change vs gensim's defaults below each). The last column compares "
            "the anchor's validation objective values with the nsga2 study's feasible Pareto front (same study seed): "
            "which front trials dominate the anchor (at least as good in every objective, better in one) and which "
            "front trials the anchor dominates; the anchors are compared without the HardNeg safeguard."]


#: Metrics of the before/after table.
_BEFORE_METRICS = ("ndcg", "ch_artist", "ch_genre", "hardneg")


def _before_section(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Lines of the table that sets an earlier run's headline test numbers next to this run's."""
    k = now["settings"]["k"]
    old, new = _main_configurations(before), _main_configurations(now)
    metrics = [m for m in _BEFORE_METRICS if _available(before, m) or _available(now, m)]
    rows = []
    for label in [*old, *(label for label in new if label not in old)]:
        cells = [label]
        for m in metrics:
            values = [mean_interval(_seed_values(c, m)).mean if c is not None else None
                      for c in (old.get(label), new.get(label))]
            cells.append(f"{_num(values[0])} → {_num(values[1])}")
        cells.append(f"{_params_text(old[label]['params']) if label in old else 'n/a'} → "
                     f"{_params_text(new[label]['params']) if label in new else 'n/a'}")
        rows.append(cells)

    def setup(document: Mapping[str, Any]) -> str:
        settings = document["settings"]
        infeasible = sum(s["infeasible"] for s in document["studies"] if s["mode"] in ("random", "nsga2"))
        searched = sum(s["trials_complete"] for s in document["studies"] if s["mode"] in ("random", "nsga2"))
        return (f"preset `{settings.get('search_preset', 'paper')}`, {settings['trials']} trials per mode, NSGA-II "
                f"generations of {_population(document)}, {_seeds_text(document).replace('**', '')}; "
                f"{infeasible} of {searched} random/nsga2 trials infeasible under the safeguard")

    return [markdown_table(["configuration", *[f"{_metric_title(m, k)} before → now" for m in metrics], "parameters"], rows),
            "", f"Test means. Before: {setup(before)}. Now: {setup(now)}."]


def _trial_list(numbers: Sequence[int]) -> str:
    if not numbers:
        return "none"
    return f"{len(numbers)} (trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))})"


def _population(document: Mapping[str, Any]) -> str:
    """The NSGA-II generation size the nsga2 studies used (recorded per study; older results: the setting)."""
    sizes = sorted({s.get("population_size") for s in document["studies"] if s["mode"] == "nsga2"} - {None})
    if not sizes:
        return str(document["settings"].get("population_size") or "n/a")
    return ", ".join(str(v) for v in sizes)


def _seeds_text(document: Mapping[str, Any]) -> str:
    seeds = study_seeds(document)
    if len(seeds) == 1:
        return f"study seed {seeds[0]} (one search per mode)"
    return (f"**{len(seeds)} study seeds** ({', '.join(map(str, seeds))}): every mode searched once per seed; a "
            "configuration's test runs pool the choices of every seed, so its intervals include how much the search's "
            "outcome depends on its seed")


def _params_text(params: Mapping[str, Any] | None) -> str:
    """The searched parameters of either preset, compactly (``None``: pooled choices that differ by seed)."""
    if params is None:
        return "differs by study seed"
    return ", ".join(f"{n}={_num(v, 3) if isinstance(v, float) else v}" for n, v in params.items()
                     if n in ("vector_size", "window", "ns_exponent", "negative", "alpha", "epochs", "sample",
                              "min_count"))


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
    # Runs with the same seed are the same training (different study seeds give different test seeds).
    first_run: dict[int, Mapping[str, Any]] = {}
    for config in baselines:
        for run in config["test_runs"]:
            first_run.setdefault(run["seed"], run)
    for other in baselines:
        for run_b in other["test_runs"]:
            run_a = first_run[run_b["seed"]]
            for metric in TABLE_METRICS:
                a, b = run_a["metrics"].get(metric), run_b["metrics"].get(metric)
                if a is not None and b is not None:
                    largest = max(largest, abs(float(a) - float(b)))
    return len(baselines), largest


def write_results_page(document: Mapping[str, Any], out: str | Path, *, title: str | None = None,
                       commands: Sequence[str] = (), png: bool = True, notes: str | None = None,
                       before: Mapping[str, Any] | None = None) -> list[Path]:
    """Write the Markdown page ``out`` and, with ``png``, its figures ``<slug>-<figure>.png`` next to it
    (``before``: an earlier run's results document, see :func:`render_markdown`).

    Returns the written paths. Figures are exported first (atomically); the page is written last.
    """
    from dashboards.report import export_pngs

    out = Path(out)
    title = title or Path(document["dataset"]["path"]).name
    written: list[Path] = []
    names: list[str] = []
    if png:
        figures = {"buckets.png": bucket_figure(document), "buckets-pairs.png": bucket_figure(document, EQUAL_PAIRS),
                   "scale.png": scale_figure(document), "search.png": search_figure(document)}
        items = [(f"{_slug(title)}-{name.removesuffix('.png')}", figure) for name, figure in figures.items()
                 if figure is not None]
        written += export_pngs(items, out.parent)
        names = [name for name, figure in figures.items() if figure is not None]
    commands = commands or reproduce_commands(document, out)
    atomic_write_text(out, render_markdown(document, title=title, commands=commands, figures=names,
                                           notes=notes, before=before))
    return [*written, out]
