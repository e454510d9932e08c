"""``songhpo eval`` in a subprocess: the JSON equals a direct ``metrics.evaluate.evaluate`` call on
the aligned matrix, every format gives the same metrics, and bad inputs are one-line errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors, Word2Vec

from hpo.data.dataset import PreparedDataset
from hpo.data.embeddings_io import write_embeddings
from metrics.evaluate import METRIC_KEYS, EvaluationData, EvaluationSettings, evaluate
from tests.conftest import assert_one_line_error, run_cli

UNKNOWN_KEYS = ["not-a-song-1", "not-a-song-2", "not-a-song-3"]
N_DROPPED = 7


@dataclass(frozen=True)
class Trained:
    prepared: Path
    npy: Path
    text: Path
    keys: list[str]
    vectors: np.ndarray
    dropped: list[str]


@pytest.fixture(scope="module")
def trained(prepared_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A quick deterministic skip-gram model, keyed by track id, minus a few songs plus unknown keys."""
    dataset = PreparedDataset.load(prepared_synth)
    model = Word2Vec(
        dataset.training_sentences(), vector_size=16, window=3, sg=1, negative=5, min_count=1,
        seed=11, workers=1, epochs=2,
    )
    track_ids = dataset.songs["track_id"].tolist()
    keys = [track_ids[int(word)] for word in model.wv.index_to_key]
    vectors = model.wv.vectors.copy()
    # Drop songs that are queries of validation pairs, so that missing songs visibly cost hits.
    queries = np.unique(dataset.pairs("validation", "out")[:, 0])[:N_DROPPED]
    dropped = [track_ids[int(q)] for q in queries]
    keep = [i for i, key in enumerate(keys) if key not in set(dropped)]
    rng = np.random.default_rng(0)
    keys = [keys[i] for i in keep] + UNKNOWN_KEYS
    vectors = np.vstack([vectors[keep], rng.standard_normal((len(UNKNOWN_KEYS), 16)).astype(np.float32)])
    out = tmp_path_factory.mktemp("embeddings")
    npy, _ = write_embeddings(out / "vectors.npy", keys, vectors)
    text = out / "vectors.txt"
    kv = KeyedVectors(16)
    kv.add_vectors(keys, vectors)
    kv.save_word2vec_format(str(text), binary=False)
    return Trained(prepared_synth, npy, text, keys, vectors, dropped)


