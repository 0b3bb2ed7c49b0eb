"""Chat templates: the model's own Jinja and the plain CLASSIC template for base models.

A chat template comes from a downloaded model, so it is untrusted code: it renders in chatcli.sandbox (jinja2's
immutable sandbox plus a render budget). A sandbox escape or a runaway template is LoadError("unsafe chat template: ...").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError
from jinja2.sandbox import SecurityError

from chatcli.errors import LoadError
from chatcli.sandbox import TemplateRaised, compile_sandboxed, run_sandboxed
from chatcli.types import Notice

# What a backend tells the user when render_chat folded the system prompt into the first user message.
FOLDED_SYSTEM = Notice("warning", "this model's chat template has no system role; the system prompt was put into the "
                                  "first user message")

# The plain conversation format for base models. It carries no BOS: the caller adds one as the tokenizer's config says
# (RenderedPrompt.plain tells it this template was used). The system message, if any, replaces the preamble.
PREAMBLE = "What follows is a conversation between a user and a helpful AI assistant:"
CLASSIC = (
    "{%- set ns = namespace(system='" + PREAMBLE + "') -%}"
    "{%- for m in messages if m.role == 'system' -%}{%- set ns.system = m.content -%}{%- endfor -%}"
    "{{- ns.system -}}{{- '\\n' -}}"
    "{%- for m in messages if m.role != 'system' -%}"
    "{{- '\\n' -}}{{- 'User: ' if m.role == 'user' else 'AI Assistant: ' -}}{{- m.content -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '\\nAI Assistant:' -}}{%- endif -%}"
)
CLASSIC_STOP = ("\nUser:",)
TEMPLATE_ALIASES = {"classic": CLASSIC}  # a prompt file may say `template: classic`

@dataclass(frozen=True)
class RenderedPrompt:
    """The text to tokenize, stop strings the template implies, and whether the system prompt had to be folded."""

    text: str
    stop: tuple[str, ...] = ()
    folded_system: bool = False
    plain: bool = False  # rendered with CLASSIC, which has no BOS of its own


def compile_template(source: str):
    """Compile a chat template; LoadError names the line of a syntax error."""
    try:
        return compile_sandboxed(source)
    except TemplateSyntaxError as e:
        raise LoadError(f"chat template line {e.lineno}: {e.message}; fix the template (tokenizer_config.json's "
                        "chat_template, or the prompt file's `template`)") from None
    except SecurityError as e:
        raise LoadError(f"unsafe chat template: {e}; refusing to render it") from None


def _render(source: str, context: dict[str, Any], output_cap: int) -> str:
    try:
        return run_sandboxed(compile_template(source), context, output_cap)
    except (TemplateRaised, LoadError):
        raise
    except TemplateError as e:
        raise LoadError(f"chat template failed: {e}") from None
    except Exception as e:  # a template can raise TypeError etc. from inside the sandbox
        raise LoadError(f"chat template failed: {type(e).__name__}: {e}") from None


def fold_system(messages: Sequence[dict]) -> list[dict]:
    """Messages with the system prompt moved into the first user message (for templates that refuse a system role)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}" if m["content"] else system
            return rest
    return [{"role": "user", "content": system}, *rest]


def _arguments(text: str) -> Any:
    # transformers' templates expect arguments as a mapping (Qwen's tojson, Llama's items()); text that is not a JSON
    # object stays text, which templates that concatenate strings still render.
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def message_dict(m: Any) -> dict:
    """A Message (or a dict) as transformers hands it to a chat template: tool_calls in OpenAI's function shape."""
    if isinstance(m, dict):
        return m
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        d["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                           for c in m.tool_calls]
    if m.tool_call_id is not None:
        d["tool_call_id"] = m.tool_call_id
    if getattr(m, "reasoning", ""):
        # The name Qwen3's, SmolLM3's and DeepSeek's templates read; each template decides whether to show it.
        d["reasoning_content"] = m.reasoning
    return d


def render_chat(
    template: str | None,
    messages: Sequence[Any],
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_generation_prompt: bool = True,
    tools: Sequence[dict] | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> RenderedPrompt:
    """Render MESSAGES (Message objects or role/content dicts) with TEMPLATE, or CLASSIC when it is None.

    Errors are LoadError: "unsafe chat template: ..." for sandbox escapes and runaway templates, "the chat template
    refused the conversation: MSG" when the template calls raise_exception (after one retry with the system prompt
    folded into the first user message, which sets folded_system=True so the caller can tell the user once).
    TOOLS are JSON-schema function dicts ({"type": "function", "function": {...}}), passed as transformers passes them.
    TEMPLATE_KWARGS are extra template variables, as apply_chat_template's keyword arguments (enable_thinking=False).
    """
    msgs = [message_dict(m) for m in messages]
    source = TEMPLATE_ALIASES.get(template, template) if template else CLASSIC
    plain = source == CLASSIC
    stop = CLASSIC_STOP if plain else ()
    # A whole conversation can be long; the cap only has to stop runaway growth.
    cap = 1_000_000 + 4 * sum(len(m["content"] or "") for m in msgs) + 4 * len(json.dumps(tools or []))
    context = {**(template_kwargs or {}), "bos_token": bos_token or "", "eos_token": eos_token or "",
               "add_generation_prompt": add_generation_prompt}
    if tools:
        context["tools"] = list(tools)
    try:
        return RenderedPrompt(_render(source, {**context, "messages": msgs}, cap), stop, False, plain)
    except TemplateRaised as first:
        if not any(m["role"] == "system" for m in msgs):
            raise LoadError(f"the chat template refused the conversation: {first}") from None
    try:
        return RenderedPrompt(_render(source, {**context, "messages": fold_system(msgs)}, cap), stop, True, plain)
    except TemplateRaised as e:
        raise LoadError(f"the chat template refused the conversation: {e}") from None
