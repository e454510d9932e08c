"""The real ``songhpo`` CLI in a subprocess: help everywhere, synth -> prepare, and every bad input
giving a one-line error, exit code 2 and no partial output."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hpo import __version__
from tests.conftest import assert_one_line_error, run_cli

GOOD_PLAYS = "sequence_id,position,track_id\n" + "".join(
    f"s{s},{p},t{(s * 3 + p) % 7}\n" for s in range(12) for p in range(4)
)
GOOD_TRACKS = "track_id,artist,genre\n" + "".join(f"t{i},artist{i % 3},genre{i % 2}\n" for i in range(7))


def test_version_and_help_on_every_command() -> None:
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"songhpo {__version__}"
    for command in (["--help"], ["data", "--help"], ["data", "synth", "--help"], ["data", "prepare", "--help"]):
        result = run_cli(*command)
        assert result.returncode == 0, result.stderr
        assert "usage: songhpo" in result.stdout


def test_synth_then_prepare_prints_counts(tmp_path: Path) -> None:
    synth = run_cli("data", "synth", "--out", str(tmp_path / "raw"), "--sequences", "1500", "--tracks", "600", "--seed", "5")
    assert synth.returncode == 0, synth.stderr
    assert json.loads(synth.stdout)["sequences"] == 1500
    prepared = run_cli("data", "prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "prep"), "--seed", "1")
    assert prepared.returncode == 0, prepared.stderr
    report = json.loads(prepared.stdout)
    manifest = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert report["fingerprint"] == manifest["fingerprint"]
    assert report["counts"] == manifest["counts"]
    assert report["counts"]["validation_sequences"] == report["counts"]["test_sequences"] == 150
    assert report["hard_negatives"]["n_pairs"] > 0


def _dataset(tmp_path: Path, plays: str | bytes = GOOD_PLAYS, tracks: str | bytes = GOOD_TRACKS) -> Path:
    directory = tmp_path / "in"
    directory.mkdir()
    for name, content in (("plays.csv", plays), ("tracks.csv", tracks)):
        if content is None:
            continue
        path = directory / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return directory


BadCase = Callable[[Path], tuple[list[str], list[str]]]


def _missing_input(tmp_path: Path) -> tuple[list[str], list[str]]:
    return [str(tmp_path / "nope")], ["nope", "no such file or directory"]


def _missing_tracks_file(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, tracks=None)  # type: ignore[arg-type]
    return [str(d)], ["tracks.csv", "missing file"]


def _misnamed_column(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, plays=GOOD_PLAYS.replace("track_id", "trackid", 1))
    return [str(d)], ["plays.csv", "missing column 'track_id'", "did you mean 'trackid'"]


def _empty_file(tmp_path: Path) -> tuple[list[str], list[str]]:
    return [str(_dataset(tmp_path, plays=""))], ["plays.csv", "file is empty"]


def _header_only(tmp_path: Path) -> tuple[list[str], list[str]]:
    return [str(_dataset(tmp_path, tracks="track_id,artist,genre\n"))], ["tracks.csv", "no data rows"]


def _short_sequence(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, plays=GOOD_PLAYS + "lonely,0,t1\n")
    return [str(d)], ["plays.csv", "'lonely' has 1 play", "--drop-short"]


def _track_without_metadata(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, plays=GOOD_PLAYS + "s99,0,t1\ns99,1,ghost\n")
    return [str(d)], ["tracks.csv", "no metadata row", "'ghost'", "--allow-missing-metadata"]


def _conflicting_tracks(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, tracks=GOOD_TRACKS + "t3,someone else,genre1\n")
    return [str(d)], ["tracks.csv", "lines 5 and 9", "'t3'", "conflicting artist"]


def _non_numeric_position(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, plays=GOOD_PLAYS.replace("s2,1,", "s2,first,", 1))
    return [str(d)], ["plays.csv", "line 11", "'first' is not an integer"]


def _duplicate_position(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, plays=GOOD_PLAYS + "s0,3,t2\n")
    return [str(d)], ["plays.csv", "'s0' has two plays at position 3"]


def _bad_encoding(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, tracks=GOOD_TRACKS.encode() + "t9,Bj\xf6rk,pop\n".encode("latin-1"))
    return [str(d)], ["tracks.csv", "not valid UTF-8", "re-encode"]


def _position_infinite(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, plays=GOOD_PLAYS.replace("s0,1,", "s0,1e400,", 1))
    return [str(d)], ["plays.csv", "line 3", "'1e400' is not an integer below 2^53"]


def _position_not_exact(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path, plays=GOOD_PLAYS.replace("s0,1,", f"s0,{2**53},", 1))  # a float no longer counts by 1
    return [str(d)], ["plays.csv", "line 3", f"'{2**53}' is not an integer below 2^53"]


def _truncated_gzip(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = _dataset(tmp_path)
    (d / "plays.csv.gz").write_bytes(gzip.compress(GOOD_PLAYS.encode())[:-20])
    (d / "plays.csv").unlink()
    return [str(d)], ["plays.csv.gz", "cannot read the table"]


def _yes(tmp_path: Path, train: str) -> Path:
    directory = tmp_path / "in"
    directory.mkdir()
    for name, text in (("train.txt", train), ("song_hash.txt", "0\ta\tA\n1\tb\tB\n2\tc\tC\n"),
                       ("tags.txt", "1\n#\n1\n"), ("tag_hash.txt", "1, rock\n")):
        (directory / name).write_text(text)
    return directory


def _yes_id_beyond_int64(tmp_path: Path) -> tuple[list[str], list[str]]:
    return [str(_yes(tmp_path, "#\n#\n0 1 99999999999999999999\n1 2\n"))], [
        "train.txt", "line 3", "song id 99999999999999999999"]


def _yes_negative_id(tmp_path: Path) -> tuple[list[str], list[str]]:
    return [str(_yes(tmp_path, "#\n#\n0 1 2\n1 -2\n"))], ["train.txt", "line 4", "song id -2"]


def _yes_no_playlist(tmp_path: Path) -> tuple[list[str], list[str]]:
    return [str(_yes(tmp_path, "#\n#\n\n1\n\n"))], ["train.txt", "no playlist with at least 2 songs"]


def _fractions_too_large(tmp_path: Path) -> tuple[list[str], list[str]]:
    return [str(_dataset(tmp_path)), "--val", "0.6", "--test", "0.4"], ["--val 0.6 + --test 0.4", "below 1"]


def _output_exists(tmp_path: Path) -> tuple[list[str], list[str]]:
    (tmp_path / "out").mkdir()
    return [str(_dataset(tmp_path))], ["out", "already exists", "--force"]


@pytest.mark.parametrize(
    "case",
    [
        _missing_input, _missing_tracks_file, _misnamed_column, _empty_file, _header_only, _short_sequence,
        _track_without_metadata, _conflicting_tracks, _non_numeric_position, _duplicate_position, _bad_encoding,
        _fractions_too_large, _output_exists, _position_infinite, _position_not_exact, _truncated_gzip,
        _yes_id_beyond_int64, _yes_negative_id, _yes_no_playlist,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path: Path, case: BadCase) -> None:
    args, expected = case(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_one_line_error(run_cli("-q", "data", "prepare", *args, "--out", str(tmp_path / "out")), *expected)
    # Nothing half-written: the tree holds what it held before (no output, no temporary directory).
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_drop_short_and_allow_missing_metadata_accept_what_they_name(tmp_path: Path) -> None:
    d = _dataset(tmp_path, plays=GOOD_PLAYS + "lonely,0,t1\ns99,0,t1\ns99,1,ghost\n")
    result = run_cli(
        "-q", "data", "prepare", str(d), "--out", str(tmp_path / "out"), "--drop-short", "--allow-missing-metadata"
    )
    assert result.returncode == 0, result.stderr
    dropped = json.loads(result.stdout)["dropped"]
    assert dropped["short_sequences"] == 1 and dropped["tracks_without_metadata"] == 1
