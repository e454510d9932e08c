"""Is Calinski-Harabasz a valid proxy for local coherence? (the results page's CH-proxy section and verdict)

The paper optimises CH-artist and CH-genre because local coherence (the share of a song's K nearest
neighbours that share its label) needs a kNN search. Every trial records both on validation, so the proxy
can be tested directly: over the distinct trainings of every study in an experiment's results, the Spearman
rank correlation between CH-artist and artist coherence, and between CH-genre and genre coherence.

- **Distinct trainings.** Each study re-trains gensim's defaults as its trial 0, and studies with the same
  study seed share their seeded first generation, so the same training (same training fraction, Word2Vec
  parameters and seed) appears in several studies with identical metrics. Each is counted once (the first
  study in document order): a duplicate would count one point several times.
- **Well-trained trials** (:data:`WELL_TRAINED_SHARE`): validation NDCG at least half of the NDCG of gensim's
  defaults trained on the same data (the baseline trial of the same training fraction and study seed). A
  collapsed embedding (too few epochs, a learning rate that diverges) scores low on everything at once, which
  makes any two metrics correlate; the question is whether CH ranks *useful* embeddings like coherence does.
- **Interval.** A 95% bootstrap interval of Spearman's rho (``scipy.stats.bootstrap``, BCa, paired resampling
  of trials, seeded), :data:`RESAMPLES` resamples; at least :data:`MIN_TRIALS` trials are needed.
- **Outcome per pair** (:func:`proxy_outcome`, on the well-trained trials): *holds* when the interval's lower
  bound is above :data:`STRONG` (a strong positive association, surely); *fails* when the interval reaches 0
  or below (no evidence that a higher CH means a higher coherence); *weak* otherwise.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["MIN_TRIALS", "PAIRS", "STRONG", "WELL_TRAINED_SHARE", "Correlation", "ProxyPair", "ch_proxy",
           "distinct_trials", "proxy_outcome", "rank_correlation", "study_seed"]

#: (proxy, target) metric pairs: CH-artist for artist coherence, CH-genre for genre coherence.
PAIRS = (("ch_artist", "coherence_artist"), ("ch_genre", "coherence_genre"))
#: A trial is well-trained when its validation NDCG is at least this share of its baseline's.
WELL_TRAINED_SHARE = 0.5
#: The proxy holds when the well-trained interval's lower bound is above this rank correlation.
STRONG = 0.5
#: Fewest trials for a correlation and its interval.
MIN_TRIALS = 10
RESAMPLES = 4999
LEVEL = 0.95


@dataclass(frozen=True)
class Correlation:
    """Spearman's rho of ``n`` trials with its 95% bootstrap interval (all ``None`` below :data:`MIN_TRIALS`)."""

    rho: float | None
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True)
class ProxyPair:
    """The test of one proxy: over every distinct trial and over the well-trained ones, and the outcome."""

    proxy: str
    target: str
    overall: Correlation
    well_trained: Correlation
    outcome: str  # "holds", "weak", "fails", "not testable"


def distinct_trials(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every completed trial of every study, each training once, with ``reference_ndcg``: the validation NDCG of
    gensim's defaults on the same training fraction and study seed (``None`` when no such baseline is recorded).

    Trials without ``training_params`` (results from before they were recorded) are kept as they are.
    """
    references: dict[tuple[float, int], float] = {}
    for study in document["studies"]:
        for trial in study.get("trials", []):
            if trial.get("baseline") and trial.get("ndcg") is not None:
                references.setdefault((float(study["fraction"]), study_seed(document, study)), trial["ndcg"])
    seen: set[Any] = set()
    out = []
    for study in document["studies"]:
        reference = references.get((float(study["fraction"]), study_seed(document, study)))
        for trial in study.get("trials", []):
            params = trial.get("training_params")
            key: Any = ((float(study["fraction"]), trial.get("seed"), json.dumps(params, sort_keys=True))
                        if params is not None else (study["study"], trial["number"]))
            if key in seen:
                continue
            seen.add(key)
            out.append({**trial, "study": study["study"], "reference_ndcg": reference})
    return out


def study_seed(document: Mapping[str, Any], study: Mapping[str, Any]) -> int:
    """The study seed of one study summary (results from one run: the experiment's ``--seed``)."""
    return int(study.get("seed", document["settings"].get("seed", 0)))


def well_trained(trial: Mapping[str, Any]) -> bool:
    """Validation NDCG at least :data:`WELL_TRAINED_SHARE` of its ``reference_ndcg`` (False when unknown)."""
    ndcg, reference = trial.get("ndcg"), trial.get("reference_ndcg")
    return ndcg is not None and reference is not None and ndcg >= WELL_TRAINED_SHARE * reference


def rank_correlation(x: Sequence[float], y: Sequence[float], seed: int = 0) -> Correlation:
    """Spearman's rho of the paired values and its 95% BCa bootstrap interval (trials resampled in pairs)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = int(xs.size)
    if n < MIN_TRIALS or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Correlation(None, None, None, n)
    rho = float(stats.spearmanr(xs, ys).statistic)

    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        # A resample of tied values has no correlation (NaN, and scipy says so); BCa copes with a few.
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        result = stats.bootstrap((xs, ys), _spearman_along, paired=True, vectorized=True, n_resamples=RESAMPLES,
                                 confidence_level=LEVEL, rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return Correlation(rho, None, None, n)
    return Correlation(rho, low, high, n)


def _spearman_along(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (every bootstrap resample at once): Pearson's r of the average ranks, which
    is its definition and what :func:`scipy.stats.spearmanr` computes for one pair of samples."""
    return stats.pearsonr(stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis), axis=axis).statistic


def proxy_outcome(correlation: Correlation) -> str:
    """``holds`` (interval above :data:`STRONG`), ``fails`` (interval reaches 0 or below), ``weak`` (between),
    or ``not testable`` (no interval)."""
    if correlation.low is None:
        return "not testable"
    if correlation.low > STRONG:
        return "holds"
    if correlation.low <= 0.0:
        return "fails"
    return "weak"


def ch_proxy(document: Mapping[str, Any], seed: int = 0) -> list[ProxyPair] | None:
    """The test of every proxy pair the document has labels for; ``None`` when its trials carry no coherence
    (results from before songhpo kept it per trial)."""
    trials = distinct_trials(document)
    if not any(t.get(target) is not None for t in trials for _, target in PAIRS):
        return None
    out = []
    for proxy, target in PAIRS:
        both = [t for t in trials if _finite(t.get(proxy)) and _finite(t.get(target))]
        if not both:
            continue
        good = [t for t in both if well_trained(t)]
        overall = rank_correlation([t[proxy] for t in both], [t[target] for t in both], seed)
        subset = rank_correlation([t[proxy] for t in good], [t[target] for t in good], seed)
        out.append(ProxyPair(proxy, target, overall, subset, proxy_outcome(subset)))
    return out


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(float(value)))
