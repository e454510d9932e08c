"""The results page's science (issue 18): the anchors against the multi-objective front, the Calinski-Harabasz
proxy test, popularity at the head in both bucketings, and pages merged over several study seeds.

Documents are built by hand so that each rule is met, or just missed, on purpose; statistics are checked
against scipy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from dashboards import proxy
from dashboards.experiment import _main_configurations as _main
from dashboards.experiment import anchor_dominance, claim_verdicts, render_markdown, search_figure
from hpo.experiment import load_results, merge_results
from storage.errors import InputError
from tests.conftest import run_cli
from tests.test_experiment import BASE, _config, _document, _study

MULTI = ["ndcg", "ch_artist", "ch_genre"]


# -- the CH proxy --------------------------------------------------------------------------------------------


def _trial(number: int, ndcg: float, ch: float, coherence: float, *, seed: int = 0, baseline: bool = False,
           params: dict | None = None, genre: tuple[float, float] | None = None) -> dict:
    ch_genre, coherence_genre = genre if genre is not None else (ch, coherence)
    return {"number": number, "values": [ndcg, ch, ch_genre], "feasible": True, "params": {}, "baseline": baseline,
            "seed": seed, "training_params": params if params is not None else {"vector_size": 100 + number},
            "ndcg": ndcg, "ch_artist": ch, "ch_genre": ch_genre, "coherence_artist": coherence,
            "coherence_genre": coherence_genre, "hardneg": 0.01}


def _trial_study(name: str, mode: str, trials: list[dict], seed: int = 0, fraction: float = 1.0) -> dict:
    return {**_study(name, mode, MULTI, fraction=fraction), "seed": seed, "trials": trials}


def test_distinct_trials_count_each_training_once_and_find_their_baseline() -> None:
    defaults = {"vector_size": 100, "window": 5}
    shared = {"vector_size": 50, "window": 3}
    studies = [
        _trial_study("b", "baseline", [_trial(0, 0.10, 1, 0.1, baseline=True, params=defaults)]),
        _trial_study("n", "ndcg", [_trial(0, 0.10, 1, 0.1, baseline=True, params=defaults),
                                   _trial(1, 0.20, 2, 0.2, seed=1, params=shared)]),
        # The same first-generation trial (same seed, same parameters) in another study: the same training.
        _trial_study("m", "nsga2", [_trial(0, 0.10, 1, 0.1, baseline=True, params=defaults),
                                    _trial(1, 0.20, 2, 0.2, seed=1, params=shared),
                                    _trial(2, 0.05, 3, 0.3, seed=2, params={"vector_size": 20})]),
        # Another study seed: its baseline is another training, and the reference of its trials.
        _trial_study("m@1", "nsga2", [_trial(0, 0.30, 1, 0.1, seed=7, baseline=True, params=defaults),
                                      _trial(1, 0.20, 2, 0.2, seed=8, params=shared)], seed=7),
        # A subset of the training data: its own baseline.
        _trial_study("s", "scale", [_trial(0, 0.04, 1, 0.1, baseline=True, params=defaults),
                                    _trial(1, 0.02, 1, 0.1, seed=1, params=shared)], fraction=0.1),
    ]
    trials = proxy.distinct_trials({"settings": {"seed": 0}, "studies": studies})
    assert [(t["study"], t["number"]) for t in trials] == [("b", 0), ("n", 1), ("m", 2), ("m@1", 0), ("m@1", 1),
                                                          ("s", 0), ("s", 1)]
    assert [t["reference_ndcg"] for t in trials] == [0.10, 0.10, 0.10, 0.30, 0.30, 0.04, 0.04]
    # Well-trained: NDCG at least half of the reference, the boundary included.
    assert [proxy.well_trained(t) for t in trials] == [True, True, True, True, True, True, True]
    assert not proxy.well_trained({"ndcg": 0.04999999, "reference_ndcg": 0.1})
    assert proxy.well_trained({"ndcg": 0.05, "reference_ndcg": 0.1})
    assert not proxy.well_trained({"ndcg": 0.2, "reference_ndcg": None})


def test_rank_correlation_is_scipys_spearman_and_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy, "RESAMPLES", 499)
    rng = np.random.default_rng(3)
    x = rng.random(40)
    y = x + rng.normal(0, 0.3, 40)
    y[5] = y[6]  # a tie
    got = proxy.rank_correlation(x, y, seed=11)
    assert got.rho == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
    expected = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
                               n_resamples=499, rng=np.random.default_rng(11)).confidence_interval
    assert (got.low, got.high) == (pytest.approx(expected.low, rel=1e-9), pytest.approx(expected.high, rel=1e-9))
    assert got.low < got.rho < got.high and got.n == 40
    assert proxy.rank_correlation(x, y, seed=11) == got  # seeded
    too_few = proxy.rank_correlation(x[: proxy.MIN_TRIALS - 1], y[: proxy.MIN_TRIALS - 1])
    assert too_few.rho is None and too_few.n == proxy.MIN_TRIALS - 1
    assert proxy.rank_correlation(x[: proxy.MIN_TRIALS], y[: proxy.MIN_TRIALS]).low is not None


def test_proxy_outcome_thresholds() -> None:
    def outcome(low: float | None) -> str:
        return proxy.proxy_outcome(proxy.Correlation(0.7, low, None if low is None else 0.9, 20))

    assert outcome(np.nextafter(proxy.STRONG, 1.0)) == "holds"
    assert outcome(proxy.STRONG) == "weak"  # at the threshold: not above it
    assert outcome(np.nextafter(0.0, 1.0)) == "weak"
    assert outcome(0.0) == "fails"  # the interval reaches 0
    assert outcome(-0.3) == "fails"
    assert outcome(None) == "not testable"


def _proxy_document(n: int = 40, genre_independent: bool = True) -> dict:
    rng = np.random.default_rng(5)
    trials = [_trial(0, 0.10, 10.0, 0.02, baseline=True, params={"vector_size": 100})]
    for i in range(1, n):
        ch = float(rng.uniform(1, 50))
        genre = (float(rng.uniform(1, 300)), float(rng.uniform(0.1, 0.3))) if genre_independent else None
        # Artist coherence follows CH-artist closely; the NDCG of some trials collapses (not well-trained).
        trials.append(_trial(i, 0.10 if i % 4 else 0.01, ch, ch / 500 + float(rng.normal(0, 0.002)), genre=genre))
    document = _document([_config("baseline", "baseline", "m", BASE, trial=0)], [_trial_study("m", "nsga2", trials)])
    return document


def test_the_proxy_verdict_names_the_failing_proxy_and_its_replacement() -> None:
    document = _proxy_document()
    pairs = {p.proxy: p for p in proxy.ch_proxy(document)}
    assert pairs["ch_artist"].outcome == "holds" and pairs["ch_genre"].outcome == "fails"
    assert pairs["ch_artist"].overall.n == 40 and pairs["ch_artist"].well_trained.n == 31  # 9 collapsed trials
    (verdict,) = [v for v in claim_verdicts(document) if v.key == "ch_proxy"]
    assert verdict.verdict == "partly supported"
    assert "`coherence_genre`" in verdict.evidence and "`coherence_artist`" not in verdict.evidence
    assert "over 31 well-trained trials" in verdict.evidence
    page = render_markdown(document, title="t", commands=[], figures=[])
    assert "## Is Calinski-Harabasz a proxy for local coherence?" in page
    assert "| CH-artist vs artist coherence | well-trained | 31 |" in page

    both = _proxy_document(genre_independent=False)  # genre coherence follows CH-genre as well
    (verdict,) = [v for v in claim_verdicts(both) if v.key == "ch_proxy"]
    assert verdict.verdict == "supported" and "optimise" not in verdict.evidence


def test_the_proxy_of_old_results_is_not_available_and_does_not_crash() -> None:
    document = _proxy_document()
    for study in document["studies"]:
        for trial in study["trials"]:
            for key in ("coherence_artist", "coherence_genre", "training_params", "seed"):
                trial.pop(key)
    (verdict,) = [v for v in claim_verdicts(document) if v.key == "ch_proxy"]
    assert verdict.verdict == "not testable" and "re-run" in verdict.evidence
    assert "Not available in these results" in render_markdown(document, title="t", commands=[], figures=[])


# -- popularity at the head -----------------------------------------------------------------------------------

#: Equal-pair deciles: the first holds songs with 1-4 plays (no vector at min_count 5).
PAIR_EDGES = [1, 4, 9, 14, 20, 28, 40, 60, 100, 180, 461]


def _with_pair_buckets(config: dict, values: list[float]) -> dict:
    config = copy.deepcopy(config)
    for i, run in enumerate(config["test_runs"]):
        eps = (-0.001, 0.0, 0.001)[i]
        run["buckets"]["by_target_equal_pairs"] = {"edges": PAIR_EDGES, "pairs": [10] * 10,
                                                   "ndcg": [v + eps for v in values],
                                                   "hitrate": [v + eps for v in values]}
    return config


def test_popularity_is_tested_over_the_whole_range_and_at_the_head_in_both_bucketings() -> None:
    rising = [0.0, 0.0, 0.015, 0.016, 0.023, 0.027, 0.030, 0.035, 0.050, 0.055]  # yes_big's equal-song deciles
    # Equal-pair deciles: rising, then the top deciles fall (0.066 in decile 8, 0.043 in decile 10).
    head_falls = [0.0, 0.02, 0.03, 0.04, 0.05, 0.055, 0.06, 0.066, 0.055, 0.043]
    baseline = _with_pair_buckets(_config("baseline", "baseline", "b", {**BASE, "buckets": rising}, trial=0), head_falls)
    document = _document([baseline], [_study("b", "baseline", MULTI)])
    claims = {v.key: v for v in claim_verdicts(document)}
    whole, head = claims["popularity"], claims["popularity_head"]
    assert whole.verdict == "not supported"  # rising over the range in both bucketings
    assert "equal-song deciles: Spearman ρ = +1.00 over deciles 3-10" in whole.evidence
    assert "equal-pair deciles: Spearman ρ = +" in whole.evidence and "over deciles 2-10" in whole.evidence
    # At the head: equal-song deciles 8-10 still rise, equal-pair deciles 8-10 fall significantly.
    assert head.verdict == "partly supported"
    assert "equal-song deciles: Spearman ρ = +1.00 over deciles 8-10" in head.evidence
    assert "equal-pair deciles: Spearman ρ = -1.00 over deciles 8-10; decile 8 0.066 vs decile 10 0.043" in head.evidence

    # Both bucketings falling at the head: supported; the whole-range verdict is unchanged.
    falls = [*rising[:7], 0.06, 0.05, 0.04]
    document["configurations"][0] = _with_pair_buckets(
        _config("baseline", "baseline", "b", {**BASE, "buckets": falls}, trial=0), head_falls)
    assert {v.key: v.verdict for v in claim_verdicts(document)}["popularity_head"] == "supported"

    page = render_markdown(document, title="t", commands=[], figures=[])
    assert "### Equal-pair deciles (each holds about a tenth of the test pairs)" in page
    assert "| 10 (180, 461] | 10 | 0.043 [" in page
    assert "Decile 1 holds songs with fewer training plays" in page  # equal-pair decile 1: (1, 4] plays


def test_results_without_the_equal_pair_bucketing_say_so() -> None:
    document = _document([_config("baseline", "baseline", "b", BASE, trial=0)], [_study("b", "baseline", MULTI)])
    claims = {v.key: v for v in claim_verdicts(document)}
    assert claims["popularity"].verdict == "supported"  # the equal-song deciles alone decide
    assert "equal-pair deciles: not available in these results" in claims["popularity"].evidence
    page = render_markdown(document, title="t", commands=[], figures=[])
    assert "Not available in these results: they were recorded before songhpo computed this bucketing" in page


# -- anchors ----------------------------------------------------------------------------------------------------


def test_anchors_are_placed_against_the_feasible_front_by_pareto_dominance() -> None:
    def front_trial(number: int, values: list[float], feasible: bool = True) -> dict:
        return {**_trial(number, *values[:1], values[1], 0.1), "values": values, "feasible": feasible}

    trials = [front_trial(0, [0.10, 30.0, 280.0]),  # gensim's defaults
              front_trial(1, [0.12, 35.0, 290.0]),  # dominates the defaults: on the front
              front_trial(2, [0.20, 5.0, 100.0]),   # NDCG-heavy, incomparable with trial 1: on the front
              front_trial(3, [0.30, 40.0, 300.0], feasible=False),  # infeasible: never on the front
              front_trial(4, [0.11, 31.0, 250.0])]  # dominated by trial 1: not on the front
    studies = [_trial_study("m", "nsga2", trials)]
    configs = [_config("baseline", "baseline", "b", BASE, trial=0), _config("literature", "literature", "l", BASE, trial=0),
               _config("ndcg", "ndcg", "n", BASE, trial=7)]
    configs[0]["validation"] = {"ndcg": 0.10, "ch_artist": 30.0, "ch_genre": 280.0}
    configs[1]["validation"] = {"ndcg": 0.12, "ch_artist": 35.0, "ch_genre": 290.0}  # equal to trial 1
    configs[2]["validation"] = {"ndcg": 0.25, "ch_artist": 36.0, "ch_genre": 295.0}  # beats both front members
    studies += [_trial_study(n, mode, []) for n, mode in (("b", "baseline"), ("l", "literature"), ("n", "ndcg"))]
    # A scale run's baseline re-trains gensim's defaults with the same study seed under another prefix.
    configs.append({**copy.deepcopy(configs[0]), "study": "scl-b"})
    studies.append(_trial_study("scl-b", "baseline", []))
    dominance = anchor_dominance(_document(configs, studies))
    assert dominance["baseline"] == [{"seed": 0, "trial": 0, "front": 2, "dominated_by": [1], "dominates": []}]
    # Equal to a front member: neither dominates the other.
    assert dominance["literature"] == [{"seed": 0, "trial": 0, "front": 2, "dominated_by": [], "dominates": []}]
    assert dominance["ndcg"] == [{"seed": 0, "trial": 7, "front": 2, "dominated_by": [], "dominates": [1, 2]}]
    page = render_markdown(_document(configs, studies), title="t", commands=[], figures=[])
    assert "## Anchors against the multi-objective front" in page
    assert "| literature setting (Caselles-Dupré et al. 2018) | 0 |" in page
    assert page.count("dominated by 1 (trial 1) of 2; dominates none") == 1
    assert "dominated by none of 2; dominates 2 (trials 1, 2)" in page
    # The literature setting is an anchor, not a tuned mode: no claim counts it.
    assert all("literature" not in v.evidence for v in claim_verdicts(_document(configs, studies)))


# -- several study seeds on one page ------------------------------------------------------------------------


def test_experiments_with_different_study_seeds_merge_and_pool(tmp_path: Path) -> None:
    configs = [_config("baseline", "baseline", "exp-baseline", BASE, trial=0),
               _config("ndcg", "ndcg", "exp-ndcg", {**BASE, "ndcg": 0.2}, trial=3)]
    studies = [_trial_study("exp-baseline", "baseline", []), _trial_study("exp-ndcg", "ndcg", [])]
    dirs = []
    for seed in (0, 1, 2):
        document = {**_document(copy.deepcopy(configs), copy.deepcopy(studies)), "format": "songhpo-experiment",
                    "version": 1, "this_run_seconds": 1.0}
        document["settings"] = {**document["settings"], "seed": seed, "modes": ["baseline", "ndcg"], "scales": [],
                                "fixed": [], "search_preset": "default"}
        for config in document["configurations"]:
            for run in config["test_runs"]:
                run["seed"] += seed  # the trial seeds follow the study seed
        dirs.append(tmp_path / f"seed{seed}")
        dirs[-1].mkdir()
        (dirs[-1] / "results.json").write_text(json.dumps(document))
    merged = merge_results([load_results(d) for d in dirs], [str(d) for d in dirs])
    assert merged["settings"]["study_seeds"] == [0, 1, 2]
    assert [s["study"] for s in merged["studies"]] == [
        "exp-baseline@seed0", "exp-baseline@seed1", "exp-baseline@seed2", "exp-ndcg@seed0", "exp-ndcg@seed1",
        "exp-ndcg@seed2"]
    page = render_markdown(merged, title="t", commands=[], figures=[])
    assert "**3 study seeds** (0, 1, 2)" in page
    # The ndcg mode's three choices pool their 3 x 3 test runs.
    assert "| ndcg | 3, 3, 3 |" in page
    assert "exp-ndcg@seed0, exp-ndcg@seed1, exp-ndcg@seed2" in page
    verdicts = {v.key: v for v in claim_verdicts(merged)}
    assert verdicts["side_effects"].verdict != "not testable"
    # gensim's defaults reported by two directories of one seed (say, a scale-study run with its own baseline
    # mode) are the same trainings: pooled once.
    twin = {**merged, "configurations": [*merged["configurations"], {**merged["configurations"][0], "study": "scl"}]}
    assert render_markdown(twin, title="t", commands=[], figures=[]).count("| baseline | 0, 0, 0, 0 |") == 1
    assert [r["seed"] for r in _main(twin)["baseline"]["test_runs"]] == [0, 1, 2, 1000, 1001, 1002, 2000, 2001, 2002]
    # Trial seeds are study seed + trial number: seed 0's trial 1 and seed 1's trial 0 share seed 1, yet are
    # different trainings, and both count.
    clash = copy.deepcopy(merged)
    ndcg = [c for c in clash["configurations"] if c["label"] == "ndcg"]
    ndcg[1]["params"] = {"vector_size": 50}
    ndcg[1]["test_runs"] = copy.deepcopy(ndcg[0]["test_runs"])
    assert len(_main(clash)["ndcg"]["test_runs"]) == 9 and _main(clash)["ndcg"]["params"] is None
    # An earlier run's headline next to this one's (the "before" table of a re-run).
    before = load_results(dirs[0])
    before["settings"] = {**before["settings"], "search_preset": "paper", "population_size": 10}
    for config in before["configurations"]:
        for run in config["test_runs"]:
            run["metrics"]["ndcg"] = 0.05
    page = render_markdown(merged, title="t", commands=[], figures=[], before=before)
    assert "## Before and after" in page
    assert "| ndcg | 0.05 → 0.2 |" in page and "| baseline | 0.05 → 0.1 |" in page
    assert "Before: preset `paper`, 4 trials per mode, NSGA-II generations of 10, study seed 0" in page
    report = run_cli("experiment", "report", *map(str, dirs), "--before", str(dirs[0]), "--out", str(tmp_path / "p.md"),
                     "--no-png")
    assert report.returncode == 0, report.stderr
    assert "## Before and after" in (tmp_path / "p.md").read_text()
    # The same seed twice is the same study twice.
    with pytest.raises(InputError, match="is also in"):
        merge_results([load_results(dirs[0]), load_results(dirs[0])], ["a", "b"])


def test_search_figure_gives_each_mode_one_legend_entry_whatever_its_study_seeds() -> None:
    studies = [_trial_study(f"{mode}@seed{seed}", mode, [_trial(0, 0.1, 1, 0.1, baseline=True),
                                                          _trial(1, 0.2 + seed, 2, 0.2, seed=seed + 1)], seed=seed)
               for mode in ("clustering", "nsga2") for seed in (0, 1, 2)]
    studies[0]["objectives"] = ["ch_artist"]
    figure = search_figure(_document([], studies))
    assert len(figure.data) == 6
    legend = [trace.name for trace in figure.data if trace.showlegend]
    assert legend == ["clustering (study seeds 0, 1, 2)", "nsga2 (study seeds 0, 1, 2)"]
    assert [trace.legendgroup for trace in figure.data] == ["clustering"] * 3 + ["nsga2"] * 3
    assert list(figure.data[5].text) == ["nsga2@seed2 trial 0", "nsga2@seed2 trial 1"]
    assert list(figure.data[5].x) == [0.1, 2.2]
    # A single seed keeps the plain mode name.
    single = search_figure(_document([], [s for s in studies if s["seed"] == 0]))
    assert [trace.name for trace in single.data] == ["clustering", "nsga2"]
    assert all(trace.showlegend for trace in single.data)
    # Without a clustering study the multi-objective studies' first clustering objective is the y axis.
    alone = search_figure(_document([], [s for s in studies if s["mode"] == "nsga2"]))
    assert alone.layout.yaxis.title.text == "ch_artist (validation)"
    assert [list(trace.y) for trace in alone.data] == [[1, 2]] * 3
