"""Embedding files: round trips through every format, refusal of pickles, one-line errors naming the
file for every malformed input, and alignment to dataset song ids."""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

from hpo.data.embeddings_io import Embeddings, align_to_dataset, read_embeddings, write_embeddings
from storage.errors import InputError

KEYS = ["t1", "t2", "Björk–song", "t/4", "x5", "6"]


def _vectors(n: int = len(KEYS), d: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Wide dynamic range, so that any lossy text formatting would show.
    return (rng.standard_normal((n, d)) * np.logspace(-6, 3, d)).astype(np.float32)


def _keyed_vectors(keys: list[str], vectors: np.ndarray) -> KeyedVectors:
    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(keys, vectors)
    return kv


def test_write_then_read_npy_round_trip(tmp_path: Path) -> None:
    vectors = _vectors().astype(np.float64)
    matrix_path, vocab_path = write_embeddings(tmp_path / "sub" / "emb.npy", KEYS, vectors)
    assert matrix_path == tmp_path / "sub" / "emb.npy" and vocab_path == tmp_path / "sub" / "emb.vocab.txt"
    assert vocab_path.read_text(encoding="utf-8").splitlines() == KEYS
    assert sorted(p.name for p in matrix_path.parent.iterdir()) == ["emb.npy", "emb.vocab.txt"]  # no temp files
    umask = os.umask(0)
    os.umask(umask)
    for path in (matrix_path, vocab_path):  # ordinary files, not the temporary file's private 0o600
        assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~umask)
    for fmt in ("auto", "npy"):
        emb = read_embeddings(matrix_path, fmt=fmt)
        assert emb.keys == KEYS and len(emb) == len(KEYS) and emb.dim == 7
        assert emb.vectors.dtype == np.float32 and emb.vectors.flags.c_contiguous
        np.testing.assert_array_equal(emb.vectors, vectors.astype(np.float32))
    # The suffix is optional, and an explicit vocabulary elsewhere works too.
    write_embeddings(tmp_path / "plain", KEYS, vectors)
    (tmp_path / "plain.vocab.txt").rename(tmp_path / "keys.txt")
    emb = read_embeddings(tmp_path / "plain.npy", vocab=tmp_path / "keys.txt")
    assert emb.keys == KEYS


