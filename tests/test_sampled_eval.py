"""Evaluation with a bounded cost (issue 14): a seeded sample of next-song pairs, with standard errors.

Below the cap nothing changes (identical results, SE 0); above it the sampled metrics are means over the
sampled pairs, and their standard errors match the spread of the estimates over many seeded samples of a
real dataset (and a bootstrap); the SE formula equals a brute-force enumeration of every sample.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpo.choices import DEFAULT_MAX_PAIRS
from hpo.config import parse_config
from metrics.evaluate import METRIC_KEYS, SAMPLING_KEYS, EvaluationData, EvaluationSettings, evaluate
from metrics.knn import knn_table
from metrics.next_song import _gains, _hits, hit_rate, ndcg, next_song_ranks
from metrics.popularity import assign_buckets, bucketed_ranking_metrics
from metrics.sampling import evaluation_sample, sample_indices, standard_error, stratified_bucket_means
from storage.errors import InputError
from tests.conftest import assert_one_line_error, run_cli, shared_dataset
from tests.test_metrics_evaluate import make_case

SE_KEYS = ("ndcg_in_se", "ndcg_out_se", "ndcg_se", "hitrate_in_se", "hitrate_out_se", "hitrate_se")
K = 20
SETTINGS = EvaluationSettings(k=K, coherence_k=30, coherence_sample=150, ch_sample=200, seed=7, n_buckets=4)


def _with_cap(cap: int | None, seed: int = 7) -> EvaluationSettings:
    return EvaluationSettings(k=K, coherence_k=30, coherence_sample=150, ch_sample=200, seed=seed, n_buckets=4,
                              max_pairs=cap)


def _bits(value: Any) -> Any:
    """A value compared bit for bit (floats by their bytes, so 0.0 != -0.0 and nan == nan)."""
    if isinstance(value, float):
        return np.float64(value).tobytes()
    if isinstance(value, dict):
        return {key: _bits(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_bits(item) for item in value]
    return value


# -- the cap does not bind: today's exact evaluation, bit for bit ---------------------------------------


def test_a_cap_at_or_above_the_pair_count_gives_the_exact_evaluation_bit_for_bit() -> None:
    emb, present, data = make_case(0, n_pairs=600)
    n = data.pairs_in.shape[0] + data.pairs_out.shape[0]
    exact = evaluate(emb, data, _with_cap(None), present=present)
    for cap in (n, n + 1, 10**9):
        capped = evaluate(emb, data, _with_cap(cap), present=present)
        assert _bits(capped.metrics) == _bits(exact.metrics), cap
        assert _bits(capped.buckets) == _bits(exact.buckets), cap
        assert _bits(capped.sampling) == _bits(exact.sampling), cap
        assert all(np.array_equal(a, b) for a, b in zip(capped.hardneg_per_song, exact.hardneg_per_song))
    assert exact.sampling["pairs_in_sampled"] == exact.metrics["pairs_in"] == data.pairs_in.shape[0]
    assert exact.sampling["pairs_out_sampled"] == exact.metrics["pairs_out"] == data.pairs_out.shape[0]
    assert all(exact.sampling[key] == 0.0 for key in SE_KEYS)
    for side in ("by_target", "by_query"):
        breakdown = exact.buckets[side]
        assert breakdown["pairs_sampled"] == breakdown["pairs"]
        assert breakdown["ndcg_se"] == [None if v is None else 0.0 for v in breakdown["ndcg"]]

    # ... and bit for bit the numbers of the separate functions (what evaluate computed before the cap).
    queries = np.unique(np.concatenate([data.pairs_in[:, 0], data.pairs_out[:, 0], data.hard_negative_pairs.ravel(),
                                        _coherence_songs(emb, present, data)]))
    table = knn_table(emb, queries, k=30, present=present)
    r_in, r_out = next_song_ranks(table, data.pairs_in), next_song_ranks(table, data.pairs_out)
    assert exact.metrics["ndcg_in"] == ndcg(r_in, K) and exact.metrics["ndcg_out"] == ndcg(r_out, K)
    assert exact.metrics["hitrate_in"] == hit_rate(r_in, K) and exact.metrics["hitrate_out"] == hit_rate(r_out, K)
    edges = np.asarray(exact.buckets["edges"])
    every = np.concatenate([data.pairs_in, data.pairs_out])
    ranks = np.concatenate([r_in, r_out])
    for side, column in (("by_target", 1), ("by_query", 0)):
        old = bucketed_ranking_metrics(ranks, assign_buckets(data.train_counts[every[:, column]], edges), 4, K)
        assert exact.buckets[side]["pairs"] == old["pairs"].tolist()
        for name in ("hitrate", "ndcg"):
            assert _bits(exact.buckets[side][name]) == _bits([None if math.isnan(v) else float(v) for v in old[name]])


def _coherence_songs(emb: np.ndarray, present: np.ndarray, data: EvaluationData) -> np.ndarray:
    from metrics._validation import effective_present
    from metrics.coherence import sample_songs

    ok = effective_present(emb, present)
    return np.concatenate([sample_songs(ok & (data.genre_labels >= 0), 150, 7),
                           sample_songs(ok & (data.artist_labels >= 0), 150, 7)])


# -- the sample -------------------------------------------------------------------------------------------


def test_the_sample_is_deterministic_for_a_seed_and_splits_the_cap_between_the_sides() -> None:
    first = evaluation_sample(5_000, 20_000, 4_000, seed=3)
    again = evaluation_sample(5_000, 20_000, 4_000, seed=3)
    other = evaluation_sample(5_000, 20_000, 4_000, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])
    for indices, population in zip(first, (5_000, 20_000)):
        assert indices.size == 2_000 and indices.dtype == np.int64
        assert (np.diff(indices) > 0).all() and indices[0] >= 0 and indices[-1] < population
    # A side with fewer pairs than half of the cap gives the rest to the other; the total is the cap.
    small_in, big_out = evaluation_sample(300, 20_000, 4_000, seed=3)
    assert (small_in.size, big_out.size) == (300, 3_700)
    big_in, small_out = evaluation_sample(20_000, 300, 4_001, seed=3)
    assert (big_in.size, small_out.size) == (3_701, 300)
    assert [s.size for s in evaluation_sample(0, 10, 4, seed=0)] == [0, 4]
    # No cap, or one that does not bind: every pair, in order, with no random draw.
    for cap in (None, 25_000, 10**9):
        whole = evaluation_sample(5_000, 20_000, cap, seed=3)
        assert np.array_equal(whole[0], np.arange(5_000)) and np.array_equal(whole[1], np.arange(20_000))
    # Every pair is equally likely to be drawn.
    counts = np.bincount(np.concatenate([sample_indices(10, 3, seed) for seed in range(3_000)]), minlength=10)
    assert counts.sum() == 9_000 and np.abs(counts - 900).max() < 120


def test_a_binding_cap_evaluates_the_sampled_pairs_and_the_same_pairs_for_the_same_seed() -> None:
    emb, present, data = make_case(1, n_pairs=800)
    cap = 300
    result = evaluate(emb, data, _with_cap(cap), present=present)
    again = evaluate(emb, data, _with_cap(cap), present=present)
    assert _bits({**result.to_dict(), "timings": None}) == _bits({**again.to_dict(), "timings": None})
    take_in, take_out = evaluation_sample(data.pairs_in.shape[0], data.pairs_out.shape[0], cap, seed=7)
    sampled = {"pairs_in_sampled": take_in.size, "pairs_out_sampled": take_out.size,
               "query_songs_sampled": np.unique(np.r_[data.pairs_in[take_in, 0], data.pairs_out[take_out, 0]]).size}
    assert {key: result.sampling[key] for key in sampled} == sampled and take_in.size + take_out.size == cap
    assert set(result.sampling) == set(SAMPLING_KEYS) and tuple(result.metrics) == METRIC_KEYS
    # The populations stay the split's: pairs_in / pairs_out count every pair, and so do the buckets.
    assert (result.metrics["pairs_in"], result.metrics["pairs_out"]) == (data.pairs_in.shape[0], data.pairs_out.shape[0])
    exact = evaluate(emb, data, _with_cap(None), present=present)
    assert result.buckets["by_target"]["pairs"] == exact.buckets["by_target"]["pairs"]
    assert sum(result.buckets["by_target"]["pairs_sampled"]) == cap

    # Each side's metrics are the means over its sampled pairs of the exact per-pair values, with the SE formula.
    table = knn_table(emb, np.arange(data.n_songs), k=K, present=present)
    gains, hits = {}, {}
    for side, pairs, take in (("in", data.pairs_in, take_in), ("out", data.pairs_out, take_out)):
        ranks = next_song_ranks(table, pairs[take])
        gains[side], hits[side] = _gains(ranks, K), _hits(ranks, K).astype(float)
        assert result.metrics[f"ndcg_{side}"] == pytest.approx(gains[side].mean(), rel=1e-12)
        assert result.metrics[f"hitrate_{side}"] == pytest.approx(hits[side].mean(), rel=1e-12)
        assert result.sampling[f"ndcg_{side}_se"] == pytest.approx(standard_error(gains[side], pairs.shape[0]))
        assert result.sampling[f"hitrate_{side}_se"] == pytest.approx(standard_error(hits[side], pairs.shape[0]))
        assert result.sampling[f"ndcg_{side}_se"] > 0
    assert result.sampling["ndcg_se"] == pytest.approx(
        math.hypot(result.sampling["ndcg_in_se"], result.sampling["ndcg_out_se"]) / 2)

    # A different seed draws other pairs (and other coherence samples: the seed of every sample).
    other = evaluate(emb, data, _with_cap(cap, seed=8), present=present)
    assert other.metrics["ndcg_in"] != result.metrics["ndcg_in"]


def test_a_sampled_side_without_pairs_leaves_the_headline_to_the_other_side() -> None:
    emb, present, data = make_case(2, n_pairs=600)
    data = EvaluationData(pairs_in=np.zeros((0, 2), dtype=np.int64), pairs_out=data.pairs_out,
                          hard_negative_pairs=data.hard_negative_pairs, artist_labels=data.artist_labels,
                          genre_labels=data.genre_labels, train_counts=data.train_counts)
    result = evaluate(emb, data, _with_cap(100), present=present)
    assert result.metrics["ndcg_in"] is None and result.sampling["ndcg_in_se"] is None
    assert result.sampling["pairs_out_sampled"] == 100
    assert result.sampling["ndcg_se"] == result.sampling["ndcg_out_se"] > 0
    assert result.metrics["ndcg"] == result.metrics["ndcg_out"]


# -- the standard error against the spread of real samples ---------------------------------------------


@pytest.fixture(scope="module")
def yes_big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """yes_big's validation pairs scored by a gensim-default Word2Vec, exactly: per-pair gains and hits."""
    from hpo.data.dataset import PreparedDataset
    from hpo.data.prepare import PrepareParams, prepare_dataset
    from hpo.data.readers import read_input
    from hpo.evaluation import evaluation_data
    from objectives.word2vec import train_word2vec

    out = tmp_path_factory.mktemp("yes_big") / "prepared"
    prepare_dataset(read_input(shared_dataset("yes", "yes_big")), out, PrepareParams(seed=0))
    dataset = PreparedDataset.load(out)
    trained = train_word2vec(dataset.training_sentences(), dataset.n_songs, {}, seed=0, workers=1)
    data = evaluation_data(dataset, "validation")
    queries = np.unique(np.r_[data.pairs_in[:, 0], data.pairs_out[:, 0]])
    table = knn_table(trained.matrix, queries, k=100, present=trained.present)
    case: dict[str, Any] = {"data": data, "matrix": trained.matrix, "present": trained.present, "prepared": out,
                            "track_ids": np.asarray(dataset.songs["track_id"])}
    for side, pairs in (("in", data.pairs_in), ("out", data.pairs_out)):
        ranks = next_song_ranks(table, pairs)
        case[f"gains_{side}"], case[f"hits_{side}"] = _gains(ranks, 100), _hits(ranks, 100).astype(float)
    return case


