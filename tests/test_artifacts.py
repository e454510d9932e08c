"""Trial vectors as Optuna artifacts (hpo.artifacts): the front policy on a real study, pruning, the config,
the reuse by ``study evaluate`` and ``concepts --trial``, and the download from optuna-dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.trial import TrialState

from hpo.artifacts import (
    VectorKeeper,
    artifact_dir,
    has_stored_vectors,
    retrain_trial,
    stored_vectors,
    trial_vectors,
)
from hpo.config import load_config, parse_config
from hpo.data.dataset import PreparedDataset
from hpo.data.embeddings_io import align_to_dataset, read_embeddings
from hpo.evaluation import evaluate_split
from hpo.trials import baseline_trial, feasible_pareto_front, trial_data
from objectives.word2vec import TrainedEmbeddings
from storage.db import dispose_engines
from storage.errors import InputError
from storage.results import load_latest_snapshot
from tests.conftest import run_tiny_study, write_toml
from tests.test_dashboards import free_port, start_dashboard, stop, wait_for


@pytest.fixture(scope="module")
def front_study(prepared_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A finished 6-trial study with the default artifact policy (front)."""
    root = tmp_path_factory.mktemp("artifacts")
    url = f"sqlite:///{root / 'front.db'}"
    study, config = run_tiny_study(prepared_synth, url, trials=6)
    yield study, config, root
    dispose_engines()


def _metas(study: optuna.Study, number: int) -> list[str]:
    trial = study.trials[number]
    return sorted(m.filename for m in get_all_artifact_meta(trial, storage=study._storage))


def test_front_policy_keeps_exactly_the_front_and_the_baseline(front_study: Any, prepared_synth: Path) -> None:
    study, config, root = front_study
    directory = root / "front-artifacts"
    assert artifact_dir(config) == directory.resolve()
    fresh = optuna.load_study(study_name="tiny", storage=config.storage)
    complete = fresh.get_trials(states=(TrialState.COMPLETE,))
    keep = {t.number for t in feasible_pareto_front(fresh)} | {baseline_trial(fresh).number}
    assert len(complete) == 6 and len(keep) < 6  # something was left out
    for trial in complete:
        expected = [f"tiny-trial{trial.number}.npy", f"tiny-trial{trial.number}.vocab.txt"]
        assert _metas(fresh, trial.number) == (expected if trial.number in keep else []), trial.number
        assert has_stored_vectors(trial, "tiny") == (trial.number in keep)
    # The store holds those artifacts and nothing else (no temporary file, no pruned leftover).
    ids = {m.artifact_id for t in complete for m in get_all_artifact_meta(t, storage=fresh._storage)}
    assert {p.name for p in directory.iterdir()} == ids and len(ids) == 2 * len(keep)

    # Round trip through optuna.artifacts: the stored vectors are the trial's own, float32, bit for bit.
    dataset = PreparedDataset.load(prepared_synth)
    number = max(keep)
    trial = fresh.trials[number]
    download = root / "download"
    download.mkdir()
    for meta in get_all_artifact_meta(trial, storage=fresh._storage):
        download_artifact(artifact_store=optuna.artifacts.FileSystemArtifactStore(directory),
                          artifact_id=meta.artifact_id, file_path=str(download / meta.filename))
    embeddings = read_embeddings(download / f"tiny-trial{number}.npy")  # default vocabulary next to it
    matrix, present, report = align_to_dataset(embeddings, dataset.songs["track_id"])
    retrained = retrain_trial(trial, config, dataset)
    assert embeddings.vectors.dtype == np.float32 and report["ignored_keys"] == 0
    assert np.array_equal(present, retrained.present) and np.array_equal(matrix, retrained.matrix)
    # ... and scoring them again gives the trial's validation metrics exactly.
    data = trial_data(config, dataset)
    metrics = evaluate_split(dataset, matrix, present, "validation", data.settings).metrics
    assert all(metrics[k] == trial.user_attrs[k] for k in ("ndcg", "ch_artist", "ch_genre", "hardneg"))
    found = trial_vectors(fresh, trial, config, dataset)
    assert found.source == "artifact" and np.array_equal(found.matrix, retrained.matrix)
    left_out = next(t for t in complete if t.number not in keep)
    assert trial_vectors(fresh, left_out, config, dataset).source == "re-trained"


