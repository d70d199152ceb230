"""A fault-injecting HTTP server on 127.0.0.1 that plays scripted replies: well-formed streams of
both provider kinds, errors, resets, stalls and garbage. Tests import its helpers by name."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from offload.network import Network
from offload.providers import Anthropic, OpenAICompatible, RetryPolicy, Timeouts

API_KEY = "sk-test-0123456789abcdefSECRET"


@dataclass
class Received:
    head: str
    headers: dict[str, str]
    body: bytes
    size: int
    """Bytes read off the socket for this request, head and body."""


class Connection:
    """One accepted connection, as a reply script sees it."""

    def __init__(self, sock: socket.socket, server: FaultServer) -> None:
        self.sock = sock
        self.server = server

    def send(self, data: bytes) -> None:
        # Counted before they go: counted after, the client could read the last chunk and the test
        # compare before this thread had added it (CI saw 891 counted of 896 received).
        self.server.bytes_out += len(data)
        self.sock.sendall(data)

    def chunk(self, data: bytes) -> None:
        self.send(b"%x\r\n%s\r\n" % (len(data), data))

    def reset(self) -> None:
        """Abort with a TCP RST, as a crashed proxy or a dropped link would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def hang(self) -> None:
        self.server.stopped.wait(30)


Reply = Callable[[Connection], None]


def respond(status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> Reply:
    payload = body.encode() if isinstance(body, str) else body

    def play(conn: Connection) -> None:
        lines = [f"HTTP/1.1 {status} X", f"content-length: {len(payload)}", "connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        conn.send(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)

    return play


def stream(events: list[str], end: str = "close", content_type: str = "text/event-stream") -> Reply:
    """A 200 chunked event stream; `end` is close (complete), reset (RST) or hang (stall)."""

    def play(conn: Connection) -> None:
        conn.send(
            f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n"
            "connection: close\r\n\r\n".encode()
        )
        for event in events:
            conn.chunk(event.encode())
        if end == "close":
            conn.send(b"0\r\n\r\n")
        elif end == "reset":
            conn.reset()
        elif end == "hang":
            conn.hang()

    return play


def silent(conn: Connection) -> None:
    """Read the request and never answer."""
    conn.hang()


def openai_events(texts: list[str], usage: tuple[int, int] | None = (7, 3), done: bool = True) -> list[str]:
    def chunk(body: dict) -> str:
        return f"data: {json.dumps({'id': 'c1', 'object': 'chat.completion.chunk', 'model': 'm-served', **body})}\n\n"

    events = [chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    events += [chunk({"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}) for t in texts]
    if done:
        events.append(chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        if usage:
            events.append(chunk({"choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}))
        events.append("data: [DONE]\n\n")
    return events


def anthropic_events(texts: list[str], usage: tuple[int, int] | None = (7, 3), done: bool = True) -> list[str]:
    def event(kind: str, body: dict) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **body})}\n\n"

    prompt, completion = usage or (0, 0)
    events = [
        event("message_start", {"message": {"model": "m-served", "usage": {"input_tokens": prompt, "output_tokens": 1}}}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        event("ping", {}),
    ]
    events += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": t}}) for t in texts]
    if done:
        events.append(event("content_block_stop", {"index": 0}))
        events.append(event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": completion}}))
        events.append(event("message_stop", {}))
    return events


@dataclass
class FaultServer:
    """Plays `script` replies in order, one per request (the last repeats); records every request."""

    script: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    bytes_out: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def play(self, *replies: Reply) -> None:
        self.script = list(replies)

    @property
    def bytes_in(self) -> int:
        return sum(r.size for r in self.received)

    def close(self) -> None:
        self.stopped.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            request = _read_request(sock)
            if request is None:
                return
            index = len(self.received)
            self.received.append(request)
            reply = self.script[min(index, len(self.script) - 1)]
            try:
                reply(Connection(sock, self))
            except OSError:
                pass


def _read_request(sock: socket.socket) -> Received | None:
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            return None
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return Received(lines[0], headers, body, len(head) + 4 + len(body))


FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


def make_provider(kind: str, base: str, network: Network | None = None, **options):
    """A provider of `kind` aimed at `base`, with test-friendly timeouts and retry delays."""
    options.setdefault("timeouts", Timeouts(connect=2.0, read=2.0))
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("network", network or Network())
    if kind == "anthropic":
        return Anthropic(API_KEY, base, **options)
    return OpenAICompatible(base + "/v1", API_KEY, **options)


EVENTS = {"openai": openai_events, "anthropic": anthropic_events}


_SENTENCES = [
    "Tandem answers on your machine first.",
    "The cloud helps only when you allow it.",
    "Press Ctrl+N for a new conversation.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and a café.",
] * 3
_CHATML_TEMPLATE = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n'}}{% endif %}"
)


def build_tiny_checkpoint(folder, seed: int = 0):
    """A random chatml Llama (hidden 64, 2 layers) saved by transformers, with a byte-level BPE
    tokenizer beside it: a real model for `tandem serve` when the embedded one is absent."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(_SENTENCES, trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "chat_template": _CHATML_TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast",
    }))  # fmt: skip
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.token_to_id("<|im_end|>"),
    )  # fmt: skip
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder
