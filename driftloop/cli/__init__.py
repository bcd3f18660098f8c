"""The `driftloop` command line; ``main`` is the console script's entry point."""

from driftloop.cli.main import cli, main

__all__ = ["cli", "main"]
