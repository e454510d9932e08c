"""CLI registration for this feature (being implemented)."""

from __future__ import annotations

from typing import Any


def add_concepts_command(commands: Any) -> None:
    """Register this feature's commands (none yet)."""
