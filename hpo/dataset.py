"""The prepared dataset: the one on-disk form every trial and every worker reads.

Directory layout (written by :func:`hpo.prepare.prepare_dataset`)::

    manifest.json                      counts, parameters, dropped items, fingerprint, file hashes
    songs.parquet                      one row per song id 0..n_songs-1: track_id, artist, genre, title,
                                       artist_code, genre_code (-1 = unknown), train_count
    sequences.parquet                  sequence_id, split (train/validation/test), n_plays
    train_tokens.npy / _offsets.npy    training sequences (in-set targets masked), CSR-style, int32/int64
    {validation,test}_pairs_{in,out}.npy   (n, 2) int32 (query, target) evaluation pairs
    {validation,test}_sequences_*.npy  held-out sequences, song ids with -1 for songs outside the vocabulary
    hard_negatives.parquet             a < b, cooc, chi2, expected
    concepts.parquet                   optional: song, concept (tags / categories)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpo.errors import InputError

FORMAT_NAME = "songhpo-prepared"
FORMAT_VERSION = 1
SPLITS = ("validation", "test")


@dataclass(frozen=True)
class PreparedDataset:
    """Read-only view of a prepared dataset directory; arrays load lazily and are cached."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = False) -> "PreparedDataset":
        """Open ``path``; with ``verify`` every file's SHA-256 is checked against the manifest."""
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise InputError(f"{path}: not a prepared dataset (no manifest.json); run 'songhpo data prepare' first")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{manifest_path}: unreadable manifest ({exc})") from exc
        if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{manifest_path}: format {manifest.get('format')!r} v{manifest.get('format_version')} is not "
                f"{FORMAT_NAME} v{FORMAT_VERSION}; prepare the dataset again with this version"
            )
        for name in manifest.get("files", {}):
            if not (path / name).is_file():
                raise InputError(f"{path / name}: missing file listed in the manifest; prepare the dataset again")
        dataset = cls(path, manifest)
        if verify:
            dataset.verify()
        return dataset

    def verify(self) -> None:
        """Check every file against the SHA-256 recorded in the manifest."""
        for name, expected in self.manifest["files"].items():
            digest = hashlib.sha256((self.path / name).read_bytes()).hexdigest()
            if digest != expected:
                raise InputError(f"{self.path / name}: content differs from the manifest; the dataset was modified")

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
        return pd.read_parquet(self.path / "songs.parquet")

    def _array(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy", allow_pickle=False)

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
        return pd.read_parquet(self.path / "hard_negatives.parquet")

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


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
