"""`tandem history list|search|export|import|vacuum|delete`: the history store from the shell."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.printable import printable

if TYPE_CHECKING:
    from app.store import Store

Action = Callable[["Store", argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "history",
        help="list, search, export, import or delete past conversations",
        description="Your conversations, kept in the history database (see --db).",
    )
    actions = parser.add_subparsers(dest="history_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="conversations, most recent first")
    listing.add_argument("--all", action="store_true", help="include archived conversations")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="show at most N (default 50)")
    listing.set_defaults(handler=_with_store(_list))

    finding = actions.add_parser("search", help="messages containing every word of QUERY")
    finding.add_argument("query", nargs="+", metavar="QUERY")
    finding.add_argument("--limit", type=int, default=20, metavar="N", help="show at most N (default 20)")
    finding.set_defaults(handler=_with_store(_search))

    exporting = actions.add_parser("export", help="one conversation, or all, as Markdown or JSON")
    exporting.add_argument("id", nargs="?", type=int, metavar="ID", help="a conversation id (default: all)")
    exporting.add_argument("--format", choices=("md", "json"), default="md")
    exporting.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE (default: stdout)")
    exporting.set_defaults(handler=_with_store(_export))

    importing = actions.add_parser("import", help="add the conversations of a JSON export")
    importing.add_argument("file", type=Path, metavar="FILE")
    importing.set_defaults(handler=_with_store(_import))

    vacuuming = actions.add_parser("vacuum", help="reclaim the space deleted conversations left")
    vacuuming.set_defaults(handler=_with_store(_vacuum))

    deleting = actions.add_parser("delete", help="delete a conversation and its messages for good")
    deleting.add_argument("id", type=int, metavar="ID")
    deleting.set_defaults(handler=_with_store(_delete))


def _with_store(action: Action) -> Callable[[argparse.Namespace], int]:
    """Open the store named by --db (else TANDEM_HOME, else the user data folder), run the action,
    and report any store error as one line on stderr."""

    @functools.wraps(action)
    def handler(args: argparse.Namespace) -> int:
        from app.store import Store, StoreError

        try:
            with Store.open(args.db) as store:
                return action(store, args)
        except (StoreError, _OutputError) as error:
            print(f"tandem: {error}", file=sys.stderr)
            return 1

    return handler


class _OutputError(Exception):
    pass


def _list(store: Store, args: argparse.Namespace) -> int:
    found = store.list_conversations(include_archived=args.all, limit=args.limit)
    if not found:
        print("No conversations yet.")
        return 0
    width = max(len(str(c.id)) for c in found)
    for conversation in found:
        flags = [
            label
            for label, on in (
                ("cloud", conversation.cloud_opt_in),
                ("local-only", conversation.local_only),
                ("archived", conversation.archived),
                ("don't keep", conversation.ephemeral),
            )
            if on
        ]
        when = conversation.updated.astimezone().strftime("%Y-%m-%d %H:%M")
        tail = f"  [{', '.join(flags)}]" if flags else ""
        print(f"{conversation.id:>{width}}  {when}  {printable(conversation.title)}{tail}")
    return 0


def _search(store: Store, args: argparse.Namespace) -> int:
    hits = store.search(" ".join(args.query), limit=args.limit)
    if not hits:
        print("No messages match.")
        return 0
    for hit in hits:
        snippet = " ".join(hit.snippet.split())
        print(f"{hit.conversation_id}  {printable(hit.title)} · {hit.role}: {printable(snippet)}")
    return 0


def _export(store: Store, args: argparse.Namespace) -> int:
    if args.format == "json":
        text = json.dumps(store.export_json(args.id), indent=2, ensure_ascii=False) + "\n"
    else:
        text = store.export_markdown(args.id)
    if args.output is None:
        sys.stdout.write(printable(text) if sys.stdout.isatty() else text)  # a file or pipe gets it as stored
        return 0
    try:
        with args.output.open("x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        raise _OutputError(f"{args.output} already exists; choose another name or remove it first") from None
    except OSError as error:
        raise _OutputError(f"cannot write {args.output} ({error.strerror})") from None
    print(f"Exported to {args.output}.", file=sys.stderr)
    return 0


def _import(store: Store, args: argparse.Namespace) -> int:
    from app.store import ImportFileError

    try:
        text = args.file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ImportFileError(str(args.file), "it is not UTF-8 text") from None
    except OSError as error:
        raise ImportFileError(str(args.file), error.strerror or "it cannot be read") from None
    result = store.import_json(text, source=str(args.file))
    count = sum(len(store.messages(c.id)) for c in result.added)
    skipped = f"; {result.skipped} already here, skipped" if result.skipped else ""
    print(f"Imported {len(result.added)} conversation(s) with {count} message(s){skipped}.")
    return 0


def _vacuum(store: Store, args: argparse.Namespace) -> int:
    reclaimed = store.vacuum()
    print(f"Vacuumed {store.path}: {reclaimed / 1024:.0f} KiB reclaimed.")
    return 0


def _delete(store: Store, args: argparse.Namespace) -> int:
    title = store.get_conversation(args.id).title
    store.delete_conversation(args.id)
    print(f"Deleted conversation {args.id} ({printable(title)}).")
    return 0
