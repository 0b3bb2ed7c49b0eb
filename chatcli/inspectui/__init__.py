"""Rendering for `chatcli inspect` and the REPL's /tokens and /probs: Rich in a terminal, plain text otherwise.

Every function takes a Rich Console; a console without colour (piped, NO_COLOR, --plain) gets a plain rendering that
marks with characters what colour would show (token boundaries, shading). No text is parsed as Rich markup.
"""

from chatcli.inspectui.common import make_console
from chatcli.inspectui.nextview import render_reply_probs, render_step
from chatcli.inspectui.tokens import render_tokens

__all__ = ["make_console", "render_tokens", "render_step", "render_reply_probs"]
