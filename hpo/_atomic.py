"""Write-then-rename helpers, so that a failure never leaves half-written output behind.

This is the one place that does it: every file or directory the package (and ``dashboards``)
writes in one go goes through :func:`atomic_write`, :func:`atomic_write_text` or
:func:`atomic_directory`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from storage.errors import InputError

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


def check_out(target: str | Path, *, force: bool, inputs: Sequence[str | Path] = (), directory: bool = False) -> None:
    """Refuse ``--out target`` before any work is done: an existing ``target`` without ``force``, and with
    ``force`` whatever :func:`check_replaceable` refuses. ``directory`` says what the command writes there.

    Raises
    ------
    InputError
        Naming ``target`` and what to do instead.
    """
    target = Path(target)
    if target.exists() and not force:
        what = "output directory already exists" if directory else "already exists"
        raise InputError(f"{target}: {what}; choose another --out or pass --force to replace it")
    check_replaceable(target, inputs)


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes ``target`` only if the block succeeds.

    The temporary directory lives next to ``target`` so the final ``rename`` stays on one file system
    and is atomic. With ``overwrite``, an existing ``target`` is replaced only after the new one is
    complete, and only if :func:`check_replaceable` accepts it with ``inputs``.
    """
    target = Path(target)
    check_out(target, force=overwrite, inputs=inputs, directory=True)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{parent}: cannot create output parent directory ({exc.strerror})") from exc
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should look like a normal mkdir
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


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on an empty temporary file beside ``path``, then rename it to ``path``.

    ``path``'s parent directories are created. The temporary file lives in the same directory so the
    rename stays on one file system and is atomic; it gets the permissions a plain ``open()`` would
    give (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``. On any exception, including
    ``KeyboardInterrupt``, the temporary file is removed and ``path`` is left as it was.

    ``write`` receives the temporary path (not a handle) so that writers which want a file name,
    such as ``DataFrame.to_parquet``, work too; it must write to that exact name (``np.save`` given a
    name appends ``.npy``, so pass it an open handle instead).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    tmp = Path(name)
    try:
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask
