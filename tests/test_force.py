"""``--force`` never replaces what it must not: the input (the directory itself, one holding it, one inside it,
a symbolic link to it; the SQLite file of a study), the current directory, the home directory or a filesystem
root. Every refusal through the real CLI is exit 2, one stderr line, and the tree exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def work(synth_dir: Path, tmp_path: Path) -> Path:
    """``tmp/work`` holding a raw dataset ``raw/`` (a copy of the small synthetic one) and ``sub/keep.txt``."""
    work = tmp_path / "work"
    (work / "raw").mkdir(parents=True)
    for name in ("plays.csv", "tracks.csv"):
        (work / "raw" / name).write_bytes((synth_dir / name).read_bytes())
    (work / "sub").mkdir()
    (work / "sub" / "keep.txt").write_text("precious\n")
    return work


def _refused(tmp_path: Path, args: list[str], cwd: Path, *fragments: str, env: dict[str, str] | None = None) -> None:
    before = _tree(tmp_path)
    assert_one_line_error(run_cli("-q", *args, cwd=cwd, env=env), "songhpo: error: --out ", *fragments)
    assert _tree(tmp_path) == before  # nothing deleted, nothing left behind



@pytest.mark.parametrize(("out", "cwd", "fragments"), [
    ("raw", ".", ["is the input raw", "choose an --out outside the input"]),
    ("raw/..", ".", ["holds the input raw"]),                     # would delete the input with its parent
    (".", ".", ["holds the input raw"]),                          # the current directory, which holds the input
    ("raw/deep", ".", ["lies inside the input raw"]),             # part of the input
    ("link", ".", ["is the input raw"]),                          # a symbolic link is followed
    ("..", "sub", ["holds the input ../raw"]),                    # from another directory
    ("/", ".", ["is a filesystem root"]),
])
def test_prepare_force_never_replaces_the_input_cwd_or_a_root(work: Path, tmp_path: Path, out: str, cwd: str,
                                                              fragments: list[str]) -> None:
    (work / "raw" / "deep").mkdir()
    (work / "link").symlink_to(work / "raw")
    args = ["data", "prepare", "raw" if cwd == "." else "../raw", "--out", out, "--force"]
    _refused(tmp_path, args, work / cwd, *fragments)


def test_synth_and_demo_never_replace_the_current_or_home_directory(work: Path, tmp_path: Path) -> None:
    small = ["--sequences", "300", "--tracks", "300"]
    _refused(tmp_path, ["data", "synth", "--out", ".", "--force", *small], work / "sub", "is the current directory")
    _refused(tmp_path, ["data", "synth", "--out", "/", "--force", *small], work, "is a filesystem root")
    _refused(tmp_path, ["demo", "--out", ".", "--force", "--trials", "1"], work / "sub", "is the current directory")
    _refused(tmp_path, ["demo", "--out", "..", "--force", "--trials", "1"], work / "sub", "holds the current directory")
    _refused(tmp_path, ["demo", "--out", str(work), "--force", "--trials", "1"], tmp_path, "is the home directory",
             env={"HOME": str(work)})


def test_study_outputs_never_replace_the_study_or_its_dataset(prepared_synth: Path, work: Path, tmp_path: Path) -> None:
    storage = work / "s.db"
    storage.write_bytes(b"SQLite format 3\0")  # refused before it is opened
    url = f"sqlite:///{storage}"
    _refused(tmp_path, ["pareto", "export", "tiny", "--storage", url, "--out", str(storage), "--format", "csv",
                        "--force"], work, "is the input")
    _refused(tmp_path, ["report", "tiny", "--storage", url, "--out", str(storage)], work, "is the input")
    _refused(tmp_path, ["concepts", "tiny", "--trial", "0", "--storage", url, "--out", str(work), "--force"], tmp_path,
             "holds the input")
    embeddings = work / "e.npy"
    embeddings.write_bytes(b"")
    _refused(tmp_path, ["concepts", "--embeddings", str(embeddings), "--prepared", str(work / "sub"),
                        "--out", str(work / "sub"), "--force"], tmp_path, "is the input")


def test_study_init_refuses_a_directory(work: Path, tmp_path: Path) -> None:
    before = _tree(tmp_path)
    assert assert_one_line_error(run_cli("study", "init", "--out", ".", "--force", cwd=work)) == (
        "songhpo: error: --out .: is a directory; give a file name such as study.toml")
    assert _tree(tmp_path) == before


def test_force_still_replaces_an_earlier_output(work: Path) -> None:
    first = run_cli("-q", "data", "prepare", "raw", "--out", "prepared", cwd=work)
    assert first.returncode == 0, first.stderr
    (work / "prepared" / "stale.txt").write_text("from an earlier run\n")
    again = run_cli("-q", "data", "prepare", "raw", "--out", "prepared", "--force", "--seed", "1", cwd=work)
    assert again.returncode == 0, again.stderr
    assert not (work / "prepared" / "stale.txt").exists()
    assert json.loads(again.stdout)["fingerprint"] == json.loads((work / "prepared" / "manifest.json").read_text())[
        "fingerprint"] != json.loads(first.stdout)["fingerprint"]
    assert sorted(p.name for p in work.iterdir()) == ["prepared", "raw", "sub"]  # no temporary directory left
