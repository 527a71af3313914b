"""Example guest modules shipped with IF.chassis (WAT sources compiled at load time).

``reference`` exercises every host function and every sandbox boundary (tests, demo, benchmarks);
``minimal`` has no imports at all (benchmark of the chassis' own overhead).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import wasmtime

EXAMPLES = ("reference", "minimal")


def wat_source(name: str) -> str:
    """The WAT text of an example module."""
    if name not in EXAMPLES:
        raise KeyError(f"unknown example module {name!r}; known: {', '.join(EXAMPLES)}")
    return resources.files(__package__).joinpath(f"{name}.wat").read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def module_bytes(name: str = "reference") -> bytes:
    """The compiled .wasm bytes of an example module (wat2wasm once per process)."""
    return bytes(wasmtime.wat2wasm(wat_source(name)))


def reference_module() -> bytes:
    return module_bytes("reference")


def minimal_module() -> bytes:
    return module_bytes("minimal")
