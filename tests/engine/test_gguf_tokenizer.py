"""engine.gguf.tokenizer: the tokenizer rebuilt from tokenizer.ggml.* metadata gives the same ids
as transformers' own GGUF tokenizer on the real SmolLM2 file, picks the split regex by the
`pre` name, and rebuilds SentencePiece vocabularies as Hugging Face's tokenizer.json has them."""

from __future__ import annotations

import json

import pytest
from gguf_fixtures import smollm2_path, tiny_gguf  # noqa: F401

from engine.errors import ModelFileError
from engine.gguf import GGUFFile
from engine.gguf.importer import import_gguf
from engine.gguf.tokenizer import tokenizer_config, tokenizer_from_gguf
from engine.tokenizer import Tokenizer

HARD_STRINGS = [
    "Hello world",
    " leading space",
    "   three leading spaces and trailing   ",
    "12345 and 3.14159, 1,000,000 or 2024-12-03",
    "x123y 42nd 7th",
    "emoji 🙂👍🏽🇫🇷 done 🤖",
    "def f(x):\n\treturn x**2  # square\n\n",
    "if (a != b && c >= 0) { return arr[i]; }",
    "你好世界, こんにちは, 안녕하세요, Привет мир",
    "naïve café Ünïcödé façade",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "don't I'll we've THEY'RE it's",
    "\n\n\nnewlines\r\nand\rreturns",
    "tabs\t\tand   spaces   ",
    "<|endoftext|>text<repo_name>more<file_sep>",
    "mixed123abc456DEF",
    "email: a.b@c.com https://x.org/a?b=1&c=%20",
    "",
]


@pytest.fixture(scope="module")
def smollm2_tokenizers(smollm2_path, tmp_path_factory):
    """(ours from the imported directory, transformers' GGUF tokenizer) for the real file."""
    from transformers import AutoTokenizer

    model_dir = tmp_path_factory.mktemp("smollm2") / "model"
    import_gguf(smollm2_path, model_dir)
    reference = AutoTokenizer.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name)
    return Tokenizer(model_dir / "tokenizer.json"), reference, model_dir


def test_smollm2_ids_match_transformers_gguf_tokenizer(smollm2_tokenizers):
    ours, reference, _ = smollm2_tokenizers
    for text in HARD_STRINGS:
        expected = reference.encode(text, add_special_tokens=False)
        assert ours.encode(text) == expected, text
        assert ours.decode(expected, skip_special_tokens=False) == reference.decode(expected), text


def test_smollm2_special_tokens_are_single_ids(smollm2_tokenizers):
    ours, _, model_dir = smollm2_tokenizers
    assert ours.encode("<|im_start|>system<|im_end|>")[::2] == [1, 2]
    assert {1, 2, 0} <= ours.special_ids
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert ours.token_to_id(config["bos_token"]) == 1 and ours.token_to_id(config["eos_token"]) == 2


def _splits(tiny_gguf, pre: str, text: str) -> list[str]:
    tokenizer = tokenizer_from_gguf(GGUFFile(tiny_gguf(tokenizer_pre=pre).path))
    return [piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)]


def test_the_pre_name_picks_the_split(tiny_gguf):
    text = "abc 12345"
    assert _splits(tiny_gguf, "default", text) == ["abc", "Ġ12345"]
    assert _splits(tiny_gguf, "llama-bpe", text) == ["abc", "Ġ", "123", "45"]
    assert _splits(tiny_gguf, "qwen2", text) == ["abc", "Ġ", "1", "2", "3", "4", "5"]
    assert _splits(tiny_gguf, "smollm", text) == ["abc", "Ġ", "1", "2", "3", "4", "5"]


def test_an_unknown_pre_tokenizer_is_refused(tiny_gguf):
    path = tiny_gguf(tokenizer_pre="martian").path
    with pytest.raises(ModelFileError, match="pre-tokenizer 'martian' is unknown"):
        tokenizer_from_gguf(GGUFFile(path))


def test_tiny_byte_level_round_trips_and_keeps_special_tokens_whole(tiny_gguf):
    gguf = GGUFFile(tiny_gguf().path)
    tokenizer = tokenizer_from_gguf(gguf)
    for text in HARD_STRINGS:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
    tokens = gguf.get("tokenizer.ggml.tokens")
    ids = tokenizer.encode("<|im_start|>hi<|im_end|>", add_special_tokens=False).ids
    assert ids[0] == tokens.index("<|im_start|>") and ids[-1] == tokens.index("<|im_end|>")
    assert tokenizer_config(gguf)["add_bos_token"] is False


def _sentencepiece_gguf(path, reference_dir, with_merges: bool):
    """A GGUF whose tokenizer.ggml.* describe the SentencePiece-style BPE in `reference_dir`
    (as llama.cpp's converter writes Llama 2 / TinyLlama: pieces, scores, types, no merges)."""
    import gguf

    spec = json.loads((reference_dir / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    types = [2 if t == "<unk>" else 3 if t in ("<s>", "</s>") else 6 if t.startswith("<0x") else 1 for t in tokens]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(index) for index in range(len(tokens))])  # merge order, as SentencePiece ranks
    writer.add_token_types(types)
    if with_merges:
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    writer.add_bos_token_id(tokens.index("<s>"))
    writer.add_eos_token_id(tokens.index("</s>"))
    writer.add_unk_token_id(tokens.index("<unk>"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("with_merges", [False, True])
def test_sentencepiece_vocab_matches_the_hugging_face_tokenizer_json(tiny_tokenizer_dir, tmp_path, with_merges):
    from tokenizers import Tokenizer as HFTokenizer

    reference_dir = tiny_tokenizer_dir("tinyllama")
    path = _sentencepiece_gguf(tmp_path / "spm.gguf", reference_dir, with_merges)
    gguf = GGUFFile(path)
    ours = tokenizer_from_gguf(gguf)
    reference = HFTokenizer.from_file(str(reference_dir / "tokenizer.json"))
    texts = [*HARD_STRINGS, "Tandem keeps every conversation on your machine.", "Press Ctrl+N to start"]
    for text in texts:
        expected = reference.encode(text, add_special_tokens=False).ids
        assert ours.encode(text, add_special_tokens=False).ids == expected, text
        assert ours.decode(expected) == reference.decode(expected), text
    # llama.cpp adds BOS to SentencePiece vocabularies unless told not to.
    assert tokenizer_config(gguf)["add_bos_token"] is True
    assert ours.encode("hi").ids[0] == gguf.get("tokenizer.ggml.tokens").index("<s>")
