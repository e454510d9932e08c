"""A warm interpreter that runs ``python -m hpo`` in forked children, for :func:`tests.conftest.run_cli`.

A fresh ``songhpo`` process spends most of a small test's time importing gensim, scipy, scikit-learn, Optuna
and SQLAlchemy (3-4 s on a slow 2-core machine, before any work). This process imports those third-party
libraries once and then, for each request, forks a child that does what a fresh ``python -m hpo`` would: it
moves to the request's directory and environment, points stdin at /dev/null and stdout/stderr at the request's
files, imports songhpo itself from scratch (the parent never imports it), runs ``hpo`` as ``__main__`` and exits
with its exit code, or dies of its signal. The child is a real process running the real CLI; only the
third-party imports are inherited instead of repeated.

Protocol, one JSON object per line: a request ``{"args", "cwd", "env", "stdout", "stderr"}`` on stdin is
answered with ``{"pid": ...}`` once the child exists and ``{"status": ...}`` (``os.waitpid``'s status) when it
has ended.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import runpy
import signal
import sys
import traceback
from typing import Any

#: Third-party libraries a songhpo command imports; never songhpo's own packages.
PRELOAD = ("numpy", "scipy.stats", "gensim", "faiss", "sklearn.metrics", "optuna", "optuna_dashboard", "sqlalchemy",
           "alembic.runtime.migration", "pydantic", "pandas", "pyarrow", "plotly.graph_objects")


def _run_child(request: dict[str, Any]) -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has it
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_TRUNC)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the request pipe's object may hold read-ahead lines)
    sys.argv = ["-m", *request["args"]]
    sys.path[0] = os.getcwd()  # what ``python -m`` puts first on the path
    code: Any = 0
    try:
        runpy.run_module("hpo", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # what the interpreter would print before exiting with 1
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main() -> None:
    for name in PRELOAD:
        __import__(name)
    requests, replies = sys.stdin, sys.stdout
    for line in requests:
        request = json.loads(line)
        replies.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _run_child(request)
            finally:
                os._exit(code)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"status": status}) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
