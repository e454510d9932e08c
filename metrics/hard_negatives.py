"""Chi-squared hard negatives (paper §2.2, SPEC §4 "Hard negatives").

A *hard negative* is a pair of songs that co-occur often enough to be tested
(``C_ab >= min_cooc``) but are **not** significantly positively associated:
they appear together roughly as often as (or less often than) their
popularity alone predicts.  A good embedding should not place such songs
among each other's nearest neighbours merely because both are popular.

Two scopes are offered:

``"bigram"`` (the paper's definition)
    Unordered adjacent bigrams are counted into a symmetric matrix ``C``
    (:func:`bigram_cooccurrence`).  With ``r_a = sum_b C_ab`` and
    ``T = sum C`` the 2x2 table of a pair ``a < b`` is::

        O11 = C_ab          O12 = r_a - C_ab
        O21 = r_b - C_ab    O22 = T - r_a - r_b + C_ab

    and ``E11 = r_a r_b / T``.

``"sequence"``
    The same test on sequence-level co-occurrence
    (:func:`sequence_cooccurrence`): a 2x2 table over sequences (both / only
    ``a`` / only ``b`` / neither) with ``O11 = n_ab``, ``O12 = n_a - n_ab``,
    ``O21 = n_b - n_ab``, ``O22 = N - n_a - n_b + n_ab`` and
    ``E11 = n_a n_b / N``.  More powerful on small data.  Only sequences with
    at least two distinct songs (the only ones that can contain a pair) enter
    ``N`` and ``n_a``; see :func:`sequence_cooccurrence`.

Two decision rules are offered:

``"pvalue"`` (default)
    hard negative when NOT (``O11 > E11`` and ``chi2 >= critical_value``);
    ``critical_value = 3.841`` is the 5% point of chi2 with 1 dof.
``"paper"``
    hard negative when ``chi2 < 1e-7 * total_occurrences`` (the paper's
    footnote).  That threshold is tiny (0.019 on yes_big's 190,649
    occurrences) and rarely selects anything on small data.

Sequences are passed CSR-style: ``tokens`` (total,) integer song ids in
``[0, n_songs)`` concatenated, and ``offsets`` (n_seq + 1,) with sequence
``i = tokens[offsets[i]:offsets[i + 1]]``, ``offsets[0] == 0`` and
``offsets[-1] == len(tokens)``.

Everything is vectorised (scipy.sparse); there is no per-pair Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from metrics._validation import as_csr, check_int

__all__ = [
    "HardNegatives",
    "bigram_cooccurrence",
    "chi2_statistics",
    "default_min_cooc",
    "find_hard_negatives",
    "sequence_cooccurrence",
]

Scope = Literal["bigram", "sequence"]
Rule = Literal["pvalue", "paper"]

_SCOPES: tuple[str, ...] = ("bigram", "sequence")
_RULES: tuple[str, ...] = ("pvalue", "paper")
_INT32_MAX = int(np.iinfo(np.int32).max)
#: The paper's "1e-7 x total song occurrences" written as an exact divisor so
#: that integer thresholds are computed without floating-point rounding.
_PAPER_DIVISOR = 10_000_000


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _validate_sequences(
    tokens: npt.ArrayLike, offsets: npt.ArrayLike, n_songs: object
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate the CSR-style sequence input (:func:`metrics._validation.as_csr`); return int64 arrays."""
    n_songs = check_int(n_songs, "n_songs", minimum=0, maximum=_INT32_MAX)  # pairs are stored as int32
    tokens, offsets = as_csr(tokens, offsets, n_songs)
    return tokens, offsets, n_songs


