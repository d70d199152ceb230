"""Cloud providers behind one streaming protocol: OpenAI-compatible chat completions and Anthropic Messages."""

from __future__ import annotations

from typing import Literal

from offload import keys
from offload.errors import KeyStoreError
from offload.network import Network
from offload.providers.anthropic import Anthropic
from offload.providers.base import Exchange, Provider, ProviderEvent, RetryPolicy, StreamEnd, TextDelta, Timeouts
from offload.providers.openai import OpenAICompatible

Kind = Literal["openai-compatible", "anthropic"]

__all__ = [
    "Anthropic",
    "Exchange",
    "Kind",
    "OpenAICompatible",
    "Provider",
    "ProviderEvent",
    "RetryPolicy",
    "StreamEnd",
    "TextDelta",
    "Timeouts",
    "open_provider",
]


def open_provider(
    kind: Kind,
    name: str | None = None,
    base_url: str | None = None,
    network: Network | None = None,
    timeouts: Timeouts = Timeouts(),
) -> Provider:
    """A provider with its key read now from the environment or the keyring (entry `name`)."""
    if kind == "anthropic":
        name = name or "anthropic"
        return Anthropic(_key_if_readable(name), base_url or "https://api.anthropic.com", name=name, network=network, timeouts=timeouts)
    name = name or "openai"
    return OpenAICompatible(
        base_url or "https://api.openai.com/v1", _key_if_readable(name), name=name, network=network, timeouts=timeouts
    )


def _key_if_readable(name: str) -> str | None:
    """The key, or None where no keyring can be used (a headless machine): a key is needed only
    when a request is about to leave, and the provider then says which key is missing; the local
    model must keep working meanwhile."""
    try:
        return keys.get_key(name)
    except KeyStoreError:
        return None
