"""Integrity of prepared datasets: tampered, truncated or hostile files are one error line naming the file and
the fix, through the real CLI (``eval``, ``study create``, ``data verify``) and in process; a pickle in place of
an array is never unpickled; the values are checked even when hashing is skipped; the hash-on-load size rule is
tested at its boundary."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hpo.data.dataset
from hpo.data.dataset import PreparedDataset
from storage.errors import InputError
from tests.conftest import assert_one_line_error, run_cli, tiny_study_config, write_toml

FIX = "prepare it again from its input with the same options: songhpo data prepare"


def _copy(prepared: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    return copy


def _edit_manifest(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        manifest = json.loads((path / "manifest.json").read_text())
        edit(manifest)
        (path / "manifest.json").write_text(json.dumps(manifest))
    return tamper


def _truncate(name: str, keep: float) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[: int(len(data) * keep)])
    return tamper


def _set_pair(value: int) -> Callable[[Path], None]:
    def tamper(path: Path) -> None:
        pairs = np.load(path / "validation_pairs_out.npy")
        pairs[3, 1] = value
        np.save(path / "validation_pairs_out.npy", pairs)
    return tamper


def _object_array(path: Path) -> None:
    pairs = np.load(path / "validation_pairs_in.npy")
    objects = np.empty(len(pairs), dtype=object)
    objects[:] = [tuple(p) for p in pairs.tolist()]
    np.save(path / "validation_pairs_in.npy", objects, allow_pickle=True)


def _huge_header(path: Path) -> None:
    with open(path / "test_pairs_out.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<i4", "fortran_order": False, "shape": (10**12, 2)})
        handle.write(b"\0" * 64)


def _songs_one_row_short(path: Path) -> None:
    pd.read_parquet(path / "songs.parquet").iloc[:-1].to_parquet(path / "songs.parquet", index=False)


#: One case per class of damage: (how, the file the error line names first, a fragment of the line).
TAMPERED = {
    "truncated .npy": (_truncate("train_tokens.npy", 0.5), "train_tokens.npy", "is truncated"),
    "truncated Parquet": (_truncate("hard_negatives.parquet", 0.6), "hard_negatives.parquet",
                          "not a readable Parquet file"),
    "song id out of range": (_set_pair(10**6), "validation_pairs_out.npy", "content differs from the SHA-256"),
    "negative song id": (_set_pair(-3), "validation_pairs_out.npy", "content differs from the SHA-256"),
    "manifest without counts": (_edit_manifest(lambda m: m.pop("counts")), "manifest.json", "no 'counts' object"),
    "pickled object array as .npy": (_object_array, "validation_pairs_in.npy", "holds Python objects"),
    # The row count disagrees with the manifest: songs.parquet is named, then the manifest's count.
    "edited song count": (_edit_manifest(lambda m: m["counts"].update(songs=m["counts"]["songs"] + 1)),
                          "songs.parquet", "rows but the manifest's counts.songs is"),
    "rows removed from songs.parquet": (_songs_one_row_short, "songs.parquet", "rows but the manifest's counts.songs"),
    "header claims 10^12 rows": (_huge_header, "test_pairs_out.npy", "claims shape (1000000000000, 2)"),
    "edited file hash": (_edit_manifest(lambda m: m["files"].update({"songs.parquet": "0" * 64})), "manifest.json",
                         "the fingerprint does not match"),
}


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def vectors(prepared_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid embedding file for the prepared_synth songs."""
    track_ids = pd.read_parquet(prepared_synth / "songs.parquet")["track_id"].astype(str).tolist()
    directory = tmp_path_factory.mktemp("vectors")
    np.save(directory / "e.npy", np.random.default_rng(0).standard_normal((len(track_ids), 8)).astype(np.float32))
    (directory / "e.vocab.txt").write_text("".join(f"{t}\n" for t in track_ids))
    return directory / "e.npy"


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_dataset_is_one_line_through_eval(prepared_synth: Path, vectors: Path, tmp_path: Path,
                                                   case: str) -> None:
    tamper, name, fragment = TAMPERED[case]
    copy = _copy(prepared_synth, tmp_path)
    tamper(copy)
    before = _listing(tmp_path)
    result = run_cli("-q", "eval", "--prepared", str(copy), "--embeddings", str(vectors), "--k", "10")
    assert_one_line_error(result, f"{copy / name}:", fragment, FIX, f"--out {copy} --force")
    assert _listing(tmp_path) == before  # nothing written, nothing repaired behind the user's back


