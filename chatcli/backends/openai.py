"""The openai backend: any server that speaks the OpenAI API (vLLM, llama.cpp, Ollama, chatcli serve), via the official SDK."""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Iterator

import openai

from chatcli.backends.openai_errors import describe
from chatcli.backends.openai_wire import CappedTransport, ServerMisbehaved, misbehaved
from chatcli.errors import BackendError, UsageError
from chatcli.types import Chunk, Message, SamplingParams, Stats, ToolCallDelta

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CONTEXT = 4096  # when neither the config nor the server says
FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}  # anything else (content_filter) ends as "stop"


def wire_message(m: Message) -> dict:
    """M as the OpenAI API writes a message: an assistant's tool calls, a tool result's call id."""
    out: dict = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                             for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")  # DeepSeek and llama.cpp; vLLM and LM Studio; ollama


def _reasoning_of(choice):
    """A streamed choice's reasoning text, under whichever name the server uses (the SDK keeps unknown keys)."""
    delta = getattr(choice, "delta", None)
    if delta is None:
        return None
    for key in REASONING_KEYS:
        value = getattr(delta, key, None)
        if value:
            return value
    return None


def estimate_tokens(text: str) -> int:
    """A rough token count for servers that cannot tokenize: about four characters per token."""
    return math.ceil(len(text) / 4)


def _number(value, key: str, kind=float):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"openai backend: {key} must be a number, got {value!r}; fix it in the flag or [backends.NAME]") from None
    if number < 0:
        raise UsageError(f"openai backend: {key} must be >= 0, got {value!r}")
    return number


def _format_request(response_format: dict | None) -> dict:
    """The body keys for a structured-output format, for extra_body: OpenAI's response_format, or a grammar as the
    `grammar` key llama.cpp and chatcli serve read. Through extra_body because the SDK's completions.create has no
    response_format parameter, while servers (ours, llama.cpp, vLLM) read it on both routes."""
    if not response_format:
        return {}
    if response_format.get("type") == "grammar":
        return {"grammar": response_format["grammar"]}
    return {"response_format": response_format}


def _cut_on_cancel(stream, cancel: threading.Event, done: threading.Event) -> None:
    """When CANCEL is set, shut the stream's socket so a read blocked on a silent server returns at once.

    Closing the response from another thread does not wake a blocked recv(); shutdown() does.
    """
    import socket

    while not done.wait(0.05):
        if cancel.is_set():
            try:
                sock = stream.response.extensions["network_stream"].get_extra_info("socket")
                sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, KeyError, OSError):
                pass  # no socket to cut: the loop notices the cancel at the next event
            return


