"""Errors raised when talking to a cloud provider or the key store.

Each message is one line a user understands: what went wrong, then how to fix it. No message
ever contains an API key: text a server sends back passes through `scrub` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from offload.providers.base import Exchange

_KEY_SHAPED = re.compile(r"\b(sk|pk|rk|key|api|tok)[-_][A-Za-z0-9_\-\.]{8,}", re.IGNORECASE)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove known secrets and anything shaped like an API key; flatten to one short line."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[API key]")
    text = _KEY_SHAPED.sub("[API key]", text)
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


class OffloadError(Exception):
    """Base of everything offload/ raises on purpose."""


class KeyStoreError(OffloadError):
    """The system keyring cannot be used; says which and what to do instead."""


class ProviderError(OffloadError):
    """A request to a provider failed. `exchange` records any bytes that did leave, for the ledger."""

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.exchange: Exchange | None = None


class OfflineError(ProviderError):
    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"Offline mode is on, so nothing was sent to {host}. "
            "Turn offline mode off (Ctrl+G, or run without --offline) to use the cloud."
        )


def _key_variable(provider: str) -> str:
    from offload.keys import env_var  # here: offload.keys imports this module

    return env_var(provider)


class MissingKey(ProviderError):
    def __init__(self, provider: str, env_var: str) -> None:
        self.provider = provider
        super().__init__(
            f"No API key for {provider}. Set {env_var}, or store one with `tandem keys set {provider}` "
            "(or Ctrl+K) where a keyring is available."
        )


class AuthError(ProviderError):
    def __init__(self, provider: str, status: int) -> None:
        self.provider, self.status = provider, status
        problem = "rejected the API key" if status == 401 else "refused access with this API key"
        # Advice that works without a keyring too: the variable always does.
        super().__init__(
            f"{provider} {problem} (HTTP {status}). Set {_key_variable(provider)} to a valid key, or store "
            f"one with `tandem keys set {provider}`; `tandem keys list` shows where the key comes from."
        )


class RateLimited(ProviderError):
    retryable = True

    def __init__(self, provider: str, retry_after: float | None) -> None:
        self.provider, self.retry_after = provider, retry_after
        wait = f"; it asks to wait {retry_after:g} s" if retry_after is not None else ""
        super().__init__(
            f"{provider} is rate-limiting requests (HTTP 429{wait}). "
            "Wait a moment and try again, or check your plan's limits."
        )


class ServerError(ProviderError):
    retryable = True

    def __init__(self, provider: str, status: int | None, detail: str = "", retry_after: float | None = None) -> None:
        self.provider, self.status, self.retry_after = provider, status, retry_after
        what = f"HTTP {status}" if status is not None else "reported in the stream"
        said = f": {detail}" if detail else ""
        super().__init__(f"{provider} had a server error ({what}{said}). Try again in a moment.")


class BadRequest(ProviderError):
    def __init__(self, provider: str, status: int, detail: str = "") -> None:
        self.provider, self.status = provider, status
        said = f": {detail}" if detail else ""
        super().__init__(
            f"{provider} refused the request (HTTP {status}{said}). "
            "Check the provider's base URL and the model name in settings."
        )


class Unreachable(ProviderError):
    retryable = True

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        super().__init__(
            f"Could not reach {host} ({reason}). Check your network connection and the provider's base URL."
        )


class ConnectTimeout(ProviderError):
    retryable = True

    def __init__(self, host: str, seconds: float) -> None:
        self.host, self.seconds = host, seconds
        super().__init__(
            f"Could not connect to {host} within {seconds:g} s. "
            "Check your network connection and the provider's base URL."
        )


class ReadTimeout(ProviderError):
    def __init__(self, host: str, seconds: float) -> None:
        self.host, self.seconds = host, seconds
        super().__init__(
            f"{host} stopped responding for {seconds:g} s. "
            "Try again, or raise the provider's read timeout in settings (Ctrl+S) if the model is slow."
        )


class ConnectionLost(ProviderError):
    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"The connection to {host} dropped before the reply was complete. Try again."
        )


class ProtocolError(ProviderError):
    def __init__(self, provider: str, host: str, detail: str) -> None:
        self.provider, self.host = provider, host
        super().__init__(
            f"{provider} at {host} sent a reply Tandem cannot read ({detail}). "
            "Check that the base URL points to an API of this provider's kind."
        )


class ResponseTooLarge(ProviderError):
    def __init__(self, provider: str, limit: int) -> None:
        self.provider, self.limit = provider, limit
        super().__init__(
            f"{provider}'s reply grew past {limit} bytes and was cut off. "
            "Lower max_tokens, or raise the response size limit."
        )