def test_the_standard_error_matches_the_spread_of_seeded_samples_on_yes_big(yes_big: dict[str, Any]) -> None:
    gains_in, gains_out = yes_big["gains_in"], yes_big["gains_out"]
    hits_in, hits_out = yes_big["hits_in"], yes_big["hits_out"]
    n_in, n_out = gains_in.size, gains_out.size
    assert (n_in, n_out) == (4153, 17196)  # the dataset as prepared: the cap below binds on both sides
    exact_ndcg = (gains_in.mean() + gains_out.mean()) / 2
    exact_hitrate = (hits_in.mean() + hits_out.mean()) / 2
    cap, repeats = 4_000, 400
    estimates, errors = [], []
    for seed in range(repeats):
        take_in, take_out = evaluation_sample(n_in, n_out, cap, seed)
        se_ndcg = math.hypot(standard_error(gains_in[take_in], n_in), standard_error(gains_out[take_out], n_out)) / 2
        se_hit = math.hypot(standard_error(hits_in[take_in], n_in), standard_error(hits_out[take_out], n_out)) / 2
        estimates.append(((gains_in[take_in].mean() + gains_out[take_out].mean()) / 2,
                          (hits_in[take_in].mean() + hits_out[take_out].mean()) / 2))
        errors.append((se_ndcg, se_hit))
    est, err = np.array(estimates), np.array(errors)
    spread = est.std(axis=0, ddof=1)
    # The SD of 400 estimates is itself known to about 1 / sqrt(2 * 399) = 3.5%: 15% is a 4-sigma band.
    assert err.mean(axis=0) == pytest.approx(spread, rel=0.15)
    # Unbiased: the estimates average to the exact metrics (within 4 standard errors of their mean).
    assert abs(est[:, 0].mean() - exact_ndcg) < 4 * spread[0] / math.sqrt(repeats)
    assert abs(est[:, 1].mean() - exact_hitrate) < 4 * spread[1] / math.sqrt(repeats)
    # The formula's SE from the population itself (sigma / sqrt(n) * sqrt((N - n) / (N - 1)) per side).
    def true_se(values: np.ndarray, n: int) -> float:
        return float(values.std() / math.sqrt(n) * math.sqrt((values.size - n) / (values.size - 1)))
    assert math.hypot(true_se(gains_in, 2_000), true_se(gains_out, 2_000)) / 2 == pytest.approx(spread[0], rel=0.15)
    # A bootstrap of one sample (with replacement, hence without the finite-population correction) agrees.
    take_in, take_out = evaluation_sample(n_in, n_out, cap, 0)
    rng = np.random.default_rng(0)
    boot = [(rng.choice(gains_in[take_in], take_in.size).mean() + rng.choice(gains_out[take_out], take_out.size).mean()) / 2
            for _ in range(400)]
    no_fpc = math.hypot(gains_in[take_in].std(ddof=1) / math.sqrt(take_in.size),
                        gains_out[take_out].std(ddof=1) / math.sqrt(take_out.size)) / 2
    assert np.std(boot, ddof=1) == pytest.approx(no_fpc, rel=0.15)
    assert errors[0][0] < no_fpc  # the finite-population correction only ever shrinks it


