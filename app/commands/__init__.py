"""One module per `tandem` subcommand. Each exposes `register(subparsers)`, which adds its parser
and sets `handler`, a function taking the parsed args and returning an exit code. Modules import
only argparse-level things at the top: heavy work is imported inside handlers."""

COMMAND_MODULES: tuple[str, ...] = ("history", "keys", "models", "serve")
"""Module names under app.commands, in the order `tandem --help` lists them."""
