"""Shared fixtures: the real datasets in ../shared/data, a small synthetic dataset, a prepared copy."""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import io
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hpo.data.prepare import PrepareParams, prepare_dataset
from hpo.data.readers import read_input
from hpo.data.synth import SynthParams, write_synthetic

if TYPE_CHECKING:
    import optuna

    from hpo.config import StudyConfig

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


def start_cli(*args: str, env: dict[str, str] | None = None, cold: bool = False) -> subprocess.Popen[str]:
    """Start the real ``songhpo`` CLI in the background (pipes for stdout/stderr, text), ready for Ctrl-C.

    The command is forked from the warm interpreter as :func:`run_cli` does, under the same rule for when a new
    interpreter runs it instead; either way the result is a :class:`subprocess.Popen` whose process is a child of
    this one (wait for it, signal it, read its pipes). pytest-xdist's worker processes ignore SIGINT, and an
    ignored signal stays ignored across exec, so a new interpreter starts with SIGINT's default disposition (a
    warm one sets it as a fresh interpreter has it), or it would never see a Ctrl-C a test sends.
    """
    command = [sys.executable, "-m", "hpo", *args]
    if _runs_cold(env, cold):
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_environment(env), preexec_fn=_default_sigint)
    with _warm_cli() as warm:
        return _WarmPopen(warm, command, env=_environment(env))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _environment(env: dict[str, str] | None) -> dict[str, str]:
    return {**os.environ, "SONGHPO_PROGRESS": "0", **(env or {})}


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict[str, str] | None = None,
            text: bool = True, cold: bool = False) -> subprocess.CompletedProcess[Any]:
    """Run the real ``songhpo`` CLI (``python -m hpo``) in a subprocess and wait for it (``env`` adds to the
    environment; ``text=False`` captures bytes, for binary output on stdout).

    The subprocess is forked from a warm interpreter that has the third-party libraries imported
    (:mod:`tests._warm_cli`); songhpo itself is imported afresh in it. It inherits that interpreter's
    string-hash seed and start-up settings, so a new interpreter runs the command instead with ``cold=True``
    (compare two runs for reproducibility that way), when ``env`` sets anything but ``HOME`` and
    ``SONGHPO_*``, and for every call with ``SONGHPO_TEST_COLD_CLI=1``. Calls run one at a time: commands
    meant to overlap use :func:`start_cli`.
    """
    command = [sys.executable, "-m", "hpo", *args]
    if _runs_cold(env, cold):
        return subprocess.run(command, capture_output=True, text=text, cwd=cwd, env=_environment(env), timeout=timeout)
    with _warm_cli() as warm:
        return warm.run(command, cwd=cwd or Path.cwd(), env=_environment(env), timeout=timeout, text=text)


def _runs_cold(env: dict[str, str] | None, cold: bool) -> bool:
    """Whether a command needs a new interpreter: asked for, or ``env`` sets what a fork would not take up."""
    return cold or os.environ.get("SONGHPO_TEST_COLD_CLI") == "1" or any(
        name != "HOME" and not name.startswith("SONGHPO_") for name in env or {})


@contextlib.contextmanager
def _warm_cli() -> Iterator[_WarmCli]:
    """This test process's warm interpreter, started at first use and ended when a request to it fails."""
    if not _WARM:
        _WARM.append(_WarmCli())
    warm = _WARM[0]
    try:
        yield warm
    except BaseException:
        _WARM.clear()  # its reply stream may be out of step: the next call starts another
        warm.close()
        raise


def _set_child_subreaper(on: bool) -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants of this process become its children (linux/prctl.h)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


