"""`tandem serve`: this machine's local model as an OpenAI-compatible server, for other devices."""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the local model over an OpenAI-compatible API (an on-prem tier for other devices)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0 picks a free one)")
    parser.add_argument(
        "--model", metavar="NAME", help="a model `tandem models` lists, or a model folder (default: tandem-nano)"
    )
    parser.add_argument(
        "--token", help="require this bearer token from clients (default: $TANDEM_SERVE_TOKEN, else none)"
    )
    parser.add_argument(
        "--batch", type=_positive, default=8, metavar="N",
        help="sequences decoded together in one step (default: 8)",
    )  # fmt: skip
    parser.add_argument(
        "--queue", type=_non_negative, default=16, metavar="N",
        help="requests that may wait for a free sequence; beyond that clients get 429 (default: 16)",
    )  # fmt: skip
    parser.set_defaults(handler=serve)


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def serve(args: argparse.Namespace) -> int:
    from app.server.runner import make_server
    from engine.errors import EngineError
    from offload.network import is_loopback

    try:
        from engine.loader import open_engine
    except ModuleNotFoundError as missing:
        if missing.name != "engine.loader":
            raise
        print("tandem: this build has no local engine (engine.loader is missing); reinstall Tandem.", file=sys.stderr)
        return 1
    import assets
    from app.local_models import UnknownModelName, model_named
    from app.paths import cache_dir

    try:
        model_dir = model_named(args.model).path if args.model else assets.embedded_model_dir()
    except UnknownModelName as problem:
        print(f"tandem serve: {problem}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("TANDEM_SERVE_TOKEN") or None
    try:
        engine = open_engine(model_dir, backend="tvm", on_progress=_show_progress, cache_dir=cache_dir())
    except EngineError as error:
        print(f"\ntandem: {error}", file=sys.stderr)
        return 1
    try:
        server = make_server(engine, args.host, args.port, token, max_sequences=args.batch, max_waiting=args.queue)
    except OSError as error:
        engine.close()
        print(
            f"tandem: cannot listen on {args.host}:{args.port} ({error.strerror or error}). "
            "Pick another --port or --host.",
            file=sys.stderr,
        )
        return 1
    except EngineError as error:
        engine.close()
        print(f"tandem: {error}", file=sys.stderr)
        return 1
    if not is_loopback(args.host) and not token:
        print("tandem: warning: anyone who can reach this address can use the model; set --token.", file=sys.stderr)
    print(f"Serving {engine.info.model_id} at {server.url} (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        engine.close()
    return 0


_progress_line: list[str] = []
"""The stage whose progress line is open on stderr, if any."""


def _show_progress(stage: str, fraction: float) -> None:
    """One line per stage: redrawn in place on a terminal, printed once done elsewhere (a log)."""
    if _progress_line and _progress_line[0] != stage:
        print(file=sys.stderr)  # a new stage starts its own line, not over the last one's
        _progress_line.clear()
    if sys.stderr.isatty():
        print(f"\r\x1b[K{stage}: {fraction:4.0%}", end="", file=sys.stderr, flush=True)
        _progress_line[:] = [stage]
    elif fraction >= 1:
        print(f"{stage}: done", file=sys.stderr, flush=True)
    if fraction >= 1 and _progress_line:
        print(file=sys.stderr)
        _progress_line.clear()
