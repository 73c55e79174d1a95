"""Read back what an offline W&B run wrote: the records of its ``.wandb`` file.

The file is wandb's transaction log: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of records, each ``crc32 (4) | length (2, little endian) | type (1) | data``,
a record split across blocks as FIRST/MIDDLE/LAST pieces (the LevelDB log format); each
assembled record is a ``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

_HEADER, _BLOCK, _RECORD_HEADER = 7, 32 * 1024, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a wandb transaction log"
    position, pieces = _HEADER, b""
    while position + _RECORD_HEADER <= len(data):
        left_in_block = _BLOCK - position % _BLOCK
        if left_in_block < _RECORD_HEADER:  # block trailer: zero padding
            position += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + _RECORD_HEADER])
        if kind == 0 and length == 0:
            break
        body = data[position + _RECORD_HEADER : position + _RECORD_HEADER + length]
        position += _RECORD_HEADER + length
        pieces = body if kind in (_FULL, _FIRST) else pieces + body
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"history": [row, ...], "summary": {...}, "config": {...}, "run": {"name", "group"}}``
    of an offline run folder."""
    (path,) = Path(run_dir).glob("*.wandb")
    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "run": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {"name": record.run.display_name, "group": record.run.run_group}
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "config":
            out["config"].update({_key(i): json.loads(i.value_json) for i in record.config.update})
    return out
