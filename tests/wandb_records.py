"""Read the records of an offline W&B run file (``run-*.wandb``) with W&B's own protobufs.

The file is a LevelDB-style log (32 KiB blocks of CRC/length/type-framed chunks) after a 7-byte
W&B header; each complete chunk is one ``wandb.proto.wandb_internal_pb2.Record``.
"""
from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32 * 1024, 7


def records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, partial = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(partial + chunk if kind == 4 else chunk)
            partial = b""
            yield record
        elif kind in (2, 3):
            partial = chunk if kind == 2 else partial + chunk


def history(path: Path) -> list[dict[str, str]]:
    return [{i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
            for r in records(path) if r.WhichOneof("record_type") == "history"]
