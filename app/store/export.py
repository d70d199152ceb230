"""Export formats: Markdown for people, JSON for machines (OpenAI chat messages, each with Tandem's
metadata under "tandem"), and the strict reading of that JSON back for import."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

from app.store.errors import ImportFileError
from app.store.records import (
    MESSAGE_METADATA,
    ROLES,
    ROUTES,
    STATUSES,
    Conversation,
    Message,
    from_text,
    to_text,
)

FORMAT = "tandem-history"
VERSION = 1

Thread = tuple[Conversation, Sequence[Message]]
"""A conversation with its messages, in order."""


# ---- JSON out ----------------------------------------------------------------------------------


def to_json(threads: Sequence[Thread], exported: datetime) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported": to_text(exported),
        "conversations": [_conversation_json(c, ms) for c, ms in threads],
    }


def _conversation_json(conversation: Conversation, messages: Sequence[Message]) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "created": to_text(conversation.created),
        "updated": to_text(conversation.updated),
        "cloud_opt_in": conversation.cloud_opt_in,
        "local_only": conversation.local_only,
        "archived": conversation.archived,
        "model": conversation.model,
        "messages": [_message_json(m) for m in messages],
    }


def _message_json(message: Message) -> dict[str, Any]:
    tandem = {
        "id": message.id,
        "created": to_text(message.created),
        "status": message.status,
        "parent_id": message.parent_id,
    }
    tandem.update({name: getattr(message, name) for name in MESSAGE_METADATA})
    return {"role": message.role, "content": message.content, "tandem": tandem}


# ---- Markdown out ------------------------------------------------------------------------------


def to_markdown(threads: Sequence[Thread]) -> str:
    return "\n---\n\n".join(_conversation_markdown(c, ms) for c, ms in threads)


def _conversation_markdown(conversation: Conversation, messages: Sequence[Message]) -> str:
    facts = [_when(conversation.created), f"cloud opt-in {'on' if conversation.cloud_opt_in else 'off'}"]
    if conversation.local_only:
        facts.append("local only")
    if conversation.archived:
        facts.append("archived")
    if conversation.model:
        facts.append(f"model {conversation.model}")
    parts = [f"# {conversation.title}\n\n_{' · '.join(facts)}_\n"]
    parts += [f"## {_heading(m)}\n\n{m.content}\n" for m in messages]
    return "\n".join(parts)


def _heading(message: Message) -> str:
    facts = [message.role.capitalize(), _when(message.created)]
    facts += [value for value in (message.route, message.model) if value]
    if message.tokens_out:
        facts.append(f"{message.tokens_out} tokens")
    reason = message.escalation_reason
    if reason:
        # Only a cloud reply was escalated; a local one's reason says why it stayed.
        escalated = message.route == "cloud" and not reason.startswith("escalated")
        facts.append(f"escalated: {reason}" if escalated else reason)
    if message.status != "complete":
        facts.append(message.status)
    return " · ".join(facts)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# ---- JSON in -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedMessage:
    role: str
    content: str
    created: datetime | None
    status: str
    parent_index: int | None
    """Position of the parent among the conversation's messages."""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportedConversation:
    title: str
    created: datetime | None
    updated: datetime | None
    cloud_opt_in: bool
    local_only: bool
    archived: bool
    model: str | None
    messages: tuple[ImportedMessage, ...]


_METADATA_TYPES: dict[str, tuple[type, ...]] = {
    "route": (str,),
    "model": (str,),
    "provider": (str,),
    "tokens_in": (int,),
    "tokens_out": (int,),
    "ttft_ms": (int, float),
    "tok_s": (int, float),
    "confidence": (int, float),
    "escalation_reason": (str,),
}


