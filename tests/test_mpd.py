"""Reader of the Spotify Million Playlist Dataset (``mpd.slice.*.json``): small slices written here in the
published format, checked against an independent parse, prepared through the API and the real CLI;
malformed slices are one-line errors naming the file and the playlist."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpo.data.dataset import PreparedDataset
from hpo.data.prepare import prepare_dataset
from hpo.data.readers import detect_format, read_input, read_mpd
from storage.errors import InputError
from tests.conftest import assert_one_line_error, run_cli

NAMES = ["Chill", "chill ", "Road  Trip", "workout", "", None]


def _track(song: int, pos: int | None) -> dict:
    track = {"track_uri": f"spotify:track:{song:05d}", "track_name": f"Song {song}",
             "artist_name": f"Artist {song % 13}", "artist_uri": f"spotify:artist:{song % 13}",
             "album_uri": "spotify:album:x", "album_name": "x", "duration_ms": 1000}
    if pos is not None:
        track["pos"] = pos
    return track


def _write_slices(directory: Path, n_slices: int, per_slice: int, seed: int = 0,
                  n_songs: int = 120) -> dict[str, dict]:
    """Write MPD slices; return the truth ``{pid: {"songs": [...] in play order, "name": ...}}``."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict] = {}
    for s in range(n_slices):
        first = s * per_slice
        playlists = []
        for pid in range(first, first + per_slice):
            songs = rng.sample(range(n_songs), rng.choice([0, 1, 2, 3, 5, 8, 13, 20]))
            style = pid % 3  # 0: pos in order, 1: pos shuffled in the list, 2: no pos (list order)
            tracks = [_track(song, None if style == 2 else i) for i, song in enumerate(songs)]
            if style == 1:
                rng.shuffle(tracks)
            playlist = {"pid": pid, "num_tracks": len(tracks), "tracks": tracks, "collaborative": "false"}
            name = NAMES[pid % len(NAMES)]
            if name is not None:
                playlist["name"] = name
            playlists.append(playlist)
            truth[str(pid)] = {"songs": [f"spotify:track:{x:05d}" for x in songs], "name": name}
        slice_file = directory / f"mpd.slice.{first}-{first + per_slice - 1}.json"
        slice_file.write_text(json.dumps({"info": {"slice": f"{first}-{first + per_slice - 1}"},
                                          "playlists": playlists}), encoding="utf-8")
    return truth


