"""Dataset preparation: integer coding, the SPEC §3 splits, hard negatives, and an atomic write.

The output directory (see :mod:`hpo.data.dataset` for the reader) holds columnar files and a
``manifest.json`` with counts, parameters, what was dropped and a content fingerprint. Preparing the
same inputs with the same parameters twice gives byte-identical files and the same fingerprint.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpo import __version__
from hpo._atomic import atomic_directory, check_out
from hpo._progress import steps
from hpo.data.dataset import FORMAT_NAME, FORMAT_VERSION, SPLITS, content_fingerprint, file_sha256
from hpo.data.readers import RawDataset
from metrics.hard_negatives import find_hard_negatives
from storage.errors import InputError

_log = logging.getLogger(__name__)

HARDNEG_SCOPES = ("bigram", "sequence")
HARDNEG_RULES = ("pvalue", "paper")


@dataclass(frozen=True)
class PrepareParams:
    """Parameters of :func:`prepare_dataset`; all of them enter the fingerprint.

    ``val``/``test`` are fractions of whole sequences held out (out-of-set), ``seed`` drives every random
    choice. The hard-negative fields follow SPEC §4 (``min_cooc=None`` means the default rule).
    """

    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    hardneg_scope: str = "bigram"
    hardneg_rule: str = "pvalue"
    min_cooc: int | None = None
    critical_value: float = 3.841

    def validate(self) -> None:
        for name in ("val", "test"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise InputError(f"--{name} {value}: expected a fraction in [0, 1)")
        if self.val + self.test >= 1.0:
            raise InputError(
                f"--val {self.val} + --test {self.test} = {self.val + self.test:g}: must be below 1 so that "
                "training sequences remain"
            )
        if self.val + self.test == 0.0:
            raise InputError("--val and --test are both 0: at least one evaluation split is needed")
        if self.hardneg_scope not in HARDNEG_SCOPES:
            raise InputError(f"--hardneg-scope {self.hardneg_scope!r}: expected one of {', '.join(HARDNEG_SCOPES)}")
        if self.hardneg_rule not in HARDNEG_RULES:
            raise InputError(f"--hardneg-rule {self.hardneg_rule!r}: expected one of {', '.join(HARDNEG_RULES)}")
        if self.min_cooc is not None and self.min_cooc < 1:
            raise InputError(f"--min-cooc {self.min_cooc}: expected an integer >= 1")
        if not math.isfinite(self.critical_value) or self.critical_value <= 0:
            raise InputError(f"--critical-value {self.critical_value}: expected a positive finite chi2 threshold")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed}: expected a non-negative integer")


def prepare_dataset(
    raw: RawDataset, out: str | Path, params: PrepareParams = PrepareParams(), *, overwrite: bool = False
) -> dict[str, Any]:
    """Split, code and write ``raw`` to directory ``out`` atomically; return the manifest."""
    params.validate()
    out = Path(out)
    check_out(out, force=overwrite, directory=True)
    progress = steps("prepare", ["coding", "splitting", "pairs", "hard negatives", "writing"])
    rng = np.random.default_rng(params.seed)

    next(progress)
    plays = raw.plays.sort_values(["sequence_id", "position"], kind="stable")
    seq_codes, _ = pd.factorize(plays["sequence_id"], sort=True)
    track_codes, all_tracks = pd.factorize(plays["track_id"], sort=True)
    tokens = track_codes.astype(np.int64)
    lengths = np.bincount(seq_codes)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n_seq = len(lengths)

    next(progress)
    perm = rng.permutation(n_seq)
    n_val, n_test = int(round(params.val * n_seq)), int(round(params.test * n_seq))
    split_of_seq = np.zeros(n_seq, dtype=np.int8)  # 0 train, 1 validation, 2 test
    split_of_seq[perm[:n_val]] = 1
    split_of_seq[perm[n_val : n_val + n_test]] = 2
    if not (split_of_seq == 0).any():
        raise InputError(f"{raw.source}: only {n_seq} sequences; too few to leave any for training")

    # In-set: the last play of every training sequence of length >= 3 is masked from training.
    is_train_seq = split_of_seq == 0
    masked_seq = is_train_seq & (lengths >= 3)
    last = offsets[1:] - 1
    inset_pairs_all = np.stack([tokens[last[masked_seq] - 1], tokens[last[masked_seq]]], axis=1)
    keep_token = np.repeat(is_train_seq, lengths)
    keep_token[last[masked_seq]] = False
    train_tokens_all = tokens[keep_token]
    train_lengths = lengths[is_train_seq] - masked_seq[is_train_seq]
    train_offsets = np.concatenate([[0], np.cumsum(train_lengths)]).astype(np.int64)

    # The song vocabulary is what training sees, ordered by track id.
    vocab_tracks = np.unique(train_tokens_all)
    to_song = np.full(len(all_tracks), -1, dtype=np.int64)
    to_song[vocab_tracks] = np.arange(len(vocab_tracks))
    n_songs = len(vocab_tracks)
    train_tokens = to_song[train_tokens_all]
    train_counts = np.bincount(train_tokens, minlength=n_songs).astype(np.int64)

    next(progress)
    dropped: dict[str, Any] = dict(raw.dropped)
    pairs: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    heldout: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    to_validation = rng.random(len(inset_pairs_all)) < params.val / (params.val + params.test)
    for code, split in ((1, "validation"), (2, "test")):
        in_split = split_of_seq == code
        seq_tokens = to_song[tokens[np.repeat(in_split, lengths)]]
        seq_offsets = np.concatenate([[0], np.cumsum(lengths[in_split])]).astype(np.int64)
        heldout[split] = (seq_tokens, seq_offsets)
        out_pairs, drops_out = _adjacent_pairs(seq_tokens, seq_offsets)
        chosen = to_validation if split == "validation" else ~to_validation
        in_pairs, drops_in = _filter_pairs(to_song[inset_pairs_all[chosen]])
        pairs[split] = {"in": in_pairs, "out": out_pairs}
        dropped[f"{split}_pairs"] = {"out": drops_out, "in": drops_in}

    next(progress)
    hard = find_hard_negatives(
        train_tokens,
        train_offsets,
        n_songs,
        scope=params.hardneg_scope,
        rule=params.hardneg_rule,
        min_cooc=params.min_cooc,
        critical_value=params.critical_value,
    )

    next(progress)
    songs = _song_table(raw, all_tracks, vocab_tracks, train_counts)
    sequences = pd.DataFrame(
        {
            "sequence_id": pd.array(pd.unique(plays["sequence_id"]), dtype="string"),
            "split": pd.Categorical.from_codes(split_of_seq, categories=["train", *SPLITS]).astype("string"),
            "n_plays": lengths,
        }
    )
    if raw.sequence_names is not None:
        # e.g. MPD playlist titles; NA for a sequence the reader has no name for.
        names = raw.sequence_names.drop_duplicates("sequence_id").set_index("sequence_id")["name"]
        sequences["name"] = pd.array(names.reindex(sequences["sequence_id"]).to_numpy(), dtype="string")
    counts = {
        "sequences": int(n_seq),
        "train_sequences": int(is_train_seq.sum()),
        "validation_sequences": int((split_of_seq == 1).sum()),
        "test_sequences": int((split_of_seq == 2).sum()),
        "plays": int(len(tokens)),
        "train_plays": int(len(train_tokens)),
        "tracks_seen": int(len(all_tracks)),
        "songs": int(n_songs),
        "artists": int(songs["artist_code"].max() + 1),
        "genres": int(songs["genre_code"].max() + 1),
        "songs_with_artist": int((songs["artist_code"] >= 0).sum()),
        "songs_with_genre": int((songs["genre_code"] >= 0).sum()),
        "inset_masked": int(masked_seq.sum()),
        "pairs": {s: {"in": int(len(pairs[s]["in"])), "out": int(len(pairs[s]["out"]))} for s in SPLITS},
        "hard_negative_pairs": int(hard.n_pairs),
        "songs_with_hard_negative": int(len(hard.songs())),
    }
    with atomic_directory(out, overwrite=overwrite, inputs=[raw.source, *raw.input_files]) as tmp:
        np.save(tmp / "train_tokens.npy", train_tokens.astype(np.int32))
        np.save(tmp / "train_offsets.npy", train_offsets)
        for split in SPLITS:
            for side in ("in", "out"):
                np.save(tmp / f"{split}_pairs_{side}.npy", pairs[split][side].astype(np.int32))
            np.save(tmp / f"{split}_sequences_tokens.npy", heldout[split][0].astype(np.int32))
            np.save(tmp / f"{split}_sequences_offsets.npy", heldout[split][1])
        _write_parquet(songs, tmp / "songs.parquet")
        _write_parquet(sequences, tmp / "sequences.parquet")
        _write_parquet(
            pd.DataFrame(
                {
                    "a": hard.pairs[:, 0].astype(np.int32),
                    "b": hard.pairs[:, 1].astype(np.int32),
                    "cooc": hard.cooc,
                    "chi2": hard.chi2,
                    "expected": hard.expected,
                }
            ),
            tmp / "hard_negatives.parquet",
        )
        if raw.concepts is not None:
            concepts = _concept_table(raw.concepts, all_tracks, to_song)
            _write_parquet(concepts, tmp / "concepts.parquet")
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
        parameters = asdict(params)
        fingerprint = content_fingerprint(files, parameters)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "songhpo_version": __version__,
            "fingerprint": fingerprint,
            "source": {
                "path": str(Path(raw.source).resolve()),
                "format": raw.format,
                "input_files": [{"name": p.name, "sha256": file_sha256(p)} for p in raw.input_files],
            },
            "parameters": parameters,
            "counts": counts,
            "dropped": dropped,
            "hard_negatives": hard.summary(),
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    next(progress, None)
    _log.info("prepared %s: %d songs, fingerprint %s", out, n_songs, fingerprint[:12])
    return manifest


def _adjacent_pairs(tokens: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Ordered adjacent pairs inside each sequence, with out-of-vocabulary and self pairs dropped."""
    starts = np.zeros(len(tokens), dtype=bool)
    starts[offsets[:-1][np.diff(offsets) > 0]] = True
    # A pair (t, t+1) is valid unless t+1 starts a new sequence.
    valid = ~starts[1:]
    candidates = np.stack([tokens[:-1][valid], tokens[1:][valid]], axis=1) if len(tokens) else np.zeros((0, 2), np.int64)
    return _filter_pairs(candidates)