def test_the_bucket_standard_errors_match_the_spread_of_seeded_samples_on_yes_big(yes_big: dict[str, Any]) -> None:
    data = yes_big["data"]
    n_in, n_out = data.pairs_in.shape[0], data.pairs_out.shape[0]
    from metrics.popularity import bucket_edges

    edges = bucket_edges(data.train_counts, 10)
    buckets = {side: assign_buckets(data.train_counts[pairs[:, 1]], edges)
               for side, pairs in (("in", data.pairs_in), ("out", data.pairs_out))}
    values = {side: yes_big[f"gains_{side}"] for side in ("in", "out")}
    whole = np.r_[values["in"], values["out"]]
    whole_buckets = np.r_[buckets["in"], buckets["out"]]
    exact = np.bincount(whole_buckets, whole, 10) / np.bincount(whole_buckets, minlength=10)
    means, errors = [], []
    for seed in range(300):
        take = dict(zip(("in", "out"), evaluation_sample(n_in, n_out, 4_000, seed)))
        m, e = stratified_bucket_means(np.r_[values["in"][take["in"]], values["out"][take["out"]]],
                                       np.r_[buckets["in"][take["in"]], buckets["out"][take["out"]]], 10,
                                       np.repeat([0, 1], [take["in"].size, take["out"].size]), [n_in, n_out])
        means.append(m)
        errors.append(e)
    means_arr, errors_arr = np.array(means), np.array(errors)
    for b in (6, 8, 9):  # well-populated buckets with hits: the linearised SE holds
        assert errors_arr[:, b].mean() == pytest.approx(means_arr[:, b].std(ddof=1), rel=0.2), b
        assert abs(means_arr[:, b].mean() - exact[b]) < 0.1 * exact[b]  # a ratio: nearly unbiased