@pytest.fixture
def slices(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    return tmp_path / "mpd", _write_slices(tmp_path / "mpd", n_slices=3, per_slice=14)


def test_reader_matches_an_independent_parse(slices: tuple[Path, dict[str, dict]]) -> None:
    directory, truth = slices
    assert detect_format(directory) == "mpd"
    raw = read_input(directory)
    assert raw.format == "mpd" and len(raw.input_files) == 3
    kept = {pid: t for pid, t in truth.items() if len(t["songs"]) >= 2}
    short = [t for t in truth.values() if len(t["songs"]) < 2]
    assert 0 < len(short) < len(truth)
    assert raw.dropped == {"short_sequences": len(short), "short_sequence_plays": sum(len(t["songs"]) for t in short)}
    got = {pid: group.sort_values("position")["track_id"].astype(str).tolist()
           for pid, group in raw.plays.groupby(raw.plays["sequence_id"].astype(str), observed=True)}
    assert got == {pid: t["songs"] for pid, t in kept.items()}
    # Positions are 0..n-1 within each playlist.
    assert (raw.plays.groupby("sequence_id", observed=True)["position"].apply(lambda p: sorted(p) == list(range(len(p))))).all()
    # Tracks: artist and title from the JSON, no genre; exactly the played tracks.
    played = {uri for t in kept.values() for uri in t["songs"]}
    tracks = raw.tracks.set_index("track_id")
    assert set(tracks.index) == played
    for uri in played:
        song = int(uri.rsplit(":", 1)[1])
        assert tracks.loc[uri, "artist"] == f"Artist {song % 13}" and tracks.loc[uri, "title"] == f"Song {song}"
    assert tracks["genre"].isna().all()
    # Playlist names: raw in sequence_names, normalised as concept labels of their tracks.
    names = raw.sequence_names.set_index("sequence_id")["name"]
    assert set(names.index) == set(kept)
    for pid, t in kept.items():
        assert (pd.isna(names[pid]) and t["name"] is None) or names[pid] == t["name"]
    expected_concepts = {(uri, " ".join(t["name"].lower().split())) for t in kept.values() if t["name"]
                         for uri in t["songs"]}
    assert set(map(tuple, raw.concepts[["track_id", "concept"]].astype(str).to_numpy())) == expected_concepts
    assert {"chill", "road trip", "workout"} == set(raw.concepts["concept"])
    # A glob string and a single slice file give the same data (restricted to those slices).
    by_glob = read_input(str(directory / "mpd.slice.*.json"))
    pd.testing.assert_frame_equal(by_glob.plays, raw.plays)
    one = read_input(directory / "mpd.slice.14-27.json")
    assert set(one.plays["sequence_id"].astype(str)) == {p for p in kept if 14 <= int(p) <= 27}


def test_prepare_api_and_cli(slices: tuple[Path, dict[str, dict]], tmp_path: Path) -> None:
    directory, truth = slices
    raw = read_mpd(directory)
    manifest = prepare_dataset(raw, tmp_path / "api")
    # The compact categorical columns prepare exactly like plain strings.
    as_strings = read_mpd(directory)
    as_strings.plays = as_strings.plays.astype({"sequence_id": "string", "track_id": "string"})
    assert prepare_dataset(as_strings, tmp_path / "strings")["fingerprint"] == manifest["fingerprint"]

    result = run_cli("-q", "data", "prepare", str(directory), "--out", str(tmp_path / "cli"))
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    dataset = PreparedDataset.load(tmp_path / "cli")
    assert dataset.fingerprint == manifest["fingerprint"]
    assert dataset.manifest["source"]["format"] == "mpd"
    kept = {pid: t for pid, t in truth.items() if len(t["songs"]) >= 2}
    assert dataset.manifest["counts"]["sequences"] == len(kept)
    assert dataset.manifest["counts"]["artists"] == 13 and dataset.manifest["counts"]["genres"] == 0
    assert dataset.manifest["counts"]["songs_with_genre"] == 0
    assert (dataset.artist_codes >= 0).all() and (dataset.genre_codes == -1).all()
    assert counts  # the CLI prints the counts
    sequences = pd.read_parquet(tmp_path / "cli" / "sequences.parquet")
    for pid, name, n_plays in sequences[["sequence_id", "name", "n_plays"]].itertuples(index=False):
        assert (pd.isna(name) and kept[pid]["name"] is None) or name == kept[pid]["name"]
        assert n_plays == len(kept[pid]["songs"])
    # Training sequences are the playlists in pos order (the in-set last song masked when length >= 3).
    track_of = dataset.songs["track_id"].tolist()
    train = sequences[sequences["split"] == "train"]["sequence_id"].tolist()
    for i, pid in enumerate(train[:10]):
        songs = [track_of[s] for s in dataset.train_tokens[dataset.train_offsets[i]:dataset.train_offsets[i + 1]]]
        full = kept[pid]["songs"]
        assert songs == (full[:-1] if len(full) >= 3 else full)
    concepts = pd.read_parquet(tmp_path / "cli" / "concepts.parquet")
    assert set(concepts["concept"]) <= {"chill", "road trip", "workout"} and len(concepts) > 0
    # A glob given on the command line.
    by_glob = run_cli("-q", "data", "prepare", str(directory / "mpd.slice.*.json"), "--out", str(tmp_path / "glob"))
    assert by_glob.returncode == 0, by_glob.stderr
    assert PreparedDataset.load(tmp_path / "glob").fingerprint == manifest["fingerprint"]


def _playlists(path: Path) -> dict:
    return json.loads(path.read_text())


MALFORMED = {
    # name: (edit of slice 14-27's JSON, texts the message must hold)
    "invalid json": (lambda text: text[:-5], ["invalid JSON"]),
    "no playlists": (lambda text: json.dumps({"info": {}}), ["no 'playlists' list"]),
    "no pid": (lambda d: d["playlists"][3].pop("pid"), ["playlist 3", "'pid'"]),
    "no tracks": (lambda d: d["playlists"][4].pop("tracks"), ["playlist 4 (pid 18)", "'tracks'"]),
    "no track_uri": (lambda d: d["playlists"][6]["tracks"][1].pop("track_uri"), ["pid 20", "track 1", "track_uri"]),
    # pid 19 (index 5) lists its tracks with shuffled pos; pid 20 has no pos at all.
    "non-integer pos": (lambda d: d["playlists"][5]["tracks"][0].update(pos="1"), ["pid 19", "'pos' '1'"]),
    "float pos": (lambda d: d["playlists"][5]["tracks"][0].update(pos=0.5), ["pid 19", "not an integer"]),
    "duplicate pos": (lambda d: d["playlists"][5]["tracks"][1].update(pos=d["playlists"][5]["tracks"][0]["pos"]),
                      ["pid 19", "two tracks at pos"]),
    "partial pos": (lambda d: d["playlists"][5]["tracks"][0].pop("pos"), ["pid 19", "expected all of them or none"]),
    "duplicate pid": (lambda d: d["playlists"][6].update(pid=0), ["pid 0", "already used in mpd.slice.0-13.json"]),
    "conflicting artist": (lambda d: d["playlists"][6]["tracks"][0].update(artist_name="Someone Else"),
                           ["pid 20", "artist_name 'Someone Else'", "expected one artist per track_uri"]),
    "pos beyond 64 bits": (lambda d: d["playlists"][5]["tracks"][0].update(pos=10**25),
                           ["pid 19", "'pos' 10000000000000000000000000 ", "not an integer (64-bit)"]),
    "nested too deeply": (lambda text: "[" * 100_000 + "]" * 100_000, ["nested too deeply"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_slice_is_one_line_error(tmp_path: Path, case: str) -> None:
    directory = tmp_path / "mpd"
    rng_truth = _write_slices(directory, n_slices=3, per_slice=14)
    assert len(rng_truth["19"]["songs"]) >= 2 and len(rng_truth["20"]["songs"]) >= 2  # the edited playlists
    target = directory / "mpd.slice.14-27.json"
    edit, expected = MALFORMED[case]
    if case in ("invalid json", "no playlists", "nested too deeply"):
        target.write_text(edit(target.read_text()), encoding="utf-8")
    else:
        data = _playlists(target)
        if case == "conflicting artist":
            # Make playlist 20's first track one that an earlier slice already described.
            first_uri = next(t["track_uri"] for p in _playlists(directory / "mpd.slice.0-13.json")["playlists"]
                             for t in p["tracks"])
            data["playlists"][6]["tracks"][0]["track_uri"] = first_uri
        edit(data)
        target.write_text(json.dumps(data), encoding="utf-8")
    out = tmp_path / "out"
    assert_one_line_error(run_cli("-q", "data", "prepare", str(directory), "--out", str(out)), "mpd.slice.14-27.json",
                          *expected)
    assert not out.exists()


def test_no_slices_and_no_playable_playlist(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no mpd.slice"):
        read_mpd(tmp_path / "empty")
    with pytest.raises(InputError, match="glob matches no file"):
        read_input(str(tmp_path / "empty" / "mpd.slice.*.json"))
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "mpd.slice.0-0.json").write_text(
        json.dumps({"info": {}, "playlists": [{"pid": 0, "name": "x", "tracks": [_track(1, 0)]}]}))
    with pytest.raises(InputError, match="no playlist with at least 2 tracks"):
        read_mpd(tmp_path / "short")


def test_many_slices_stream_into_correct_counts(tmp_path: Path) -> None:
    """20 slices x 1,000 playlists, parsed one slice at a time: every count matches the truth."""
    truth = _write_slices(tmp_path / "mpd", n_slices=20, per_slice=1000, seed=4, n_songs=3000)
    raw = read_mpd(tmp_path / "mpd")
    kept = [t for t in truth.values() if len(t["songs"]) >= 2]
    assert raw.plays["sequence_id"].nunique() == len(kept) == len(raw.sequence_names)
    assert len(raw.plays) == sum(len(t["songs"]) for t in kept)
    assert raw.tracks["track_id"].nunique() == len({u for t in kept for u in t["songs"]}) == len(raw.tracks)
    assert raw.dropped["short_sequences"] == len(truth) - len(kept)
    # Every play count per track matches (a check on the compact code arrays, not only on sizes).
    counts = raw.plays["track_id"].astype(str).value_counts()
    expected = pd.Series([u for t in kept for u in t["songs"]]).value_counts()
    pd.testing.assert_series_equal(counts.sort_index(), expected.sort_index(), check_names=False)
    # Slices are read in pid order: mpd.slice.2000-2999 after mpd.slice.1000-1999, before 10000-10999.
    assert [p.name for p in raw.input_files][:3] == ["mpd.slice.0-999.json", "mpd.slice.1000-1999.json",
                                                     "mpd.slice.2000-2999.json"]
    assert np.array_equal(raw.plays["position"].to_numpy()[:3], [0, 1, 2])
