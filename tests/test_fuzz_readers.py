"""Property tests (hypothesis) over every reader of a user file: generic CSV/TSV/Parquet tables, the yes.com
files, MPD JSON slices, the embeddings loader and prepared-dataset directories. Whatever the bytes, the only
outcomes are a result or one :class:`~storage.errors.InputError` whose message is one line naming the file,
never another exception (no traceback reaches the user)."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hpo.data.dataset import PreparedDataset
from hpo.data.embeddings_io import read_embeddings
from hpo.data.prepare import PrepareParams, prepare_dataset
from hpo.data.readers import RawDataset, read_input
from storage.errors import InputError

# Deterministic by default (CI must not flake on a new random example). SONGHPO_FUZZ_EXAMPLES=5000 fuzzes
# longer with fresh random examples.
_EXAMPLES = os.environ.get("SONGHPO_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(_EXAMPLES or 120), deadline=None, derandomize=_EXAMPLES is None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GOOD_PLAYS = "sequence_id,position,track_id\n" + "".join(
    f"s{s},{p},t{(s * 3 + p) % 7}\n" for s in range(12) for p in range(4))
GOOD_TRACKS = "track_id,artist,genre\n" + "".join(f"t{i},artist{i % 3},genre{i % 2}\n" for i in range(7))
_NASTY = ["", " ", "\x00", '"', "'", ",", "\t", "\n", "\r\n", "\\", "1e400", "-inf", "nan", "NaN", "1.5", "-1",
          "99999999999999999999999", "0x10", "٣", "\ufeff", "é", "\u2028", "a" * 300]
_CELL = st.one_of(st.sampled_from(_NASTY), st.text(max_size=12), st.integers(-2**70, 2**70).map(str))


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    # Not tmp_path: one fresh directory per hypothesis example.
    with tempfile.TemporaryDirectory(prefix="songhpo-fuzz-") as directory:
        yield Path(directory)


def _outcome(call: Callable[[], object], where: Path) -> object:
    """Run ``call``; an InputError must be one line naming a file under ``where``. Other errors propagate."""
    try:
        return call()
    except InputError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, message
        assert str(where) in message or "--" in message, message
        return exc


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True once in ``one_in`` draws; False is what hypothesis shrinks to, so the usual branch stays usual."""
    return draw(st.integers(1, one_in)) == one_in


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    """A valid file with a few byte-level edits: truncation, overwritten bytes, inserted bytes."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            del data[at:]
        elif kind == "overwrite" and data:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


# -- generic tables ------------------------------------------------------------------------------------


#: Cell values: mostly plausible (so that some tables are read and prepared), some hostile.
_PLAUSIBLE = st.one_of(st.sampled_from(["s1", "s20", "t3", "t6", "t99", "0", "7", "-2", "12"]),
                       st.integers(0, 60).map(str))


@st.composite
def _edited_table(draw: st.DrawFn, text: str) -> str:
    rows = [line.split(",") for line in text.splitlines()]
    for _ in range(draw(st.integers(0, 4))):
        r = draw(st.integers(0, len(rows) - 1))
        c = draw(st.integers(0, len(rows[r]) - 1))
        rows[r][c] = draw(st.one_of(_PLAUSIBLE, _CELL) if draw(st.booleans()) else _PLAUSIBLE)
    if _rarely(draw, 4):
        rows.append([draw(_CELL) for _ in range(draw(st.integers(0, 5)))])
    return "\n".join(",".join(row) for row in rows) + "\n"


@st.composite
def _generic_files(draw: st.DrawFn) -> tuple[str, bytes, bytes]:
    suffix = draw(st.sampled_from([".csv", ".tsv", ".csv.gz", ".tsv.gz"]))
    plays = draw(st.text(max_size=200) if _rarely(draw, 6) else _edited_table(GOOD_PLAYS))
    tracks = draw(st.one_of(_edited_table(GOOD_TRACKS), st.just(GOOD_TRACKS)))
    if ".tsv" in suffix:
        plays, tracks = plays.replace(",", "\t"), tracks.replace(",", "\t")
    plays_bytes, tracks_bytes = plays.encode("utf-8", "surrogatepass"), tracks.encode("utf-8", "surrogatepass")
    if _rarely(draw, 4):
        plays_bytes = _mutate(plays_bytes, draw)
    if suffix.endswith(".gz"):
        plays_bytes = gzip.compress(plays_bytes, mtime=0)
        if _rarely(draw, 4):
            plays_bytes = _mutate(plays_bytes, draw)
    return suffix, plays_bytes, tracks_bytes


@FUZZ
@given(_generic_files(), st.booleans())
def test_generic_text_tables_give_a_result_or_one_line(files: tuple[str, bytes, bytes], lenient: bool) -> None:
    suffix, plays, tracks = files
    with _scratch() as directory:
        (directory / f"plays{suffix}").write_bytes(plays)
        (directory / f"tracks{suffix.replace('.gz', '')}").write_bytes(tracks)
        result = _outcome(lambda: read_input(directory, drop_short=lenient, allow_missing_metadata=lenient), directory)
        if isinstance(result, RawDataset):
            assert result.plays["position"].dtype == np.int64 and result.plays["track_id"].notna().all()
            # What the reader accepts, preparation accepts or refuses in one line too.
            _outcome(lambda: prepare_dataset(result, directory / "out", PrepareParams(val=0.25, test=0.25)), directory)


_COLUMN = st.one_of(
    st.lists(_CELL, min_size=4, max_size=4),
    st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), min_size=4, max_size=4),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=4, max_size=4),
    st.lists(st.binary(max_size=6), min_size=4, max_size=4),
    st.lists(st.lists(st.integers(0, 3), max_size=2), min_size=4, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
)


_GOOD_PLAYS_FRAME = pd.read_csv(io.StringIO(GOOD_PLAYS), dtype=str).iloc[:4]


@FUZZ
@given(st.dictionaries(st.sampled_from(["sequence_id", "position", "track_id", "user_id", "x"]), _COLUMN,
                       max_size=3), st.lists(st.sampled_from(["sequence_id", "position", "track_id"]), max_size=1),
       st.data())
def test_parquet_tables_give_a_result_or_one_line(columns: dict[str, list[object]], dropped: list[str],
                                                   data: st.DataObject) -> None:
    frame = _GOOD_PLAYS_FRAME.drop(columns=dropped)
    for name, values in columns.items():
        frame[name] = values
    with _scratch() as directory:
        buffer = io.BytesIO()
        try:
            frame.to_parquet(buffer, index=False)
        except Exception:  # noqa: BLE001 - a frame pyarrow cannot write is no input at all
            assume(False)
        raw = buffer.getvalue()
        if _rarely(data.draw, 4):
            raw = _mutate(raw, data.draw)
        (directory / "plays.parquet").write_bytes(raw)
        (directory / "tracks.csv").write_text(GOOD_TRACKS)
        _outcome(lambda: read_input(directory, allow_missing_metadata=True, drop_short=True), directory)


# -- yes.com ---------------------------------------------------------------------------------------------

_YES = {
    "train.txt": "#\n#\n0 1 2\n1 2 0\n2 0 1 3\n",
    "song_hash.txt": "0\ta\tA\n1\tb\tB\n2\tc\tC\n3\td\tA\n",
    "tags.txt": "1\n#\n1 2\n2\n",
    "tag_hash.txt": "1, rock\n2, country\n",
}


@st.composite
def _yes_files(draw: st.DrawFn) -> dict[str, bytes]:
    files = {name: text.encode() for name, text in _YES.items()}
    for name in draw(st.lists(st.sampled_from(sorted(files)), max_size=3, unique=True)):
        choice = draw(st.sampled_from(["mutate", "text", "tokens", "append"]))
        if choice == "mutate":
            files[name] = _mutate(files[name], draw)
        elif choice == "text":
            files[name] = draw(st.text(max_size=80)).encode("utf-8", "surrogatepass")
        elif choice == "append":
            files[name] += " ".join(draw(st.lists(st.one_of(_PLAUSIBLE, _CELL), max_size=4))).encode("utf-8", "surrogatepass")
        else:
            lines = draw(st.lists(st.lists(_CELL, max_size=4), max_size=6))
            files[name] = "\n".join(" ".join(line) for line in lines).encode("utf-8", "surrogatepass")
    return files


@FUZZ
@given(_yes_files())
def test_yes_files_give_a_result_or_one_line(files: dict[str, bytes]) -> None:
    with _scratch() as directory:
        for name, content in files.items():
            (directory / name).write_bytes(content)
        _outcome(lambda: read_input(directory, "yes"), directory)


# -- MPD JSON --------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)

def _mostly(draw: st.DrawFn, usual: st.SearchStrategy[object], hostile: st.SearchStrategy[object]) -> object:
    """``usual`` 9 times in 10, ``hostile`` otherwise: most slices are read, a few break one field."""
    return draw(hostile) if _rarely(draw, 10) else draw(usual)


@st.composite
def _mpd_track(draw: st.DrawFn, position: int | None) -> object:
    uri = draw(st.sampled_from(["a", "b", "c", "d"]))
    track = {"track_uri": _mostly(draw, st.just(uri), _JSON),
             "artist_name": _mostly(draw, st.just(uri.upper()), _JSON),
             "track_name": _mostly(draw, st.text(max_size=4), _JSON)}
    if position is not None:
        track["pos"] = _mostly(draw, st.just(position), st.one_of(st.integers(-2**80, 2**80), _JSON))
    return _mostly(draw, st.just(track), _JSON)


@st.composite
def _mpd_slice(draw: st.DrawFn) -> bytes:
    playlists = []
    for index in range(draw(st.integers(0, 4))):
        with_pos = draw(st.booleans())  # all tracks of a playlist have 'pos', or none
        tracks = [draw(_mpd_track(p if with_pos else None)) for p in range(draw(st.integers(0, 4)))]
        pid = _mostly(draw, st.just(index), _JSON)
        playlist: object = {"pid": pid, "name": _mostly(draw, st.text(max_size=5), _JSON), "tracks": tracks}
        playlists.append(_mostly(draw, st.just(playlist), _JSON))
    document: object = draw(_JSON) if _rarely(draw, 10) else {"info": {}, "playlists": playlists}
    raw = json.dumps(document).encode()
    return _mutate(raw, draw) if _rarely(draw, 5) else raw


@FUZZ
@given(_mpd_slice())
def test_mpd_slices_give_a_result_or_one_line(raw: bytes) -> None:
    with _scratch() as directory:
        (directory / "mpd.slice.0-999.json").write_bytes(raw)
        _outcome(lambda: read_input(directory, "mpd"), directory)


# -- embeddings ------------------------------------------------------------------------------------------


def _valid_embeddings(fmt: str) -> tuple[str, bytes, bytes | None]:
    keys = ["t1", "t2", "t3"]
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        return "e.npy", buffer.getvalue(), "".join(k + "\n" for k in keys).encode()
    if fmt == "word2vec":
        text = "3 4\n" + "".join(f"{k} " + " ".join(map(str, v)) + "\n" for k, v in zip(keys, vectors))
        return "e.txt", text.encode(), None
    body = b"".join(k.encode() + b" " + v.astype("<f4").tobytes() for k, v in zip(keys, vectors))
    return "e.bin", b"3 4\n" + body, None


@st.composite
def _embedding_file(draw: st.DrawFn) -> tuple[str, bytes, bytes | None, str]:
    fmt = draw(st.sampled_from(["npy", "word2vec", "word2vec-binary"]))
    name, data, vocab = _valid_embeddings(fmt)
    choice = draw(st.sampled_from(["valid", "mutate", "header", "random", "vocab"]))
    if choice == "mutate":
        data = _mutate(data, draw)
    elif choice == "header" and fmt == "npy":
        shape = tuple(draw(st.lists(st.integers(0, 2**62), max_size=3)))
        descr = draw(st.sampled_from(["<f4", ">f8", "<i8", "|O", "<c8", "|b1", "<U3", "<f2"]))
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": draw(st.booleans()),
                                                      "shape": shape})
        data = buffer.getvalue() + draw(st.binary(max_size=64))
    elif choice == "header":
        n, d = draw(st.integers(0, 2**62)), draw(st.integers(0, 2**62))
        data = f"{n} {d}\n".encode() + data.partition(b"\n")[2]
    elif choice == "random":
        data = draw(st.binary(max_size=200))
    elif vocab is not None:
        vocab = _mutate(vocab, draw)
    if _rarely(draw, 6) and fmt != "npy":
        name, data = name + ".gz", gzip.compress(data, mtime=0)
    return name, data, vocab, draw(st.sampled_from(["auto", fmt]))


@FUZZ
@given(_embedding_file())
def test_embedding_files_give_a_result_or_one_line(case: tuple[str, bytes, bytes | None, str]) -> None:
    name, data, vocab, fmt = case
    with _scratch() as directory:
        (directory / name).write_bytes(data)
        if vocab is not None:
            (directory / "e.vocab.txt").write_bytes(vocab)
        result = _outcome(lambda: read_embeddings(directory / name, fmt=fmt), directory)
        if not isinstance(result, InputError):
            assert result.vectors.dtype == np.float32 and np.isfinite(result.vectors).all()


# -- prepared datasets -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("fuzz-raw")
    (raw / "plays.csv").write_text(GOOD_PLAYS)
    (raw / "tracks.csv").write_text(GOOD_TRACKS)
    out = tmp_path_factory.mktemp("fuzz-prepared") / "p"
    prepare_dataset(read_input(raw), out, PrepareParams(val=0.25, test=0.25, seed=1))
    return out


_PREPARED_FILES = ["manifest.json", "songs.parquet", "sequences.parquet", "hard_negatives.parquet", "train_tokens.npy",
                   "train_offsets.npy", "validation_pairs_in.npy", "test_pairs_out.npy", "test_sequences_offsets.npy"]


def _use_everything(path: Path, hashes: bool) -> None:
    dataset = PreparedDataset.load(path, verify=hashes)
    dataset.verify(hashes=hashes)
    dataset.training_sentences()


@settings(FUZZ, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_PREPARED_FILES), st.booleans(), st.data())
def test_damaged_prepared_datasets_give_one_line(small_prepared: Path, name: str, hashes: bool,
                                                  data: st.DataObject) -> None:
    with _scratch() as directory:
        copy = directory / "p"
        shutil.copytree(small_prepared, copy)
        before = (copy / name).read_bytes()
        if name == "manifest.json" and data.draw(st.booleans()):
            manifest = json.loads(before)
            section = data.draw(st.sampled_from(["counts", "files", "hard_negatives", "parameters", None]))
            if section is None:
                manifest = data.draw(_JSON)
            else:
                key = data.draw(st.sampled_from(sorted(manifest[section]) or ["x"]))
                manifest[section][key] = data.draw(_JSON)
            after = json.dumps(manifest).encode()
        else:
            after = _mutate(before, data.draw)
        assume(after != before)
        (copy / name).write_bytes(after)
        # hashes=False: the size, structure and value checks alone, as for a dataset too big to hash at load.
        result = _outcome(lambda: _use_everything(copy, hashes), directory)
        if hashes and name != "manifest.json":  # every data file is hashed: any edit is caught
            assert isinstance(result, InputError), f"a modified {name} was accepted"
