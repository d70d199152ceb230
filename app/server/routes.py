"""The HTTP routes of `tandem serve` as a Starlette app: bearer-token check, admission into the
scheduler (429 with Retry-After when its queue is full), chat completions streamed as
server-sent events or returned whole, and /health and /metrics for operators."""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.server import completions, protocol
from app.server.metrics import CONTENT_TYPE, ServerMetrics
from app.server.protocol import ApiError, ChatParams
from engine.api import Engine, EngineEvent, FinishEvent, TokenEvent
from engine.batching import QueueFull, Scheduler, SchedulerClosed
from engine.errors import ContextWindowExceeded, EngineError, InvalidMessages
from engine.tvm_backend.scoring import PromptScorer

_ROUTE_LIST = (
    "GET /v1/models, POST /v1/chat/completions, POST /v1/completions (scoring), POST /tokenize, "
    "GET /health and GET /metrics"
)


@dataclass(frozen=True)
class ServerState:
    engine: Engine
    scheduler: Scheduler
    metrics: ServerMetrics
    token: str | None
    scorer: PromptScorer | None = None
    """Scores prompts for /v1/completions; None when the engine cannot (then it answers 501)."""


def build_app(state: ServerState) -> Starlette:
    """The ASGI app. New endpoints (such as /v1/completions for scoring) are one more Route."""

    def route(path: str, handler: Callable[[Request, ServerState], Awaitable[Response]], method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                response = await handler(request, state)
            except ApiError as error:
                response = _error_response(error)
            state.metrics.answered(path, response.status_code)
            return response

        return Route(path, endpoint, methods=[method])

    routes = [
        route("/v1/models", _models, "GET"),
        route("/v1/chat/completions", _chat, "POST"),
        route("/v1/completions", _completions, "POST"),
        route("/tokenize", _tokenize, "POST"),
        route("/health", _health, "GET"),
        route("/metrics", _metrics, "GET"),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_exception},  # type: ignore[dict-item]
    )


async def _http_exception(request: Request, exc: HTTPException) -> Response:
    """Unknown paths and methods get OpenAI's JSON error body too."""
    if exc.status_code == 404:
        message = f"No route {request.method} {request.url.path}: this server offers {_ROUTE_LIST}."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}: this server offers {_ROUTE_LIST}."
    else:
        message = exc.detail or "Bad request."
    return _error_response(ApiError(exc.status_code, message))


def _error_response(error: ApiError) -> Response:
    headers = dict(error.headers)
    if error.status == 401:
        headers["www-authenticate"] = "Bearer"
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def _read_body(request: Request) -> bytes:
    """The whole body, read before anything is refused so the connection stays clean."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > protocol.MAX_REQUEST_BYTES:
        raise ApiError(413, f"The request body is over {protocol.MAX_REQUEST_BYTES} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > protocol.MAX_REQUEST_BYTES:
            raise ApiError(413, f"The request body is over {protocol.MAX_REQUEST_BYTES} bytes.")
    return bytes(body)


def _authorize(request: Request, state: ServerState) -> None:
    if not state.token:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {state.token}".encode()):  # constant time
        raise ApiError(401, "Missing or wrong bearer token: send the server's token as the API key.", "invalid_api_key")


async def _health(request: Request, state: ServerState) -> Response:
    """For load balancers: no token needed, and it says nothing about the requests."""
    return JSONResponse({"status": "ok", "model": state.engine.info.model_id})


async def _metrics(request: Request, state: ServerState) -> Response:
    _authorize(request, state)
    return Response(state.metrics.render(), headers={"content-type": CONTENT_TYPE})


async def _models(request: Request, state: ServerState) -> Response:
    _authorize(request, state)
    info = state.engine.info
    model = {"id": info.model_id, "object": "model", "created": 0, "owned_by": "tandem", "context_window": info.context_window}
    return JSONResponse({"object": "list", "data": [model]})


def _tokenizer(state: ServerState) -> Any:
    tokenizer = getattr(state.engine, "tokenizer", None)
    if tokenizer is None:
        raise ApiError(501, "This engine does not expose its tokenizer; run `tandem serve` on the TVM backend.")
    return tokenizer


async def _tokenize(request: Request, state: ServerState) -> Response:
    """vLLM's /tokenize: {"prompt"} or {"messages"} -> {"tokens", "count", "max_model_len"}."""
    body = await _read_body(request)
    _authorize(request, state)
    params = completions.parse_tokenize(body)
    tokenizer = _tokenizer(state)
    try:
        if params.messages is not None:
            ids = await run_in_threadpool(state.engine.prompt_ids, params.messages)  # type: ignore[attr-defined]
        else:
            ids = tokenizer.encode(params.text or "")
    except InvalidMessages as error:
        raise ApiError(400, str(error), param="messages") from None
    return JSONResponse({"tokens": ids, "count": len(ids), "max_model_len": state.engine.info.context_window})


async def _completions(request: Request, state: ServerState) -> Response:
    """Scoring (vLLM's subset): every prompt token's raw logprob and alternatives, and at most
    one generated token. A verifier for hybrid decoding sends prefix + draft here."""
    body = await _read_body(request)
    _authorize(request, state)
    params = completions.parse_completion(body)
    if state.scorer is None:
        raise ApiError(501, "This engine cannot score prompts; run `tandem serve` on the TVM backend.")
    tokenizer = _tokenizer(state)
    ids = params.prompt if isinstance(params.prompt, list) else tokenizer.encode(params.prompt)
    outside = [t for t in ids if not 0 <= t < state.scorer.vocab_rows]
    if outside:
        raise ApiError(
            400, f"Token id {outside[0]} is outside this model's vocabulary (0..{state.scorer.vocab_rows - 1}): "
            "the client's tokenizer is not this model's; compare them with /tokenize.", param="prompt",
        )
    try:
        scored = await run_in_threadpool(state.scorer.score, ids, params.logprobs or 0)
    except ContextWindowExceeded as error:
        raise ApiError(400, str(error), "context_length_exceeded", "prompt") from None
    except EngineError as error:
        raise ApiError(500, str(error)) from None
    generated = completions.next_token(scored, params) if params.max_tokens == 1 else None
    name = completions.TokenNamer(tokenizer, params.ids_as_tokens)
    body_out = completions.completion_body(state.engine.info.model_id, ids, scored, generated, params, name)
    return JSONResponse(body_out)


