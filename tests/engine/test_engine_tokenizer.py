"""The tokenizer wrapper and streaming detokenizer over byte-level BPE."""

from __future__ import annotations

import pytest

from engine.tokenizer import Tokenizer

TEXTS = [
    "Hello world, this is Tandem.",
    "Emoji: 🙂👍🏽 and a family 👨‍👩‍👧 in a row!",
    "中文字符和日本語のテキスト、混ざっている。",
    "naïve café — “quotes” and tabs\tand\nnewlines",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_model_dir(tiny_tokenizer_dir("chatml"))


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_tokens_in_text_encode_to_their_ids(tokenizer):
    ids = tokenizer.encode("<|im_start|>user\nHi<|im_end|>")
    assert ids[0] == tokenizer.token_to_id("<|im_start|>") and ids[-1] == tokenizer.token_to_id("<|im_end|>")
    assert tokenizer.decode(ids) == "user\nHi"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nHi<|im_end|>"


@pytest.mark.parametrize("text", TEXTS)
def test_streaming_deltas_rebuild_the_text_without_broken_characters(tokenizer, text):
    ids = tokenizer.encode(text)
    assert len(ids) > len(text.encode("utf-8")) // 4  # rare characters do fall apart into bytes
    stream = tokenizer.streamer()
    deltas = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)


def test_stream_holds_back_a_partial_character(tokenizer):
    ids = tokenizer.encode("🙂")
    assert len(ids) > 1  # the emoji spans several byte tokens
    stream = tokenizer.streamer()
    assert [stream.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert stream.push(ids[-1]) == "🙂"


def test_stream_skips_special_tokens(tokenizer):
    stream = tokenizer.streamer()
    deltas = [stream.push(i) for i in tokenizer.encode("Hi<|im_end|>")]
    assert "".join(deltas) + stream.finish() == "Hi"


def test_token_text_shows_partial_bytes_as_escapes(tokenizer):
    ids = tokenizer.encode("🙂")
    texts = [tokenizer.token_text(i) for i in ids]
    assert all("\ufffd" not in t for t in texts)
    assert "\\x" in "".join(texts)
    assert tokenizer.token_text(tokenizer.encode(" world")[0]).startswith(" ")
    assert tokenizer.token_text(tokenizer.token_to_id("<|im_end|>")) == "<|im_end|>"


@pytest.mark.parametrize("text", ["Hello world, 😀 and 你好!", "The quick brown fox jumps."])
def test_sentencepiece_byte_fallback_streams_whole_characters(tiny_tokenizer_dir, text):
    tokenizer = Tokenizer.from_model_dir(tiny_tokenizer_dir("tinyllama"))
    assert not tokenizer.byte_level
    ids = tokenizer.encode(text)
    stream = tokenizer.streamer()
    deltas = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(deltas) == text  # the leading word mark becomes no space, later ones do
    assert not any("\ufffd" in delta for delta in deltas)
    pieces = [tokenizer.token_text(i) for i in ids]
    if "😀" in text:
        assert "\\xf0" in pieces  # <0xF0> shown as its byte


def test_bad_tokenizer_file_names_it(tmp_path):
    from engine.errors import ModelFileError

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="tokenizer.json is not a valid tokenizer"):
        Tokenizer.from_model_dir(tmp_path)
    with pytest.raises(ModelFileError, match="tokenizer.json is missing"):
        Tokenizer.from_model_dir(tmp_path / "nowhere")
