"""The `tandem` command: parses arguments and dispatches to the TUI or a subcommand."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from app import __version__
from app.commands import COMMAND_MODULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem",
        description="A local-first AI assistant: your model first, the cloud only when needed and allowed.",
    )
    parser.add_argument("--version", action="version", version=f"tandem {__version__}")
    parser.add_argument("--db", metavar="PATH", help="history database (default: under TANDEM_HOME)")
    parser.add_argument("--offline", action="store_true", help="never open a connection beyond this machine")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"app.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        return run_tui(args)
    return int(args.handler(args))


def run_tui(args: argparse.Namespace) -> int:
    """Open the TUI; textual is the only heavy import before the first paint."""
    from pathlib import Path

    from app.tui.app import TandemApp

    app = TandemApp(Path(args.db) if args.db else None, offline=args.offline)
    app.run()
    return app.return_code or 0
