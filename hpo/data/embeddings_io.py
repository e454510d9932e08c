"""Reading, writing and aligning song embeddings, without ever unpickling anything.

Accepted formats
----------------
``npy``
    A ``.npy`` float matrix ``(n, d)`` plus a vocabulary file with one key per line (row ``i`` of
    the matrix is the vector of line ``i``). The vocabulary defaults to ``<stem>.vocab.txt`` next
    to ``<stem>.npy``. This is what :func:`write_embeddings` produces.
``word2vec``
    The text format of the original C tool (and gensim's ``save_word2vec_format``): a header
    line ``n d``, then ``n`` lines ``key v1 .. vd``.
``word2vec-binary``
    The binary format of the same tools: the header line, then per key ``key`` + one space +
    ``d`` little-endian float32 values (an optional newline between records is tolerated).

Both word2vec formats may be gzip-compressed (``.gz``). Pickle-based files (gensim ``.model`` /
``KeyedVectors.save``, joblib, ``.pkl``) are refused: loading a pickle runs arbitrary code.

Every problem is reported as one :class:`~storage.errors.InputError` naming the file and the line or
record and what was expected, so a user can fix the file.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from hpo._atomic import atomic_write
from hpo.data._npy import NpyError, read_npy
from storage.errors import InputError

if TYPE_CHECKING:  # pandas only where a file's keys meet the dataset's: other commands start faster
    import pandas as pd

__all__ = [
    "FORMATS",
    "Embeddings",
    "align_to_dataset",
    "ignored_key_examples",
    "read_embeddings",
    "write_embeddings",
    "write_parquet",
    "write_word2vec",
]

_log = logging.getLogger("songhpo")

#: Accepted values of ``fmt`` (``auto`` picks one from the file name and content).
FORMATS = ("auto", "npy", "word2vec", "word2vec-binary")

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".model", ".joblib")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")
_NPY_MAGIC = b"\x93NUMPY"
_GZIP_MAGIC = b"\x1f\x8b"
_ACCEPTED = (
    "accepted formats: .npy matrix + vocabulary file, word2vec text (.txt/.vec), word2vec binary (.bin)"
)
# Text parsing converts this many rows at once: numpy does the float parsing, the Python loop
# only splits lines, and a conversion error is then located by re-parsing that chunk alone.
_TEXT_CHUNK = 8192


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Vectors keyed by string.

    Attributes
    ----------
    keys : list of str
        ``n`` distinct keys; ``keys[i]`` is the key of ``vectors[i]``.
    vectors : np.ndarray
        ``(n, d)`` float32, C-contiguous, all values finite.
    """

    keys: list[str]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        # Readers guarantee these; checked again for embeddings built in code (e.g. from a model).
        vectors = np.asarray(self.vectors)
        if vectors.ndim != 2 or len(self.keys) != vectors.shape[0]:
            raise ValueError(f"{len(self.keys)} keys for vectors of shape {vectors.shape}; expected (n_keys, d)")
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("keys must be unique")

    @property
    def dim(self) -> int:
        """Vector dimension ``d``."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.keys)


def read_embeddings(path: str | Path, *, vocab: str | Path | None = None, fmt: str = "auto") -> Embeddings:
    """Read embeddings from ``path`` (see the module docstring for the formats).

    Parameters
    ----------
    path
        The ``.npy`` matrix or the word2vec file.
    vocab
        Vocabulary file of an ``npy`` matrix (default ``<path without .npy>.vocab.txt``). Not
        accepted for the word2vec formats, which carry their keys.
    fmt
        One of :data:`FORMATS`. ``auto`` uses the content (npy magic) and the suffix (``.bin`` is
        binary word2vec) and otherwise sniffs text vs binary after the header line.

    Returns
    -------
    Embeddings
        Keys in file order, vectors as ``(n, d)`` float32.

    Raises
    ------
    InputError
        For a missing/unreadable file, a pickle, or any malformed content.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError(f"embeddings format {fmt!r}: expected one of {', '.join(FORMATS)}")
    _refuse_pickle_suffix(path)
    if vocab is not None:
        _refuse_pickle_suffix(Path(vocab))
    head = _read_head(path)
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        # Pickle protocol 2+ opcode: whatever the suffix, this is a pickle (e.g. gensim ``.kv``).
        raise InputError(f"{path}: looks like a Python pickle; pickles are not loaded for safety; {_ACCEPTED}")
    if fmt == "auto":
        fmt = _detect_format(path, head)
        _log.debug("%s: detected format %s", path, fmt)
    if fmt != "npy" and vocab is not None:
        raise InputError(f"{vocab}: a vocabulary file only applies to the npy format; {path} is {fmt}")
    if fmt == "npy":
        if not head.startswith(_NPY_MAGIC):
            raise InputError(f"{path}: not a valid .npy file (no NUMPY magic bytes); {_ACCEPTED}")
        keys, vectors = _read_npy(path, Path(vocab) if vocab is not None else None)
    elif fmt == "word2vec":
        keys, vectors = _read_word2vec_text(path)
    else:
        keys, vectors = _read_word2vec_binary(path)
    return Embeddings(keys, vectors)


