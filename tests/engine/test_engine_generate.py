"""TVMEngine.generate(): stop strings, max_tokens, cancel, the context window, seeded sampling,
raw-logit logprobs, usage and timings, bad token ids, and the tandem extras in EngineInfo."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from engine.api import FinishEvent, GenerationRequest, TokenEvent
from engine.errors import ContextWindowExceeded, EngineError, ModelFileError
from engine.loader import open_engine
from engine.sampling import log_softmax
from engine.tvm_backend.target import host_target

MESSAGES = ({"role": "user", "content": "Tell me about the quick brown fox."},)


@pytest.fixture(scope="module")
def engine(tiny_mlc_model):
    opened = open_engine(tiny_mlc_model("q4f32_1", model_type="llama", tie=True), backend="tvm")
    yield opened
    opened.close()


def run(engine, cancel_after: int | None = None, **request) -> tuple[list[TokenEvent], FinishEvent]:
    cancel = threading.Event()
    tokens, finish = [], None
    for event in engine.generate(GenerationRequest(messages=MESSAGES, **request), cancel):
        if isinstance(event, FinishEvent):
            finish = event
            continue
        tokens.append(event)
        if cancel_after is not None and len(tokens) == cancel_after:
            cancel.set()
    assert finish is not None
    return tokens, finish


def greedy(engine, max_tokens: int) -> tuple[list[TokenEvent], FinishEvent]:
    return run(engine, max_tokens=max_tokens, temperature=0.0)


def test_max_tokens_ends_with_length_and_counts_usage(engine):
    tokens, finish = greedy(engine, 12)
    if finish.reason == "stop":
        pytest.skip("the random model chose a stop token first")  # deterministic per fixture seed
    assert finish.reason == "length"
    assert len(tokens) == finish.usage.completion_tokens == 12
    assert finish.usage.prompt_tokens == engine.count_prompt_tokens(MESSAGES)
    assert finish.timings.ttft_ms > 0 and finish.timings.prefill_tok_s > 0 and finish.timings.decode_tok_s > 0


def test_a_stop_string_ends_the_reply_and_is_never_shown(engine):
    tokens, _ = greedy(engine, 24)
    text = "".join(token.text for token in tokens)
    assert len(text) >= 6, "the greedy reply is too short to pick a stop string from"
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    before = text[: text.find(stop)]

    stopped_tokens, finish = run(engine, max_tokens=24, temperature=0.0, stop=(stop,))

    assert finish.reason == "stop"
    assert "".join(token.text for token in stopped_tokens) == before


def test_cancel_stops_between_tokens(engine):
    tokens, finish = run(engine, cancel_after=3, max_tokens=40, temperature=0.0)
    assert finish.reason in ("cancelled", "stop")
    if finish.reason == "cancelled":
        assert len(tokens) == 3


def test_a_prompt_that_does_not_fit_raises_before_any_token(engine):
    long_message = ({"role": "user", "content": "fox " * 400},)
    assert engine.count_prompt_tokens(long_message) + 1 > engine.info.context_window
    with pytest.raises(ContextWindowExceeded) as raised:
        engine.generate(GenerationRequest(messages=long_message, max_tokens=4))
    assert raised.value.context_window == engine.info.context_window
    tokens, finish = greedy(engine, 2)  # the engine is still usable
    assert finish.usage.completion_tokens >= 1


def test_max_tokens_is_capped_by_the_room_left_in_the_window(engine):
    prompt_tokens = engine.count_prompt_tokens(MESSAGES)
    tokens, finish = greedy(engine, 10_000)
    assert finish.usage.prompt_tokens + finish.usage.completion_tokens <= engine.info.context_window
    assert prompt_tokens == finish.usage.prompt_tokens


def test_seeded_sampling_is_reproducible(engine):
    first, _ = run(engine, max_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    again, _ = run(engine, max_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    other, _ = run(engine, max_tokens=16, temperature=1.0, top_p=0.95, seed=8)
    assert [t.token_id for t in first] == [t.token_id for t in again]
    assert [t.token_id for t in first] != [t.token_id for t in other]


def test_logprobs_and_alternatives_come_from_the_raw_logits(engine):
    tokens, _ = run(engine, max_tokens=1, temperature=0.3, seed=1)
    session = engine.session
    session.reset()
    raw = log_softmax(session.prefill(engine.prompt_ids(MESSAGES)))
    first = tokens[0]
    assert first.logprob == pytest.approx(raw[first.token_id], abs=1e-5)
    assert len(first.top) == 5
    assert [alt.token_id for alt in first.top] == list(np.argsort(-raw, kind="stable")[:5])
    assert all(alt.logprob == pytest.approx(raw[alt.token_id], abs=1e-5) for alt in first.top)


def test_out_of_range_token_ids_never_reach_the_kernels(engine):
    session = engine.session
    session.reset()
    vocab = engine.chat_config.model_config.vocab_size
    for bad in ([vocab], [3, -1], [vocab + 1000]):
        with pytest.raises(EngineError, match="outside the model's vocabulary"):
            session.prefill(bad)
    session.reset()
    assert session.prefill([1, 2, 3]).shape == (vocab,)


def test_info_describes_the_model(engine):
    info = engine.info
    assert info.backend == "tvm"
    assert info.quantization == "q4f32_1"
    assert info.context_window == 256
    # The device the engine picked, as people read it: "cpu (znver3, ...)" or "cuda (NVIDIA H200, sm_90)".
    assert info.device == host_target().label
    assert (info.refusal, info.skills) == (None, None)
    assert info.chat_template  # the conv_template's name, or the model's own Jinja file
    assert info.generation_defaults == engine.generation_defaults


def test_info_carries_the_tandem_refusal_and_skills(tiny_mlc_model, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_mlc_model("q4f32_1", model_type="llama", tie=True), model_dir)
    config_path = model_dir / "mlc-chat-config.json"
    config = json.loads(config_path.read_text())
    refusal = "I can't answer that here: it needs a bigger model."
    config["tandem"] = {"refusal": refusal, "skills": ["tandem help", "small talk"]}
    config_path.write_text(json.dumps(config))
    opened = open_engine(model_dir, backend="tvm")
    assert opened.info.refusal == refusal
    assert opened.info.skills == ("tandem help", "small talk")
    opened.close()


@pytest.mark.parametrize("skills", ['"tandem help"', '[["nested"]]', '[{"title": "no name"}]'])
def test_a_malformed_skill_list_is_a_model_file_error_naming_the_key(tiny_mlc_model, tmp_path, skills):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_mlc_model("q4f32_1", model_type="llama", tie=True), model_dir)
    config_path = model_dir / "mlc-chat-config.json"
    config = json.loads(config_path.read_text())
    config["tandem"] = {"skills": json.loads(skills)}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=r"(?i)mlc-chat-config\.json: tandem\.skills.*fix or remove it"):
        open_engine(model_dir, backend="tvm")


def test_a_closed_engine_says_so(tiny_mlc_model):
    opened = open_engine(tiny_mlc_model("q4f32_1", model_type="llama", tie=True), backend="tvm")
    opened.close()
    with pytest.raises(EngineError, match="closed"):
        list(opened.generate(GenerationRequest(messages=MESSAGES, max_tokens=2)))


def test_concurrent_generations_take_turns_and_match_sequential_ones(engine):
    expected = [t.token_id for t in greedy(engine, 8)[0]]
    results: list[list[int]] = []

    def worker() -> None:
        results.append([t.token_id for t in greedy(engine, 8)[0]])

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [expected] * 3
