"""vLLM's scoring subset of the legacy completions API, so a Tandem box and a vLLM box are
interchangeable verifiers for hybrid decoding: POST /v1/completions with a prompt (text or token
ids), `echo` and `logprobs: k`, `max_tokens` 0 or 1; and POST /tokenize."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.server.protocol import ApiError
from engine import sampling
from engine.tvm_backend.scoring import MAX_TOP, PositionScore, ScoredPrompt


@dataclass(frozen=True)
class CompletionParams:
    prompt: list[int] | str
    echo: bool
    logprobs: int | None
    max_tokens: int
    temperature: float
    seed: int | None
    ids_as_tokens: bool
    """vLLM's return_tokens_as_token_ids: tokens are written "token_id:N", unambiguous."""


def _load(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return data


def _token_ids(raw: object) -> list[int] | None:
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], list):
        raw = raw[0]  # a batch of one prompt
    if isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        return list(raw)
    return None


def parse_completion(body: bytes) -> CompletionParams:
    """Validate a scoring request; ApiError(400) names the first bad field."""
    data = _load(body)
    raw = data.get("prompt")
    prompt: list[int] | str | None = raw if isinstance(raw, str) and raw else _token_ids(raw)
    if prompt is None:
        raise ApiError(400, "prompt must be a non-empty string or a list of token ids.", param="prompt")
    if data.get("stream"):
        raise ApiError(400, "This server scores prompts without streaming: leave stream unset.", param="stream")
    if data.get("n", 1) != 1:
        raise ApiError(400, "Only n=1 is supported.", param="n")
    max_tokens = data.get("max_tokens", 16)
    if max_tokens not in (0, 1) or isinstance(max_tokens, bool):
        raise ApiError(
            400,
            "This server's /v1/completions scores prompts: max_tokens must be 0 or 1. "
            "Use /v1/chat/completions to generate text.",
            param="max_tokens",
        )
    logprobs = data.get("logprobs")
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool) or not 0 <= logprobs <= MAX_TOP):
        raise ApiError(400, f"logprobs must be a whole number from 0 to {MAX_TOP}.", param="logprobs")
    echo = data.get("echo", False)
    if not isinstance(echo, bool):
        raise ApiError(400, "echo must be true or false.", param="echo")
    if max_tokens == 0 and not echo:
        raise ApiError(400, "max_tokens 0 needs echo: true (there is nothing else to return).", param="max_tokens")
    temperature = data.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise ApiError(400, "temperature must be between 0 and 2.", param="temperature")
    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ApiError(400, "seed must be a whole number.", param="seed")
    return CompletionParams(
        prompt=prompt,
        echo=echo,
        logprobs=logprobs,
        max_tokens=max_tokens,
        temperature=float(temperature),
        seed=seed,
        ids_as_tokens=bool(data.get("return_tokens_as_token_ids", False)),
    )


@dataclass(frozen=True)
class TokenizeParams:
    text: str | None
    messages: list[dict[str, str]] | None
    add_special_tokens: bool


def parse_tokenize(body: bytes) -> TokenizeParams:
    data = _load(body)
    special = data.get("add_special_tokens", True)
    if not isinstance(special, bool):
        raise ApiError(400, "add_special_tokens must be true or false.", param="add_special_tokens")
    if isinstance(data.get("prompt"), str):
        return TokenizeParams(data["prompt"], None, special)
    messages = data.get("messages")
    if isinstance(messages, list) and messages and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        return TokenizeParams(None, [{"role": m["role"], "content": m["content"]} for m in messages], special)
    raise ApiError(400, 'Give "prompt" (a string) or "messages" (a list of {role, content}).', param="prompt")


class TokenNamer:
    """How a token is written in the response: its text, or vLLM's "token_id:N"."""

    def __init__(self, tokenizer: Any, ids_as_tokens: bool) -> None:
        self._tokenizer = tokenizer
        self._ids = ids_as_tokens

    def __call__(self, token_id: int) -> str:
        return f"token_id:{token_id}" if self._ids else self._tokenizer.token_text(token_id)

    def text(self, token_id: int) -> str:
        return self._tokenizer.token_text(token_id)


def next_token(scored: ScoredPrompt, params: CompletionParams) -> PositionScore:
    """The one generated token (max_tokens 1): greedy at temperature 0, else sampled."""
    row = scored.next_logprobs
    settings = sampling.SamplingParams(temperature=params.temperature, top_p=1.0, top_k_alternatives=MAX_TOP)
    choice = sampling.sample(row, settings, sampling.make_rng(params.seed))
    return PositionScore(choice.token_id, choice.logprob, choice.alternatives)


def completion_body(
    model: str,
    prompt_ids: Sequence[int],
    scored: ScoredPrompt,
    generated: PositionScore | None,
    params: CompletionParams,
    name: TokenNamer,
) -> dict[str, Any]:
    """vLLM's response: choices[0].text, and with logprobs the tokens, token_logprobs (null for
    the first prompt token), top_logprobs (null there too; each a {token: logprob} dict that
    includes the token itself) and text_offset."""
    shown: list[tuple[int, float | None, dict[str, float] | None]] = []
    if params.echo:
        shown.append((prompt_ids[0], None, None))
        shown += [(p.token_id, p.logprob, _top(p, params, name)) for p in scored.positions]
    if generated is not None:
        shown.append((generated.token_id, generated.logprob, _top(generated, params, name)))
    texts = [name.text(token_id) for token_id, _, _ in shown]
    logprobs = None
    if params.logprobs is not None:
        offsets = np.cumsum([0] + [len(t) for t in texts[:-1]]).tolist() if texts else []
        logprobs = {
            "tokens": [name(token_id) for token_id, _, _ in shown],
            "token_logprobs": [lp for _, lp, _ in shown],
            "top_logprobs": [top for _, _, top in shown],
            "text_offset": [int(o) for o in offsets],
        }
    prompt_tokens = len(prompt_ids)
    completion_tokens = 0 if generated is None else 1
    choice = {
        "index": 0,
        "text": "".join(texts),
        "logprobs": logprobs,
        "finish_reason": "length",
        "stop_reason": None,
        "prompt_logprobs": None,
    }
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _top(position: PositionScore, params: CompletionParams, name: TokenNamer) -> dict[str, float]:
    k = params.logprobs or 0
    top = {name(token_id): logprob for token_id, logprob in position.top[:k]}
    top.setdefault(name(position.token_id), position.logprob)  # vLLM always lists the token itself
    return top
