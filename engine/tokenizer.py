"""Text <-> token ids over a Hugging Face tokenizer.json, and a streaming detokenizer that
turns one token at a time into text deltas without splitting a character."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from engine.errors import ModelFileError

TOKENIZER_FILE = "tokenizer.json"
_INCOMPLETE = "\ufffd"
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BYTE_LEVEL_ALPHABET: dict[str, int] | None = None


class Tokenizer:
    """A model's tokenizer. Special tokens written in the text (e.g. "<|im_start|>") encode
    to their ids; no BOS is added here (chat templates add their own prefix ids)."""

    def __init__(self, path: Path | str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path} is missing; the model directory needs its tokenizer.json.")
        try:
            self._tokenizer = HFTokenizer.from_file(str(self.path))
        except Exception as error:  # tokenizers raises bare Exceptions for bad files
            raise ModelFileError(f"{self.path} is not a valid tokenizer ({error}); restore the file.") from None
        decoder = self._tokenizer.decoder
        # GPT-2 style byte-level BPE: each character of a vocab entry stands for one byte.
        self.byte_level = decoder is not None and b'"ByteLevel"' in decoder.__getstate__()
        self.special_ids = frozenset(
            token_id for token_id, token in self._tokenizer.get_added_tokens_decoder().items() if token.special
        )

    @classmethod
    def from_model_dir(cls, model_dir: Path | str) -> Tokenizer:
        return cls(Path(model_dir) / TOKENIZER_FILE)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(token_id)

    def token_text(self, token_id: int) -> str:
        """A single token shown on its own (for alternatives): its text, with the bytes of a
        partial character written as \\xNN escapes instead of U+FFFD."""
        piece = self.id_to_token(token_id)
        if piece is None:
            return ""
        if token_id in self.special_ids:
            return piece
        if self.byte_level:
            alphabet = _byte_level_alphabet()
            if all(char in alphabet for char in piece):
                return bytes(alphabet[char] for char in piece).decode("utf-8", errors="backslashreplace")
            return self.decode([token_id], skip_special_tokens=False)
        byte_fallback = _BYTE_FALLBACK.fullmatch(piece)
        if byte_fallback:  # SentencePiece spells raw bytes as <0xNN>
            return "\\x" + byte_fallback.group(1).lower()
        return piece.replace("\u2581", " ")  # SentencePiece's word-start mark is a space

    def streamer(self, skip_special_tokens: bool = True) -> StreamDecoder:
        return StreamDecoder(self, skip_special_tokens)


class StreamDecoder:
    """Feeds tokens one by one and returns the new text each adds.

    Each step decodes a short window of recent tokens, so leading-space rules and byte-level
    merges see their context; text ending in an incomplete UTF-8 sequence is held back until
    the rest of the character arrives (or `finish` flushes it)."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_start = 0  # window start: tokens already emitted, kept as context
        self._emitted_end = 0  # tokens whose text has been emitted

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_start : self._emitted_end])
        text = self._decode(self._ids[self._prefix_start :])
        if text.endswith(_INCOMPLETE) or len(text) <= len(prefix):
            return ""
        self._prefix_start = self._emitted_end
        self._emitted_end = len(self._ids)
        return text[len(prefix) :]

    def finish(self) -> str:
        """Whatever is still held back (an incomplete character ends as U+FFFD)."""
        prefix = self._decode(self._ids[self._prefix_start : self._emitted_end])
        text = self._decode(self._ids[self._prefix_start :])
        self._prefix_start = self._emitted_end = len(self._ids)
        return text[len(prefix) :]

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special) if ids else ""


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: each byte is shown as one printable character."""
    global _BYTE_LEVEL_ALPHABET
    if _BYTE_LEVEL_ALPHABET is None:
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        mapping = {chr(b): b for b in printable}
        extra = 0
        for b in range(256):
            if b not in printable:
                mapping[chr(256 + extra)] = b
                extra += 1
        _BYTE_LEVEL_ALPHABET = mapping
    return _BYTE_LEVEL_ALPHABET