# --------------------------------------------------------------------------- #
# co-occurrence matrices
# --------------------------------------------------------------------------- #
def _bigram_matrix(tokens: np.ndarray, offsets: np.ndarray, n_songs: int) -> sp.csr_matrix:
    if tokens.size < 2:
        return sp.csr_matrix((n_songs, n_songs), dtype=np.int64)
    valid = np.ones(tokens.size - 1, dtype=bool)
    # Position t pairs (t, t+1); it crosses a boundary when t+1 starts a sequence.
    starts = offsets[1:-1]
    starts = starts[(starts > 0) & (starts < tokens.size)]
    valid[starts - 1] = False
    left, right = tokens[:-1], tokens[1:]
    valid &= left != right  # self-transitions are ignored
    # 32-bit indices and counts while building: at MPD size (2 x 59M bigrams) int64 held ~2 GB more.
    index = np.int32 if n_songs < np.iinfo(np.int32).max else np.int64
    left, right = left[valid].astype(index), right[valid].astype(index)
    rows = np.concatenate([left, right])
    cols = np.concatenate([right, left])
    del left, right, valid
    data = np.ones(rows.size, dtype=np.int32)
    mat = sp.coo_matrix((data, (rows, cols)), shape=(n_songs, n_songs))
    del rows, cols, data
    mat = mat.tocsr()
    mat.sum_duplicates()
    mat.sort_indices()
    mat.data = mat.data.astype(np.int64)  # counts feed products (chi-squared) that overflow 32 bits
    return mat


def bigram_cooccurrence(tokens: npt.ArrayLike, offsets: npt.ArrayLike, n_songs: int) -> sp.csr_matrix:
    """Symmetric matrix of unordered adjacent-bigram counts.

    For every adjacent pair ``(s_t, s_{t+1})`` inside a sequence (never across
    a sequence boundary) with ``s_t != s_{t+1}``, ``C[a, b]`` and ``C[b, a]``
    are both incremented.  Self-transitions (``s_t == s_{t+1}``) are ignored,
    so the diagonal is zero and a repeated song does not break adjacency
    counting for its neighbours (``a a b`` still yields one ``a-b`` bigram).

    Parameters
    ----------
    tokens : array-like of int, shape (total,)
        Concatenated song ids in ``[0, n_songs)``.
    offsets : array-like of int, shape (n_seq + 1,)
        Sequence boundaries; non-decreasing, ``offsets[0] == 0``,
        ``offsets[-1] == total``.
    n_songs : int
        Vocabulary size.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_songs, n_songs), dtype int64
        Symmetric, zero diagonal, canonical format (sorted indices, no
        duplicates).  ``C.sum()`` is twice the number of non-self bigrams.

    Raises
    ------
    ValueError
        On malformed ``tokens``, ``offsets`` or ``n_songs``.
    """
    tokens, offsets, n_songs = _validate_sequences(tokens, offsets, n_songs)
    return _bigram_matrix(tokens, offsets, n_songs)


def _drop_diagonal(mat: sp.csr_matrix) -> sp.csr_matrix:
    """Copy of a square canonical CSR matrix without its diagonal (int64 data)."""
    n = mat.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(mat.indptr))
    keep = mat.indices != rows
    removed = np.concatenate([[0], np.cumsum(~keep, dtype=np.int64)])
    indptr = mat.indptr.astype(np.int64) - removed[mat.indptr]
    out = sp.csr_matrix(
        (mat.data[keep].astype(np.int64, copy=False), mat.indices[keep], indptr),
        shape=mat.shape,
    )
    out.eliminate_zeros()
    return out


def _sequence_matrices(
    tokens: np.ndarray, offsets: np.ndarray, n_songs: int, min_distinct: int
) -> tuple[sp.csr_matrix, np.ndarray, int]:
    n_seq = offsets.size - 1
    rows = np.repeat(np.arange(n_seq, dtype=np.int64), np.diff(offsets))
    incidence = sp.csr_matrix(
        (np.ones(tokens.size, dtype=np.int64), (rows, tokens)), shape=(n_seq, n_songs)
    )
    incidence.sum_duplicates()
    incidence.data[:] = 1  # binary: repeats inside a sequence count once
    keep = np.diff(incidence.indptr) >= min_distinct
    if not keep.all():
        incidence = incidence[keep]
    n_eligible = int(keep.sum())
    per_song = np.asarray(incidence.sum(axis=0), dtype=np.int64).ravel()
    gram = (incidence.T.tocsr() @ incidence).tocsr()
    gram.sort_indices()
    cooc = _drop_diagonal(gram)
    return cooc, per_song, n_eligible


