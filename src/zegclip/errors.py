"""The one error base class, and the handler every command uses.

Anything zegclip raises on purpose (a missing file, a bad setting, a checkpoint that does
not fit) is a :class:`ZegCLIPError` whose message is one line naming the file or the
setting. Commands print it as ``error: <message>`` and exit with its ``exit_code``
(2 for user errors). A file the command may not read or write (permissions, a read-only or
full disk, a path through a file) is one such line too, and Ctrl-C ends a command with
``interrupted`` and exit code 130. Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

INTERRUPTED_EXIT_CODE = 130
"""Exit code of a command stopped by Ctrl-C (128 + SIGINT, as shells report it)."""


class ZegCLIPError(Exception):
    """Base of zegclip's own errors: one line for a person, exit code 2 from a command."""

    exit_code = 2
    prefix = "error"

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_from_worker(args[0], type(self).__name__),)
        super().__init__(*args)


class UsageError(ZegCLIPError):
    """A problem with a command's options or configuration (exit code 2)."""


class FileAccessError(ZegCLIPError):
    """A file or folder the command cannot read or write: permissions, a read-only or full disk."""


_FILE_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR}
"""OSError numbers that say something about the user's files and disks, not about zegclip's code."""


def _from_worker(message: str, name: str) -> str:
    """The original one-line message of an error re-raised from a DataLoader worker.

    PyTorch re-raises a worker's exception as a new one of the same class whose message is
    ``Caught <Name> in DataLoader worker process N.`` plus the worker's whole traceback; its
    last line is ``<module>.<Name>: <message>``. Any other message is returned unchanged.
    """
    if not message.startswith(f"Caught {name} ") or "\nOriginal Traceback" not in message:
        return message
    head, sep, original = message.rstrip().splitlines()[-1].partition(": ")
    return original if sep and head.rsplit(".", 1)[-1] == name else message


def user_error(err: BaseException) -> ZegCLIPError | None:
    """The ZegCLIPError behind ``err``, looking through wrappers (Hydra wraps what it builds).

    An OSError about the user's files (:data:`_FILE_ACCESS`, with a file name) becomes a
    :class:`FileAccessError` naming the file.
    """
    while err is not None:
        if isinstance(err, ZegCLIPError):
            return err
        if isinstance(err, OSError) and err.errno in _FILE_ACCESS and err.filename:
            return FileAccessError(f"{err.filename}: {err.strerror or os.strerror(err.errno)}")
        err = err.__cause__
    return None


def one_line(err: BaseException) -> str:
    """``Type: first line of the message``: an error on one line (a per-image ``error:`` line)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def run_command(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run a command; a ZegCLIPError becomes one ``error:`` line and its exit code.

    Returns ``fn``'s result when it is an exit code (an int), else 0; 130 after Ctrl-C.
    """
    try:
        result = fn(*args, **kwargs)
    except KeyboardInterrupt:
        print("interrupted: stopped by Ctrl-C", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except Exception as err:
        known = user_error(err)
        if known is None:
            raise
        print(f"{known.prefix}: {known}", file=sys.stderr)
        return known.exit_code
    return result if isinstance(result, int) else 0


def ensure_writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check a file can be written there and removed, before any work.

    Raises:
        UsageError: ``folder`` is a file, cannot be created, or cannot be written to; the
            message names it as ``what``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"the {what} {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the {what} {folder}: {err.strerror or err}") from err
    probe = folder / f".zegclip-write-test.{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as err:
        raise UsageError(f"cannot write to the {what} {folder}: {err.strerror or err}") from err
    try:
        probe.unlink()
    except OSError as err:
        raise UsageError(f"cannot remove files from the {what} {folder}: {err.strerror or err}") from err
    return folder
