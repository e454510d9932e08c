"""Calinski-Harabasz proxies: how well the embedding separates artists / genres.

The score is scikit-learn's :func:`sklearn.metrics.calinski_harabasz_score` on the
L2-normalised vectors. It is computed here in closed form with grouped sums, because
scikit-learn loops over labels in Python (``O(n_labels * n_songs)``), which takes seconds
for tens of thousands of artists; the result equals scikit-learn's up to floating-point
rounding (checked in the tests).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from metrics import _validation as _v
from metrics.coherence import sample_songs

__all__ = ["calinski_harabasz"]


def calinski_harabasz(embeddings: npt.ArrayLike, labels: npt.ArrayLike, *,
                      present: npt.ArrayLike | None = None, max_songs: int = 50_000,
                      seed: int | np.random.Generator = 0) -> tuple[float | None, int]:
    """Calinski-Harabasz score of the normalised embeddings against ``labels``.

    Songs are selected in three steps: (1) present songs (non-zero vector, and
    ``present`` when given) with a known label (``>= 0``) whose label has at least two
    such songs; (2) a seeded uniform sample of at most ``max_songs`` of them
    (:func:`metrics.coherence.sample_songs`); (3) the ``>= 2 songs per label`` filter again,
    since sampling can leave singletons.

    Parameters
    ----------
    embeddings : array_like, shape (n_songs, d)
        Song vectors (finite); they are L2-normalised in float64 before scoring.
    labels : array_like of int, shape (n_songs,)
        Artist or genre id of every song, ``-1`` when unknown.
    present : array_like of bool, shape (n_songs,), optional
        Songs that have a vector (default: every non-zero row).
    max_songs : int, default 50_000
        Sample cap, ``>= 0``.
    seed : int or numpy.random.Generator, default 0
        Seed of the sample.

    Returns
    -------
    value : float or None
        The score (``>= 0``; scikit-learn's convention gives 1.0 when every cluster is a
        single point repeated). ``None`` when fewer than two distinct labels remain.
    n_songs_used : int
        Number of songs left after step (3), i.e. the songs the score is computed on;
        reported even when the value is ``None``.
    """
    emb = _v.as_embeddings(embeddings)
    labels = _v.as_labels(labels, emb.shape[0], "labels")
    present_mask = _v.effective_present(emb, present)
    max_songs = _v.check_int(max_songs, "max_songs", minimum=0)

    eligible = present_mask & (labels >= 0)
    eligible &= _label_size(labels, eligible) >= 2
    songs = sample_songs(eligible, max_songs, seed)
    sampled = np.zeros_like(eligible)
    sampled[songs] = True
    songs = songs[_label_size(labels, sampled)[songs] >= 2]
    if np.unique(labels[songs]).size < 2:
        return None, int(songs.size)
    vectors = _v.normalised_float64(emb, songs)
    return _calinski_harabasz_score(vectors, labels[songs]), int(songs.size)


def _label_size(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For every song, how many songs of ``mask`` share its label (0 for label -1)."""
    counts = np.bincount(labels[mask], minlength=max(1, int(labels.max(initial=-1)) + 1))
    return np.where(labels >= 0, counts[np.maximum(labels, 0)], 0)


def _calinski_harabasz_score(x: np.ndarray, labels: np.ndarray) -> float:
    """Vectorised ``sklearn.metrics.calinski_harabasz_score`` (2 <= n_labels < n)."""
    n_samples = x.shape[0]
    _, group, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    n_labels = sizes.size
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    centroids = np.add.reduceat(x[order], starts, axis=0) / sizes[:, None]
    mean = x.mean(axis=0)
    extra = float(np.sum(sizes * np.sum((centroids - mean) ** 2, axis=1)))
    intra = float(np.sum((x - centroids[group]) ** 2))
    if intra == 0.0:
        return 1.0
    return float(extra * (n_samples - n_labels) / (intra * (n_labels - 1.0)))
