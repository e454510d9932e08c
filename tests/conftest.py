"""Shared fixtures: the real datasets in ../shared/data, a small synthetic dataset, a prepared copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpo.prepare import PrepareParams, prepare_dataset
from hpo.readers import read_input
from hpo.synth import SynthParams, write_synthetic

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SONGHPO_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_dataset(*parts: str) -> Path:
    """Path of a real dataset; a missing one fails under CI (it is part of the checkout there)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI needs ../shared/data beside the clone")
        pytest.skip(f"{path} not available")
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real ``songhpo`` console script in a subprocess."""
    env = {**os.environ, "SONGHPO_PROGRESS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "hpo", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


SMALL_SYNTH = SynthParams(sequences=3_000, tracks=800, genres=6, artists_per_genre=10, hits=25, seed=7)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    write_synthetic(out, SMALL_SYNTH)
    return out


@pytest.fixture(scope="session")
def prepared_synth(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "synth"
    prepare_dataset(read_input(synth_dir), out, PrepareParams(seed=3))
    return out
