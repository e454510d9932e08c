"""hpo._atomic.atomic_write: the one write-then-rename helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpo._atomic import atomic_write, atomic_write_text


def test_atomic_write_replaces_the_target_with_an_ordinary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"first"))
    atomic_write_text(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~umask)  # like open(), not mkstemp's 0o600


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
def test_atomic_write_leaves_the_target_alone_on_any_exception(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old", encoding="utf-8")

    def fail(tmp: Path) -> None:
        tmp.write_text("half", encoding="utf-8")
        raise error("stop")

    with pytest.raises(error):
        atomic_write(target, fail)
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
