"""A STAND-IN for a vLLM verifier, not vLLM: an http.server on 127.0.0.1 that answers /tokenize
and /v1/completions (echo + logprobs, max_tokens 1, return_tokens_as_token_ids) in the response
shape vLLM's OpenAI-compatible server documents, over a toy deterministic "model": after token t
its best token is (31 t + 7) mod V, or, with a `script`, the script's next token after the first
`prompt_length` tokens. vLLM itself needs a GPU and gigabytes; this checks the wire."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class VllmStandIn:
    def __init__(self, tokenizer, vocab: int) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.requests: list[dict] = []
        self.script: list[int] = []
        self.prompt_length = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stand_in.requests.append(body)
                if self.path == "/tokenize":
                    tokens = stand_in.tokenizer.encode(body["prompt"])
                    reply = {"count": len(tokens), "max_model_len": 2048, "tokens": tokens, "token_strs": None}
                elif self.path == "/v1/completions":
                    reply = stand_in.completion(body)
                else:
                    self.send_error(404)
                    return
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def best_after(self, token: int, position: int = -1) -> int:
        """The best token at `position` (whose previous token is `token`)."""
        step = position - self.prompt_length
        if self.script and 0 <= step < len(self.script):
            return self.script[step]
        return (31 * token + 7) % self.vocab

    def _top(self, previous: int, token: int, k: int, position: int) -> dict[str, float]:
        best = self.best_after(previous, position)
        top = {f"token_id:{(best + i) % self.vocab}": -0.1 - 2.0 * i for i in range(k)}
        top.setdefault(f"token_id:{token}", -9.0 if token != best else -0.1)
        return top

    def completion(self, body: dict) -> dict:
        assert body["echo"] is True and body["max_tokens"] == 1 and body["return_tokens_as_token_ids"]
        prompt, k = body["prompt"], body["logprobs"]
        generated = self.best_after(prompt[-1], len(prompt))
        ids = [*prompt, generated]
        tokens = [f"token_id:{t}" for t in ids]
        top = [None] + [self._top(ids[i - 1], ids[i], k, i) for i in range(1, len(ids))]
        token_logprobs = [None] + [t[f"token_id:{ids[i]}"] for i, t in enumerate(top) if t is not None]
        texts = [self.tokenizer.decode([t]) for t in ids]
        offsets = [sum(len(x) for x in texts[:i]) for i in range(len(texts))]
        return {
            "id": "cmpl-standin",
            "object": "text_completion",
            "created": 0,
            "model": "stand-in",
            "choices": [{
                "index": 0,
                "text": "".join(texts),
                "logprobs": {"text_offset": offsets, "token_logprobs": token_logprobs, "tokens": tokens, "top_logprobs": top},
                "finish_reason": "length",
                "stop_reason": None,
                "prompt_logprobs": None,
            }],
            "usage": {"prompt_tokens": len(prompt), "total_tokens": len(ids), "completion_tokens": 1},
        }  # fmt: skip

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
