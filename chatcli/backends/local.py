"""The local backend: our engine, kept loaded for the session, reusing its KV cache across turns."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from chatcli.backends import cpuload  # imported first thing: it opens the window default_threads() measures over
from chatcli.errors import UsageError
from chatcli.templates import FOLDED_SYSTEM
from chatcli.types import Chunk, Message, Notice, SamplingParams


def default_threads() -> int:
    """Torch threads for threads=0: the cores this process may use, less those other work keeps busy, at least one.

    Measured on the 2-core target: when the other core is busy, every parallel region waits for a descheduled
    worker thread, and two threads decode several times slower than one (an int4 matmul took 8 ms instead of 0.14);
    on an idle machine two threads decode SmolLM2 about 1.4x faster than one (bfloat16: 25 against 35 ms a token).
    Busy cores come from CPU time (cpuload), not the load average, which reads 1.0 on that machine when idle.
    """
    import os

    from chatcli.engine import cpu

    cores = cpu.usable_cores()
    busy = cpuload.other_busy_cores()
    if busy is None:  # no /proc/stat: the load average is the next best guess
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def _free_memory() -> int:
    """Bytes of memory available now (Linux and macOS report it through sysconf); a large number where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _decoding_eagerly(reason: str) -> Notice:
    """The compiled decode step is not used, and why (the chat goes on, only slower)."""
    return Notice("warning", f"compiled decode step: {reason}; decoding without it")


def _stale_stored_weights(folder: Path, quant: str, dtype) -> Notice | None:
    """A notice when `chatcli models quantize` stored this model's weights but the file no longer fits (other weights,
    chatcli, torch or CPU): the load quantized them again, which costs time at every start until remade."""
    from chatcli.engine import quantstore

    state = quantstore.status(folder, quant, dtype)
    if state not in ("stale", "unreadable"):
        return None
    return Notice("warning", f"the stored {quant} weights of {folder.name} are {state}, so they were quantized at load; "
                             f"`chatcli models quantize {folder.name} {quant}` stores them again")


BUILDING = Notice("info", "compiling the decode step for this machine, once (about a minute for a small model) ...")
COMPILED_IN_USE = Notice("info", "the compiled decode step is in use from this reply on")


