"""The history store: every conversation, message and byte that left the machine, in one SQLite
file (sqlite-utils), searchable, exportable and safe against crashes and a second Tandem.

Open it with `Store.open(path)`; the records and errors below are what its methods return and raise.
"""

from app.store.errors import (
    ConversationNotFound,
    ForeignDatabase,
    ImportFileError,
    MessageNotFound,
    NewerSchema,
    ReplyClosed,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreReadOnly,
)
from app.store.records import Conversation, EgressRecord, Message, SearchHit
from app.store.replies import ReplyWriter
from app.store.store import Store

__all__ = [
    "Conversation",
    "ConversationNotFound",
    "EgressRecord",
    "ForeignDatabase",
    "ImportFileError",
    "Message",
    "MessageNotFound",
    "NewerSchema",
    "ReplyClosed",
    "ReplyWriter",
    "SearchHit",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreReadOnly",
]