def test_write_embeddings_rejects_what_it_could_not_read_back(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate key 't1'"):
        write_embeddings(tmp_path / "e.npy", ["t1", "t1"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="line breaks"):
        write_embeddings(tmp_path / "e.npy", ["a\nb"], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="2 keys for 3 vectors"):
        write_embeddings(tmp_path / "e.npy", ["a", "b"], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        write_embeddings(tmp_path / "e.npy", ["a"], np.array([[np.nan, 1.0]]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["vectors.txt", "vectors.vec", "vectors.txt.gz"])
def test_gensim_text_format_reads_back_identically(tmp_path: Path, name: str) -> None:
    vectors = _vectors()
    path = tmp_path / name
    _keyed_vectors(KEYS, vectors).save_word2vec_format(str(path), binary=False)
    for fmt in ("auto", "word2vec"):
        emb = read_embeddings(path, fmt=fmt)
        assert emb.keys == KEYS
        np.testing.assert_array_equal(emb.vectors, vectors)


@pytest.mark.parametrize("name", ["vectors.bin", "vectors.w2v", "vectors.bin.gz"])
def test_gensim_binary_format_reads_back_identically(tmp_path: Path, name: str) -> None:
    # 'vectors.w2v' has no telling suffix: auto must recognise binary data after the header.
    vectors = _vectors()
    path = tmp_path / name
    _keyed_vectors(KEYS, vectors).save_word2vec_format(str(path), binary=True)
    for fmt in ("auto", "word2vec-binary"):
        emb = read_embeddings(path, fmt=fmt)
        assert emb.keys == KEYS
        np.testing.assert_array_equal(emb.vectors, vectors)


def test_c_tool_binary_with_newline_after_each_vector(tmp_path: Path) -> None:
    vectors = _vectors(d=3)
    records = b"".join(k.encode() + b" " + v.astype("<f4").tobytes() + b"\n" for k, v in zip(KEYS, vectors))
    path = tmp_path / "c.bin"
    path.write_bytes(f"{len(KEYS)} 3\n".encode() + records)
    emb = read_embeddings(path)
    assert emb.keys == KEYS
    np.testing.assert_array_equal(emb.vectors, vectors)


@pytest.mark.parametrize("name", ["m.pkl", "m.pickle", "w2v.model", "m.joblib", "w2v.model.gz", "M.PKL"])
def test_pickle_suffixes_are_refused_without_opening(tmp_path: Path, name: str) -> None:
    path = tmp_path / name  # does not even exist: refusal comes before any read
    with pytest.raises(InputError, match="not loaded for safety") as info:
        read_embeddings(path)
    assert str(path) in str(info.value) and ".npy" in str(info.value) and "word2vec" in str(info.value)


def test_only_the_last_suffix_marks_a_pickle(tmp_path: Path) -> None:
    write_embeddings(tmp_path / "w2v.model.npy", KEYS, _vectors())
    assert read_embeddings(tmp_path / "w2v.model.npy").keys == KEYS


def test_pickle_content_is_refused_whatever_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "vectors.kv"  # gensim KeyedVectors.save() output is a pickle
    path.write_bytes(pickle.dumps({"t1": [1.0, 2.0]}, protocol=4))
    with pytest.raises(InputError, match="pickles are not loaded for safety"):
        read_embeddings(path)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "objects.vocab.txt").write_text("a\n")
    with pytest.raises(InputError, match="not loaded for safety"):
        read_embeddings(objects)


def _npy(tmp_path: Path, matrix: np.ndarray, keys: list[str] | str) -> Path:
    path = tmp_path / "e.npy"
    np.save(path, matrix)
    text = keys if isinstance(keys, str) else "".join(f"{k}\n" for k in keys)
    (tmp_path / "e.vocab.txt").write_text(text, encoding="utf-8")
    return path


def _text(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "e.txt"
    path.write_text(content, encoding="utf-8")
    return path


def _binary(tmp_path: Path, header: str, records: list[tuple[str, np.ndarray]], tail: bytes = b"") -> Path:
    path = tmp_path / "e.bin"
    body = b"".join(k.encode() + b" " + np.asarray(v, "<f4").tobytes() for k, v in records)
    path.write_bytes(header.encode() + b"\n" + body + tail)
    return path


def _truncated_binary(tmp_path: Path) -> Path:
    path = _binary(tmp_path, "2 3", [("a", [1, 2, 3]), ("b", [1, 2, 3])])
    path.write_bytes(path.read_bytes()[:-5])
    return path


def _npy_claiming(tmp_path: Path, shape: tuple[int, ...], tail: bytes = b"\0" * 256) -> Path:
    """A .npy file whose header claims ``shape`` (float32) but which holds only ``tail``."""
    path = tmp_path / "e.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
        handle.write(tail)
    (tmp_path / "e.vocab.txt").write_text("a\nb\n")
    return path


def _npy_corrupt_header(tmp_path: Path) -> Path:
    path = _npy(tmp_path, np.zeros((2, 2)), ["a", "b"])
    data = bytearray(path.read_bytes())
    data[20:40] = b"{'shape': ((((((((((("
    path.write_bytes(bytes(data))
    return path


GOOD_TEXT = "3 2\na 0.1 0.2\nb 0.3 0.4\nc 0.5 0.6\n"
Case = Callable[[Path], Path]
MALFORMED: dict[str, tuple[Case, list[str]]] = {
    "missing file": (lambda t: t / "nope.npy", ["no such file"]),
    "directory": (lambda t: t, ["is a directory"]),
    "npy 3-D": (lambda t: _npy(t, np.zeros((2, 2, 2)), ["a", "b"]), ["2-D matrix", "(2, 2, 2)"]),
    "npy 1-D": (lambda t: _npy(t, np.zeros(3), ["a", "b", "c"]), ["2-D matrix"]),
    "npy int dtype": (lambda t: _npy(t, np.zeros((2, 2), dtype=np.int64), ["a", "b"]), ["float matrix", "int64"]),
    "npy vocab shorter": (lambda t: _npy(t, np.zeros((3, 2)), ["a", "b"]), ["e.vocab.txt", "2 keys", "3 rows"]),
    "npy duplicate key": (lambda t: _npy(t, np.zeros((3, 2)), ["a", "b", "a"]), ["line 3", "duplicate key 'a'"]),
    "npy empty key": (lambda t: _npy(t, np.zeros((3, 2)), "a\n\nc\n"), ["line 2", "empty key"]),
    "npy nan": (lambda t: _npy(t, np.array([[0.0, 1.0], [np.nan, 0.0]]), ["a", "b"]), ["row 1", "'b'", "NaN"]),
    "npy inf": (lambda t: _npy(t, np.array([[np.inf, 1.0]]), ["a"]), ["row 0", "infinite"]),
    "npy beyond float32": (lambda t: _npy(t, np.array([[1e300, 1.0]]), ["a"]), ["row 0", "float32"]),
    "npy no vocab": (lambda t: (np.save(t / "m.npy", np.zeros((2, 2))), t / "m.npy")[1], ["m.vocab.txt", "--vocab"]),
    "npy not npy": (lambda t: _text(t, GOOD_TEXT).rename(t / "x.npy"), ["x.npy", "NUMPY"]),
    "text short row": (lambda t: _text(t, GOOD_TEXT.replace("b 0.3 0.4", "b 0.3")), ["line 3", "'b'", "1 values", "expected 2"]),
    "text long row": (lambda t: _text(t, GOOD_TEXT.replace("c 0.5 0.6", "c 0.5 0.6 0.7")), ["line 4", "3 values"]),
    "text non-numeric": (lambda t: _text(t, GOOD_TEXT.replace("0.4", "zero")), ["line 3", "value 2", "'zero'", "number"]),
    "text nan": (lambda t: _text(t, GOOD_TEXT.replace("0.4", "nan")), ["line 3", "'b'", "NaN"]),
    "text overflow": (lambda t: _text(t, GOOD_TEXT.replace("0.4", "1e39")), ["line 3", "float32"]),
    "text duplicate": (lambda t: _text(t, GOOD_TEXT.replace("c 0.5", "a 0.5")), ["line 4", "duplicate key 'a'", "line 2"]),
    "text count too high": (lambda t: _text(t, GOOD_TEXT.replace("3 2", "4 2", 1)), ["announces 4", "3 vector lines"]),
    "text bad header": (lambda t: _text(t, "a 0.1 0.2\n"), ["line 1", "header"]),
    "text empty": (lambda t: _text(t, ""), ["empty file"]),
    "binary truncated": (_truncated_binary, ["record 2", "'b'", "ends inside the vector"]),
    "binary count too high": (lambda t: _binary(t, "3 2", [("a", [1, 2]), ("b", [1, 2])]), ["record 3 of 3", "end of file"]),
    "binary trailing bytes": (lambda t: _binary(t, "1 2", [("a", [1, 2]), ("b", [1, 2])]), ["bytes after the 1 records"]),
    "binary duplicate": (lambda t: _binary(t, "2 2", [("a", [1, 2]), ("a", [3, 4])]), ["record 2", "duplicate key 'a'"]),
    "binary nan": (lambda t: _binary(t, "2 2", [("a", [1, 2]), ("b", [np.nan, 4])]), ["record 2", "'b'", "NaN"]),
    # Headers claiming more than the file holds: never believed before the file size is (no MemoryError).
    "binary claims 10^12 vectors": (lambda t: _binary(t, "1000000000000 2", [("a", [1, 2])]),
                                    ["record 2 of 1000000000000", "end of file"]),
    "binary claims 10^12 dimensions": (lambda t: _binary(t, "2 1000000000000", [("a", [1, 2])]),
                                       ["record 1 (key 'a')", "ends inside the vector", "1000000000000 float32"]),
    "text claims 10^12 dimensions": (lambda t: _text(t, "1 1000000000000\na 0.1 0.2\n"),
                                     ["line 2", "2 values", "expected 1000000000000"]),
    "text claims 10^12 vectors": (lambda t: _text(t, "1000000000000 2\na 0.1 0.2\n"), ["announces 1000000000000"]),
    "header claims 0 vectors": (lambda t: _text(t, "0 1000000000000000000\n"), ["line 1", "announces 0 vectors"]),
    "npy claims 10^12 rows": (lambda t: _npy_claiming(t, (10**12, 64)), ["is truncated", "(1000000000000, 64)"]),
    "npy claims 2^62 x 2^62": (lambda t: _npy_claiming(t, (2**62, 2**62)), ["is truncated"]),
    "npy trailing bytes": (lambda t: _npy_claiming(t, (2, 2), b"\0" * 20), ["4 bytes after the 16 bytes of data"]),
    "npy corrupt header": (_npy_corrupt_header, ["unreadable .npy header"]),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_input_is_one_input_error_naming_the_file(tmp_path: Path, case: str) -> None:
    build, fragments = MALFORMED[case]
    path = build(tmp_path)
    with pytest.raises(InputError) as info:
        read_embeddings(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message or str(tmp_path / "e.vocab.txt") in message or str(tmp_path / "m.vocab.txt") in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_explicit_format_mismatches_are_input_errors(tmp_path: Path) -> None:
    text = _text(tmp_path, GOOD_TEXT)
    with pytest.raises(InputError, match="only applies to the npy format"):
        read_embeddings(text, vocab=tmp_path / "keys.txt")
    with pytest.raises(InputError, match="expected one of auto, npy, word2vec, word2vec-binary"):
        read_embeddings(text, fmt="glove")
    with pytest.raises(InputError, match="not a valid .npy file"):
        read_embeddings(text, fmt="npy")
    binary = tmp_path / "v.bin"
    _keyed_vectors(KEYS, _vectors()).save_word2vec_format(str(binary), binary=True)
    with pytest.raises(InputError, match=r"v\.bin: line 2: not UTF-8 text.*word2vec-binary"):
        read_embeddings(binary, fmt="word2vec")
    gz = tmp_path / "e.txt.gz"
    gz.write_bytes(gzip.compress(GOOD_TEXT.encode()))
    assert read_embeddings(gz).keys == ["a", "b", "c"]


def test_align_to_dataset_counts_ignored_keys_and_missing_songs() -> None:
    # File: 5 keys, 2 of them unknown to the dataset; dataset: 6 songs, 3 of them without a vector.
    keys = ["s3", "ghost1", "s0", "ghost2", "s5"]
    vectors = np.arange(10, dtype=np.float32).reshape(5, 2) + 1
    track_ids = np.array(["s0", "s1", "s2", "s3", "s4", "s5"], dtype=object)
    matrix, present, report = align_to_dataset(Embeddings(keys, vectors), track_ids)
    assert report == {"file_keys": 5, "matched": 3, "ignored_keys": 2, "missing_songs": 3}
    assert present.tolist() == [True, False, False, True, False, True]
    assert matrix.dtype == np.float32 and matrix.shape == (6, 2)
    np.testing.assert_array_equal(matrix[0], vectors[2])
    np.testing.assert_array_equal(matrix[3], vectors[0])
    np.testing.assert_array_equal(matrix[5], vectors[4])
    assert not matrix[~present].any()
    # Track ids that pandas stores as another dtype still match by their string form.
    _, present_int, report_int = align_to_dataset(Embeddings(["7", "9"], np.ones((2, 2), np.float32)), [7, 8])
    assert present_int.tolist() == [True, False] and report_int["ignored_keys"] == 1
