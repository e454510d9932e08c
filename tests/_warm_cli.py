"""A warm interpreter that runs ``python -m hpo`` in forked children, for :func:`tests.conftest.run_cli`.

A fresh ``songhpo`` process spends most of a small test's time importing gensim, scipy, scikit-learn, Optuna
and SQLAlchemy (3-4 s on a slow 2-core machine, before any work). This process imports those third-party
libraries once and then, for each request, forks a child that does what a fresh ``python -m hpo`` would: it
moves to the request's directory and environment, reads stdin from /dev/null and writes stdout and stderr to
the request's named pipes, imports songhpo itself from scratch (this process never imports it), runs ``hpo``
as ``__main__`` and ends as the interpreter ends (non-daemon threads joined, atexit handlers run, an uncaught
KeyboardInterrupt re-raised as SIGINT; :func:`_end_as_the_interpreter_does`). The child is a real process
running the real CLI; only the third-party imports, and the string-hash seed, are inherited instead of made
anew.

Protocol, one JSON object per line: ``{"ready": true}`` once the imports are done; then a request
``{"args", "cwd", "env", "stdout", "stderr"}`` on stdin is answered with ``{"pid": ...}`` once the child holds
the pipes' write ends and ``{"status": ...}`` (``os.waitpid``'s status) when it has ended.

A request ``{"start": true, "args", "cwd", "env"}`` (for :func:`tests.conftest.start_cli`) starts a command in the
background instead: its stdout and stderr write ends arrive beside it on the Unix socket whose descriptor is
this module's argument, and the command is the grandchild of a child that ends at once, so it is re-parented to
the nearest subreaper above, the test process, which waits for it as for any child of its own. The answer is
``{"pid": ...}`` once that child has ended.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import signal
import socket
import sys
import threading
import traceback
from typing import Any, NoReturn

#: Third-party libraries a songhpo command imports; never songhpo's own packages, and nothing that starts an
#: OpenMP region (a forked child could not use the pool).
PRELOAD = ("numpy", "scipy.stats", "gensim", "faiss", "sklearn.metrics", "optuna", "optuna_dashboard", "sqlalchemy",
           "alembic.runtime.migration", "pydantic", "pandas", "pyarrow", "plotly.graph_objects")


def _become_the_command(request: dict[str, Any], out: int, err: int) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has it
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
        os.close(source)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the request pipe's object may hold read-ahead lines)
    sys.argv = ["-m", *request["args"]]
    sys.path[0] = os.getcwd()  # what ``python -m`` puts first on the path


def _end_as_the_interpreter_does() -> NoReturn:
    """Run ``hpo`` as ``__main__`` and end the process as CPython ends after a script, in its order: the exit code of a
    SystemExit (an uncaught exception's traceback and 1), non-daemon threads joined, atexit handlers run,
    stdout and stderr flushed (120 if that fails), and an uncaught KeyboardInterrupt re-raised as SIGINT.
    What it leaves out is the teardown of every module, which in a fork of this big process costs more than
    the command itself (it writes to every inherited page); only ``__del__`` messages at teardown are lost."""
    interrupted = False
    try:
        runpy.run_module("hpo", run_name="__main__", alter_sys=True)
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted, code = True, 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        code = 120
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _run_the_command(request: dict[str, Any], out: int, err: int) -> NoReturn:
    """In a forked child: become the command of ``request`` and end as it ends (70 if it cannot start)."""
    try:
        _become_the_command(request, out, err)
    except BaseException:
        traceback.print_exc()
        os._exit(70)
    _end_as_the_interpreter_does()


def _start_in_the_background(request: dict[str, Any], out: int, err: int, descriptors: socket.socket) -> int:
    """Fork the command as a grandchild and return its pid once the child between has ended (the
    grandchild then belongs to the subreaper above this process)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            descriptors.close()  # the client's socket is not the command's
            command = os.fork()
            if command == 0:
                os.close(write_end)
                _run_the_command(request, out, err)
            os.write(write_end, str(command).encode())
        except BaseException:
            traceback.print_exc()
            os._exit(70)
        os._exit(0)
    os.close(write_end)
    os.close(out)
    os.close(err)
    with os.fdopen(read_end, "rb") as pid_pipe:
        pid = pid_pipe.read()
    _, status = os.waitpid(child, 0)
    assert status == 0 and pid, f"the child between failed (status {status})"
    return int(pid)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the tests, not for this server
    for name in PRELOAD:
        __import__(name)
    # What the imports made is never collected: out of the collector's sight, a child's collections do not
    # touch (and so copy) every page of it.
    gc.freeze()
    requests, replies = sys.stdin, sys.stdout
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    descriptors = socket.socket(fileno=int(sys.argv[1])) if len(sys.argv) > 1 else None
    for line in requests:
        request = json.loads(line)
        if request.get("start"):
            assert descriptors is not None, "started without the descriptor socket"
            _, (out, err), _, _ = socket.recv_fds(descriptors, 1, 2)
            replies.write(json.dumps({"pid": _start_in_the_background(request, out, err, descriptors)}) + "\n")
            replies.flush()
            continue
        # Opened here, before the fork: the reader holds the other ends, so this does not block, and the client
        # reads end of file only once the child and everything it started have closed them.
        out, err = os.open(request["stdout"], os.O_WRONLY), os.open(request["stderr"], os.O_WRONLY)
        pid = os.fork()
        if pid == 0:
            _run_the_command(request, out, err)
        os.close(out)
        os.close(err)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"status": status}) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
