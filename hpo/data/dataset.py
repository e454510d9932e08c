"""The prepared dataset: the one on-disk form every trial and every worker reads.

Directory layout (written by :func:`hpo.data.prepare.prepare_dataset`)::

    manifest.json                      counts, parameters, dropped items, fingerprint, file hashes
    songs.parquet                      one row per song id 0..n_songs-1: track_id, artist, genre, title,
                                       artist_code, genre_code (-1 = unknown), train_count
    sequences.parquet                  sequence_id, split (train/validation/test), n_plays
    train_tokens.npy / _offsets.npy    training sequences (in-set targets masked), CSR-style, int32/int64
    {validation,test}_pairs_{in,out}.npy   (n, 2) int32 (query, target) evaluation pairs
    {validation,test}_sequences_*.npy  held-out sequences, song ids with -1 for songs outside the vocabulary
    hard_negatives.parquet             a < b, cooc, chi2, expected
    concepts.parquet                   optional: song, concept (tags / categories)

Integrity. A prepared directory is read by many processes long after it was written, so nothing in it
is trusted blindly:

* at every :meth:`PreparedDataset.load`, the manifest's structure, its fingerprint (a hash of the file
  hashes and parameters), every file's presence and every file's size and shape (``.npy`` headers
  against the file size, Parquet footers against the manifest's counts) are checked, without reading
  the data; the SHA-256 of every file is checked too when the files total at most
  :data:`HASH_ON_LOAD_BYTES` (a fraction of a second);
* each array and table is checked when first used: song ids in range, offsets increasing from 0 to the
  number of tokens, labels and pairs well-formed;
* :meth:`PreparedDataset.verify` (``songhpo data verify DIR``) does all of it, every hash included, and
  cross-checks the song table's play counts against the training tokens.

Every inconsistency is an :class:`~storage.errors.InputError` naming the file and telling to prepare the
dataset again. Arrays are loaded with ``allow_pickle=False`` after their header was checked
(:mod:`hpo.data._npy`), so a pickle in place of a ``.npy`` file is refused, never run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpo.choices import SPLITS
from hpo.data._npy import NpyError, NpyHeader, read_npy, read_npy_header
from storage.errors import InputError, first_line

if TYPE_CHECKING:  # pandas comes with the tables (pyarrow's to_pandas): commands that read none start faster
    import pandas as pd

FORMAT_NAME = "songhpo-prepared"
FORMAT_VERSION = 1
#: Files totalling at most this many bytes have their SHA-256 checked at every load (~0.1 s).
HASH_ON_LOAD_BYTES = 64 * 2**20

#: Count keys of ``manifest["counts"]`` that the checks rely on (non-negative integers).
_COUNT_KEYS = ("sequences", "train_sequences", "validation_sequences", "test_sequences", "plays", "train_plays",
               "songs", "hard_negative_pairs", "songs_with_hard_negative")
#: Columns of each Parquet table, and the count key giving its number of rows.
_TABLES = {
    "songs": (("track_id", "artist", "genre", "title", "artist_code", "genre_code", "train_count"), "songs"),
    "sequences": (("sequence_id", "split", "n_plays"), "sequences"),
    "hard_negatives": (("a", "b", "cooc", "chi2", "expected"), "hard_negative_pairs"),
    "concepts": (("song", "concept"), None),
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def content_fingerprint(files: Mapping[str, str], parameters: Mapping[str, Any]) -> str:
    """The dataset fingerprint: SHA-256 of the file hashes and the preparation parameters."""
    payload = json.dumps({"files": dict(files), "parameters": dict(parameters)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _array_specs(counts: Mapping[str, Any]) -> dict[str, tuple[tuple[int | None, ...], int | None]]:
    """``{name: (shape, lowest song id)}`` of every ``.npy`` file, from the manifest's ``counts``.

    ``None`` in a shape is an axis the counts do not fix. The lowest id is 0 for song ids, -1 for held-out
    tokens (-1 = outside the vocabulary), and ``None`` for offset arrays (checked against their tokens).
    """
    specs: dict[str, tuple[tuple[int | None, ...], int | None]] = {
        "train_tokens": ((counts["train_plays"],), 0),
        "train_offsets": ((counts["train_sequences"] + 1,), None),
    }
    for split in SPLITS:
        for side in ("in", "out"):
            specs[f"{split}_pairs_{side}"] = ((counts["pairs"][split][side], 2), 0)
        specs[f"{split}_sequences_tokens"] = ((None,), -1)
        specs[f"{split}_sequences_offsets"] = ((counts[f"{split}_sequences"] + 1,), None)
    return specs


#: The tokens array each offsets array indexes.
_TOKENS_OF = {"train_offsets": "train_tokens", **{f"{s}_sequences_offsets": f"{s}_sequences_tokens" for s in SPLITS}}


@dataclass(frozen=True)
class PreparedDataset:
    """Read-only view of a prepared dataset directory; arrays load lazily, checked, and are cached."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, *, verify: bool | None = None) -> PreparedDataset:
        """Open ``path`` and check its structure (see the module docstring).

        ``verify``: ``True`` checks every file's SHA-256, ``False`` none, ``None`` (default) when the
        files total at most :data:`HASH_ON_LOAD_BYTES`.

        Raises
        ------
        InputError
            Not a prepared dataset, or any inconsistency, naming the file and the fix.
        """
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise InputError(f"{path}: not a prepared dataset (no manifest.json); run 'songhpo data prepare' first")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            raise InputError(f"{manifest_path}: unreadable manifest ({exc}); {_fix(path, None)}") from exc
        if not isinstance(manifest, dict):
            raise InputError(f"{manifest_path}: expected a JSON object, got {type(manifest).__name__}; {_fix(path, None)}")
        if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{manifest_path}: format {manifest.get('format')!r} v{manifest.get('format_version')} is not "
                f"{FORMAT_NAME} v{FORMAT_VERSION}; prepare the dataset again with this version"
            )
        dataset = cls(path, manifest)
        dataset._check_manifest()
        sizes = dataset._check_files()
        if verify or (verify is None and sum(sizes.values()) <= HASH_ON_LOAD_BYTES):
            dataset._check_hashes()
        return dataset

    def verify(self, *, hashes: bool = True) -> dict[str, Any]:
        """Check everything: every file's SHA-256 (unless ``hashes`` is False), then the values of every
        array and table, and their counts against each other and against the manifest.

        Returns a summary ``{"path", "fingerprint", "files", "bytes", "songs"}``.
        """
        sizes = self._check_files()
        if hashes:
            self._check_hashes()
        for name in _array_specs(self.counts):
            self._array(name)
        for table in ("songs", "sequences", "hard_negatives"):
            getattr(self, table)
        _ = self.concepts
        bincount = np.bincount(self.train_tokens, minlength=self.n_songs)
        if not np.array_equal(bincount, self.train_counts):
            song = int(np.flatnonzero(bincount != self.train_counts)[0])
            raise self._damaged(
                "songs.parquet", f"song {song} has train_count {int(self.train_counts[song])} but appears "
                f"{int(bincount[song])} times in train_tokens.npy")
        sequences = self.sequences
        splits = sequences["split"].value_counts()
        for split in ("train", *SPLITS):
            key = f"{split}_sequences"
            if int(splits.get(split, 0)) != self.counts[key]:
                raise self._damaged("sequences.parquet", f"{int(splits.get(split, 0))} {split} sequences but the "
                                    f"manifest's counts.{key} is {self.counts[key]}")
        plays = sequences.groupby("split")["n_plays"].sum()
        for split in SPLITS:
            tokens = self._array(f"{split}_sequences_tokens")
            if len(tokens) != int(plays.get(split, 0)):
                raise self._damaged(f"{split}_sequences_tokens.npy", f"{len(tokens)} tokens but sequences.parquet "
                                    f"counts {int(plays.get(split, 0))} {split} plays")
        # Every other count the files determine (the rest, e.g. tracks_seen, describe the raw input).
        derived = {
            "plays": int(plays.sum()),
            "inset_masked": int(plays.get("train", 0)) - self.counts["train_plays"],
            "songs_with_hard_negative": int(np.unique(self.hard_negative_pairs).size),
        }
        for label in ("artist", "genre"):
            codes = self.songs[f"{label}_code"].to_numpy(np.int64)
            derived[f"{label}s"] = int(codes.max()) + 1 if codes.size else 0
            derived[f"songs_with_{label}"] = int((codes >= 0).sum())
        for key, value in derived.items():
            if key in self.counts and self.counts[key] != value:
                raise self._damaged("manifest.json", f"counts.{key} is {self.counts[key]!r} but the files give {value}")
        return {"path": str(self.path), "fingerprint": self.fingerprint, "files": len(sizes),
                "bytes": int(sum(sizes.values())), "songs": self.n_songs}

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def counts(self) -> dict[str, Any]:
        return dict(self.manifest["counts"])

    @property
    def n_songs(self) -> int:
        return int(self.manifest["counts"]["songs"])

    @cached_property
    def songs(self) -> pd.DataFrame:
        """Song table indexed by song id (row i is song i)."""
        from pandas.api.types import is_integer_dtype  # loaded with the table anyway

        songs = self._table("songs")
        if not songs["track_id"].notna().all() or not songs["track_id"].is_unique:
            raise self._damaged("songs.parquet", "track_id values are missing or repeated; expected one per song")
        for column in ("artist_code", "genre_code", "train_count"):
            if not is_integer_dtype(songs[column].dtype):
                raise self._damaged("songs.parquet", f"column {column!r} has dtype {songs[column].dtype}; expected integers")
        for column in ("artist_code", "genre_code"):
            if len(songs) and int(songs[column].min()) < -1:
                raise self._damaged("songs.parquet", f"column {column!r} holds {int(songs[column].min())}; expected "
                                    "codes >= 0, or -1 for unknown")
        if len(songs) and int(songs["train_count"].min()) < 0:
            raise self._damaged("songs.parquet", "column 'train_count' holds a negative count")
        return songs

    @cached_property
    def sequences(self) -> pd.DataFrame:
        """One row per input sequence: ``sequence_id``, ``split`` (train/validation/test), ``n_plays`` [, name]."""
        sequences = self._table("sequences")
        unknown = ~sequences["split"].isin(["train", *SPLITS])
        if unknown.any():
            raise self._damaged("sequences.parquet", f"split {sequences.loc[unknown, 'split'].iloc[0]!r}; expected "
                                "train, validation or test")
        return sequences

    @cached_property
    def concepts(self) -> pd.DataFrame | None:
        """``song, concept`` rows (tags or categories), or ``None`` when the input had none."""
        if "concepts.parquet" not in self.manifest["files"]:
            return None
        concepts = self._table("concepts")
        self._check_ids("concepts.parquet", concepts["song"].to_numpy(), 0)
        return concepts

    @cached_property
    def train_tokens(self) -> np.ndarray:
        """(n_train_plays,) int32 song ids of the training sequences, concatenated."""
        return self._array("train_tokens")

    @cached_property
    def train_offsets(self) -> np.ndarray:
        """(n_train_sequences + 1,) int64 offsets into :attr:`train_tokens`."""
        return self._array("train_offsets")

    @property
    def artist_codes(self) -> np.ndarray:
        return self.songs["artist_code"].to_numpy(np.int64)

    @property
    def genre_codes(self) -> np.ndarray:
        return self.songs["genre_code"].to_numpy(np.int64)

    @property
    def train_counts(self) -> np.ndarray:
        return self.songs["train_count"].to_numpy(np.int64)

    def pairs(self, split: str, side: str) -> np.ndarray:
        """(n, 2) int32 (query, target) pairs of ``split`` (validation/test), ``side`` in (in-set) or out."""
        _check_split(split)
        if side not in ("in", "out"):
            raise ValueError(f"side must be 'in' or 'out', got {side!r}")
        return self._array(f"{split}_pairs_{side}")

    def heldout_sequences(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Held-out sequences of ``split`` as (tokens, offsets); tokens are -1 outside the vocabulary."""
        _check_split(split)
        return self._array(f"{split}_sequences_tokens"), self._array(f"{split}_sequences_offsets")

    @cached_property
    def hard_negatives(self) -> pd.DataFrame:
        frame = self._table("hard_negatives")
        a, b = frame["a"].to_numpy(), frame["b"].to_numpy()
        self._check_ids("hard_negatives.parquet", np.concatenate([a, b]), 0)
        if not (a < b).all():
            raise self._damaged("hard_negatives.parquet", "a pair with a >= b; expected a < b")
        return frame

    @property
    def hard_negative_pairs(self) -> np.ndarray:
        """(m, 2) int64 unordered hard-negative pairs (a < b)."""
        frame = self.hard_negatives
        return np.stack([frame["a"].to_numpy(np.int64), frame["b"].to_numpy(np.int64)], axis=1)

    def training_sentences(self) -> list[list[str]]:
        """Training sequences as lists of string tokens (the song id), the form gensim expects."""
        words = np.char.mod("%d", np.arange(self.n_songs)).tolist()
        tokens, offsets = self.train_tokens, self.train_offsets
        return [[words[t] for t in tokens[offsets[i] : offsets[i + 1]]] for i in range(len(offsets) - 1)]

    # ------------------------------------------------------------------------------------------
    # checks

    def _damaged(self, name: str, problem: str) -> InputError:
        source = self.manifest.get("source")
        return InputError(f"{self.path / name}: {problem}; {_fix(self.path, source)}")

    def _check_manifest(self) -> None:
        """Structure of the manifest fields every reader relies on, and its fingerprint."""
        manifest = self.manifest

        def need(condition: bool, problem: str) -> None:
            if not condition:
                raise self._damaged("manifest.json", problem)

        counts = manifest.get("counts")
        need(isinstance(counts, dict), "no 'counts' object")
        for key in _COUNT_KEYS:
            need(_is_count(counts.get(key)), f"counts.{key} is {counts.get(key)!r}; expected a non-negative integer")
        need(counts["train_sequences"] + counts["validation_sequences"] + counts["test_sequences"] == counts["sequences"],
             f"counts.train_sequences + validation_sequences + test_sequences != counts.sequences ({counts['sequences']})")
        pairs = counts.get("pairs")
        for split in SPLITS:
            for side in ("in", "out"):
                value = pairs.get(split, {}).get(side) if isinstance(pairs, dict) and isinstance(pairs.get(split), dict) else None
                need(_is_count(value), f"counts.pairs.{split}.{side} is {value!r}; expected a non-negative integer")
        files = manifest.get("files")
        need(isinstance(files, dict) and bool(files), "no 'files' object mapping file names to SHA-256 hashes")
        for name, digest in files.items():
            need(Path(name).name == name and name not in ("", ".", "..", "manifest.json"),
                 f"files lists {name!r}; expected plain file names of this directory")
            need(isinstance(digest, str) and bool(_SHA256.fullmatch(digest)),
                 f"files.{name} is {digest!r}; expected a SHA-256 hex digest")
        required = {f"{name}.npy" for name in _array_specs(counts)} | {f"{t}.parquet" for t in _TABLES if t != "concepts"}
        missing = sorted(required - set(files))
        need(not missing, f"files does not list {', '.join(missing)}")
        summary = manifest.get("hard_negatives")
        need(isinstance(summary, dict) and summary.get("n_pairs") == counts["hard_negative_pairs"]
             and _is_count(summary.get("n_songs")),
             "the 'hard_negatives' summary is missing or disagrees with counts.hard_negative_pairs")
        parameters = manifest.get("parameters")
        need(isinstance(parameters, dict), "no 'parameters' object")
        need(isinstance(manifest.get("fingerprint"), str), "no 'fingerprint'")
        need(manifest["fingerprint"] == content_fingerprint(files, parameters),
             "the fingerprint does not match the file hashes and parameters it is computed from")

    def _check_files(self) -> dict[str, int]:
        """Every listed file exists with the size and shape the manifest implies; returns the sizes."""
        sizes = {}
        for name in self.manifest["files"]:
            file = self.path / name
            if not file.is_file():
                raise self._damaged(name, "missing (or not a regular file) though listed in the manifest")
            sizes[name] = file.stat().st_size
        for name in _array_specs(self.counts):
            header = self._npy_header(name)
            self._check_layout(name, header.dtype, header.shape)
        for table, (columns, count_key) in _TABLES.items():
            if f"{table}.parquet" not in self.manifest["files"]:
                continue
            metadata = self._parquet_metadata(table)
            have = set(metadata.schema.names)
            absent = [c for c in columns if c not in have]
            if absent:
                raise self._damaged(f"{table}.parquet", f"no column {', '.join(map(repr, absent))}")
            if count_key is not None and metadata.num_rows != self.counts[count_key]:
                raise self._damaged(f"{table}.parquet", f"{metadata.num_rows} rows but the manifest's counts.{count_key} "
                                    f"is {self.counts[count_key]}")
        return sizes

    def _check_hashes(self) -> None:
        for name, expected in self.manifest["files"].items():
            try:
                digest = file_sha256(self.path / name)
            except OSError as exc:
                raise self._damaged(name, f"cannot be read ({exc.strerror or exc})") from exc
            if digest != expected:
                raise self._damaged(name, "content differs from the SHA-256 in the manifest (the file was modified)")

    def _npy_header(self, name: str) -> NpyHeader:
        try:
            return read_npy_header(self.path / f"{name}.npy")
        except NpyError as exc:
            raise self._damaged(f"{name}.npy", str(exc)) from None
        except OSError as exc:
            raise self._damaged(f"{name}.npy", f"cannot be read ({exc.strerror or exc})") from None

    def _parquet_metadata(self, table: str) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.read_metadata(self.path / f"{table}.parquet")
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a corrupt footer
            raise self._damaged(f"{table}.parquet", f"not a readable Parquet file ({first_line(exc)})") from None

    def _table(self, table: str) -> pd.DataFrame:
        import pyarrow.parquet as pq

        try:
            arrow = pq.read_table(self.path / f"{table}.parquet")
            arrow.validate(full=True)  # a damaged page can hold non-UTF-8 strings that fail only later
            frame = arrow.to_pandas()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt pages
            raise self._damaged(f"{table}.parquet", f"not a readable Parquet file ({first_line(exc)})") from None
        columns, count_key = _TABLES[table]
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise self._damaged(f"{table}.parquet", f"no column {', '.join(map(repr, absent))}")
        if count_key is not None and len(frame) != self.counts[count_key]:
            raise self._damaged(f"{table}.parquet", f"{len(frame)} rows but the manifest's counts.{count_key} is "
                                f"{self.counts[count_key]}")
        return frame

    @cached_property
    def _loaded(self) -> dict[str, np.ndarray]:
        """Arrays already read and checked, by name."""
        return {}

    def _array(self, name: str) -> np.ndarray:
        if name in self._loaded:
            return self._loaded[name]
        low = _array_specs(self.counts)[name][1]
        try:
            array = read_npy(self.path / f"{name}.npy")
        except NpyError as exc:
            raise self._damaged(f"{name}.npy", str(exc)) from None
        except OSError as exc:
            raise self._damaged(f"{name}.npy", f"cannot be read ({exc.strerror or exc})") from None
        self._check_layout(name, array.dtype, array.shape)
        if low is None:
            n_tokens = self._npy_header(_TOKENS_OF[name]).shape[0]
            if array[0] != 0 or array[-1] != n_tokens or (np.diff(array) < 0).any():
                raise self._damaged(f"{name}.npy", f"offsets must increase from 0 to the {n_tokens} tokens of "
                                    f"{_TOKENS_OF[name]}.npy")
        else:
            self._check_ids(f"{name}.npy", array, low)
        self._loaded[name] = array
        return array

    def _check_layout(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        """An integer array of the shape the manifest's counts imply."""
        spec = _array_specs(self.counts)[name][0]
        if not np.issubdtype(dtype, np.integer):
            raise self._damaged(f"{name}.npy", f"dtype {dtype}; expected integers")
        expected = tuple(shape[i] if n is None and i < len(shape) else n for i, n in enumerate(spec))
        if shape != expected:
            raise self._damaged(f"{name}.npy", f"shape {shape}; the manifest's counts imply "
                                f"{tuple('n' if n is None else n for n in expected)}")

    def _check_ids(self, name: str, ids: np.ndarray, low: int) -> None:
        if ids.size and (int(ids.min()) < low or int(ids.max()) >= self.n_songs):
            raise self._damaged(name, f"song ids span [{int(ids.min())}, {int(ids.max())}]; expected "
                                f"[{low}, {self.n_songs - 1}] (the manifest's counts.songs is {self.n_songs})")


def _fix(path: Path, source: Any) -> str:
    origin = source.get("path") if isinstance(source, dict) and isinstance(source.get("path"), str) else "INPUT"
    return (f"the prepared dataset is damaged or was edited; prepare it again from its input with the same "
            f"options: songhpo data prepare {origin} --out {path} --force")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0



def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
