"""Bracketed paste made inert: nothing inside a paste may run a binding, and its control
characters reach the prompt as visible symbols, in the order they were pasted."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from textual._xterm_parser import XTermParser

PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
KEPT_CONTROLS = frozenset("\n\t")
"""Controls a paste keeps as they are: they are text."""


def visible(text: str) -> str:
    """`text` with every control character but newline and tab shown as its Unicode control
    picture (ESC -> ␛, ^O -> ␏, DEL -> ␡); CR and CRLF become newlines; C1 controls are dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char in KEPT_CONTROLS:
            out.append(char)
        elif code < 0x20:
            out.append(chr(0x2400 + code))
        elif code == 0x7F:
            out.append("\u2421")
        elif 0x80 <= code < 0xA0:
            continue  # C1 controls have no picture; an 8-bit CSI would start an escape sequence
        else:
            out.append(char)
    return "".join(out)


class PasteSafeParser(XTermParser):
    """Textual's parser, fed so that no ESC reaches it inside a bracketed paste but the closing
    marker. Textual reads an ESC inside a paste as the start of a key sequence and replays what
    follows as key presses (a pasted ^O toggled the cloud), ahead of the paste itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._in_paste = False
        self._recent = ""  # the last characters passed outside a paste, to spot PASTE_START
        self._held = ""  # inside a paste: characters that may be the start of PASTE_END
        super().__init__(*args, **kwargs)

    def feed(self, data: str) -> Iterable[Any]:
        if not data:
            return super().feed(data)  # end of input
        defused = self._defuse(data)
        return super().feed(defused) if defused else ()  # "" would read as end of input

    def _defuse(self, data: str) -> str:
        out: list[str] = []
        for char in data:
            if not self._in_paste:
                out.append(char)
                self._recent = (self._recent + char)[-len(PASTE_START) :]
                if self._recent == PASTE_START:
                    self._in_paste, self._recent = True, ""
                continue
            self._held += char
            while self._held and not PASTE_END.startswith(self._held):
                first, self._held = self._held[0], self._held[1:]
                out.append("\u241b" if first == "\x1b" else first)
            if self._held == PASTE_END:
                out.append(PASTE_END)
                self._held, self._in_paste = "", False
        return "".join(out)


def install() -> None:
    """Make Textual's terminal drivers read input through PasteSafeParser (they look the parser
    class up in their own module when the input thread starts)."""
    import importlib

    names = ("win32",) if sys.platform == "win32" else ("linux_driver", "linux_inline_driver")
    for name in names:
        try:
            module = importlib.import_module(f"textual.drivers.{name}")
        except ImportError:
            continue
        if getattr(module, "XTermParser", None) is not None:
            module.XTermParser = PasteSafeParser  # type: ignore[attr-defined]