def test_tampered_dataset_is_one_line_through_study_create_and_run(prepared_synth: Path, tmp_path: Path) -> None:
    copy = _copy(prepared_synth, tmp_path)
    _truncate("validation_pairs_in.npy", 0.9)(copy)
    config = write_toml(tmp_path / "study.toml", tiny_study_config(copy, f"sqlite:///{tmp_path / 's.db'}"))
    for command in (["study", "create", str(config)], ["study", "run", str(config)]):
        assert_one_line_error(run_cli("-q", *command), f"{copy / 'validation_pairs_in.npy'}: is truncated", FIX)
    assert not (tmp_path / "s.db").exists()  # refused before the storage was touched


def test_a_pickle_in_place_of_an_array_is_never_unpickled(prepared_synth: Path, vectors: Path, tmp_path: Path) -> None:
    copy = _copy(prepared_synth, tmp_path)
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (open, (str(marker), "w"))  # unpickling would create the marker file

    objects = np.empty(2, dtype=object)
    objects[:] = [Exploit(), Exploit()]
    np.save(copy / "train_offsets.npy", objects, allow_pickle=True)
    assert b"unpickled" in (copy / "train_offsets.npy").read_bytes()  # the payload is really in there
    assert_one_line_error(run_cli("-q", "eval", "--prepared", str(copy), "--embeddings", str(vectors)),
                    "train_offsets.npy: holds Python objects", "pickles are not loaded for safety")
    shutil.copy(prepared_synth / "train_offsets.npy", copy / "train_offsets.npy")
    (copy / "test_pairs_in.npy").write_bytes(pickle.dumps(Exploit()))  # a bare pickle
    with pytest.raises(InputError, match=r"test_pairs_in\.npy: is a Python pickle"):
        PreparedDataset.load(copy, verify=False)
    assert not marker.exists()


