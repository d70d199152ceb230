"""The states the engine exports with prefill and decode (the router's probes read them) against
transformers' on a tiny random Llama: the last hidden state (after the final norm) and the
residual stream after two thirds of the blocks; and the FinishEvent that carries them at the end
of the prompt, at the end of the answer and, for the middle one, averaged over the answer (the
answer's first event brings the prompt's already)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.api import FinishEvent, GenerationRequest
from engine.loader import open_engine
from engine.models.llama import middle_depth

PROMPT = "The quick brown fox jumps over the lazy dog. Tandem keeps every conversation"


@pytest.fixture(autouse=True)
def float_matmul(monkeypatch):
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")


def reference_states(hf_dir, weights: dict, token_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """transformers' last hidden state (after the model's final norm) and its state after
    middle_depth blocks, at every position."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()}, strict=False)
    with torch.no_grad():
        out = model(torch.tensor([token_ids]), output_hidden_states=True)
    middle = middle_depth(model.config.num_hidden_layers)
    assert 0 < middle < model.config.num_hidden_layers  # a state of its own, not the final one
    return out.hidden_states[-1][0].float().numpy(), out.hidden_states[middle][0].float().numpy()


@pytest.fixture(scope="module")
def tiny_llama(tiny_hf_checkpoint, tiny_mlc_model, hf_weights_from_mlc):
    hf_dir = tiny_hf_checkpoint(model_type="llama", tie=True)
    mlc_dir = tiny_mlc_model("q0f32", model_type="llama", tie=True)
    return hf_dir, mlc_dir, hf_weights_from_mlc(mlc_dir)


def test_prefill_and_decode_states_match_transformers(tiny_llama, monkeypatch):
    monkeypatch.setenv("TANDEM_CPU_MATMUL", "float")
    hf_dir, mlc_dir, weights = tiny_llama
    engine = open_engine(mlc_dir, backend="tvm")
    session = engine.session
    prompt = engine.tokenizer.encode(PROMPT)
    session.reset()
    ours = []
    logits = session.prefill(prompt)
    ours.append(session.last_states())
    tokens = list(prompt)
    for _ in range(4):
        tokens.append(int(np.argmax(logits)))
        logits = session.decode(tokens[-1])
        ours.append(session.last_states())
    final, middle = (rows[len(prompt) - 1 :] for rows in reference_states(hf_dir, weights, tokens))
    assert all(states is not None and states.shape == (2, final.shape[1]) for states in ours)
    for row, expected in ((0, final), (1, middle)):
        worst = max(float(np.abs(mine[row] - theirs).max()) for mine, theirs in zip(ours, expected))
        assert worst < 1e-3
    np.testing.assert_array_equal(session.last_hidden(), ours[-1][0])
    # Not trivially equal rows: the states differ from one position and one depth to the next.
    assert float(np.abs(ours[0][0] - ours[1][0]).max()) > 1e-2
    assert float(np.abs(ours[0][0] - ours[0][1]).max()) > 1e-2
    engine.close()


def test_finish_event_carries_the_prompt_and_answer_states(tiny_llama):
    hf_dir, mlc_dir, weights = tiny_llama
    engine = open_engine(mlc_dir, backend="tvm")
    events = list(engine.generate(GenerationRequest([{"role": "user", "content": "hello there"}],
                                                    max_tokens=5, temperature=0.0)))
    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.hidden is not None
    prompt = engine.prompt_ids([{"role": "user", "content": "hello there"}])
    answer = [e.token_id for e in events[:-1]]
    # A budget-ended answer's last computed state is after its second-to-last token (the last
    # one is sampled but never fed back); a stop token ends it after its last fed token.
    fed = prompt + answer[:-1] if finish.reason == "length" else prompt + answer
    final, middle = reference_states(hf_dir, weights, fed)
    np.testing.assert_allclose(finish.hidden.prompt_end, final[len(prompt) - 1], atol=1e-3)
    np.testing.assert_allclose(finish.hidden.answer_end, final[-1], atol=1e-3)
    np.testing.assert_allclose(finish.hidden.prompt_middle, middle[len(prompt) - 1], atol=1e-3)
    # The answer's middle state is the mean over the tokens it fed back (each one's position).
    np.testing.assert_allclose(finish.hidden.answer_middle, middle[len(prompt) :].mean(axis=0), atol=1e-3)
    # The answer's first event brings the prompt's states, for the router to judge the question early.
    first = events[0].prompt_hidden
    assert first is not None and not first.answer_end and not first.answer_middle
    assert first.prompt_middle == finish.hidden.prompt_middle and first.prompt_end == finish.hidden.prompt_end
    assert all(event.prompt_hidden is None for event in events[1:-1])
    engine.close()
