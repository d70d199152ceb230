"""Text made safe to print on a terminal: stored titles, messages and model output may hold NUL,
BEL or escape sequences, which a terminal would obey; they are shown as visible symbols instead."""

from __future__ import annotations

import re

_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 controls but tab and newline, DEL, and C1 controls (0x9b is an 8-bit CSI)."""


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # Unicode's control pictures: ESC shows as ␛, BEL as ␇
    if code == 0x7F:
        return "\u2421"
    return f"\\x{code:02x}"  # C1 controls have no picture


def printable(text: str) -> str:
    """`text` with every control character but tab and newline made visible."""
    return _CONTROLS.sub(_picture, text)
