"""Readers: generic tables in every container format, and the real datasets in ../shared/data."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpo.data.readers import _positions, primary_genres_from_tags, read_generic, read_input, read_plays, read_yes
from storage.errors import InputError
from tests.conftest import shared_dataset

PLAYS = pd.DataFrame(
    {
        "sequence_id": ["b", "b", "a", "a", "a"],
        "position": [1, 0, 2, 0, 1],
        "track_id": ["t2", "t1", "t3", "t1", "t2"],
        "user_id": ["u1", "u1", "u2", "u2", "u2"],
    }
)
TRACKS = pd.DataFrame(
    {"track_id": ["t1", "t2", "t3"], "artist": ["A", "A", "B"], "genre": ["rock", None, "jazz"], "title": ["x", "y", "z"]}
)


def _write(frame: pd.DataFrame, path: Path) -> None:
    name = path.name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    elif ".tsv" in name:
        frame.to_csv(path, sep="\t", index=False, compression="infer")
    else:
        frame.to_csv(path, index=False, compression="infer")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".csv.gz", ".tsv.gz"])
def test_generic_formats_read_identically(tmp_path: Path, suffix: str) -> None:
    _write(PLAYS, tmp_path / f"plays{suffix}")
    _write(TRACKS, tmp_path / f"tracks{suffix}")
    raw = read_input(tmp_path)
    assert raw.format == "generic"
    # Sorted by sequence then position, positions as integers.
    assert raw.plays["sequence_id"].tolist() == ["a", "a", "a", "b", "b"]
    assert raw.plays["track_id"].tolist() == ["t1", "t2", "t3", "t1", "t2"]
    assert raw.plays["position"].tolist() == [0, 1, 2, 0, 1]
    assert raw.plays["user_id"].tolist() == ["u2", "u2", "u2", "u1", "u1"]
    genre = dict(zip(raw.tracks["track_id"], raw.tracks["genre"]))
    assert genre["t1"] == "rock" and pd.isna(genre["t2"])


def test_identical_duplicate_track_rows_are_merged(tmp_path: Path) -> None:
    _write(PLAYS, tmp_path / "plays.csv")
    _write(pd.concat([TRACKS, TRACKS.iloc[[0]]]), tmp_path / "tracks.csv")
    raw = read_generic(tmp_path / "plays.csv", tmp_path / "tracks.csv")
    assert len(raw.tracks) == 3 and raw.dropped["duplicate_track_rows"] == 1


def test_primary_genre_rule_prefers_the_rarer_family() -> None:
    tags = [["rock", "favorites"], ["rock", "classic country"], ["pop", "hip hop"], ["80s"], ["rock"], ["pop"]]
    # rock is on 3 songs, pop on 2, country and hip-hop on 1: the rarer family wins.
    assert primary_genres_from_tags(tags) == ["rock", "country", "hip-hop", None, "rock", "pop"]


def _yes_lines(directory: Path) -> list[list[int]]:
    lines = (directory / "train.txt").read_text().splitlines()[2:]
    return [[int(x) for x in line.split()] for line in lines if line.split()]


@pytest.mark.parametrize("name", ["yes_small", "yes_big"])
def test_yes_reader_matches_the_published_counts(name: str) -> None:
    directory = shared_dataset("yes", name)
    raw = read_yes(directory)
    playlists = _yes_lines(directory)
    multi = [p for p in playlists if len(p) >= 2]
    assert raw.plays["sequence_id"].nunique() == len(multi)
    assert raw.dropped["short_sequences"] == len(playlists) - len(multi)
    # Transitions as published by the authors (README): single-song lines have none.
    transitions = {"yes_small": 134_431, "yes_big": 172_510}[name]
    assert len(raw.plays) - len(multi) == transitions == sum(len(p) - 1 for p in playlists)
    songs = (directory / "song_hash.txt").read_text().splitlines()
    assert len(raw.tracks) == len(songs)
    assert raw.tracks["artist"].notna().all()
    first = songs[0].split("\t")
    assert raw.tracks.loc[0, "artist"] == first[2] and "\\/" not in raw.tracks.loc[0, "title"]
    # Order inside a playlist is kept.
    seq = raw.plays[raw.plays["sequence_id"] == raw.plays["sequence_id"].iloc[0]]
    assert seq["track_id"].astype(int).tolist() in multi
    # Genres: derived for most tagged songs, never for untagged ones (~20% untagged).
    tags = (directory / "tags.txt").read_text().splitlines()
    untagged = [i for i, line in enumerate(tags) if line.strip() == "#"]
    assert raw.tracks.loc[untagged, "genre"].isna().all()
    assert raw.tracks["genre"].notna().mean() > 0.6
    assert set(raw.concepts["track_id"]) <= set(raw.tracks["track_id"])


def test_aotm2011_has_no_artists_and_keeps_categories() -> None:
    directory = shared_dataset("aotm2011")
    raw = read_input(directory)
    with gzip.open(directory / "plays.csv.gz", "rt") as handle:
        n_rows = sum(1 for _ in handle) - 1
    assert len(raw.plays) == n_rows == 267_476
    assert raw.plays["sequence_id"].nunique() == 84_675
    assert raw.tracks["artist"].isna().all()
    assert raw.concepts is not None and raw.concepts["concept"].nunique() == 24


def test_positions_are_exact_integers_up_to_2_pow_53(tmp_path: Path) -> None:
    """Positions go through float parsing: below 2^53 every integer is exact, at 2^53 it stops being so."""
    limit = 2**53
    plays = tmp_path / "plays.csv"
    plays.write_text(f"sequence_id,position,track_id\ns,{limit - 1},a\ns,{-(limit - 1)},b\ns,1e3,c\n")
    frame, _ = read_plays(plays)
    assert frame["position"].tolist() == [-(limit - 1), 1000, limit - 1] and frame["track_id"].tolist() == ["b", "c", "a"]
    for bad in (str(limit), str(-limit), "inf", "1e400", "nan", "2.5"):
        plays.write_text(f"sequence_id,position,track_id\ns,0,a\ns,{bad},b\n")
        with pytest.raises(InputError, match=rf"line 3: position '{bad}' is not an integer below 2\^53"):
            read_plays(plays)


def test_a_parquet_page_with_invalid_utf8_is_one_input_error(tmp_path: Path) -> None:
    """A damaged page can decode into non-UTF-8 strings that pyarrow accepts at read time and only trips over
    while sorting ("Wrapping ... failed"): the reader validates every value and names the file."""
    buffer = io.BytesIO()
    PLAYS.assign(sequence_id=["bAAAA", "bAAAA", "aAAAA", "aAAAA", "aAAAA"]).to_parquet(buffer, index=False,
                                                                                        compression=None)
    data = bytearray(buffer.getvalue())
    data[data.find(b"bAAAA") + 1] = 0xFF
    (tmp_path / "plays.parquet").write_bytes(bytes(data))
    _write(TRACKS, tmp_path / "tracks.csv")
    with pytest.raises(InputError, match=r"plays\.parquet: cannot read the table \(.*Invalid UTF8"):
        read_input(tmp_path)


_POSITION_TEXT = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["1.0", "1.5", " 7 ", "+3", "007", "1e3", "0x10", "nan", "inf", "-0", "", "12a", "\t4\n"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_POSITION_TEXT, min_size=1, max_size=8))
def test_positions_parse_exactly_as_pandas_to_numeric(texts: list[str]) -> None:
    # The Arrow fast path for clean integer columns must give what the pandas path gives, value for value.
    column = pd.Series(texts, dtype="string")
    fast = _positions(column).to_numpy(dtype=float, na_value=np.nan)
    reference = pd.to_numeric(column.str.strip(), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    np.testing.assert_array_equal(fast, reference)


def test_parquet_columns_read_as_pandas_own_text_whatever_their_type(tmp_path: Path) -> None:
    # Strings and integers are converted in Arrow (memory at MPD size); every other type keeps pandas' text.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hpo.data.readers import read_table

    table = pa.table({"sequence_id": ["a", None], "position": [1, 2], "track_id": pa.array([10, 11]),
                      "weight": [1.0, 2.5], "liked": [True, None],
                      "when": pa.array([0, 10**9], type=pa.timestamp("s"))})
    pq.write_table(table, tmp_path / "plays.parquet")
    expected = table.to_pandas().astype("string")
    expected["_row"] = np.array([1, 2], dtype=np.int64)
    pd.testing.assert_frame_equal(read_table(tmp_path / "plays.parquet", ("sequence_id",)), expected)
