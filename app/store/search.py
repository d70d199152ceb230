"""Full-text search over message content: the user's words become a safe FTS5 query, hits come
ranked by bm25 with a snippet around the match."""

from __future__ import annotations

import sqlite_utils

from app.store.records import SearchHit

MARK_OPEN = "«"
MARK_CLOSE = "»"
ELLIPSIS = "…"
SNIPPET_TOKENS = 12
PREFIX_MIN_CHARS = 3
"""A last word this long or longer matches as a prefix; shorter ones would match nearly everything."""
RANK_WINDOW = 5_000
"""When more messages match, only the newest this many are ranked: bm25 costs time per match,
and a word in half of all messages must not make search slow."""

# messages_fts.rowid is messages.id: an INTEGER PRIMARY KEY, stable across VACUUM.
_SEARCH_SQL = f"""
SELECT messages.id AS message_id, messages.conversation_id, messages.role, conversations.title,
       snippet(messages_fts, 0, :open, :close, '{ELLIPSIS}', {SNIPPET_TOKENS}) AS snippet,
       messages_fts.rank AS rank
FROM messages_fts
JOIN messages ON messages.id = messages_fts.rowid
JOIN conversations ON conversations.id = messages.conversation_id
WHERE messages_fts MATCH :query AND messages_fts.rowid >= :floor
ORDER BY messages_fts.rank
LIMIT :limit
"""

_WINDOW_FLOOR_SQL = """
SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT 1 OFFSET ?
"""


def fts_query(text: str) -> str | None:
    """Every word must appear, the last one also as a prefix once it has PREFIX_MIN_CHARS
    (so results come while typing).

    Each word is quoted, so what the user types is never FTS5 syntax (AND, NEAR, "-", ":");
    None when the text has no word to look for.
    """
    # SQLite reads the query as a C string: a NUL would cut it short inside a quote.
    words = [word for word in text.replace("\0", " ").split() if any(char.isalnum() for char in word)]
    if not words:
        return None
    quoted = ['"' + word.replace('"', '""') + '"' for word in words]
    if len(words[-1]) >= PREFIX_MIN_CHARS:
        quoted[-1] += "*"
    return " ".join(quoted)


def search(db: sqlite_utils.Database, text: str, limit: int = 20) -> list[SearchHit]:
    query = fts_query(text)
    if query is None:
        return []
    floor = db.execute(_WINDOW_FLOOR_SQL, [query, RANK_WINDOW - 1]).fetchone()
    rows = db.query(_SEARCH_SQL, {
        "open": MARK_OPEN, "close": MARK_CLOSE, "query": query, "limit": limit, "floor": floor[0] if floor else 0,
    })
    return [
        SearchHit(
            conversation_id=row["conversation_id"],
            message_id=row["message_id"],
            title=row["title"],
            role=row["role"],
            snippet=row["snippet"],
            rank=row["rank"],
        )
        for row in rows
    ]
