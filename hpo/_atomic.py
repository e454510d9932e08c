"""Write-then-rename helpers, so that a failure never leaves half-written output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from hpo.errors import InputError

#: ``--out -``: the command writes its one output file to stdout (its summary then goes to stderr).
STDOUT = Path("-")


def check_replaceable(target: str | Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse to replace ``target`` (``--out`` with ``--force``) when that would delete something else.

    ``target`` must not be, contain or lie inside one of ``inputs`` (the files and directories the
    command reads), and must not be or contain the current directory, the home directory or a
    filesystem root (mount point). Paths are compared after resolving symbolic links and ``..``.
    A ``target`` that does not exist is always fine.

    Raises
    ------
    InputError
        Naming ``--out``, what it would delete and what to do instead.
    """
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return
    resolved = Path(os.path.realpath(target))
    if resolved == Path(resolved.anchor) or os.path.ismount(resolved):
        raise InputError(f"--out {target}: is a filesystem root ({resolved}); --force never replaces one; "
                         "choose a new directory for --out")
    for path in inputs:
        where = Path(os.path.realpath(path))
        if resolved == where:
            relation = "is the input"
        elif resolved in where.parents:
            relation = "holds the input"
        elif where in resolved.parents:
            relation = "lies inside the input"
        else:
            continue
        raise InputError(f"--out {target}: {relation} {path}; --force never replaces what a command reads; "
                         "choose an --out outside the input")
    for label, protected in (("current directory", Path.cwd()), ("home directory", Path.home())):
        protected = Path(os.path.realpath(protected))
        if resolved == protected or resolved in protected.parents:
            relation = "is" if resolved == protected else "holds"
            raise InputError(f"--out {target}: {relation} the {label} ({protected}); --force never replaces it; "
                             "choose a new directory for --out")


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes ``target`` only if the block succeeds.

    The temporary directory lives next to ``target`` so the final ``rename`` stays on one file system
    and is atomic. With ``overwrite``, an existing ``target`` is replaced only after the new one is
    complete, and only if :func:`check_replaceable` accepts it with ``inputs``.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise InputError(
            f"{target}: output directory already exists; choose another --out or pass --force to replace it"
        )
    check_replaceable(target, inputs)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{parent}: cannot create output parent directory ({exc.strerror})") from exc
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like a normal mkdir
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.rename(target, old / "d")
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like a normal open()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
