"""The tokenizer: digits one per token, ChatML specials as single tokens, lossless round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets import embedded_model_dir
from assets.training.corpus import generate
from assets.training.tokenizer import IM_END, IM_START, chatml_piece, load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def trained():
    dialogues = generate(2000, seed=3)
    return train_tokenizer(
        ("".join(chatml_piece(m["role"], m["content"]) for m in d.messages) for d in dialogues),
        vocab_size=1024)


@pytest.fixture(scope="module", params=["trained", "shipped"])
def tokenizer(request, trained):
    if request.param == "trained":
        return trained
    path = embedded_model_dir()
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"no shipped tokenizer at {path}")
    return load_tokenizer(path)


def test_digits_are_one_token_each(tokenizer):
    tokens = tokenizer.encode("port 127001 and 2048").tokens
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits == list("127001") + list("2048")


def test_chatml_markers_are_single_special_tokens(tokenizer):
    ids = tokenizer.encode(chatml_piece("user", "hi")).ids
    assert ids[0] == tokenizer.token_to_id(IM_START)
    assert tokenizer.token_to_id(IM_END) in ids


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_any_text_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text).ids, skip_special_tokens=False) == text
