"""The one error base class, and the handler every command uses.

Anything zegclip raises on purpose (a missing file, a bad setting, a checkpoint that does
not fit) is a :class:`ZegCLIPError` whose message is one line naming the file or the
setting. Commands print it as ``error: <message>`` and exit with its ``exit_code``
(2 for user errors); other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class ZegCLIPError(Exception):
    """Base of zegclip's own errors: one line for a person, exit code 2 from a command."""

    exit_code = 2
    prefix = "error"

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (_from_worker(args[0], type(self).__name__),)
        super().__init__(*args)


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
    """The ZegCLIPError behind ``err``, looking through wrappers (Hydra wraps what it builds)."""
    while err is not None:
        if isinstance(err, ZegCLIPError):
            return err
        err = err.__cause__
    return None


def run_command(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run a command; a ZegCLIPError becomes one ``error:`` line and its exit code.

    Returns ``fn``'s result when it is an exit code (an int), else 0.
    """
    try:
        result = fn(*args, **kwargs)
    except Exception as err:
        known = user_error(err)
        if known is None:
            raise
        print(f"{known.prefix}: {known}", file=sys.stderr)
        return known.exit_code
    return result if isinstance(result, int) else 0
