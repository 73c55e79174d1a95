"""Files that appear whole or not at all: write to a temporary name beside, then rename.

The temporary file lives in the destination's own folder (never in ``$TMPDIR``), so the
final ``os.replace`` is a rename on one filesystem: a full disk or a kill mid-write leaves
the previous file under the final name, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open folders: the rename stands anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that take a file name (ONNX export, hard
    links); on a clean exit it replaces ``path``. On any error it is removed, ``path`` kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, durable: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    ``durable``: flush and fsync the data before the rename and the folder after it, so the
    file survives a power loss or a node failure once this returns. On any error the
    temporary file is removed and ``path`` is left as it was.
    """
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        if durable:
            f.flush()
            os.fsync(f.fileno())
    if durable:
        _fsync_folder(Path(path).parent)
