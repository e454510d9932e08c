"""The experiment page when the budget was too small: modes that chose the baseline make a claim *not
testable*, never "not supported", and a configuration that is the baseline's own runs differs from it by
exactly [0, 0], not by a Welch interval around 0."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dashboards.experiment import claim_verdicts, compare, difference_interval, render_markdown, same_runs
from tests.conftest import run_cli

#: Deciles 1-2 below gensim's min_count (no vectors there); 3-10 hold the trend.
EDGES = [0, 2, 4, 5, 6, 7, 8, 10, 12, 15, 40]
BASE = {"ndcg": 0.10, "ndcg_in": 0.09, "ndcg_out": 0.11, "hitrate": 0.2, "ch_artist": 10.0, "ch_genre": 20.0,
        "hardneg": 0.01, "coherence_artist": 0.3, "coherence_genre": 0.5, "continuation_rprecision": 0.05,
        "continuation_ndcg": 0.1, "continuation_playlists": 40}
BUCKETS = [0.0, 0.0, 0.3, 0.25, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04]
#: Per-seed spread of every value: the seeds of one configuration disagree, as real re-trainings do.
NOISE = (-0.02, 0.0, 0.03)
BASELINE_PARAMS = {"vector_size": 100, "window": 5, "ns_exponent": 0.75, "negative": 5, "alpha": 0.025,
                   "epochs": 5, "sample": 0.001, "min_count": 5, "min_alpha": 0.0001}


def _runs(trial: int, values: dict[str, float], buckets: list[float]) -> list[dict[str, Any]]:
    runs = []
    for i, eps in enumerate(NOISE):
        metrics = {m: (v if m == "continuation_playlists" else v * (1 + eps)) for m, v in values.items()}
        runs.append({"seed": trial + 1000 * i, "metrics": metrics,
                     "buckets": {"edges": EDGES, "by_target": {"ndcg": [b * (1 + eps) for b in buckets],
                                                               "hitrate": buckets, "pairs": [5] * len(buckets)}}})
    return runs


def _config(label: str, mode: str, study: str, *, trial: int = 0, values: dict[str, float] | None = None,
            fraction: float = 1.0, params: dict[str, Any] | None = None,
            buckets: list[float] | None = None) -> dict[str, Any]:
    """A chosen configuration; by default the baseline's own (trial 0, gensim's parameters, the same seeds)."""
    return {"label": label, "mode": mode, "study": study, "fraction": fraction, "trial": trial, "rule": "r",
            "params": params or BASELINE_PARAMS, "validation": {},
            "test_runs": _runs(trial, values or BASE, buckets or BUCKETS)}


def _study(name: str, mode: str, objectives: list[str], fraction: float = 1.0) -> dict[str, Any]:
    return {"study": name, "mode": mode, "fraction": fraction, "objectives": objectives, "sampler": "tpe",
            "safeguard": {"enabled": True}, "trials_complete": 4, "trials_failed": 0, "infeasible": 0, "front_size": 1,
            "best_validation": {}, "trial_seconds": [1.0], "optimisation_seconds": 1.0, "trials": [],
            "training_sequences": 10, "scale_of": "nsga2" if mode in ("scale", "nsga2") else None}


MULTI = ["ndcg", "ch_artist", "ch_genre"]
STUDIES = [_study("exp-baseline", "baseline", MULTI), _study("exp-ndcg", "ndcg", ["ndcg"]),
           _study("exp-clustering", "clustering", ["ch_artist"]), _study("exp-random", "random", MULTI),
           _study("exp-nsga2", "nsga2", MULTI), _study("exp-scale-25pct", "scale", MULTI, fraction=0.25)]


def _document(configurations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": "songhpo-experiment", "version": 1, "songhpo": "test",
            "settings": {"k": 10, "trials": 4, "seeds": 3, "population_size": 2, "seed": 0, "dataset": "prep",
                         "out": "exp", "modes": ["baseline", "ndcg", "clustering", "random", "nsga2"],
                         "scales": [0.25, 1.0], "fixed": [], "search_preset": "paper"},
            "dataset": {"path": "prep", "fingerprint": "f" * 64, "counts": {}},
            "studies": STUDIES, "configurations": configurations, "this_run_seconds": 1.0}


def _all_chose_the_baseline() -> dict[str, Any]:
    """Every mode's choice is its study's trial 0: gensim's defaults, trained with the baseline's seeds."""
    configs = [_config("baseline", "baseline", "exp-baseline")]
    for label, study in (("ndcg", "exp-ndcg"), ("clustering", "exp-clustering"), ("random", "exp-random"),
                         ("nsga2", "exp-nsga2"), ("nsga2 best-ndcg", "exp-nsga2")):
        configs.append(_config(label, label.split()[0], study))
    for study in ("exp-ndcg", "exp-clustering", "exp-random", "exp-nsga2"):
        configs.append(_config(f"baseline of {study}", "study-baseline", study))
    quarter = {**BASE, "ndcg": 0.05}
    configs += [_config("nsga2 @ 25%", "scale", "exp-scale-25pct", fraction=0.25, values=quarter),
                _config("baseline of exp-scale-25pct", "study-baseline", "exp-scale-25pct", fraction=0.25,
                        values=quarter)]
    return _document(configs)


def test_the_baselines_own_runs_differ_from_it_by_exactly_zero() -> None:
    baseline = _config("baseline", "baseline", "exp-baseline")
    chosen = _config("ndcg", "ndcg", "exp-ndcg")  # the ndcg study's trial 0: the same trainings
    assert same_runs(chosen, baseline)
    for metric in ("ndcg", "ch_artist", "hardneg"):
        exact = compare(chosen, baseline, metric)
        assert (exact.delta, exact.low, exact.high, exact.relative) == (0.0, 0.0, 0.0, 0.0)
        assert not exact.significant
        # Taken as independent samples, the same values would get an interval of non-zero width.
        values = [run["metrics"][metric] for run in baseline["test_runs"]]
        welch = difference_interval(values, values)
        assert welch.delta == 0.0 and welch.low < 0 < welch.high
    assert compare(chosen, baseline, "unknown_metric").delta is None
    # Other seeds, other parameters or another training fraction are other runs: a Welch interval.
    other = _config("ndcg", "ndcg", "exp-ndcg", trial=3)
    assert not same_runs(other, baseline) and compare(other, baseline, "ndcg").low < 0
    assert not same_runs(_config("x", "ndcg", "s", params={**BASELINE_PARAMS, "window": 3}), baseline)
    assert not same_runs(_config("x", "scale", "s", fraction=0.25), baseline)


def test_constant_samples_give_the_point_difference() -> None:
    diff = difference_interval([0.2, 0.2, 0.2], [0.15, 0.15, 0.15])
    assert diff.low == diff.high == diff.delta == pytest.approx(0.05)


def test_when_every_mode_chose_the_baseline_the_claims_are_not_testable(tmp_path: Path) -> None:
    document = _all_chose_the_baseline()
    verdicts = {v.key: v for v in claim_verdicts(document)}
    for key in ("side_effects", "mitigation", "rebalancing", "downstream", "scale"):
        assert verdicts[key].verdict == "not testable", (key, verdicts[key])
        assert "chose the baseline" in verdicts[key].evidence and "budget of 4 trials" in verdicts[key].evidence
    assert verdicts["popularity"].verdict == "supported"  # the baseline's own trend needs no tuned configuration

    page = render_markdown(document, title="t", commands=["songhpo x"], figures=[])
    # Five claims need a tuned configuration; the CH proxy needs the trials' coherences, which this document lacks.
    assert "**not supported**" not in page and page.count("**not testable**") == 6
    assert verdicts["ch_proxy"].verdict == "not testable" and verdicts["popularity_head"].verdict == "supported"
    assert "the budget was too small" in page
    # Every change vs the baseline in the tables is exactly 0 with the interval [0, 0] (the verdicts above them
    # compare the baseline's own deciles, a real interval).
    tables = page[page.index("## Headline"):]
    changes = re.findall(r"Δ [^\s)\]]+(?: \[[^\]]*\])?", tables)
    assert changes and set(changes) == {"Δ 0 [0, 0]"}, set(changes)
    assert "That is the baseline's configuration" in page

    # The real command writes the same page.
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "results.json").write_text(json.dumps(document))
    result = run_cli("experiment", "report", str(tmp_path / "exp"), "--out", str(tmp_path / "page.md"), "--no-png")
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "page.md").read_text()
    assert "**not supported**" not in written and written.count("**not testable**") == 6


def test_a_mode_that_chose_the_baseline_is_left_out_of_the_claim() -> None:
    document = _all_chose_the_baseline()
    configs = document["configurations"]
    # The NDCG study found a better configuration, at the price of the clustering metrics; the clustering
    # study found nothing better than the baseline.
    tuned = _config("ndcg", "ndcg", "exp-ndcg", trial=3, params={**BASELINE_PARAMS, "window": 2},
                    values={**BASE, "ndcg": 0.2, "ch_artist": 5.0})
    configs[[c["label"] for c in configs].index("ndcg")] = tuned
    verdicts = {v.key: v for v in claim_verdicts(document)}
    side = verdicts["side_effects"]
    # One mode hurt something; the other could not be tested: partly, not "supported" nor "not supported".
    assert side.verdict == "partly supported", side
    assert "ndcg: ch_artist ▼" in side.evidence and "clustering chose the baseline" in side.evidence
    # Every multi-objective mode chose the baseline: mitigation cannot be tested.
    assert verdicts["mitigation"].verdict == "not testable"
    assert "random, nsga2" in verdicts["mitigation"].evidence
    # The tuned NDCG configuration does change the downstream task's numbers: judged on it alone.
    assert verdicts["downstream"].verdict != "not testable"
    assert "clustering, random, nsga2, nsga2 best-ndcg chose the baseline" in verdicts["downstream"].evidence
    # The quarter-data study found something; the full-data one did not: the claim about what more data
    # allows cannot be judged.
    quarter = _config("nsga2 @ 25%", "scale", "exp-scale-25pct", trial=2, fraction=0.25,
                      params={**BASELINE_PARAMS, "window": 9}, values={**BASE, "ndcg": 0.06})
    configs[[c["label"] for c in configs].index("nsga2 @ 25%")] = quarter
    scale = next(v for v in claim_verdicts(document) if v.key == "scale")
    assert scale.verdict == "not testable" and "nsga2 at 100% chose the baseline" in scale.evidence
