"""`tandem ask`: one question from the command line, answered through the same turn runner as the TUI.
Exit codes: 0 answered, 1 the turn or the database failed, 2 bad input, 3 no local model, 130 interrupted."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from app.printable import printable
from app.route_labels import describe_result

EXIT_FAILED, EXIT_USAGE, EXIT_NO_MODEL, EXIT_INTERRUPTED = 1, 2, 3, 130


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ask",
        help="ask one question and print the reply",
        description="Ask one question. The local model answers first; the cloud only when needed and allowed.",
    )
    parser.add_argument("prompt", nargs="?", default="-", help='the question; "-" or nothing reads it from stdin')
    route = parser.add_mutually_exclusive_group()
    route.add_argument("--local", dest="force", action="store_const", const="local", help="answer locally only")
    route.add_argument(
        "--cloud", dest="force", action="store_const", const="cloud", help="send this question to the cloud (if allowed)"
    )
    # Its own dest: a subparser default would overwrite the global --offline.
    parser.add_argument("--offline", dest="ask_offline", action="store_true", help="nothing leaves this machine")
    parser.add_argument("--json", dest="as_json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--model", metavar="NAME", help="answer with this local model (default: the one chosen in tandem)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-c", "--continue", dest="continue_last", action="store_true",
                       help="continue the most recent conversation")
    where.add_argument("--conversation", type=int, metavar="ID",
                       help="continue conversation ID (`tandem history list` shows the ids)")
    parser.add_argument("--system", metavar="TEXT", help="a system prompt for this question")
    parser.set_defaults(handler=run, force=None)


def _fail(message: str, code: int) -> int:
    print(f"tandem ask: {message}", file=sys.stderr)
    return code


def as_text(text: str) -> str:
    """Text that can be stored: argv bytes Python could not decode come back as themselves, and
    whatever is still not UTF-8 (a lone surrogate, a stray byte) becomes U+FFFD."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def read_question(prompt: str) -> str:
    if prompt != "-":
        return as_text(prompt).strip()
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a replaced text stream (tests, embedding): no bytes to decode
        return as_text(sys.stdin.read()).strip()
    return stream.read().decode("utf-8", "replace").strip()


def run(args: argparse.Namespace) -> int:
    question = read_question(args.prompt)
    if not question:
        return _fail('the question is empty: pass it as an argument, or pipe it in with "-".', EXIT_USAGE)
    offline = bool(args.offline or args.ask_offline)
    if args.force == "cloud" and offline:
        return _fail("--cloud and --offline contradict each other: drop one.", EXIT_USAGE)
    try:
        return _answer(question, args, offline)
    except KeyboardInterrupt:
        return _fail("interrupted; your question and the partial reply are saved.", EXIT_INTERRUPTED)


def _answer(question: str, args: argparse.Namespace, offline: bool) -> int:
    from pathlib import Path

    from app.store import Store, StoreError

    try:
        store = Store.open(Path(args.db) if args.db else None)
    except StoreError as problem:
        return _fail(str(problem), EXIT_FAILED)
    with store:
        return _answer_with(store, question, args, offline)


