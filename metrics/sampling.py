"""Sampled evaluation: a seeded sample of evaluation pairs and the standard errors of its means.

At Million-Playlist size a split holds over a million next-song pairs, and the exact kNN search over
their query songs would cost more than training. :func:`metrics.evaluate.evaluate` can therefore
answer a seeded sample of the pairs instead (each sampled query still by the exact search).

What is sampled, and why
------------------------
The exact metrics are **means over pairs** (NDCG@K and HitRate@K of a side are the mean per-pair gain
and hit). The sample is a simple random sample *of pairs*, without replacement, drawn separately in the
in-set and the out-of-set pairs (two strata; :func:`evaluation_sample`); only the distinct query songs
of the sampled pairs are searched, so the kNN cost is bounded by the number of sampled pairs. The mean
over a simple random sample is an unbiased estimator of the mean over all pairs, i.e. of exactly the
quantity the exact evaluation computes. (Sampling distinct query songs and keeping all their pairs
would bound the search at one query per sampled song, but it is a cluster sample: its per-pair mean is
a ratio estimator, biased towards songs with few pairs unless reweighted, and its standard error must
account for the pairs of one song being correlated.)

Standard errors
---------------
For the mean ``y_bar`` of ``n`` values drawn without replacement from ``N``:
``SE = sqrt((1 - n / N) * s**2 / n)``, ``s**2`` the sample variance (``ddof = 1``), an unbiased
estimate of ``S**2 = N / (N - 1) * sigma**2``; this is ``sigma / sqrt(n) * sqrt((N - n) / (N - 1))``
with the population SD ``sigma`` estimated from the sample. It is exactly 0 when ``n == N`` (the whole
population: the exact metric). Per popularity bucket, pairs of both strata are pooled with weights
``N_h / n_h`` (a ratio estimator) and the standard error is the usual linearised one
(:func:`stratified_bucket_means`).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from metrics import _validation as _v

__all__ = ["evaluation_sample", "sample_indices", "standard_error", "stratified_bucket_means"]

#: Mixed into the seed of the pair sample, so it is independent of the other samples of one seed.
_SAMPLE_TAG = 0x5A3E_9A15


def sample_indices(population: int, size: int, seed: int | np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniform sample without replacement of ``min(size, population)`` items.

    Parameters
    ----------
    population : int
        Number of items, ``>= 0``.
    size : int
        Wanted sample size, ``>= 0``.
    seed : int or np.random.Generator
        Non-negative seed (or a Generator, used as is).

    Returns
    -------
    np.ndarray
        ``(min(size, population),)`` int64, ascending, distinct, in ``[0, population)``; every item has
        the same inclusion probability. ``arange(population)`` (no random draw) when ``size >= population``.
    """
    population = _v.check_int(population, "population", minimum=0)
    size = _v.check_int(size, "size", minimum=0)
    if size >= population:
        return np.arange(population, dtype=np.int64)
    rng = _v.as_generator(seed)
    return np.sort(rng.choice(population, size=size, replace=False)).astype(np.int64)


