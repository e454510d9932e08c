"""Trial embeddings as Optuna artifacts (:mod:`optuna.artifacts`): kept, found again, never unpickled.

A kept trial has two artifacts in the study's artifact store, in the ``npy`` format of
:mod:`hpo.data.embeddings_io` (what ``songhpo eval`` reads): ``<study>-trial<N>.npy``, the ``(n, d)`` float32
vectors of the ``n`` songs Word2Vec kept, and ``<study>-trial<N>.vocab.txt``, their track ids, one per line.
optuna-dashboard lists both on the trial's page, and downloading the two gives a pair ``songhpo eval
--embeddings <study>-trial<N>.npy`` opens as it is.

Which trials keep them (``[artifacts] policy`` of the study config):

``front`` (default)
    The baseline and the trials of the feasible Pareto front: exactly what ``songhpo study evaluate``
    re-trains. A trial's vectors are uploaded at the end of its run (metrics, safeguard and values known,
    the trial still running, as Optuna requires) when it is the baseline, or feasible and dominated by no
    completed feasible trial. Whenever a trial completes, and when a worker stops, the artifacts of every
    finished trial that is neither the baseline nor on the feasible front are deleted: file and metadata,
    so that the dashboard never offers a download that is gone. A dominated trial never returns to the
    front, so nothing deleted is needed again; two trials finishing at once may both be uploaded, and the
    next completion deletes the one that lost.
``all``
    Every completed trial.
``none``
    Nothing: readers re-train.

The store (``[artifacts] store``) is a directory: by default ``<db stem>-artifacts/`` next to a SQLite
file; a server storage (PostgreSQL, MySQL) has none unless the config names a directory every worker
shares. Files are written there atomically (temporary file, then rename).

Readers (:func:`trial_vectors`: ``study evaluate`` for seed 0, ``concepts --trial``, ``songhpo export``,
:mod:`hpo.api`) take a trial's stored vectors when they exist and otherwise re-train its exact
configuration: its parameters, its seed and the study's training fraction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import RDBStorage
from optuna.storages._rdb import models as _optuna_models
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import delete

from hpo._atomic import atomic_write
from hpo.config import StudyConfig
from hpo.data.dataset import PreparedDataset
from hpo.data.embeddings_io import Embeddings, align_to_dataset, read_embeddings, write_embeddings
from hpo.trials import baseline_trials, dominates, feasible_pareto_front, training_params, training_subset
from objectives.word2vec import TrainedEmbeddings
from storage.db import safe_url, sqlite_file
from storage.errors import InputError

__all__ = [
    "POLICIES",
    "TrialVectors",
    "VectorKeeper",
    "artifact_dir",
    "artifact_stem",
    "has_stored_vectors",
    "open_store",
    "retrain_trial",
    "stored_vectors",
    "trial_vectors",
]

_log = logging.getLogger(__name__)

#: Values of ``[artifacts] policy``.
POLICIES = ("front", "all", "none")
_ARTIFACT_PREFIX = "artifacts:"  # optuna.artifacts' key of an artifact's metadata in the trial's system attrs
_VECTORS = ".npy"
_VOCAB = ".vocab.txt"


def artifact_dir(config: StudyConfig) -> Path | None:
    """The study's artifact directory: ``artifacts.store``, else ``<db stem>-artifacts`` next to a SQLite
    file, else ``None`` (a server storage without a configured directory)."""
    if config.artifacts.store is not None:
        return Path(config.artifacts.store)
    database = sqlite_file(config.storage)
    return None if database is None else database.resolve().with_name(f"{database.stem}-artifacts")


def artifact_stem(study_name: str, trial_number: int) -> str:
    """File name stem of a trial's artifacts, ``<study>-trial<N>`` (unsafe characters of the name as ``_``)."""
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', study_name)}-trial{trial_number}"


