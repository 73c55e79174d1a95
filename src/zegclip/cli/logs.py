"""The data commands' log lines (``zegclip prepare``, ``zegclip verify``): to stderr, warnings prefixed."""

from __future__ import annotations

import logging
import sys
from typing import Any


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of each record."""

    _zegclip_cli = True

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_cli_logging() -> None:
    """Send ``zegclip.data`` log records to stderr (info plain, warnings prefixed).

    The library loggers have fixed names (``zegclip.data.prepare``, ``zegclip.data.verify``),
    so ``python -m zegclip.data.prepare`` prints the same lines as ``zegclip prepare``.
    """
    pkg = logging.getLogger("zegclip.data")
    if not any(getattr(h, "_zegclip_cli", False) for h in pkg.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_CliFormatter())
        pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)
