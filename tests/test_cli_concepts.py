"""``songhpo concepts`` and hpo.concepts: concept sets from prepared datasets, embeddings from a study
trial (SQLite and PostgreSQL) or a file, real CLI subprocesses on the real datasets, outputs, errors."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from hpo.concepts import (
    KINDS,
    HierarchySettings,
    SongEmbeddings,
    build_hierarchy,
    file_embeddings,
    load_concept_sets,
    trial_embeddings,
)
from hpo.data.dataset import PreparedDataset
from hpo.data.embeddings_io import write_embeddings
from hpo.data.prepare import PrepareParams, prepare_dataset
from hpo.data.readers import read_input
from hpo.study import load_study
from hpo.trials import trial_data
from metrics.evaluate import evaluate
from objectives.word2vec import train_word2vec
from storage.errors import InputError
from tests.conftest import assert_one_line_error, run_cli, run_tiny_study, shared_dataset

# --------------------------------------------------------------------------------------------------
# fixtures


def _train_and_write(prepared: Path, out: Path, **params: object) -> Path:
    """A quick deterministic skip-gram model written as .npy + vocab keyed by track id."""
    dataset = PreparedDataset.load(prepared)
    trained = train_word2vec(dataset.training_sentences(), dataset.n_songs,
                             {"vector_size": 32, "epochs": 5, "min_count": 1, **params}, seed=3, workers=1)
    keys = dataset.songs["track_id"].astype(str).to_numpy()[trained.present].tolist()
    npy, _ = write_embeddings(out / "vectors.npy", keys, trained.matrix[trained.present])
    return npy


@pytest.fixture(scope="module")
def yes_small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """yes_small prepared, and a Word2Vec embedding of it keyed by track id."""
    root = tmp_path_factory.mktemp("yes_small")
    prepare_dataset(read_input(shared_dataset("yes", "yes_small")), root / "prepared", PrepareParams(seed=0))
    return root / "prepared", _train_and_write(root / "prepared", root, epochs=10)


@pytest.fixture(scope="module")
def synth_vectors(prepared_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_and_write(prepared_synth, tmp_path_factory.mktemp("synth_vectors"), vector_size=16, epochs=3)


def _read_outputs(out: Path) -> tuple[dict, list[dict[str, str]], str]:
    tree = json.loads((out / "tree.json").read_text(encoding="utf-8"))
    with (out / "concepts.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return tree, rows, (out / "graph.html").read_text(encoding="utf-8")


def _check_tree(tree: dict, rows: list[dict[str, str]], min_accuracy: float = 0.7, min_sim: float = 0.2) -> None:
    nodes = tree["nodes"]
    kept = [r for r in rows if r["kept"] == "1"]
    assert len(nodes) == len(kept) == tree["concepts"]["kept"]
    assert len(rows) == tree["concepts"]["learned"]
    for row in rows:  # filtered concepts stay in the CSV with their accuracy
        assert (float(row["accuracy"]) >= min_accuracy) == (row["kept"] == "1")
    ids = {n["id"] for n in nodes}
    roots = [n["id"] for n in nodes if n["parent"] is None]
    assert sorted(roots) == sorted(tree["roots"]) and roots
    for node in nodes:
        assert node["name"] == kept[node["id"]]["name"]
        if node["parent"] is not None:
            assert node["parent"] in ids and node["id"] in nodes[node["parent"]]["children"]
            assert node["similarity_to_parent"] > min_sim
            assert node["depth"] == nodes[node["parent"]]["depth"] + 1
            assert node["added"] > nodes[node["parent"]]["added"]  # parents join the tree first
        else:
            assert node["depth"] == 0
    structure = {r["graph"]: r for r in tree["structure"]}
    assert structure["tree"]["edges"] == sum(n["parent"] is not None for n in nodes)
    assert structure["tree"]["components"] == len(roots)


# --------------------------------------------------------------------------------------------------
# concept sets


def test_playlist_genre_artist_sets_match_brute_force(prepared_synth: Path) -> None:
    dataset = PreparedDataset.load(prepared_synth)
    rng = np.random.default_rng(0)
    present = rng.random(dataset.n_songs) < 0.8
    sequences = pd.read_parquet(prepared_synth / "sequences.parquet")
    names = sequences.loc[sequences["split"] == "train", "sequence_id"].tolist()
    tokens, offsets = dataset.train_tokens, dataset.train_offsets
    expected = {}
    for i, name in enumerate(names):
        songs = sorted({int(s) for s in tokens[offsets[i] : offsets[i + 1]] if present[s]})
        if len(songs) >= 6:
            expected[name] = songs
    sets = load_concept_sets(dataset, "playlists", min_size=6, present=present)
    got = {n: sets.songs[sets.offsets[k] : sets.offsets[k + 1]].tolist() for k, n in enumerate(sets.names)}
    assert got == expected and sets.candidates == len(names) and list(got) == [n for n in names if n in expected]

    songs = dataset.songs
    for kind, column in (("genres", "genre"), ("artists", "artist")):
        sets = load_concept_sets(dataset, kind, min_size=5, present=present)
        frame = songs[(songs[f"{column}_code"] >= 0) & present]
        groups = {str(k): sorted(v.index.tolist()) for k, v in frame.groupby(column)}
        groups = {k: v for k, v in groups.items() if len(v) >= 5}
        got = {n: sets.songs[sets.offsets[k] : sets.offsets[k + 1]].tolist() for k, n in enumerate(sets.names)}
        assert got == groups, kind


def test_tag_sets_of_yes_small(yes_small: tuple[Path, Path]) -> None:
    prepared, _ = yes_small
    dataset = PreparedDataset.load(prepared)
    table = pd.read_parquet(prepared / "concepts.parquet")
    sizes = table.groupby("concept")["song"].nunique()
    sets = load_concept_sets(dataset, "tags", min_size=300)
    assert sets.names == sorted(sizes[sizes >= 300].index.astype(str).tolist())
    assert sets.candidates == len(sizes)
    rock = sets.names.index("rock")
    assert sets.songs[sets.offsets[rock] : sets.offsets[rock + 1]].tolist() == sorted(
        table.loc[table["concept"] == "rock", "song"].unique().tolist())


def test_cli_defaults_are_the_library_defaults() -> None:
    from hpo.cli import concepts as cli_concepts

    defaults = HierarchySettings()
    assert cli_concepts.KINDS == KINDS
    for name, value in vars(cli_concepts._DEFAULTS).items():
        assert getattr(defaults, name) == value, name


# --------------------------------------------------------------------------------------------------
# real datasets, end to end


def test_cli_yes_small_tags_end_to_end(yes_small: tuple[Path, Path], tmp_path: Path) -> None:
    prepared, vectors = yes_small
    out = tmp_path / "tags"
    result = run_cli("concepts", "--embeddings", str(vectors), "--prepared", str(prepared), "--concepts", "tags",
                     "--min-size", "300", "--out", str(out), "--jobs", "2")
    assert result.returncode == 0, result.stderr
    stdout = result.stdout
    for row in ("tree", "A", "sparse A", "top-1", "random sparse A", "random top-1"):
        assert re.search(rf"^{re.escape(row)}\s+\d+", stdout, re.MULTILINE), row
    for source in ("genre overlap", "artist overlap", "shared songs"):
        assert re.search(rf"^{source}\s+(cosine|jaccard)\s", stdout, re.MULTILINE), source
    assert "timings (s):" in stdout and "concept_vectors" in stdout
    tree, rows, html = _read_outputs(out)
    _check_tree(tree, rows)
    assert tree["source"]["embeddings"] == str(vectors)
    assert tree["concepts"]["learned"] == 68  # tags of yes_small with >= 300 songs
    assert tree["settings"]["kind"] == "tags" and tree["settings"]["min_size"] == 300
    # Self-contained interactive page: plotly.js inline (no CDN), tag names as labels.
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and not [tag for tag in scripts if "src" in tag]
    assert "plotly.js v" in html and "Plotly.newPlot" in html and len(html) > 1_000_000
    for name in ("rock", "country"):
        assert name in html
    # Same computation in-process, one worker: the CLI's tree and accuracies are reproduced exactly.
    dataset = PreparedDataset.load(prepared)
    again = build_hierarchy(dataset, file_embeddings(vectors, dataset),
                            HierarchySettings(kind="tags", min_size=300, n_jobs=1))
    assert [n["parent"] if n["parent"] is not None else -1 for n in tree["nodes"]] == again.parent.tolist()
    assert [float(r["accuracy"]) for r in rows] == pytest.approx(again.vectors.accuracy.tolist(), abs=5e-5)
    # Alignment "genre overlap" = mean over tree edges of the cosine of the two tags' genre histograms
    # (songs with a vector only), recomputed here from the files.
    from sklearn.metrics.pairwise import cosine_similarity

    present = file_embeddings(vectors, dataset).present
    table = pd.read_parquet(prepared / "concepts.parquet")
    table = table[present[table["song"].to_numpy()]].drop_duplicates()
    genre = dataset.songs["genre_code"].to_numpy()
    n_genres = int(genre.max()) + 1

    def histogram(name: str) -> np.ndarray:
        codes = genre[table.loc[table["concept"] == name, "song"].to_numpy()]
        return np.bincount(codes[codes >= 0], minlength=n_genres)[None, :]

    nodes = tree["nodes"]
    cosines = [cosine_similarity(histogram(nodes[n["parent"]]["name"]), histogram(n["name"]))[0, 0]
               for n in nodes if n["parent"] is not None]
    alignment = {r["source"]: r for r in tree["alignment"]}
    assert alignment["genre overlap"]["tree"] == pytest.approx(float(np.mean(cosines)), rel=1e-9)
    # The tree links tags that share genres far more than random trees do.
    assert alignment["genre overlap"]["tree"] > alignment["genre overlap"]["random_tree"] + 0.1


def test_cli_yes_small_playlists_json(yes_small: tuple[Path, Path], tmp_path: Path) -> None:
    prepared, vectors = yes_small
    out = tmp_path / "playlists"
    result = run_cli("concepts", "--embeddings", str(vectors), "--prepared", str(prepared),
                     "--concepts", "playlists", "--min-size", "40", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["concepts"]["learned"] == 155 and summary["concepts"]["kind"] == "playlists"
    assert set(summary["timings"]) >= {"concept_vectors", "similarity", "betweenness", "tree", "total"}
    tree, rows, _ = _read_outputs(out)
    _check_tree(tree, rows)
    sequences = pd.read_parquet(prepared / "sequences.parquet")
    train_ids = set(sequences.loc[sequences["split"] == "train", "sequence_id"])
    assert {r["name"] for r in rows} <= train_ids  # playlists are named by their sequence id
    sources = {r["source"] for r in summary["alignment"]}
    assert sources == {"genre overlap", "artist overlap", "tag overlap", "shared songs"}
    for row in summary["alignment"]:
        assert row["tree"] > row["random_tree"], row


def test_aotm2011_categories_without_artists(tmp_path: Path) -> None:
    prepared = tmp_path / "aotm"
    prepare_dataset(read_input(shared_dataset("aotm2011")), prepared, PrepareParams(seed=0))
    dataset = PreparedDataset.load(prepared)
    trained = train_word2vec(dataset.training_sentences(), dataset.n_songs,
                             {"vector_size": 32, "epochs": 10, "window": 10, "min_count": 1}, seed=0)
    embeddings = SongEmbeddings(trained.matrix, trained.present, {"embeddings": "in memory"}, trained.seconds)
    # AotM categories are themes over short segments (median 3 songs, most songs played once): this
    # embedding separates them at balanced accuracy 0.6-0.7 only, so a lower bar keeps some.
    result = build_hierarchy(dataset, embeddings, HierarchySettings(kind="tags", min_accuracy=0.6, n_jobs=1))
    summary = result.summary()
    assert summary["concepts"]["learned"] == 24 and summary["concepts"]["kept"] >= 4
    # No artist labels in aotm2011: no artist source rather than a crash or zeros.
    assert {r["source"] for r in summary["alignment"]} == {"genre overlap", "shared songs"}
    with pytest.raises(InputError, match="no song has a known artist"):
        load_concept_sets(dataset, "artists")


# --------------------------------------------------------------------------------------------------
# study trials (SQLite and PostgreSQL)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_trial_embeddings_reproduce_the_trial(prepared_synth: Path, tmp_path: Path, backend: str,
                                              request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        storage = request.getfixturevalue("tiny_study").storage
    else:
        storage = request.getfixturevalue("postgres_url")
        run_tiny_study(prepared_synth, storage, trials=3)
    study, config = load_study("tiny", storage)
    dataset = PreparedDataset.load(prepared_synth)
    trial = study.trials[1]
    embeddings = trial_embeddings(study, 1, dataset)
    assert embeddings.source["trial"] == 1 and embeddings.source["seed"] == trial.user_attrs["seed"]
    # The re-trained vectors are the trial's: a fresh evaluation gives its stored metrics.
    data = trial_data(config, dataset)
    metrics = evaluate(embeddings.matrix, data.evaluation, data.settings, present=embeddings.present).metrics
    for key in ("ndcg", "hitrate", "ch_genre", "coherence_artist"):
        assert metrics[key] == pytest.approx(trial.user_attrs[key], rel=1e-9), key

    out = tmp_path / "out"
    result = run_cli("concepts", "tiny", "--trial", "1", "--storage", storage, "--concepts", "artists",
                     "--min-size", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "concept hierarchy of study tiny, trial 1: artists" in result.stdout
    tree, rows, html = _read_outputs(out)
    _check_tree(tree, rows)
    assert tree["source"]["study"] == "tiny" and tree["source"]["trial"] == 1
    assert tree["dataset"]["fingerprint"] == dataset.fingerprint
    # Artists never share songs: co-occurrence is compared through playlists, and no artist overlap.
    assert {r["source"] for r in tree["alignment"]} == {"genre overlap", "playlist co-occurrence"}
    # The graph draws the kept concepts (the filtered ones stay in the CSV only).
    kept = [r["name"] for r in rows if r["kept"] == "1"]
    assert "songs" in html and kept and all(name in html for name in kept)

    missing = run_cli("concepts", "tiny", "--trial", "99", "--storage", storage, "--out", str(tmp_path / "x"))
    assert_one_line_error(missing, "has no trial 99")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------------
# user mistakes


def _in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI's own entry point in this process (same code path as the console script, no start-up)."""
    from hpo.cli.main import main

    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)