def _rewrite(name: str, change: Callable[[np.ndarray], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        array = np.load(path / name)
        change(array)
        np.save(path / name, array)
    return edit


def _swap_offsets(array: np.ndarray) -> None:
    array[[4, 5]] = array[[5, 4]]


def _hard_negative_out_of_range(path: Path) -> None:
    frame = pd.read_parquet(path / "hard_negatives.parquet")
    frame.loc[0, "b"] = 10**6
    frame.to_parquet(path / "hard_negatives.parquet", index=False)


def _invalid_utf8_track_id(path: Path) -> None:
    songs = pd.read_parquet(path / "songs.parquet")
    marker = "Z" * 12
    songs.loc[0, "track_id"] = marker
    songs.to_parquet(path / "songs.parquet", index=False, compression=None)
    data = bytearray((path / "songs.parquet").read_bytes())
    data[data.find(marker.encode()) + 3] = 0xFF  # a damaged page: bytes that are not UTF-8
    (path / "songs.parquet").write_bytes(bytes(data))


def _unknown_artist_code(path: Path) -> None:
    songs = pd.read_parquet(path / "songs.parquet")
    songs.loc[0, "artist_code"] = -4
    songs.to_parquet(path / "songs.parquet", index=False)


#: Same-size edits whose values are wrong: what is checked when a dataset is too big to hash at every load.
BAD_VALUES = {
    "pair id == n_songs": (_rewrite("validation_pairs_in.npy", lambda a: a.__setitem__((0, 0), a.max() + 10**5)),
                           lambda d: d.pairs("validation", "in"), "song ids span"),
    "negative train token": (_rewrite("train_tokens.npy", lambda a: a.__setitem__(7, -1)),
                             lambda d: d.train_tokens, "song ids span [-1,"),
    "held-out token below -1": (_rewrite("test_sequences_tokens.npy", lambda a: a.__setitem__(2, -2)),
                                lambda d: d.heldout_sequences("test"), "song ids span [-2,"),
    "offsets not increasing": (_rewrite("train_offsets.npy", _swap_offsets),
                               lambda d: d.train_offsets, "offsets must increase"),
    "hard negative out of range": (_hard_negative_out_of_range, lambda d: d.hard_negative_pairs, "song ids span"),
    "artist code below -1": (_unknown_artist_code, lambda d: d.artist_codes, "'artist_code' holds -4"),
    "non-UTF-8 string in a Parquet page": (_invalid_utf8_track_id, lambda d: d.songs, "Invalid UTF8"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_values_are_checked_without_hashes(prepared_synth: Path, tmp_path: Path, case: str) -> None:
    edit, use, fragment = BAD_VALUES[case]
    copy = _copy(prepared_synth, tmp_path)
    edit(copy)
    dataset = PreparedDataset.load(copy, verify=False)  # sizes and shapes are still right
    with pytest.raises(InputError, match="prepare it again") as info:
        use(dataset)
    assert fragment in str(info.value) and str(copy) in str(info.value)
    with pytest.raises(InputError, match="content differs from the SHA-256"):
        PreparedDataset.load(copy, verify=True)


def test_hashes_are_checked_at_load_up_to_the_size_limit(prepared_synth: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _copy(prepared_synth, tmp_path)
    # A same-size edit that keeps every value valid: only the hash can tell.
    pairs = np.load(copy / "test_pairs_out.npy")
    pairs[[0, 1]] = pairs[[1, 0]]
    np.save(copy / "test_pairs_out.npy", pairs)
    manifest = json.loads((copy / "manifest.json").read_text())
    total = sum((copy / name).stat().st_size for name in manifest["files"])
    monkeypatch.setattr(hpo.data.dataset, "HASH_ON_LOAD_BYTES", total)  # exactly at the limit: hashed
    with pytest.raises(InputError, match=r"test_pairs_out\.npy: content differs from the SHA-256"):
        PreparedDataset.load(copy)
    monkeypatch.setattr(hpo.data.dataset, "HASH_ON_LOAD_BYTES", total - 1)  # one byte over: not hashed at load
    dataset = PreparedDataset.load(copy)
    assert dataset.pairs("test", "out").shape == pairs.shape
    with pytest.raises(InputError, match=r"test_pairs_out\.npy: content differs"):
        dataset.verify()  # ... but `data verify` hashes everything


def test_verify_cross_checks_the_counts_the_files_determine(prepared_synth: Path, tmp_path: Path) -> None:
    summary = PreparedDataset.load(prepared_synth).verify()
    manifest = json.loads((prepared_synth / "manifest.json").read_text())
    assert summary == {"path": str(prepared_synth), "fingerprint": manifest["fingerprint"],
                       "files": len(manifest["files"]), "songs": manifest["counts"]["songs"],
                       "bytes": sum((prepared_synth / n).stat().st_size for n in manifest["files"])}
    for key in ("artists", "songs_with_genre", "plays", "inset_masked", "songs_with_hard_negative"):
        copy = _copy(prepared_synth, tmp_path / key)
        _edit_manifest(lambda m, key=key: m["counts"].update({key: m["counts"][key] + 1}))(copy)
        with pytest.raises(InputError, match=f"counts.{key} is {manifest['counts'][key] + 1} but the files give "
                                             f"{manifest['counts'][key]}"):
            PreparedDataset.load(copy).verify()


def test_data_verify_prints_a_summary_and_a_reprepared_dataset_passes(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    assert run_cli("-q", "data", "prepare", str(synth_dir), "--out", str(out), "--seed", "3").returncode == 0
    good = run_cli("-q", "data", "verify", str(out))
    assert good.returncode == 0, good.stderr
    summary = json.loads(good.stdout)
    assert summary["verified"] is True and summary["files"] == 13 and summary["songs"] > 100
    _truncate("songs.parquet", 0.5)(out)
    line = assert_one_line_error(run_cli("-q", "data", "verify", str(out)), "songs.parquet")
    # The message's own fix works: the same command with --force rebuilds a dataset that verifies.
    command = line.split("prepare it again from its input with the same options: ")[1].split()
    assert command[:3] == ["songhpo", "data", "prepare"] and command[3] == str(synth_dir.resolve())
    rebuilt = run_cli("-q", *command[1:], "--seed", "3")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert run_cli("-q", "data", "verify", str(out)).returncode == 0
