"""Make model text safe to show: no terminal control sequence may reach the screen (design section 7)."""

from __future__ import annotations

import re

# C0 controls except \t and \n, DEL, and the C1 range. Removing ESC, CSI (0x9b), OSC (0x9d), DCS (0x90) and BEL
# one character at a time is stateless, so it stays safe when a sequence is split across streamed chunks.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Lone surrogates cannot be encoded to UTF-8; printing one would raise in the middle of a reply.
_SURROGATES = re.compile("[\ud800-\udfff]")


# DEL and the C1 range are legal raw inside a JSON string, so a structured answer may hold one; stripping it would
# change the data (a one-character string would become empty), while its \uXXXX escape means the same character.
_JSON_ESCAPABLE = re.compile("[\x7f-\x9f]")


def sanitize(text: str, json: bool = False) -> str:
    """Strip control characters (keeping newline and tab) and replace lone surrogates with U+FFFD. JSON: the text is
    a JSON answer, whose DEL and C1 characters (legal only inside its strings) become their \\u escapes instead."""
    if json:
        text = _JSON_ESCAPABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    text = _CONTROLS.sub("", text)
    return _SURROGATES.sub("\ufffd", text)