def evaluation_sample(n_in: int, n_out: int, max_pairs: int | None,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the in-set and out-of-set pairs evaluated under a cap of ``max_pairs`` pairs.

    Parameters
    ----------
    n_in, n_out : int
        Number of in-set and out-of-set pairs of the split (``>= 0``).
    max_pairs : int or None
        At most this many pairs in all (``>= 2``, so that each non-empty side gets at least one);
        ``None`` = every pair.
    seed : int
        Seed of the sample (``>= 0``).

    Returns
    -------
    tuple of np.ndarray
        ``(in_indices, out_indices)``, each ascending int64: ``arange(n)`` for every pair when the cap
        does not bind (``max_pairs >= n_in + n_out``); otherwise a simple random sample without
        replacement of each side, drawn independently. The cap is split evenly between the two sides
        (the in-set side gets ``max_pairs // 2``), and a side with fewer pairs than its share gives the
        rest to the other, so exactly ``min(max_pairs, n_in + n_out)`` pairs are evaluated.

    Notes
    -----
    The sample depends only on ``(n_in, n_out, max_pairs, seed)``: every trial of a study (one seed)
    evaluates the same pairs, so differences between trials carry no sampling noise of their own.
    """
    n_in = _v.check_int(n_in, "n_in", minimum=0)
    n_out = _v.check_int(n_out, "n_out", minimum=0)
    seed = _v.check_int(seed, "seed", minimum=0)
    if max_pairs is None:
        return np.arange(n_in, dtype=np.int64), np.arange(n_out, dtype=np.int64)
    max_pairs = _v.check_int(max_pairs, "max_pairs", minimum=2)
    take_in = min(n_in, max(max_pairs // 2, max_pairs - n_out))
    take_out = min(n_out, max_pairs - take_in)
    return (sample_indices(n_in, take_in, np.random.default_rng([seed, _SAMPLE_TAG, 0])),
            sample_indices(n_out, take_out, np.random.default_rng([seed, _SAMPLE_TAG, 1])))


def standard_error(values: npt.ArrayLike, population: int) -> float:
    """Standard error of ``mean(values)`` as an estimate of the mean over ``population`` items.

    Parameters
    ----------
    values : array_like of float, shape (n,)
        A simple random sample without replacement (finite values, e.g. per-pair NDCG gains).
    population : int
        Size ``N >= n`` of the population the sample was drawn from.

    Returns
    -------
    float
        ``sqrt((N - n) / N * s**2 / n)`` with ``s**2 = var(values, ddof=1)`` (in the units of
        ``values``); exactly ``0.0`` when ``n == N`` (nothing was left out, so the mean is exact);
        ``nan`` when it cannot be estimated: ``n == 0``, or a single value out of a larger population.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("values must be finite")
    n = arr.size
    population = _v.check_int(population, "population", minimum=n)
    if n == population:
        return 0.0 if n else float("nan")
    if n < 2:
        return float("nan")
    return math.sqrt((population - n) / population * float(arr.var(ddof=1)) / n)


def stratified_bucket_means(values: npt.ArrayLike, bucket_ids: npt.ArrayLike, n_buckets: int,
                            strata: npt.ArrayLike, populations: npt.ArrayLike
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Per-bucket mean of a stratified sample, and its standard error.

    The units are the sampled pairs: ``values[i]`` (e.g. its NDCG gain) was observed on unit ``i`` of
    stratum ``strata[i]`` (e.g. 0 = in-set, 1 = out-of-set), a simple random sample without replacement
    of ``n_h`` of the stratum's ``populations[h]`` units; ``bucket_ids[i]`` is its popularity bucket.

    Parameters
    ----------
    values : array_like of float, shape (n,)
        Finite values of the sampled units.
    bucket_ids : array_like of int, shape (n,)
        Bucket of each unit in ``[0, n_buckets)``.
    n_buckets : int
        Number of buckets ``B >= 1``.
    strata : array_like of int, shape (n,)
        Stratum of each unit in ``[0, S)``, ``S = len(populations)``.
    populations : array_like of int, shape (S,)
        Population size ``N_h`` of each stratum, at least its number of sampled units.

    Returns
    -------
    tuple of np.ndarray
        ``(means, standard_errors)``, each ``(B,)`` float64, ``nan`` for a bucket without units.
        ``means[b] = sum_h w_h Y_hb / sum_h w_h n_hb`` with ``w_h = N_h / n_h`` (the ratio estimator of
        the bucket's mean over the population; with ``n_h == N_h`` everywhere it is the plain mean over
        the bucket's units, summed in the order given). The standard error is the linearised one,
        ``sqrt(sum_h N_h**2 (1 - n_h / N_h) s2_hb / n_h) / sum_h w_h n_hb``, with ``s2_hb`` the sample
        variance (``ddof = 1``) over stratum ``h`` of ``z_i = [bucket_i == b] (values_i - means[b])``;
        exactly 0 where every stratum was taken whole, ``nan`` where a stratum that was sampled has a
        single unit.
    """
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 1 or not np.isfinite(vals).all():
        raise ValueError(f"values must be a finite 1-D array, got shape {vals.shape}")
    n_buckets = _v.check_int(n_buckets, "n_buckets", minimum=1)
    buckets = _ids(bucket_ids, vals.shape, n_buckets, "bucket_ids")
    pops = np.asarray(populations)
    if pops.ndim != 1 or pops.size < 1 or pops.dtype == np.bool_ \
            or not np.issubdtype(pops.dtype, np.integer):
        raise ValueError(f"populations must be a non-empty 1-D integer array, got {pops!r}")
    pops = pops.astype(np.int64)
    n_strata = pops.size
    stratum = _ids(strata, vals.shape, n_strata, "strata")
    taken = np.bincount(stratum, minlength=n_strata)
    if (taken > pops).any():
        h = int(np.flatnonzero(taken > pops)[0])
        raise ValueError(f"populations[{h}] = {pops[h]} is below the {taken[h]} units sampled from it")

    with np.errstate(invalid="ignore", divide="ignore"):
        weight_of = np.where(taken > 0, pops / np.maximum(taken, 1), 0.0)
        weights = weight_of[stratum]
        total = np.bincount(buckets, weights=weights * vals, minlength=n_buckets)
        size = np.bincount(buckets, weights=weights, minlength=n_buckets)
        means = np.where(size > 0, total / size, np.nan)

        # Linearised variance of the ratio: z_i = values_i - means[b_i] inside bucket b_i, 0 elsewhere.
        resid = vals - means[buckets]
        cell = stratum * n_buckets + buckets
        s1 = np.bincount(cell, weights=resid, minlength=n_strata * n_buckets).reshape(n_strata, n_buckets)
        s2 = np.bincount(cell, weights=resid * resid,
                         minlength=n_strata * n_buckets).reshape(n_strata, n_buckets)
        n_h = taken[:, None].astype(np.float64)
        var_z = (s2 - s1 * s1 / n_h) / (n_h - 1.0)
        factor = pops[:, None] * (pops[:, None] - taken[:, None]) / n_h  # N_h^2 (1 - f_h) / n_h
        exact = (taken == pops)[:, None]
        contribution = np.where(exact, 0.0, factor * np.maximum(var_z, 0.0))
        # A sampled stratum with a single unit has no variance estimate: nan, not 0.
        contribution = np.where(~exact & (taken[:, None] < 2), np.nan, contribution)
        ses = np.where(size > 0, np.sqrt(contribution.sum(axis=0)) / size, np.nan)
    return means, ses


def _ids(values: npt.ArrayLike, shape: tuple[int, ...], upper: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        arr = np.zeros(arr.shape, dtype=np.int64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} like values, got {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must contain integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        raise ValueError(f"{name} must be in [0, {upper}), got values in [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64, copy=False)
