"""Progress reporting on stderr: tqdm bars on a terminal, log lines otherwise (CI logs stay readable)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
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