class OpenAIBackend:
    """Streams chat and completions from an OpenAI-compatible server; stateless, the server keeps its own cache."""

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        retries: int = 2,
        backoff: float = 0.5,
        context_length: int | None = None,
    ):
        self.base_url = (base_url or os.environ.get("CHATCLI_OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise UsageError(f"openai backend: base_url must start with http:// or https://, got {self.base_url!r}")
        key_env = api_key_env or "OPENAI_API_KEY"
        # Local servers need no key; the SDK insists on one, and a placeholder is never a secret.
        self._api_key = api_key or os.environ.get(key_env) or ""
        self.connect_timeout = _number(connect_timeout, "connect_timeout")
        self.read_timeout = _number(read_timeout, "read_timeout")
        self.retries = int(_number(retries, "retries", int))
        self.backoff = _number(backoff, "backoff")
        self._context = int(_number(context_length, "context_length", int)) if context_length else None
        self.model: str | None = None
        self._client = None
        self._http = None
        self._can_tokenize: bool | None = None  # unknown until the first count_tokens
        self.tokens_estimated = False  # True once count_tokens had to estimate; /stats says so
        self.think: bool | None = None  # --think/--no-think, /set think: the default stream_chat's keyword overrides

    def __repr__(self) -> str:  # never the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    # -- plumbing -------------------------------------------------------------------------------------------

    @property
    def client(self) -> openai.OpenAI:
        """The SDK client, made on first use; retries are ours (only before a token arrived), so the SDK's are off."""
        if self._client is None:
            import httpx

            timeout = openai.Timeout(self.read_timeout, connect=self.connect_timeout)
            http = self._http = httpx.Client(transport=CappedTransport(self.base_url),
                                             timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout))
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key or "no-key",
                                         timeout=timeout, max_retries=0, http_client=http)
        return self._client

    def _scrub(self, text: str) -> str:
        """The message with the API key blanked, in case a server echoes it back."""
        return text.replace(self._api_key, "***") if len(self._api_key) >= 4 else text

    def _error(self, e: Exception, *, partial: str = "", after_retries: int = 0) -> BackendError:
        """A BackendError naming the server, what went wrong and the fix; never the key; the partial text attached."""
        bad = misbehaved(e)
        msg = str(bad) if bad is not None else describe(e, self.base_url, self.connect_timeout, self.read_timeout,
                                                        after_retries)
        if partial:
            msg += f"; the partial reply ({len(partial)} characters) is kept, marked incomplete"
        err = BackendError(self._scrub(" ".join(msg.split())))
        err.partial_text = partial
        return err

    def _delay(self, attempt: int, e: openai.APIStatusError) -> float:
        """Exponential backoff with jitter, or the server's Retry-After when it is sooner than a minute."""
        retry_after = e.response.headers.get("retry-after") if e.response is not None else None
        try:
            if retry_after is not None and 0 <= float(retry_after) <= 60:
                return float(retry_after)
        except ValueError:
            pass
        return self.backoff * (2**attempt) * (0.75 + random.random() / 2)

    def _open(self, create, cancel: threading.Event | None, **request):
        """Start a streaming request; retry 429 and 5xx with backoff (nothing has streamed yet, so it is safe)."""
        for attempt in range(self.retries + 1):
            try:
                return create(**request)
            except openai.APIStatusError as e:
                retryable = e.status_code == 429 or e.status_code >= 500
                if not retryable or attempt == self.retries:
                    raise self._error(e, after_retries=attempt) from e
                if cancel is not None and cancel.wait(self._delay(attempt, e)):
                    return None
                if cancel is None:
                    time.sleep(self._delay(attempt, e))
            except openai.APIError as e:
                raise self._error(e) from e
        raise AssertionError("unreachable")

    def _require_model(self) -> str:
        if not self.model:
            raise UsageError("openai backend: no model chosen; pass --model NAME (see the server's /v1/models)")
        return self.model

    @staticmethod
    def _sampling(params: SamplingParams) -> tuple[dict, dict]:
        """OpenAI's own parameters, and our extras as extra_body (sent only when they differ from off)."""
        request = {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens}
        if params.stop:
            request["stop"] = list(params.stop)
        if params.seed is not None:
            request["seed"] = params.seed
        extra: dict = {}
        if params.top_k:
            extra["top_k"] = params.top_k
        if params.min_p:
            extra["min_p"] = params.min_p
        if params.repeat_penalty != 1.0:
            # llama.cpp and chatcli read repeat_penalty, vLLM reads repetition_penalty; each ignores the other.
            extra["repeat_penalty"] = extra["repetition_penalty"] = params.repeat_penalty
        return request, extra

    def _stream(self, create, text_of, prompt_estimate: int, params: SamplingParams,
                cancel: threading.Event | None, calls_of=None, reasoning_of=None, more_extra=None,
                **request) -> Iterator[Chunk]:
        """Yield text as it arrives; the last chunk has finish_reason and stats. Errors keep the partial reply.

        calls_of(choice): the choice's tool-call deltas (chat only), passed on as Chunk.tool_calls;
        reasoning_of(choice): its reasoning text, passed on as Chunk.reasoning; more_extra: more body keys."""
        sampling, extra = self._sampling(params)
        extra.update(more_extra or {})
        t0 = time.perf_counter()
        stream = self._open(create, cancel, model=self._require_model(), stream=True,
                            stream_options={"include_usage": True}, extra_body=extra or None, **sampling, **request)
        parts: list[str] = []
        thoughts: list[str] = []  # reasoning costs tokens too: the estimate without usage counts it
        finish = usage = None
        ttft = 0.0
        capped = False
        done = threading.Event()
        if stream is None:
            finish = "interrupted"
        else:
            if cancel is not None:
                threading.Thread(target=_cut_on_cancel, args=(stream, cancel, done), daemon=True).start()
            try:
                for event in stream:
                    if cancel is not None and cancel.is_set():
                        finish = "interrupted"
                        break
                    usage = self._usage(event) or usage
                    for choice in self._choices(event):
                        text = text_of(choice)
                        if text is not None and not isinstance(text, str):
                            raise self._shape(f"its text is {type(text).__name__}, not a string")
                        thought = reasoning_of(choice) if reasoning_of is not None else None
                        if thought is not None and not isinstance(thought, str):
                            raise self._shape(f"its reasoning is {type(thought).__name__}, not a string")
                        if (text or thought) and len(parts) >= params.max_tokens:
                            # a server may ignore max_tokens and stream forever; each event carries about one
                            # token, so text past the cap ends the reply here (finish and usage events still count)
                            finish, capped = "length", True
                            break
                        calls = calls_of(choice) if calls_of is not None else ()
                        if text or calls or thought:
                            ttft = ttft or time.perf_counter() - t0
                            parts.append(text or "")
                            thoughts.append(thought or "")
                            yield Chunk(text or "", tool_calls=calls, reasoning=thought or "")
                        reason = getattr(choice, "finish_reason", None)
                        if reason:
                            finish = FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
                    if capped:
                        break
            except ServerMisbehaved as e:
                raise self._error(e, partial="".join(parts)) from e
            except (openai.APIError, ValueError) as e:
                if cancel is None or not cancel.is_set():
                    raise self._error(e, partial="".join(parts)) from e
                finish = "interrupted"  # our own cut (see _cut_on_cancel), not the server's fault
            finally:
                done.set()
                stream.close()
            if finish is None and cancel is not None and cancel.is_set():
                finish = "interrupted"
            if finish is None:
                raise self._error(ConnectionError("the stream ended before the reply was finished (no finish_reason)"),
                                  partial="".join(parts))
        total = time.perf_counter() - t0
        text = "".join(parts)
        estimated = usage is None
        prompt_tokens = usage.prompt_tokens if usage else prompt_estimate
        completion_tokens = usage.completion_tokens if usage else estimate_tokens(text) + estimate_tokens("".join(thoughts))
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        stats = Stats(
            prompt_tokens=prompt_tokens,
            cached_tokens=int(getattr(details, "cached_tokens", 0) or 0),
            completion_tokens=completion_tokens,
            ttft_s=ttft,
            prompt_tps=prompt_tokens / ttft if ttft else 0.0,
            decode_tps=(completion_tokens - 1) / (total - ttft) if total > ttft and completion_tokens > 1 else 0.0,
            total_s=total,
            estimated=estimated,
        )
        yield Chunk("", finish_reason=finish, stats=stats)

    def _shape(self, what: str) -> ServerMisbehaved:
        return ServerMisbehaved(f"{self.base_url} sent an answer of the wrong shape ({what}); "
                                f"is --base-url an OpenAI-compatible /v1 endpoint?")

    def _choices(self, event) -> list:
        """The event's choices, checked: the SDK builds its objects without validating what the server sent."""
        if not isinstance(event, openai.BaseModel):
            raise self._shape(f"an event is a JSON {type(event).__name__}, not an object")
        choices = getattr(event, "choices", None)
        if choices is None:
            if self._usage(event) is not None:
                return []  # the include_usage event may leave choices out
            raise self._shape("an event has no 'choices'")
        if not isinstance(choices, list):
            raise self._shape(f"'choices' is a {type(choices).__name__}, not a list")
        for choice in choices:
            if not isinstance(choice, openai.BaseModel):
                raise self._shape(f"a choice is {type(choice).__name__}, not an object")
            d = getattr(choice, "delta", None)
            if d is not None and not isinstance(d, openai.BaseModel):
                raise self._shape(f"a delta is {type(d).__name__}, not an object")
        return choices

    def _usage(self, event):
        usage = getattr(event, "usage", None)
        if usage is None:
            return None
        ok = isinstance(usage, openai.BaseModel) and all(
            isinstance(getattr(usage, k, None), int) for k in ("prompt_tokens", "completion_tokens"))
        if not ok:
            raise self._shape("'usage' lacks integer prompt_tokens and completion_tokens")
        return usage

    # -- the Backend protocol ------------------------------------------------------------------------------

    def _listed(self) -> list:
        """The /models entries, each checked to carry a string id."""
        try:
            entries = list(self.client.models.list())
        except (openai.APIError, ValueError) as e:
            raise self._error(e) from e
        except (TypeError, AttributeError) as e:  # the SDK choking on a page that is not {"data": [...]}
            raise self._shape("/models is not {\"data\": [a list of models]}") from e
        if not all(isinstance(getattr(m, "id", None), str) for m in entries):
            raise self._shape("/models lists entries without a string 'id'")
        return entries

    def models(self) -> list[str]:
        """Model ids the server offers (/v1/models)."""
        return sorted(m.id for m in self._listed())

    def load(self, model: str) -> None:
        """Choose the server's model; nothing is downloaded and the server is not contacted until the first reply."""
        self.model = model

    def stream_chat(self, messages: list[Message], params: SamplingParams, *, chat_template=None,
                    cancel: threading.Event | None = None, tools: list[dict] | None = None,
                    response_format: dict | None = None, tool_choice: str = "auto",
                    think: bool | None = None) -> Iterator[Chunk]:
        """Stream a chat reply; the server applies its own chat template (chat_template is ignored).

        TOOLS (OpenAI function dicts) go to the server; its calls come back as Chunk.tool_calls deltas.
        RESPONSE_FORMAT goes to the server as response_format (a grammar as llama.cpp's `grammar`). The server's
        reasoning comes back as Chunk.reasoning. THINK False asks the server to render with enable_thinking=False
        (vLLM, llama.cpp and chatcli serve read chat_template_kwargs); None leaves it be."""
        request: dict = {"tools": tools} if tools else {}
        if tools and tool_choice != "auto":
            request["tool_choice"] = tool_choice
        think = self.think if think is None else think
        more = _format_request(response_format)
        if think is not None:
            more["chat_template_kwargs"] = {"enable_thinking": think}
        yield from self._stream(self.client.chat.completions.create,
                                lambda c: getattr(c.delta, "content", None) if getattr(c, "delta", None) else None,
                                self._estimate(messages), params, cancel, calls_of=self._tool_deltas,
                                reasoning_of=_reasoning_of, more_extra=more,
                                messages=[wire_message(m) for m in messages], **request)

    def _tool_deltas(self, choice) -> tuple[ToolCallDelta, ...]:
        """A streamed choice's tool-call pieces, checked (the SDK does not validate what the server sent)."""
        delta = getattr(choice, "delta", None)
        pieces = getattr(delta, "tool_calls", None) if delta is not None else None
        if not pieces:
            return ()
        if not isinstance(pieces, list):
            raise self._shape("'tool_calls' is not a list")
        out = []
        for p in pieces:
            fn = getattr(p, "function", None)
            index, name = getattr(p, "index", 0), getattr(fn, "name", None)
            arguments, call_id = getattr(fn, "arguments", None) or "", getattr(p, "id", None)
            if not isinstance(index, int) or not all(isinstance(v, (str, type(None))) for v in (name, call_id)) \
                    or not isinstance(arguments, str):
                raise self._shape("a tool call lacks an integer index or has non-string id, name or arguments")
            out.append(ToolCallDelta(index, id=call_id, name=name, arguments=arguments))
        return tuple(out)

    def stream_completion(self, prompt: str, params: SamplingParams, *, cancel: threading.Event | None = None,
                          response_format: dict | None = None) -> Iterator[Chunk]:
        """Stream raw text after PROMPT through /v1/completions (no template)."""
        yield from self._stream(self.client.completions.create, lambda c: getattr(c, "text", None),
                                estimate_tokens(prompt),
                                params, cancel, more_extra=_format_request(response_format), prompt=prompt)

    @staticmethod
    def _estimate(messages: list[Message]) -> int:
        return sum(estimate_tokens(m.content) + 4 for m in messages)  # ~4 tokens of role markers per message

    def _tokenize(self, messages: list[Message]) -> dict | None:
        """POST /tokenize at the server root (vLLM and chatcli serve); None when the server has no such endpoint."""
        import httpx

        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        body = {"model": self.model, "messages": [{"role": m.role, "content": m.content} for m in messages]}
        self.client  # noqa: B018 -- makes the capped HTTP client
        try:
            r = self._http.post(f"{root}/tokenize", json=body, headers=headers)
            data = r.json() if r.status_code == 200 else None
        except httpx.ReadTimeout as e:
            # a silent server: the reply would wait as long again, and the message would name half the wait
            raise self._error(openai.APITimeoutError(request=e.request)) from e
        except (httpx.HTTPError, ValueError, ServerMisbehaved):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("count"), int) else None

    def count_tokens(self, messages: list[Message], *, chat_template=None) -> int:
        """The server's count when it can tokenize (/tokenize), else an estimate (and tokens_estimated becomes True)."""
        if self._can_tokenize is not False:
            data = self._tokenize(messages)
            self._can_tokenize = data is not None
            if data is not None:
                if self._context is None and isinstance(data.get("max_model_len"), int):
                    self._context = data["max_model_len"]
                return data["count"]
        self.tokens_estimated = True
        return self._estimate(messages)

    def context_length(self) -> int:
        """The config's context_length, else what the server reports (max_model_len), else 4096."""
        if self._context is None:
            self._context = DEFAULT_CONTEXT
            try:
                entries = self._listed()
            except BackendError as e:
                if misbehaved(e) is not None or isinstance(e.__cause__, openai.APITimeoutError):
                    # a server that answers garbage, or nothing at all, will not stream a reply either; waiting
                    # for it again would add read timeouts up past the one the message names
                    raise
                entries = []  # no /models (404) or unreachable: the first reply reports the latter properly
            for m in entries:
                if m.id == self.model or self.model is None:
                    extra = m.model_extra or {}
                    meta = extra.get("meta") if isinstance(extra.get("meta"), dict) else {}
                    found = extra.get("max_model_len") or meta.get("n_ctx_train") or extra.get("context_length")
                    if isinstance(found, int) and found > 0:
                        self._context = found
                    break
        return self._context

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None
