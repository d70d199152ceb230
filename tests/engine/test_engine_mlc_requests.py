"""What the mlc backend asks MLC LLM for: the model's own Jinja prompt (as token ids, through the
completions API) or its conv_template (through the chat API), at the model's own temperature and
top_p unless the request sets them.

mlc_llm cannot be installed here (it is not on PyPI), so MLC LLM itself is a FAKE: a stand-in
module that records each call and streams chunks shaped like MLC's OpenAI protocol objects."""

from __future__ import annotations

import json
import shutil
import sys
import types
from types import SimpleNamespace

import pytest

from engine.api import FinishEvent, GenerationRequest, TokenEvent
from engine.chat_template import read_chat_template
from engine.tokenizer import Tokenizer

MESSAGES = ({"role": "user", "content": "Tell me about the quick brown fox."},)


class FakeMLCEngine:
    """FAKE MLCEngine: records the create() calls; streams two tokens then the usage chunk."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, model: str, device: str = "auto") -> None:
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._chat))
        self.completions = SimpleNamespace(create=self._complete)

    def _chat(self, **kwargs):
        FakeMLCEngine.calls.append(("chat", kwargs))
        entries = [
            SimpleNamespace(token=token, logprob=-0.5, bytes=list(token.encode()), top_logprobs=[])
            for token in ("Hi", "!")
        ]
        choice = SimpleNamespace(logprobs=SimpleNamespace(content=entries), finish_reason="stop")
        return iter([SimpleNamespace(choices=[choice], usage=None), _usage_chunk()])

    def _complete(self, **kwargs):
        FakeMLCEngine.calls.append(("completions", kwargs))
        logprobs = SimpleNamespace(tokens=["Hi", "!"], token_logprobs=[-0.25, -0.75],
                                   top_logprobs=[{"Hi": -0.25, "Yo": -2.0}, {"!": -0.75}])  # fmt: skip
        choice = SimpleNamespace(text="Hi!", logprobs=logprobs, finish_reason="stop")
        return iter([SimpleNamespace(choices=[choice], usage=None), _usage_chunk()])

    def terminate(self) -> None:
        pass


def _usage_chunk():
    usage = SimpleNamespace(prompt_tokens=9, completion_tokens=2, extra={})
    return SimpleNamespace(choices=[], usage=usage)


@pytest.fixture
def fake_mlc_llm(monkeypatch):
    module = types.ModuleType("mlc_llm")
    module.MLCEngine = FakeMLCEngine
    monkeypatch.setitem(sys.modules, "mlc_llm", module)
    FakeMLCEngine.calls = []
    return FakeMLCEngine.calls


def _model_dir(tiny_mlc_model, tmp_path, jinja: bool, **chat_settings):
    folder = tmp_path / "model"
    shutil.copytree(tiny_mlc_model("q0f32"), folder)
    config_path = folder / "mlc-chat-config.json"
    config = json.loads(config_path.read_text())
    config.update(chat_settings)
    config_path.write_text(json.dumps(config))
    if not jinja:
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer_config.pop("chat_template")
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


def test_a_jinja_model_is_prompted_with_its_own_template_at_its_own_settings(fake_mlc_llm, tiny_mlc_model, tmp_path):
    from engine.mlc_backend import MLCBackendEngine

    folder = _model_dir(tiny_mlc_model, tmp_path, jinja=True, temperature=0.6, top_p=0.9)
    engine = MLCBackendEngine(folder)
    events = list(engine.generate(GenerationRequest(messages=MESSAGES, max_tokens=5)))
    (kind, call), = fake_mlc_llm
    expected = read_chat_template(folder).prompt_token_ids(MESSAGES, Tokenizer.from_model_dir(folder).encode)
    assert kind == "completions" and call["prompt"] == expected
    assert (call["temperature"], call["top_p"], call["max_tokens"]) == (0.6, 0.9, 5)
    tokens = [event for event in events if isinstance(event, TokenEvent)]
    assert "".join(token.text for token in tokens) == "Hi!"
    assert [token.logprob for token in tokens] == [-0.25, -0.75]
    assert [alt.logprob for alt in tokens[0].top] == [-0.25, -2.0]
    assert isinstance(events[-1], FinishEvent) and events[-1].usage.prompt_tokens == 9
    assert engine.count_prompt_tokens(MESSAGES) == len(expected)


def test_a_model_without_jinja_goes_through_the_chat_api_and_the_request_wins(fake_mlc_llm, tiny_mlc_model, tmp_path):
    from engine.mlc_backend import MLCBackendEngine

    folder = _model_dir(tiny_mlc_model, tmp_path, jinja=False, temperature=0.6, top_p=0.9)
    engine = MLCBackendEngine(folder)
    list(engine.generate(GenerationRequest(messages=MESSAGES, max_tokens=5, temperature=0.0)))
    (kind, call), = fake_mlc_llm
    assert kind == "chat" and call["messages"] == [dict(m) for m in MESSAGES]
    assert (call["temperature"], call["top_p"]) == (0.0, 0.9)
