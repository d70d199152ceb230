"""`tandem keys set|list|remove PROVIDER`: API keys in the system keyring. A key is read from stdin
or a hidden prompt, never from the command line, and is never printed."""

from __future__ import annotations

import argparse
import getpass
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="store, list or remove API keys (kept in the system keyring)")
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    store = actions.add_parser("set", help="store a key: paste it at the hidden prompt, or pipe it on stdin")
    store.add_argument("provider", metavar="PROVIDER", help="openai, anthropic, or the name of a configured provider")
    # Accepted only to refuse it without echoing it, as argparse's own error would.
    store.add_argument("key_on_command_line", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    store.set_defaults(handler=set_key)
    listing = actions.add_parser("list", help="show which providers have a key and where it comes from")
    listing.set_defaults(handler=list_keys)
    remove = actions.add_parser("remove", help="delete a provider's key from the keyring")
    remove.add_argument("provider", metavar="PROVIDER")
    remove.set_defaults(handler=remove_key)


def set_key(args: argparse.Namespace) -> int:
    from offload import keys
    from offload.errors import KeyStoreError

    if args.key_on_command_line:
        print(
            "tandem: keys are never taken from the command line (shell history keeps them). "
            f"Run `tandem keys set {args.provider}` and paste the key at the prompt, or pipe it on stdin.",
            file=sys.stderr,
        )
        return 2
    try:
        keys.check_name(args.provider)
        if sys.stdin.isatty():
            key = getpass.getpass(f"API key for {args.provider} (input hidden): ")
        else:
            key = sys.stdin.read()
        keys.set_key(args.provider, key)
    except KeyStoreError as error:
        print(f"tandem: {error}", file=sys.stderr)
        return 1
    except (EOFError, KeyboardInterrupt):
        print("\ntandem: no key stored.", file=sys.stderr)
        return 1
    stored_in = keys.backend()
    print(f"Stored the {args.provider} key in {stored_in.describe()}.")
    if stored_in.plaintext:
        print(
            "Warning: that file is not encrypted; anyone who can read it can read the key. "
            f"Prefer setting {keys.env_var(args.provider)} in your environment, or install an encrypted "
            "keyring (GNOME Keyring, KWallet, macOS Keychain) and store the key again.",
            file=sys.stderr,
        )
    if keys.source_of(args.provider) == "env":
        print(f"Note: {keys.env_var(args.provider)} is set and takes precedence over the keyring.")
    return 0


def list_keys(args: argparse.Namespace) -> int:
    """The same rows as the Ctrl+K screen: the providers settings name, then any other with a key."""
    from offload import keys

    listed = keys.listing(_configured_providers(args))
    width = max(len(name) for name, _ in listed.rows)
    for name, where in listed.rows:
        print(f"{name:<{width}}  {where}")
    if listed.problem is not None:
        print(f"tandem: {listed.problem}", file=sys.stderr)
        return 1
    return 0


def _configured_providers(args: argparse.Namespace) -> list[str]:
    """The provider names in the user's settings (the defaults when the history cannot be read)."""
    from pathlib import Path

    from app.settings import UserSettings, load_settings
    from app.store import Store, StoreError

    try:
        with Store.open(Path(args.db) if getattr(args, "db", None) else None) as store:
            settings = load_settings(store)
    except StoreError:
        settings = UserSettings()
    return [provider.name for provider in settings.providers]


def remove_key(args: argparse.Namespace) -> int:
    from offload import keys
    from offload.errors import KeyStoreError

    try:
        removed = keys.remove_key(args.provider)
        from_env = keys.source_of(args.provider) == "env"
    except KeyStoreError as error:
        print(f"tandem: {error}", file=sys.stderr)
        return 1
    if removed:
        print(f"Removed the {args.provider} key from the keyring.")
    else:
        print(f"tandem: no {args.provider} key in the keyring.", file=sys.stderr)
    if from_env:
        print(f"Note: {keys.env_var(args.provider)} is still set in your environment.")
    return 0 if removed else 1
