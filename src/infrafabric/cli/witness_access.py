"""What the witness and optimise commands share: opening the log read-only, output formats, failing cleanly."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console

from infrafabric.witness import Witness, WitnessError, default_key_dir, default_url
from infrafabric.witness.store.sql import sqlite_path


class OutFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


console = Console()
err_console = Console(stderr=True)

UrlOpt = typer.Option(None, "--url", help="Witness URL (default: $INFRAFABRIC_WITNESS_URL or the state-dir SQLite file).")
KeyDirOpt = typer.Option(None, "--key-dir", help="Key directory (default: $INFRAFABRIC_WITNESS_KEY_DIR).")
FormatOpt = typer.Option(OutFormat.table, "--format")


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def open_witness(url: Optional[str], key_dir: Optional[Path]) -> Witness:
    """The witness log at url (default: the configured one); readers never mint keys."""
    url = url or default_url()
    path = sqlite_path(url) if url.startswith("sqlite") else None
    if path is not None and not Path(path).exists():
        fail(f"no witness log at {path}")
    try:
        return Witness(url, key_dir or default_key_dir(), create_key=False)
    except WitnessError as exc:
        fail(f"{exc.error_code}: {exc.message}")
