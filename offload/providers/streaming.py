"""How every provider talks HTTP: one POST through the network choke point, retried only before the
stream starts, its server-sent events parsed by httpx-sse under a size cap, every failure typed.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from engine.api import Message, Usage
from offload.errors import (
    AuthError,
    BadRequest,
    ConnectionLost,
    ConnectTimeout,
    ProtocolError,
    ProviderError,
    RateLimited,
    ReadTimeout,
    ResponseTooLarge,
    ServerError,
    Unreachable,
    scrub,
)
from offload.network import NETWORK, Network, Wire
from offload.outgoing import CarriesRequest, Exchange, OutgoingRequest
from offload.providers.base import ProviderEvent, RetryPolicy, StreamEnd, TextDelta, Timeouts

_ERROR_BODY_LIMIT = 64 * 1024


class StreamDecoder(Protocol):
    """Turns one provider's events into text; raises ValueError on data it cannot read."""

    done: bool
    """The provider's terminal event arrived: stop reading."""
    finish_reason: str | None
    usage: Usage | None
    model: str

    def decode(self, event: ServerSentEvent) -> list[str]: ...


@dataclass(frozen=True)
class ChatCall(CarriesRequest):
    """One streaming request, fully described before anything is sent: the request as built (its
    body goes on the wire unchanged) and how to send it."""

    request: OutgoingRequest
    url: str
    headers: Mapping[str, str] = field(repr=False)  # holds the key: kept out of tracebacks' locals
    network: Network
    timeouts: Timeouts
    retry: RetryPolicy
    max_response_bytes: int
    secret: str | None = field(default=None, repr=False)
    """The API key, only so that `scrub` can keep it out of error messages."""


DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class HttpChatProvider:
    """What every HTTP provider holds: its endpoint, its key and how patient it is; and the
    ChatCall it makes from them for one request."""

    def __init__(
        self,
        *,
        name: str,
        url: httpx.URL,
        api_key: str | None,
        network: Network | None,
        timeouts: Timeouts,
        retry: RetryPolicy,
        max_response_bytes: int,
    ) -> None:
        self.name = name
        self.host = url.netloc.decode("ascii")
        self._url = str(url)
        self._api_key = api_key
        self._network = network or NETWORK
        self._timeouts = timeouts
        self._retry = retry
        self._max_response_bytes = max_response_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self._url!r})"

    def request(
        self, messages: Sequence[Message], model: str, max_tokens: int, temperature: float
    ) -> OutgoingRequest:
        return OutgoingRequest(
            provider=self.name, host=self.host, body=self._body(messages, model, max_tokens, temperature),
            model=model, messages=tuple(messages), max_tokens=max_tokens, temperature=temperature,
        )

    def send(self, request: OutgoingRequest, cancel: threading.Event | None = None) -> Iterator[ProviderEvent]:
        """Stream the reply to `request`, its body sent exactly as built."""
        self._check_key()
        yield from stream(self._call(request), self._decoder(request.model), cancel)

    def payload(self, messages: Sequence[Message], model: str, max_tokens: int, temperature: float) -> str:
        """The body `request` builds for these arguments."""
        return self.request(messages, model, max_tokens, temperature).body

    def stream_chat(
        self,
        messages: Sequence[Message],
        model: str,
        max_tokens: int,
        temperature: float,
        cancel: threading.Event | None = None,
    ) -> Iterator[ProviderEvent]:
        """`send(request(...))` in one call, for callers with no preview to show."""
        return self.send(self.request(messages, model, max_tokens, temperature), cancel)

    # What each provider's wire format supplies.

    def _body(self, messages: Sequence[Message], model: str, max_tokens: int, temperature: float) -> str:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _decoder(self, model: str) -> StreamDecoder:
        raise NotImplementedError

    def _check_key(self) -> None:
        """Raise MissingKey when the provider needs a key and has none."""

    def _call(self, request: OutgoingRequest) -> ChatCall:
        return ChatCall(
            request=request,
            url=self._url,
            headers=self._headers(),
            network=self._network,
            timeouts=self._timeouts,
            retry=self._retry,
            max_response_bytes=self._max_response_bytes,
            secret=self._api_key,
        )


def stream(call: ChatCall, decoder: StreamDecoder, cancel: threading.Event | None) -> Iterator[ProviderEvent]:
    """Yield the reply's TextDeltas, then a StreamEnd; a ProviderError carries what left in `.exchange`.

    Cancelling cuts the connection at once, even in the middle of a blocked read; the call then
    ends with finish_reason "cancelled" rather than an error."""
    wire = Wire()
    finished = threading.Event()
    if cancel is not None:
        threading.Thread(target=_cut_on_cancel, args=(cancel, wire, finished), daemon=True).start()
    shown = False
    try:
        call.network.ensure_allowed(httpx.URL(call.url).host)
        timeout = httpx.Timeout(call.timeouts.read, connect=call.timeouts.connect)
        with call.network.client(timeout, wire) as client:
            response = _send_with_retries(client, call, cancel)
            if response is not None:
                try:
                    for text in _read_events(response, call, decoder, cancel):
                        shown = shown or bool(text)
                        yield TextDelta(text)
                finally:
                    response.close()
        if response is not None and not shown and not _is_set(cancel):
            # A stream of only [DONE] (or of deltas with no text) is no answer: a failed call.
            raise ProtocolError(call.provider, call.host, "a stream that ended without any text")
    except ProviderError as error:
        if not (_is_set(cancel) and isinstance(error, _CUT_SHORT)):
            error.exchange = _exchange(call, wire) if wire.sent else None
            raise
        # else the error is the cut itself: the call ends as cancelled below
    finally:
        finished.set()
    cancelled = _is_set(cancel) and not decoder.done
    yield StreamEnd(
        finish_reason="cancelled" if cancelled else decoder.finish_reason or "stop",
        usage=decoder.usage,
        model=decoder.model,
        exchange=_exchange(call, wire),
    )


