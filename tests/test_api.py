"""hpo.api, the notebook API: frames of a real study, a trial's vectors as KeyedVectors (stored or re-trained),
evaluation of any embedding, and no change to global warning filters or logging levels."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo import api
from hpo.artifacts import has_stored_vectors
from hpo.data.embeddings_io import Embeddings, write_word2vec
from hpo.trials import feasible_pareto_front
from metrics.evaluate import METRIC_KEYS
from storage.errors import InputError
from tests.conftest import REPO, SharedStudy


@pytest.fixture(scope="module")
def study_url(tiny_study: SharedStudy) -> str:
    return tiny_study.storage


def test_trials_and_front_frames(study_url: str) -> None:
    study = optuna.load_study(study_name="tiny", storage=study_url)
    frame = api.trials("tiny", study_url)
    assert frame.index.name == "trial" and frame.index.tolist() == [t.number for t in study.trials]
    front = api.front(study, study_url)  # an optuna.Study works too
    assert front.index.tolist() == [t.number for t in feasible_pareto_front(study)]
    assert front["on_front"].all() and front["feasible"].all()
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        row = frame.loc[trial.number]
        assert [row[name] for name in study.metric_names] == trial.values
        assert row["seed"] == trial.user_attrs["seed"] and row["baseline"] == bool(trial.user_attrs.get("baseline"))
        assert row["has_vectors"] == has_stored_vectors(trial, "tiny")
        assert all(row[f"params.{k}"] == v for k, v in trial.params.items())
        assert {k for k in METRIC_KEYS} <= set(frame.columns)
    assert frame.loc[0, "baseline"] and frame.loc[0, "has_vectors"]  # the baseline keeps its vectors


def test_vectors_and_evaluate_reproduce_the_trial(study_url: str, prepared_synth: Path, tmp_path: Path) -> None:
    study = optuna.load_study(study_name="tiny", storage=study_url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    stored = next(t for t in complete if has_stored_vectors(t, "tiny"))
    missing = next(t for t in complete if not has_stored_vectors(t, "tiny"))  # dominated: re-trained
    for trial in (stored, missing):
        kv = api.vectors("tiny", trial.number, study_url)
        assert len(kv) == trial.user_attrs["songs_present"] and kv.vectors.dtype == np.float32
        assert kv.vector_size == trial.user_attrs["gensim_params"]["vector_size"]
        # The study's K and seed reproduce the trial's validation metrics exactly.
        metrics = api.evaluate(kv, prepared_synth, k=20, seed=13)
        assert all(metrics[key] == trial.user_attrs[key] for key in METRIC_KEYS), trial.number
        assert metrics["buckets"] == trial.user_attrs["buckets"]
        assert metrics["alignment"]["ignored_keys"] == 0 and metrics["continuation_playlists"] > 0
    # An array with its vocabulary, a pair, or Embeddings: the same numbers; unknown keys are ignored.
    keys = list(kv.index_to_key)
    extra = np.vstack([kv.vectors, np.ones((1, kv.vector_size), dtype=np.float32)])
    by_array = api.evaluate(extra, prepared_synth, vocabulary=[*keys, "not-a-track"], k=20, seed=13)
    by_pair = api.evaluate((kv.vectors, keys), prepared_synth, k=20, seed=13)
    by_embeddings = api.evaluate(Embeddings(keys, kv.vectors), prepared_synth, k=20, seed=13)
    # The file `songhpo export` writes, given by its path as to `songhpo eval`.
    exported = tmp_path / "trial.txt"
    write_word2vec(exported, keys, kv.vectors)
    by_path = api.evaluate(exported, prepared_synth, k=20, seed=13)
    assert by_array["ndcg"] == by_pair["ndcg"] == by_embeddings["ndcg"] == by_path["ndcg"] == metrics["ndcg"]
    assert by_array["alignment"]["ignored_keys"] == 1
    test = api.evaluate(kv, prepared_synth, split="test", k=20, seed=13)
    assert test["pairs_out"] != metrics["pairs_out"]


def test_mistakes_raise_input_errors(study_url: str, prepared_synth: Path) -> None:
    with pytest.raises(InputError, match="has no trial 99"):
        api.vectors("tiny", 99, study_url)
    with pytest.raises(InputError, match="study 'nope' not found"):
        api.trials("nope", study_url)
    with pytest.raises(InputError, match="needs vocabulary="):
        api.evaluate(np.zeros((3, 4), dtype=np.float32), prepared_synth)
    with pytest.raises(InputError, match="none of the 2 keys"):
        api.evaluate((np.ones((2, 4)), ["a", "b"]), prepared_synth)
    with pytest.raises(InputError, match="split 'train'"):
        api.evaluate((np.ones((2, 4)), ["a", "b"]), prepared_synth, split="train")


_GLOBALS_SCRIPT = textwrap.dedent('''
    import json, logging, sys, warnings

    def state():
        levels = {name: logger.level for name, logger in logging.Logger.manager.loggerDict.items()
                  if isinstance(logger, logging.Logger)}
        return [repr(f) for f in warnings.filters], levels, logging.getLogger().level

    before = state()
    import hpo.api
    after_import = state()
    heavy = sorted(m for m in ("optuna", "pandas", "gensim", "faiss", "sqlalchemy", "hpo.study") if m in sys.modules)
    # A notebook's own settings: they must survive every call.
    import optuna
    optuna.logging.set_verbosity(optuna.logging.INFO)
    logging.getLogger("gensim").setLevel(logging.DEBUG)
    warnings.simplefilter("always")
    configured = state()
    url, prepared = sys.argv[1], sys.argv[2]
    hpo.api.front("tiny", url)
    kv = hpo.api.vectors("tiny", 0, url)
    hpo.api.evaluate(kv, prepared, k=20, seed=13)
    after_calls = state()
    changed = {name: (level, after_calls[1].get(name)) for name, level in configured[1].items()
               if after_calls[1].get(name) != level}
    print(json.dumps({"import_same": before == after_import, "heavy": heavy,
                      "filters_same": configured[0] == after_calls[0], "changed_levels": changed,
                      "root_same": configured[2] == after_calls[2]}))
''')


def test_import_and_calls_keep_warning_filters_and_logging_levels(study_url: str, prepared_synth: Path) -> None:
    result = subprocess.run([sys.executable, "-c", _GLOBALS_SCRIPT, study_url, str(prepared_synth)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"import_same": True, "heavy": [], "filters_same": True, "changed_levels": {},
                      "root_same": True}