def _filter_pairs(candidates: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    candidates = candidates.reshape(-1, 2)
    oov = (candidates < 0).any(axis=1)
    same = ~oov & (candidates[:, 0] == candidates[:, 1])
    kept = candidates[~oov & ~same]
    return kept, {"candidates": int(len(candidates)), "out_of_vocabulary": int(oov.sum()), "self": int(same.sum())}


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    codes, names = pd.factorize(values, sort=True, use_na_sentinel=True)
    return codes.astype(np.int32), [str(n) for n in names]


def _song_table(raw: RawDataset, all_tracks: pd.Index, vocab_tracks: np.ndarray, train_counts: np.ndarray) -> pd.DataFrame:
    track_ids = pd.Series(np.asarray(all_tracks)[vocab_tracks], dtype="string")
    meta = raw.tracks.drop_duplicates("track_id").set_index("track_id")
    table = pd.DataFrame({"track_id": track_ids})
    for column in ("artist", "genre", "title"):
        values = meta[column] if column in meta.columns else pd.Series(dtype="string")
        table[column] = pd.array(values.reindex(track_ids).to_numpy(), dtype="string")
    table["artist_code"], _ = _codes(table["artist"])
    table["genre_code"], _ = _codes(table["genre"])
    table["train_count"] = train_counts
    return table


def _concept_table(concepts: pd.DataFrame, all_tracks: pd.Index, to_song: np.ndarray) -> pd.DataFrame:
    position = pd.Index(all_tracks).get_indexer(concepts["track_id"])
    song = np.where(position >= 0, to_song[np.maximum(position, 0)], -1)
    table = pd.DataFrame({"song": song.astype(np.int32), "concept": concepts["concept"].astype("string")})
    table = table[table["song"] >= 0].drop_duplicates().sort_values(["concept", "song"], kind="stable")
    return table.reset_index(drop=True)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    # Statistics and pandas metadata are deterministic; compression fixed so bytes do not depend on defaults.
    frame.to_parquet(path, index=False, compression="zstd")