def test_evaluate_with_a_binding_cap_on_yes_big_reports_the_sample(yes_big: dict[str, Any]) -> None:
    data = yes_big["data"]
    result = evaluate(yes_big["matrix"], data, EvaluationSettings(max_pairs=4_000), present=yes_big["present"])
    take_in, take_out = evaluation_sample(data.pairs_in.shape[0], data.pairs_out.shape[0], 4_000, 0)
    assert result.metrics["ndcg_in"] == pytest.approx(yes_big["gains_in"][take_in].mean(), rel=1e-9)
    assert result.metrics["ndcg_out"] == pytest.approx(yes_big["gains_out"][take_out].mean(), rel=1e-9)
    assert result.sampling["ndcg_se"] == pytest.approx(math.hypot(
        standard_error(yes_big["gains_in"][take_in], data.pairs_in.shape[0]),
        standard_error(yes_big["gains_out"][take_out], data.pairs_out.shape[0])) / 2, rel=1e-9)
    # The SE is honest about the distance to the exact metric (a 4-sigma band).
    exact = (yes_big["gains_in"].mean() + yes_big["gains_out"].mean()) / 2
    assert abs(result.metrics["ndcg"] - exact) < 4 * result.sampling["ndcg_se"]
    assert 0.01 < result.sampling["ndcg_se"] / result.metrics["ndcg"] < 0.1
    # The default cap does not bind on yes_big: its evaluation is exact.
    assert data.pairs_in.shape[0] + data.pairs_out.shape[0] < DEFAULT_MAX_PAIRS