def sequence_cooccurrence(
    tokens: npt.ArrayLike, offsets: npt.ArrayLike, n_songs: int, *, min_distinct: int = 2
) -> tuple[sp.csr_matrix, np.ndarray, int]:
    """Sequence-level co-occurrence counts ``(C, n_a, N)``.

    Built from the binary sequence x song incidence matrix ``X`` as
    ``X.T @ X``: ``C[a, b]`` (``a != b``) is the number of sequences that
    contain both ``a`` and ``b``; each unordered pair is counted once per
    sequence however often either song repeats in it.

    Only sequences with at least ``min_distinct`` distinct songs enter the
    counts.  The default of 2 keeps exactly the sequences that can contain a
    pair; this is the population of the 2x2 tables (SPEC §4, yes_big:
    1,184 hard-negative pairs over 481 songs).  Single-song sequences would
    only inflate the "neither" cell and every ``n_a``; ``min_distinct=1``
    counts every non-empty sequence (yes_big: 538 pairs over 287 songs).

    Parameters
    ----------
    tokens : array-like of int, shape (total,)
        Concatenated song ids in ``[0, n_songs)``.
    offsets : array-like of int, shape (n_seq + 1,)
        Sequence boundaries (see module docstring).
    n_songs : int
        Vocabulary size.
    min_distinct : int, default 2
        Minimum number of distinct songs for a sequence to be counted (>= 1).

    Returns
    -------
    C : scipy.sparse.csr_matrix, shape (n_songs, n_songs), dtype int64
        Symmetric, zero diagonal, canonical format.
    n_a : numpy.ndarray, shape (n_songs,), dtype int64
        Number of counted sequences containing each song.
    N : int
        Number of counted sequences.

    Notes
    -----
    Cost and memory are ``O(sum_i d_i**2)`` for ``d_i`` distinct songs in
    sequence ``i`` (the number of co-occurring pairs), inherent to the scope.

    Raises
    ------
    ValueError
        On malformed ``tokens``, ``offsets``, ``n_songs`` or ``min_distinct``.
    """
    tokens, offsets, n_songs = _validate_sequences(tokens, offsets, n_songs)
    min_distinct = check_int(min_distinct, "min_distinct", minimum=1)
    return _sequence_matrices(tokens, offsets, n_songs, min_distinct)


