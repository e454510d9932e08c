"""Glue between a prepared dataset and :mod:`metrics.evaluate`.

The ``eval`` command and the study both evaluate through :func:`evaluate_split`, so a score shown
by one is the score stored by the other.
"""

from __future__ import annotations

import numpy as np

from hpo.data.dataset import SPLITS, PreparedDataset
from metrics.evaluate import EvaluationData, EvaluationResult, EvaluationSettings, evaluate

__all__ = ["CONTINUATION_KEYS", "continuation_scores", "evaluate_split", "evaluation_data"]

#: Report-only keys of the playlist-continuation task (never optimisation objectives).
CONTINUATION_KEYS = ("continuation_rprecision", "continuation_ndcg", "continuation_playlists")


def evaluation_data(dataset: PreparedDataset, split: str) -> EvaluationData:
    """Arrays of ``split`` (``validation`` or ``test``) in the form :func:`metrics.evaluate.evaluate` takes.

    In-set and out-of-set pairs are those of ``split``; hard negatives, labels and training play
    counts do not depend on the split (they come from the training sequences). Bucket edges are
    left to :func:`metrics.evaluate.evaluate`, which derives them from the play counts, so they are
    the same for every split and every trial of a dataset.

    Raises
    ------
    ValueError
        If ``split`` is not one of :data:`hpo.data.dataset.SPLITS`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return EvaluationData(
        pairs_in=dataset.pairs(split, "in"),
        pairs_out=dataset.pairs(split, "out"),
        hard_negative_pairs=dataset.hard_negative_pairs,
        artist_labels=dataset.artist_codes,
        genre_labels=dataset.genre_codes,
        train_counts=dataset.train_counts,
    )


def evaluate_split(
    dataset: PreparedDataset,
    matrix: np.ndarray,
    present: np.ndarray | None,
    split: str,
    settings: EvaluationSettings | None = None,
) -> EvaluationResult:
    """Every metric of ``matrix`` on ``split`` of ``dataset``.

    Parameters
    ----------
    dataset
        The prepared dataset the song ids refer to.
    matrix
        ``(dataset.n_songs, d)`` float; row ``i`` is song ``i`` (see
        :func:`hpo.data.embeddings_io.align_to_dataset`).
    present
        ``(dataset.n_songs,)`` bool, songs that have a vector; ``None`` means every non-zero row.
        Pairs touching an absent song count as misses.
    split
        ``validation`` (what the HPO objective sees) or ``test`` (final reporting only).
    settings
        Cut-offs, samples and seed; default :class:`~metrics.evaluate.EvaluationSettings`.
    """
    data = evaluation_data(dataset, split)
    return evaluate(matrix, data, settings if settings is not None else EvaluationSettings(), present=present)


def continuation_scores(
    dataset: PreparedDataset,
    matrix: np.ndarray,
    present: np.ndarray | None,
    split: str,
    seed_size: int = 5,
    k: int = 100,
) -> dict[str, float | int | None]:
    """Playlist continuation (RecSys Challenge 2018) on the held-out sequences of ``split``.

    Returns the :data:`CONTINUATION_KEYS`: mean R-precision and NDCG@``k`` (``None`` when no sequence
    could be scored) and the number of sequences scored; see :mod:`metrics.continuation` for the rules.
    A report-only metric: never an optimisation objective.
    """
    from metrics.continuation import playlist_continuation

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    tokens, offsets = dataset.heldout_sequences(split)
    result = playlist_continuation(matrix, tokens, offsets, present=present, seed_size=seed_size, k=k)
    return {
        "continuation_rprecision": result["rprecision"],
        "continuation_ndcg": result["ndcg"],
        "continuation_playlists": result["playlists"],
    }