def _eval_json(trained: Trained, *args: str) -> dict:
    result = run_cli("-q", "eval", "--prepared", str(trained.prepared), *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_equals_direct_evaluate_on_the_aligned_matrix(trained: Trained) -> None:
    out = _eval_json(trained, "--embeddings", str(trained.npy), "--k", "20", "--seed", "3")

    # The reference, built here independently of hpo.data.embeddings_io / hpo.evaluation.
    dataset = PreparedDataset.load(trained.prepared)
    row_of = {key: i for i, key in enumerate(trained.keys)}
    track_ids = dataset.songs["track_id"].tolist()
    matrix = np.zeros((len(track_ids), 16), dtype=np.float32)
    present = np.zeros(len(track_ids), dtype=bool)
    for song, track in enumerate(track_ids):
        if track in row_of:
            matrix[song], present[song] = trained.vectors[row_of[track]], True
    data = EvaluationData(
        pairs_in=np.load(trained.prepared / "validation_pairs_in.npy"),
        pairs_out=np.load(trained.prepared / "validation_pairs_out.npy"),
        hard_negative_pairs=dataset.hard_negative_pairs,
        artist_labels=dataset.songs["artist_code"].to_numpy(),
        genre_labels=dataset.songs["genre_code"].to_numpy(),
        train_counts=dataset.songs["train_count"].to_numpy(),
    )
    expected = evaluate(matrix, data, EvaluationSettings(k=20, seed=3), present=present).to_dict()

    assert {key: out[key] for key in METRIC_KEYS} == expected["metrics"]
    assert out["buckets"] == expected["buckets"]
    assert set(out["timings"]) == set(expected["timings"])
    n_missing = sum(track not in row_of for track in track_ids)
    assert n_missing >= N_DROPPED
    assert out["alignment"] == {
        "file_keys": len(trained.keys),
        "matched": len(track_ids) - n_missing,
        "ignored_keys": len(UNKNOWN_KEYS),
        "missing_songs": n_missing,
    }
    assert out["songs_present"] == len(track_ids) - n_missing and out["songs_total"] == len(track_ids)
    assert out["split"] == "validation" and out["settings"]["k"] == 20 and out["settings"]["seed"] == 3
    assert out["dataset"]["fingerprint"] == dataset.fingerprint
    # The synthetic data has structure a trained model finds: far better than chance.
    assert out["hitrate_out"] > 20 / len(track_ids) * 3


def test_word2vec_text_gives_the_same_metrics_and_test_split_differs(trained: Trained) -> None:
    from_npy = _eval_json(trained, "--embeddings", str(trained.npy))
    from_text = _eval_json(trained, "--embeddings", str(trained.text), "--format", "word2vec")
    assert {k: from_text[k] for k in METRIC_KEYS} == {k: from_npy[k] for k in METRIC_KEYS}
    assert from_text["buckets"] == from_npy["buckets"] and from_text["alignment"] == from_npy["alignment"]
    on_test = _eval_json(trained, "--embeddings", str(trained.npy), "--split", "test")
    dataset = PreparedDataset.load(trained.prepared)
    assert on_test["pairs_out"] == dataset.counts["pairs"]["test"]["out"] != from_npy["pairs_out"]
    # Split-independent metrics stay put.
    assert on_test["hardneg"] == from_npy["hardneg"] and on_test["ch_genre"] == from_npy["ch_genre"]


def test_table_output_shows_every_metric_and_the_buckets(trained: Trained) -> None:
    result = run_cli("eval", "--prepared", str(trained.prepared), "--embeddings", str(trained.npy))
    assert result.returncode == 0, result.stderr
    for name in (*METRIC_KEYS, "missing_songs", "ignored_keys", "ndcg_by_target", "ndcg_by_query"):
        assert name in result.stdout, name
    assert result.stdout.count("\n") > len(METRIC_KEYS) + 10 + 5
    # Logs (stderr) say what was ignored and what counts as a miss.
    assert f"{len(UNKNOWN_KEYS)} keys of the embedding file are not dataset songs" in result.stderr
    assert "count as misses" in result.stderr and "faiss" not in result.stderr
    help_text = run_cli("eval", "--help")
    assert help_text.returncode == 0 and "usage: songhpo eval" in help_text.stdout
    assert "not loaded for safety" in help_text.stdout


def _bad_vocab(trained: Trained, tmp_path: Path) -> list[str]:
    np.save(tmp_path / "short.npy", trained.vectors)
    (tmp_path / "short.vocab.txt").write_text("".join(f"{k}\n" for k in trained.keys[:-1]))
    return ["--embeddings", str(tmp_path / "short.npy")]


def _pickle(trained: Trained, tmp_path: Path) -> list[str]:
    path = tmp_path / "w2v.model"
    path.write_bytes(b"\x80\x04.")  # never opened anyway
    return ["--embeddings", str(path)]


def _no_matching_key(trained: Trained, tmp_path: Path) -> list[str]:
    write_embeddings(tmp_path / "ids.npy", [str(i) for i in range(5)], np.ones((5, 3)))
    return ["--embeddings", str(tmp_path / "ids.npy")]


def _huge_header(trained: Trained, tmp_path: Path) -> list[str]:
    path = tmp_path / "huge.bin"
    path.write_bytes(b"1000000000000 64\n" + b"k " + bytes(256))  # claims 10^12 vectors, holds one
    return ["--embeddings", str(path)]


def _huge_npy(trained: Trained, tmp_path: Path) -> list[str]:
    path = tmp_path / "huge.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10**12, 64)})
    (tmp_path / "huge.vocab.txt").write_text("a\n")
    return ["--embeddings", str(path)]


BAD = {
    "binary header claims 10^12 vectors": (_huge_header, ["huge.bin", "record 2 of 1000000000000", "end of file"]),
    "text header claims 10^12 dimensions": (
        lambda t, p: ((p / "wide.txt").write_text("1 1000000000000\nk 0.5\n"), ["--embeddings", str(p / "wide.txt")])[1],
        ["wide.txt", "line 2", "expected 1000000000000"]),
    ".npy header claims 10^12 rows": (_huge_npy, ["huge.npy", "is truncated", "(1000000000000, 64)"]),
    "missing embeddings": (lambda t, p: ["--embeddings", str(p / "nope.npy")], ["nope.npy", "no such file"]),
    "pickle": (_pickle, ["w2v.model", "not loaded for safety"]),
    "vocab mismatch": (_bad_vocab, ["short.vocab.txt", "keys but", "rows"]),
    "no matching key": (_no_matching_key, ["ids.npy", "none of its 5 keys", "track_id"]),
    "split": (lambda t, p: ["--embeddings", str(t.npy), "--split", "nonsense"], ["--split 'nonsense'", "validation, test"]),
    "format": (lambda t, p: ["--embeddings", str(t.npy), "--format", "glove"], ["--format 'glove'"]),
    "k": (lambda t, p: ["--embeddings", str(t.npy), "--k", "0"], ["--k 0"]),
    "not prepared": (lambda t, p: ["--embeddings", str(t.npy), "--prepared", str(p)], ["not a prepared dataset"]),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_one_line_exit_2(trained: Trained, tmp_path: Path, case: str) -> None:
    build, fragments = BAD[case]
    args = build(trained, tmp_path)
    prepared = [] if "--prepared" in args else ["--prepared", str(trained.prepared)]
    assert_one_line_error(run_cli("-q", "eval", *prepared, *args), *fragments)