# --------------------------------------------------------------------------- #
# statistics
# --------------------------------------------------------------------------- #
def default_min_cooc(total_occurrences: int) -> int:
    """Default co-occurrence floor ``max(2, ceil(1e-7 * total_occurrences))``.

    Computed in exact integer arithmetic (``ceil(total / 10**7)``), so e.g.
    30,000,000 occurrences give 3, not 4 as ``ceil(1e-7 * 3e7)`` would in
    floating point.

    Parameters
    ----------
    total_occurrences : int
        Total number of song occurrences (tokens) in the training data, >= 0.

    Returns
    -------
    int
    """
    total = check_int(total_occurrences, "total_occurrences", minimum=0)
    return max(2, -(-total // _PAPER_DIVISOR))


def _check_cell(values: object, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative")
    return arr


def chi2_statistics(o11: object, o12: object, o21: object, o22: object) -> np.ndarray:
    """Pearson chi-squared statistic of 2x2 tables, no continuity correction.

    Vectorised equivalent of
    ``scipy.stats.chi2_contingency([[o11, o12], [o21, o22]], correction=False)
    .statistic``.  For a 2x2 table every cell deviates from its expectation by
    the same ``|d|``, ``d = o11 - r1 c1 / T``, so the statistic is
    ``d**2 * T**3 / (r1 r2 c1 c2)`` (row sums ``r``, column sums ``c``,
    total ``T``).  Computed in float64 with ``d`` formed like scipy forms it,
    and the product evaluated as ratios to avoid overflow.

    Parameters
    ----------
    o11, o12, o21, o22 : array-like of non-negative finite numbers
        The four cells, broadcastable to a common shape.

    Returns
    -------
    numpy.ndarray of float64, broadcast shape
        The statistic (>= 0).

    Notes
    -----
    A table with a zero margin (some row or column all zero, including the
    empty table) is *defined* here to have statistic 0: it carries no evidence
    of association.  scipy raises ``ValueError`` for such tables (an expected
    frequency is zero), or returns NaN with a warning for the all-zero table.

    Raises
    ------
    ValueError
        If a cell is negative, NaN or infinite (the message names the cell).
    """
    cells = [_check_cell(v, n) for v, n in ((o11, "o11"), (o12, "o12"), (o21, "o21"), (o22, "o22"))]
    a, b, c, d = np.broadcast_arrays(*cells)
    r1, r2 = a + b, c + d
    c1, c2 = a + c, b + d
    total = r1 + r2
    ok = (r1 > 0) & (r2 > 0) & (c1 > 0) & (c2 > 0)
    if not ok.all():
        # Zero-margin tables are defined as 0; use dummy margins to avoid 0/0.
        a = np.where(ok, a, 0.0)
        r1, r2, c1, c2 = (np.where(ok, x, 1.0) for x in (r1, r2, c1, c2))
        total = np.where(ok, total, 1.0)
    dev = a - r1 * c1 / total
    out = (dev * dev) * (total / r1) * (total / r2) * (total / c1) / c2
    return np.where(ok, out, 0.0)


# --------------------------------------------------------------------------- #
# result
# --------------------------------------------------------------------------- #
def _readonly(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class HardNegatives:
    """Hard-negative pairs and the parameters that selected them.

    Attributes
    ----------
    pairs : numpy.ndarray, shape (m, 2), dtype int32
        Song ids ``(a, b)`` with ``a < b``, sorted lexicographically.
    cooc : numpy.ndarray, shape (m,), dtype int64
        ``O11`` of each pair (bigram count or number of shared sequences).
    chi2 : numpy.ndarray, shape (m,), dtype float64
        Pearson chi-squared statistic (1 dof, no continuity correction).
    expected : numpy.ndarray, shape (m,), dtype float64
        ``E11``, the expected ``O11`` under independence.
    rule : str
        ``"pvalue"`` or ``"paper"``.
    scope : str
        ``"bigram"`` or ``"sequence"``.
    min_cooc : int
        Candidate floor: only pairs with ``O11 >= min_cooc`` were tested.
    critical_value : float
        The chi-squared threshold actually applied: the ``critical_value``
        argument for ``rule="pvalue"``, ``1e-7 * total_occurrences`` for
        ``rule="paper"``.
    n_candidate_pairs : int
        Number of pairs tested (``a < b`` with ``O11 >= min_cooc``).

    Notes
    -----
    Arrays are read-only.  Instances compare by identity (``eq=False``)
    because element-wise array equality has no single truth value.
    """

    pairs: np.ndarray
    cooc: np.ndarray
    chi2: np.ndarray
    expected: np.ndarray
    rule: str
    scope: str
    min_cooc: int
    critical_value: float
    n_candidate_pairs: int

    def __post_init__(self) -> None:
        pairs = np.asarray(self.pairs, dtype=np.int32).reshape(-1, 2)
        object.__setattr__(self, "pairs", _readonly(pairs))
        object.__setattr__(self, "cooc", _readonly(np.asarray(self.cooc, dtype=np.int64)))
        object.__setattr__(self, "chi2", _readonly(np.asarray(self.chi2, dtype=np.float64)))
        object.__setattr__(self, "expected", _readonly(np.asarray(self.expected, dtype=np.float64)))

    @property
    def n_pairs(self) -> int:
        """Number of hard-negative pairs ``m``."""
        return int(self.pairs.shape[0])

    def songs(self) -> np.ndarray:
        """Sorted unique songs having at least one hard negative, (k,) int32."""
        return np.unique(self.pairs)

    def summary(self) -> dict[str, object]:
        """JSON-serialisable summary for the manifest.

        Returns
        -------
        dict
            ``rule``, ``scope``, ``min_cooc``, ``critical_value``,
            ``n_candidate_pairs``, ``n_pairs`` and ``n_songs`` (songs having
            at least one hard negative), as plain Python scalars.
        """
        return {
            "rule": str(self.rule),
            "scope": str(self.scope),
            "min_cooc": int(self.min_cooc),
            "critical_value": float(self.critical_value),
            "n_candidate_pairs": int(self.n_candidate_pairs),
            "n_pairs": self.n_pairs,
            "n_songs": int(self.songs().size),
        }


# --------------------------------------------------------------------------- #
# main entry point
# --------------------------------------------------------------------------- #
def _upper_pairs(
    cooc: sp.csr_matrix, min_cooc: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strict-upper-triangle entries ``>= min_cooc`` in row-major order."""
    rows = np.repeat(np.arange(cooc.shape[0], dtype=np.int64), np.diff(cooc.indptr))
    cols = cooc.indices.astype(np.int64, copy=False)
    keep = (cols > rows) & (cooc.data >= min_cooc)
    return rows[keep], cols[keep], cooc.data[keep].astype(np.int64, copy=False)


def find_hard_negatives(
    tokens: npt.ArrayLike,
    offsets: npt.ArrayLike,
    n_songs: int,
    *,
    scope: Scope = "bigram",
    rule: Rule = "pvalue",
    min_cooc: int | None = None,
    critical_value: float = 3.841,
    total_occurrences: int | None = None,
) -> HardNegatives:
    """Find song pairs that co-occur but are not positively associated.

    Parameters
    ----------
    tokens : array-like of int, shape (total,)
        Concatenated training song ids in ``[0, n_songs)``.
    offsets : array-like of int, shape (n_seq + 1,)
        Sequence boundaries (see module docstring).
    n_songs : int
        Vocabulary size.
    scope : {"bigram", "sequence"}, default "bigram"
        Source of the 2x2 tables (see module docstring).
    rule : {"pvalue", "paper"}, default "pvalue"
        ``"pvalue"``: hard negative when NOT (``O11 > E11`` and
        ``chi2 >= critical_value``).  ``"paper"``: hard negative when
        ``chi2 < 1e-7 * total_occurrences`` (tiny; rarely selects anything
        on small data).
    min_cooc : int, optional
        Candidate floor (>= 1) on ``O11``; default
        ``default_min_cooc(total_occurrences)``.
    critical_value : float, default 3.841
        Chi-squared threshold for ``rule="pvalue"`` (> 0; 3.841 is p = 0.05
        at 1 dof).  Validated but unused under ``rule="paper"``.
    total_occurrences : int, optional
        Total song occurrences (>= 0) for the default ``min_cooc`` and the
        paper threshold; default ``len(tokens)``.

    Returns
    -------
    HardNegatives

    Raises
    ------
    ValueError
        Naming the offending argument: unknown ``scope`` or ``rule``,
        ``min_cooc < 1``, ``critical_value <= 0`` or not finite, negative
        ``total_occurrences``, ``tokens`` out of range, ``offsets`` not
        monotone or not spanning ``tokens``.
    """
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}")
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
    if (
        isinstance(critical_value, (bool, np.bool_))
        or not isinstance(critical_value, Real)
        or not np.isfinite(critical_value)
        or critical_value <= 0
    ):
        raise ValueError(f"critical_value must be a finite number > 0, got {critical_value!r}")
    tokens, offsets, n_songs = _validate_sequences(tokens, offsets, n_songs)
    if total_occurrences is None:
        total_occurrences = int(tokens.size)
    total_occurrences = check_int(total_occurrences, "total_occurrences", minimum=0)
    if min_cooc is None:
        min_cooc = default_min_cooc(total_occurrences)
    min_cooc = check_int(min_cooc, "min_cooc", minimum=1)

    if scope == "bigram":
        cooc = _bigram_matrix(tokens, offsets, n_songs)
        margins = np.asarray(cooc.sum(axis=1), dtype=np.int64).ravel()
        total = int(margins.sum())
    else:
        cooc, margins, total = _sequence_matrices(tokens, offsets, n_songs, 2)

    a, b, o11 = _upper_pairs(cooc, min_cooc)
    ra, rb = margins[a], margins[b]
    chi2 = chi2_statistics(o11, ra - o11, rb - o11, total - ra - rb + o11)
    expected = ra.astype(np.float64) * rb.astype(np.float64) / total if a.size else np.zeros(0)

    if rule == "pvalue":
        threshold = float(critical_value)
        hard = ~((o11 > expected) & (chi2 >= threshold))
    else:
        threshold = total_occurrences / _PAPER_DIVISOR
        hard = chi2 < threshold

    return HardNegatives(
        pairs=np.column_stack([a[hard], b[hard]]),
        cooc=o11[hard],
        chi2=chi2[hard],
        expected=expected[hard],
        rule=rule,
        scope=scope,
        min_cooc=min_cooc,
        critical_value=threshold,
        n_candidate_pairs=int(a.size),
    )