def _answer_with(store: Any, question: str, args: argparse.Namespace, offline: bool) -> int:
    from app.local_models import (
        ModelUnavailable,
        UnknownModelName,
        chosen_model,
        model_named,
        open_model_or_explain,
    )
    from app.settings import load_settings
    from app.turns import NEW_TITLE, TurnError, TurnRunner, default_router_factory
    from offload.network import NETWORK

    if (args.continue_last or args.conversation is not None) and _conversation_for(store, args, "") is None:
        return EXIT_USAGE  # said why before the model loads: a wrong id should not cost that wait
    settings = load_settings(store)
    NETWORK.set_offline(offline or settings.mode == "offline")  # the hard switch, beside the router's gate
    try:
        model = model_named(args.model) if args.model else chosen_model(settings.model_dir, settings.backend)
    except UnknownModelName as problem:
        return _fail(str(problem), EXIT_USAGE)
    try:
        engine = open_model_or_explain(model)
    except ModelUnavailable as problem:
        return _fail(str(problem), EXIT_NO_MODEL)
    try:
        conversation = _conversation_for(store, args, NEW_TITLE)  # the turn titles it from the question
        if conversation is None:
            return EXIT_USAGE
        runner = TurnRunner(store, default_router_factory(engine, settings, offline))
        stream = sys.stdout.isatty() and not args.as_json
        try:
            result = runner.run(
                conversation.id,
                question,
                approve=_approve_on_terminal,
                force=args.force,
                on_event=_print_tokens if stream else None,
                system=as_text(args.system) if args.system else None,
            )
        except TurnError as problem:
            return _fail(str(problem), EXIT_FAILED)
    finally:
        engine.close()
    if args.as_json:
        print(json.dumps({**asdict(result), "conversation_id": conversation.id}, ensure_ascii=False))
    else:
        # A streamed reply is on screen already; end its line. A pipe gets the reply as stored.
        print("" if stream else result.reply)
        for notice in result.notices:
            print(f"⚑ {_shown(notice, sys.stderr)}", file=sys.stderr)
        print(_shown(describe_result(result), sys.stderr), file=sys.stderr)
    return 0 if result.status != "error" else EXIT_FAILED


def _conversation_for(store: Any, args: argparse.Namespace, title: str) -> Any:
    """The conversation to ask in: a new one, the latest (-c) or the one named (--conversation);
    None after saying why there is none. --cloud opts the conversation in, unless it is locked local."""
    from app.store import StoreError

    if args.continue_last or args.conversation is not None:
        try:
            if args.conversation is not None:
                conversation = store.get_conversation(args.conversation)
            else:
                latest = store.list_conversations(limit=1)
                if not latest:
                    _fail("there is no conversation to continue yet: ask without -c first.", EXIT_USAGE)
                    return None
                conversation = latest[0]
        except StoreError as problem:
            _fail(str(problem), EXIT_USAGE)
            return None
        if args.force == "cloud" and not conversation.cloud_opt_in and not conversation.local_only:
            store.update_conversation(conversation.id, cloud_opt_in=True)
            conversation = store.get_conversation(conversation.id)
        return conversation
    return store.create_conversation(title=title, cloud_opt_in=args.force == "cloud")


def _print_tokens(event: Any) -> None:
    from offload.events import Discard, Token

    if isinstance(event, Token):
        sys.stdout.write(printable(event.text))  # streaming happens only on a terminal
        sys.stdout.flush()
    elif isinstance(event, Discard):
        print(f"\n⚑ local draft withdrawn: {_shown(event.reason, sys.stderr)}", file=sys.stderr)


def _shown(text: str, stream: Any) -> str:
    """Control characters made visible when `stream` is a terminal."""
    isatty = getattr(stream, "isatty", None)
    return printable(text) if isatty is not None and isatty() else text


def _approve_on_terminal(preview: Any, tty_path: str = "/dev/tty") -> bool:
    """Ask mode on the command line: show the payload on the terminal and wait for y/N.
    Without a terminal to ask on, nothing leaves, and the router says so (not "you declined")."""
    from offload.router import ApprovalUnavailable

    try:
        # Two handles: a text file opened "r+" on a tty is not seekable, and Python refuses it.
        with open(tty_path, "w", encoding="utf-8") as out, open(tty_path, encoding="utf-8", errors="replace") as into:
            out.write(f"\nSend this to {preview.provider} at {preview.host}?\n{printable(preview.payload)}\n[y/N] ")
            out.flush()
            return into.readline().strip().lower() in ("y", "yes")
    except OSError:
        raise ApprovalUnavailable(
            "ask mode needs a terminal to approve a cloud request, and none is attached. Run it in a "
            "terminal, or switch to auto mode in settings to send without asking."
        ) from None