# -- the formula against brute force -----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(0.0, 1.0, allow_nan=False, width=32), min_size=2, max_size=8),
       data=st.data())
def test_the_standard_error_is_the_exact_sd_of_every_sample_mean(values: list[float], data: st.DataObject) -> None:
    population = np.array(values, dtype=np.float64)
    big_n = population.size
    n = data.draw(st.integers(1, big_n), label="n")
    samples = [population[list(c)] for c in itertools.combinations(range(big_n), n)]
    means = np.array([s.mean() for s in samples])
    true_var = means.var()  # over every equally likely sample: the exact variance of the estimator
    sigma2 = population.var()
    assert true_var == pytest.approx(sigma2 / n * (big_n - n) / (big_n - 1), rel=1e-9, abs=1e-12)
    estimates = np.array([standard_error(s, big_n) for s in samples])
    if n == big_n:
        assert estimates.tolist() == [0.0]  # the whole population: exact, not merely small
    elif n == 1:
        assert np.isnan(estimates).all()  # one value has no spread to estimate
    else:
        # The SE^2 is an unbiased estimate of the estimator's variance.
        assert (estimates**2).mean() == pytest.approx(true_var, rel=1e-9, abs=1e-12)
        # One bucket, one stratum: the bucket formula is the same estimator.
        for s, se in zip(samples[:5], estimates[:5]):
            m, e = stratified_bucket_means(s, np.zeros(n, dtype=np.int64), 1, np.zeros(n, dtype=np.int64), [big_n])
            assert m[0] == pytest.approx(s.mean(), rel=1e-12, abs=1e-15)
            assert e[0] == pytest.approx(se, rel=1e-9, abs=1e-12)


def test_the_stratified_bucket_estimate_is_the_weighted_ratio() -> None:
    values = np.array([1.0, 0.0, 0.5, 0.25, 1.0, 0.0])
    buckets = np.array([0, 1, 0, 1, 0, 0])
    strata = np.array([0, 0, 0, 1, 1, 1])
    means, ses = stratified_bucket_means(values, buckets, 3, strata, [6, 30])
    w0, w1 = 6 / 3, 30 / 3
    assert means[0] == pytest.approx((w0 * 1.5 + w1 * 1.0) / (2 * w0 + 2 * w1))
    assert means[1] == pytest.approx((w0 * 0.0 + w1 * 0.25) / (w0 + w1))
    assert math.isnan(means[2]) and math.isnan(ses[2]) and (ses[:2] > 0).all()
    exact_means, exact_ses = stratified_bucket_means(values, buckets, 3, strata, [3, 3])
    assert exact_ses[:2].tolist() == [0.0, 0.0]
    assert exact_means[0] == pytest.approx(2.5 / 4)


# -- validation: one-line errors naming the argument -----------------------------------------------------


@pytest.mark.parametrize("cap", [0, 1, -5, True, 2.5, "100"])
def test_a_bad_cap_is_refused_naming_it(cap: object) -> None:
    with pytest.raises(ValueError, match="max_pairs"):
        EvaluationSettings(max_pairs=cap)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pairs"):
        evaluation_sample(10, 10, cap, seed=0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"field 'evaluation\.max_pairs'") as info:
        parse_config({"name": "s", "dataset": "d", "evaluation": {"max_pairs": cap}}, "study.toml")
    assert "\n" not in str(info.value)


