"""CLI registration for this feature (being implemented)."""

from __future__ import annotations

from typing import Any


def add_result_commands(commands: Any, study_commands: Any) -> None:
    """Register this feature's commands (none yet)."""
