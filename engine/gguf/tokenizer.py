"""A GGUF's `tokenizer.ggml.*` metadata -> a Hugging Face `tokenizers` object (tokenizer.json)
and its tokenizer_config.json: byte-level BPE ("gpt2": SmolLM, Llama 3, Qwen2), the split regex
picked by the `pre` name, and SentencePiece vocabularies ("llama") as BPE with byte fallback."""

from __future__ import annotations

import functools
from typing import Any

from engine.errors import ModelFileError
from engine.gguf.reader import GGUFFile

CONTROL, USER_DEFINED, BYTE = 3, 4, 6
"""llama.cpp's token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)."""

_GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@functools.cache
def _pre_tokenizers() -> dict[str, tuple[str, bool, bool]]:
    """`pre` name -> (split regex, digits one by one, ignore_merges): how each model family's
    own tokenizer.json (and llama.cpp) splits text before the merges."""
    gpt2, llama3, qwen2 = (_GPT2_SPLIT, False, False), (_LLAMA3_SPLIT, False, True), (_QWEN2_SPLIT, False, False)
    return {
        "default": gpt2, "gpt2": gpt2, "gpt-2": gpt2,
        "smollm": (_GPT2_SPLIT, True, False),  # SmolLM splits every digit, then GPT-2's regex
        "llama-bpe": llama3, "llama3": llama3, "llama-v3": llama3, "smaug-bpe": llama3, "dbrx": llama3,
        "falcon3": llama3, "pixtral": llama3,
        "qwen2": qwen2, "deepseek-r1-qwen": qwen2, "megrez": qwen2,
        "tekken": (_TEKKEN_SPLIT, False, True),
    }  # fmt: skip