def write_embeddings(path_npy: str | Path, keys: Sequence[str], vectors: np.ndarray) -> tuple[Path, Path]:
    """Write ``<stem>.npy`` (float32 matrix) and ``<stem>.vocab.txt`` (one key per line).

    Each file is written to a temporary sibling and renamed into place, so a crash never leaves a
    truncated file behind. ``path_npy`` may omit the ``.npy`` suffix.

    Parameters
    ----------
    path_npy
        Target of the matrix; the vocabulary goes next to it.
    keys
        ``n`` distinct, non-empty keys without line breaks.
    vectors
        ``(n, d)`` finite float array; stored as float32.

    Returns
    -------
    tuple of Path
        The matrix path and the vocabulary path.
    """
    matrix_path = Path(path_npy)
    if matrix_path.suffix != ".npy":
        matrix_path = matrix_path.with_name(matrix_path.name + ".npy")
    vocab_path = _default_vocab(matrix_path)
    keys, matrix = _checked_rows(keys, vectors, spaces=False)
    matrix_path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{k}\n" for k in keys)
    atomic_write(vocab_path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))
    atomic_write(matrix_path, lambda tmp: _save_npy(tmp, matrix))
    return matrix_path, vocab_path


def write_word2vec(target: str | Path | BinaryIO, keys: Sequence[str], vectors: np.ndarray, *,
                   binary: bool = False) -> None:
    """Write word2vec text (``binary=False``) or binary format to a file (atomically) or a binary stream.

    Text values are written with 9 significant digits, which read back (as float64, then float32, like
    :func:`read_embeddings`) to exactly the float32 values written. Binary records are ``key`` + one space +
    ``d`` little-endian float32 values, without a separating newline (as gensim writes them).

    Parameters
    ----------
    target
        A file path (written through a temporary file) or a writable binary stream (e.g. stdout's buffer).
    keys
        ``n`` distinct, non-empty keys without whitespace.
    vectors
        ``(n, d)`` finite float array; written as float32.
    """
    keys, matrix = _checked_rows(keys, vectors, spaces=True)

    def write(handle: BinaryIO) -> None:
        handle.write(f"{matrix.shape[0]} {matrix.shape[1]}\n".encode())
        if binary:
            little = matrix.astype("<f4", copy=False)
            for key, row in zip(keys, little):
                handle.write(key.encode("utf-8") + b" " + row.tobytes())
            return
        for start in range(0, len(keys), _TEXT_CHUNK):
            rows = matrix[start : start + _TEXT_CHUNK].tolist()  # float64, exact copies of the float32 values
            lines = (key + " " + " ".join(f"{v:.9g}" for v in row) + "\n"
                     for key, row in zip(keys[start : start + _TEXT_CHUNK], rows))
            handle.write("".join(lines).encode("utf-8"))

    _write_target(target, write)