def parse(text: str, source: str) -> list[ImportedConversation]:
    """Read an export back, checking every field; the error names the first wrong one."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ImportFileError(source, f"not valid JSON ({error})") from None
    reader = _Reader(source)
    top = reader.mapping(document, "the file")
    if top.get("format", FORMAT) != FORMAT:
        reader.fail("the file", f"format is {top['format']!r}, not {FORMAT!r}")
    version = top.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        reader.fail("the file", f"version {version!r} is newer than this Tandem reads ({VERSION}); upgrade Tandem")
    items = reader.sequence(top.get("conversations"), "the file's 'conversations'")
    return [reader.conversation(item, f"conversation {n}") for n, item in enumerate(items, 1)]


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> NoReturn:
        raise ImportFileError(self.source, f"{where}: {problem}")

    def mapping(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, "should be a JSON object")
        return value

    def sequence(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(where, "should be a JSON list")
        return value

    def optional(self, value: object, types: tuple[type, ...], where: str) -> Any:
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            self.fail(where, f"should be {' or '.join(t.__name__ for t in types)}, not {value!r}")
        return value

    def flag(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"should be true or false, not {value!r}")
        return value

    def time(self, value: object, where: str) -> datetime | None:
        if value is None:
            return None
        try:
            moment = from_text(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            self.fail(where, f"should be an ISO-8601 time with its UTC offset, not {value!r}")
        return moment

    def conversation(self, value: object, where: str) -> ImportedConversation:
        item = self.mapping(value, where)
        raw_messages = self.sequence(item.get("messages", []), f"{where}, 'messages'")
        positions: dict[int, int] = {}
        messages = []
        for n, raw in enumerate(raw_messages, 1):
            message, message_id = self.message(raw, f"{where}, message {n}", positions)
            if message_id is not None:
                positions[message_id] = n - 1
            messages.append(message)
        return ImportedConversation(
            title=self.optional(item.get("title", "Imported conversation"), (str,), f"{where}, 'title'"),
            created=self.time(item.get("created"), f"{where}, 'created'"),
            updated=self.time(item.get("updated"), f"{where}, 'updated'"),
            cloud_opt_in=self.flag(item.get("cloud_opt_in", False), f"{where}, 'cloud_opt_in'"),
            local_only=self.flag(item.get("local_only", False), f"{where}, 'local_only'"),
            archived=self.flag(item.get("archived", False), f"{where}, 'archived'"),
            model=self.optional(item.get("model"), (str,), f"{where}, 'model'"),
            messages=tuple(messages),
        )

    def message(
        self, value: object, where: str, positions: dict[int, int]
    ) -> tuple[ImportedMessage, int | None]:
        item = self.mapping(value, where)
        role = item.get("role")
        if role not in ROLES:
            self.fail(where, f"role {role!r} is not one of {', '.join(ROLES)}")
        tandem = self.mapping(item.get("tandem", {}), f"{where}, 'tandem'")
        status = tandem.get("status", "complete")
        if status not in STATUSES:
            self.fail(where, f"status {status!r} is not one of {', '.join(STATUSES)}")
        parent_id = self.optional(tandem.get("parent_id"), (int,), f"{where}, 'parent_id'")
        if parent_id is not None and parent_id not in positions:
            self.fail(where, f"parent_id {parent_id} names no earlier message of this conversation")
        metadata = {
            name: self.optional(tandem.get(name), types, f"{where}, '{name}'")
            for name, types in _METADATA_TYPES.items()
        }
        if metadata["route"] not in (None, *ROUTES):
            self.fail(where, f"route {metadata['route']!r} is not one of {', '.join(ROUTES)}")
        metadata["refusal"] = self.flag(tandem.get("refusal", False), f"{where}, 'refusal'")
        message = ImportedMessage(
            role=role,
            content=self.content(item.get("content"), where),
            created=self.time(tandem.get("created"), f"{where}, 'created'"),
            # Nothing streams into an imported reply: one left partial was cut short.
            status="interrupted" if status == "partial" else status,
            parent_index=None if parent_id is None else positions[parent_id],
            metadata={name: value for name, value in metadata.items() if value is not None},
        )
        return message, self.optional(tandem.get("id"), (int,), f"{where}, 'id'")

    def content(self, value: object, where: str) -> str:
        """A string, or OpenAI's list of content parts, of which the text parts are kept."""
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(part, dict) for part in value):
            return "".join(part.get("text", "") for part in value if part.get("type") == "text")
        self.fail(where, "content should be a string or a list of content parts")