async def _chat(request: Request, state: ServerState) -> Response:
    arrived = time.perf_counter()
    body = await _read_body(request)
    _authorize(request, state)
    params = protocol.parse_chat(body)
    events = _EventBridge(asyncio.get_running_loop())
    cancel = threading.Event()
    await _admit(state, params, events, cancel)
    reply = _Reply(state, params, arrived)
    if params.stream:
        # x-accel-buffering: nginx passes each event on at once instead of buffering the stream.
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(_stream(reply, events, cancel), headers=headers)
    return await _complete(request, reply, events, cancel)


async def _admit(state: ServerState, params: ChatParams, events: _EventBridge, cancel: threading.Event) -> None:
    """Queue the request (templating runs off the event loop); refusals become API errors."""
    try:
        await run_in_threadpool(state.scheduler.submit, params.request, events.sink, cancel)
    except QueueFull as full:
        raise ApiError(429, str(full), "rate_limit_exceeded", headers={"retry-after": str(full.retry_after_s)}) from None
    except ContextWindowExceeded as error:
        raise ApiError(400, str(error), "context_length_exceeded", "messages") from None
    except InvalidMessages as error:
        raise ApiError(400, str(error), param="messages") from None
    except SchedulerClosed as error:
        raise ApiError(503, str(error), headers={"retry-after": "1"}) from None
    except EngineError as error:
        raise ApiError(500, str(error)) from None


class _EventBridge:
    """Carries a request's events from the scheduler's thread into the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[EngineEvent | EngineError] = asyncio.Queue()

    def sink(self, item: EngineEvent | EngineError) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)  # raises once the loop is gone

    async def next(self) -> EngineEvent | EngineError:
        return await self._queue.get()


class _Reply:
    """The shape of one completion's bodies, and its metrics as tokens arrive."""

    def __init__(self, state: ServerState, params: ChatParams, arrived: float) -> None:
        self.params = params
        self.metrics = state.metrics
        self.arrived = arrived
        self.first_token_seen = False
        self.envelope = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": state.engine.info.model_id,
        }

    def count(self, event: TokenEvent) -> None:
        self.metrics.token()
        if not self.first_token_seen:
            self.first_token_seen = True
            self.metrics.ttft.observe(time.perf_counter() - self.arrived)

    def logprobs(self, tokens: list[TokenEvent]) -> dict[str, Any] | None:
        top = self.params.top_logprobs
        return None if top is None else {"content": [protocol.logprob_body(t, top) for t in tokens]}

    def chunk(self, delta: dict, logprobs: Any = None, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return {**self.envelope, "object": "chat.completion.chunk", "choices": [choice]}


def _sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


async def _stream(reply: _Reply, events: _EventBridge, cancel: threading.Event) -> AsyncIterator[bytes]:
    """Server-sent events; a client that leaves cancels its sequence (Starlette cancels this
    generator when it sees the disconnect, and `finally` tells the scheduler)."""
    try:
        yield _sse(reply.chunk({"role": "assistant", "content": ""}))
        while True:
            event = await events.next()
            if isinstance(event, EngineError):
                yield _sse(ApiError(500, str(event)).body())
                return
            if isinstance(event, TokenEvent):
                reply.count(event)
                logprobs = reply.logprobs([event])
                if event.text or logprobs:
                    yield _sse(reply.chunk({"content": event.text}, logprobs))
                continue
            yield _sse(reply.chunk({}, finish_reason=protocol.finish_reason(event)))
            if reply.params.include_usage:
                yield _sse({**reply.envelope, "object": "chat.completion.chunk", "choices": [], "usage": protocol.usage_body(event)})
            yield b"data: [DONE]\n\n"
            return
    finally:
        cancel.set()  # a no-op once finished; otherwise it frees the slot


async def _complete(request: Request, reply: _Reply, events: _EventBridge, cancel: threading.Event) -> Response:
    """The whole completion as one body; a client that leaves before it is done cancels it."""
    collecting = asyncio.ensure_future(_collect(reply, events))
    leaving = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({collecting, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        leaving.cancel()
        if not collecting.done():
            cancel.set()
            collecting.cancel()
    if collecting.cancelled():
        return Response(status_code=499)  # nobody is listening; uvicorn drops it
    tokens, finish = collecting.result()
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "".join(t.text for t in tokens)},
        "logprobs": reply.logprobs(tokens),
        "finish_reason": protocol.finish_reason(finish),
    }
    body = {**reply.envelope, "object": "chat.completion", "choices": [choice], "usage": protocol.usage_body(finish)}
    return JSONResponse(body)


async def _collect(reply: _Reply, events: _EventBridge) -> tuple[list[TokenEvent], FinishEvent]:
    tokens: list[TokenEvent] = []
    while True:
        event = await events.next()
        if isinstance(event, EngineError):
            raise ApiError(500, str(event))
        if isinstance(event, FinishEvent):
            return tokens, event
        reply.count(event)
        tokens.append(event)


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