def write_parquet(target: str | Path | BinaryIO, keys: Sequence[str], vectors: np.ndarray) -> None:
    """Write a Parquet table ``track_id`` (string), ``vector`` (fixed-size list of ``d`` float32) to a file
    (atomically) or a binary stream. ``keys``/``vectors`` as in :func:`write_word2vec`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys, matrix = _checked_rows(keys, vectors, spaces=False)
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    table = pa.table({"track_id": pa.array(keys, type=pa.string()),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])})
    _write_target(target, lambda handle: pq.write_table(table, handle))


def align_to_dataset(
    embeddings: Embeddings, track_ids: Sequence[str] | np.ndarray | pd.Series
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Put the vectors in dataset song-id order.

    Parameters
    ----------
    embeddings
        Vectors keyed by track id.
    track_ids
        ``(n_songs,)`` track id of each song id (``dataset.songs["track_id"]``).

    Returns
    -------
    matrix : np.ndarray
        ``(n_songs, d)`` float32; row ``i`` is song ``i``'s vector, zeros where it has none.
    present : np.ndarray
        ``(n_songs,)`` bool, whether song ``i`` has a vector. Absent songs still count in every
        metric (as misses), so dropping hard songs cannot improve a score.
    report : dict
        ``file_keys`` (keys in the file), ``matched`` (keys that are dataset songs),
        ``ignored_keys`` (file keys that are not dataset songs) and ``missing_songs`` (dataset
        songs absent from the file).
    """
    rows = _alignment_rows(embeddings, track_ids)
    present = rows >= 0
    matrix = np.zeros((rows.size, embeddings.dim), dtype=np.float32)
    matrix[present] = embeddings.vectors[rows[present]]
    matched = int(present.sum())
    report = {
        "file_keys": len(embeddings.keys),
        "matched": matched,
        "ignored_keys": len(embeddings.keys) - matched,
        "missing_songs": int(rows.size) - matched,
    }
    return matrix, present, report


def ignored_key_examples(
    embeddings: Embeddings, track_ids: Sequence[str] | np.ndarray | pd.Series, limit: int = 5
) -> list[str]:
    """Up to ``limit`` file keys (in file order) that are not track ids of the dataset, for messages."""
    import pandas as pd

    known = pd.Index([str(t) for t in np.asarray(track_ids, dtype=object)], dtype=object)
    unknown = ~pd.Index(embeddings.keys, dtype=object).isin(known)
    return [embeddings.keys[i] for i in np.flatnonzero(unknown)[:limit]]


# --------------------------------------------------------------------------------------------
# private helpers


