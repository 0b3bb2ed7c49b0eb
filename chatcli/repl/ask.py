"""`chatcli ask`: one question (plus piped stdin and attached files), one streamed answer, or one JSON object."""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass, field

from chatcli.errors import BackendError, ChatcliError, UsageError
from chatcli.repl.boot import Options, cancel_on_sigint, load_settings, model_label, open_backend, sampling
from chatcli.repl.inputs import DEFAULT_MAX_INPUT, build_question, check_size, context_cap, parse_size
from chatcli.ui import UI


@dataclass
class Answer:
    """What came back: the raw text (unsanitised, for --json and the store) and the last chunk's facts."""

    text: str = ""
    reasoning: str = ""  # what a thinking model thought before the answer, kept apart from it
    finish_reason: str | None = None
    stats: object = None
    error: ChatcliError | None = None
    probs: list = field(default_factory=list)  # per-token records when the backend reports them (/probs on)
    notices: list = field(default_factory=list)  # what the backend said on the chunks (a session passes these on too)


def consume(chunks, view, cancel: threading.Event, before=None, on_reasoning=None) -> Answer:
    """Stream CHUNKS into VIEW; a backend error mid-stream keeps the partial text and is returned, not raised.

    BEFORE, if given, runs once when the first chunk arrives, ahead of its text (notices the conversation makes
    while it prepares the turn, such as dropped exchanges). ON_REASONING(text), if given, hears the reasoning as it
    streams (VIEW only ever gets the answer).
    """
    answer = Answer()
    with cancel_on_sigint(cancel):
        try:
            with view:
                for chunk in chunks:
                    if before is not None:
                        view.settle()  # stop the spinner before printing anything else
                        before()
                        before = None
                    if chunk.reasoning:
                        answer.reasoning += chunk.reasoning
                        if on_reasoning is not None:
                            on_reasoning(chunk.reasoning)
                    answer.text += chunk.text
                    view.feed(chunk.text)
                    answer.probs.extend(chunk.probs)
                    answer.notices.extend(chunk.notices)
                    if chunk.finish_reason is not None:
                        answer.finish_reason, answer.stats = chunk.finish_reason, chunk.stats
        except KeyboardInterrupt:  # a second Ctrl-C while the backend did not stop
            answer.finish_reason = "interrupted"
        except BackendError as e:
            answer.finish_reason, answer.error = "error", e
        finally:
            # Close the stream now (a broken pipe leaves it suspended), so its cleanup runs while the backend is open.
            getattr(chunks, "close", lambda: None)()
    if answer.finish_reason is None:
        answer.finish_reason = "interrupted" if cancel.is_set() else "stop"
    return answer


def to_json(answer: Answer, *, model: str, prompt: str | None, params, backend: str) -> dict:
    """The --json object (schema in the README)."""
    s = answer.stats
    out = {
        "text": answer.text,
        "reasoning": answer.reasoning,
        "model": model,
        "backend": backend,
        "prompt": prompt,
        "params": params.to_dict(),
        "usage": {
            "prompt_tokens": getattr(s, "prompt_tokens", 0),
            "cached_tokens": getattr(s, "cached_tokens", 0),
            "completion_tokens": getattr(s, "completion_tokens", 0),
        },
        "timings": {k: round(getattr(s, k, 0.0), 6) for k in ("ttft_s", "prompt_tps", "decode_tps", "total_s")},
        "finish_reason": answer.finish_reason,
    }
    if getattr(s, "estimated", False):
        out["usage"]["estimated"] = True
    if answer.error is not None:
        out["error"] = str(answer.error)
    return out


def run_ask(opts: Options, *, question: str, files: list[str], as_json: bool, raw: bool,
            max_input: str | None = None, structured: tuple[bool, str | None] = (False, None),
            show_thinking: bool = False) -> int:
    """Answer one question; return the exit code (a backend failure after partial output is 4). MAX_INPUT (a size
    such as 8M) caps the question with its stdin and files; by default the cap is what the model's context holds.
    STRUCTURED is (--json-object, --schema): the answer is constrained to a JSON object or to the schema."""
    try:
        return _ask(opts, question=question, files=files, as_json=as_json, raw=raw, max_input=max_input,
                    fmt=structured_format(*structured), show_thinking=show_thinking)
    except BrokenPipeError:
        # The reader left (`| head -c 20`). Typer would turn this into exit 1; a closed pipe is not a failure.
        # Point stdout at /dev/null so the interpreter's last flush stays silent too.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


