"""``infrafabric witness verify | query | trace | export | checkpoint | published | consistency | prove``.

Verification and consistency proofs need only the public key: they open the log read-only."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from infrafabric.witness import (
    Checkpoint,
    VerificationReport,
    WitnessError,
    WitnessFormatError,
    default_key_dir,
    default_url,
    load_public_key,
    verify_export,
)
from infrafabric.witness.keys import PUBLIC_KEY_FILE, key_id_of
from infrafabric.witness.publish import PublishedCheckpoint, publishers_for, read_all
from infrafabric.witness.store.sql import sqlite_path
from infrafabric.witness.verify_store import consistency_at_url, inclusion_at_url, verify_url
from infrafabric.cli.witness_access import FormatOpt, KeyDirOpt, OutFormat, UrlOpt, console, err_console
from infrafabric.cli.witness_access import fail as _fail
from infrafabric.cli.witness_access import open_witness as _open

app = typer.Typer(help="IF.witness: the tamper-evident audit log.", no_args_is_help=True)

# What a command reports as "error: ..." with exit 2 instead of a traceback: the witness's coded errors, files
# that cannot be read, and values no parser takes (a checkpoint file that is not UTF-8, a time out of range).
_EXPECTED = (WitnessError, OSError, ValueError)



class ExportFormat(str, Enum):
    jsonl = "jsonl"
    json = "json"
    csv = "csv"




def _print_report(report: VerificationReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    if report.ok:
        console.print(f"[green]OK[/green]: {report.entries} entries verify; root {report.root}")
    else:
        console.print(f"[red]FAILED[/red]: {len(report.problems)} problem(s) in {report.entries} entries")
        table = Table("kind", "seq", "position", "entry id", "detail")
        for p in report.problems:
            table.add_row(p.kind, "" if p.seq is None else str(p.seq), "" if p.position is None else str(p.position),
                          p.entry_id or "", p.message)
        console.print(table)
    for cp in report.checkpoints_verified:
        console.print(f"checkpoint verified: size {cp.size} root {cp.root} at {cp.timestamp} (key {cp.key_id})")
    console.print(f"signatures checked: {report.signatures_checked}")


PublicKeyOpt = typer.Option(None, "--public-key", help="Public key PEM (default: key dir's public_key.pem).")
PublishedOpt = typer.Option(
    [], "--published", help="Where checkpoints are published: a file, file://path or a key-value URL (repeatable; "
    "default: $INFRAFABRIC_WITNESS_PUBLISH, else the log's file under <key dir>/published/).")


def read_checkpoint_file(path: Path) -> Checkpoint:
    """A checkpoint file: as printed by ``witness checkpoint`` or as published (with head hash and tree edge)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WitnessFormatError(f"{path} is not a checkpoint: not UTF-8 text ({exc.reason})") from None
    try:
        return PublishedCheckpoint.from_json(text).checkpoint
    except WitnessFormatError:
        return Checkpoint.from_json(text)


def _public_key(public_key: Optional[Path], key_dir: Optional[Path]) -> Any:
    return load_public_key(public_key if public_key is not None else (key_dir or default_key_dir()) / PUBLIC_KEY_FILE)


def _log_url(url: Optional[str]) -> str:
    url = url or default_url()
    path = sqlite_path(url) if url.startswith("sqlite") else None
    if path is not None and not Path(path).exists():
        _fail(f"no witness log at {path}")
    return url


