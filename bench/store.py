"""History store benchmark: a long-time user's file (100k messages over 2k conversations) and the
three things the app does with it most: list conversations, open one of 500 messages, search.

Usage: python bench/store.py [--json] [--repeat N]
Prints medians in milliseconds; with --json the last line is {"list_ms", "open_ms", "search_ms"}.
Bars: list <= 20 ms, open <= 20 ms, search <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlite_utils  # noqa: E402

from app.store import Store  # noqa: E402
from app.store.search import fts_query  # noqa: E402

CONVERSATIONS = 2_000
MESSAGES = 100_000
BIG_CONVERSATION = 500
BARS_MS = {"list_ms": 20.0, "open_ms": 20.0, "search_ms": 50.0}
SEARCHED_WORD_RANKS = {"error": 10, "python": 40, "sourdough": 150, "invoice": 400, "deadline": 600,
                       "quarterly": 1500, "lisbon": 4000}
"""Where the searched words sit in the Zipf order of the text: from very common to rare."""
SEARCHES = ["error", "python error", "sourdough", "sou", "invoice deadline", "quarterly", "lisbon"]


def vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    """Made-up words plus the searched ones, with Zipf weights (word of rank r: 1/r), as in real text."""
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = sorted({"".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(8_000)})
    rng.shuffle(words)
    for word, rank in sorted(SEARCHED_WORD_RANKS.items(), key=lambda item: item[1]):
        words.insert(rank - 1, word)
    return words, [1 / rank for rank in range(1, len(words) + 1)]


def messages(rng: random.Random, words: list[str], weights: list[float]) -> Iterator[dict]:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    sizes = [BIG_CONVERSATION] + [(MESSAGES - BIG_CONVERSATION) // (CONVERSATIONS - 1)] * (CONVERSATIONS - 1)
    sizes[-1] += MESSAGES - sum(sizes)
    message_id = 0
    for conversation_id, size in enumerate(sizes, 1):
        for n in range(size):
            message_id += 1
            user = n % 2 == 0
            yield {
                "id": message_id,
                "conversation_id": conversation_id,
                "role": "user" if user else "assistant",
                "content": " ".join(rng.choices(words, weights, k=rng.randint(8, 40) if user else rng.randint(30, 160))),
                "created": (start + timedelta(minutes=message_id)).isoformat(timespec="microseconds"),
                "status": "complete",
                "route": None if user else rng.choice(["local", "local", "local", "cloud"]),
                "parent_id": None if user else message_id - 1,
            }


def build(path: Path) -> None:
    """Schema by the store itself; rows in bulk, as years of use would have left them."""
    Store.open(path).close()
    rng = random.Random(7)
    words, weights = vocabulary(rng)
    db = sqlite_utils.Database(path)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    db["conversations"].insert_all(
        {"id": n, "title": f"Conversation {n} about {rng.choice(words)}",
         "created": (start + timedelta(hours=n)).isoformat(timespec="microseconds"),
         "updated": (start + timedelta(hours=n, minutes=30)).isoformat(timespec="microseconds"),
         "archived": int(n % 10 == 0)}
        for n in range(1, CONVERSATIONS + 1)
    )
    with db.atomic():
        db["messages"].insert_all(messages(rng, words, weights), batch_size=2_000)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def matching(path: Path, query: str) -> int:
    sql = "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?"
    return sqlite_utils.Database(path).execute(sql, [fts_query(query)]).fetchone()[0]


def median_ms(action: Callable[[], object], repeat: int) -> float:
    action()  # the first call pays for cold caches and statement preparation
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the medians")
    parser.add_argument("--repeat", type=int, default=25, metavar="N", help="timed runs per operation")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tandem.db"
        started = time.perf_counter()
        build(path)
        size_mb = path.stat().st_size / 2**20
        print(f"built {MESSAGES:,} messages in {CONVERSATIONS:,} conversations "
              f"({size_mb:.0f} MiB) in {time.perf_counter() - started:.1f} s")

        with Store.open(path) as store:
            searches = iter(SEARCHES * (args.repeat + 1))
            results = {
                "list_ms": median_ms(lambda: store.list_conversations(), args.repeat),
                "open_ms": median_ms(lambda: store.messages(1), args.repeat),
                "search_ms": median_ms(lambda: store.search(next(searches)), args.repeat),
            }
            assert len(store.messages(1)) == BIG_CONVERSATION
            per_query = {query: (matching(path, query), median_ms(lambda: store.search(query), args.repeat))
                         for query in SEARCHES}

    for query, (count, ms) in per_query.items():
        print(f"  search {query!r:<20} {count:>7,} matching messages, median {ms:6.2f} ms")
    labels = {"list_ms": "list conversations (200 newest)", "open_ms": f"open a {BIG_CONVERSATION}-message conversation",
              "search_ms": "full-text search (20 best, snippets)"}
    for key, value in results.items():
        verdict = "ok" if value <= BARS_MS[key] else "OVER"
        print(f"{labels[key]:<40} median {value:7.2f} ms   bar {BARS_MS[key]:.0f} ms  {verdict}")
    if args.json:
        print(json.dumps({key: round(value, 2) for key, value in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