def structured_format(json_object: bool, schema: str | None) -> dict | None:
    """The response format --json-object or --schema asks for (checked before a model loads), or None."""
    from chatcli.structured import JSON_OBJECT, read_schema, schema_format

    if json_object and schema is not None:
        raise UsageError("--json-object and --schema: give one (a schema's JSON is an object when it says so)")
    if schema is not None:
        return schema_format(read_schema(schema))
    return JSON_OBJECT if json_object else None


def _ask(opts: Options, *, question: str, files: list[str], as_json: bool, raw: bool, max_input: str | None,
         fmt: dict | None = None, show_thinking: bool = False) -> int:
    cap = parse_size(max_input) if max_input is not None else None
    text = build_question(question, files, cap=cap or DEFAULT_MAX_INPUT)  # read before a model loads: fails fast
    s = load_settings(opts)
    ui = UI(plain=opts.plain or as_json)
    params = sampling(s)
    from chatcli.repl import tools as ask_tools

    tools = None if raw else ask_tools.ask_registry(s, opts)  # before the model loads: a bad -T fails fast
    try:
        backend = open_backend(s, opts)
    except BaseException:
        if tools is not None:
            tools.close()
        raise
    cancel = threading.Event()
    prompt_name, conv = None, None
    try:
        if fmt is not None:
            from chatcli.structured import require_support

            require_support(backend, "stream_completion" if raw else "stream_chat")
        if cap is None:  # the default cap is what the context can hold, known now the model is loaded
            context = backend.context_length()
            check_size(text, context_cap(context), f" (the model's context is {context} tokens)")
        if raw:
            if opts.system or opts.prompt:
                raise UsageError("--raw sends the text as given; drop --system/--prompt, or drop --raw")
            chunks = backend.stream_completion(text, params, cancel=cancel, **({"response_format": fmt} if fmt else {}))
        else:
            from chatcli.repl.conversation import open_conversation, take_notices

            conv = open_conversation(s, opts, backend, ui)
            conv.tools = tools.schemas() if tools is not None else None
            prompt_name, params, cancel = conv.prompt.name, conv.params, conv.cancel
            conv.response_format = fmt
            chunks = conv.send(text)

            def notices() -> None:  # to stderr: stdout carries only the answer
                for notice in take_notices(conv):
                    sys.stderr.write(f"chatcli: {notice}\n")
        view = _NullView() if as_json else ui.reply(json=fmt is not None)
        thinking = _ThinkingToStderr() if show_thinking and not as_json else None
        answer = consume(chunks, view, cancel, before=None if raw else notices, on_reasoning=thinking)
        if tools is not None:
            answer = ask_tools.ask_follow(tools, opts, conv, answer,
                                          lambda more: consume(more, view, cancel, on_reasoning=thinking))
        if thinking is not None:
            thinking.end()
        if fmt is not None and answer.finish_reason == "length" and answer.error is None:
            # The mask keeps the JSON valid only while it runs: cut by max_tokens, the text is a fragment that no
            # caller should parse as the answer.
            answer.error = ChatcliError(f"the reply reached max_tokens ({params.max_tokens}) before the JSON was "
                                        "complete (what came is printed as it is); raise --max-tokens")
        if raw:  # no conversation to pass the backend's notices on
            for notice in dict.fromkeys(answer.notices):
                sys.stderr.write(f"chatcli: {notice.text}\n")
        else:
            notices()  # those that came after the first chunk
    finally:
        if conv is not None and conv.history is not None:
            conv.history.close()
        backend.close()
        if tools is not None:
            tools.close()
    if as_json:
        sys.stdout.write(json.dumps(to_json(answer, model=model_label(s), prompt=prompt_name, params=params,
                                            backend=getattr(backend, "name", s.get("backend"))), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif not ui.plain:
        ui.stats(answer.stats)
    if answer.error is not None:
        raise answer.error
    return 130 if answer.finish_reason == "interrupted" else 0


class _ThinkingToStderr:
    """--show-thinking: the reasoning streams to stderr (sanitised, as every model output shown), stdout keeps only
    the answer."""

    def __init__(self):
        from chatcli.ui.sanitize import sanitize

        self._clean, self._open = sanitize, False

    def __call__(self, text: str) -> None:
        self._open = True
        sys.stderr.write(self._clean(text))
        sys.stderr.flush()

    def end(self) -> None:
        if self._open:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _NullView:
    """--json prints nothing until the end."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def feed(self, text: str) -> None:
        pass

    def settle(self) -> None:
        pass
