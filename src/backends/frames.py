"""The pipe protocol between a parent and its single-writer child process (standard library only).

A frame is a 4-byte little-endian length, then a pickle. Pickle is safe here: both ends are this project,
over a private pipe the parent made; it is never used on a socket or a file. Both writer children (the
witness's and the PoOT writer) and their parents use these functions, so the format exists once.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any, BinaryIO

__all__ = ["HEADER", "encode_frame", "read_frame", "write_frame"]

HEADER = struct.Struct("<I")


def encode_frame(message: Any, *, fast: bool = False) -> bytes:
    """One frame: the length, then the pickle. ``fast`` pickles without a memo: about half the time of
    ``pickle.dumps`` for batches of flat tuples of strings and numbers (the witness's entries), slower for
    nested values with repeated objects (a PoOT group); the reader is the same either way."""
    if not fast:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        return HEADER.pack(len(data)) + data
    buffer = io.BytesIO()
    buffer.write(bytes(HEADER.size))
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo: the message must hold no cycles
    pickler.dump(message)
    data = buffer.getbuffer()
    HEADER.pack_into(data, 0, len(data) - HEADER.size)
    return bytes(data)


def read_frame(stream: BinaryIO) -> Any:
    """The next message, or None at the end of the stream (or a frame cut short by it)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (length,) = HEADER.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        return None
    return pickle.loads(data)


def write_frame(stream: BinaryIO, message: Any, *, fast: bool = False) -> None:
    stream.write(encode_frame(message, fast=fast))
    stream.flush()

