"""What can go wrong with the history store, each error saying the problem and the fix."""

from __future__ import annotations

from pathlib import Path

from app.errors import AppError


class StoreError(AppError):
    """Base of every history-store error; its message is fit to show the user as is."""


class StoreLocked(StoreError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"the history database {path} is locked by another program; "
            "close the other Tandem (or the tool holding it) and try again"
        )


class StoreReadOnly(StoreError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"the history database {path} is read-only; "
            "make it and its folder writable, or point --db at another file"
        )


class StoreCorrupt(StoreError):
    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"the history database {path} is damaged or not a SQLite file ({detail}); "
            "it was left untouched: restore it from a backup or point --db at another file"
        )


class ForeignDatabase(StoreError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} is a SQLite database of another program, not Tandem's history; "
            "it was left untouched: point --db at another file"
        )


class NewerSchema(StoreError):
    def __init__(self, path: Path, unknown: list[str]) -> None:
        super().__init__(
            f"the history database {path} was written by a newer Tandem "
            f"(unknown migrations: {', '.join(unknown)}); upgrade Tandem to open it"
        )


class ConversationNotFound(StoreError):
    def __init__(self, conversation_id: int) -> None:
        super().__init__(
            f"there is no conversation {conversation_id}; `tandem history list` shows the ids"
        )


class MessageNotFound(StoreError):
    def __init__(self, message_id: int) -> None:
        super().__init__(
            f"there is no message {message_id}; it may have been deleted with its conversation"
        )


class ReplyClosed(StoreError):
    def __init__(self, message_id: int) -> None:
        super().__init__(f"reply {message_id} is already finished; begin a new reply to write more")


class ImportFileError(StoreError):
    def __init__(self, source: str, problem: str) -> None:
        super().__init__(
            f"cannot import {source}: {problem}; "
            "expected a JSON file written by `tandem history export --format json`"
        )