def test_user_mistakes_are_one_line_errors(prepared_synth: Path, synth_vectors: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--embeddings", str(synth_vectors), "--prepared", str(prepared_synth)]
    out = tmp_path / "out"
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'empty.db'}").engine.dispose()  # exists, holds no study
    cases = [
        (["concepts", "study"], "expected a study NAME with --trial N"),
        (["concepts", "--embeddings", str(synth_vectors)], "--embeddings needs --prepared"),
        (["concepts", "s", "--trial", "1", *common], "not both"),
        (["concepts", *common, "--concepts", "moods", "--out", str(out)], "--concepts 'moods'"),
        (["concepts", *common, "--min-size", "2", "--out", str(out)], "--min-size 2"),
        (["concepts", *common, "--min-accuracy", "1.5", "--out", str(out)], "--min-accuracy 1.5"),
        (["concepts", *common, "--concepts", "tags", "--out", str(out)], "no concepts.parquet"),
        (["concepts", *common, "--concepts", "genres", "--min-size", "100000", "--out", str(out)],
         "no genres concept has 100000 or more songs"),
        (["concepts", "--embeddings", str(tmp_path / "nope.npy"), "--prepared", str(prepared_synth), "--out", str(out)],
         "nope.npy"),
        (["concepts", "nostudy", "--trial", "0", "--storage", f"sqlite:///{tmp_path / 'empty.db'}", "--out", str(out)],
         "study 'nostudy' not found"),
    ]
    for i, (args, fragment) in enumerate(cases):
        # A few through the real console script in a subprocess, the rest through its entry point.
        assert_one_line_error(run_cli(*args) if i % 4 == 0 else _in_process(capsys, *args), fragment, allow_logs=True)
        assert not out.exists(), args
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary leftovers

    out.mkdir()
    assert_one_line_error(run_cli("concepts", *common, "--concepts", "genres", "--min-size", "5", "--out", str(out)),
                          "already exists")
    forced = run_cli("concepts", *common, "--concepts", "genres", "--min-size", "5", "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "tree.json").is_file()


# --------------------------------------------------------------------------------------------------
# the interactive graph


def test_graph_layout_and_page() -> None:
    from dashboards.concept_graph import concept_graph_html, concept_tree_figure, radial_layout

    rng = np.random.default_rng(0)
    parent = np.array([-1 if i == 0 or rng.random() < 0.1 else int(rng.integers(0, i)) for i in range(300)])
    x, y, subtree = radial_layout(parent)
    depth = np.zeros(parent.size, dtype=int)
    for node in range(parent.size):  # parents precede children here
        depth[node] = 1 if parent[node] < 0 else depth[parent[node]] + 1
    np.testing.assert_allclose(np.hypot(x, y), depth, atol=1e-9)  # each level on its own circle
    for node in range(parent.size):
        descendants, frontier = 0, [node]
        while frontier:
            kids = np.flatnonzero(np.isin(parent, frontier))
            descendants += kids.size
            frontier = kids.tolist()
        assert subtree[node] == descendants + 1
    names = [f"tag <{i}> & co" for i in range(parent.size)]
    figure = concept_tree_figure(names, parent, accuracy=np.linspace(0.7, 1, parent.size))
    nodes = figure.data[-1]
    assert len(nodes.x) == parent.size and "tag &lt;5&gt; &amp; co" in nodes.hovertext[5]
    page = concept_graph_html(names, parent, title="a <b>title</b>")
    assert page.startswith("<!DOCTYPE html>") and "<title>a &lt;b&gt;title&lt;/b&gt;</title>" in page
    assert "tag <5>" not in page  # names are escaped everywhere
    # A 3,000-deep chain neither recurses too deep nor fails.
    chain = np.arange(-1, 2999)
    assert radial_layout(chain)[2][0] == 3000