class _WarmPopen(subprocess.Popen):  # type: ignore[type-arg]
    """A :class:`subprocess.Popen` whose process the warm interpreter forks instead of a new one being executed.

    Only the start differs: Popen makes the pipes, the warm interpreter's command gets their write ends, and the
    command is re-parented to this process (a subreaper meanwhile), so Popen waits for it, signals it and reads its pipes
    as for any child.
    """

    def __init__(self, warm: _WarmCli, command: list[str], *, env: dict[str, str]) -> None:
        self._warm = warm
        super().__init__(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def _execute_child(self, *args: Any, **kwargs: Any) -> None:
        given = inspect.signature(subprocess.Popen._execute_child).bind(self, *args, **kwargs).arguments
        self.pid = self._warm.start(given["args"], cwd=Path(given["cwd"] or Path.cwd()), env=given["env"],
                                    stdout=given["c2pwrite"], stderr=given["errwrite"])
        self._child_created = True
        self._close_pipe_fds(*(given[name] for name in ("p2cread", "p2cwrite", "c2pread", "c2pwrite", "errread",
                                                        "errwrite")))


class _WarmCli:
    """The client side of :mod:`tests._warm_cli`: one warm interpreter per test process, one request at a time."""

    def __init__(self) -> None:
        self._descriptors, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen([sys.executable, "-m", "tests._warm_cli", str(theirs.fileno())],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO,
                                             env=_environment(None), pass_fds=(theirs.fileno(),))
        self._received = b""  # read from the reply pipe, not yet a whole line
        self._child: int | None = None
        try:
            assert self._reply(time.monotonic() + 300) == {"ready": True}
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the warm interpreter and the command it runs, if any (not those it started in the background:
        they are this process's children)."""
        for pid in (self._child, self._process.pid):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._process.wait()
        self._descriptors.close()

    def start(self, command: list[str], *, cwd: Path, env: dict[str, str], stdout: int, stderr: int) -> int:
        """Start ``command`` in the background writing to descriptors ``stdout`` and ``stderr``; its pid, a child
        of this process from now on."""
        # A subreaper only while the command is handed over: other orphans (a browser's helpers) go to init.
        _set_child_subreaper(True)
        try:
            socket.send_fds(self._descriptors, [b"."], [stdout, stderr])
            assert self._process.stdin is not None
            request = {"start": True, "args": command[3:], "cwd": str(cwd), "env": env}
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
            pid: int = self._reply(time.monotonic() + 60)["pid"]
        finally:
            _set_child_subreaper(False)
        return pid

    def _reply(self, deadline: float) -> dict[str, Any]:
        """The next reply line; read from the pipe's descriptor, as a buffered reader could take both replies
        at once and leave the wait for the second one waiting on an empty pipe."""
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        while b"\n" not in self._received:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"tests._warm_cli ended (exit {self._process.wait()})")
            self._received += chunk
        line, self._received = self._received.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def run(self, command: list[str], *, cwd: Path, env: dict[str, str], timeout: float,
            text: bool) -> subprocess.CompletedProcess[Any]:
        deadline = time.monotonic() + timeout
        with tempfile.TemporaryDirectory(prefix="songhpo-cli-") as scratch:
            # Named pipes, as subprocess gives: the output ends when the command and all it started close them.
            paths = [Path(scratch, "stdout"), Path(scratch, "stderr")]
            for path in paths:
                os.mkfifo(path)
            readers = [os.open(path, os.O_RDONLY | os.O_NONBLOCK) for path in paths]
            try:
                assert self._process.stdin is not None
                self._process.stdin.write(json.dumps({"args": command[3:], "cwd": str(cwd), "env": env,
                                                      "stdout": str(paths[0]), "stderr": str(paths[1])}).encode()
                                          + b"\n")
                self._process.stdin.flush()
                self._child = self._reply(deadline)["pid"]
                output = {fd: b"" for fd in readers}
                open_ends = set(readers)
                while open_ends:
                    ready = select.select(list(open_ends), [], [], max(0.0, deadline - time.monotonic()))[0]
                    if not ready:
                        raise TimeoutError
                    for fd in ready:
                        chunk = os.read(fd, 65536)
                        output[fd] += chunk
                        if not chunk:
                            open_ends.discard(fd)
                status = self._reply(deadline)["status"]
            except TimeoutError:
                raise subprocess.TimeoutExpired(command, timeout) from None
            finally:
                for fd in readers:
                    os.close(fd)
        self._child = None
        out, err = (output[fd] for fd in readers)
        if text:  # as subprocess decodes: the locale's encoding, strictly, universal newlines
            out, err = (io.TextIOWrapper(io.BytesIO(data)).read() for data in (out, err))
        return subprocess.CompletedProcess(command, os.waitstatus_to_exitcode(status), out, err)


#: The warm interpreter of this test process, once a test has needed it.
_WARM: list[_WarmCli] = []


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code *args`` in a fresh interpreter (what an import pulls in, a module made
    unimportable, ...), with the environment of :func:`run_cli`."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=_environment(None), timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str, allow_logs: bool = False) -> str:
    """``result`` is a user mistake as the CLI must report it: exit 2, nothing on stdout, one stderr line
    ``songhpo: error: ...`` holding every fragment, no traceback. Returns the line.

    ``allow_logs``: a command run without ``-q`` may have logged lines before; the error line is the last.
    """
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == "", (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    if allow_logs:
        assert not any(line.startswith("songhpo: ") for line in lines[:-1]), result.stderr
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("songhpo: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


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


POSTGRES_ADMIN = os.environ.get("SONGHPO_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
MYSQL_ADMIN = os.environ.get("SONGHPO_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306")


def _unreachable(message: str) -> None:
    """A server the tests need is down: fail under CI (``CI`` set), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def _postgres_database() -> Iterator[str]:
    import uuid

    import psycopg

    name = f"songhpo_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _unreachable(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        params = dict(p.split("=", 1) for p in POSTGRES_ADMIN.split())
        try:
            yield (f"postgresql+psycopg://{params.get('user', 'postgres')}@{params.get('host', '127.0.0.1')}:"
                   f"{params.get('port', '5432')}/{name}")
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _mysql_database() -> Iterator[str]:
    import uuid

    import pymysql
    from sqlalchemy.engine import make_url

    admin_url = make_url(MYSQL_ADMIN)
    name = f"songhpo_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = pymysql.connect(host=admin_url.host or "127.0.0.1", port=admin_url.port or 3306,
                                user=admin_url.username or "root", password=admin_url.password or "",
                                autocommit=True, connect_timeout=5)
    except pymysql.err.OperationalError as exc:
        _unreachable(f"MariaDB/MySQL at {admin_url.host}:{admin_url.port} is unreachable: {exc}")
    with admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            # DROP DATABASE waits for the metadata locks of open connections (killed workers, cached
            # engines): end them first, as PostgreSQL's DROP ... WITH (FORCE) does.
            cursor.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                           (name,))
            for (connection_id,) in cursor.fetchall():
                with contextlib.suppress(pymysql.err.MySQLError):  # it may have closed meanwhile
                    cursor.execute(f"KILL {int(connection_id)}")
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def server_database(kind: str) -> contextlib.AbstractContextManager[str]:
    """A fresh database on the real ``kind`` server ("postgres": PostgreSQL at 127.0.0.1:5432, "mysql":
    MariaDB/MySQL at 127.0.0.1:3306), as a SQLAlchemy URL; dropped on exit. Unreachable: fails under CI."""
    return {"postgres": _postgres_database, "mysql": _mysql_database}[kind]()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL at 127.0.0.1:5432, dropped afterwards.

    Unreachable PostgreSQL fails the test under CI (``CI`` set) and skips it elsewhere.
    """
    with server_database("postgres") as url:
        yield url


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh database on the real MariaDB/MySQL at 127.0.0.1:3306, dropped afterwards (like
    :func:`postgres_url`: unreachable fails under CI, skips elsewhere)."""
    with server_database("mysql") as url:
        yield url


#: Parameters of fixtures that run a test on each real server; ``-m "not mysql"`` deselects MariaDB.
SERVERS = [pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each real SQL server distributed studies support: PostgreSQL, MariaDB/MySQL."""
    return request.getfixturevalue(f"{request.param}_url")


def param_key(trial: optuna.trial.FrozenTrial) -> tuple[tuple[str, Any], ...]:
    """A trial's parameter set, comparable and hashable."""
    return tuple(sorted(trial.params.items()))


def assert_distinct_except_reruns(trials: list[optuna.trial.FrozenTrial]) -> None:
    """No two trials share a parameter set, unless one is a heartbeat re-run of the other."""
    seen: dict[tuple[tuple[str, Any], ...], int] = {}
    for trial in trials:
        if not trial.params:
            continue
        key = param_key(trial)
        rerun_of = trial.system_attrs.get("failed_trial")
        if key in seen and rerun_of is None:
            raise AssertionError(f"trial {trial.number} repeats trial {seen[key]}: {trial.params}")
        seen.setdefault(key, trial.number)


def tiny_study_config(prepared: Path, storage: str, **overrides: object) -> dict[str, object]:
    """A study config (as a dict) whose trials take well under a second on the small synthetic data."""
    config: dict[str, object] = {
        "name": "tiny",
        "dataset": str(prepared),
        "storage": storage,
        "seed": 13,
        "trials": 6,
        "sampler": {"name": "nsga2", "population_size": 4},
        "evaluation": {"k": 20},
        "heartbeat": {"interval": 1, "grace_period": 4, "max_retry": 2},
        "search_space": {
            # Ranges must hold gensim's defaults (the baseline): vector_size 100, window 5, negative 5.
            "vector_size": {"type": "int", "low": 8, "high": 100, "log": True},
            "window": {"type": "int", "low": 1, "high": 5},
            "negative": {"type": "int", "low": 1, "high": 5},
            "epochs": 2,
            "min_count": 1,
        },
    }
    config.update(overrides)
    return config


def write_toml(path: Path, data: dict[str, object]) -> Path:
    """Write a flat-or-one-level-nested dict as TOML (enough for study configs in tests)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {value(vv)}" for kk, vv in v.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def run_tiny_study(prepared: Path, storage: str, **overrides: object) -> tuple[object, object]:
    """Create a :func:`tiny_study_config` study, join it as a worker and run it to its budget.

    Returns ``(study, config)`` as :func:`hpo.study.load_study` gives them.
    """
    from hpo.config import parse_config
    from hpo.study import create_study, load_study, run_worker

    config = parse_config(tiny_study_config(prepared, storage, **overrides), "test")
    create_study(config)
    study, config = load_study(config.name, storage)
    run_worker(study, config)
    return study, config


# -- shared studies --------------------------------------------------------------------------------
# Tests that only read a finished study share these (session scope: once per xdist worker). A test that
# changes a study's trials, budget or snapshots (resume, add trials, kill a worker, evaluate again) runs its
# own with run_tiny_study.

#: The budget of the shared tiny study: enough for infeasible trials and a front without the baseline.
TINY_TRIALS = 12


@dataclass(frozen=True)
class SharedStudy:
    """A finished tiny study in a SQLite file of its own, as :func:`hpo.study.load_study` gives it."""

    study: optuna.Study
    config: StudyConfig
    storage: str  #: its SQLAlchemy URL
    path: Path  #: its SQLite file
    evaluation: str | None = None  #: stdout of the ``songhpo study evaluate`` that made its test snapshot, if any


def _copy_sqlite(source: Path, target: Path) -> Path:
    """A consistent copy of a SQLite database (its WAL included) through SQLite's backup API."""
    import sqlite3

    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


def _shared_copy(source: Path, directory: Path) -> SharedStudy:
    from hpo.study import load_study

    path = _copy_sqlite(source, directory / "tiny.db")
    vectors = source.with_name(f"{source.stem}-artifacts")  # the trial vectors the study kept (hpo.artifacts)
    if vectors.is_dir():
        shutil.copytree(vectors, path.with_name(f"{path.stem}-artifacts"))
    storage = f"sqlite:///{path}"
    study, config = load_study("tiny", storage)
    return SharedStudy(study, config, storage, path)


@pytest.fixture(scope="session")
def _tiny_study_file(prepared_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The shared tiny study as run, never handed to a test: the fixtures below start from copies of it."""
    from storage.db import dispose_engines

    path = tmp_path_factory.mktemp("tiny_study") / "tiny.db"
    run_tiny_study(prepared_synth, f"sqlite:///{path}", trials=TINY_TRIALS)
    yield path
    dispose_engines()


@pytest.fixture(scope="session")
def tiny_study(_tiny_study_file: Path, tmp_path_factory: pytest.TempPathFactory) -> SharedStudy:
    """A finished :data:`TINY_TRIALS`-trial tiny study on ``prepared_synth`` (study "tiny", the only one in its
    SQLite file), never evaluated on test. Shared: read it; what a test may write is what every reader
    ignores (the dashboard's note and charts)."""
    return _shared_copy(_tiny_study_file, tmp_path_factory.mktemp("finished"))


@pytest.fixture(scope="session")
def evaluated_study(_tiny_study_file: Path, tmp_path_factory: pytest.TempPathFactory) -> SharedStudy:
    """The same study (another copy) whose front the real ``songhpo study evaluate --seeds 2`` evaluated on
    test: one complete snapshot, number 1. Shared: read it, never evaluate it again."""
    shared = _shared_copy(_tiny_study_file, tmp_path_factory.mktemp("evaluated"))
    result = run_cli("study", "evaluate", "tiny", "--storage", shared.storage, "--seeds", "2")
    assert result.returncode == 0, result.stderr
    return replace(shared, evaluation=result.stdout)
