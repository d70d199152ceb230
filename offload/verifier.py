"""The verifier's side of hybrid decoding, on the wire: vLLM's /tokenize and its scoring subset
of /v1/completions (token-id prompt, echo + logprobs, max_tokens 1), which `tandem serve` and
vLLM both answer. It counts every byte of a turn's rounds for the egress ledger."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from offload.errors import OffloadError, scrub
from offload.network import Network, Wire

TOP_LOGPROBS = 20
"""Alternatives asked per position: vLLM's default cap (--max-logprobs), and the most the
sampling rule can use."""
_ID_PREFIX = "token_id:"


class VerifierError(OffloadError):
    """The verifier could not be reached, refused, or answered something that is not a score."""


@dataclass(frozen=True)
class Scores:
    """The verifier's raw log-probabilities for one round."""

    rows: list[dict[int, float]]
    """rows[i]: token id -> logprob at prompt position first + i (the alternatives, best first,
    with the prompt's own token included), for the positions asked about."""
    next_row: dict[int, float]
    """The alternatives for the token after the whole prompt."""
    next_token: int
    """The verifier's greedy choice after the whole prompt."""


class VerifierClient:
    """One verifier endpoint. `begin_turn()` starts a fresh byte count; every call after it adds to it."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        model: str = "",
        network: Network | None = None,
        timeout_s: float = 30.0,
        name: str = "verifier",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.root = self.base_url.removesuffix("/v1")
        self.model = model
        self.name = name
        self.host = httpx.URL(self.base_url).netloc.decode()
        self._key = api_key
        self._network = network or Network()
        self._timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        self._wire = Wire()
        self._client: httpx.Client | None = None
        self.payloads: list[str] = []
        """Every body sent since begin_turn(), in order."""

    @property
    def bytes_sent(self) -> int:
        return self._wire.sent

    @property
    def bytes_received(self) -> int:
        return self._wire.received

    def begin_turn(self) -> None:
        self.close()
        self._wire = Wire()
        self.payloads = []
        self._network.ensure_allowed(self.host.rsplit(":", 1)[0].strip("[]"))
        self._client = self._network.client(self._timeout, self._wire)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def cut(self) -> None:
        """Abort whatever call is in flight (from any thread)."""
        self._wire.cut()

    def tokenize(self, text: str) -> list[int]:
        reply = self._post(self.root + "/tokenize", {"prompt": text, "add_special_tokens": False})
        tokens = reply.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise VerifierError(f"{self.host} answered /tokenize without a token list; is it vLLM or `tandem serve`?")
        return tokens

    def score(self, token_ids: Sequence[int], first: int, top: int = TOP_LOGPROBS) -> Scores:
        """Score the prompt; rows for positions first..end (`top` alternatives each), plus the
        verifier's next token. Greedy needs top 1: the reply, which echoes every position, stays small."""
        body = {
            "model": self.model,
            "prompt": list(token_ids),
            "echo": True,
            "logprobs": top,
            "max_tokens": 1,
            "temperature": 0,
            "return_tokens_as_token_ids": True,
        }
        reply = self._post(self.base_url + "/completions", body)
        try:
            logprobs = reply["choices"][0]["logprobs"]
            tops = logprobs["top_logprobs"]
            tokens = logprobs["tokens"]
            if len(tops) != len(token_ids) + 1 or len(tokens) != len(token_ids) + 1:
                raise ValueError("one row per prompt token and one for the generated token")
            rows = [_row(top) for top in tops[first : len(token_ids)]]
            return Scores(rows, _row(tops[-1]), _token_id(tokens[-1]))
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise VerifierError(
                f"{self.host} answered /v1/completions without echo logprobs ({error}); the verifier must "
                "be vLLM or `tandem serve` (llama.cpp's server cannot score a prompt)."
            ) from None

    def _post(self, url: str, body: Mapping[str, object]) -> dict:
        if self._client is None:
            self.begin_turn()
        assert self._client is not None
        payload = json.dumps(body, ensure_ascii=False)
        self.payloads.append(payload)
        headers = {"content-type": "application/json"}
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        try:
            response = self._client.post(url, content=payload.encode(), headers=headers)
        except httpx.HTTPError as error:
            raise VerifierError(f"The verifier at {self.host} failed ({type(error).__name__}: {error}).") from None
        except OffloadError as error:
            raise VerifierError(str(error)) from None
        if response.status_code != 200:
            raise VerifierError(
                f"The verifier at {self.host} answered {response.status_code}: {scrub(response.text, [self._key])}"
            )
        try:
            data = response.json()
        except ValueError:
            raise VerifierError(f"The verifier at {self.host} answered something that is not JSON.") from None
        if not isinstance(data, dict):
            raise VerifierError(f"The verifier at {self.host} answered something that is not a JSON object.")
        return data


def _token_id(token: object) -> int:
    if isinstance(token, str) and token.startswith(_ID_PREFIX):
        return int(token[len(_ID_PREFIX) :])
    raise ValueError(f"token {token!r} is not written as token_id:N (return_tokens_as_token_ids)")


def _row(top: object) -> dict[int, float]:
    if not isinstance(top, dict):
        raise ValueError("a position without top_logprobs")
    return {_token_id(token): float(logprob) for token, logprob in top.items()}