def _alignment_rows(embeddings: Embeddings, track_ids: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
    """``(n_songs,)`` int64 row of each song in ``embeddings.vectors``, -1 when absent."""
    import pandas as pd

    ids = np.asarray(track_ids, dtype=object)
    if ids.ndim != 1:
        raise ValueError(f"track_ids must be 1-D, got shape {ids.shape}")
    # Keys are unique (checked on read), so the index lookup is exact; track ids are compared as
    # strings whatever dtype the caller's column has.
    index = pd.Index(embeddings.keys, dtype=object)
    return index.get_indexer(pd.Index([str(t) for t in ids], dtype=object)).astype(np.int64)


def _checked_rows(keys: Sequence[str], vectors: np.ndarray, *, spaces: bool) -> tuple[list[str], np.ndarray]:
    """``keys`` as strings and ``vectors`` as a C-contiguous float32 matrix, checked for writing (``spaces``:
    keys must not hold whitespace, which separates fields in the word2vec formats)."""
    keys = [str(k) for k in keys]
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise ValueError(f"vectors must be a 2-D float array, got {vectors.dtype} {vectors.shape}")
    if len(keys) != vectors.shape[0]:
        raise ValueError(f"{len(keys)} keys for {vectors.shape[0]} vectors")
    bad = next((k for k in keys if not k or (len(k.split()) != 1 if spaces else _line_unsafe(k))), None)
    if bad is not None:
        rule = "without whitespace" if spaces else "without line breaks or surrounding spaces"
        raise ValueError(f"key {bad!r}: keys must be non-empty, {rule}")
    _check_unique(keys, lambda key, first, second: ValueError(f"duplicate key {key!r} (rows {first} and {second})"))
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain NaN or infinite values (as float32)")
    return keys, matrix


def _line_unsafe(key: str) -> bool:
    """Whether ``key`` cannot be one line of a vocabulary file (a line break inside, or spaces around it)."""
    return "\n" in key or "\r" in key or key != key.strip()


def _write_target(target: str | Path | BinaryIO, write: Any) -> None:
    """``write(handle)`` into a binary stream, or into a file path through :func:`hpo._atomic.atomic_write`."""
    if isinstance(target, (str, Path)):
        path = Path(target)

        def to_file(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                write(handle)

        atomic_write(path, to_file)
    else:
        write(target)


def _refuse_pickle_suffix(path: Path) -> None:
    suffixes = [s.lower() for s in path.suffixes]
    # The last suffix decides ('my.model.npy' is a matrix), looking through one compression suffix.
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    if suffixes and suffixes[-1] in _PICKLE_SUFFIXES:
        raise InputError(f"{path}: pickle-based files are not loaded for safety; {_ACCEPTED}")


def _read_head(path: Path, size: int = 4096) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected an embeddings file; {_ACCEPTED}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def _detect_format(path: Path, head: bytes) -> str:
    if head.startswith(_NPY_MAGIC):
        return "npy"
    suffixes = [s.lower() for s in path.suffixes]
    if path.suffix.lower() == ".npy":
        raise InputError(f"{path}: not a valid .npy file (no NUMPY magic bytes); {_ACCEPTED}")
    if ".bin" in suffixes[-2:]:
        return "word2vec-binary"
    if head.startswith(_GZIP_MAGIC):
        with contextlib.suppress(OSError, EOFError), gzip.open(path, "rb") as handle:
            head = handle.read(4096)
    # Text and binary word2vec share the header line; after it, binary float32 data is almost
    # never valid UTF-8 text (and often contains NUL bytes).
    _, _, body = head.partition(b"\n")
    if b"\x00" in body:
        return "word2vec-binary"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the 4096-byte window is still text.
        if exc.start < len(body) - 4:
            return "word2vec-binary"
    return "word2vec"


def _default_vocab(matrix_path: Path) -> Path:
    stem = matrix_path.name[: -len(".npy")] if matrix_path.name.endswith(".npy") else matrix_path.name
    return matrix_path.with_name(f"{stem}.vocab.txt")


def _check_unique(keys: Sequence[str], error: Any) -> None:
    if len(set(keys)) == len(keys):
        return
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            raise error(key, first[key], i)
        first[key] = i


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_finite(path: Path, values: np.ndarray, where: Any, first_row: int = 0) -> None:
    """Raise unless every value is finite and fits float32; ``where(row)`` names a row for the message.

    Checked before the float32 cast, so a value beyond float32 range is reported, not silently inf.
    """
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (np.abs(values) <= _FLOAT32_MAX)
    if ok.all():
        return
    row = int(np.flatnonzero(~ok.all(axis=1))[0])
    raw = values[row][~ok[row]][0]
    what = "a NaN" if np.isnan(raw) else ("an infinite" if np.isinf(raw) else f"an out-of-float32-range ({raw:g})")
    raise InputError(f"{path}: {where(first_row + row)} has {what} value; all values must be finite")


def _read_npy(path: Path, vocab: Path | None) -> tuple[list[str], np.ndarray]:
    vocab_path = vocab if vocab is not None else _default_vocab(path)
    try:
        # The header is checked against the file size before anything is allocated; never unpickles.
        matrix = read_npy(path)
    except NpyError as exc:
        raise InputError(f"{path}: {exc}; expected a 2-D float matrix") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if matrix.ndim != 2:
        raise InputError(f"{path}: expected a 2-D matrix (songs x dimensions), got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise InputError(f"{path}: expected a float matrix, got dtype {matrix.dtype}")
    if matrix.shape[1] == 0:
        raise InputError(f"{path}: the matrix has 0 columns; expected at least one dimension")
    keys = _read_vocab(vocab_path, path)
    if len(keys) != matrix.shape[0]:
        raise InputError(
            f"{vocab_path}: {len(keys)} keys but {path} has {matrix.shape[0]} rows; expected one key per matrix row"
        )
    _check_finite(path, matrix, lambda row: f"row {row} (key {keys[row]!r})")
    return keys, np.ascontiguousarray(matrix, dtype=np.float32)


def _read_vocab(vocab_path: Path, matrix_path: Path) -> list[str]:
    try:
        raw = vocab_path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"{vocab_path}: no such vocabulary file for {matrix_path}; write one key per line there or pass --vocab"
        ) from None
    except OSError as exc:
        raise InputError(f"{vocab_path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{vocab_path}: line {line}: not UTF-8 text; expected one key per line") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last key, it does not start an empty one
    keys = [line[:-1] if line.endswith("\r") else line for line in lines]
    for i, key in enumerate(keys):
        if not key.strip():
            raise InputError(f"{vocab_path}: line {i + 1}: empty key; expected one key per line")
    _check_unique(
        keys,
        lambda key, first, second: InputError(
            f"{vocab_path}: line {second + 1}: duplicate key {key!r} (first on line {first + 1}); keys must be unique"
        ),
    )
    return keys


def _open_maybe_gzip(path: Path) -> BinaryIO:
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")  # type: ignore[return-value]


def _read_all(path: Path) -> bytes:
    try:
        with _open_maybe_gzip(path) as handle:
            return handle.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def _claimed_matrix(n: int, d: int, available: int, min_record_bytes: int) -> np.ndarray | None:
    """The ``(n, d)`` float32 matrix a word2vec header claims, or ``None`` when the file cannot hold it.

    The header is believed only as far as the file size allows: ``min_record_bytes`` is the smallest
    possible size of one vector's record, so ``n * min_record_bytes > available`` means the file is too
    short for the claim. Then nothing is allocated (a header claiming 10^12 rows is not a MemoryError)
    and the parser, which reads records without storing them, is bound to fail at the first missing
    or short record and to name it.
    """
    return np.empty((n, d), dtype=np.float32) if n * min_record_bytes <= available else None


def _parse_header(path: Path, line: bytes) -> tuple[int, int]:
    expected = "expected a header line 'n_vectors dimension' (word2vec format)"
    try:
        parts = line.decode("utf-8").split()
    except UnicodeDecodeError:
        raise InputError(f"{path}: line 1: not a text header; {expected}") from None
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        shown = line[:60].decode("utf-8", "replace").strip()
        raise InputError(f"{path}: line 1: got {shown!r}; {expected}")
    n, d = int(parts[0]), int(parts[1])
    if d < 1:
        raise InputError(f"{path}: line 1: dimension {d}; expected at least 1")
    if n < 1:
        raise InputError(f"{path}: line 1: the header announces 0 vectors; expected at least one")
    return n, d


def _read_word2vec_text(path: Path) -> tuple[list[str], np.ndarray]:
    data = _read_all(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path}: line {line}: not UTF-8 text; expected word2vec text (use --format word2vec-binary for .bin files)"
        ) from None
    # Split on "\n" only: str.splitlines() would also split inside keys on rare separators (\x1c, \u2028).
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if not text:
        raise InputError(f"{path}: empty file; expected a header line 'n_vectors dimension' (word2vec format)")
    n, d = _parse_header(path, lines[0].encode("utf-8"))
    body = lines[1:]
    while body and not body[-1].strip():
        body.pop()  # trailing blank lines are harmless
    if len(body) != n:
        raise InputError(f"{path}: the header announces {n} vectors but the file has {len(body)} vector lines")
    keys: list[str] = []
    # A line holds a key, then d values each preceded by a space: at least 1 + 2d characters.
    vectors = _claimed_matrix(n, d, sum(len(line) for line in body), 1 + 2 * d)
    for start in range(0, n, _TEXT_CHUNK):
        chunk: list[list[str]] = []
        for offset, line in enumerate(body[start : start + _TEXT_CHUNK]):
            key, _, rest = line.strip().partition(" ")
            values = rest.split()
            if not key:
                raise InputError(f"{path}: line {start + offset + 2}: empty line; expected 'key v1 .. v{d}'")
            if len(values) != d:
                raise InputError(
                    f"{path}: line {start + offset + 2}: key {key!r} has {len(values)} values; expected {d} "
                    "(the header's dimension)"
                )
            keys.append(key)
            chunk.append(values)
        try:
            values64 = np.array(chunk, dtype=np.float64)
        except ValueError:
            _raise_bad_number(path, chunk, start)
        _check_finite(path, values64, lambda row: f"line {row + 2} (key {keys[row]!r})", first_row=start)
        if vectors is not None:
            vectors[start : start + len(chunk)] = values64
    assert vectors is not None, "a file shorter than its header claims has a short line"
    _check_unique(
        keys,
        lambda key, first, second: InputError(
            f"{path}: line {second + 2}: duplicate key {key!r} (first on line {first + 2}); keys must be unique"
        ),
    )
    return keys, vectors


def _raise_bad_number(path: Path, chunk: list[list[str]], start: int) -> None:
    for offset, values in enumerate(chunk):
        for column, value in enumerate(values):
            try:
                float(value)
            except ValueError:
                raise InputError(
                    f"{path}: line {start + offset + 2}: value {column + 1} is {value[:30]!r}; expected a number"
                ) from None
    raise InputError(f"{path}: lines {start + 2}-{start + len(chunk) + 1}: non-numeric values")  # pragma: no cover


def _read_word2vec_binary(path: Path) -> tuple[list[str], np.ndarray]:
    data = _read_all(path)
    newline = data.find(b"\n")
    if newline < 0:
        raise InputError(f"{path}: no header line; expected 'n_vectors dimension' then binary vectors")
    n, d = _parse_header(path, data[:newline])
    record_bytes = 4 * d
    keys: list[str] = []
    # A record is a key of at least one byte, a space and d float32 values.
    vectors = _claimed_matrix(n, d, len(data) - newline - 1, 2 + record_bytes)
    position = newline + 1
    for i in range(n):
        # The C tool writes a newline after each vector, gensim does not: skip one if present.
        while position < len(data) and data[position : position + 1] in (b"\n", b"\r"):
            position += 1
        space = data.find(b" ", position, position + 4096)
        if space < 0:
            got = "end of file" if position >= len(data) else "no space-terminated key"
            raise InputError(
                f"{path}: record {i + 1} of {n}: {got}; expected 'key' + space + {d} float32 values "
                "(is the header count right, or is this a text file? try --format word2vec)"
            )
        try:
            key = data[position:space].decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{path}: record {i + 1}: key is not UTF-8; expected a UTF-8 key") from None
        if not key.strip():
            raise InputError(f"{path}: record {i + 1}: empty key")
        if space + 1 + record_bytes > len(data):
            raise InputError(
                f"{path}: record {i + 1} (key {key!r}): file ends inside the vector; expected {d} float32 values "
                f"({record_bytes} bytes)"
            )
        keys.append(key)
        if vectors is not None:
            vectors[i] = np.frombuffer(data, dtype="<f4", count=d, offset=space + 1)
        position = space + 1 + record_bytes
    assert vectors is not None, "a file shorter than its header claims has a missing or short record"
    rest = data[position:].strip()
    if rest:
        raise InputError(
            f"{path}: {len(rest)} bytes after the {n} records the header announces; expected end of file "
            "(is the header count right?)"
        )
    _check_unique(
        keys,
        lambda key, first, second: InputError(
            f"{path}: record {second + 1}: duplicate key {key!r} (first at record {first + 1}); keys must be unique"
        ),
    )
    _check_finite(path, vectors, lambda row: f"record {row + 1} (key {keys[row]!r})")
    return keys, vectors


def _save_npy(path: Path, matrix: np.ndarray) -> None:
    # Through a handle: np.save given a name not ending in .npy (the temporary file's) appends .npy.
    with path.open("wb") as handle:
        np.save(handle, matrix, allow_pickle=False)
