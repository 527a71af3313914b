"""`infrafabric`: one command line for every IF component."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="InfraFabric S2: coordination, governance, sandbox, audit and cost of AI swarms.",
                  no_args_is_help=True)

for name in ("coordinator", "governor", "chassis", "witness", "optimise", "gateway", "console"):
    module = importlib.import_module(f"infrafabric.cli.{name}")
    app.add_typer(module.app, name=name)


@app.command()
def demo() -> None:
    """Run the S2 phase 0 demo on the embedded default (what `make demo` runs)."""
    from infrafabric.demo import main

    main()


if __name__ == "__main__":
    app()
