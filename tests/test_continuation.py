"""Playlist continuation (RecSys Challenge 2018 R-precision and NDCG@k): checked against a brute-force
Python reference, a hand-worked example and properties; then through ``songhpo eval`` and the stored
test snapshot of ``songhpo study evaluate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from gensim.models import Word2Vec
from hypothesis import given, settings
from hypothesis import strategies as st

from hpo.config import METRIC_DIRECTIONS
from hpo.data.dataset import PreparedDataset
from hpo.data.embeddings_io import align_to_dataset, read_embeddings, write_embeddings
from metrics.continuation import playlist_continuation
from storage import results as store
from tests.conftest import SharedStudy, run_cli


def _reference(emb, tokens, offsets, present, seed_size, k):
    """Brute force, one playlist at a time, straight from the rules in metrics.continuation."""
    emb = np.asarray(emb, dtype=np.float64)
    usable = [bool(present[i]) and np.linalg.norm(emb[i]) > 0 for i in range(len(emb))]
    rp, nd, skipped_seed, skipped_targets = [], [], 0, 0
    for j in range(len(offsets) - 1):
        sequence = [int(t) for t in tokens[offsets[j]:offsets[j + 1]]]
        seed = {t for t in sequence[:seed_size] if t >= 0}
        targets = {t for t in sequence[seed_size:] if t >= 0} - seed
        query = [t for t in seed if usable[t]]
        if not query:
            skipped_seed += 1
            continue
        if not targets:
            skipped_targets += 1
            continue
        centroid = np.mean([emb[t] / np.linalg.norm(emb[t]) for t in query], axis=0)
        candidates = [s for s in range(len(emb)) if usable[s] and s not in seed]
        scores = {s: float(emb[s] @ centroid / np.linalg.norm(emb[s])) for s in candidates}
        ranked = sorted(candidates, key=lambda s: -scores[s])
        r = len(targets)
        rp.append(len(set(ranked[:r]) & targets) / r)
        dcg = sum(1 / math.log2(i + 2) for i, s in enumerate(ranked[:k]) if s in targets)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(r, k)))
        nd.append(dcg / idcg)
    return {
        "rprecision": float(np.mean(rp)) if rp else None,
        "ndcg": float(np.mean(nd)) if nd else None,
        "playlists": len(rp),
        "skipped_empty_seed": skipped_seed,
        "skipped_no_targets": skipped_targets,
    }


def _csr(sequences):
    lengths = [len(s) for s in sequences]
    tokens = np.array([t for s in sequences for t in s], dtype=np.int64)
    return tokens, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _assert_same(got, expected):
    assert got["playlists"] == expected["playlists"]
    assert got["skipped_empty_seed"] == expected["skipped_empty_seed"]
    assert got["skipped_no_targets"] == expected["skipped_no_targets"]
    for key in ("rprecision", "ndcg"):
        if expected[key] is None:
            assert got[key] is None
        else:
            assert got[key] == pytest.approx(expected[key], abs=1e-6), key


def _angles(degrees):
    return np.array([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in degrees])


def test_hand_worked_example() -> None:
    # Songs on the unit circle at 0, 10, 25, 90 and 180 degrees.
    emb = _angles([0, 10, 25, 90, 180]) * np.array([[1.0], [2.0], [0.5], [3.0], [1.0]])  # norms do not matter
    tokens, offsets = _csr([
        [0, 4, 3, 3],  # seed {0}; targets {4, 3}; ranking 1, 2, 3, 4 -> hits at ranks 3 and 4
        [1, 0, 2, -1],  # seed {1}; targets {0, 2}; ranking 0, 2, 3, 4 -> hits at ranks 1 and 2
        [-1, 3],  # empty usable seed
        [3, 3],  # no targets
    ])
    out = playlist_continuation(emb, tokens, offsets, seed_size=1, k=100)
    first = (1 / math.log2(4) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert out["rprecision"] == pytest.approx((0.0 + 1.0) / 2)
    assert out["ndcg"] == pytest.approx((first + 1.0) / 2)
    assert (out["playlists"], out["skipped_empty_seed"], out["skipped_no_targets"]) == (2, 1, 1)
    # k = 1: only rank 1 counts, IDCG = 1.
    assert playlist_continuation(emb, tokens, offsets, seed_size=1, k=1)["ndcg"] == pytest.approx(0.5)
    # Song 4 without a vector: still a target (R = 2) but never ranked; song 3 is found at rank 3.
    present = np.array([True, True, True, True, False])
    out = playlist_continuation(emb, tokens, offsets, present=present, seed_size=1)
    assert out["ndcg"] == pytest.approx((0.5 / (1 + 1 / math.log2(3)) + 1.0) / 2)
    assert out["rprecision"] == pytest.approx(0.5)


@pytest.mark.parametrize("seed_size,k,batch_size", [(1, 5, 1), (3, 10, 4), (5, 100, 1024), (2, 3, 7)])
def test_matches_brute_force_on_random_data(seed_size: int, k: int, batch_size: int) -> None:
    rng = np.random.default_rng(seed_size * 100 + k)
    n_songs, d = 70, 6
    emb = rng.standard_normal((n_songs, d))
    emb[5] = 0.0  # a zero row has no direction: not usable
    present = rng.random(n_songs) > 0.15
    sequences = [list(rng.integers(-1, n_songs, size=int(rng.integers(1, 25)))) for _ in range(60)]
    tokens, offsets = _csr(sequences)
    got = playlist_continuation(emb, tokens, offsets, present=present, seed_size=seed_size, k=k,
                                batch_size=batch_size)
    expected = _reference(emb, tokens, offsets, present, seed_size, k)
    assert expected["playlists"] > 20
    _assert_same(got, expected)
    # present=None means every non-zero row.
    _assert_same(playlist_continuation(emb, tokens, offsets, seed_size=seed_size, k=k),
                 _reference(emb, tokens, offsets, np.ones(n_songs, bool), seed_size, k))


def test_exact_ties_are_ranked_by_song_id_as_the_rules_say() -> None:
    # Bit-identical rows tie exactly; the cut at k and R falls inside the tied block, so only the tie rule
    # (lower song id first, the reference's stable sort) decides which targets count.
    rng = np.random.default_rng(11)
    emb = rng.standard_normal((50, 4))
    emb[[3, 9, 14, 27, 41, 44]] = emb[20]
    sequences = [[20, 44, 9, 41], [20, 27, 3], [3, 44, 14, 27, 9], [1, 2, 41, 44]]
    tokens, offsets = _csr(sequences)
    for seed_size, k in [(1, 2), (1, 3), (2, 1)]:
        _assert_same(playlist_continuation(emb, tokens, offsets, seed_size=seed_size, k=k),
                     _reference(emb, tokens, offsets, np.ones(50, bool), seed_size, k))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_songs=st.integers(2, 40), n_seq=st.integers(0, 15),
       seed_size=st.integers(1, 6), k=st.integers(1, 50))
def test_scores_are_in_unit_interval(seed: int, n_songs: int, n_seq: int, seed_size: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n_songs, 3))
    tokens, offsets = _csr([list(rng.integers(-1, n_songs, size=int(rng.integers(0, 12)))) for _ in range(n_seq)])
    out = playlist_continuation(emb, tokens, offsets, seed_size=seed_size, k=k)
    assert out["playlists"] + out["skipped_empty_seed"] + out["skipped_no_targets"] == n_seq
    if out["playlists"]:
        assert 0.0 <= out["rprecision"] <= 1.0 and 0.0 <= out["ndcg"] <= 1.0 + 1e-12
    else:
        assert out["rprecision"] is None and out["ndcg"] is None


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_clusters=st.integers(2, 8), size=st.integers(3, 12),
       seed_size=st.integers(1, 2))
def test_clustered_embedding_continues_playlists_perfectly(seed: int, n_clusters: int, size: int,
                                                          seed_size: int) -> None:
    """Playlists are whole clusters and songs of a cluster share a direction: every target ranks first."""
    rng = np.random.default_rng(seed)
    directions = np.eye(n_clusters)
    emb = np.repeat(directions, size, axis=0) + 0.01 * rng.standard_normal((n_clusters * size, n_clusters))
    sequences = [list(rng.permutation(np.arange(c * size, (c + 1) * size))) for c in range(n_clusters)]
    out = playlist_continuation(emb, *_csr(sequences), seed_size=seed_size, k=100)
    assert out["playlists"] == n_clusters
    assert out["rprecision"] == pytest.approx(1.0) and out["ndcg"] == pytest.approx(1.0)
    # A random embedding of the same playlists does worse.
    noise = playlist_continuation(rng.standard_normal(emb.shape), *_csr(sequences), seed_size=seed_size, k=100)
    assert noise["ndcg"] <= out["ndcg"]


@pytest.mark.parametrize("kwargs,message", [
    ({"embeddings": np.ones(4)}, "2-D"),
    ({"embeddings": np.full((4, 2), np.nan)}, "non-finite"),
    ({"tokens": np.array([0, 4])}, "tokens must be song ids in [0, 4)"),
    ({"tokens": np.array([0, -2])}, "tokens must be song ids"),
    ({"tokens": np.array([0.0, 1.0])}, "tokens must contain integers"),
    ({"offsets": np.array([0, 3])}, "offsets must be non-decreasing"),
    ({"offsets": np.array([1, 2])}, "offsets must be non-decreasing"),
    ({"present": np.ones(3, bool)}, "present must have shape (4,)"),
    ({"seed_size": 0}, "seed_size must be >= 1"),
    ({"k": 0}, "k must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
])
def test_validation_errors(kwargs: dict, message: str) -> None:
    args = {"embeddings": np.eye(4), "tokens": np.array([0, 1]), "offsets": np.array([0, 2]), **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        playlist_continuation(args.pop("embeddings"), args.pop("tokens"), args.pop("offsets"), **args)


def test_never_an_objective() -> None:
    assert not any(key.startswith("continuation") for key in METRIC_DIRECTIONS)


# -- songhpo eval and the stored test snapshot -------------------------------------------------------


def test_eval_json_has_continuation_equal_to_direct_call(prepared_synth: Path, tmp_path: Path) -> None:
    dataset = PreparedDataset.load(prepared_synth)
    model = Word2Vec(dataset.training_sentences(), vector_size=16, window=3, sg=1, negative=5, min_count=1,
                     seed=5, workers=1, epochs=2)
    track_ids = dataset.songs["track_id"].tolist()
    keys = [track_ids[int(word)] for word in model.wv.index_to_key]
    npy, _ = write_embeddings(tmp_path / "vectors.npy", keys[:-10], model.wv.vectors[:-10])  # 10 songs missing
    result = run_cli("-q", "eval", "--prepared", str(prepared_synth), "--embeddings", str(npy), "--split", "test",
                     "--k", "30", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    matrix, present, _ = align_to_dataset(read_embeddings(npy), dataset.songs["track_id"])
    tokens, offsets = dataset.heldout_sequences("test")
    direct = playlist_continuation(matrix, tokens, offsets, present=present, seed_size=5, k=30)
    assert direct["playlists"] > 50
    assert out["continuation_playlists"] == direct["playlists"]
    assert out["continuation_rprecision"] == pytest.approx(direct["rprecision"], rel=1e-9)
    assert out["continuation_ndcg"] == pytest.approx(direct["ndcg"], rel=1e-9)
    assert list(out)[list(out).index("songs_total") + 1: list(out).index("songs_total") + 4] == [
        "continuation_rprecision", "continuation_ndcg", "continuation_playlists"]
    table = run_cli("-q", "eval", "--prepared", str(prepared_synth), "--embeddings", str(npy))
    assert table.returncode == 0, table.stderr
    assert "continuation_ndcg" in table.stdout and "continuation_rprecision" in table.stdout


def test_study_evaluate_stores_continuation_in_the_snapshot(evaluated_study: SharedStudy) -> None:
    snapshot = store.load_latest_snapshot(evaluated_study.storage, "tiny")
    assert snapshot is not None and snapshot["members"] and snapshot["seeds"] == 2
    for member in snapshot["members"]:
        test = member["test"]
        assert test["continuation_ndcg"]["n"] == 2 and 0.0 < test["continuation_ndcg"]["mean"] <= 1.0
        assert 0.0 <= test["continuation_rprecision"]["mean"] <= 1.0
        assert test["continuation_playlists"]["mean"] > 50
        # Never a validation objective: trials carry no continuation attribute.
        assert "continuation_ndcg" not in member["validation"]
