"""The Tandem app: the TUI, the CLI, settings and the history store."""

__version__ = "0.1.0"
