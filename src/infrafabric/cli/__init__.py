"""The `infrafabric` command line (typer + rich)."""
