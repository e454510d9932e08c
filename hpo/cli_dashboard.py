"""CLI registration for this feature (being implemented)."""

from __future__ import annotations

from typing import Any


def add_dashboard_commands(commands: Any) -> None:
    """Register this feature's commands (none yet)."""
