"""Which signal stopped a run, for a stopped trial's ``fail_reason`` and the CLI's exit code.

Ctrl-C raises ``KeyboardInterrupt()``; ``hpo.cli.main`` makes SIGTERM and SIGHUP raise
``KeyboardInterrupt(signum)``, so that every stop goes through the same cleanup. Standard library only: the
CLI's parser imports this and must stay light.
"""

from __future__ import annotations

import signal


def stop_signal(stop: KeyboardInterrupt) -> signal.Signals:
    """The signal that stopped a run: the number a stop-signal handler raises ``KeyboardInterrupt`` with
    (``hpo.cli.main`` does so for SIGTERM and SIGHUP), else SIGINT (Ctrl-C raises it with no argument)."""
    signum = stop.args[0] if stop.args else None
    return signal.Signals(signum) if signum in signal.valid_signals() else signal.SIGINT


def interruption_reason(stop: KeyboardInterrupt) -> str:
    """A stopped trial's ``fail_reason``: ``interrupted (SIGINT)`` after Ctrl-C, ``interrupted (SIGTERM)`` after ``kill``."""
    return f"interrupted ({stop_signal(stop).name})"
