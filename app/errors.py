"""The base of every error app/ raises on purpose, and the last-resort words for one nobody expected.

Each package has its own small hierarchy (engine.errors.EngineError, offload.errors.OffloadError,
AppError here); their messages are fit to show the user as they are."""

from __future__ import annotations

import logging

_log = logging.getLogger("tandem")


class AppError(Exception):
    """Base of the app's errors (the store, settings, models, turns): the message says what went
    wrong and what to do."""


def unexpected(error: BaseException) -> str:
    """For a last-resort handler: log the error with its traceback (logger "tandem") and return
    words that say it was not expected, for the user to report."""
    _log.error("unexpected %s", type(error).__name__, exc_info=error)
    return f"an unexpected {type(error).__name__}: {error} (a fault in Tandem; please report it)"
