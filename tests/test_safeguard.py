"""The HardNeg safeguard: per-song counts, the paired test against the baseline (against scipy and at its
boundary), its decision on real data, and the loud warning when most trials are infeasible."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import FloatDistribution
from scipy import stats

from metrics.false_neighbours import hardneg_at_k, hardneg_counts, hardneg_excess_bound
from metrics.knn import knn_table
from tests.conftest import SharedStudy, run_cli, run_tiny_study, shared_dataset

# -- per-song counts ----------------------------------------------------------------------------------


def test_a_large_baselines_per_song_counts_round_trip_through_each_server(server_url: str) -> None:
    """MPD-sized support (100k songs over 2M ids, ~175 KB encoded) in one attribute would overflow MySQL's
    TEXT column (64 KB); split into parts it round-trips exactly on every server."""
    from objectives.trial import PER_SONG_ATTR, per_song_attrs, per_song_counts

    rng = np.random.default_rng(11)
    songs = np.sort(rng.choice(2_000_000, size=100_000, replace=False))
    counts = rng.integers(0, 100, size=songs.size)
    attrs = per_song_attrs(songs, counts)
    assert attrs[PER_SONG_ATTR]["parts"]["songs"] >= 3
    assert all(len(v) <= 60_000 for k, v in attrs.items() if k != PER_SONG_ATTR)
    study = optuna.create_study(storage=server_url)
    trial = study.ask()
    for name, value in attrs.items():
        trial.set_user_attr(name, value)
    read = optuna.load_study(study_name=study.study_name, storage=server_url).trials[0].user_attrs
    got = per_song_counts(read)
    assert got is not None
    np.testing.assert_array_equal(got[0], songs)
    np.testing.assert_array_equal(got[1], counts)


def test_hardneg_counts_match_a_brute_force_count() -> None:
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(60, 8)).astype(np.float32)
    pairs = rng.integers(0, 60, size=(150, 2))
    table = knn_table(embeddings, np.arange(60), k=10)
    songs, counts = hardneg_counts(table, pairs, 7)
    negatives: dict[int, set[int]] = {}
    for a, b in pairs.tolist():
        if a != b:
            negatives.setdefault(a, set()).add(b)
            negatives.setdefault(b, set()).add(a)
    normed = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = normed @ normed.T
    np.fill_diagonal(similarity, -np.inf)
    assert songs.tolist() == sorted(negatives)
    for song, count in zip(songs.tolist(), counts.tolist()):
        top = np.argsort(-similarity[song], kind="stable")[:7]
        assert count == len(set(top.tolist()) & negatives[song])
    value, support = hardneg_at_k(table, pairs, 7)
    assert value == pytest.approx(counts.mean() / 7) and support == songs.size


# -- the paired test -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=2, max_size=40),
    tolerance=st.sampled_from([0.0, 0.1, 0.5]),
    confidence=st.sampled_from([0.9, 0.95, 0.99]),
)
def test_the_excess_bound_is_scipys_one_sided_t_bound(counts: list[tuple[int, int]], tolerance: float,
                                                       confidence: float) -> None:
    trial = np.array([c for c, _ in counts])
    baseline = np.array([b for _, b in counts])
    songs = np.arange(len(counts)) * 3
    excess, bound, shared = hardneg_excess_bound(songs, trial, songs, baseline, 20, tolerance=tolerance,
                                                 confidence=confidence)
    d = (trial - (1 + tolerance) * baseline) / 20
    assert shared == len(counts) and excess == pytest.approx(d.mean())
    if np.ptp(d) == 0:
        assert bound == excess  # no spread: nothing to test, the point estimate decides
    else:
        expected = d.mean() - stats.t.ppf(confidence, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
        assert bound == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert bound < excess


def test_the_test_pairs_songs_by_id_and_ignores_songs_only_one_side_supports() -> None:
    excess, bound, shared = hardneg_excess_bound([5, 1, 9], [4, 0, 2], [1, 5, 7], [0, 2, 3], 10, tolerance=0.0)
    # Shared songs 1 and 5: d = (0 - 0) / 10 and (4 - 2) / 10.
    assert shared == 2 and excess == pytest.approx(0.1)
    assert math.isnan(hardneg_excess_bound([1], [1], [2], [1], 10, tolerance=0.0)[0])


@pytest.mark.parametrize(("trial", "baseline", "tolerance", "feasible"), [
    ([3, 3, 3], [2, 2, 2], 0.5, True),    # exactly the allowed 1.5 x 2 on every song: bound 0, feasible
    ([4, 4, 4], [2, 2, 2], 0.5, False),   # one over on every song, no spread: a real excess
    ([5, 3, 3], [2, 2, 2], 0.5, True),    # two over on one song only: the spread explains it
    ([2, 2], [2, 2], 0.0, True),          # unchanged, no tolerance: bound 0, feasible
])
def test_the_bound_at_its_boundary(trial: list[int], baseline: list[int], tolerance: float, feasible: bool) -> None:
    songs = np.arange(len(trial))
    excess, bound, _ = hardneg_excess_bound(songs, trial, songs, baseline, 10, tolerance=tolerance)
    assert (bound <= 0.0) is feasible
    if excess == 0.0:
        assert bound == 0.0  # the boundary itself, exactly


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tolerance": -0.1}, "tolerance must be a number >= 0"),
    ({"tolerance": 0.1, "confidence": 1.0}, "confidence must be in"),
])
def test_bad_arguments_name_themselves(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hardneg_excess_bound([1, 2], [1, 1], [1, 2], [1, 1], 10, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not repeat a song"):
        hardneg_excess_bound([1, 1], [1, 1], [1, 2], [1, 1], 10, tolerance=0.1)
    with pytest.raises(ValueError, match="equal length"):
        hardneg_excess_bound([1, 2], [1], [1, 2], [1, 1], 10, tolerance=0.1)


def test_on_real_data_noise_is_not_a_violation_and_a_real_increase_is(tmp_path: Path) -> None:
    """yes_big: 60 songs support HardNeg. The literature setting's HardNeg is 20-25% above the defaults',
    beyond the 10% tolerance, but within what those 60 songs' spread explains; an embedding trained on
    shuffled co-occurrence is far above it."""
    from hpo.config import parse_config
    from hpo.data.dataset import PreparedDataset
    from hpo.data.prepare import prepare_dataset
    from hpo.data.readers import read_input
    from hpo.search import LITERATURE_SETTINGS
    from hpo.trials import trial_data
    from objectives.trial import run_configuration

    prepared = tmp_path / "yes_big"
    prepare_dataset(read_input(shared_dataset("yes", "yes_big")), prepared)
    config = parse_config({"name": "x", "dataset": str(prepared)}, "t")
    data = trial_data(config, PreparedDataset.load(prepared))
    baseline = run_configuration(data, {}, seed=0)
    literature = run_configuration(data, LITERATURE_SETTINGS["caselles-dupre-2018"], seed=0)
    assert baseline.metrics["hardneg_support"] == 60
    ratio = literature.metrics["hardneg"] / baseline.metrics["hardneg"]
    assert ratio > 1.1  # the point rule calls it infeasible
    excess, bound, shared = hardneg_excess_bound(*literature.hardneg_per_song, *baseline.hardneg_per_song, 100,
                                                 tolerance=0.1)
    assert shared == 60 and excess > 0 and bound <= 0  # the paired test does not
    # An embedding whose neighbours are the hard negatives themselves: a real violation.
    songs, _ = baseline.hardneg_per_song
    worst = np.full_like(songs, 50)
    _, bound, _ = hardneg_excess_bound(songs, worst, *baseline.hardneg_per_song, 100, tolerance=0.1)
    assert bound > 0


# -- most trials infeasible: said loudly -----------------------------------------------------------


def _with_trials(study: optuna.Study, feasible: int, infeasible: int) -> optuna.Study:
    copy = optuna.create_study(directions=study.directions)
    base = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[0]
    for index in range(feasible + infeasible):
        ok = index < feasible
        copy.add_trial(optuna.trial.create_trial(
            values=base.values, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"feasible": ok}, constraints={"hardneg": -1.0 if ok else 1.0}))
    return copy


@pytest.mark.parametrize(("feasible", "infeasible", "warned"), [(3, 3, False), (3, 4, True), (0, 1, True), (1, 0, False)])
def test_the_infeasibility_warning_at_its_boundary(tiny_study: SharedStudy, feasible: int, infeasible: int,
                                                   warned: bool) -> None:
    from hpo.trials import infeasibility_warning

    warning = infeasibility_warning(_with_trials(tiny_study.study, feasible, infeasible))
    assert (warning is not None) is warned
    if warned:
        assert f"{infeasible} of {feasible + infeasible} completed trials are infeasible" in warning
        assert "constraint.tolerance" in warning and "--hardneg-scope sequence" in warning


def test_status_note_and_report_say_it_when_most_trials_are_infeasible(prepared_synth: Path, tmp_path: Path) -> None:
    from dashboards.launch import study_note
    from dashboards.report import build_report

    storage = f"sqlite:///{tmp_path / 'i.db'}"
    # Tolerance 0 with the point rule: every trial above the baseline's HardNeg is infeasible.
    study, _ = run_tiny_study(prepared_synth, storage, trials=6, constraint={"tolerance": 0.0, "rule": "point"})
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))  # type: ignore[attr-defined]
    infeasible = sum(not t.user_attrs["feasible"] for t in complete)
    for _ in range(len(complete) - 2 * infeasible + 1):  # tip it over half with infeasible copies
        worst = max(complete, key=lambda t: t.user_attrs["hardneg"])
        study.add_trial(optuna.trial.create_trial(  # type: ignore[attr-defined]
            values=worst.values, params=worst.params, distributions=worst.distributions,
            user_attrs={**worst.user_attrs, "feasible": False}, constraints={"hardneg": 1.0}))
    status = run_cli("study", "status", "tiny", "--storage", storage)
    assert status.returncode == 0, status.stderr
    assert "completed trials are infeasible" in status.stdout
    assert "one-sided paired" not in status.stdout and "HardNeg@20 <= (1 + 0) x baseline HardNeg" in status.stdout
    assert "completed trials are infeasible" in study_note(study)  # type: ignore[arg-type]
    report = build_report(study)  # type: ignore[arg-type]
    assert any("completed trials are infeasible" in note for note in report.notes)