class _AtomicFileSystemStore(FileSystemArtifactStore):
    """Optuna's file-system store, writing each artifact to a temporary file renamed into place (a crash
    never leaves a truncated artifact behind)."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        path = self._get_filepath(artifact_id)
        path.parent.mkdir(parents=True, exist_ok=True)

        def copy(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                shutil.copyfileobj(content_body, handle)

        atomic_write(path, copy)


class _StoreUnion:
    """Several artifact directories read as one (a dashboard over studies with different stores): an
    artifact is read or removed wherever it is; new ones go to the first directory."""

    def __init__(self, stores: Sequence[_AtomicFileSystemStore]) -> None:
        self._stores = list(stores)

    def open_reader(self, artifact_id: str) -> BinaryIO:
        for store in self._stores:
            with contextlib.suppress(ArtifactNotFound):
                return store.open_reader(artifact_id)
        raise ArtifactNotFound(f"artifact {artifact_id} not found")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        for store in self._stores:
            with contextlib.suppress(ArtifactNotFound):
                store.remove(artifact_id)
                return
        raise ArtifactNotFound(f"artifact {artifact_id} not found")


def open_store(directories: Iterable[Path]) -> Any | None:
    """An ``optuna.artifacts`` store over ``directories`` (one, or several read as one; ``None`` for none).

    Nothing is created: a directory that does not exist yet simply holds no artifact.
    """
    unique = list(dict.fromkeys(Path(d).resolve() for d in directories))
    if not unique:
        return None
    stores = [_AtomicFileSystemStore(d) for d in unique]
    return stores[0] if len(stores) == 1 else _StoreUnion(stores)


# -- keeping a study's vectors -----------------------------------------------------------------------------


def _vector_metas(trial: FrozenTrial, study_name: str) -> dict[str, dict[str, Any]]:
    """``{"vectors": meta, "vocab": meta}`` of the trial's stored vectors (empty when it has none)."""
    stem = artifact_stem(study_name, trial.number)
    found: dict[str, dict[str, Any]] = {}
    for key, value in trial.system_attrs.items():
        if not key.startswith(_ARTIFACT_PREFIX):
            continue
        try:
            meta = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            continue
        if not isinstance(meta, dict):
            continue
        if meta.get("filename") == stem + _VECTORS:
            found["vectors"] = meta
        elif meta.get("filename") == stem + _VOCAB:
            found["vocab"] = meta
    return found


def has_stored_vectors(trial: FrozenTrial, study_name: str) -> bool:
    """Whether the trial's metadata lists its two vector artifacts (the files themselves are not checked)."""
    return len(_vector_metas(trial, study_name)) == 2


def _dominated(values: Sequence[float], study: optuna.Study) -> bool:
    """Whether a completed feasible trial of ``study`` dominates ``values`` (in the study's directions)."""
    maximise = [d == StudyDirection.MAXIMIZE for d in study.directions]
    return any(dominates(other.values, values, maximise)
               for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if other.values is not None and not any(v > 0.0 for v in other.constraints.values()))


