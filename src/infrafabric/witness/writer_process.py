"""The witness's writer process (``writer_child``), started through the shared ``backends.writer_process``.

What is the witness's own: the child module, and the first frame, which carries the signing key (over the
pipe only: never in argv, the environment or a file) and where the log's trusted head is. Batches go as
``(number, entries)``; the answers are read by ``Witness._write_loop_process``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cryptography.hazmat.primitives import serialization

from backends.writer_process import Lost, StoredIds
from backends.writer_process import WriterProcess as _WriterProcess

from .keys import WitnessKeys

#: the module run as the writer process (a crash test runs a wrapper of it that dies between commit and answer)
CHILD_MODULE = "infrafabric.witness.writer_child"


class WriterProcess(_WriterProcess):
    def __init__(self, database: str, keys: WitnessKeys, *, entries_per_signature: int, high_water: int,
                 pipeline: bool, loop: asyncio.AbstractEventLoop, stored: StoredIds | None = None,
                 trusted: tuple[int, str, str, str] | None = None) -> None:
        private = keys.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                 serialization.NoEncryption())
        first: dict[str, Any] = {"database": database, "private_key": private,
                                 "entries_per_signature": entries_per_signature, "high_water": high_water,
                                 "pipeline": pipeline, "trusted": trusted}
        super().__init__(CHILD_MODULE, loop=loop, first=first, name="witness-writer", stored=stored)

    def submit_batch(self, number: int, batch: list[Any]) -> asyncio.Future[Any]:
        """Queue one batch for the child: its answer, or a ``Lost`` reconciled by the entries' ids."""
        return super().submit((number, batch), [entry[0] for entry in batch], fast=True)


__all__ = ["CHILD_MODULE", "Lost", "WriterProcess"]