@app.command()
def verify(
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Verify an exported log (JSONL or JSON) instead of the store."),
    public_key: Optional[Path] = PublicKeyOpt,
    checkpoint: list[Path] = typer.Option([], "--checkpoint", help="Trusted checkpoint JSON obtained out of band (repeatable)."),
    published: list[str] = PublishedOpt,
    all_signatures: bool = typer.Option(True, "--all-signatures/--trust-checkpoints",
                                        help="Check every entry signature (default), or trust verified checkpoints for what they cover."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report."),
    url: Optional[str] = UrlOpt,
    key_dir: Optional[Path] = KeyDirOpt,
) -> None:
    """Verify hashes, links, signatures and checkpoints, the stored and the published ones, with the public
    key only; exit 1 and name every problem found."""
    try:
        trusted = [read_checkpoint_file(p) for p in checkpoint]
        pub = _public_key(public_key, key_dir)
        if file is not None:
            publishers = publishers_for(published, None, key_id_of(pub), "memory://") if published else []
            for _, record in asyncio.run(read_all(publishers)):
                trusted.append(record.checkpoint)
            report = verify_export(file, pub, trusted_checkpoints=trusted, all_signatures=all_signatures)
        else:
            log = _log_url(url)
            publishers = publishers_for(published or None, key_dir or default_key_dir(), key_id_of(pub), log)
            report = verify_url(log, pub, trusted=trusted, publishers=publishers, all_signatures=all_signatures)
    except _EXPECTED as exc:
        _fail(str(exc))
        return
    _print_report(report, as_json)
    raise typer.Exit(0 if report.ok else 1)


def _newest_published(published: list[str], key_dir: Optional[Path], pub: Any, url: str) -> tuple[Any, PublishedCheckpoint]:
    """The newest checkpoint in the places named (default: where the witness publishes for ``url``)."""
    publishers = publishers_for(published or None, key_dir or default_key_dir(), key_id_of(pub), url)
    found = asyncio.run(read_all(publishers))
    if not found:
        _fail(f"no checkpoint published in {', '.join(p.name for p in publishers) or 'any place'}", code=1)
    return max(found, key=lambda item: item[1].checkpoint.size)


@app.command("published")
def published_cmd(
    published: list[str] = PublishedOpt,
    public_key: Optional[Path] = PublicKeyOpt,
    url: Optional[str] = UrlOpt,
    key_dir: Optional[Path] = KeyDirOpt,
) -> None:
    """Print the newest checkpoint published outside the database (keep a copy somewhere else too)."""
    try:
        pub = _public_key(public_key, key_dir)
        publisher, newest = _newest_published(published, key_dir, pub, url or default_url())
    except _EXPECTED as exc:
        _fail(str(exc))
        return
    if not newest.checkpoint.verify(pub):
        _fail(f"the checkpoint in {publisher.name} is not signed by this key", code=1)
    typer.echo(newest.to_json())


@app.command()
def consistency(
    old: Optional[Path] = typer.Option(None, "--from", help="The older checkpoint you kept (default: the newest published)."),
    new: Optional[Path] = typer.Option(None, "--to", help="The newer checkpoint (default: the log's newest stored one)."),
    published: list[str] = PublishedOpt,
    public_key: Optional[Path] = PublicKeyOpt,
    url: Optional[str] = UrlOpt,
    key_dir: Optional[Path] = KeyDirOpt,
) -> None:
    """RFC 9162 consistency proof that the log still extends a checkpoint you kept; exit 1 if it does not."""
    try:
        pub = _public_key(public_key, key_dir)
        log = _log_url(url)
        first = read_checkpoint_file(old) if old is not None else \
            _newest_published(published, key_dir, pub, log)[1].checkpoint
        second = read_checkpoint_file(new) if new is not None else None
        answer = consistency_at_url(log, pub, first, second)
    except _EXPECTED as exc:
        _fail(str(exc))
        return
    typer.echo(json.dumps(answer, indent=2))
    raise typer.Exit(0 if answer["consistent"] else 1)


def _emit_entries(entries: list[dict[str, Any]], fmt: OutFormat) -> None:
    if fmt is OutFormat.json:
        typer.echo(json.dumps(entries, indent=2, sort_keys=True))
    elif fmt is OutFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["seq", "timestamp", "component", "operation", "severity", "trace_id", "params", "id", "content_hash"])
        for e in entries:
            writer.writerow([e["seq"], e["timestamp"], e["component"], e["operation"], e["severity"], e["trace_id"] or "",
                             json.dumps(e["params"], sort_keys=True), e["id"], e["content_hash"]])
    else:
        table = Table("seq", "timestamp", "component", "operation", "severity", "trace", "params")
        for e in entries:
            params = json.dumps(e["params"], sort_keys=True)
            table.add_row(str(e["seq"]), e["timestamp"], e["component"], e["operation"], e["severity"],
                          e["trace_id"] or "", params if len(params) <= 80 else params[:77] + "...")
        console.print(table)


