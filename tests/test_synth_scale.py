"""The vectorised synthetic generator (``hpo.data.synth``): reproducible for a seed, the same output however
its blocks are grouped into writes, plays that follow the planted popularity distribution (chi-squared
against the intended one), the planted artist/genre/chart-hit structure, Parquet output that prepares like
CSV, and sizes that cannot fit refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from scipy import stats

import hpo.data.synth as synth
from hpo.data.prepare import PrepareParams, prepare_dataset
from hpo.data.readers import read_input
from hpo.data.synth import BLOCK_SEQUENCES, SynthParams, generate, write_synthetic
from tests.conftest import assert_one_line_error, run_cli

# Five blocks of sessions, 2000 tracks: big enough for the tests' statistics, generated in a fraction of a second.
PARAMS = SynthParams(sequences=20_000, tracks=2_000, genres=6, artists_per_genre=10, hits=25, seed=3)


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(PARAMS)


@pytest.fixture(scope="module")
def coded(tables: tuple[pd.DataFrame, pd.DataFrame]) -> dict[str, np.ndarray]:
    """The plays as integer arrays read back from the public tables: session, position, track, and the
    artist and genre number of every track (from the ``tracks`` names)."""
    plays, tracks = tables
    code = pd.Series(np.arange(len(tracks)), index=tracks["track_id"])
    artist = tracks["artist"].str.removeprefix("artist").astype(int).to_numpy()
    return {
        "session": plays["sequence_id"].str.removeprefix("s").astype(int).to_numpy(),
        "position": plays["position"].to_numpy(),
        "track": code[plays["track_id"]].to_numpy(),
        "artist": artist,
        "genre": artist // PARAMS.artists_per_genre,  # artists are numbered genre by genre
    }


def test_same_seed_same_tables_another_seed_other_tables(tables: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    plays, tracks = tables
    again_plays, again_tracks = generate(PARAMS)
    pd.testing.assert_frame_equal(plays, again_plays)
    pd.testing.assert_frame_equal(tracks, again_tracks)
    other_plays, _ = generate(SynthParams(**{**PARAMS.__dict__, "seed": 4}))
    assert not plays["track_id"].head(1000).equals(other_plays["track_id"].head(1000))
    assert plays["sequence_id"].nunique() == PARAMS.sequences and len(tracks) == PARAMS.tracks
    assert plays.groupby("sequence_id").size().min() >= 2
    assert abs(len(plays) / PARAMS.sequences - PARAMS.mean_length) < 0.3  # geometric lengths, mean 12
    starts = plays.groupby("sequence_id", sort=False)["timestamp"]
    assert starts.first().is_monotonic_increasing  # sessions in time order over a year
    assert (starts.diff().dropna() == 200).all()  # plays 200 s apart
    assert 0.02 < tracks["genre"].isna().mean() < 0.08  # about 5 % without a genre


def test_chunked_generation_equals_one_shot(tables: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = synth._catalogue(PARAMS)
    n_blocks = -(-PARAMS.sequences // BLOCK_SEQUENCES)
    assert n_blocks == 5
    whole = list(synth._blocks(PARAMS, catalogue))
    one_by_one = [block for b in range(n_blocks) for block in synth._blocks(PARAMS, catalogue, b, b + 1)]
    assert [b.first for b in whole] == [b.first for b in one_by_one] == [i * BLOCK_SEQUENCES for i in range(5)]
    for a, b in zip(whole, one_by_one):
        assert np.array_equal(a.tracks, b.tracks) and np.array_equal(a.lengths, b.lengths)
        assert np.array_equal(a.users, b.users) and np.array_equal(a.start, b.start)

    # Written a block per row group, and in one CSV: the same tables as the one-shot, in-memory generation.
    monkeypatch.setattr(synth, "_WRITE_PLAYS", 1)
    counts = write_synthetic(tmp_path / "pq", PARAMS, fmt="parquet")
    assert pq.ParquetFile(tmp_path / "pq" / "plays.parquet").num_row_groups == n_blocks
    plays, tracks = tables
    assert counts == {"sequences": PARAMS.sequences, "plays": len(plays), "tracks": PARAMS.tracks, "artists": 60,
                      "genres": 6}
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pq" / "plays.parquet"), plays)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pq" / "tracks.parquet"), tracks)
    write_synthetic(tmp_path / "csv", PARAMS)
    from_csv = pd.read_csv(tmp_path / "csv" / "plays.csv", dtype={"position": np.int64, "timestamp": np.int64})
    assert from_csv.astype(str).equals(plays.astype(str))
    assert (tmp_path / "csv" / "tracks.csv").read_text().splitlines()[1] == "t000000,artist0000,genre00,Song 0"


def _chi2_pvalue(drawn: np.ndarray, expected_p: np.ndarray, min_expected: float = 10.0) -> float:
    """Chi-squared goodness of fit of ``drawn`` (track numbers) to ``expected_p``; tracks in order of expected
    count are pooled into bins expecting at least ``min_expected`` draws."""
    n = len(drawn)
    order = np.argsort(-expected_p, kind="stable")
    expected, observed = expected_p[order] * n, np.bincount(drawn, minlength=len(expected_p))[order]
    bins, run = np.empty(len(order), dtype=np.int64), 0.0
    current = 0
    for i, e in enumerate(expected):
        bins[i] = current
        run += e
        if run >= min_expected:
            current, run = current + 1, 0.0
    if run > 0 and current > 0:
        bins[bins == current] = current - 1  # a short last bin joins the one before
    result = stats.chisquare(np.bincount(bins, observed), np.bincount(bins, expected))
    return float(result.pvalue)


def test_plays_follow_the_planted_popularity(coded: dict[str, np.ndarray], tables: tuple) -> None:
    catalogue = synth._catalogue(PARAMS)
    tracks = tables[1]
    # The catalogue is the one the tables name, with the popularity the generator promises: within each genre
    # the tracks' weights are 1/rank^zipf for ranks 1..n, genres weigh 1/g^0.7, hits are the top of the chart.
    assert np.array_equal(catalogue.track_artist, coded["artist"])
    genre = coded["genre"]
    for g in range(PARAMS.genres):
        weights = np.sort(catalogue.popularity[genre == g])[::-1]
        assert np.allclose(weights, 1.0 / np.arange(1, len(weights) + 1) ** PARAMS.zipf)
    genre_weight = 1.0 / np.arange(1, PARAMS.genres + 1) ** 0.7
    p = catalogue.global_pop  # P(track) = P(genre) x its share of the genre's weight
    assert np.allclose(np.bincount(genre, p), genre_weight / genre_weight.sum())
    assert np.allclose(p, catalogue.popularity / np.bincount(genre, catalogue.popularity)[genre]
                       * (genre_weight / genre_weight.sum())[genre])
    hits = np.argsort(-p, kind="stable")[: PARAMS.hits]
    assert set(catalogue.hits) == set(hits) and len(tracks) == len(p)

    # The first play of a session is a track of its genre by popularity: marginally, P.
    track, position = coded["track"], coded["position"]
    first = track[position == 0]
    assert _chi2_pvalue(first, p) > 1e-3
    # The second play mixes the four transitions: same artist (uniform over its tracks), the session's genre
    # (marginally P), a chart hit by popularity, anything by popularity.
    artist = coded["artist"]
    same_artist = (np.bincount(artist, p) / np.bincount(artist))[artist]
    hit_p = np.zeros_like(p)
    hit_p[hits] = p[hits] / p[hits].sum()
    second_p = (PARAMS.p_artist * same_artist + PARAMS.p_hit * hit_p
                + (1.0 - PARAMS.p_artist - PARAMS.p_hit) * p)
    second = track[position == 1]
    assert _chi2_pvalue(second, second_p) > 1e-3
    # The test has the power to tell them apart, and to reject popularity without the Zipf law.
    assert _chi2_pvalue(second, p) < 1e-6 and _chi2_pvalue(first, second_p) < 1e-6
    flat = np.bincount(genre, p)[genre] / np.bincount(genre)[genre]
    assert _chi2_pvalue(first, flat) < 1e-6


def test_artist_genre_and_chart_structure(coded: dict[str, np.ndarray]) -> None:
    session, track, artist, genre = coded["session"], coded["track"], coded["artist"], coded["genre"]
    n = PARAMS.tracks
    same_artist = artist[:, None] == artist[None, :]
    same_genre = genre[:, None] == genre[None, :]
    groups = {"same artist": same_artist, "same genre, other artist": same_genre & ~same_artist,
              "other genre": ~same_genre}

    def lifts(observed: np.ndarray, expected: np.ndarray) -> dict[str, float]:
        np.fill_diagonal(observed, 0)
        np.fill_diagonal(expected, 0)
        return {name: observed[m].sum() / expected[m].sum() for name, m in groups.items()}

    # Co-occurrence in a session over what independent sessions of the same songs would give.
    incidence = sp.csr_matrix((np.ones(len(track)), (session, track)), shape=(PARAMS.sequences, n))
    incidence.data[:] = 1.0
    in_session = (incidence.T @ incidence).toarray()
    df = np.asarray(incidence.sum(axis=0)).ravel()
    session_lift = lifts(in_session, np.outer(df, df) / PARAMS.sequences)
    assert session_lift["same artist"] > 1.1 * session_lift["same genre, other artist"]
    assert session_lift["same genre, other artist"] > 4 * session_lift["other genre"]
    # Adjacent plays: the artist continuity stands out.
    adjacent = session[1:] == session[:-1]
    left, right = track[:-1][adjacent], track[1:][adjacent]
    bigrams = np.zeros((n, n))
    np.add.at(bigrams, (left, right), 1.0)
    share = np.bincount(track, minlength=n) / len(track)
    bigram_lift = lifts(bigrams + bigrams.T, 2.0 * adjacent.sum() * np.outer(share, share))
    assert bigram_lift["same artist"] > 3 * bigram_lift["same genre, other artist"]
    assert bigram_lift["same genre, other artist"] > 3 * bigram_lift["other genre"]
    assert 0.3 < (artist[left] == artist[right]).mean() < 0.6  # p_artist 0.35, plus same-artist draws by chance

    # Chart hits cross genres: each of the top five is played in sessions of every genre (the genre of a
    # session's first play), so they co-occur with everything by chance.
    session_genre = genre[track[coded["position"] == 0]][session]
    top = synth._catalogue(PARAMS).hits[:5]
    for hit in top:
        assert len(np.unique(session_genre[track == hit])) == PARAMS.genres


def test_parquet_output_prepares_like_csv(tmp_path: Path) -> None:
    for fmt in ("csv", "parquet"):
        result = run_cli("-q", "data", "synth", "--out", str(tmp_path / fmt), "--sequences", "1500", "--tracks", "600",
                         "--mean-length", "20", "--format", fmt, "--seed", "2")
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == [f"plays.{fmt}", f"tracks.{fmt}"]
        counts = json.loads(result.stdout)
        assert counts["sequences"] == 1500 and 25_000 < counts["plays"] < 35_000  # ~20 plays a session
    manifests = [prepare_dataset(read_input(tmp_path / fmt), tmp_path / f"prep-{fmt}", PrepareParams(seed=1))
                 for fmt in ("csv", "parquet")]
    assert manifests[0]["fingerprint"] == manifests[1]["fingerprint"]
    assert manifests[0]["hard_negatives"]["n_pairs"] > 0


@pytest.mark.parametrize(("args", "fragments"), [
    (["--tracks", str(10**12)], ["--tracks 1000000000000", "GiB of memory", "choose a smaller size"]),
    (["--sequences", str(10**13)], ["--sequences 10000000000000", "GiB free", "parquet is about 6 times smaller"]),
    (["--mean-length", "1.5"], ["--mean-length 1.5", "between 2 and 1000"]),
    (["--mean-length", "nan"], ["--mean-length nan"]),
])
def test_impossible_sizes_are_one_line_errors(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    result = run_cli("-q", "data", "synth", "--out", str(tmp_path / "out"), *args)
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