def _keeper_study(tmp_path: Path, policy: str, points: list[tuple[float, float]]) -> tuple[str, Path, Any]:
    """A two-objective study whose trials 'train' fixed vectors and score ``points``, kept under ``policy``."""
    url = f"sqlite:///{tmp_path / f'{policy}.db'}"
    config = parse_config({"name": "k", "dataset": str(tmp_path), "storage": url, "artifacts": {"policy": policy}},
                          "test")
    keeper = VectorKeeper(config, np.array([f"song{i}" for i in range(5)], dtype=object))
    study = optuna.create_study(study_name="k", storage=url, directions=["maximize", "maximize"])
    for x, y in points:
        study.enqueue_trial({"x": x, "y": y})
    rng = np.random.default_rng(0)

    def objective(trial: optuna.Trial) -> list[float]:
        values = [trial.suggest_float("x", 0, 10), trial.suggest_float("y", 0, 10)]
        trial.set_user_attr("feasible", True)
        present = np.array([True, True, False, True, True])
        matrix = np.where(present[:, None], rng.standard_normal((5, 3)), 0.0).astype(np.float32)
        keeper.on_trained(trial, TrainedEmbeddings(matrix=matrix, present=present, seconds=0.0), values)
        return values

    stored: list[list[int]] = []

    def after(study: optuna.Study, trial: Any) -> None:
        keeper.prune(study)
        fresh = optuna.load_study(study_name="k", storage=url)
        stored.append([t.number for t in fresh.trials if has_stored_vectors(t, "k")])

    study.optimize(objective, n_trials=len(points), callbacks=[after])
    return url, tmp_path / f"{policy}-artifacts", stored


def test_trials_leaving_the_front_lose_file_and_metadata(tmp_path: Path) -> None:
    # (1,1) and (2,0.5) are both on the front; (3,3) dominates them; (0.5,0.5) is dominated on arrival.
    url, directory, stored = _keeper_study(tmp_path, "front", [(1, 1), (2, 0.5), (3, 3), (0.5, 0.5)])
    assert stored == [[0], [0, 1], [2], [2]]
    fresh = optuna.load_study(study_name="k", storage=url)
    assert [len(get_all_artifact_meta(t, storage=fresh._storage)) for t in fresh.trials] == [0, 0, 2, 0]
    assert len(list(directory.iterdir())) == 2
    # The kept pair is the npy format of hpo.data.embeddings_io: the songs with a vector, float32.
    config = parse_config({"name": "k", "dataset": str(tmp_path), "storage": url}, "test")
    embeddings = stored_vectors(fresh, fresh.trials[2], config)
    assert embeddings is not None and embeddings.keys == ["song0", "song1", "song3", "song4"]
    assert embeddings.vectors.dtype == np.float32 and embeddings.vectors.shape == (4, 3)

    _, directory, stored = _keeper_study(tmp_path, "all", [(1, 1), (3, 3), (0.5, 0.5)])
    assert stored[-1] == [0, 1, 2] and len(list(directory.iterdir())) == 6
    _, directory, stored = _keeper_study(tmp_path, "none", [(1, 1), (3, 3)])
    assert stored == [[], []] and not directory.exists()


def test_artifacts_config(tmp_path: Path, prepared_synth: Path) -> None:
    base = {"name": "c", "dataset": str(prepared_synth)}
    config = parse_config({**base, "storage": f"sqlite:///{tmp_path / 'x.db'}"}, "test")
    assert config.artifacts.policy == "front" and artifact_dir(config) == (tmp_path / "x-artifacts").resolve()
    server = parse_config({**base, "storage": "postgresql+psycopg://u@h/db"}, "test")
    assert artifact_dir(server) is None
    shared = parse_config({**server.to_json(), "artifacts": {"store": "/shared/vectors", "policy": "all"}}, "test")
    assert artifact_dir(shared) == Path("/shared/vectors")
    # A relative store resolves against the config file's directory, like the dataset.
    (tmp_path / "sub").mkdir()
    path = write_toml(tmp_path / "sub" / "study.toml",
                      {**base, "storage": "sqlite:///s.db", "artifacts": {"store": "vectors", "policy": "none"}})
    loaded = load_config(path)
    assert loaded.artifacts.store == (tmp_path / "sub" / "vectors").resolve() and loaded.artifacts.policy == "none"
    with pytest.raises(InputError, match=r"field 'artifacts.policy'"):
        parse_config({**base, "artifacts": {"policy": "best"}}, "test")
    with pytest.raises(InputError, match=r"field 'artifacts.directory'"):
        parse_config({**base, "artifacts": {"directory": "x"}}, "test")


