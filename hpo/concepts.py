"""Concept hierarchies of a tuned embedding space (SPEC section 6): data, orchestration, outputs.

The computations live in :mod:`metrics.concepts`; this module reads the inputs (concept sets from a
prepared dataset, embeddings from a study trial or a file), runs the pipeline with timings, and writes
the outputs atomically:

``tree.json``
    Settings, source, counts, the structure and alignment tables, timings, and the tree as a flat list
    of nodes (``id``, ``name``, ``parent`` id or ``null`` for the root, ``children`` ids, ``depth``,
    accuracy, size, betweenness, similarity to the parent) plus the ``roots``.
``concepts.csv``
    Every candidate concept with its split sizes, chosen ``C``, validation and test balanced accuracy,
    whether it passed the accuracy filter, and its place in the tree.
``graph.html``
    The interactive tree (:mod:`dashboards.concept_graph`), self-contained.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hpo._atomic import atomic_directory
from hpo._progress import bar
from hpo.data.dataset import PreparedDataset
from metrics import concepts as mc
from storage.errors import InputError

__all__ = [
    "KINDS",
    "ConceptSets",
    "HierarchyResult",
    "HierarchySettings",
    "SongEmbeddings",
    "build_hierarchy",
    "file_embeddings",
    "load_concept_sets",
    "trial_embeddings",
    "write_outputs",
]

_log = logging.getLogger("songhpo")

#: Concept sources: training playlists, song genres, song artists, tags / categories.
KINDS = ("playlists", "genres", "artists", "tags")


@dataclass(frozen=True)
class ConceptSets:
    """Concepts as sets of song ids, in CSR form.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    names : list of str
        ``K`` concept names (playlist ``sequence_id``, genre, artist or tag).
    offsets : np.ndarray, shape (K + 1,), int64
    songs : np.ndarray, int64
        Distinct song ids of concept ``k``, sorted: ``songs[offsets[k]:offsets[k + 1]]``.
    candidates : int
        Concepts before dropping those with fewer than ``min_size`` songs.
    """

    kind: str
    names: list[str]
    offsets: np.ndarray
    songs: np.ndarray
    candidates: int

    def __len__(self) -> int:
        return len(self.names)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def membership(self, n_songs: int) -> sp.csr_matrix:
        """``(K, n_songs)`` binary matrix of concept membership."""
        rows = np.repeat(np.arange(len(self)), self.sizes)
        data = np.ones(self.songs.size, dtype=np.float64)
        return sp.csr_matrix((data, (rows, self.songs)), shape=(len(self), n_songs))


def load_concept_sets(
    dataset: PreparedDataset, kind: str, *, min_size: int = 20, present: np.ndarray | None = None
) -> ConceptSets:
    """Concepts of ``kind`` from a prepared dataset, keeping those with ``>= min_size`` distinct songs.

    * ``playlists``: the training sequences (in-set targets masked), named by their ``sequence_id``
      (rows of ``sequences.parquet`` with ``split == "train"``, in training order);
    * ``genres`` / ``artists``: songs grouped by their genre / artist label (unknown labels skipped);
    * ``tags``: ``concepts.parquet`` (yes.com Last.fm tags, Art of the Mix categories).

    Only songs with ``present`` True (songs that have a vector) count; concepts are ordered by name
    for genres, artists and tags, by training order for playlists.
    """
    if kind not in KINDS:
        raise InputError(f"--concepts {kind!r}: expected one of {', '.join(KINDS)}")
    n_songs = dataset.n_songs
    keep = np.ones(n_songs, dtype=bool) if present is None else np.asarray(present, dtype=bool)
    if kind == "playlists":
        names, owner, song = _playlist_pairs(dataset)
    elif kind in ("genres", "artists"):
        column = "genre" if kind == "genres" else "artist"
        codes = dataset.songs[f"{column}_code"].to_numpy(np.int64)
        labelled = codes >= 0
        if not labelled.any():
            raise InputError(f"{dataset.path}: no song has a known {column}; choose another --concepts source")
        label_names = (
            dataset.songs.loc[labelled, [f"{column}_code", column]].drop_duplicates(f"{column}_code")
            .set_index(f"{column}_code")[column]
        )
        names = [str(label_names.get(c, c)) for c in range(int(codes.max()) + 1)]
        song = np.flatnonzero(labelled)
        owner = codes[labelled]
    else:
        table = dataset.concepts
        if table is None:
            raise InputError(
                f"{dataset.path}: no concepts.parquet (the input had no tags or categories); "
                "use --concepts playlists, genres or artists"
            )
        codes, uniques = pd.factorize(table["concept"].astype(str), sort=True)
        names = [str(u) for u in uniques]
        owner = codes.astype(np.int64)
        song = table["song"].to_numpy(np.int64)
    valid = keep[song]
    owner, song = owner[valid], song[valid]
    # Distinct (concept, song) pairs, sorted by concept then song.
    pairs = np.unique(owner * np.int64(n_songs) + song)
    owner, song = pairs // n_songs, pairs % n_songs
    sizes = np.bincount(owner, minlength=len(names))
    selected = np.flatnonzero(sizes >= min_size)
    keep_pair = np.isin(owner, selected)
    offsets = np.zeros(selected.size + 1, dtype=np.int64)
    np.cumsum(sizes[selected], out=offsets[1:])
    return ConceptSets(
        kind=kind,
        names=[names[i] for i in selected],
        offsets=offsets,
        songs=song[keep_pair].astype(np.int64),
        candidates=len(names),
    )


def _playlist_pairs(dataset: PreparedDataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    sequences = dataset.sequences
    names = sequences.loc[sequences["split"] == "train", "sequence_id"].astype(str).tolist()
    offsets = dataset.train_offsets
    if len(names) != offsets.size - 1:
        raise InputError(
            f"{dataset.path}: sequences.parquet lists {len(names)} training sequences but train_offsets.npy has "
            f"{offsets.size - 1}; prepare the dataset again"
        )
    owner = np.repeat(np.arange(len(names), dtype=np.int64), np.diff(offsets))
    return names, owner, dataset.train_tokens.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Embeddings


@dataclass(frozen=True)
class SongEmbeddings:
    """Vectors in dataset song-id order: ``matrix`` ``(n_songs, d)``, ``present`` ``(n_songs,)`` bool,
    and where they came from (``source``, JSON-ready)."""

    matrix: np.ndarray
    present: np.ndarray
    source: dict[str, Any]
    seconds: float


def trial_embeddings(study: Any, trial_number: int, dataset: PreparedDataset, *, workers: int | None = None,
                     config: Any = None) -> SongEmbeddings:
    """The embeddings of trial ``trial_number`` of ``study``: its stored vectors when the study's artifact store
    keeps them (:mod:`hpo.artifacts`), else an exact re-training (its parameters and seed, on the study's
    training subset ``training.fraction``).

    ``config`` is the study's :class:`~hpo.config.StudyConfig` (default: the one stored in the study, with
    the storage it was loaded from); ``workers`` overrides its ``training.workers``.
    """
    from hpo.artifacts import trial_vectors
    from hpo.study import stored_config
    from hpo.trials import CONFIG_ATTR, trial_by_number

    trial = trial_by_number(study, trial_number)
    if not isinstance(trial.user_attrs.get("gensim_params"), dict) or trial.user_attrs.get("seed") is None:
        raise InputError(
            f"study {study.study_name!r}, trial {trial_number}: no gensim_params/seed user attributes "
            "(not a songhpo trial)"
        )
    if config is None:
        stored = study.user_attrs.get(CONFIG_ATTR)
        if not isinstance(stored, dict):
            raise InputError(f"study {study.study_name!r} has no songhpo config; it was not created by songhpo")
        backend = getattr(study._storage, "_backend", study._storage)
        config = stored_config(stored, getattr(backend, "url", "sqlite:///:memory:"), f"study {study.study_name!r}")
    if workers is not None:
        config = config.model_copy(update={"training": config.training.model_copy(update={"workers": workers})})
    vectors = trial_vectors(study, trial, config, dataset)
    params = {k: v for k, v in trial.user_attrs["gensim_params"].items() if k not in ("sg", "hs")}
    return SongEmbeddings(
        matrix=vectors.matrix,
        present=vectors.present,
        source={"study": study.study_name, "trial": trial_number, "seed": vectors.seed, "params": params,
                "baseline": bool(trial.user_attrs.get("baseline")), "vectors": vectors.source,
                "training_fraction": config.training.fraction},
        seconds=vectors.seconds,
    )


def file_embeddings(
    path: Path, dataset: PreparedDataset, *, vocab: Path | None = None, fmt: str = "auto"
) -> SongEmbeddings:
    """Read an embedding file keyed by track id and align it to the dataset's songs."""
    from hpo.data.embeddings_io import align_to_dataset, read_embeddings

    start = time.perf_counter()
    embeddings = read_embeddings(path, vocab=vocab, fmt=fmt)
    matrix, present, report = align_to_dataset(embeddings, dataset.songs["track_id"])
    if report["matched"] == 0:
        examples = ", ".join(repr(k) for k in embeddings.keys[:3])
        raise InputError(
            f"{path}: none of its {report['file_keys']} keys (e.g. {examples}) is a track id of {dataset.path}; "
            "keys must be the dataset's track_id values"
        )
    if report["ignored_keys"]:
        _log.warning("%s: %d keys are not dataset songs and are ignored", path, report["ignored_keys"])
    return SongEmbeddings(
        matrix=matrix, present=present, source={"embeddings": str(path), "alignment": report},
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------------
# Pipeline


@dataclass(frozen=True)
class HierarchySettings:
    """Parameters of the pipeline (defaults are the paper's)."""

    kind: str = "playlists"
    min_size: int = 20
    min_accuracy: float = 0.70
    threshold: float = 0.5
    min_sim: float = 0.2
    negative_ratio: float = 1.0
    cs: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    seed: int = 0
    n_jobs: int = -1
    n_random: int = 20

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"--concepts {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.min_size < mc.MIN_CONCEPT_SIZE:
            raise InputError(f"--min-size {self.min_size}: expected at least {mc.MIN_CONCEPT_SIZE} (70/10/20 split)")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise InputError(f"--min-accuracy {self.min_accuracy}: expected a number in [0, 1]")
        if not 0.0 <= self.min_sim < 1.0:
            raise InputError(f"--min-sim {self.min_sim}: expected a number in [0, 1)")
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"threshold {self.threshold}: expected a number in (0, 1)")
        if not self.negative_ratio > 0:
            raise InputError(f"--negative-ratio {self.negative_ratio}: expected a positive number")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed}: expected a non-negative integer")
        if self.n_jobs == 0:
            raise InputError("--jobs 0: expected a positive number of workers or -1 for all cores")


