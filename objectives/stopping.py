"""Stopping a run with a signal: SIGTERM and SIGHUP go through the same cleanup as Ctrl-C, and the trial
they stop says which signal it was.

Ctrl-C raises ``KeyboardInterrupt()``; inside :func:`stop_signals_as_ctrl_c` SIGTERM and SIGHUP raise
``KeyboardInterrupt(signum)``, which :func:`stop_signal` reads back (a trial's ``fail_reason``, an exit code
of 128 + the signal's number). Standard library only: the CLI's parser imports this and must stay light.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

#: Signals that stop a run as Ctrl-C does: ``kill PID`` (service managers, batch schedulers, ``timeout``) and a
#: closed terminal.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_signals_as_ctrl_c() -> Iterator[None]:
    """Within the block, each of :data:`STOP_SIGNALS` raises ``KeyboardInterrupt(signum)`` in the main thread.

    A signal ignored on entry stays ignored (``nohup`` ignores SIGHUP on purpose); off the main thread, where
    Python cannot set handlers, nothing changes. The previous handlers come back after the block, unless it
    ends by a stop (Ctrl-C or one of these): then the stop signals stay ignored, so that a second one cannot
    cut the caller's cleanup short (systemd sends SIGTERM and then SIGHUP).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum, handler in previous.items():
        if handler != signal.SIG_IGN:
            signal.signal(signum, _raise_interrupt)
    stopped = False
    try:
        yield
    except KeyboardInterrupt:
        stopped = True
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if stopped else handler)


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    # The cleanup inside the block (a failed trial, a removed temporary file) must not be cut short either.
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise KeyboardInterrupt(signum)


def stop_signal(stop: KeyboardInterrupt) -> signal.Signals:
    """The signal that stopped a run: the number :func:`stop_signals_as_ctrl_c`'s handler raises
    ``KeyboardInterrupt`` with, else SIGINT (Ctrl-C raises it with no argument)."""
    try:
        return signal.Signals(stop.args[0]) if stop.args else signal.SIGINT
    except (TypeError, ValueError):  # a KeyboardInterrupt some other code raised with an argument of its own
        return signal.SIGINT


def interruption_reason(stop: KeyboardInterrupt) -> str:
    """A stopped trial's ``fail_reason``: ``interrupted (SIGINT)`` after Ctrl-C, ``interrupted (SIGTERM)`` after ``kill``."""
    return f"interrupted ({stop_signal(stop).name})"
