"""Progress reporting on stderr: tqdm bars on a terminal, log lines otherwise (CI logs stay readable)."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from tqdm.auto import tqdm

_log = logging.getLogger("songhpo")


def bars_enabled() -> bool:
    """Bars on a terminal, or forced with ``SONGHPO_PROGRESS=1`` (``0`` turns them off)."""
    forced = os.environ.get("SONGHPO_PROGRESS")
    if forced is not None:
        return forced not in ("0", "", "false")
    return sys.stderr.isatty()


def bar(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, disabled (but still usable) when bars are off."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not bars_enabled(), **kwargs)


def steps(task: str, names: list[str]) -> Iterator[str]:
    """Advance through named steps: each ``next()`` logs the step and moves a bar one notch."""
    with bar(len(names), task, unit="step", leave=False) as progress:
        for name in names:
            progress.set_postfix_str(name)
            _log.info("%s: %s", task, name)
            yield name
            progress.update(1)


def bars_logging() -> contextlib.AbstractContextManager[Any]:
    """While bars are on, log lines are printed above them (tqdm's logging redirect) instead of through them."""
    if not bars_enabled():
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def trial_estimate(user_attrs: Iterable[Mapping[str, Any]]) -> tuple[float | None, float | None]:
    """``(seconds per training epoch, seconds of evaluation)`` of a study's trials so far: medians over the
    completed trials' user attributes (``train_seconds`` / epochs, ``knn_seconds + metrics_seconds``);
    ``None`` for what no trial recorded."""
    per_epoch, evaluation = [], []
    for attrs in user_attrs:
        epochs = (attrs.get("gensim_params") or {}).get("epochs")
        train = attrs.get("train_seconds")
        if isinstance(train, (int, float)) and isinstance(epochs, (int, float)) and epochs > 0:
            per_epoch.append(float(train) / float(epochs))
        knn, metrics = attrs.get("knn_seconds"), attrs.get("metrics_seconds")
        if isinstance(knn, (int, float)) and isinstance(metrics, (int, float)):
            evaluation.append(float(knn) + float(metrics))
    return (statistics.median(per_epoch) if per_epoch else None,
            statistics.median(evaluation) if evaluation else None)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class TrialBar:
    """In-trial progress on a terminal (:class:`objectives.trial.TrialProgress`): a bar over the training
    epochs, then the kNN search and the metrics, with the trial's estimated time left (ETA).

    The ETA is the epochs left at the pace of the epochs done (before the first one, at the median pace of
    the study's completed trials), plus the evaluation time of the study's completed trials; during the
    evaluation, what is left of that. ``estimate()`` returns those medians (:func:`trial_estimate`); it is
    asked once per trial. Off a terminal the bar is disabled and prints nothing.
    """

    def __init__(self, estimate: Callable[[], tuple[float | None, float | None]] = lambda: (None, None)) -> None:
        self._estimate = estimate
        self._bar: Any = None
        self._epochs = 0
        self._done = 0
        self._started = 0.0
        self._evaluation_started: float | None = None
        self._per_epoch: float | None = None
        self._evaluation: float | None = None

    def start(self, trial_number: int, epochs: int) -> None:
        self.end()
        try:
            self._per_epoch, self._evaluation = self._estimate()
        except Exception:  # noqa: BLE001 - an estimate must never fail a trial
            self._per_epoch, self._evaluation = None, None
        self._epochs, self._done = epochs, 0
        self._started, self._evaluation_started = time.monotonic(), None
        # Redrawn at every event (a trial has at most a few hundred): the stages show even in a fast trial.
        self._bar = bar(epochs, f"trial {trial_number}", unit="epoch", leave=False, mininterval=0,
                        bar_format="{desc}: {bar} {n_fmt}/{total_fmt} epochs, {elapsed}{postfix}")
        self._show("training")

    def epoch(self, done: int, total: int) -> None:
        if self._bar is None:
            return
        self._done = done
        self._per_epoch = (time.monotonic() - self._started) / max(done, 1)
        self._bar.n = done
        self._show("training")

    def stage(self, name: str) -> None:
        if self._bar is None:
            return
        if self._evaluation_started is None:
            self._evaluation_started = time.monotonic()
        self._show({"knn": "kNN search", "metrics": "metrics"}.get(name, name))

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def eta_seconds(self) -> float | None:
        """Seconds the trial still needs, as estimated now (``None``: no estimate yet)."""
        if self._evaluation_started is not None:
            if self._evaluation is None:
                return None
            return max(self._evaluation - (time.monotonic() - self._evaluation_started), 0.0)
        if self._per_epoch is None:
            return None
        return self._per_epoch * (self._epochs - self._done) + (self._evaluation or 0.0)

    def _show(self, what: str) -> None:
        seconds = self.eta_seconds()
        if seconds is not None:
            unsure = " + evaluation" if self._evaluation is None else ""
            what += f", ETA {_duration(seconds)}{unsure}"
        self._bar.set_postfix_str(what, refresh=True)