class VectorKeeper:
    """Keeps a study's trial vectors in its artifact store under the config's policy (module docstring).

    ``track_ids`` is ``(n_songs,)``: the track id of each song id of the study's dataset. A worker passes
    :meth:`on_trained` to :class:`objectives.trial.Objective` and calls :meth:`prune` when a trial ends.
    Storing never fails a trial: a problem is a warning.
    """

    def __init__(self, config: StudyConfig, track_ids: np.ndarray | Sequence[str]) -> None:
        self.config = config
        self.track_ids = np.asarray(track_ids, dtype=object)
        self.directory = artifact_dir(config)
        self.policy = config.artifacts.policy
        if self.policy != "none" and self.directory is None:
            _log.warning("trial vectors are not kept: storage %s is not a SQLite file and [artifacts] store names no "
                         "directory (give one every worker shares); readers re-train instead", safe_url(config.storage))
        self.store = None if self.directory is None else _AtomicFileSystemStore(self.directory)
        self._removed: set[str] = set()  # artifacts this keeper deleted (a cached trial may still list them)

    @property
    def enabled(self) -> bool:
        return self.policy != "none" and self.store is not None

    def on_trained(self, trial: optuna.Trial, embeddings: TrainedEmbeddings, values: list[float]) -> None:
        """Upload ``trial``'s vectors when the policy keeps them (``values``: its objective values)."""
        if not self.enabled:
            return
        if self.policy == "front" and not trial.user_attrs.get("baseline"):
            if not trial.user_attrs.get("feasible", True) or _dominated(values, trial.study):
                return
        try:
            start = time.perf_counter()
            self._upload(trial, *present_vectors(self.track_ids, embeddings.matrix, embeddings.present))
            _log.debug("trial %d: vectors stored as artifacts in %.2f s", trial.number, time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - keeping vectors must never fail the trial
            _log.warning("trial %d: could not store its vectors as artifacts in %s: %s", trial.number,
                         self.directory, exc)

    def _upload(self, trial: optuna.Trial, keys: list[str], vectors: np.ndarray) -> None:
        assert self.store is not None and self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = artifact_stem(trial.study.study_name, trial.number)
        with tempfile.TemporaryDirectory(prefix=".songhpo-upload-", dir=self.directory) as tmp:
            matrix_path, vocab_path = write_embeddings(Path(tmp) / f"{stem}{_VECTORS}", keys, vectors)
            # The vocabulary first: a trial whose upload was cut short has no matrix, so no usable pair.
            upload_artifact(artifact_store=self.store, file_path=str(vocab_path), study_or_trial=trial,
                            mimetype="text/plain")
            upload_artifact(artifact_store=self.store, file_path=str(matrix_path), study_or_trial=trial,
                            mimetype="application/octet-stream")

    def prune(self, study: optuna.Study) -> int:
        """Delete the stored vectors the policy no longer keeps; returns how many artifacts were deleted.

        ``front``: of every finished trial that is neither the baseline nor on the feasible front;
        ``all``: of failed trials only. Running and waiting trials are never touched.
        """
        if not self.enabled:
            return 0
        keep: set[int] | None = None
        if self.policy == "front":
            keep = {t.number for t in feasible_pareto_front(study)}
            keep |= {t.number for t in baseline_trials(study) if t.state == TrialState.COMPLETE}
        removed = 0
        for trial in study.get_trials(deepcopy=False):
            if not trial.state.is_finished():
                continue
            if trial.state == TrialState.COMPLETE and (keep is None or trial.number in keep):
                continue
            metas = [m for m in _vector_metas(trial, study.study_name).values() if m["artifact_id"] not in self._removed]
            if metas:
                removed += self._delete(study, trial, [m["artifact_id"] for m in metas])
        return removed

    def _delete(self, study: optuna.Study, trial: FrozenTrial, artifact_ids: list[str]) -> int:
        assert self.store is not None
        for artifact_id in artifact_ids:
            with contextlib.suppress(ArtifactNotFound):
                self.store.remove(artifact_id)
            self._removed.add(artifact_id)
        # Optuna refuses to change a finished trial's attributes: its metadata rows are deleted directly,
        # so neither Optuna nor the dashboard lists an artifact whose file is gone.
        backend = getattr(study._storage, "_backend", study._storage)
        if isinstance(backend, RDBStorage):
            table = _optuna_models.TrialSystemAttributeModel.__table__
            keys = [_ARTIFACT_PREFIX + a for a in artifact_ids]
            try:
                with backend.engine.begin() as connection:
                    connection.execute(delete(table).where(table.c.trial_id == trial._trial_id, table.c.key.in_(keys)))
            except Exception as exc:  # noqa: BLE001 - a stale listing is a nuisance, not a failure
                _log.warning("trial %d: its deleted vectors are still listed as artifacts: %s", trial.number, exc)
        _log.debug("trial %d left the front: %d artifacts deleted", trial.number, len(artifact_ids))
        return len(artifact_ids)


# -- reading a trial's vectors -----------------------------------------------------------------------------


def stored_vectors(study: optuna.Study, trial: FrozenTrial, config: StudyConfig,
                   directory: Path | None = None) -> Embeddings | None:
    """The trial's stored vectors keyed by track id, or ``None`` when it has none (or they cannot be read:
    a warning then says why). ``directory`` overrides the config's artifact directory."""
    directory = directory if directory is not None else artifact_dir(config)
    metas = _vector_metas(trial, study.study_name)
    if directory is None or len(metas) < 2:
        return None
    store = _AtomicFileSystemStore(Path(directory))
    stem = artifact_stem(study.study_name, trial.number)
    with tempfile.TemporaryDirectory(prefix="songhpo-artifact-") as tmp:
        matrix_path, vocab_path = Path(tmp) / f"{stem}{_VECTORS}", Path(tmp) / f"{stem}{_VOCAB}"
        try:
            for meta, path in ((metas["vectors"], matrix_path), (metas["vocab"], vocab_path)):
                with store.open_reader(meta["artifact_id"]) as reader, path.open("wb") as writer:
                    shutil.copyfileobj(reader, writer)
            return read_embeddings(matrix_path, vocab=vocab_path, fmt="npy")
        except (ArtifactNotFound, OSError, InputError, ValueError) as exc:
            _log.warning("trial %d: its stored vectors in %s cannot be read (%s); re-training it instead",
                         trial.number, directory, exc)
            return None


@dataclass(frozen=True)
class TrialVectors:
    """One trial's vectors aligned to the dataset's song ids.

    ``matrix`` is ``(n_songs, d)`` float32 (zero rows for songs without a vector), ``present`` ``(n_songs,)``
    bool; ``source`` is ``"artifact"`` or ``"re-trained"``; ``seed`` the trial's training seed; ``seconds``
    the time it took to load or train them.
    """

    matrix: np.ndarray
    present: np.ndarray
    source: str
    seed: int
    seconds: float


def present_vectors(track_ids: np.ndarray | Sequence[str], matrix: np.ndarray,
                    present: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The songs that have a vector: their track ids (as strings) and their ``(n_present, d)`` rows.

    ``track_ids`` is ``(n_songs,)``, the track id of each song id; ``matrix`` ``(n_songs, d)``; ``present``
    ``(n_songs,)`` bool.
    """
    present = np.asarray(present, dtype=bool)
    return [str(t) for t in np.asarray(track_ids, dtype=object)[present]], matrix[present]


def retrain_trial(trial: FrozenTrial, config: StudyConfig, dataset: PreparedDataset, *,
                  seed: int | None = None) -> TrainedEmbeddings:
    """Re-train ``trial``'s exact configuration: its Word2Vec parameters, its seed (or ``seed``) and the study's
    training subset (``training.fraction``, seeded with the study seed), with ``training.workers`` threads."""
    from objectives.word2vec import train_word2vec

    if "seed" not in trial.user_attrs:
        raise InputError(f"trial {trial.number} has no 'seed' attribute; it was not run by songhpo")
    sentences = training_subset(dataset.training_sentences(), config.training.fraction, config.seed)
    try:
        return train_word2vec(sentences, dataset.n_songs, training_params(trial),
                              seed=int(trial.user_attrs["seed"]) if seed is None else seed,
                              workers=config.training.workers)
    except ValueError as exc:  # unknown parameter, empty vocabulary: the trial cannot be replayed here
        raise InputError(f"trial {trial.number}: cannot re-train it ({exc})") from exc


def trial_vectors(study: optuna.Study, trial: FrozenTrial, config: StudyConfig, dataset: PreparedDataset, *,
                  directory: Path | None = None) -> TrialVectors:
    """``trial``'s vectors: the stored ones when the artifact store holds them, else an exact re-training
    (:func:`retrain_trial`). The trial must be COMPLETE."""
    if trial.state != TrialState.COMPLETE:
        raise InputError(f"study {study.study_name!r}, trial {trial.number}: state {trial.state.name}; "
                         "expected a COMPLETE trial")
    start = time.perf_counter()
    seed = int(trial.user_attrs.get("seed", -1))
    stored = stored_vectors(study, trial, config, directory)
    if stored is not None:
        matrix, present, report = align_to_dataset(stored, dataset.songs["track_id"])
        if report["ignored_keys"] == 0:
            _log.info("trial %d: stored vectors (%d songs) from the artifact store", trial.number, report["matched"])
            return TrialVectors(matrix, present, "artifact", seed, time.perf_counter() - start)
        _log.warning("trial %d: %d stored keys are not songs of %s; re-training it instead", trial.number,
                     report["ignored_keys"], dataset.path)
    if config.training.workers > 1:
        _log.warning("training.workers = %d: the re-trained vectors are close to, not exactly, the trial's",
                     config.training.workers)
    _log.info("re-training trial %d of %s (seed %d, training fraction %g)", trial.number, study.study_name, seed,
              config.training.fraction)
    trained = retrain_trial(trial, config, dataset)
    return TrialVectors(trained.matrix, trained.present, "re-trained", seed, time.perf_counter() - start)
