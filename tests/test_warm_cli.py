"""The warm interpreter behind :func:`tests.conftest.run_cli` and :func:`tests.conftest.start_cli` answers as a
fresh ``python -m hpo`` does."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest

from tests.conftest import run_cli, start_cli


@pytest.mark.skipif(os.environ.get("SONGHPO_TEST_COLD_CLI") == "1", reason="run_cli is the cold path already")
def test_warm_and_cold_runs_agree(tmp_path: Path) -> None:
    """Each command runs warm, then cold in a fresh directory at the same path: same exit code, output and files."""
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(empty).engine.dispose()
    cases = [
        (("--version",), None),
        (("study", "list", "--storage", empty), None),
        (("study", "status", "nope", "--storage", empty), None),  # a user mistake: exit 2, one line
        (("study", "evaluate", "nope"), {"SONGHPO_STORAGE": empty}),  # the environment reaches the command
        (("-q", "data", "synth", "--out", "relative", "--sequences", "40", "--tracks", "240"), None),  # the working dir
    ]
    here = tmp_path / "cwd"
    for index, (args, env) in enumerate(cases):
        runs = []
        for side in ("warm", "cold"):
            here.mkdir()
            result = run_cli(*args, cwd=here, env=env, cold=side == "cold")
            runs.append((result.returncode, result.stdout, result.stderr, _files(here)))
            here.rename(tmp_path / f"{side}-{index}")
        assert runs[0] == runs[1], args
    assert runs[0][0] == 0 and "relative/plays.csv" in runs[0][3]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_timeout_kills_the_command(tmp_path: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("data", "synth", "--out", str(tmp_path / "big"), "--sequences", "2000000", timeout=2)
    # The warm interpreter serves the next command.
    assert run_cli("--version").returncode == 0


@pytest.mark.skipif(os.environ.get("SONGHPO_TEST_COLD_CLI") == "1", reason="start_cli is the cold path already")
def test_started_warm_and_cold_agree(tmp_path: Path) -> None:
    """A command started in the background warm is a child of the test process, as a cold one is, and ends
    alike: by itself, on Ctrl-C once it has started working, and on SIGKILL."""
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(empty).engine.dispose()
    endings = []
    for cold in (False, True):
        ended = []
        for args in (("--version",), ("study", "status", "nope", "--storage", empty)):
            process = start_cli(*args, cold=cold)
            out, err = process.communicate(timeout=120)
            ended.append((process.returncode, out, err))
        big = tmp_path / f"big-{cold}"
        for sig in (signal.SIGINT, signal.SIGKILL):
            process = start_cli("data", "synth", "--out", str(big), "--sequences", "2000000", cold=cold)
            assert process.stderr is not None
            first = process.stderr.readline()  # logged once the command is under way
            parent = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
            process.send_signal(sig)
            out, err = process.communicate(timeout=120)
            ended.append((int(parent) == os.getpid(), first.split(" ", 2)[2], process.returncode, out, err))
        assert not big.exists()  # nothing half-written either way
        endings.append(ended)
    assert endings[0] == endings[1]
    assert endings[0][1][0] == 2 and endings[0][2][2:] == (130, "", "songhpo: interrupted\n")
    assert endings[0][3][0] and endings[0][3][2] == -signal.SIGKILL
