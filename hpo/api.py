"""songhpo from Python (a notebook): a study's trials and feasible front as pandas DataFrames, a trial's
vectors as gensim ``KeyedVectors``, and any embedding evaluated on a prepared dataset.

.. code-block:: python

    from hpo import api

    storage = "sqlite:///songhpo-demo/songhpo.db"
    front = api.front("demo", storage)                  # one row per feasible Pareto-front trial
    kv = api.vectors("demo", front.index[0], storage)    # stored vectors, or an exact re-training
    kv.most_similar(kv.index_to_key[0], topn=5)
    api.evaluate(kv, "songhpo-demo/prepared", k=100)["ndcg"]

A study is given by name (with ``storage``, default ``$SONGHPO_STORAGE`` or ``sqlite:///songhpo.db``) or
as an ``optuna.Study`` loaded from an RDB storage. Mistakes raise :class:`storage.errors.InputError` with a
one-line message.

Importing this module loads nothing heavy and changes no global state. Its functions leave the warning
filters and the levels of existing loggers as they found them (songhpo silences Optuna's experimental
warnings and its logger while it works).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd
    from gensim.models import KeyedVectors

    from hpo.config import StudyConfig
    from hpo.data.dataset import PreparedDataset

__all__ = ["evaluate", "front", "trials", "vectors"]

_DEFAULT_STORAGE = "sqlite:///songhpo.db"
_TIMINGS = ("train_seconds", "knn_seconds", "metrics_seconds", "trial_seconds", "cpu_seconds")


@contextlib.contextmanager
def _globals_kept() -> Iterator[None]:
    """Restore the warning filters and the levels of the loggers that existed before the block."""
    import logging
    import warnings

    loggers = {name: logger for name, logger in logging.Logger.manager.loggerDict.items()
               if isinstance(logger, logging.Logger)}
    levels = {name: logger.level for name, logger in loggers.items()}
    root = logging.getLogger().level
    try:
        with warnings.catch_warnings():
            yield
    finally:
        for name, logger in loggers.items():
            if logger.level != levels[name]:
                logger.setLevel(levels[name])
        logging.getLogger().setLevel(root)


def _load(study: str | optuna.Study, storage: str | None) -> tuple[optuna.Study, StudyConfig]:
    """The study and its config; call inside :func:`_globals_kept` (it silences Optuna's experimental warnings)."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    from hpo.study import load_study, stored_config
    from hpo.trials import CONFIG_ATTR
    from storage.errors import InputError

    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    if isinstance(study, str):
        return load_study(study, storage or os.environ.get("SONGHPO_STORAGE", _DEFAULT_STORAGE))
    stored = study.user_attrs.get(CONFIG_ATTR)
    if not isinstance(stored, dict):
        raise InputError(f"study {study.study_name!r} has no songhpo config; it was not created by songhpo")
    backend = getattr(study._storage, "_backend", study._storage)
    url = storage or getattr(backend, "url", None)
    if url is None:
        raise InputError(f"study {study.study_name!r}: pass storage=URL (its storage is not an RDB storage)")
    return study, stored_config(stored, url, f"study {study.study_name!r}")


def trials(study: str | optuna.Study, storage: str | None = None) -> pd.DataFrame:
    """Every trial of ``study`` as one row, indexed by trial number.

    Columns: ``state``, ``baseline``, ``feasible`` (HardNeg safeguard), ``on_front`` (the feasible Pareto front
    on validation), ``has_vectors`` (vectors kept in the artifact store), every validation metric of
    :data:`metrics.evaluate.METRIC_KEYS` (the objectives among them; ``NaN`` when unavailable or not
    computed), ``hardneg_margin`` (the safeguard's margin, <= 0 feasible), ``seed``, the timings in seconds,
    ``fail_reason`` and ``params.<name>`` for each searched parameter.
    """
    with _globals_kept():
        import pandas as pd

        from hpo.artifacts import has_stored_vectors
        from hpo.trials import feasible_pareto_front
        from metrics.evaluate import METRIC_KEYS

        loaded, _ = _load(study, storage)
        on_front = {t.number for t in feasible_pareto_front(loaded)}
        rows = []
        for trial in loaded.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            row: dict[str, Any] = {
                "trial": trial.number, "state": trial.state.name, "baseline": bool(attrs.get("baseline")),
                "feasible": bool(attrs.get("feasible", True)) if trial.state.name == "COMPLETE" else None,
                "on_front": trial.number in on_front,
                "has_vectors": has_stored_vectors(trial, loaded.study_name),
            }
            row.update({name: attrs.get(name) for name in METRIC_KEYS})
            row["hardneg_margin"] = attrs.get("constraint_hardneg")
            row["seed"] = attrs.get("seed")
            row.update({name: attrs.get(name) for name in _TIMINGS})
            row["fail_reason"] = attrs.get("fail_reason")
            row.update({f"params.{name}": value for name, value in trial.params.items()})
            rows.append(row)
        frame = pd.DataFrame(rows)
        return frame.set_index("trial") if rows else frame


def front(study: str | optuna.Study, storage: str | None = None) -> pd.DataFrame:
    """The feasible Pareto front on validation (:func:`trials` rows with ``on_front``), by trial number."""
    frame = trials(study, storage)
    return frame[frame["on_front"]] if len(frame) else frame


def vectors(study: str | optuna.Study, trial: int, storage: str | None = None, *,
            dataset: str | Path | None = None) -> KeyedVectors:
    """Trial ``trial``'s song vectors keyed by track id, as gensim ``KeyedVectors``.

    The vectors the study's artifact store keeps for it, or else an exact re-training (its Word2Vec
    parameters, its seed and the study's training fraction; seconds to minutes). Songs Word2Vec dropped
    (``min_count``) have no key. ``dataset`` is the prepared dataset on this machine (default: the study's).
    """
    with _globals_kept():
        import numpy as np
        from gensim.models import KeyedVectors

        from hpo.artifacts import present_vectors, trial_vectors
        from hpo.trials import study_dataset, trial_by_number

        loaded, config = _load(study, storage)
        chosen = trial_by_number(loaded, int(trial))
        prepared = study_dataset(loaded, config, None if dataset is None else str(dataset))
        found = trial_vectors(loaded, chosen, config, prepared)
        keys, rows = present_vectors(prepared.songs["track_id"].to_numpy(), found.matrix, found.present)
        kv = KeyedVectors(vector_size=int(found.matrix.shape[1]), count=0, dtype=np.float32)
        kv.add_vectors(keys, rows)
        return kv


def evaluate(embeddings: Any, prepared: str | Path | PreparedDataset, *, vocabulary: Sequence[str] | None = None,
             split: str = "validation", k: int = 100, seed: int = 0) -> dict[str, Any]:
    """Every metric of ``songhpo eval`` for ``embeddings`` on ``split`` of a prepared dataset.

    Parameters
    ----------
    embeddings
        gensim ``KeyedVectors``; an ``(n, d)`` float array with ``vocabulary`` (``n`` track ids); an
        ``(array, vocabulary)`` pair; :class:`hpo.data.embeddings_io.Embeddings`; or the path of an embedding
        file ``songhpo eval`` reads (word2vec text or binary, ``.npy`` with its vocabulary file). Keys that are not
        track ids of the dataset are ignored; songs without a vector count as misses.
    prepared
        A directory written by ``songhpo data prepare`` (or a loaded ``PreparedDataset``).
    split, k, seed
        As ``songhpo eval --split --k --seed`` (``seed``: of the coherence and Calinski-Harabasz samples; a
        study's trials use the study seed, so the same ``k`` and ``seed`` reproduce a trial's metrics).

    Returns
    -------
    dict
        The metrics of :data:`metrics.evaluate.METRIC_KEYS` and the playlist-continuation scores (``None`` when
        unavailable), ``buckets`` (per popularity bucket) and ``alignment`` (keys matched, ignored, missing).
    """
    with _globals_kept():
        from hpo.choices import SPLITS
        from hpo.data.dataset import PreparedDataset
        from hpo.data.embeddings_io import Embeddings, align_to_dataset, read_embeddings
        from hpo.evaluation import continuation_scores, evaluate_split
        from metrics.evaluate import EvaluationSettings
        from storage.errors import InputError

        if split not in SPLITS:
            raise InputError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        if k < 1 or seed < 0:
            raise InputError(f"k {k}, seed {seed}: expected k >= 1 and seed >= 0")
        dataset = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset.load(prepared)
        if isinstance(embeddings, (str, Path)):  # a file, as `songhpo eval --embeddings` takes it
            keyed = read_embeddings(embeddings, vocab=vocabulary if isinstance(vocabulary, (str, Path)) else None)
        else:
            keyed = embeddings if isinstance(embeddings, Embeddings) else _as_embeddings(embeddings, vocabulary)
        matrix, present, alignment = align_to_dataset(keyed, dataset.songs["track_id"])
        if alignment["matched"] == 0:
            raise InputError(f"none of the {alignment['file_keys']} keys (e.g. {keyed.keys[:3]}) is a track id of "
                             f"{dataset.path}; keys must be the dataset's track_id values")
        result = evaluate_split(dataset, matrix, present, split, EvaluationSettings(k=k, seed=seed))
        return {**result.metrics, **continuation_scores(dataset, matrix, present, split, k=k),
                "buckets": result.buckets, "alignment": alignment}


def _as_embeddings(embeddings: Any, vocabulary: Sequence[str] | None) -> Any:
    """:class:`hpo.data.embeddings_io.Embeddings` from KeyedVectors, an array + vocabulary or a pair."""
    import numpy as np

    from hpo.data.embeddings_io import Embeddings
    from storage.errors import InputError

    if hasattr(embeddings, "index_to_key") and hasattr(embeddings, "vectors"):  # gensim KeyedVectors
        keys, matrix = list(embeddings.index_to_key), embeddings.vectors
        if vocabulary is not None:
            raise InputError("vocabulary: KeyedVectors carry their keys; pass vocabulary only with an array")
    elif isinstance(embeddings, tuple) and len(embeddings) == 2 and vocabulary is None:
        matrix, keys = embeddings
    else:
        matrix, keys = embeddings, vocabulary
        if keys is None:
            raise InputError("an array of vectors needs vocabulary= (one track id per row)")
    array: np.ndarray = np.asarray(matrix)
    keys = [str(k) for k in keys]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating) or len(keys) != array.shape[0]:
        raise InputError(f"vectors of shape {array.shape} ({array.dtype}) with {len(keys)} keys: expected an "
                         "(n, d) float array and n keys")
    if not np.isfinite(array).all():
        raise InputError("the vectors contain NaN or infinite values")
    try:
        return Embeddings(keys, np.ascontiguousarray(array, dtype=np.float32))
    except ValueError as exc:
        raise InputError(f"vocabulary: {exc}") from exc