@app.command()
def query(
    component: Optional[str] = typer.Option(None, "--component", "-c"),
    operation: Optional[str] = typer.Option(None, "--operation", "-o"),
    trace_id: Optional[str] = typer.Option(None, "--trace-id", "-t"),
    since: Optional[str] = typer.Option(None, "--since", help="ISO 8601 time, e.g. 2026-01-31T12:00:00Z"),
    until: Optional[str] = typer.Option(None, "--until"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    fmt: OutFormat = FormatOpt,
    url: Optional[str] = UrlOpt,
    key_dir: Optional[Path] = KeyDirOpt,
) -> None:
    """List entries (oldest first) matching every filter given."""
    witness = _open(url, key_dir)
    try:
        entries = witness.query(component, operation, since, trace_id, until=until, limit=limit)
    except _EXPECTED as exc:
        _fail(str(exc))
        return
    finally:
        witness.close()
    _emit_entries(entries, fmt)


@app.command()
def trace(
    trace_id: str = typer.Argument(..., help="Trace id to follow."),
    fmt: OutFormat = FormatOpt,
    url: Optional[str] = UrlOpt,
    key_dir: Optional[Path] = KeyDirOpt,
) -> None:
    """Every entry of one trace, with its components, duration and total cost."""
    witness = _open(url, key_dir)
    try:
        info = witness.trace(trace_id)
    except _EXPECTED as exc:
        _fail(str(exc))
        return
    finally:
        witness.close()
    if not info["entries"]:
        _fail(f"no entries with trace id {trace_id!r}", code=1)
    if fmt is OutFormat.json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    if fmt is OutFormat.csv:
        _emit_entries(info["entries"], fmt)
        return
    console.print(f"trace [bold]{trace_id}[/bold]: {info['operations']} operations across "
                  f"{', '.join(info['components'])}; {info['duration_s']} s; total cost {info['total_cost']}")
    _emit_entries(info["entries"], fmt)


@app.command()
def export(
    fmt: ExportFormat = typer.Option(ExportFormat.jsonl, "--format", help="jsonl and json are verifiable; csv is for spreadsheets."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: stdout)."),
    url: Optional[str] = UrlOpt,
    key_dir: Optional[Path] = KeyDirOpt,
) -> None:
    """Export the whole log with its latest signed checkpoint."""
    witness = _open(url, key_dir)
    try:
        if output is None:
            count = witness.export(sys.stdout, fmt.value)
        else:
            count = witness.export(output, fmt.value)
    except _EXPECTED as exc:
        _fail(str(exc))
        return
    finally:
        witness.close()
    if output is not None:
        err_console.print(f"exported {count} entries to {output}")


@app.command("checkpoint")
def checkpoint_cmd(url: Optional[str] = UrlOpt, key_dir: Optional[Path] = KeyDirOpt) -> None:
    """Print the latest signed checkpoint (size, Merkle root, time, signature) as JSON."""
    witness = _open(url, key_dir)
    try:
        text = witness.latest_checkpoint().to_json()
    except _EXPECTED as exc:
        _fail(str(exc))
        return
    finally:
        witness.close()
    typer.echo(text)


@app.command()
def prove(
    seq: int = typer.Argument(..., min=0, help="Entry sequence number."),
    size: Optional[int] = typer.Option(None, "--size", help="Tree size (default: whole log)."),
    public_key: Optional[Path] = PublicKeyOpt,
    url: Optional[str] = UrlOpt,
    key_dir: Optional[Path] = KeyDirOpt,
) -> None:
    """RFC 9162 inclusion proof of one entry, as JSON, from its content hashed again (public key only)."""
    try:
        typer.echo(json.dumps(inclusion_at_url(_log_url(url), _public_key(public_key, key_dir), seq, size), indent=2))
    except _EXPECTED as exc:
        _fail(str(exc))