@dataclass
class HierarchyResult:
    """Everything the pipeline computed; ``vectors``/``names``/``sizes`` cover every candidate concept,
    the graph quantities only the ``kept`` ones (in the order of ``np.flatnonzero(kept)``)."""

    settings: HierarchySettings
    source: dict[str, Any]
    dataset: dict[str, Any]
    names: list[str]
    sizes: np.ndarray
    descriptions: list[str]
    vectors: mc.ConceptVectors
    kept: np.ndarray
    similarity: np.ndarray
    adjacency: np.ndarray
    centrality: np.ndarray
    parent: np.ndarray
    order: np.ndarray
    structure: list[dict[str, Any]]
    alignment: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    candidates: int = 0

    @property
    def kept_index(self) -> np.ndarray:
        return np.flatnonzero(self.kept)

    def summary(self) -> dict[str, Any]:
        """Counts, tables and timings (JSON-ready)."""
        parent = self.parent
        return {
            "concepts": {
                "kind": self.settings.kind,
                "candidates": self.candidates,
                "min_size": self.settings.min_size,
                "learned": len(self.names),
                "kept": int(self.kept.sum()),
                "filtered": int((~self.kept).sum()),
                "mean_accuracy": _mean(self.vectors.accuracy),
                "mean_accuracy_kept": _mean(self.vectors.accuracy[self.kept]),
            },
            "tree": {
                "nodes": int(parent.size),
                "edges": int((parent >= 0).sum()),
                "root_children": int((parent < 0).sum()),
                "depth": int(_depths(parent).max() + 1) if parent.size else 0,
                "A_edges_directed": int(self.adjacency.sum()),
            },
            "structure": self.structure,
            "alignment": self.alignment,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _depths(parent: np.ndarray) -> np.ndarray:
    """Depth of every node (root children have depth 0) for a parent array."""
    depth = np.full(parent.size, -1, dtype=np.int64)
    for start in range(parent.size):
        path = []
        node = start
        while node >= 0 and depth[node] < 0:
            path.append(node)
            node = parent[node]
        base = -1 if node < 0 else depth[node]
        for offset, n in enumerate(reversed(path), start=1):
            depth[n] = base + offset
    return depth


def build_hierarchy(
    dataset: PreparedDataset,
    embeddings: SongEmbeddings,
    settings: HierarchySettings,
    *,
    on_progress: Callable[[str], None] | None = None,
) -> HierarchyResult:
    """Concept vectors -> filter -> S, A -> betweenness -> tree -> structure and alignment tables."""
    settings.validate()
    timings: dict[str, float] = {"embeddings": embeddings.seconds}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now
        if on_progress is not None:
            on_progress(name)

    present = embeddings.present.astype(bool)
    if not present.any():
        raise InputError("the embeddings have no vector for any dataset song")
    sets = load_concept_sets(dataset, settings.kind, min_size=settings.min_size, present=present)
    if len(sets) == 0:
        raise InputError(
            f"no {settings.kind} concept has {settings.min_size} or more songs with a vector "
            f"(out of {sets.candidates}); lower --min-size or choose another --concepts source"
        )
    # Concept vectors live in the same space as every other metric: L2-normalised song vectors.
    X = embeddings.matrix.astype(np.float64)
    norms = np.linalg.norm(X, axis=1)
    usable = present & (norms > 0)
    X[usable] /= norms[usable, None]
    profiles, label_names = _profiles(dataset, sets)
    lap("concept_sets")

    too_big = np.flatnonzero(sets.sizes > int(usable.sum()) - 3)
    if too_big.size:
        raise InputError(
            f"concept {sets.names[too_big[0]]!r} holds {sets.sizes[too_big[0]]} of the {int(usable.sum())} songs "
            "with a vector: too few songs are left outside it to learn what sets it apart"
        )
    _log.info("learning %d %s concept vectors (%d candidates, min size %d)",
              len(sets), settings.kind, sets.candidates, settings.min_size)
    with bar(len(sets), "concept vectors", unit="concept") as progress:
        vectors = mc.learn_concept_vectors(
            X, sets.offsets, sets.songs, eligible=usable, seed=settings.seed,
            negative_ratio=settings.negative_ratio, cs=settings.cs, n_jobs=settings.n_jobs,
            on_batch=progress.update,
        )
    lap("concept_vectors")
    kept = vectors.accuracy >= settings.min_accuracy
    if not kept.any():
        raise InputError(
            f"no concept reached balanced test accuracy {settings.min_accuracy:.2f} (best "
            f"{vectors.accuracy.max():.3f}); the embedding does not separate these concepts"
        )
    _log.info("%d of %d concepts reach accuracy %.2f", int(kept.sum()), len(sets), settings.min_accuracy)
    kept_vectors = vectors.subset(kept)
    similarity = mc.concept_similarity(X, kept_vectors)
    adjacency = mc.concept_adjacency(similarity, settings.threshold)
    lap("similarity")
    centrality = mc.betweenness(adjacency, n_jobs=settings.n_jobs)
    lap("betweenness")
    parent, order = mc.mine_tree(similarity, centrality, min_sim=settings.min_sim)
    lap("tree")
    structure = mc.structure_table(similarity, adjacency, parent, seed=settings.seed)
    lap("structure")
    kept_idx = np.flatnonzero(kept)
    sources = {name: (matrix[kept_idx], metric) for name, (matrix, metric) in profiles.items()}
    alignment = mc.alignment(parent, sources, n_random=settings.n_random, seed=settings.seed)
    lap("alignment")
    return HierarchyResult(
        settings=settings,
        source=embeddings.source,
        dataset={"path": str(dataset.path), "fingerprint": dataset.fingerprint, "songs": dataset.n_songs,
                 "songs_with_vector": int(present.sum())},
        names=sets.names,
        sizes=sets.sizes,
        descriptions=_descriptions(profiles, label_names),
        vectors=vectors,
        kept=kept,
        similarity=similarity,
        adjacency=adjacency,
        centrality=centrality,
        parent=parent,
        order=order,
        structure=structure,
        alignment=alignment,
        timings=timings,
        candidates=sets.candidates,
    )


def _profiles(dataset: PreparedDataset, sets: ConceptSets) -> tuple[dict[str, tuple[sp.csr_matrix, str]], dict[str, list[str]]]:
    """Alignment sources, one ``(K, L)`` profile per concept and the metric comparing two profiles.

    * ``genre overlap`` / ``artist overlap`` / ``tag overlap``: cosine of the label histograms of the
      concepts' songs (left out when it is the concept kind itself or the dataset has no such labels);
    * ``shared songs``: Jaccard of the song sets (playlists, tags), or for genres and artists, which
      never share songs, ``playlist co-occurrence``: cosine of their songs' play counts per training
      playlist.
    """
    membership = sets.membership(dataset.n_songs)
    profiles: dict[str, tuple[sp.csr_matrix, str]] = {}
    label_names: dict[str, list[str]] = {}
    songs = dataset.songs
    for label, kind in (("genre", "genres"), ("artist", "artists")):
        codes = songs[f"{label}_code"].to_numpy(np.int64)
        if kind == sets.kind or not (codes >= 0).any():
            continue
        one_hot = _one_hot(codes, int(codes.max()) + 1)
        profiles[f"{label} overlap"] = (membership @ one_hot, "cosine")
        names = songs.loc[codes >= 0, [f"{label}_code", label]].drop_duplicates(f"{label}_code")
        lookup = dict(zip(names[f"{label}_code"].tolist(), names[label].astype(str).tolist()))
        label_names[f"{label} overlap"] = [lookup.get(c, "?") for c in range(int(codes.max()) + 1)]
    table = dataset.concepts
    if sets.kind != "tags" and table is not None:
        codes, uniques = pd.factorize(table["concept"].astype(str), sort=True)
        if len(uniques):
            song_tags = sp.csr_matrix(
                (np.ones(len(table)), (table["song"].to_numpy(np.int64), codes)), shape=(dataset.n_songs, len(uniques))
            )
            profiles["tag overlap"] = (membership @ song_tags, "cosine")
            label_names["tag overlap"] = [str(u) for u in uniques]
    if sets.kind in ("genres", "artists"):
        # Genres and artists partition the songs, so they never share one: compare where their songs
        # are played instead (cosine of their play counts per training playlist).
        tokens, offsets = dataset.train_tokens, dataset.train_offsets
        owner = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
        plays = sp.csr_matrix((np.ones(tokens.size), (tokens.astype(np.int64), owner)),
                              shape=(dataset.n_songs, offsets.size - 1))
        profiles["playlist co-occurrence"] = (membership @ plays, "cosine")
    else:
        profiles["shared songs"] = (membership, "jaccard")
    return profiles, label_names


def _one_hot(codes: np.ndarray, n_labels: int) -> sp.csr_matrix:
    rows = np.flatnonzero(codes >= 0)
    return sp.csr_matrix((np.ones(rows.size), (rows, codes[rows])), shape=(codes.size, n_labels))


def _descriptions(profiles: dict[str, tuple[sp.csr_matrix, str]], label_names: dict[str, list[str]]) -> list[str]:
    """Per concept, its most frequent genres / artists / tags with shares (hover text of the graph)."""
    n = next(iter(profiles.values()))[0].shape[0]
    parts: list[list[str]] = [[] for _ in range(n)]
    for source, names in label_names.items():
        counts = profiles[source][0].tocsr()
        label = source.split()[0]
        for k in range(n):
            start, end = counts.indptr[k], counts.indptr[k + 1]
            if start == end:
                continue
            data, indices = counts.data[start:end], counts.indices[start:end]
            top = np.argsort(-data, kind="stable")[:3]
            total = data.sum()
            parts[k].append(f"{label}: " + ", ".join(f"{names[indices[i]]} {data[i] / total:.0%}" for i in top))
    return ["; ".join(p) for p in parts]


# --------------------------------------------------------------------------------------------------
# Outputs


def tree_document(result: HierarchyResult) -> dict[str, Any]:
    """The JSON tree: metadata, tables and a flat node list (ids are positions among kept concepts)."""
    kept_idx = result.kept_index
    parent = result.parent
    depth = _depths(parent)
    children: list[list[int]] = [[] for _ in range(parent.size)]
    for child in result.order:  # children listed in the order they joined the tree
        if parent[child] >= 0:
            children[parent[child]].append(int(child))
    added = np.empty(parent.size, dtype=np.int64)
    added[result.order] = np.arange(parent.size)
    nodes = []
    for node, concept in enumerate(kept_idx):
        p = int(parent[node])
        nodes.append({
            "id": node,
            "name": result.names[concept],
            "parent": p if p >= 0 else None,
            "children": children[node],
            "depth": int(depth[node]),
            "added": int(added[node]),
            "size": int(result.sizes[concept]),
            "accuracy": float(result.vectors.accuracy[concept]),
            "betweenness": float(result.centrality[node]),
            "similarity_to_parent": float(result.similarity[p, node]) if p >= 0 else None,
            "description": result.descriptions[concept],
        })
    return {
        "format": "songhpo-concept-tree",
        "version": 1,
        "settings": _jsonable(asdict(result.settings)),
        "source": _jsonable(result.source),
        "dataset": result.dataset,
        **_jsonable(result.summary()),
        "roots": [int(n) for n in result.order if parent[n] < 0],
        "nodes": nodes,
    }


def concepts_csv(result: HierarchyResult) -> str:
    """One row per candidate concept (kept or filtered)."""
    node_of = np.full(len(result.names), -1, dtype=np.int64)
    node_of[result.kept_index] = np.arange(result.kept_index.size)
    kept_idx = result.kept_index
    depth = _depths(result.parent)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["concept", "name", "size", "train_positives", "validation_positives", "test_positives",
                     "negatives", "c", "validation_accuracy", "accuracy", "kept", "node", "parent_node",
                     "parent_name", "depth", "betweenness", "description"])
    v = result.vectors
    for k, name in enumerate(result.names):
        node = int(node_of[k])
        p = int(result.parent[node]) if node >= 0 else -1
        writer.writerow([
            k, name, int(result.sizes[k]), *(int(x) for x in v.n_positive[k]), int(v.n_negative[k].sum()),
            f"{v.c[k]:g}", f"{v.validation_accuracy[k]:.4f}", f"{v.accuracy[k]:.4f}", int(bool(result.kept[k])),
            node if node >= 0 else "", p if p >= 0 else "",
            result.names[kept_idx[p]] if p >= 0 else ("<root>" if node >= 0 else ""),
            int(depth[node]) if node >= 0 else "", f"{result.centrality[node]:.6g}" if node >= 0 else "",
            result.descriptions[k],
        ])
    return out.getvalue()


