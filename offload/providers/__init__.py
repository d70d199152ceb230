"""Cloud providers behind one streaming protocol: OpenAI-compatible chat completions and Anthropic Messages."""

from __future__ import annotations

from typing import Literal

from offload import keys
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
        return Anthropic(keys.get_key(name), base_url or "https://api.anthropic.com", name=name, network=network, timeouts=timeouts)
    name = name or "openai"
    return OpenAICompatible(
        base_url or "https://api.openai.com/v1", keys.get_key(name), name=name, network=network, timeouts=timeouts
    )