class LocalBackend:
    """Runs chatcli's own transformer on the CPU."""

    name = "local"

    def __init__(self, models_dir=None, dtype: str = "auto", quant: str = "none", compile: str = "auto", threads: int = 0):
        self.models_dir = models_dir
        self.dtype = dtype
        self.quant = quant
        self.compile = compile
        self.threads = threads
        self.model = self.tokenizer = None
        self.model_name: str | None = None
        self.model_path: Path | None = None
        self.compiled = "eager"  # after load: "aot", "jit" or "eager" (engine.compile.use)
        self._pending_package: Path | None = None  # a compiled step being built in the background (auto mode)
        self._threads_before_build = 0  # torch threads to restore when that build is done
        self.want_probs = False  # /probs on: each Chunk.probs lists its tokens' probability records
        # Thinking models: think None follows the template's default, False renders it with enable_thinking=False;
        # think_budget ends reasoning after that many tokens. stream_chat's keywords override both per reply.
        self.think: bool | None = None
        self.think_budget: int | None = None
        self._told_no_switch = False
        # Where notices go while no reply streams (loading; the caller may set it); without it they wait for the next
        # reply's first chunk, as notices raised during a reply do.
        self.on_notice: Callable[[Notice], None] | None = None
        self._pending: list[Notice] = []
        # One engine, one cache: concurrent callers take turns, unless serve_parallel gave them a batch engine.
        self.lock = threading.Lock()
        self._batch = None  # engine.batch.BatchEngine, when serving several requests at once
        self._threads_before_batch = 0

    # -- protocol ---------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Models in the store."""
        from chatcli import settings

        root = settings.models_dir(self.models_dir)
        return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []

    def load(self, model: str) -> None:
        """Load MODEL (a store name or a folder) once; later calls with the same model are free."""
        from chatcli.store.resolve import resolve_model

        path = resolve_model(model, self.models_dir)
        if self.model is not None and path == self.model_path:
            return
        # Another model's background build (a /model switch) is no longer this backend's to wait for; loading sets
        # the thread count afresh.
        self._pending_package, self._threads_before_build = None, 0
        from concurrent.futures import ThreadPoolExecutor

        from chatcli.engine.config import ModelConfig
        from chatcli.engine.tokenizer import load_tokenizer

        # The tokenizer needs no torch, and the tokenizers library parses outside the GIL: it loads while torch
        # imports, which takes a second anyway (0.1 s of a cold `chatcli ask` for SmolLM2).
        config = ModelConfig.from_folder(path)
        with ThreadPoolExecutor(max_workers=1) as pool:
            tokenizer_future = pool.submit(load_tokenizer, path, config.vocab_size)
            model_obj = self._load_weights(path, config)
            tokenizer = tokenizer_future.result()
        self.model, self.tokenizer = model_obj, tokenizer
        self.model_path, self.model_name = path, model if not Path(model).is_dir() else path.name

    def compile_in_background(self) -> bool:
        """Under `--compile auto` with no stored compiled step for this model: start building one in a separate
        process at idle priority; replies switch to it once it is ready. Whether a build started; a notice says what
        happened (a one-shot `ask` never calls this: its process ends before a build would)."""
        if (self.compile or "auto") != "auto" or self.compiled != "eager" or self.model is None or self._pending_package:
            return False
        from chatcli import settings
        from chatcli.engine import background

        dtype = str(self.model.compute_dtype).removeprefix("torch.")  # as resolved here, so the builder loads the same
        try:
            package = background.start(self.model, self.model_path, settings.cache_dir() / "compiled", dtype, self.quant or "none")
        except background.ShortOfMemory as e:
            self._notify(Notice("warning", f"not compiling the decode step in the background: {e}; replies stay "
                                           "uncompiled (`--compile on` builds it in the foreground)"))
            return False
        if package is None:
            return False
        self._pending_package = package
        # The build keeps a core busy, even at idle priority: measured on 2 cores, decoding on both fell from 30 to
        # 1.4-7 tok/s during a build (each parallel region waits for the worker on the builder's core), and on one
        # it stayed at 20-30. So the chat leaves that core to the build until the step is ready.
        import torch

        self._threads_before_build = torch.get_num_threads()
        torch.set_num_threads(max(1, self._threads_before_build - 1))
        self._notify(Notice("info", "compiling the decode step in the background, at idle priority (about a minute, "
                                    "once); replies switch to it when it is ready"))
        return True

    def _load_weights(self, path: Path, config):
        """The model in PATH (whose ModelConfig is CONFIG) with this backend's threads, dtype, quantization and
        compile mode applied."""
        from chatcli.engine.torchimport import import_torch

        torch = import_torch()
        from chatcli import settings
        from chatcli.engine import compile as compiling
        from chatcli.engine.loader import load_model
        from chatcli.engine.quant import MODES

        torch.set_num_threads(int(self.threads) or default_threads())
        quant = self.quant or "none"
        if quant not in MODES:
            raise UsageError(f"--quant {quant!r} is not supported; use one of {', '.join(MODES)}")
        mode = self.compile or "auto"
        if mode not in compiling.MODES:
            raise UsageError(f"--compile {self.compile!r} is not supported; use one of {', '.join(compiling.MODES)}")
        # In-process torch.compile (the fallback for what the ahead-of-time path does not cover) packs the weights
        # itself, so it gets plain ones; everything else gets them prepacked (quant "none") or quantized.
        from chatcli.engine.loader import resolve_dtype

        jit = mode == "on" and not compiling.aot_supported_config(quant, config, resolve_dtype(self.dtype))
        model_obj = load_model(path, self.dtype, quant=None if jit and quant == "none" else quant)
        for note in model_obj.load_notes:  # what the load chose for this CPU (engine/cpu.py), once per load
            self._notify(Notice("warning", note))
        if quant != "none" and model_obj.quantized_from is None:
            self._notify(_stale_stored_weights(path, quant, model_obj.compute_dtype))
        try:
            self.compiled = compiling.use(model_obj, mode, path, settings.cache_dir() / "compiled",
                                          on_build=lambda: self._notify(BUILDING))
        except compiling.CompileError as e:  # a missing C++ compiler or a broken file must not stop the chat: it only runs slower
            self._notify(_decoding_eagerly(str(e)))
            self.compiled = "eager"
        return model_obj

    def suggested_prompt(self) -> str | None:
        """The prompt the store recorded for this model (chatcli.json), else `classic` for a model without a chat template."""
        import json

        self._need_model()
        try:
            meta = json.loads((self.model_path / "chatcli.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        prompt = meta.get("prompt") if isinstance(meta, dict) else None
        if isinstance(prompt, str) and prompt:
            return prompt
        return None if self.tokenizer.chat_template else "classic"

    def context_length(self) -> int:
        """The context the cache was sized for."""
        self._need_model()
        return self.model.max_seq_len

    def count_tokens(self, messages: list[Message], *, chat_template: str | None = None) -> int:
        """Tokens of the rendered conversation, with the generation prompt."""
        return len(self._chat_ids(messages, chat_template)[0])

    def stream_chat(self, messages: list[Message], params: SamplingParams, *, chat_template: str | None = None, cancel=None,
                    tools: list[dict] | None = None, response_format: dict | None = None,
                    tool_choice: str = "auto", think: bool | None = None,
                    think_budget: int | None = None) -> Iterator[Chunk]:
        """Render with the model's chat template (or the classic one for base models), then generate.

        With TOOLS (JSON-schema function dicts) the template shows them to the model, and calls in the format the
        template teaches come back as Chunk.tool_calls deltas (finish_reason "tool_calls") instead of text.
        TOOL_CHOICE "required": the reply is one call of one of TOOLS, its arguments masked to the tool's schema.
        RESPONSE_FORMAT (chatcli.structured's checked format) constrains the reply to JSON, a schema or a grammar.
        A thinking model's reasoning comes back as Chunk.reasoning, apart from the answer in Chunk.text; THINK and
        THINK_BUDGET (None: this backend's think / think_budget) turn it off or cut it short.
        """
        from chatcli import reasoning

        template = chat_template or (self.tokenizer.chat_template if self.tokenizer else None)
        forced = bool(tools) and tool_choice == "required"
        if forced and response_format:
            raise UsageError("tool_choice \"required\" and response_format cannot be combined: the reply is a tool call")
        if response_format:
            from chatcli.structured import check_stops

            check_stops(response_format, params.stop)
        think = self.think if think is None else think
        budget = self.think_budget if think_budget is None else think_budget
        ids, rendered = self._chat_ids(messages, chat_template, tools, think)
        stops = tuple(s for s in rendered.stop if s not in params.stop)
        params = params.with_(stop=tuple(params.stop) + stops) if stops else params
        if rendered.folded_system:
            self._pending.append(FOLDED_SYSTEM)
        markers = self.reasoning_markers(chat_template)
        thinking = markers is not None and reasoning.opens_in_prompt(rendered.text, markers)
        if markers is not None and think is False and not reasoning.supports_switch(template):
            if not self._told_no_switch:
                self._told_no_switch = True
                self._pending.append(reasoning.CANNOT_TURN_OFF)
        processors = list(self._call_constraint(template, tools) if forced else self._constraints(response_format))
        if markers is not None and budget is not None and think is not False:
            enc = self.tokenizer.encode
            processors.append(reasoning.ThinkingBudget(budget, enc(markers.open), enc(markers.close), thinking,
                                                       markers, self.tokenizer.decode))
        chunks = self._generate(ids, params, cancel, processors)
        if markers is not None:
            chunks = reasoning.split_chunks(chunks, markers, thinking)
        if tools:
            from chatcli.backends.localtools import with_tool_calls

            names = {t.get("function", {}).get("name") for t in tools}
            chunks = with_tool_calls(chunks, template, names)
        yield from chunks

    def reasoning_markers(self, chat_template: str | None = None):
        """The markers this model reasons between (chatcli.reasoning.Markers), or None for a model that does not."""
        from chatcli.reasoning import find_markers

        self._need_model()
        return find_markers(chat_template or self.tokenizer.chat_template, self.tokenizer.added_tokens())

    def stream_completion(self, prompt: str, params: SamplingParams, *, cancel=None,
                          response_format: dict | None = None) -> Iterator[Chunk]:
        """Complete raw text: no system prompt, no template; BOS as the tokenizer config says."""
        self._need_model()
        if response_format:
            from chatcli.structured import check_stops

            check_stops(response_format, params.stop)
        yield from self._generate(self.tokenizer.encode(prompt, add_special_tokens=True), params, cancel,
                                  self._constraints(response_format))

    def serve_parallel(self, rows: int, kv_budget: int | None = None, cache_ram_mb: int = 0) -> int:
        """Let up to ROWS requests generate at once (continuous batching, engine.batch), their caches together
        holding at most KV_BUDGET positions (default: ROWS full contexts), split evenly among the rows, and up to
        CACHE_RAM_MB of prefixes that finished requests left (0: none beyond what the rows hold). Returns the rows;
        1 keeps the one-request path, with its compiled step. Batched steps run eagerly: the compiled step is
        exported for one row of the model's own cache."""
        from chatcli.engine.batch import BatchEngine

        self._need_model()
        if rows <= 1:
            return 1
        if kv_budget is None:  # a full context each, or what half the free memory holds
            per_token = self.model.make_cache(1, 1).nbytes()
            kv_budget = min(rows * self.model.max_seq_len, _free_memory() // 2 // per_token)
        per_row = min(self.model.max_seq_len, kv_budget // rows)
        if per_row < 2:
            raise UsageError(f"--kv-budget {kv_budget} leaves {per_row} positions for each of {rows} rows; give at least {2 * rows}")
        import torch

        cores = os.cpu_count() or 1
        if cores > 1 and torch.get_num_threads() >= cores:
            # Leave a core to the Python side (each request's thread detokenizes and streams, and the scheduler
            # samples): with every core in torch's pool those threads preempt its workers mid-GEMM. SmolLM2 int4 on
            # 2 cores, 1 client: 31 tok/s with 2 torch threads, 45 with 1; 8 clients: 99 and 101.
            self._threads_before_batch = torch.get_num_threads()
            torch.set_num_threads(cores - 1)
        self._batch = BatchEngine(self.model, rows, per_row, cache_bytes=cache_ram_mb << 20)
        return rows

    @property
    def batch_state(self) -> tuple[int, int]:
        """(rows generating, requests waiting for a row) of the batch engine; (0, 0) without one."""
        return (self._batch.active, self._batch.waiting) if self._batch is not None else (0, 0)

    @property
    def prompt_cache_bytes(self) -> int:
        """Bytes of KV prefixes the batch engine keeps for later requests (bounded by --cache-ram); 0 without one."""
        return self._batch.store.bytes if self._batch is not None else 0

    def close(self) -> None:
        """Drop the model and its cache."""
        if self._batch is not None:
            self._batch.close()
            self._batch = None
            if self._threads_before_batch:
                import torch

                torch.set_num_threads(self._threads_before_batch)
                self._threads_before_batch = 0
        self.model = self.tokenizer = None
        self.model_path = None

    # -- internals --------------------------------------------------------------------------------
    def _notify(self, notice: Notice | None) -> None:
        """Tell the user NOTICE now, through on_notice, or with the next reply."""
        if notice is None:
            return
        if self.on_notice is not None:
            self.on_notice(notice)
        else:
            self._pending.append(notice)

    def _constraints(self, response_format: dict | None) -> tuple:
        """The logits processors for RESPONSE_FORMAT: a grammar mask, or none for plain text."""
        if not response_format:
            return ()
        from chatcli.engine.grammar import GrammarProcessor
        from chatcli.structured import grammar_of

        self._need_model()
        return (GrammarProcessor(self.tokenizer, grammar_of(response_format)),)

    def _call_constraint(self, template: str | None, tools: list[dict]) -> tuple:
        """The logits processor that makes the reply one call of one of TOOLS (tool_choice "required")."""
        from chatcli.engine.errors import GrammarError
        from chatcli.engine.grammar import GrammarProcessor, compile_grammar
        from chatcli.toolcalls import call_grammar

        def token_of(tag: str) -> int | None:
            ids = self.tokenizer.encode(tag, add_special_tokens=False)
            return ids[0] if len(ids) == 1 else None

        source = call_grammar(template, tools, token_of)
        if source is None:
            self._pending.append(Notice("warning", "this model's tool-call format cannot be enforced here; "
                                                   "tool_choice \"required\" is asked for, not guaranteed"))
            return ()
        try:
            return (GrammarProcessor(self.tokenizer, compile_grammar("lark", source)),)
        except GrammarError as e:
            raise UsageError(f"tools: a tool's parameters cannot be enforced: {e}") from None

    def _take_pending(self) -> tuple[Notice, ...]:
        out, self._pending = tuple(self._pending), []
        return out

    def _need_model(self) -> None:
        if self.model is None:
            raise UsageError("no model loaded; pass --model NAME")

    def _chat_ids(self, messages: list[Message], chat_template: str | None, tools: list[dict] | None = None,
                  think: bool | None = None):
        from chatcli.templates import render_chat

        self._need_model()
        tok = self.tokenizer
        think = self.think if think is None else think
        rendered = render_chat(chat_template or tok.chat_template, messages, bos_token=tok.bos_token, eos_token=tok.eos_token,
                               tools=tools, template_kwargs=None if think is None else {"enable_thinking": think})
        ids = tok.encode(rendered.text, add_special_tokens=False)
        if rendered.plain and tok.add_bos_token and tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]  # the plain template carries no BOS of its own
        return ids, rendered

    def _generate(self, ids: list[int], params: SamplingParams, cancel, processors=()) -> Iterator[Chunk]:
        from chatcli.engine.generate import stream_generate
        from chatcli.engine.sampling import make_sampler

        self._need_model()
        if not ids:
            raise UsageError("the prompt is empty")
        ctx = self.model.max_seq_len
        if len(ids) >= ctx:
            raise UsageError(f"the prompt has {len(ids)} tokens but the context holds {ctx}; shorten it")
        sampler = make_sampler(params.temperature, params.top_p, params.top_k, params.min_p, params.seed)
        if self._batch is not None:
            yield from self._generate_batched(ids, params, sampler, cancel, processors)
            return
        with self.lock:
            if self._pending_package is not None:
                self._attach_when_built()
            cache = self.model.cache
            start = cache.reuse(0, ids)  # the longest common prefix (a ring cache can be rewound only so far)
            history = ids[:start]
            generated: list[int] = []
            cache.clear(0)  # until the prefill succeeds the cache contents are unknown
            records: list[dict] = []  # /probs: records of the tokens since the last chunk
            on_logits = self._probs_recorder(sampler, records) if self.want_probs else None
            try:
                for piece in stream_generate(
                    self.model, self.tokenizer, ids[start:], sampler=sampler, max_tokens=params.max_tokens,
                    repeat_penalty=params.repeat_penalty, stop=tuple(params.stop), start_pos=start, history=history,
                    cancel=cancel, on_token=generated.append, on_logits=on_logits, processors=processors,
                ):
                    probs = tuple(records)
                    if piece.finish_reason is None:
                        if piece.text:
                            records.clear()
                            yield Chunk(piece.text, probs=probs, notices=self._take_pending())
                        continue
                    yield Chunk(piece.text, finish_reason=piece.finish_reason, stats=piece.stats, probs=probs,
                                notices=self._take_pending())
            finally:
                # A sampled token proves the prefill finished; the last sampled token was never fed back. Without one,
                # only the reused prefix is known to be intact (an interrupted prefill wrote an unknown part).
                cache.extend(0, ids + generated[:-1] if generated else ids[:start])

    def _generate_batched(self, ids: list[int], params: SamplingParams, sampler, cancel, processors) -> Iterator[Chunk]:
        """_generate through the batch engine: the row finds its own cached prefix; the text, stop strings and
        stats are stream_generate's, as alone."""
        from chatcli.engine.generate import stream_generate

        room = self._batch.max_len
        if len(ids) >= room:
            raise UsageError(f"the prompt has {len(ids)} tokens but a row of this server holds {room} (--kv-budget / --parallel); shorten it")
        limit = min(params.max_tokens, room - len(ids))
        steps = self._batch.submit(ids, sampler, repeat_penalty=params.repeat_penalty, max_tokens=limit, processors=processors,
                                   cancel=cancel)
        for piece in stream_generate(self.model, self.tokenizer, ids, sampler=sampler, max_tokens=limit,
                                     stop=tuple(params.stop), cancel=cancel, processors=steps.processors, steps=steps):
            if piece.finish_reason is None:
                if piece.text:
                    yield Chunk(piece.text, notices=self._take_pending())
                continue
            yield Chunk(piece.text, finish_reason=piece.finish_reason, stats=piece.stats, notices=self._take_pending())

    def _attach_when_built(self) -> None:
        """Between replies: switch to the background build's compiled step once it is stored."""
        from chatcli.engine import background
        from chatcli.engine import compile as compiling

        package = self._pending_package
        if not compiling.is_stored(package):
            if not background.running(package):  # it failed or was killed
                self._pending_package = None
                self._restore_threads()
                reason = background.failure(package)
                if reason:
                    self._pending.append(_decoding_eagerly(
                        f"the background build failed ({reason}; its log: {package.with_suffix('.log')}, "
                        "--compile on tries again)"))
            return
        self._pending_package = None
        self._restore_threads()
        try:
            compiling.attach_stored(self.model, package)
        except compiling.CompileError as e:  # as for a broken package found at load
            self._pending.append(_decoding_eagerly(str(e)))
            return
        self.compiled = "aot"
        self._pending.append(COMPILED_IN_USE)

    def _restore_threads(self) -> None:
        """The thread count from before a background build (no-op when none was started)."""
        if self._threads_before_build:
            import torch

            torch.set_num_threads(self._threads_before_build)
            self._threads_before_build = 0

    def _probs_recorder(self, sampler, records: list[dict]):
        """on_logits for stream_generate: the probability each token was drawn with (after temperature and filters;
        greedy decoding shows the T=1 distribution), and its likeliest alternatives. EOS is not recorded."""
        from chatcli.engine.introspect import distribution, probs_record

        eos = self.tokenizer.eos_token_ids

        def record(token: int, logits) -> None:
            if token not in eos:
                probs = sampler.probabilities(logits) if sampler.temperature > 0 else distribution(logits, 1.0)
                records.append(probs_record(self.tokenizer, probs, token))

        return record