def write_outputs(
    result: HierarchyResult, out: Path, *, overwrite: bool = False, title: str = "", inputs: Sequence[str | Path] = ()
) -> dict[str, Path]:
    """Write ``tree.json``, ``concepts.csv`` and ``graph.html`` into ``out`` atomically.

    ``inputs`` (the prepared dataset, the embedding file, the study's SQLite file) are never replaced.
    """
    from dashboards.concept_graph import concept_graph_html

    kept_idx = result.kept_index
    document = tree_document(result)
    html = concept_graph_html(
        [result.names[k] for k in kept_idx],
        result.parent,
        accuracy=result.vectors.accuracy[kept_idx],
        size=result.sizes[kept_idx],
        hover=[result.descriptions[k] for k in kept_idx],
        title=title or f"{result.settings.kind} concept hierarchy",
        subtitle=_subtitle(result),
    )
    with atomic_directory(Path(out), overwrite=overwrite, inputs=inputs) as tmp:
        (tmp / "tree.json").write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "concepts.csv").write_text(concepts_csv(result), encoding="utf-8")
        (tmp / "graph.html").write_text(html, encoding="utf-8")
    out = Path(out)
    return {"tree": out / "tree.json", "concepts": out / "concepts.csv", "graph": out / "graph.html"}


def _subtitle(result: HierarchyResult) -> str:
    summary = result.summary()
    source = result.source
    origin = (f"study {source['study']}, trial {source['trial']}" if "study" in source
              else f"embeddings {Path(str(source.get('embeddings', '?'))).name}")
    c = summary["concepts"]
    return (f"{origin}; {c['kept']} of {c['learned']} concepts with balanced accuracy >= "
            f"{result.settings.min_accuracy:.2f}; {summary['tree']['root_children']} under the root")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
