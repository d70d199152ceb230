"""API keys: kept in the system keyring (service "tandem", one entry per provider), overridden by
environment variables. Keys go only to the provider that sends them; never to disk, logs or errors."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from offload.errors import KeyStoreError

SERVICE = "tandem"
KNOWN_PROVIDERS = ("openai", "anthropic")
_INDEX_ENTRY = ".providers"
"""The keyring cannot list its entries, so the provider names (never keys) are kept in this one."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")

Source = Literal["env", "keyring"]


@dataclass(frozen=True)
class KeyBackend:
    """Where `set_key` puts a key: the keyring backend in use, and whether it stores keys readably."""

    name: str
    """The backend's class, as keyring names it (e.g. "keyrings.alt.file.PlaintextKeyring")."""
    plaintext: bool
    """True when anyone who can read `location` can read the key (base64 is no protection)."""
    location: str | None = None
    """The file the backend writes, for file backends."""

    def describe(self) -> str:
        if self.plaintext:
            where = f" ({self.location})" if self.location else ""
            return f"the plaintext keyring file{where}, backend {self.name}"
        return f"the keyring backend {self.name}"


def env_var(provider: str) -> str:
    """OPENAI_API_KEY for openai, ANTHROPIC_API_KEY for anthropic, MY_VLLM_API_KEY for my-vllm."""
    return f"{provider.upper().replace('-', '_')}_API_KEY"


def check_name(provider: str) -> str:
    if not _NAME.match(provider):
        raise KeyStoreError(
            f"{provider!r} is not a provider name. Use lower-case letters, digits and dashes, like `openai`."
        )
    return provider


def get_key(provider: str) -> str | None:
    """The key to send to `provider`: its environment variable if set, else the keyring's entry."""
    from_env = os.environ.get(env_var(check_name(provider)), "").strip()
    if from_env:
        return from_env
    return _call("get_password", SERVICE, provider) or None


def source_of(provider: str) -> Source | None:
    if os.environ.get(env_var(check_name(provider)), "").strip():
        return "env"
    return "keyring" if _call("get_password", SERVICE, provider) else None


def set_key(provider: str, key: str) -> None:
    key = key.strip()
    if not key or any(c.isspace() for c in key):
        raise KeyStoreError("That key is empty or contains spaces or line breaks. Paste the key alone.")
    _call("set_password", SERVICE, check_name(provider), key)
    names = _indexed()
    if provider not in names:
        _call("set_password", SERVICE, _INDEX_ENTRY, ",".join(sorted({*names, provider})))


def remove_key(provider: str) -> bool:
    """Delete the keyring entry; False when there was none. Environment variables are left alone."""
    if not _call("get_password", SERVICE, check_name(provider)):
        return False
    _call("delete_password", SERVICE, provider)
    names = [name for name in _indexed() if name != provider]
    _call("set_password", SERVICE, _INDEX_ENTRY, ",".join(names))
    return True


def providers(configured: Sequence[str] = ()) -> list[tuple[str, Source | None]]:
    """Every provider Tandem knows of (the `configured` ones, as settings name them, first) or
    has a key for, with where its key comes from."""
    names = dict.fromkeys([*configured, *KNOWN_PROVIDERS, *_indexed()])
    return [(name, source_of(name)) for name in names if _NAME.match(name)]


@dataclass(frozen=True)
class KeyListing:
    """What `tandem keys list` and the Ctrl+K screen both show: one row per provider."""

    rows: list[tuple[str, str]]
    """(provider, where its key comes from), in words."""
    problem: KeyStoreError | None = None
    """Set when the keyring cannot be read: the rows then show environment variables only."""


def listing(configured: Sequence[str] = ()) -> KeyListing:
    """The providers and their key sources, in the words both listings use; a keyring that cannot
    be read still lists the environment's keys, and says so."""
    try:
        stored_in = backend()
        kept = "plaintext keyring file" if stored_in.plaintext else "keyring"
        rows = [(name, _where(name, source, kept)) for name, source in providers(configured)]
        return KeyListing(rows)
    except KeyStoreError as problem:
        names = dict.fromkeys([*configured, *KNOWN_PROVIDERS])
        from_env: dict[str, Source | None] = {name: "env" if os.environ.get(env_var(name), "").strip() else None for name in names}
        rows = [(name, _where(name, source, "")) if source else (name, "keyring unavailable")
                for name, source in from_env.items()]
        return KeyListing(rows, problem)


def _where(name: str, source: Source | None, kept: str) -> str:
    return {"env": f"environment ({env_var(name)})", "keyring": kept, None: "not set"}[source]


def backend() -> KeyBackend:
    """The keyring backend keys are stored in now. keyring falls back to keyrings.alt's plaintext
    file when no system keyring exists, and says nothing of it."""
    chosen = _backend()
    inner = getattr(chosen, "backends", None) or [chosen]  # a chainer writes to its first backend
    first = inner[0]
    cls = type(first)
    name = f"{cls.__module__}.{cls.__qualname__}"
    plaintext = cls.__module__.startswith("keyrings.alt") and not cls.__qualname__.startswith("Encrypted")
    location = getattr(first, "file_path", None)
    return KeyBackend(name, plaintext, str(location) if location else None)


def _backend() -> Any:
    import keyring.core

    # load_env honours PYTHON_KEYRING_BACKEND as it is now, not as it was at first use.
    return keyring.core.load_env() or keyring.get_keyring()


def _indexed() -> list[str]:
    stored = _call("get_password", SERVICE, _INDEX_ENTRY) or ""
    return [name for name in stored.split(",") if _NAME.match(name)]


def _call(method: str, *args: str) -> Any:
    import keyring.errors

    try:
        return getattr(_backend(), method)(*args)
    except keyring.errors.PasswordDeleteError:
        return None
    except (keyring.errors.KeyringError, RuntimeError) as exc:
        raise KeyStoreError(
            f"The system keyring cannot be used ({type(exc).__name__}). Unlock or install one "
            "(GNOME Keyring, KWallet, macOS Keychain), or set the key in an environment variable "
            "such as OPENAI_API_KEY."
        ) from None
