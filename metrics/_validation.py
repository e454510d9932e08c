"""Shared private boundary checks and small array helpers for :mod:`metrics`.

Every public function of the package validates its inputs with these helpers, so that a
wrong argument fails early with a ``ValueError`` that names the argument and says what
was expected, instead of a numpy broadcasting error (or, worse, a silently wrong number)
deep inside a metric.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

# Upper bound on the number of elements of the temporary (rows, k) gathers done by the
# metrics; keeps peak memory in the tens of megabytes whatever the number of pairs.
_CHUNK_ELEMENTS = 1 << 22


def check_int(value: object, name: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise if it is not an integer in range."""
    # bool is an Integral subclass, but k=True is always a bug.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def as_embeddings(embeddings: npt.ArrayLike, name: str = "embeddings") -> np.ndarray:
    """Validate a real ``(n_songs, d)`` matrix with finite values (returned without copy)."""
    arr = np.asarray(embeddings)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_songs, d) array, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating)
                                     or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must have a real numeric dtype, got {arr.dtype}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {arr.shape}")
    # A diverged Word2Vec produces NaN/inf vectors; failing loudly lets the trial be
    # marked FAIL instead of ranking garbage.
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def as_mask(mask: npt.ArrayLike, n: int, name: str) -> np.ndarray:
    """Validate a boolean ``(n,)`` mask."""
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return arr


def row_norms(embeddings: np.ndarray) -> np.ndarray:
    """Euclidean norm of every row, computed in float64 (no float32 overflow/underflow)."""
    out = np.empty(embeddings.shape[0], dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // embeddings.shape[1])
    for start in range(0, embeddings.shape[0], step):
        block = embeddings[start:start + step].astype(np.float64, copy=False)
        out[start:start + step] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return out


def effective_present(embeddings: np.ndarray, present: npt.ArrayLike | None) -> np.ndarray:
    """Songs that have a usable vector: ``present`` (default all) and a non-zero row.

    An all-zero row has no direction, so cosine similarity is undefined for it.
    """
    n_songs = embeddings.shape[0]
    nonzero = row_norms(embeddings) > 0
    if present is None:
        return nonzero
    return as_mask(present, n_songs, "present") & nonzero


def normalised_float32(embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """L2-normalised float32 copy of ``embeddings[rows]`` (rows must have non-zero norm).

    Normalisation is done in float64 chunk by chunk, so tiny or huge vectors are scaled
    exactly before the cast, and peak memory stays bounded.
    """
    out = np.empty((rows.size, embeddings.shape[1]), dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // embeddings.shape[1])
    for start in range(0, rows.size, step):
        block = embeddings[rows[start:start + step]].astype(np.float64)
        block /= np.sqrt(np.einsum("ij,ij->i", block, block))[:, None]
        out[start:start + step] = block
    return out


def normalised_float64(embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """L2-normalised float64 copy of ``embeddings[rows]`` (rows must have non-zero norm)."""
    block: np.ndarray = embeddings[rows].astype(np.float64)
    block /= np.sqrt(np.einsum("ij,ij->i", block, block))[:, None]
    return block


def _as_int_array(values: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values)
    # An empty Python list becomes float64; accept it as "no ids".
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must contain integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def as_song_ids(values: npt.ArrayLike, n_songs: int, name: str) -> np.ndarray:
    """Validate a 1-D array of song ids in ``[0, n_songs)``; returns int64."""
    arr = _as_int_array(values, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    _check_id_range(arr, n_songs, name)
    return arr


def as_pairs(values: npt.ArrayLike, n_songs: int, name: str) -> np.ndarray:
    """Validate an ``(n, 2)`` array of song-id pairs in ``[0, n_songs)``; returns int64."""
    arr = _as_int_array(values, name)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {arr.shape}")
    _check_id_range(arr, n_songs, name)
    return arr


def _check_id_range(arr: np.ndarray, n_songs: int, name: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= n_songs):
        raise ValueError(
            f"{name} must contain song ids in [0, {n_songs}), got values in "
            f"[{arr.min()}, {arr.max()}]")


def as_csr(tokens: npt.ArrayLike, offsets: npt.ArrayLike, n_songs: int, *,
           oov: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate sequences stored CSR-style; returns int64 ``(tokens, offsets)``.

    ``tokens`` is ``(n_tokens,)`` song ids in ``[0, n_songs)`` (with ``oov``, also ``-1`` for a song
    outside the vocabulary); sequence ``j`` is ``tokens[offsets[j]:offsets[j + 1]]``, so ``offsets``
    is ``(n_seq + 1,)``, non-decreasing, starts at 0 and ends at ``n_tokens``. Empty arrays of any
    dtype are accepted (an empty Python list is float64).
    """
    tok = _as_int_array(tokens, "tokens")
    off = _as_int_array(offsets, "offsets")
    for name, arr in (("tokens", tok), ("offsets", off)):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if off.size == 0 or off[0] != 0 or off[-1] != tok.size or (np.diff(off) < 0).any():
        raise ValueError(
            f"offsets must be non-decreasing, start at 0 and end at len(tokens) = {tok.size}, got "
            f"{off[:3].tolist()}...{off[-3:].tolist()}")
    lowest = -1 if oov else 0
    if tok.size and (tok.min() < lowest or tok.max() >= n_songs):
        allowed = f"[0, {n_songs}) or -1 (out of vocabulary)" if oov else f"[0, {n_songs})"
        raise ValueError(f"tokens must be song ids in {allowed}, got values in [{tok.min()}, {tok.max()}]")
    return tok, off


def as_labels(values: npt.ArrayLike, n_songs: int, name: str) -> np.ndarray:
    """Validate ``(n_songs,)`` integer labels, ``-1`` meaning unknown; returns int64."""
    arr = _as_int_array(values, name)
    if arr.shape != (n_songs,):
        raise ValueError(f"{name} must have shape ({n_songs},), got {arr.shape}")
    if arr.size and arr.min() < -1:
        raise ValueError(f"{name} must be >= 0, or -1 for unknown; got min {arr.min()}")
    return arr


def as_ranks(values: npt.ArrayLike, name: str = "ranks") -> np.ndarray:
    """Validate 1-D non-negative integer ranks (0 = not found); returns int64."""
    arr = _as_int_array(values, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be >= 0 (0 = not found), got min {arr.min()}")
    return arr


def as_generator(seed: int | np.random.Generator, name: str = "seed") -> np.random.Generator:
    """A numpy Generator from a non-negative int seed (or a Generator, used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(check_int(seed, name, minimum=0))


def row_chunks(n_rows: int, row_width: int) -> Iterator[slice]:
    """Slices over ``n_rows`` rows so that a ``(rows, row_width)`` temporary stays small."""
    step = max(1, _CHUNK_ELEMENTS // max(1, row_width))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def present_query_rows(table: object, songs: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(songs, rows)`` of the ``songs`` that are present queries of kNN ``table``.

    A song the table was not built for raises: averaging without it would silently bias a metric.
    ``what`` names the songs in the message.
    """
    rows = table.rows(songs)  # type: ignore[attr-defined]
    if (rows < 0).any():
        missing = songs[rows < 0]
        raise ValueError(
            f"table has no row for {missing.size} song(s) {what} "
            f"(e.g. {missing[:5].tolist()}); query them when building the table")
    keep = table.query_present[rows]  # type: ignore[attr-defined]
    return songs[keep], rows[keep]
