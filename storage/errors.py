"""User-facing errors, shared by every layer that meets user input.

A :class:`InputError` is a mistake the user can fix (a bad file, a bad option, a bad storage URL). The CLI
prints its message on one line and exits with code 2; it never shows a traceback for it. It lives in
:mod:`storage`, the lowest layer that raises it, so that :mod:`storage` imports nothing from :mod:`hpo`.
"""

from __future__ import annotations


class InputError(Exception):
    """A user mistake, with a one-line message naming the file/row/field and what was expected."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (its type name when empty), at most ``limit`` characters:
    enough of a library's error to quote inside a one-line :class:`InputError`."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