_CUT_SHORT = (ConnectionLost, ReadTimeout, ProtocolError, Unreachable, ConnectTimeout)
"""What a connection cut by a cancel looks like from the reading side."""


def _cut_on_cancel(cancel: threading.Event, wire: Wire, finished: threading.Event) -> None:
    while not finished.is_set():
        if cancel.wait(0.05):
            wire.cut()
            return


def _send_with_retries(client: httpx.Client, call: ChatCall, cancel: threading.Event | None) -> httpx.Response | None:
    """The open 200 response, or None if cancelled while waiting to retry. Nothing here has been
    shown to the user yet, which is what makes retrying safe."""
    for attempt in range(call.retry.attempts):
        if _is_set(cancel):
            return None
        try:
            response = client.send(
                client.build_request("POST", call.url, content=call.request.body.encode(), headers=dict(call.headers)),
                stream=True,
            )
        except httpx.ConnectTimeout:
            error: ProviderError = ConnectTimeout(call.host, call.timeouts.connect)
        except httpx.ConnectError as exc:
            error = Unreachable(call.host, _reason(exc))
        except httpx.TimeoutException:
            raise ReadTimeout(call.host, call.timeouts.read) from None
        except httpx.TransportError:
            raise ConnectionLost(call.host) from None
        else:
            if response.status_code == 200:
                return response
            error = _status_error(response, call)
        delay = retry_delay(error, attempt, call.retry)
        if delay is None:
            raise error
        if cancel is not None:
            if cancel.wait(delay):
                return None
        else:
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt either returns or raises")


def _read_events(
    response: httpx.Response, call: ChatCall, decoder: StreamDecoder, cancel: threading.Event | None
) -> Iterator[str]:
    assert isinstance(response.stream, httpx.SyncByteStream), "providers read through the synchronous client"
    response.stream = _CappedStream(response.stream, call.max_response_bytes, call.provider)
    try:
        events = EventSource(response).iter_sse()
        for event in events:
            if _is_set(cancel):
                return
            yield from decoder.decode(event)
            if decoder.done:
                _drain(events)
                return
    except SSEError:
        content_type = response.headers.get("content-type", "no content type").partition(";")[0]
        raise ProtocolError(call.provider, call.host, f"a {content_type} reply, not an event stream") from None
    except ValueError as exc:
        raise ProtocolError(call.provider, call.host, scrub(str(exc), [call.secret])) from None
    except httpx.TimeoutException:
        raise ReadTimeout(call.host, call.timeouts.read) from None
    except httpx.TransportError:
        raise ConnectionLost(call.host) from None
    if decoder.finish_reason is None:
        raise ConnectionLost(call.host)


def _drain(events: Iterator[ServerSentEvent]) -> None:
    """Read what follows the terminal event (the end of the chunked body) so the byte count is
    whole; the reply is complete, so a failure here is no failure of the call."""
    try:
        for _ in events:
            pass
    except (httpx.TransportError, ResponseTooLarge):
        pass


class _CappedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, limit: int, provider: str) -> None:
        self._inner, self._limit, self._provider = inner, limit, provider

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        for chunk in self._inner:
            total += len(chunk)
            if total > self._limit:
                raise ResponseTooLarge(self._provider, self._limit)
            yield chunk

    def close(self) -> None:
        self._inner.close()


def _status_error(response: httpx.Response, call: ChatCall) -> ProviderError:
    body = b""
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= _ERROR_BODY_LIMIT:
                break
    except httpx.TransportError:
        pass  # the status says enough; a broken error body must not hide it
    finally:
        response.close()
    status = response.status_code
    if status in (401, 403):
        return AuthError(call.provider, status)
    retry_after = retry_after_seconds(response.headers)
    if status == 429:
        return RateLimited(call.provider, retry_after)
    detail = scrub(server_message(body), [call.secret])
    if status >= 500:
        return ServerError(call.provider, status, detail, retry_after)
    return BadRequest(call.provider, status, detail)


def json_object(data: str) -> dict:
    """An event's data as a JSON object; ValueError (read as a ProtocolError) otherwise."""
    try:
        parsed = json.loads(data)
    except ValueError:
        raise ValueError("an event whose data is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("an event whose data is not a JSON object")
    return parsed


def server_message(body: bytes) -> str:
    """The human part of an error body: OpenAI's and Anthropic's `error.message`, else the text."""
    text = body.decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    return text


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds (a number or an HTTP date), or OpenAI's retry-after-ms."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def retry_delay(error: ProviderError, attempt: int, policy: RetryPolicy) -> float | None:
    """Seconds to wait after failed attempt number `attempt` (from 0), or None when the error goes
    to the caller now: not retryable, attempts used up, or a Retry-After longer than we wait."""
    if not error.retryable or attempt + 1 >= policy.attempts:
        return None
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return retry_after if retry_after <= policy.max_retry_after else None
    ceiling = min(policy.max_delay, policy.base_delay * 2**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _reason(exc: httpx.ConnectError) -> str:
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or "connection failed"
    return text[0].lower() + text[1:]


def _exchange(call: ChatCall, wire: Wire) -> Exchange:
    return Exchange(call.request, wire.sent, wire.received)


def _is_set(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()
