"""Helpers every command group of :mod:`hpo.cli` shares: the ``--storage`` option and output printing."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from hpo._table import format_table

Handler = Callable[[argparse.Namespace], int]
DEFAULT_STORAGE = "sqlite:///songhpo.db"


def storage_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--storage URL`` (default ``$SONGHPO_STORAGE`` or :data:`DEFAULT_STORAGE`) to ``parser``."""
    parser.add_argument(
        "--storage",
        default=os.environ.get("SONGHPO_STORAGE", DEFAULT_STORAGE),
        help=f"SQLAlchemy storage URL (default: $SONGHPO_STORAGE or {DEFAULT_STORAGE})",
    )


def print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    if not rows:
        print(f"{title}: no completed feasible trial yet")
        return
    headers = list(dict.fromkeys(k for row in rows for k in row))
    print(title)
    print(format_table(headers, [[row.get(h) for h in headers] for row in rows]))
