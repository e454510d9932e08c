"""Prepared datasets: the SPEC §3 splits checked against an independent pandas reconstruction,
determinism, atomic writes, and every real dataset in ../shared/data."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hpo.data.prepare
from hpo.data.dataset import PreparedDataset
from hpo.data.prepare import PrepareParams, prepare_dataset
from hpo.data.readers import read_input
from metrics.hard_negatives import find_hard_negatives
from storage.errors import InputError
from tests.conftest import shared_dataset


def _sequences_by_split(prepared: Path, raw_plays: pd.DataFrame) -> dict[str, list[list[str]]]:
    split = pd.read_parquet(prepared / "sequences.parquet").set_index("sequence_id")["split"]
    grouped = raw_plays.sort_values(["sequence_id", "position"]).groupby("sequence_id")["track_id"].apply(list)
    out: dict[str, list[list[str]]] = {"train": [], "validation": [], "test": []}
    for sequence_id, tracks in grouped.items():
        out[split[sequence_id]].append([str(t) for t in tracks])
    return out


def test_splits_match_an_independent_reconstruction(synth_dir: Path, prepared_synth: Path) -> None:
    raw = read_input(synth_dir)
    data = PreparedDataset.load(prepared_synth, verify=True)
    track_of = data.songs["track_id"].astype(str).tolist()
    song_of = {t: i for i, t in enumerate(track_of)}
    by_split = _sequences_by_split(prepared_synth, raw.plays)
    assert len(by_split["validation"]) == len(by_split["test"]) == 300  # 10% of 3000 each

    # Training = train sequences with the last song of every sequence of length >= 3 masked.
    expected_train = [seq[:-1] if len(seq) >= 3 else seq for seq in by_split["train"]]
    got = [
        [track_of[t] for t in data.train_tokens[data.train_offsets[i] : data.train_offsets[i + 1]]]
        for i in range(len(data.train_offsets) - 1)
    ]
    assert got == expected_train

    # No held-out sequence leaks into training; vocabulary is exactly the training songs.
    train_ids = set(pd.read_parquet(prepared_synth / "sequences.parquet").query("split == 'train'")["sequence_id"])
    heldout_ids = set(raw.plays["sequence_id"]) - train_ids
    assert len(heldout_ids) == 600 and not heldout_ids & train_ids
    assert set(track_of) == {t for seq in expected_train for t in seq}
    assert np.array_equal(data.train_counts, np.bincount(data.train_tokens, minlength=data.n_songs))

    # In-set pairs: (second-to-last, last) of masked train sequences, split between validation and test.
    inset = [(seq[-2], seq[-1]) for seq in by_split["train"] if len(seq) >= 3]
    kept = [(song_of[a], song_of[b]) for a, b in inset if a in song_of and b in song_of and a != b]
    got_in = [tuple(p) for s in ("validation", "test") for p in data.pairs(s, "in").tolist()]
    assert sorted(got_in) == sorted(kept)
    assert 0.4 < len(data.pairs("validation", "in")) / len(kept) < 0.6

    # Out-of-set pairs: every ordered adjacent in-vocabulary pair of the held-out sequences, self pairs dropped.
    for split in ("validation", "test"):
        expected_out = [
            (song_of[a], song_of[b])
            for seq in by_split[split]
            for a, b in zip(seq, seq[1:])
            if a in song_of and b in song_of and a != b
        ]
        assert [tuple(p) for p in data.pairs(split, "out").tolist()] == expected_out
        dropped = data.manifest["dropped"][f"{split}_pairs"]["out"]
        assert dropped["candidates"] == sum(len(s) - 1 for s in by_split[split])
        assert dropped["candidates"] - dropped["self"] - dropped["out_of_vocabulary"] == len(expected_out)


def test_labels_and_hard_negatives_follow_the_inputs(synth_dir: Path, prepared_synth: Path) -> None:
    raw = read_input(synth_dir)
    data = PreparedDataset.load(prepared_synth)
    meta = raw.tracks.set_index("track_id")
    songs = data.songs
    artists = meta.loc[songs["track_id"], "artist"].to_numpy()
    # Equal artist codes <=> equal artist names.
    codes = songs["artist_code"].to_numpy()
    assert (codes >= 0).all()
    assert len(set(zip(codes, artists))) == len(set(codes)) == len(set(artists))
    genre_missing = meta.loc[songs["track_id"], "genre"].isna().to_numpy()
    assert np.array_equal(songs["genre_code"].to_numpy() < 0, genre_missing) and genre_missing.any()
    expected = find_hard_negatives(data.train_tokens, data.train_offsets, data.n_songs)
    assert np.array_equal(data.hard_negative_pairs, expected.pairs)
    assert data.counts["hard_negative_pairs"] == expected.n_pairs > 0
    assert data.manifest["hard_negatives"]["n_songs"] == len(expected.songs())


def test_preparing_twice_gives_identical_files(synth_dir: Path, tmp_path: Path) -> None:
    raw = read_input(synth_dir)
    params = PrepareParams(seed=11, hardneg_scope="sequence")
    first = prepare_dataset(raw, tmp_path / "a", params)
    second = prepare_dataset(read_input(synth_dir), tmp_path / "b", params)
    assert first["fingerprint"] == second["fingerprint"]
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", names, shallow=False)
    assert mismatch == [] and errors == []
    other = prepare_dataset(raw, tmp_path / "c", PrepareParams(seed=12, hardneg_scope="sequence"))
    assert other["fingerprint"] != first["fingerprint"]


def test_failure_while_writing_leaves_nothing(synth_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(frame: pd.DataFrame, path: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(hpo.data.prepare, "_write_parquet", boom)
    with pytest.raises(OSError):
        prepare_dataset(read_input(synth_dir), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_then_replaced_with_force(prepared_synth: Path, synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="already exists"):
        prepare_dataset(read_input(synth_dir), out)
    assert (out / "keep.txt").exists()
    prepare_dataset(read_input(synth_dir), out, PrepareParams(seed=3), overwrite=True)
    assert not (out / "keep.txt").exists()
    assert PreparedDataset.load(out).fingerprint == PreparedDataset.load(prepared_synth).fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(
    ("parts", "fmt", "has_artists"),
    [(("yes", "yes_small"), "yes", True), (("yes", "yes_big"), "yes", True), (("aotm2011",), "generic", False)],
)
def test_real_datasets_prepare(parts: tuple[str, ...], fmt: str, has_artists: bool, tmp_path: Path) -> None:
    raw = read_input(shared_dataset(*parts))
    assert raw.format == fmt
    manifest = prepare_dataset(raw, tmp_path / "p")
    data = PreparedDataset.load(tmp_path / "p", verify=True)
    counts = manifest["counts"]
    assert counts["songs"] == data.n_songs == len(data.songs) > 1000
    assert (counts["artists"] > 0) == has_artists
    for split in ("validation", "test"):
        for side in ("in", "out"):
            pairs = data.pairs(split, side)
            assert counts["pairs"][split][side] == len(pairs) > 1000
            assert pairs.min() >= 0 and pairs.max() < data.n_songs
            assert (pairs[:, 0] != pairs[:, 1]).all()
    assert counts["train_plays"] == len(data.train_tokens)