def test_study_evaluate_takes_seed0_from_the_store(front_study: Any, prepared_synth: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from hpo.results import evaluate_front

    study, config, _ = front_study
    dataset = PreparedDataset.load(prepared_synth)
    member = feasible_pareto_front(study)[-1]
    expected = retrain_trial(member, config, dataset)

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("re-trained although the vectors are stored")

    # Every member (front + baseline) has stored vectors: one seed needs no training at all.
    monkeypatch.setattr("objectives.word2vec.train_word2vec", no_training)
    report = evaluate_front(study, config, seeds=1)
    assert report.trained == report.members and report.complete
    snapshot = load_latest_snapshot(config.storage, "tiny")
    got = next(m for m in snapshot["members"] if m["trial"] == member.number)["test"]
    settings = trial_data(config, dataset).settings
    want = evaluate_split(dataset, expected.matrix, expected.present, "test", settings).metrics
    for key in ("ndcg", "hitrate", "ch_artist", "ch_genre", "hardneg", "coherence_genre"):
        assert got[key]["mean"] == want[key], key


def test_concepts_trial_uses_the_store_and_the_training_fraction(prepared_synth: Path, tmp_path: Path) -> None:
    from hpo.concepts import trial_embeddings

    dataset = PreparedDataset.load(prepared_synth)
    study, config = run_tiny_study(prepared_synth, f"sqlite:///{tmp_path / 'half.db'}", trials=2,
                                   training={"fraction": 0.5}, artifacts={"policy": "none"})
    try:
        trial = study.trials[1]
        # Re-trained on the study's half of the training sequences: the trial's own metrics again.
        embeddings = trial_embeddings(study, 1, dataset)
        assert embeddings.source["vectors"] == "re-trained" and embeddings.source["training_fraction"] == 0.5
        data = trial_data(config, dataset)
        metrics = evaluate_split(dataset, embeddings.matrix, embeddings.present, "validation", data.settings).metrics
        for key in ("ndcg", "ch_artist", "coherence_genre"):
            assert metrics[key] == trial.user_attrs[key], key
        assert not (tmp_path / "half-artifacts").exists()
    finally:
        dispose_engines()


def test_dashboard_serves_the_trial_vectors(front_study: Any) -> None:
    study, config, root = front_study
    port = free_port()
    process = start_dashboard(config.storage, port)
    try:
        base = f"http://127.0.0.1:{port}"
        payload = json.loads(wait_for(f"{base}/api/studies/{study._study_id}?after=0", process))
        listed = {t["number"]: sorted(a["filename"] for a in t["artifacts"]) for t in payload["trials"]}
        kept = {t.number for t in study.trials if has_stored_vectors(t, "tiny")}
        assert {n for n, names in listed.items() if names} == kept
        number = min(kept)
        trial = next(t for t in payload["trials"] if t["number"] == number)
        for artifact in trial["artifacts"]:
            body = wait_for(f"{base}/artifacts/{study._study_id}/{trial['trial_id']}/{artifact['artifact_id']}", process)
            assert body == (root / "front-artifacts" / artifact["artifact_id"]).read_bytes()
            if artifact["filename"].endswith(".vocab.txt"):
                assert body.decode().splitlines()[0].startswith("t")  # track ids, one per line
    finally:
        stop(process)


def test_stores_of_several_studies_read_as_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from hpo.artifacts import open_store
    from hpo.cli.main import main

    first, second = tmp_path / "a", tmp_path / "b"
    for directory, name in ((first, "id-a"), (second, "id-b")):
        directory.mkdir()
        (directory / name).write_bytes(name.encode())
    union = open_store([first, second, first])
    for name in ("id-a", "id-b"):
        with union.open_reader(name) as reader:
            assert reader.read() == name.encode()
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        union.open_reader("id-c")
    union.write("id-c", io.BytesIO(b"new"))  # new artifacts go to the first directory, atomically
    assert (first / "id-c").read_bytes() == b"new" and sorted(p.name for p in first.iterdir()) == ["id-a", "id-c"]
    union.remove("id-b")
    assert not (second / "id-b").exists() and open_store([]) is None
    # A --artifact-dir that does not exist is a one-line error before anything is served.
    assert main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--artifact-dir",
                 str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"songhpo: error: --artifact-dir {tmp_path / 'missing'}: no such directory"
