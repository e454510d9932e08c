"""Reading ``.npy`` files whose header is checked against the file before anything is allocated.

``np.load`` believes the header: a file claiming 10^12 rows asks for terabytes (``MemoryError``), a
truncated one fails deep inside numpy, and an object array would need pickle. :func:`read_npy` reads
the header first, compares the size it implies with the real file size, refuses object dtypes and
``.npz`` archives, and only then loads the data (with ``allow_pickle=False``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.errors import first_line

_NPZ_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL_2_PLUS = 0x80


class NpyError(ValueError):
    """The file is not a loadable ``.npy`` array; ``str(error)`` says why, without the file name."""


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header claims.

    Attributes
    ----------
    shape : tuple of int
        Array shape.
    dtype : np.dtype
        Element type (never an object dtype: those are refused).
    data_offset : int
        Bytes before the array data (magic + header).
    data_bytes : int
        Bytes of array data the header implies (``prod(shape) * itemsize``).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int
    data_bytes: int


def read_npy_header(path: str | Path) -> NpyHeader:
    """Read and check the header of ``path`` against the file size, without reading the data.

    Raises
    ------
    NpyError
        Not a ``.npy`` file (pickle, ``.npz`` archive, other bytes), an unreadable header, an object
        dtype (it would need pickle), or a size that differs from what the header implies.
    OSError
        The file cannot be opened.
    """
    with open(path, "rb") as handle:
        head = handle.read(len(np.lib.format.MAGIC_PREFIX))
        if head.startswith(_NPZ_MAGIC):
            raise NpyError("is a .npz archive (zip), not a single .npy array")
        if len(head) > 1 and head[0] == _PICKLE_PROTOCOL_2_PLUS:
            raise NpyError("is a Python pickle, not a .npy array; pickles are not loaded for safety")
        if head != np.lib.format.MAGIC_PREFIX:
            raise NpyError("is not a .npy file (no NUMPY magic bytes)" if head else "is empty (0 bytes)")
        handle.seek(0)
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise NpyError(f"uses .npy format version {version[0]}.{version[1]}; expected 1.0 or 2.0")
        except NpyError:
            raise
        except Exception as exc:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError, TokenError...
            raise NpyError(f"has an unreadable .npy header ({type(exc).__name__}: {first_line(exc)})") from None
        data_offset = handle.tell()
    if dtype.hasobject:
        raise NpyError(f"holds Python objects (dtype {dtype}), which would need pickle; pickles are not loaded for safety")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise NpyError(f"has an invalid shape {shape} in its header")
    data_bytes = math.prod(shape) * dtype.itemsize
    actual = os.stat(path).st_size - data_offset
    if actual < data_bytes:
        raise NpyError(
            f"is truncated: its header claims shape {shape} of {dtype} ({data_bytes} bytes of data) but the "
            f"file holds {actual} bytes after the header"
        )
    if actual > data_bytes:
        raise NpyError(
            f"has {actual - data_bytes} bytes after the {data_bytes} bytes of data its header (shape {shape}) "
            "announces"
        )
    return NpyHeader(shape=tuple(shape), dtype=dtype, data_offset=data_offset, data_bytes=data_bytes)


def read_npy(path: str | Path) -> np.ndarray:
    """Load ``path`` after :func:`read_npy_header` accepted it; never unpickles.

    Raises :class:`NpyError` or ``OSError`` like :func:`read_npy_header`.
    """
    read_npy_header(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:  # the file changed between the two reads
        raise NpyError(f"cannot be read ({first_line(exc)})") from None

