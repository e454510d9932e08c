"""Entry point and top-level parser of the ``songhpo`` command line; every command group registers
itself from its own module of :mod:`hpo.cli`.

User mistakes (:class:`storage.errors.InputError`) print one line on stderr and exit with code 2; logs go
to stderr, results to stdout. Ctrl-C, SIGTERM and SIGHUP stop a command the same way (the running trial is
failed, temporary files are removed) and exit with 128 + the signal's number (`dashboard` exits 0).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from hpo import __version__
from hpo.cli.common import Handler
from hpo.cli.concepts import add_concepts_command
from hpo.cli.dashboard import add_dashboard_commands
from hpo.cli.data import add_data_commands
from hpo.cli.demo import add_demo_command
from hpo.cli.eval import add_eval_command
from hpo.cli.experiment import add_experiment_commands
from hpo.cli.export import add_export_command
from hpo.cli.results import add_result_commands
from hpo.cli.study import add_study_commands
from objectives.stopping import stop_signal, stop_signals_as_ctrl_c
from storage.errors import InputError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``songhpo`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Third-party libraries log a lot at INFO (gensim per epoch); keep ours.
    for noisy in ("gensim", "faiss", "alembic", "smart_open", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.parse_args([*(argv or sys.argv[1:]), "--help"])
        return 2
    try:
        with stop_signals_as_ctrl_c():
            return handler(args)
    except InputError as exc:
        print(f"songhpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        signum = stop_signal(stop)
        print("songhpo: interrupted" if signum == signal.SIGINT else f"songhpo: stopped by {signum.name}", file=sys.stderr)
        _exit_now_after_interrupt(128 + signum)
    except BrokenPipeError:
        # The reader went away (`songhpo study status ... | head -1`): stop quietly, as Unix tools killed by
        # SIGPIPE do; stdout points at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _exit_now_after_interrupt(code: int) -> NoReturn:
    """Exit at once with ``code`` after Ctrl-C, skipping the interpreter's shutdown.

    Two things in that shutdown would turn a handled Ctrl-C into a different exit: Ctrl-C can land while
    Optuna starts a trial's heartbeat thread, after the thread runs and before the code that stops it is
    armed, and the interpreter would wait for it forever; and a KeyboardInterrupt raised inside compiled
    code (gensim's training loop) marks itself unhandled, so CPython ends the process by SIGINT instead of
    the exit code. The trials this process ran are already marked FAIL (``hpo.study``) and every write is
    committed, so nothing is lost by not running the shutdown.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="songhpo",
        description="Multi-objective hyper-parameter optimisation of Word2Vec song embeddings.",
    )
    parser.add_argument("--version", action="version", version=f"songhpo {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    add_data_commands(commands)
    add_eval_command(commands)
    study_commands = add_study_commands(commands)
    add_result_commands(commands, study_commands)
    add_export_command(commands)
    add_dashboard_commands(commands)
    add_concepts_command(commands)
    add_experiment_commands(commands)
    add_demo_command(commands)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
