"""Training gensim Word2Vec (skip-gram, negative sampling) on integer-coded song sequences."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: gensim's defaults for every parameter the study may search or fix (gensim 4.x ``Word2Vec``).
GENSIM_DEFAULTS: dict[str, Any] = {
    "vector_size": 100,
    "window": 5,
    "ns_exponent": 0.75,
    "negative": 5,
    "alpha": 0.025,
    "min_alpha": 0.0001,
    "epochs": 5,
    "sample": 1e-3,
    "min_count": 5,
}
TUNABLE_PARAMETERS = tuple(GENSIM_DEFAULTS)


def stable_hash(text: str) -> int:
    """Process-independent string hash for gensim's per-word vector seeding.

    gensim seeds each word's initial vector with ``hash(word + str(seed))``; Python's ``hash`` of a
    string changes between processes (PYTHONHASHSEED), so without this the same seed gives different
    embeddings in different workers.
    """
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True)
class TrainedEmbeddings:
    """Embeddings aligned to the dataset's song ids.

    ``matrix`` is (n_songs, vector_size) float32; ``present`` (n_songs,) bool marks songs Word2Vec kept
    (``min_count`` may drop rare songs: their rows are zero and they count as misses).
    """

    matrix: np.ndarray
    present: np.ndarray
    seconds: float


def word2vec_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """Full gensim keyword set: gensim defaults overridden by ``params``, skip-gram with negative sampling."""
    unknown = sorted(set(params) - set(GENSIM_DEFAULTS))
    if unknown:
        raise ValueError(f"params: unknown Word2Vec parameter {unknown[0]!r}")
    kwargs = {**GENSIM_DEFAULTS, **params}
    for name in ("vector_size", "window", "negative", "epochs", "min_count"):
        kwargs[name] = int(kwargs[name])
    if kwargs["negative"] < 1:
        raise ValueError("params: negative must be >= 1 (negative sampling)")
    return {**kwargs, "sg": 1, "hs": 0}


#: Told after each training epoch: ``(epochs done, epochs in all)``.
EpochCallback = Callable[[int, int], None]


def _epoch_reporter(on_epoch: EpochCallback, epochs: int) -> Any:
    """A gensim training callback calling ``on_epoch(done, epochs)`` at the end of every epoch."""
    from gensim.models.callbacks import CallbackAny2Vec

    class EpochReporter(CallbackAny2Vec):  # type: ignore[misc]  # gensim is untyped
        def __init__(self) -> None:
            self.done = 0

        def on_epoch_end(self, model: Any) -> None:
            self.done += 1
            on_epoch(self.done, epochs)

    return EpochReporter()


def train_word2vec(
    sentences: Sequence[Sequence[str]], n_songs: int, params: Mapping[str, Any], *, seed: int, workers: int = 1,
    on_epoch: EpochCallback | None = None,
) -> TrainedEmbeddings:
    """Train Word2Vec on ``sentences`` (tokens are ``str(song_id)``) and align vectors to song ids.

    ``on_epoch(done, total)``, when given, is called after each training epoch (progress display; it does
    not change the training). Raises ``ValueError`` when training keeps no song at all (e.g. ``min_count``
    above every count).
    """
    from gensim.models import Word2Vec

    kwargs = word2vec_kwargs(params)
    start = time.perf_counter()
    model = Word2Vec(workers=workers, seed=seed, hashfxn=stable_hash, **kwargs)
    model.build_vocab(sentences)
    if len(model.wv) == 0:
        raise ValueError(f"empty vocabulary: min_count={kwargs['min_count']} keeps no song")
    callbacks = () if on_epoch is None else (_epoch_reporter(on_epoch, model.epochs),)
    model.train(sentences, total_examples=model.corpus_count, epochs=model.epochs, callbacks=callbacks)
    seconds = time.perf_counter() - start
    ids = np.fromiter((int(k) for k in model.wv.index_to_key), dtype=np.int64, count=len(model.wv))
    matrix = np.zeros((n_songs, model.vector_size), dtype=np.float32)
    matrix[ids] = model.wv.vectors
    present = np.zeros(n_songs, dtype=bool)
    present[ids] = True
    return TrainedEmbeddings(matrix=matrix, present=present, seconds=seconds)
