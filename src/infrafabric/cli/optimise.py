"""``infrafabric optimise report | budget``: costs from the witness log, exact to the cent and beyond."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from infrafabric.optimise import CostTracker, OptimiseError
from infrafabric.cli.witness_access import FormatOpt, KeyDirOpt, OutFormat, UrlOpt, console
from infrafabric.cli.witness_access import fail as _fail
from infrafabric.cli.witness_access import open_witness as _open

app = typer.Typer(help="IF.optimise: cost reports and budgets.", no_args_is_help=True)


class GroupBy(str, Enum):
    swarm = "swarm"
    component = "component"
    model = "model"
    day = "day"
    operation = "operation"


class Period(str, Enum):
    day = "day"
    week = "week"
    month = "month"
    total = "total"





def _parse_since(since: Optional[str]) -> Optional[datetime]:
    if since is None:
        return None
    try:
        dt = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"--since is not an ISO 8601 time: {since!r}")
        raise
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@app.command()
def report(
    group_by: GroupBy = typer.Option(GroupBy.swarm, "--group-by", "-g"),
    since: Optional[str] = typer.Option(None, "--since", help="ISO 8601 start time."),
    fmt: OutFormat = FormatOpt,
    url: Optional[str] = UrlOpt,
    key_dir: Optional[Path] = KeyDirOpt,
) -> None:
    """Total cost per swarm, component, model, day or operation."""
    witness = _open(url, key_dir)
    try:
        rows = CostTracker(witness).report(group_by.value, since=_parse_since(since))
    finally:
        witness.close()
    if fmt is OutFormat.json:
        typer.echo(json.dumps(rows, indent=2))
    elif fmt is OutFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=["key", "cost", "operations", "share"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table(group_by.value, "cost", "operations", "share %")
        for r in rows:
            table.add_row(r["key"], r["cost"], str(r["operations"]), r["share"])
        console.print(table)


@app.command()
def budget(
    set_limit: Optional[str] = typer.Option(None, "--set", help="Set a budget limit (exact decimal)."),
    period: Period = typer.Option(Period.month, "--period"),
    swarm: Optional[str] = typer.Option(None, "--swarm"),
    component: Optional[str] = typer.Option(None, "--component"),
    model: Optional[str] = typer.Option(None, "--model"),
    fmt: OutFormat = FormatOpt,
    url: Optional[str] = UrlOpt,
    key_dir: Optional[Path] = KeyDirOpt,
) -> None:
    """Show every budget's use, alerts (50/80/100 %) and projected exhaustion; --set adds or changes one."""
    witness = _open(url, key_dir)
    try:
        tracker = CostTracker(witness)
        if set_limit is not None:
            try:
                tracker.set_budget(set_limit, period.value, swarm=swarm, component=component, model=model)
            except OptimiseError as exc:
                _fail(str(exc))
        statuses = [s.to_dict() for s in tracker.budget_status()]
    finally:
        witness.close()
    if fmt is OutFormat.json:
        typer.echo(json.dumps(statuses, indent=2))
        return
    if fmt is OutFormat.csv:
        if statuses:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(statuses[0]))
            writer.writeheader()
            for s in statuses:
                writer.writerow({**s, "alerts": " ".join(str(a) for a in s["alerts"])})
        return
    if not statuses:
        console.print("no budgets set (use --set AMOUNT)")
        return
    table = Table("budget", "period", "limit", "spent", "remaining", "used %", "alerts", "projected exhaustion")
    for s in statuses:
        pct = float(s["percent"])
        colour = "red" if pct >= 100 else "yellow" if pct >= 80 else "cyan" if pct >= 50 else "green"
        table.add_row(s["budget"], s["period"], s["limit"], s["spent"], s["remaining"], f"[{colour}]{s['percent']}[/{colour}]",
                      " ".join(f"{a}%" for a in s["alerts"]) or "-", s["projected_exhaustion"] or "-")
    console.print(table)


@app.command("rates")
def rates(config: Path = typer.Option(..., help="Gateway TOML holding the rates table")) -> None:
    """The rates table the gateway charges by: $ per million tokens, per model, with its version."""
    from infrafabric.errors import InfraFabricError
    from infrafabric.gateway.prices import RateCard

    try:
        card = RateCard.load(config)
    except (InfraFabricError, OSError) as exc:
        _fail(str(exc))
    table = Table(title=f"rates {card.version} ($ per million tokens)")
    for column in ("model", "input", "cached input", "cache write", "output", "max output tokens", "provider"):
        table.add_column(column)
    for name, r in sorted(card.rates.items()):
        table.add_row(name, str(r.input), str(r.cached_input), str(r.input if r.cache_write is None else r.cache_write),
                      str(r.output), str(r.max_output_tokens), r.provider)
    console.print(table)


@app.command("estimate")
def estimate(
    config: Path = typer.Option(..., help="Gateway TOML holding the rates table"),
    model: str = typer.Option(..., help="Model name as priced"),
    input_tokens: int = typer.Option(..., min=0, help="Prompt tokens per operation"),
    output_tokens: int = typer.Option(..., min=0, help="Completion tokens per operation"),
    operations: int = typer.Option(1, min=1, help="How many operations"),
) -> None:
    """tokens × rate × operations, exact."""
    from infrafabric.errors import InfraFabricError
    from infrafabric.gateway.prices import RateCard

    try:
        card = RateCard.load(config)
        cost = card.estimate(model, input_tokens, output_tokens, operations)
    except (InfraFabricError, OSError) as exc:
        _fail(str(exc))
    console.print(f"{operations} × {model} ({input_tokens} in, {output_tokens} out) at rates {card.version}: "
                  f"${cost}", highlight=False)