def test_the_metric_functions_validate_their_arguments() -> None:
    with pytest.raises(ValueError, match="population"):
        standard_error([0.1, 0.2, 0.3], 2)
    with pytest.raises(ValueError, match="values"):
        standard_error([[0.1]], 2)
    with pytest.raises(ValueError, match="populations"):
        stratified_bucket_means([0.1, 0.2], [0, 0], 1, [0, 0], [1])
    with pytest.raises(ValueError, match="bucket_ids"):
        stratified_bucket_means([0.1, 0.2], [0, 3], 2, [0, 0], [5])
    with pytest.raises(ValueError, match="strata"):
        stratified_bucket_means([0.1, 0.2], [0, 0], 1, [0, 1], [5])
    with pytest.raises(ValueError, match="size"):
        sample_indices(10, -1, 0)


def test_the_config_default_and_example() -> None:
    from hpo.config import EXAMPLE_CONFIG

    config = parse_config({"name": "s", "dataset": "d"}, "study.toml")
    assert config.evaluation.max_pairs == DEFAULT_MAX_PAIRS
    assert f"max_pairs = {DEFAULT_MAX_PAIRS}" in EXAMPLE_CONFIG


def test_the_cli_refuses_a_bad_cap_in_one_line(tmp_path: Path) -> None:
    result = run_cli("eval", "--prepared", str(tmp_path), "--embeddings", str(tmp_path / "v.npy"), "--max-pairs", "0")
    assert_one_line_error(result, "--max-pairs 0", ">= 2")
    config = tmp_path / "study.toml"
    config.write_text(f'name = "s"\ndataset = "{tmp_path}"\n[evaluation]\nmax_pairs = -3\n', encoding="utf-8")
    result = run_cli("study", "create", str(config))
    assert_one_line_error(result, "evaluation.max_pairs", "greater than or equal to 2")


# -- a study's trials carry their sample ---------------------------------------------------------------


def test_a_study_trial_stores_its_sample_sizes_and_standard_errors(prepared_synth: Path, tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from tests.conftest import run_tiny_study

    study, config = run_tiny_study(prepared_synth, f"sqlite:///{tmp_path / 's.db'}", trials=2,
                                   evaluation={"k": 20, "max_pairs": 200})
    assert config.evaluation.max_pairs == 200  # type: ignore[attr-defined]
    trials = study.get_trials(states=(TrialState.COMPLETE,))  # type: ignore[attr-defined]
    assert len(trials) >= 2
    for trial in trials:
        attrs = trial.user_attrs
        assert set(SAMPLING_KEYS) <= set(attrs)
        assert attrs["pairs_in_sampled"] + attrs["pairs_out_sampled"] == 200 < attrs["pairs_in"] + attrs["pairs_out"]
        assert attrs["ndcg_se"] > 0 and attrs["hitrate_se"] > 0
        assert sum(attrs["buckets"]["by_target"]["pairs_sampled"]) == 200
    # The same sample for every trial of the study (it depends on the study seed only).
    assert len({t.user_attrs["query_songs_sampled"] for t in trials}) == 1


def test_songhpo_eval_json_shows_the_sample_and_its_standard_errors(yes_big: dict[str, Any], tmp_path: Path) -> None:
    import json

    present = yes_big["present"]
    vectors = tmp_path / "v.npy"
    np.save(vectors, yes_big["matrix"][present])
    (tmp_path / "v.vocab.txt").write_text("".join(f"{t}\n" for t in yes_big["track_ids"][present]), encoding="utf-8")
    result = run_cli("-q", "eval", "--prepared", str(yes_big["prepared"]), "--embeddings", str(vectors),
                     "--max-pairs", "4000", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    expected = evaluate(yes_big["matrix"], yes_big["data"], EvaluationSettings(max_pairs=4_000), present=present)
    assert {key: out[key] for key in SAMPLING_KEYS} == pytest.approx(expected.sampling, rel=1e-12)
    assert {key: out[key] for key in METRIC_KEYS} == pytest.approx(expected.metrics, rel=1e-12)
    assert out["pairs_in_sampled"] + out["pairs_out_sampled"] == 4_000 and out["ndcg_se"] > 0
    assert out["settings"]["max_pairs"] == 4_000
    assert out["buckets"]["by_target"]["ndcg_se"] == pytest.approx(expected.buckets["by_target"]["ndcg_se"], rel=1e-12)
