"""``songhpo experiment``: the paper's modes with one budget, test evaluation of the chosen configurations,
the scale study, and the results page with its claim verdicts.

The whole experiment runs through the real CLI on a small synthetic dataset; the statistics are checked
against scipy; the verdict rules against documents built to make each claim true or false.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dashboards.experiment import claim_verdicts, difference_interval, mean_interval, render_markdown
from hpo.cli.main import build_parser
from hpo.config import parse_config
from hpo.data.dataset import PreparedDataset
from hpo.experiment import LITERATURE, MODES, ExperimentSettings, clustering_objective, multi_objectives, plan_studies
from hpo.search import LITERATURE_SETTINGS, population_size
from hpo.trials import training_subset, trial_data
from objectives.trial import baseline_params
from objectives.word2vec import GENSIM_DEFAULTS
from storage import results as store
from storage.errors import InputError
from tests.conftest import assert_one_line_error, run_cli, shared_dataset

CHROMIUM = Path(os.environ.get("SONGHPO_CHROMIUM", "/usr/bin/chromium"))

samples = st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2, max_size=8)


# -- statistics ------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on nearly equal samples
@settings(max_examples=60, deadline=None)
@given(a=samples, b=samples)
def test_difference_interval_is_scipys_welch_interval(a: list[float], b: list[float]) -> None:
    diff = difference_interval(a, b)
    assert diff.delta == pytest.approx(np.mean(a) - np.mean(b), abs=1e-9)
    if np.var(a) == 0 and np.var(b) == 0:
        assert diff.low == diff.high == diff.delta
        return
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    if not (math.isfinite(expected.low) and math.isfinite(expected.high)):
        return
    assert diff.low == pytest.approx(expected.low, rel=1e-7, abs=1e-7)
    assert diff.high == pytest.approx(expected.high, rel=1e-7, abs=1e-7)
    assert diff.significant == (expected.low > 0 or expected.high < 0)


@settings(max_examples=60, deadline=None)
@given(values=samples)
def test_mean_interval_is_scipys_t_interval(values: list[float]) -> None:
    interval = mean_interval(values)
    assert interval.n == len(values)
    if np.std(values) == 0:
        assert interval.low == pytest.approx(interval.mean) and interval.high == pytest.approx(interval.mean)
        return
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert interval.low == pytest.approx(low, rel=1e-7, abs=1e-7)
    assert interval.high == pytest.approx(high, rel=1e-7, abs=1e-7)


def test_intervals_without_enough_values() -> None:
    assert mean_interval([None, 2.0]).low is None and mean_interval([None, 2.0]).mean == 2.0
    assert mean_interval([]).mean is None
    one_sided = difference_interval([1.0], [0.0, 1.0])
    assert one_sided.delta == 0.5 and one_sided.low is None and not one_sided.significant
    assert difference_interval([None], [1.0]).delta is None


# -- training subsets ------------------------------------------------------------------------------


def test_training_subsets_are_seeded_nested_and_ordered() -> None:
    sentences = [[str(i)] for i in range(1000)]
    small, large = training_subset(sentences, 0.1, 3), training_subset(sentences, 0.5, 3)
    assert len(small) == 100 and len(large) == 500
    assert small == training_subset(sentences, 0.1, 3)  # seeded
    assert {s[0] for s in small} <= {s[0] for s in large}  # nested
    assert [int(s[0]) for s in large] == sorted(int(s[0]) for s in large)  # original order
    assert small != training_subset(sentences, 0.1, 4)
    assert training_subset(sentences, 1.0, 3) is sentences
    assert len(training_subset(sentences[:3], 0.01, 0)) == 1


def test_config_fraction_reaches_the_trials(prepared_synth: Path) -> None:
    dataset = PreparedDataset.load(prepared_synth)
    full = trial_data(parse_config({"name": "a", "dataset": str(prepared_synth)}, "t"), dataset)
    quarter = trial_data(parse_config({"name": "a", "dataset": str(prepared_synth), "training": {"fraction": 0.25}},
                                      "t"), dataset)
    assert len(quarter.sentences) == round(0.25 * len(full.sentences))
    # Validation pairs do not depend on the training subset.
    assert np.array_equal(quarter.evaluation.pairs_out, full.evaluation.pairs_out)
    with pytest.raises(InputError, match="cfg.toml: field 'training.fraction'"):
        parse_config({"name": "a", "dataset": "x", "training": {"fraction": 0}}, "cfg.toml")


# -- planning on real label availability ---------------------------------------------------------


def test_plans_follow_the_labels_a_dataset_has(prepared_synth: Path, tmp_path: Path) -> None:
    synth = PreparedDataset.load(prepared_synth)
    assert multi_objectives(synth) == ["ndcg", "ch_artist", "ch_genre"]
    assert clustering_objective(synth) == "ch_artist"
    plans = plan_studies(ExperimentSettings(dataset=prepared_synth, out=tmp_path, trials=7, scales=(0.1, 1.0)), synth)
    assert [p.config.name for p in plans] == ["exp-baseline", "exp-literature", "exp-ndcg", "exp-clustering",
                                              "exp-random", "exp-nsga2", "exp-nsga2-free", "exp-scale-10pct"]
    by_name = {p.config.name: p.config for p in plans}
    assert by_name["exp-baseline"].trials == 1 and by_name["exp-literature"].trials == 1
    # The re-run's defaults: songhpo's space, and NSGA-II generations that follow the budget.
    assert by_name["exp-nsga2"].search_preset == "default" and "epochs" in by_name["exp-nsga2"].search_space
    assert by_name["exp-nsga2"].sampler.population_size is None
    assert population_size(by_name["exp-nsga2"]) == population_size(
        by_name["exp-nsga2"].model_copy(update={"sampler": by_name["exp-nsga2"].sampler.model_copy(
            update={"population_size": 8})}))  # 7 trials: round(7 / 5) clipped up to 8
    # The literature study fixes the published setting: its trial 0 trains it (nothing else is gensim's default).
    literature = by_name["exp-literature"].search_space
    assert {n: literature[n] for n in LITERATURE_SETTINGS[LITERATURE]} == LITERATURE_SETTINGS[LITERATURE]
    assert baseline_params(literature) == {n: GENSIM_DEFAULTS[n] for n in ("negative", "alpha")}
    assert all(c.trials == 7 for n, c in by_name.items() if n not in ("exp-baseline", "exp-literature"))
    assert by_name["exp-ndcg"].objectives == ["ndcg"] and by_name["exp-ndcg"].sampler.name == "tpe"
    assert not by_name["exp-ndcg"].constraint.enabled and by_name["exp-nsga2"].constraint.enabled
    assert not by_name["exp-nsga2-free"].constraint.enabled
    assert by_name["exp-nsga2-free"].objectives == by_name["exp-nsga2"].objectives
    assert by_name["exp-random"].objectives == by_name["exp-nsga2"].objectives
    assert by_name["exp-scale-10pct"].training.fraction == 0.1 and by_name["exp-nsga2"].training.fraction == 1.0
    both = plan_studies(ExperimentSettings(dataset=prepared_synth, out=tmp_path, modes=("nsga2",), scales=(0.5, 1.0),
                                           scale_modes=("nsga2", "nsga2-free")), synth)
    assert [(p.config.name, p.scale_of) for p in both] == [
        ("exp-nsga2", None), ("exp-scale-50pct", "nsga2"), ("exp-free-scale-50pct", "nsga2-free"),
        ("exp-free-scale-100pct", "nsga2-free")]  # nsga2-free was not run as a mode: its 100% point is planned
    assert not {p.config.name: p.config for p in both}["exp-free-scale-50pct"].constraint.enabled
    fixed = plan_studies(ExperimentSettings(dataset=prepared_synth, out=tmp_path, modes=("baseline", "literature", "ndcg"),
                                            scales=(), fixed=(("min_count", 1), ("window", 4))), synth)
    for plan in fixed:  # fixed in every study, the baseline and literature included; --fix wins over the literature
        assert plan.config.search_space["min_count"] == 1 and plan.config.search_space["window"] == 4
    assert fixed[1].config.search_space["vector_size"] == 50
    override = plan_studies(ExperimentSettings(dataset=prepared_synth, out=tmp_path, modes=("nsga2",), scales=(),
                                               population_size=6, search_preset="paper"), synth)[0].config
    assert override.sampler.population_size == 6 and "epochs" not in override.search_space


def test_aotm2011_has_no_artists_so_clustering_is_ch_genre(tmp_path: Path) -> None:
    result = run_cli("data", "prepare", str(shared_dataset("aotm2011")), "--out", str(tmp_path / "aotm"))
    assert result.returncode == 0, result.stderr
    aotm = PreparedDataset.load(tmp_path / "aotm")
    assert multi_objectives(aotm) == ["ndcg", "ch_genre"]
    assert clustering_objective(aotm) == "ch_genre"
    # No hard negatives: NSGA-II runs without the safeguard anyway, so nsga2-free is not planned twice.
    names = [p.config.name for p in plan_studies(ExperimentSettings(dataset=tmp_path / "aotm", out=tmp_path), aotm)]
    assert "exp-nsga2" in names and "exp-nsga2-free" not in names


def test_mpd_playlists_have_artists_but_no_genres(tmp_path: Path) -> None:
    from tests.test_mpd import _write_slices

    _write_slices(tmp_path / "mpd", n_slices=2, per_slice=60)
    result = run_cli("data", "prepare", str(tmp_path / "mpd"), "--format", "mpd", "--out", str(tmp_path / "prep"))
    assert result.returncode == 0, result.stderr
    mpd = PreparedDataset.load(tmp_path / "prep")
    assert multi_objectives(mpd) == ["ndcg", "ch_artist"]
    assert clustering_objective(mpd) == "ch_artist"


# -- the whole experiment through the CLI -------------------------------------------------------------


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("experiment")
    assert run_cli("data", "synth", "--out", str(root / "raw"), "--sequences", "1500", "--tracks", "400").returncode == 0
    assert run_cli("data", "prepare", str(root / "raw"), "--out", str(root / "prep")).returncode == 0
    command = ("experiment", "run", "--dataset", str(root / "prep"), "--out", str(root / "exp"), "--trials", "4",
               "--seeds", "2", "--population-size", "2", "--scales", "0.25,1")
    first = run_cli(*command)
    assert first.returncode == 0, first.stderr
    document = json.loads((root / "exp" / "results.json").read_text())
    again = run_cli(*command)
    return {"root": root, "first": first, "again": again, "document": document,
            "url": f"sqlite:///{root / 'exp' / 'experiment.db'}"}


def test_every_mode_has_the_same_budget(experiment: dict) -> None:
    studies = {s["study"]: s for s in experiment["document"]["studies"]}
    assert set(studies) == {"exp-baseline", "exp-literature", "exp-ndcg", "exp-clustering", "exp-random", "exp-nsga2",
                            "exp-nsga2-free", "exp-scale-25pct"}
    assert studies["exp-baseline"]["trials_complete"] == studies["exp-literature"]["trials_complete"] == 1
    assert {s["trials_complete"] for n, s in studies.items() if n not in ("exp-baseline", "exp-literature")} == {4}
    assert studies["exp-clustering"]["objectives"] == ["ch_artist"]
    # No [search_space] in the plan: songhpo's default space is searched (trial 0 is the only default one).
    for name in ("exp-ndcg", "exp-random", "exp-nsga2"):
        trials = sorted(studies[name]["trials"], key=lambda t: t["number"])
        assert set(trials[1]["params"]) == {"vector_size", "window", "ns_exponent", "negative", "alpha", "epochs",
                                            "sample"}
        assert len({t["params"]["window"] for t in trials}) > 1
    # Every trial keeps the validation coherences (the CH-proxy analysis) and what it trained.
    (literature,) = studies["exp-literature"]["trials"]
    assert not literature["baseline"] and literature["training_params"]["epochs"] == 110
    assert literature["training_params"]["vector_size"] == 50 and literature["coherence_artist"] is not None
    assert all(t["coherence_genre"] is not None and t["seed"] is not None for t in studies["exp-nsga2"]["trials"])
    summary = json.loads(experiment["first"].stdout)
    assert summary["results"].endswith("results.json") and "exp-nsga2" in summary["studies"]


def test_chosen_configurations_are_evaluated_on_test_with_every_seed(experiment: dict) -> None:
    document, url = experiment["document"], experiment["url"]
    labels = {c["label"] for c in document["configurations"]}
    assert {"baseline", "literature", "ndcg", "clustering", "random", "nsga2", "nsga2 best-ndcg", "nsga2-free",
            "nsga2 @ 25%"} <= labels
    (literature,) = [c for c in document["configurations"] if c["label"] == "literature"]
    assert literature["params"]["ns_exponent"] == -0.5 and literature["params"]["sample"] == 1e-5
    for config in document["configurations"]:
        assert [run["seed"] for run in config["test_runs"]] == [config["trial"], config["trial"] + 1000]
        assert config["test_runs"][0]["metrics"]["continuation_playlists"] > 0
    # The nsga2 study's snapshot holds exactly its chosen trials and its baseline, not the whole front.
    chosen = {c["trial"] for c in document["configurations"] if c["study"] == "exp-nsga2"}
    snapshot = store.load_latest_snapshot(url, "exp-nsga2")
    assert {m["trial"] for m in snapshot["members"]} == chosen | {0}
    assert snapshot["seeds"] == 2 and snapshot["complete"]
    # The single-objective choice is the study's best validation trial.
    ndcg_study = next(s for s in document["studies"] if s["study"] == "exp-ndcg")
    best = max(ndcg_study["trials"], key=lambda t: t["ndcg"])
    assert next(c for c in document["configurations"] if c["label"] == "ndcg")["trial"] == best["number"]


def test_baselines_agree_across_studies_and_scale_changes_the_data(experiment: dict) -> None:
    configs = experiment["document"]["configurations"]
    full = [c for c in configs if c["trial"] == 0 and c["fraction"] == 1.0 and c["mode"] != "literature"]
    assert len(full) >= 5
    reference = [run["metrics"] for run in full[0]["test_runs"]]
    for other in full[1:]:
        assert [run["metrics"]["ndcg"] for run in other["test_runs"]] == [m["ndcg"] for m in reference]
    quarter = next(c for c in configs if c["study"] == "exp-scale-25pct" and c["trial"] == 0)
    assert quarter["test_runs"][0]["metrics"]["songs_present"] < reference[0]["songs_present"]
    scale = next(s for s in experiment["document"]["studies"] if s["study"] == "exp-scale-25pct")
    dataset = PreparedDataset.load(experiment["root"] / "prep")
    assert scale["training_sequences"] == round(0.25 * (len(dataset.train_offsets) - 1))


def test_running_again_resumes_without_training(experiment: dict) -> None:
    again = experiment["again"]
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert "0 to train" in again.stderr and "to train" in again.stderr
    assert not any(f"{n} to train" in again.stderr for n in range(1, 20))
    document = json.loads((experiment["root"] / "exp" / "results.json").read_text())
    assert document["configurations"] == experiment["document"]["configurations"]


def test_report_without_a_browser_is_a_one_line_error_and_writes_nothing(experiment: dict, tmp_path: Path) -> None:
    # kaleido takes Chromium from BROWSER_PATH or PATH: here neither leads to one, as on a machine without it.
    no_browser = tmp_path / "bin"
    no_browser.mkdir()
    out = tmp_path / "docs" / "synth.md"
    result = run_cli("experiment", "report", str(experiment["root"] / "exp"), "--out", str(out),
                     env={"PATH": str(no_browser), "BROWSER_PATH": str(no_browser / "chromium")})
    assert_one_line_error(result, f"--out {out}: cannot export the page's figures", "--no-png")
    assert not out.parent.exists() or not any(out.parent.iterdir())  # neither the page nor a figure
    with_flag = run_cli("experiment", "report", str(experiment["root"] / "exp"), "--out", str(out), "--no-png",
                        env={"PATH": str(no_browser), "BROWSER_PATH": str(no_browser / "chromium")})
    assert with_flag.returncode == 0, with_flag.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["synth.md"]


def test_report_writes_the_page_and_figures(experiment: dict, tmp_path: Path) -> None:
    png = CHROMIUM.exists()
    if not png and os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs chromium for the PNG export")
    out = tmp_path / "docs" / "synth.md"
    notes = tmp_path / "notes.md"
    notes.write_text("The baseline wins on synthetic data.\n")
    result = run_cli("experiment", "report", str(experiment["root"] / "exp"), "--out", str(out), "--title", "synth",
                     *([] if png else ["--no-png"]), "--command", "songhpo experiment run --dataset prep --out exp",
                     "--notes", str(notes))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    for heading in ("## Verdicts per paper claim", "## Headline (test split)", "## Side effects", "## Popularity buckets",
                    "## Downstream: playlist continuation", "## Scale study", "## How to reproduce"):
        assert heading in page
    assert "songhpo experiment run --dataset prep --out exp" in page
    assert "## Notes\n\nThe baseline wins on synthetic data." in page
    umask = os.umask(0)
    os.umask(umask)
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~umask)  # an ordinary file, not the private temporary
    verdicts = ("supported", "not supported", "partly supported", "not testable")
    assert sum(page.count(f"**{v}**") for v in verdicts) == 8
    # Issue 18's rows, with numbers from the real run: the anchors against the front, the CH proxy (every trial
    # kept its coherences), popularity in both bucketings and at the head.
    number = r"-?\d+(\.\d+)?(e-?\d+)?"
    assert re.search(rf"\| literature setting \(Caselles-Dupré et al\. 2018\) \| 0 \| {number} \[", page)
    assert re.search(r"\| gensim's defaults \| 0 \| .*\| dominated by (none|\d+ \(trials? [\d, ]+\)) of \d+; "
                     r"dominates", page)
    assert re.search(rf"\| CH-artist vs artist coherence \| well-trained \| \d+ \| {number} \| \[{number}, {number}\] \| "
                     r"(holds|weak|fails) \|", page)
    assert re.search(rf"\| Calinski-Harabasz is a valid proxy .*\| \*\*[a-z ]+\*\* \| CH-artist vs artist coherence: "
                     rf"ρ = [+-]{number}", page)
    assert re.search(r"\| Next-song quality is anti-correlated with popularity at the head .*equal-pair deciles: "
                     r"Spearman ρ = [+-]\d\.\d\d over deciles", page)
    pair_table = page[page.index("### Equal-pair deciles"):page.index("## Is Calinski-Harabasz")]
    assert re.search(rf"\| 10 \({number}, {number}\] \| \d+ \| {number} \[", pair_table)
    if png:
        for name in ("buckets", "buckets-pairs", "scale", "search"):
            image = out.parent / f"synth-{name}.png"
            assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"(synth-{name}.png)" in page


@pytest.mark.parametrize(("args", "message"), [
    (("--modes", "ndcg,grid"), "--modes: unknown mode 'grid'"),
    (("--scales", "0.5,2"), "--scales: 2.0 is not a fraction"),
    (("--scales", "half"), "--scales: 'half' is not a number"),
    (("--trials", "1"), "--trials 1: expected at least 2"),
    (("--scale-modes", "tpe"), "--scale-modes: unknown mode 'tpe'"),
    (("--fix", "hidden=3"), "--fix hidden=3: unknown parameter 'hidden'"),
    (("--fix", "min_count=x"), "--fix min_count=x: 'x' is not a number"),
    (("--fix", "window=0"), "field 'search_space"),
])
def test_bad_arguments_are_one_line_errors(prepared_synth: Path, tmp_path: Path, args: tuple, message: str) -> None:
    assert_one_line_error(run_cli("experiment", "run", "--dataset", str(prepared_synth), "--out", str(tmp_path / "e"),
                                  *args), message)
    assert not (tmp_path / "e").exists()


def _write_document(directory: Path, document: dict) -> Path:
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(document))
    return directory


def test_the_prepare_command_names_every_parameter_that_differs_from_the_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpo.data.prepare import PrepareParams
    from hpo.experiment import prepare_command

    monkeypatch.chdir(tmp_path)
    params = {**asdict(PrepareParams()), "val": 0.2, "seed": 3, "hardneg_scope": "sequence", "min_cooc": 4}
    dataset = {"path": str(tmp_path.parent / "prep"), "source": {"path": "/data/raw dir", "format": "generic"},
               "parameters": params, "dropped": {"short_sequences": 5, "tracks_without_metadata": 0}}
    command = prepare_command(dataset)
    assert command is not None
    args = build_parser().parse_args(shlex.split(command)[1:])
    # A path beside the current directory is shown relative to it, one far from it as it is.
    assert (str(args.input), str(args.out), args.format) == ("/data/raw dir", "../prep", "generic")
    assert (args.val, args.test, args.seed, args.hardneg_scope, args.hardneg_rule, args.min_cooc,
            args.critical_value) == tuple(params.values())
    assert args.drop_short and not args.allow_missing_metadata
    # The other readers drop short sequences themselves; one MPD slice is named, several by their directory.
    slices = [{"name": f"mpd.slice.{i}000-{i}999.json"} for i in range(2)]
    mpd = {"path": "/mpd/data", "format": "mpd", "input_files": slices[:1]}
    args = build_parser().parse_args(shlex.split(str(prepare_command({**dataset, "source": mpd})))[1:])
    assert (str(args.input), args.format, args.drop_short) == ("/mpd/data/mpd.slice.0000-0999.json", "mpd", False)
    args = build_parser().parse_args(shlex.split(str(prepare_command({**dataset, "source": {**mpd, "input_files": slices}})))[1:])
    assert str(args.input) == "/mpd/data"
    assert prepare_command({**dataset, "source": {}}) is None


def test_experiments_split_over_runs_merge_into_the_same_page(experiment: dict, tmp_path: Path) -> None:
    from hpo.experiment import load_results, merge_results

    whole = experiment["document"]
    single = {"baseline", "literature", "ndcg", "clustering"}
    parts = []
    for keep in (lambda s: s["mode"] in single, lambda s: s["mode"] not in single):
        studies = [s for s in whole["studies"] if keep(s)]
        names = {s["study"] for s in studies}
        parts.append({**whole, "studies": studies,
                      "configurations": [c for c in whole["configurations"] if c["study"] in names]})
    # The first as an older songhpo wrote it, without how its dataset was prepared: the merge keeps the second's.
    parts[0]["dataset"] = {k: v for k, v in whole["dataset"].items() if k not in ("parameters", "dropped")}
    dirs = [_write_document(tmp_path / "a", parts[0]), _write_document(tmp_path / "b", parts[1])]
    merged = merge_results([load_results(d) for d in dirs], [str(d) for d in dirs])
    assert [s["study"] for s in merged["studies"]] == [s["study"] for s in whole["studies"]]
    assert merged["dataset"] == whole["dataset"] and whole["dataset"]["parameters"]["val"] == 0.1
    page = render_markdown(merged, title="t", commands=["x"], figures=[])
    assert page == render_markdown(whole, title="t", commands=["x"], figures=[])
    result = run_cli("experiment", "report", *map(str, dirs), "--out", str(tmp_path / "page.md"), "--no-png")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "page.md").read_text()
    assert page.count("| nsga2 |") >= 1
    # Its reproduce commands: the 'data prepare' that makes the same dataset (the real CLI, run elsewhere, prints
    # the fingerprint the comment names), one 'experiment run' per directory, which the real CLI parses back into
    # the settings and the modes that directory holds, and the report command as it was given.
    comment, prepare, *reproduce = page.split("## How to reproduce")[1].split("```")[1].strip().splitlines()[1:]
    fingerprint = whole["dataset"]["fingerprint"]
    assert comment.endswith(f'"fingerprint": "{fingerprint}"')
    words = shlex.split(prepare)[1:]
    words[words.index("--out") + 1] = str(tmp_path / "prepared-again")
    prepared = run_cli(*words)
    assert prepared.returncode == 0, prepared.stderr
    assert json.loads(prepared.stdout)["fingerprint"] == fingerprint
    assert len(reproduce) == 3
    assert reproduce[2] == f"songhpo experiment report {dirs[0]} {dirs[1]} --out {tmp_path / 'page.md'}"
    for line, directory, part in zip(reproduce, dirs, parts):
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert str(args.out) == str(directory) and args.seed == whole["settings"]["seed"]
        assert (args.trials, args.seeds, args.population_size) == (whole["settings"]["trials"], whole["settings"]["seeds"],
                                                                   whole["settings"]["population_size"])
        held = {s["mode"] for s in part["studies"]}
        assert args.modes.split(",") == [m for m in MODES if m in held]
        fractions = sorted({s["fraction"] for s in part["studies"] if s["mode"] == "scale"}
                           | ({1.0} if "scale" in held else set()))
        assert (sorted(map(float, args.scales.split(","))) if args.scales else []) == fractions

    # Different settings or the same study twice cannot share a page.
    other = _write_document(tmp_path / "c", {**parts[1], "settings": {**parts[1]["settings"], "trials": 9}})
    clash = run_cli("experiment", "report", str(dirs[0]), str(other), "--out", str(tmp_path / "x.md"), "--no-png")
    assert_one_line_error(clash, "--trials 9 differs")
    fixed = _write_document(tmp_path / "d", {**parts[1], "settings": {**parts[1]["settings"], "fixed": [["min_count", 1]]}})
    mixed = run_cli("experiment", "report", str(dirs[0]), str(fixed), "--out", str(tmp_path / "x.md"), "--no-png")
    assert_one_line_error(mixed, "--fix [['min_count', 1]] differs")
    twice = run_cli("experiment", "report", str(dirs[0]), str(dirs[0]), "--out", str(tmp_path / "x.md"), "--no-png")
    assert_one_line_error(twice, "is also in")
    assert not (tmp_path / "x.md").exists()


def test_report_of_a_missing_or_foreign_results_file(tmp_path: Path) -> None:
    missing = run_cli("experiment", "report", str(tmp_path), "--out", str(tmp_path / "x.md"))
    assert_one_line_error(missing, "no experiment results")
    (tmp_path / "results.json").write_text('{"format": "other"}')
    foreign = run_cli("experiment", "report", str(tmp_path), "--out", str(tmp_path / "x.md"))
    assert_one_line_error(foreign, "not a songhpo experiment results file")
    assert not (tmp_path / "x.md").exists()


# -- verdict rules ---------------------------------------------------------------------------------------------


def _run(seed: int, **metrics: float) -> dict:
    buckets = metrics.pop("buckets", None)
    return {"seed": seed, "metrics": metrics,
            "buckets": None if buckets is None else {"edges": DECILE_EDGES,
                                                     "by_target": {"ndcg": buckets, "hitrate": buckets,
                                                                   "pairs": [1] * len(buckets)}}}


def _config(label: str, mode: str, study: str, values: dict[str, float], fraction: float = 1.0, trial: int = 1) -> dict:
    noise = (-0.001, 0.0, 0.001)
    runs = []
    for i, eps in enumerate(noise):
        metrics = {m: v + eps * (abs(v) + 1) for m, v in values.items() if m != "buckets"}
        if "buckets" in values:
            metrics["buckets"] = [b + eps for b in values["buckets"]]
        runs.append(_run(trial + 1000 * i, **metrics))
    return {"label": label, "mode": mode, "study": study, "fraction": fraction, "trial": trial, "rule": "r",
            "params": {"vector_size": 100}, "validation": {}, "test_runs": runs}


def _document(configs: list[dict], studies: list[dict]) -> dict:
    return {"settings": {"k": 10, "trials": 4, "seeds": 3, "population_size": 2, "seed": 0, "dataset": "d", "out": "o"},
            "dataset": {"path": "d", "fingerprint": "f" * 64, "counts": {}}, "songhpo": "test",
            "studies": studies, "configurations": configs}


def _study(name: str, mode: str, objectives: list[str], fraction: float = 1.0, seconds: float = 1.0) -> dict:
    return {"study": name, "mode": mode, "fraction": fraction, "objectives": objectives, "sampler": "tpe",
            "safeguard": {"enabled": True}, "trials_complete": 4, "trials_failed": 0, "infeasible": 0, "front_size": 1,
            "best_validation": {}, "trial_seconds": [seconds], "optimisation_seconds": seconds, "trials": [],
            "training_sequences": 10}


#: Deciles 1-2 hold songs with 1-4 training plays: below gensim's min_count 5, they score 0 whatever the model.
DECILE_EDGES = [0, 2, 4, 5, 6, 7, 8, 10, 12, 15, 40]
BASE = {"ndcg": 0.10, "ch_artist": 10.0, "ch_genre": 20.0, "hardneg": 0.01, "continuation_rprecision": 0.05,
        "continuation_ndcg": 0.1, "buckets": [0.0, 0.0, 0.3, 0.25, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04]}


def test_verdicts_follow_the_numbers() -> None:
    multi = ["ndcg", "ch_artist", "ch_genre"]
    configs = [
        _config("baseline", "baseline", "b", BASE, trial=0),
        # Single-objective NDCG: NDCG up, clustering down (a side effect).
        _config("ndcg", "ndcg", "n", {**BASE, "ndcg": 0.2, "ch_artist": 5.0}),
        # Single-objective CH: CH up, NDCG down.
        _config("clustering", "clustering", "c", {**BASE, "ch_artist": 20.0, "ndcg": 0.05}),
        # NSGA-II: NDCG up, nothing worse, flatter buckets, better continuation.
        _config("nsga2", "nsga2", "m", {**BASE, "ndcg": 0.15, "continuation_ndcg": 0.2,
                                         "buckets": [0.0, 0.0] + [0.2] * 8}),
        _config("baseline of m", "study-baseline", "m", BASE, trial=0),
        _config("nsga2 @ 10%", "scale", "s", {**BASE, "ndcg": 0.07}, fraction=0.1),
        _config("baseline of s", "study-baseline", "s", {**BASE, "ndcg": 0.06}, fraction=0.1, trial=0),
    ]
    studies = [_study("b", "baseline", multi), _study("n", "ndcg", ["ndcg"]), _study("c", "clustering", ["ch_artist"]),
               _study("m", "nsga2", multi, seconds=4.0), _study("s", "scale", multi, fraction=0.1)]
    claims = {v.key: v for v in claim_verdicts(_document(configs, studies))}
    verdicts = {key: v.verdict for key, v in claims.items()}
    assert verdicts["side_effects"] == "supported"
    assert "ch_artist" in claims["side_effects"].evidence
    assert verdicts["mitigation"] == "supported"
    assert verdicts["popularity"] == "supported"  # 0.3 at decile 3 (the first with vectors), 0.04 at the top
    assert "over deciles 3-10" in claims["popularity"].evidence
    assert verdicts["popularity_head"] == "supported"  # 0.08, 0.06, 0.04 in deciles 8-10
    assert "equal-pair deciles: not available" in claims["popularity"].evidence  # built without that bucketing
    assert verdicts["ch_proxy"] == "not testable"  # these studies kept no trials
    assert verdicts["rebalancing"] == "supported"
    assert verdicts["downstream"] == "supported"
    assert verdicts["scale"] == "supported"  # 0.07 -> 0.15, gain 0.01 -> 0.05

    # Turn each claim false.
    rising = [0.0, 0.0, *BASE["buckets"][:1:-1]]  # NDCG grows with popularity
    configs[1] = _config("ndcg", "ndcg", "n", {**BASE, "ndcg": 0.2, "buckets": rising})
    configs[2] = _config("clustering", "clustering", "c", {**BASE, "ch_artist": 20.0, "buckets": rising})
    configs[3] = _config("nsga2", "nsga2", "m", {**BASE, "continuation_ndcg": 0.05, "ch_genre": 1.0,
                                                 "buckets": [b * 2 for b in BASE["buckets"]]})
    configs[0] = _config("baseline", "baseline", "b", {**BASE, "buckets": rising}, trial=0)
    configs[5] = _config("nsga2 @ 10%", "scale", "s", {**BASE, "ndcg": 0.2}, fraction=0.1)
    verdicts = {v.key: v.verdict for v in claim_verdicts(_document(configs, studies))}
    assert verdicts["side_effects"] == "not supported"
    assert verdicts["mitigation"] == "not supported"
    assert verdicts["popularity"] == "not supported"
    # nsga2's continuation got worse; the single-objective configurations did not change it.
    assert verdicts["downstream"] == "not supported"
    assert verdicts["scale"] == "not supported"
    page = render_markdown(_document(configs, studies), title="t", commands=["songhpo x"], figures=[])
    assert verdicts["rebalancing"] == "not supported"  # nsga2 doubled every decile: a wider gap
    assert verdicts["popularity_head"] == "not supported"
    assert page.count("**not supported**") == 7
    assert "Fixed in every study" not in page
    fixed = {**_document(configs, studies)}
    fixed["settings"] = {**fixed["settings"], "fixed": [["min_count", 1]]}
    assert "Fixed in every study, the baseline included: min_count = 1." in render_markdown(
        fixed, title="t", commands=[], figures=[])
    assert "| CH-artist | 10 [" in page  # the side-effects row: baseline mean with its interval