def tokenizer_from_gguf(gguf: GGUFFile) -> Any:
    """The file's tokenizer as a `tokenizers.Tokenizer`; ModelFileError for a kind Tandem cannot build."""
    kind = gguf.require("tokenizer.ggml.model")
    tokens = [str(token) for token in gguf.require("tokenizer.ggml.tokens")]
    token_types = [int(t) for t in (gguf.get("tokenizer.ggml.token_type") or [1] * len(tokens))]
    if kind == "gpt2":
        tokenizer = _byte_level(gguf, tokens)
    elif kind == "llama":
        tokenizer = _sentencepiece(gguf, tokens, token_types)
    else:
        raise ModelFileError(
            f"{gguf.path}: tokenizer {kind!r} is not supported; Tandem builds byte-level BPE (gpt2) and "
            "SentencePiece (llama) tokenizers. Use a Llama, SmolLM or Qwen2 GGUF."
        )
    _add_special_tokens(tokenizer, tokens, token_types, byte_level=kind == "gpt2")
    bos = _special_token(gguf, tokens, "bos")
    if bos is not None and add_bos(gguf):
        from tokenizers import processors

        bos_id = tokens.index(bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return tokenizer


def tokenizer_config(gguf: GGUFFile) -> dict[str, Any]:
    """tokenizer_config.json: the special tokens, whether BOS is added, and the Jinja chat template."""
    tokens = [str(token) for token in gguf.require("tokenizer.ggml.tokens")]
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos(gguf),
        "add_eos_token": bool(gguf.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
    }
    for kind in ("bos", "eos", "unk", "pad"):
        config[f"{kind}_token"] = _special_token(gguf, tokens, kind)
    template = gguf.get("tokenizer.chat_template")
    if isinstance(template, str) and template:
        config["chat_template"] = template
    return config


def add_bos(gguf: GGUFFile) -> bool:
    """llama.cpp adds BOS to SentencePiece vocabularies unless the file says not to; to BPE ones only when asked."""
    default = gguf.get("tokenizer.ggml.model") == "llama"
    return bool(gguf.get("tokenizer.ggml.add_bos_token", default))


def special_token_id(gguf: GGUFFile, kind: str) -> int | None:
    """The id of the bos/eos/unk/pad token the file names (its `padding_token_id` for pad)."""
    key = {"unk": "unknown", "pad": "padding"}.get(kind, kind)
    value = gguf.get(f"tokenizer.ggml.{key}_token_id")
    return None if value is None else int(value)


def _special_token(gguf: GGUFFile, tokens: list[str], kind: str) -> str | None:
    token_id = special_token_id(gguf, kind)
    if token_id is None:
        return None
    if not 0 <= token_id < len(tokens):
        raise ModelFileError(
            f"{gguf.path}: the {kind} token id {token_id} is outside the {len(tokens)}-token vocabulary; "
            "the file is inconsistent. Re-export it."
        )
    return tokens[token_id]


def _byte_level(gguf: GGUFFile, tokens: list[str]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    pre = str(gguf.get("tokenizer.ggml.pre") or "default")
    known = _pre_tokenizers()
    if pre not in known:
        raise ModelFileError(
            f"{gguf.path}: pre-tokenizer {pre!r} is unknown to Tandem, so the file's text would be split "
            f"wrongly; supported: {', '.join(sorted(known))}."
        )
    split, single_digits, ignore_merges = known[pre]
    alphabet = _byte_alphabet()
    # Every token of a byte-level vocabulary is spelled in the 256-character byte alphabet; a
    # few files store added tokens as plain text, which is re-spelled so BPE can reach them.
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        spelled = token if set(token) <= alphabet.keys() else _respell(token)
        vocab.setdefault(spelled, index)
    merges = [tuple(merge.split(" ", 1)) for merge in (gguf.get("tokenizer.ggml.merges") or [])]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    if pre in ("qwen2", "deepseek-r1-qwen", "megrez"):
        tokenizer.normalizer = normalizers.NFC()  # Qwen2's own tokenizer.json normalizes first
    steps: list[pre_tokenizers.PreTokenizer] = [pre_tokenizers.Digits(individual_digits=True)] if single_digits else []
    steps += [
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece(gguf: GGUFFile, tokens: list[str], token_types: list[int]) -> Any:
    """SentencePiece BPE (Llama 2, Mistral, TinyLlama): GGUF keeps pieces and scores, not merges;
    a merge exists wherever a piece splits into two pieces, ranked by the merged piece's score."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = [float(s) for s in (gguf.get("tokenizer.ggml.scores") or [-float(i) for i in range(len(tokens))])]
    vocab = {token: index for index, token in enumerate(tokens)}
    merges = gguf.get("tokenizer.ggml.merges")
    if merges:
        pairs = [tuple(merge.split(" ", 1)) for merge in merges]
    else:
        ranked: list[tuple[float, int, int, tuple[str, str]]] = []
        for token, index in vocab.items():
            if token_types[index] in (CONTROL, BYTE) or len(token) < 2:
                continue
            for cut in range(1, len(token)):
                left, right = token[:cut], token[cut:]
                if left in vocab and right in vocab:
                    ranked.append((-scores[index], vocab[left], vocab[right], (left, right)))
        pairs = [pair for *_, pair in sorted(ranked)]
    unk_id = special_token_id(gguf, "unk")
    unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, unk_token=unk, byte_fallback=True, fuse_unk=True))
    steps: list[normalizers.Normalizer] = [normalizers.Replace(" ", "\u2581")]
    if gguf.get("tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend("\u2581"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    decode = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if gguf.get("tokenizer.ggml.add_space_prefix", True):
        decode.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode)
    return tokenizer


def _add_special_tokens(tokenizer: Any, tokens: list[str], token_types: list[int], byte_level: bool) -> None:
    """Control tokens (<|im_start|>...) become special added tokens, user-defined ones plain added
    tokens, so the text never cuts them up; a control token spelled outside the byte alphabet
    in a byte-level vocabulary is a mislabel and is left alone."""
    from tokenizers import AddedToken

    alphabet = _byte_alphabet()
    special, added = [], []
    for token, token_type in zip(tokens, token_types):
        if token_type == CONTROL and (not byte_level or set(token) <= alphabet.keys()):
            special.append(AddedToken(token, normalized=False, special=True))
        elif token_type == USER_DEFINED:
            added.append(AddedToken(token, normalized=False, special=False))
    tokenizer.add_special_tokens(special)
    tokenizer.add_tokens(added)


@functools.cache
def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-character map, inverted: printable bytes stand for themselves, the others
    (space, control bytes...) are shifted to U+0100 and up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = chr(256 + shifted)
            shifted += 1
    return {char: byte for byte, char in chars.items()}


def _respell(token: str) -> str:
    spelling = {byte: char for char, byte in _byte_alphabet().items()}
    return "".join(spelling[byte] for byte in token.encode("utf-8"))
