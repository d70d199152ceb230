"""`tandem serve`: the local engine behind an OpenAI-compatible HTTP API (/v1/models and streaming
/v1/chat/completions with logprobs), so one machine can be the on-prem tier of others.
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from engine.api import Engine, FinishEvent, GenerationRequest, Message, TokenEvent, check_setting
from engine.errors import ContextWindowExceeded, EngineError

MAX_REQUEST_BYTES = 8 * 1024 * 1024
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(Exception):
    """A request the server refuses, as OpenAI's JSON error body."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatParams:
    request: GenerationRequest
    stream: bool
    include_usage: bool
    top_logprobs: int | None
    """None: no logprobs; 0..20: logprobs with that many alternatives per token."""


def parse_chat(body: bytes) -> ChatParams:
    """Validate an OpenAI chat-completions body; ApiError(400) names the first bad field."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    if data.get("n", 1) != 1:
        raise ApiError(400, "Only n=1 is supported.", param="n")
    logprobs = _field(data, "logprobs", bool, False)
    top = _field(data, "top_logprobs", int, None)
    if top is not None and not (0 <= top <= 20 and logprobs):
        raise ApiError(400, "top_logprobs must be 0-20 and needs logprobs: true.", param="top_logprobs")
    max_tokens = _field(data, "max_completion_tokens", int, None)
    if max_tokens is None:
        max_tokens = _field(data, "max_tokens", int, 256)
    if max_tokens < 1:
        raise ApiError(400, "max_tokens must be at least 1.", param="max_tokens")
    # Sampling settings a client leaves out are the local model's own (None), as vLLM reads a
    # model's generation_config; top_k, min_p and repetition_penalty are vLLM's extra fields.
    temperature = _field(data, "temperature", (int, float), None)
    if temperature is not None and not 0 <= temperature <= 2:
        raise ApiError(400, "temperature must be between 0 and 2.", param="temperature")
    top_p = _field(data, "top_p", (int, float), None)
    if top_p is not None and not 0 < top_p <= 1:
        raise ApiError(400, "top_p must be above 0 and at most 1.", param="top_p")
    extras = {name: _field(data, name, (int, float), None) for name in ("top_k", "min_p", "repetition_penalty")}
    if extras["top_k"] is not None and extras["top_k"] < 0:
        extras["top_k"] = 0  # vLLM's -1: no limit
    for name, value in extras.items():
        problem = None if value is None else check_setting(name, value)
        if problem:
            raise ApiError(400, f"{problem}.", param=name)
    stream_options = _field(data, "stream_options", dict, {})
    return ChatParams(
        request=GenerationRequest(
            messages=_messages(data.get("messages")),
            max_tokens=max_tokens,
            temperature=None if temperature is None else float(temperature),
            top_p=None if top_p is None else float(top_p),
            seed=_field(data, "seed", int, None),
            stop=_stop(data.get("stop")),
            top_k=None if extras["top_k"] is None else int(extras["top_k"]),
            min_p=None if extras["min_p"] is None else float(extras["min_p"]),
            repetition_penalty=None if extras["repetition_penalty"] is None else float(extras["repetition_penalty"]),
        ),
        stream=_field(data, "stream", bool, False),
        include_usage=bool(stream_options.get("include_usage", False)),
        top_logprobs=(top or 0) if logprobs else None,
    )


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ApiError(400, f"{name} has the wrong type.", param=name)
    return value


def _messages(raw: object) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list.", param="messages")
    messages = []
    for index, message in enumerate(raw):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            raise ApiError(400, f"messages[{index}].role must be system, user or assistant.", param="messages")
        content = message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: keep the text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise ApiError(400, f"messages[{index}].content may only hold text parts.", param="messages")
            content = "".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{index}].content must be a string.", param="messages")
        messages.append({"role": _ROLES[role], "content": content})
    return messages


def _stop(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and len(raw) <= 4 and all(isinstance(s, str) and s for s in raw):
        return tuple(raw)
    raise ApiError(400, "stop must be a string or a list of up to 4 strings.", param="stop")


class EngineServer(ThreadingHTTPServer):
    """Serves one engine; generations run one at a time (the engine's contract), requests queue."""

    daemon_threads = True

    def __init__(self, engine: Engine, host: str, port: int, token: str | None) -> None:
        self.engine = engine
        self.token = token
        self.generation_lock = threading.Lock()
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host.strip("[]"), port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


def make_server(engine: Engine, host: str = "127.0.0.1", port: int = 8000, token: str | None = None) -> EngineServer:
    """Bind (loopback unless told otherwise); call `serve_forever()` to answer requests."""
    return EngineServer(engine, host, port, token)


_ROUTES = {("GET", "/v1/models"): "_models", ("POST", "/v1/chat/completions"): "_chat"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tandem"
    server: EngineServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests that http.server rejects itself get a JSON body too."""
        self.close_connection = True
        self._send_json(code, ApiError(code, message or "Bad request.").body())

    def _dispatch(self) -> None:
        try:
            body = self._read_body()  # first, so a refused request leaves a clean connection behind
            if not self._authorized():
                raise ApiError(401, "Missing or wrong bearer token: send the server's token as the API key.", "invalid_api_key")
            route = _ROUTES.get((self.command, self.path.split("?")[0].rstrip("/")))
            if route is None:
                raise ApiError(404, f"No route {self.command} {self.path}: this server offers GET /v1/models and POST /v1/chat/completions.")
            getattr(self, route)(body)
        except ApiError as error:
            self._send_json(error.status, error.body(), {"www-authenticate": "Bearer"} if error.status == 401 else None)

    def _authorized(self) -> bool:
        if not self.server.token:
            return True
        given = self.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.server.token}".encode())

    def _models(self, body: bytes) -> None:
        info = self.server.engine.info
        model = {"id": info.model_id, "object": "model", "created": 0, "owned_by": "tandem", "context_window": info.context_window}
        self._send_json(200, {"object": "list", "data": [model]})

    def _chat(self, body: bytes) -> None:
        params = parse_chat(body)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        cancel = threading.Event()
        with self.server.generation_lock:
            events = self._start(params.request, cancel)
            if params.stream:
                self._stream(events, params, completion_id, cancel)
            else:
                self._complete(events, params, completion_id)

    def _read_body(self) -> bytes:
        declared = self.headers.get("content-length")
        if declared is None and "transfer-encoding" not in self.headers:
            return b""
        try:
            length = int(declared or "")
        except ValueError:
            self.close_connection = True
            raise ApiError(411, "Send the request body with a Content-Length.") from None
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            raise ApiError(413, f"The request body is over {MAX_REQUEST_BYTES} bytes.")
        return self.rfile.read(length)

    def _start(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[TokenEvent | FinishEvent]:
        """The engine's events, with the first one already pulled so that errors become 400/500."""
        try:  # an engine may raise when called or on the first step: both are answered here
            events = iter(self.server.engine.generate(request, cancel))
            first = next(events)
        except ContextWindowExceeded as error:
            raise ApiError(400, str(error), "context_length_exceeded", "messages") from None
        except EngineError as error:
            raise ApiError(500, str(error)) from None
        return _prepend(first, events)

    def _complete(self, events: Iterator[TokenEvent | FinishEvent], params: ChatParams, completion_id: str) -> None:
        tokens: list[TokenEvent] = []
        try:
            for event in events:
                if isinstance(event, TokenEvent):
                    tokens.append(event)
                else:
                    finish = event
        except EngineError as error:
            raise ApiError(500, str(error)) from None
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(t.text for t in tokens)},
            "logprobs": None if params.top_logprobs is None else {"content": [_logprob(t, params.top_logprobs) for t in tokens]},
            "finish_reason": _finish_reason(finish),
        }
        body = self._envelope(completion_id, "chat.completion")
        self._send_json(200, {**body, "choices": [choice], "usage": _usage(finish)})

    def _stream(
        self, events: Iterator[TokenEvent | FinishEvent], params: ChatParams, completion_id: str, cancel: threading.Event
    ) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        envelope = self._envelope(completion_id, "chat.completion.chunk")

        def choice(delta: dict, logprobs: Any = None, finish_reason: str | None = None) -> dict:
            return {**envelope, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}

        try:
            self._event(choice({"role": "assistant", "content": ""}))
            for event in events:
                if isinstance(event, TokenEvent):
                    logprobs = None if params.top_logprobs is None else {"content": [_logprob(event, params.top_logprobs)]}
                    if event.text or logprobs:
                        self._event(choice({"content": event.text}, logprobs))
                    continue
                self._event(choice({}, finish_reason=_finish_reason(event)))
                if params.include_usage:
                    self._event({**envelope, "choices": [], "usage": _usage(event)})
            self._chunk(b"data: [DONE]\n\n")
        except EngineError as error:
            self._event(ApiError(500, str(error)).body())
            self.close_connection = True
        except OSError:  # the client went away: stop generating, let the engine finish cleanly
            cancel.set()
            for _ in events:
                pass
            self.close_connection = True
            return
        self._chunk(b"")

    def _envelope(self, completion_id: str, kind: str) -> dict[str, Any]:
        return {"id": completion_id, "object": kind, "created": int(time.time()), "model": self.server.engine.info.model_id}

    def _event(self, body: dict) -> None:
        self._chunk(b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send_json(self, status: int, body: dict, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _prepend(first: TokenEvent | FinishEvent, rest: Iterator[TokenEvent | FinishEvent]) -> Iterator[TokenEvent | FinishEvent]:
    yield first
    yield from rest


def _logprob(token: TokenEvent, top: int) -> dict[str, Any]:
    return {
        "token": token.text,
        "logprob": token.logprob,
        "bytes": list(token.text.encode()),
        "top_logprobs": [
            {"token": alt.text, "logprob": alt.logprob, "bytes": list(alt.text.encode())} for alt in token.top[:top]
        ],
    }


def _finish_reason(finish: FinishEvent) -> str:
    return "length" if finish.reason == "length" else "stop"


def _usage(finish: FinishEvent) -> dict[str, int]:
    prompt, completion = finish.usage.prompt_tokens, finish.usage.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
