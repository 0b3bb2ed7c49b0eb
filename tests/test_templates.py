"""Chat templates: real-world formats render as transformers renders them; hostile templates are refused or stopped."""

from __future__ import annotations

import time

import pytest

from chatcli.errors import LoadError
from chatcli.templates import CLASSIC, CLASSIC_STOP, PREAMBLE, render_chat
from chatcli.types import Message

CONVO = [
    Message("system", "Be brief."),
    Message("user", "hi"),
    Message("assistant", "hello"),
    Message("user", "what is 2+2?"),
]

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The shape of Llama-2 / Mistral-instruct templates: roles must alternate, a system message breaks that.
ALTERNATING = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
# A template with the features real ones use: namespace, loop controls, tojson, strftime_now, trim/lstrip blocks.
FEATURES = """{%- set ns = namespace(found=false) -%}
{%- for m in messages -%}
    {%- if m.role == 'system' -%}{%- set ns.found = true -%}{%- continue -%}{%- endif %}
    <{{ m.role }}>{{ m.content | tojson }}
{% endfor -%}
system={{ ns.found }} year={{ strftime_now('%Y') | length }}"""


def _hf(template: str, messages, **kw) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    dicts = [{"role": m.role, "content": m.content} for m in messages]
    return render_jinja_template(conversations=[dicts], chat_template=template, **kw)[0][0]


@pytest.mark.parametrize("template", [CHATML, FEATURES], ids=["chatml", "features"])
def test_same_text_as_transformers(template):
    ours = render_chat(template, CONVO, bos_token="<s>", eos_token="</s>").text
    assert ours == _hf(template, CONVO, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")


def test_classic_template_for_base_models():
    r = render_chat(None, CONVO, bos_token="<s>")
    assert r.plain and r.text == "Be brief.\n\nUser: hi\nAI Assistant: hello\nUser: what is 2+2?\nAI Assistant:"
    assert r.stop == CLASSIC_STOP == ("\nUser:",)
    plain = render_chat(None, CONVO[1:], bos_token=None)
    assert plain.text.startswith(PREAMBLE + "\n\nUser: hi\n")
    # A prompt file may name it, and gets the same stop strings.
    assert render_chat("classic", CONVO).stop == CLASSIC_STOP and render_chat("classic", CONVO).plain
    assert not render_chat(CHATML, CONVO).plain
    assert render_chat(CLASSIC, CONVO, add_generation_prompt=False).text.endswith("AI Assistant: hello\nUser: what is 2+2?")


def test_template_refusing_system_role_gets_it_folded():
    r = render_chat(ALTERNATING, CONVO, bos_token="<s>", eos_token="</s>")
    assert r.folded_system
    assert r.text == "<s>[INST] Be brief.\n\nhi [/INST]hello</s>[INST] what is 2+2? [/INST]"
    # Without a system message there is nothing to fold and nothing to say.
    assert not render_chat(ALTERNATING, CONVO[1:], bos_token="<s>").folded_system


def test_raise_exception_message_reaches_the_user():
    broken = [Message("user", "a"), Message("user", "b")]  # two user turns: the template refuses, folding can't help
    with pytest.raises(LoadError, match="refused the conversation: Conversation roles must alternate"):
        render_chat(ALTERNATING, broken)


def test_syntax_error_names_the_line():
    with pytest.raises(LoadError, match=r"chat template line 2: .*"):
        render_chat("ok\n{% for x in %}", CONVO)


# The public payloads: llama-cpp-python GHSA-56xg-wfcc-g829 (unsandboxed Jinja reaching os.popen through
# __subclasses__), the jinja2 str.format / |attr('format') escapes (GHSA-q2x7-8rv6-6q7h, GHSA-cpwx-vrp4-4pq7) that
# transformers guards against by requiring jinja2>=3.1.6, and transformers' namespace-dunder hardening.
ESCAPES = {
    "llama-cpp-python": "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
    "{{ x()._module.__builtins__['__import__']('os').popen('touch {MARK}').read() }}{% endif %}{% endfor %}",
    "str.format": "{{ '{0.__class__.__init__.__globals__}'.format(messages) }}",
    "attr-format": "{{ ('{0.__class__.__base__.__subclasses__}' | attr('format'))(messages) }}",
    "cycler-globals": "{{ cycler.__init__.__globals__.os.popen('touch {MARK}') }}",
    "namespace-dunder": "{% set ns = namespace(__init__=1) %}{{ ns }}",
    "mutate-messages": "{{ messages.append({'role': 'user', 'content': 'x'}) }}",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_sandbox_escapes_are_refused(name, tmp_path):
    mark = tmp_path / "pwned"
    before = list(CONVO)
    with pytest.raises(LoadError, match="unsafe chat template"):
        render_chat(ESCAPES[name].replace("{MARK}", str(mark)), CONVO)
    assert not mark.exists()
    assert CONVO == before


RUNAWAYS = {
    "nested-loops": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "doubling-concat": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling-plus": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "string-times": "{{ 'x' * 10000000000 }}",
    "huge-width": "{{ 'x' | center(10000000000) }}",
    "replace-square": "{% set ns = namespace(s='a' * 3000) %}{% for i in range(4) %}"
    "{% set ns.s = ns.s | replace('', ns.s) %}{% endfor %}",
    "output-flood": "{% for i in range(99999) %}{{ 'y' * 2000 }}{% endfor %}",
    "macro-recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "recursive-loop": "{% for x in range(2) recursive %}{% if loop.depth < 64 %}{{ loop(range(2)) }}{% endif %}{% endfor %}",
    "big-power": "{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
}


@pytest.mark.parametrize("name", sorted(RUNAWAYS))
def test_runaway_templates_are_stopped(name):
    start = time.monotonic()
    with pytest.raises(LoadError, match="unsafe chat template"):
        render_chat(RUNAWAYS[name], CONVO)
    assert time.monotonic() - start < 5


def test_long_but_honest_conversation_renders():
    long = [Message("user", "word " * 50_000), Message("assistant", "ok"), Message("user", "again")]
    assert len(render_chat(CHATML, long).text) > 250_000
