"""Tests for metrics.hard_negatives (SPEC §4, "Hard negatives")."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency

from metrics.hard_negatives import (
    HardNegatives,
    bigram_cooccurrence,
    chi2_statistics,
    default_min_cooc,
    find_hard_negatives,
    sequence_cooccurrence,
)
from tests.conftest import shared_dataset

#: critical value so large that the "pvalue" rule keeps every candidate pair,
#: which exposes the statistics of all candidates through the public API.
_KEEP_ALL = 1e300


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _read_yes_playlists(path: Path) -> list[list[int]]:
    """Independent parse of a YES train.txt: line 1 ids, line 2 counts, then playlists."""
    lines = path.read_text().split("\n")[2:]
    return [[int(x) for x in line.split()] for line in lines if line.strip()]


def _to_csr(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
        if seqs
        else np.zeros(0, dtype=np.int64)
    )
    return tokens, offsets


def _bigram_counter(seqs: list[list[int]]) -> Counter:
    """Brute-force unordered bigram counts keyed by (min, max)."""
    counts: Counter = Counter()
    for s in seqs:
        for x, y in zip(s[:-1], s[1:]):
            if x != y:
                counts[(min(x, y), max(x, y))] += 1
    return counts


def _sequence_counter(seqs: list[list[int]]) -> tuple[Counter, Counter, int]:
    """Brute-force sequence co-occurrence over sequences with >= 2 distinct songs."""
    pairs: Counter = Counter()
    per_song: Counter = Counter()
    n_eligible = 0
    for s in seqs:
        distinct = sorted(set(s))
        if len(distinct) < 2:
            continue
        n_eligible += 1
        per_song.update(distinct)
        pairs.update(itertools.combinations(distinct, 2))
    return pairs, per_song, n_eligible


def _upper_dict(mat: sp.csr_matrix) -> dict[tuple[int, int], int]:
    coo = sp.triu(mat, k=1).tocoo()
    return {(int(r), int(c)): int(v) for r, c, v in zip(coo.row, coo.col, coo.data)}


def _assert_symmetric_zero_diag(mat: sp.csr_matrix, n: int) -> None:
    assert sp.issparse(mat) and mat.format == "csr"
    assert mat.shape == (n, n)
    assert mat.dtype == np.int64
    assert (mat != mat.T).nnz == 0
    assert not np.any(mat.diagonal())


def _scipy_table(o11: int, ra: int, rb: int, total: int) -> np.ndarray:
    return np.array([[o11, ra - o11], [rb - o11, total - ra - rb + o11]], dtype=np.int64)


# --------------------------------------------------------------------------- #
# real data: yes_big
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def yes_big() -> dict:
    seqs = _read_yes_playlists(shared_dataset("yes", "yes_big") / "train.txt")
    tokens, offsets = _to_csr(seqs)
    return {
        "seqs": seqs,
        "tokens": tokens,
        "offsets": offsets,
        "n_songs": int(tokens.max()) + 1,
    }


def test_yes_big_parse_sanity(yes_big):
    assert len(yes_big["seqs"]) == 18_139
    assert yes_big["tokens"].size == 190_649
    assert yes_big["n_songs"] == 9_775


def test_bigram_matrix_matches_counter_on_yes_big(yes_big):
    mat = bigram_cooccurrence(yes_big["tokens"], yes_big["offsets"], yes_big["n_songs"])
    _assert_symmetric_zero_diag(mat, yes_big["n_songs"])
    expected = _bigram_counter(yes_big["seqs"])
    assert _upper_dict(mat) == dict(expected)
    assert int(mat.sum()) == 2 * sum(expected.values())


def test_sequence_matrix_matches_sets_on_yes_big_subset(yes_big):
    rng = np.random.default_rng(7)
    idx = np.sort(rng.choice(len(yes_big["seqs"]), size=3000, replace=False))
    seqs = [yes_big["seqs"][i] for i in idx]
    tokens, offsets = _to_csr(seqs)
    mat, per_song, n_eligible = sequence_cooccurrence(tokens, offsets, yes_big["n_songs"])
    _assert_symmetric_zero_diag(mat, yes_big["n_songs"])
    pairs, songs, n_expected = _sequence_counter(seqs)
    assert _upper_dict(mat) == dict(pairs)
    assert n_eligible == n_expected
    assert per_song.dtype == np.int64 and per_song.shape == (yes_big["n_songs"],)
    ref = np.zeros(yes_big["n_songs"], dtype=np.int64)
    ref[list(songs)] = list(songs.values())
    np.testing.assert_array_equal(per_song, ref)


@pytest.mark.parametrize(
    ("scope", "n_pairs", "n_songs"),
    [("bigram", 156, 87), ("sequence", 1_184, 481)],
)
def test_spec_reference_counts(yes_big, scope, n_pairs, n_songs):
    """SPEC §4: all yes_big playlists, min_cooc 2, default p-value rule."""
    result = find_hard_negatives(
        yes_big["tokens"], yes_big["offsets"], yes_big["n_songs"], scope=scope, min_cooc=2
    )
    assert result.n_pairs == n_pairs
    assert result.songs().size == n_songs
    summary = result.summary()
    assert summary == {
        "rule": "pvalue",
        "scope": scope,
        "min_cooc": 2,
        "critical_value": 3.841,
        "n_candidate_pairs": result.n_candidate_pairs,
        "n_pairs": n_pairs,
        "n_songs": n_songs,
    }
    json.dumps(summary)


def test_sequence_scope_population_is_multi_song_sequences(yes_big):
    """The SPEC's 1,184 needs N and n_a over sequences with >= 2 distinct songs.

    Counting every playlist (5,131 single-song ones included) gives 538 pairs
    over 287 songs instead; this pins down that definition.
    """
    tokens, offsets, n = yes_big["tokens"], yes_big["offsets"], yes_big["n_songs"]
    _, _, n_multi = sequence_cooccurrence(tokens, offsets, n)
    mat_all, per_song_all, n_all = sequence_cooccurrence(tokens, offsets, n, min_distinct=1)
    assert n_all == len(yes_big["seqs"]) == 18_139
    assert n_multi == sum(len(set(s)) >= 2 for s in yes_big["seqs"]) == 13_008
    coo = sp.triu(mat_all, k=1).tocoo()
    keep = coo.data >= 2
    a, b, o11 = coo.row[keep], coo.col[keep], coo.data[keep]
    ra, rb = per_song_all[a], per_song_all[b]
    chi2 = chi2_statistics(o11, ra - o11, rb - o11, n_all - ra - rb + o11)
    hard = ~((o11 > ra * rb / n_all) & (chi2 >= 3.841))
    assert int(hard.sum()) == 538
    assert np.unique(np.concatenate([a[hard], b[hard]])).size == 287


def _independent_tables(yes_big, scope):
    """Raw counts computed without the library: (pair count, margin, total)."""
    seqs = yes_big["seqs"]
    if scope == "bigram":
        counts = _bigram_counter(seqs)
        margin: Counter = Counter()
        for (x, y), v in counts.items():
            margin[x] += v
            margin[y] += v
        return (lambda a, b: counts.get((a, b), 0)), margin, 2 * sum(counts.values())
    members: dict[int, set[int]] = {}
    n_eligible = 0
    for s in seqs:
        distinct = set(s)
        if len(distinct) < 2:
            continue
        for song in distinct:
            members.setdefault(song, set()).add(n_eligible)
        n_eligible += 1
    margin = Counter({song: len(ids) for song, ids in members.items()})
    return (lambda a, b: len(members[a] & members[b])), margin, n_eligible


@pytest.mark.parametrize("scope", ["bigram", "sequence"])
def test_matches_scipy_chi2_contingency_on_yes_big(yes_big, scope):
    tokens, offsets, n = yes_big["tokens"], yes_big["offsets"], yes_big["n_songs"]
    everything = find_hard_negatives(
        tokens, offsets, n, scope=scope, min_cooc=2, critical_value=_KEEP_ALL
    )
    default = find_hard_negatives(tokens, offsets, n, scope=scope, min_cooc=2)
    assert everything.n_pairs == everything.n_candidate_pairs == default.n_candidate_pairs

    cooc_of, margin, total = _independent_tables(yes_big, scope)
    rng = np.random.default_rng(2024)
    sample = rng.choice(everything.n_pairs, size=min(3000, everything.n_pairs), replace=False)
    codes_all = everything.pairs[:, 0].astype(np.int64) * n + everything.pairs[:, 1]
    codes_hard = default.pairs[:, 0].astype(np.int64) * n + default.pairs[:, 1]
    hard_rows = np.searchsorted(codes_all, codes_hard)
    np.testing.assert_array_equal(codes_all[hard_rows], codes_hard)
    rows = np.union1d(sample, hard_rows)
    hard_set = set(codes_hard.tolist())

    for i in rows:
        a, b = (int(x) for x in everything.pairs[i])
        o11 = cooc_of(a, b)
        assert o11 >= 2 and o11 == everything.cooc[i]
        res = chi2_contingency(_scipy_table(o11, margin[a], margin[b], total), correction=False)
        np.testing.assert_allclose(everything.chi2[i], res.statistic, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(everything.expected[i], res.expected_freq[0, 0], rtol=1e-12)
        is_hard = not (o11 > res.expected_freq[0, 0] and res.statistic >= 3.841)
        assert is_hard == (a * n + b in hard_set)
    # the default result carries the same statistics as the keep-all run
    np.testing.assert_array_equal(default.chi2, everything.chi2[hard_rows])
    np.testing.assert_array_equal(default.expected, everything.expected[hard_rows])
    np.testing.assert_array_equal(default.cooc, everything.cooc[hard_rows])
    # the candidate set is exactly the pairs with count >= 2
    if scope == "bigram":
        assert everything.n_candidate_pairs == sum(
            v >= 2 for v in _bigram_counter(yes_big["seqs"]).values()
        )


@pytest.mark.parametrize("scope", ["bigram", "sequence"])
def test_paper_rule_on_yes_big(yes_big, scope):
    tokens, offsets, n = yes_big["tokens"], yes_big["offsets"], yes_big["n_songs"]
    everything = find_hard_negatives(
        tokens, offsets, n, scope=scope, min_cooc=2, critical_value=_KEEP_ALL
    )
    paper = find_hard_negatives(tokens, offsets, n, scope=scope, rule="paper", min_cooc=2)
    threshold = tokens.size * 1e-7
    assert paper.rule == "paper"
    assert paper.critical_value == pytest.approx(threshold, rel=1e-15)
    keep = everything.chi2 < threshold
    np.testing.assert_array_equal(paper.pairs, everything.pairs[keep])
    # the paper's threshold (0.019 here) is tiny: only a handful of pairs
    assert paper.n_pairs < 0.01 * paper.n_candidate_pairs


def test_yes_big_has_no_significantly_negative_pair(yes_big):
    """On all of yes_big no co-occurring pair is significantly LESS frequent than chance (expected counts stay
    below 1), so there the direction rule cannot show: the next test builds real playlists where it does."""
    tokens, offsets, n = yes_big["tokens"], yes_big["offsets"], yes_big["n_songs"]
    for scope in ("bigram", "sequence"):
        everything = find_hard_negatives(tokens, offsets, n, scope=scope, min_cooc=1, critical_value=_KEEP_ALL)
        assert not ((everything.cooc < everything.expected) & (everything.chi2 >= 3.841)).any()


@pytest.mark.parametrize(("scope", "n_negative"), [("bigram", 11), ("sequence", 304)])
def test_direction_rule_on_real_playlists_matches_scipy(yes_big, scope, n_negative):
    """The 618 yes_big playlists that hold one of its two most played songs: with these two hubs the
    expected co-occurrence of popular songs is large, and real pairs co-occur significantly less often than
    chance. Not positively associated, they are hard negatives; a rule testing chi2 alone (without the
    direction O11 > E11) would drop exactly these. Every candidate pair is checked against scipy."""
    spread = Counter(song for seq in yes_big["seqs"] for song in set(seq))
    hubs = {song for song, _ in spread.most_common(2)}
    seqs = [seq for seq in yes_big["seqs"] if hubs & set(seq)]
    assert len(seqs) == 618
    tokens, offsets = _to_csr(seqs)
    n = yes_big["n_songs"]
    everything = find_hard_negatives(tokens, offsets, n, scope=scope, min_cooc=2, critical_value=_KEEP_ALL)
    default = find_hard_negatives(tokens, offsets, n, scope=scope, min_cooc=2)
    hard = set(map(tuple, default.pairs.tolist()))

    cooc_of, margin, total = _independent_tables({"seqs": seqs}, scope)
    negative = (everything.cooc < everything.expected) & (everything.chi2 >= 3.841)
    assert int(negative.sum()) == n_negative
    # Every negatively associated pair and a seeded sample of the others (the sequence scope has ~140k
    # candidates; scipy takes ~50 us per table).
    sample = np.random.default_rng(7).choice(everything.n_pairs, size=min(3000, everything.n_pairs), replace=False)
    rows = np.union1d(np.flatnonzero(negative), sample)
    seen = {"negative": 0, "positive": 0, "not significant": 0}
    for i in rows:
        a, b = (int(x) for x in everything.pairs[i])
        o11 = cooc_of(a, b)
        res = chi2_contingency(_scipy_table(o11, margin[a], margin[b], total), correction=False)
        np.testing.assert_allclose(everything.chi2[i], res.statistic, rtol=1e-9, atol=1e-12)
        expected = res.expected_freq[0, 0]
        significant = res.statistic >= 3.841
        kind = "not significant" if not significant else ("positive" if o11 > expected else "negative")
        seen[kind] += 1
        assert ((a, b) in hard) == (kind != "positive"), (a, b, o11, expected, res.statistic)
    assert seen["negative"] == n_negative and seen["positive"] > 100 and seen["not significant"] > 0


# --------------------------------------------------------------------------- #
# hand-built cases
# --------------------------------------------------------------------------- #
def test_bigram_hand_built_tables():
    # bigrams: 0-1 twice, 1-2, 2-3; a self-transition and a single song add nothing
    seqs = [[0, 1, 2], [0, 1], [2, 3], [3, 3], [4]]
    tokens, offsets = _to_csr(seqs)
    mat = bigram_cooccurrence(tokens, offsets, 5)
    np.testing.assert_array_equal(
        mat.toarray(),
        [[0, 2, 0, 0, 0], [2, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]],
    )
    everything = find_hard_negatives(tokens, offsets, 5, min_cooc=1, critical_value=_KEEP_ALL)
    np.testing.assert_array_equal(everything.pairs, [[0, 1], [1, 2], [2, 3]])
    # r = (2, 3, 2, 1, 0), T = 8
    np.testing.assert_allclose(everything.expected, [6 / 8, 6 / 8, 2 / 8])
    np.testing.assert_allclose(everything.chi2, [40 / 9, 8 / 45, 24 / 7], rtol=1e-12)
    tables = [[[2, 0], [1, 5]], [[1, 2], [1, 4]], [[1, 1], [0, 6]]]
    for got, table in zip(everything.chi2, tables):
        ref = chi2_contingency(np.array(table), correction=False).statistic
        assert got == pytest.approx(ref, rel=1e-12)

    result = find_hard_negatives(tokens, offsets, 5, min_cooc=1)
    # (0,1): O11 2 > E11 0.75 and chi2 4.44 >= 3.841 -> associated, not a hard negative
    # (1,2): chi2 0.18; (2,3): O11 > E11 but chi2 3.43 < 3.841 -> hard negatives
    np.testing.assert_array_equal(result.pairs, [[1, 2], [2, 3]])
    np.testing.assert_array_equal(result.songs(), [1, 2, 3])
    # default min_cooc is 2: only (0, 1) is a candidate, and it is associated
    default = find_hard_negatives(tokens, offsets, 5)
    assert default.min_cooc == 2
    assert default.n_candidate_pairs == 1 and default.n_pairs == 0


def test_bigrams_never_cross_sequence_boundaries_and_skip_repeats():
    tokens, offsets = _to_csr([[0, 0, 1], [], [1, 2], [2], [0]])
    mat = bigram_cooccurrence(tokens, offsets, 3)
    # 0-1 (the repeated 0 still neighbours 1), 1-2; never 1-1, 2-2 or 2-0 across boundaries
    np.testing.assert_array_equal(mat.toarray(), [[0, 1, 0], [1, 0, 1], [0, 1, 0]])


def _popular_by_chance() -> tuple[np.ndarray, np.ndarray, int]:
    """100 sequences: songs 0 and 1 are each in half of them, independently;
    songs 2 and 3 always appear together in 10 sequences; fillers are unique."""
    seqs = []
    for i in range(100):
        s = [4 + i, 104 + i]
        if i < 50:
            s.append(0)
        if i % 2 == 0:
            s.append(1)
        if 50 <= i < 60:
            s += [2, 3]
        seqs.append(s)
    tokens, offsets = _to_csr(seqs)
    return tokens, offsets, 204


def test_two_popular_songs_cooccurring_by_chance_are_hard_negatives():
    tokens, offsets, n = _popular_by_chance()
    result = find_hard_negatives(tokens, offsets, n, scope="sequence", min_cooc=2)
    # candidates: (0,1) 25x, (1,2) 5x, (1,3) 5x, (2,3) 10x; fillers co-occur once
    assert result.n_candidate_pairs == 4
    # O11 == E11 exactly for (0,1) [50*50/100] and (1,2), (1,3) [50*10/100]
    np.testing.assert_array_equal(result.pairs, [[0, 1], [1, 2], [1, 3]])
    np.testing.assert_array_equal(result.cooc, [25, 5, 5])
    np.testing.assert_array_equal(result.expected, [25.0, 5.0, 5.0])
    np.testing.assert_array_equal(result.chi2, [0.0, 0.0, 0.0])
    everything = find_hard_negatives(
        tokens, offsets, n, scope="sequence", min_cooc=2, critical_value=_KEEP_ALL
    )
    # (2,3): table [[10, 0], [0, 90]] -> chi2 = 100
    assert everything.chi2[-1] == pytest.approx(100.0, rel=1e-12)
    assert everything.expected[-1] == pytest.approx(1.0)


def test_paper_rule_hand_built():
    tokens, offsets, n = _popular_by_chance()
    # threshold 1e-7 * 2e7 = 2: chi2 0 pairs are selected, chi2 100 is not
    paper = find_hard_negatives(
        tokens, offsets, n, scope="sequence", rule="paper", min_cooc=2,
        total_occurrences=20_000_000,
    )
    np.testing.assert_array_equal(paper.pairs, [[0, 1], [1, 2], [1, 3]])
    assert paper.critical_value == 2.0
    # with the real (tiny) total the threshold is 3.6e-5: still only chi2 == 0
    tiny = find_hard_negatives(tokens, offsets, n, scope="sequence", rule="paper", min_cooc=2)
    assert tiny.critical_value == pytest.approx(tokens.size * 1e-7)
    assert tiny.n_pairs == 3
    # the paper rule ignores direction, the p-value rule does not: a negatively
    # associated pair with large chi2 is a hard negative only under "pvalue"
    seqs = [[0, 2]] * 20 + [[1, 3]] * 20 + [[0, 1]] * 2
    t2, o2 = _to_csr(seqs)
    pvalue = find_hard_negatives(t2, o2, 4, scope="sequence", min_cooc=2)
    paper2 = find_hard_negatives(t2, o2, 4, scope="sequence", rule="paper", min_cooc=2)
    assert [0, 1] in pvalue.pairs.tolist()
    assert [0, 1] not in paper2.pairs.tolist()


def test_sequence_cooccurrence_counts_each_pair_once_per_sequence():
    tokens, offsets = _to_csr([[0, 1, 0, 1, 1], [1, 0], [2, 2], [2], [0, 2]])
    mat, per_song, n_eligible = sequence_cooccurrence(tokens, offsets, 3)
    np.testing.assert_array_equal(mat.toarray(), [[0, 2, 1], [2, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(per_song, [3, 2, 1])
    assert n_eligible == 3  # [2, 2] and [2] cannot hold a pair
    mat1, per_song1, n1 = sequence_cooccurrence(tokens, offsets, 3, min_distinct=1)
    np.testing.assert_array_equal(mat1.toarray(), mat.toarray())
    np.testing.assert_array_equal(per_song1, [3, 2, 3])
    assert n1 == 5


def test_empty_inputs():
    empty = np.zeros(0, dtype=np.int64)
    for scope in ("bigram", "sequence"):
        result = find_hard_negatives(empty, [0], 0, scope=scope)
        assert result.pairs.shape == (0, 2) and result.pairs.dtype == np.int32
        assert result.n_pairs == result.n_candidate_pairs == 0
        assert result.songs().size == 0
        assert result.summary()["n_songs"] == 0
    assert bigram_cooccurrence([], [0, 0, 0], 3).nnz == 0
    mat, per_song, n_eligible = sequence_cooccurrence([], [0], 2)
    assert mat.nnz == 0 and per_song.tolist() == [0, 0] and n_eligible == 0
    # only single-song sequences: nothing to test
    result = find_hard_negatives([0, 1], [0, 1, 2], 2, scope="sequence", min_cooc=1)
    assert result.n_candidate_pairs == 0


def test_result_container():
    tokens, offsets, n = _popular_by_chance()
    result = find_hard_negatives(tokens, offsets, n, scope="sequence", min_cooc=2)
    assert isinstance(result, HardNegatives)
    assert result.pairs.dtype == np.int32 and result.pairs.shape == (3, 2)
    assert result.cooc.dtype == np.int64
    assert result.chi2.dtype == np.float64 and result.expected.dtype == np.float64
    assert result.songs().dtype == np.int32
    for arr in (result.pairs, result.cooc, result.chi2, result.expected):
        with pytest.raises(ValueError):
            arr[0] = 0
    with pytest.raises(AttributeError):
        result.rule = "paper"  # type: ignore[misc]
    np.testing.assert_array_equal(result.songs(), [0, 1, 2, 3])
    assert json.loads(json.dumps(result.summary()))["n_songs"] == 4


# --------------------------------------------------------------------------- #
# chi2_statistics
# --------------------------------------------------------------------------- #
def test_chi2_statistics_known_values_and_degenerate_tables():
    np.testing.assert_allclose(chi2_statistics(10, 0, 0, 90), 100.0)
    assert chi2_statistics(2, 3, 4, 6) == 0.0  # independent
    # zero margins: scipy raises (or gives nan for the empty table), we define 0
    for table in ([3, 0, 0, 0], [0, 5, 0, 7], [2, 3, 0, 0]):
        assert chi2_statistics(*table) == 0.0
        with pytest.raises(ValueError):
            chi2_contingency(np.reshape(table, (2, 2)), correction=False)
    assert chi2_statistics(0, 0, 0, 0) == 0.0
    out = chi2_statistics([10, 3], [0, 0], [0, 0], 90)  # broadcasting
    assert out.dtype == np.float64 and out.shape == (2,)
    np.testing.assert_allclose(out, [100.0, 93.0])


def test_chi2_statistics_large_counts_do_not_overflow():
    big = 10.0**15
    got = chi2_statistics(big, 2 * big, 3 * big, 4 * big)
    ref = chi2_contingency(np.array([[1.0, 2.0], [3.0, 4.0]]) * big, correction=False).statistic
    assert np.isfinite(got) and got == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("name", ["o11", "o12", "o21", "o22"])
@pytest.mark.parametrize("bad", [-1, np.nan, np.inf])
def test_chi2_statistics_rejects_bad_cells(name, bad):
    cells = {"o11": 1, "o12": 2, "o21": 3, "o22": 4}
    cells[name] = bad
    with pytest.raises(ValueError, match=name):
        chi2_statistics(**cells)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=4, max_size=4))
def test_chi2_statistics_matches_scipy(cells):
    table = np.array(cells, dtype=np.float64).reshape(2, 2)
    ours = chi2_statistics(*cells)
    if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        assert ours == 0.0
        return
    ref = chi2_contingency(table, correction=False).statistic
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- #
# default_min_cooc and validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("total", "expected"),
    [(0, 2), (190_649, 2), (20_000_000, 2), (20_000_001, 3), (30_000_000, 3), (10**9, 100)],
)
def test_default_min_cooc(total, expected):
    assert default_min_cooc(total) == expected


def test_default_min_cooc_is_used_from_total_occurrences():
    tokens, offsets, n = _popular_by_chance()
    result = find_hard_negatives(tokens, offsets, n, total_occurrences=60_000_000)
    assert result.min_cooc == 6


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_default_min_cooc_rejects(bad):
    with pytest.raises(ValueError, match="total_occurrences"):
        default_min_cooc(bad)


_GOOD = {"tokens": [0, 1, 2, 1], "offsets": [0, 2, 4], "n_songs": 3}


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"scope": "playlist"}, "scope"),
        ({"rule": "bonferroni"}, "rule"),
        ({"min_cooc": 0}, "min_cooc"),
        ({"min_cooc": 2.5}, "min_cooc"),
        ({"critical_value": 0.0}, "critical_value"),
        ({"critical_value": -3.841}, "critical_value"),
        ({"critical_value": float("nan")}, "critical_value"),
        ({"critical_value": float("inf")}, "critical_value"),
        ({"total_occurrences": -1}, "total_occurrences"),
        ({"tokens": [0, 1, 3, 1]}, "tokens"),
        ({"tokens": [0, -1, 2, 1]}, "tokens"),
        ({"tokens": [0.0, 1.0, 2.0, 1.0]}, "tokens"),
        ({"tokens": [[0, 1], [2, 1]]}, "tokens"),
        ({"offsets": [0, 3, 2, 4]}, "offsets"),
        ({"offsets": [1, 2, 4]}, "offsets"),
        ({"offsets": [0, 2, 3]}, "offsets"),
        ({"offsets": []}, "offsets"),
        ({"n_songs": -1}, "n_songs"),
        ({"n_songs": 2**31}, "n_songs"),
    ],
)
def test_find_hard_negatives_validation(overrides, name):
    kwargs = {**_GOOD, **overrides}
    with pytest.raises(ValueError, match=name):
        find_hard_negatives(
            kwargs.pop("tokens"), kwargs.pop("offsets"), kwargs.pop("n_songs"), **kwargs
        )


def test_cooccurrence_validation():
    with pytest.raises(ValueError, match="offsets"):
        bigram_cooccurrence([0, 1], [0, 2, 1, 2], 2)
    with pytest.raises(ValueError, match="tokens"):
        sequence_cooccurrence([0, 5], [0, 2], 2)
    with pytest.raises(ValueError, match="min_distinct"):
        sequence_cooccurrence([0, 1], [0, 2], 2, min_distinct=0)


# --------------------------------------------------------------------------- #
# properties
# --------------------------------------------------------------------------- #
_sequences = st.lists(st.lists(st.integers(0, 7), min_size=0, max_size=12), max_size=25)


@settings(max_examples=100, deadline=None)
@given(_sequences)
def test_matrices_match_brute_force(seqs):
    tokens, offsets = _to_csr(seqs)
    big = bigram_cooccurrence(tokens, offsets, 8)
    _assert_symmetric_zero_diag(big, 8)
    assert _upper_dict(big) == dict(_bigram_counter(seqs))
    mat, per_song, n_eligible = sequence_cooccurrence(tokens, offsets, 8)
    _assert_symmetric_zero_diag(mat, 8)
    pairs, songs, n_expected = _sequence_counter(seqs)
    assert _upper_dict(mat) == dict(pairs)
    assert n_eligible == n_expected
    assert per_song.tolist() == [songs[i] for i in range(8)]


@settings(max_examples=100, deadline=None)
@given(_sequences, st.permutations(range(8)), st.sampled_from(["bigram", "sequence"]))
def test_relabelling_songs_permutes_the_result(seqs, perm, scope):
    perm = np.asarray(perm, dtype=np.int64)
    tokens, offsets = _to_csr(seqs)
    kwargs = {"scope": scope, "min_cooc": 1, "critical_value": 1.0}
    base = find_hard_negatives(tokens, offsets, 8, **kwargs)
    moved = find_hard_negatives(perm[tokens], offsets, 8, **kwargs)
    assert moved.n_candidate_pairs == base.n_candidate_pairs
    assert moved.n_pairs == base.n_pairs

    mapped = np.sort(perm[base.pairs], axis=1)
    order = np.lexsort((mapped[:, 1], mapped[:, 0]))
    np.testing.assert_array_equal(moved.pairs, mapped[order])
    np.testing.assert_array_equal(moved.cooc, base.cooc[order])
    np.testing.assert_allclose(moved.chi2, base.chi2[order], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moved.expected, base.expected[order], rtol=1e-12)
    np.testing.assert_array_equal(moved.songs(), np.sort(perm[base.songs()]))

    pairs = moved.pairs
    assert np.all(pairs[:, 0] < pairs[:, 1])
    if pairs.shape[0] > 1:
        codes = pairs[:, 0].astype(np.int64) * 8 + pairs[:, 1]
        assert np.all(np.diff(codes) > 0)

    matrix = (
        bigram_cooccurrence if scope == "bigram" else lambda *a: sequence_cooccurrence(*a)[0]
    )
    m_base = matrix(tokens, offsets, 8).toarray()
    m_moved = matrix(perm[tokens], offsets, 8).toarray()
    np.testing.assert_array_equal(m_moved[np.ix_(perm, perm)], m_base)
