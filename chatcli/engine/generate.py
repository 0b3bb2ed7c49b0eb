"""Generation as layered generators: token steps, then text chunks with stats.

generate_step   prefill + decode loop -> (token id, logits)
stream_generate token ids -> whole-character text, stop rules, finish reason and timings
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from chatcli.engine.sampling import Sampler, apply_repeat_penalty
from chatcli.engine.tokenizer import StreamingDetokenizer, Tokenizer
from chatcli.types import Stats

PREFILL_CHUNK = 256  # bounds a long prompt's attention memory and how long Ctrl-C waits; 2,000 tokens prefill as fast as with
# 512 (SmolLM2 bf16, 2 threads: 717-735 against 711-739 tok/s), with 128 about 9 % slower


@dataclass
class GenerationChunk:
    """New text (maybe empty), the token that produced it, and, on the last chunk, why generation ended."""

    text: str
    token_id: int | None = None
    finish_reason: str | None = None
    stats: Stats | None = None


class LogitsProcessor(Protocol):
    """Something that shapes each step's logits and hears which token was drawn: a grammar mask (structured output),
    a forced token (a thinking budget). Processors run after the repetition penalty and before the sampler, in order."""

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits [V] to sample from (float32; may be changed in place)."""
        ...

    def accept(self, token: int) -> None:
        """TOKEN was drawn (from the logits this processor last returned)."""
        ...

    def is_done(self) -> bool:
        """True when the reply must end now (a grammar that is complete); generation stops with finish "stop"."""
        ...


@torch.inference_mode()
def prefill(model, tokens: list[int], start_pos: int, cancel=None) -> torch.Tensor | None:
    """Run TOKENS through the model at start_pos (in chunks); return the logits of the last one [V], or None when
    CANCEL (a threading.Event) is set between chunks: Ctrl-C during a long prompt then waits for one chunk, not all."""
    logits = None
    for i in range(0, len(tokens), PREFILL_CHUNK):
        if cancel is not None and cancel.is_set():
            return None
        chunk = torch.tensor([tokens[i : i + PREFILL_CHUNK]], dtype=torch.long)
        logits = model(chunk, start_pos + i, last_only=True)[0, -1]
    return logits


def draw(logits: torch.Tensor, seen: list[int], sampler: Sampler, repeat_penalty: float = 1.0,
         processors: Sequence[LogitsProcessor] = ()) -> tuple[int, torch.Tensor]:
    """One token from LOGITS [V]: the repetition penalty over SEEN, the processors in order, the sampler; the
    processors hear the choice. Returns the token and the logits it was drawn from."""
    if repeat_penalty != 1.0:
        logits = apply_repeat_penalty(logits, torch.tensor(sorted(set(seen)), dtype=torch.long), repeat_penalty)
    with torch.inference_mode():  # the logits are inference tensors: in place (as process may) only in here
        for p in processors:
            logits = p.process(logits)
    token = sampler(logits)
    for p in processors:
        p.accept(token)
    return token, logits


def generate_step(
    model,
    prompt_ids: list[int],
    *,
    sampler: Sampler,
    repeat_penalty: float = 1.0,
    start_pos: int = 0,
    history: list[int] | None = None,
    cancel=None,
    processors: Sequence[LogitsProcessor] = (),
) -> Iterator[tuple[int, torch.Tensor]]:
    """Prefill prompt_ids at start_pos, then yield (token, logits) forever; the caller decides when to stop.

    history: tokens already in the cache before start_pos, for the repetition penalty.
    cancel: a threading.Event; set during the prefill, the generator ends without yielding.
    """
    seen = list(history or []) + list(prompt_ids)
    logits = prefill(model, prompt_ids, start_pos, cancel)
    if logits is None:
        return
    pos = start_pos + len(prompt_ids)
    while True:
        token, logits = draw(logits, seen, sampler, repeat_penalty, processors)
        yield token, logits
        seen.append(token)
        with torch.inference_mode():
            logits = model(torch.tensor([[token]], dtype=torch.long), pos)[0, -1]
        pos += 1


def _stop_hold(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of TEXT could begin a stop string (and so must not be shown yet)."""
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return hold


def stream_generate(
    model,
    tokenizer: Tokenizer,
    prompt_ids: list[int],
    *,
    sampler: Sampler,
    max_tokens: int = 256,
    repeat_penalty: float = 1.0,
    stop: tuple[str, ...] = (),
    stop_token_ids: set[int] | None = None,
    start_pos: int = 0,
    history: list[int] | None = None,
    cancel=None,
    on_token=None,
    on_logits=None,
    processors: Sequence[LogitsProcessor] = (),
    steps: Iterator[tuple[int, torch.Tensor]] | None = None,
) -> Iterator[GenerationChunk]:
    """Yield text as whole characters; stop on EOS, stop ids, stop strings (never shown), max_tokens or the end of context.

    cancel: a threading.Event checked between prompt chunks and after every token (finish_reason "interrupted").
    on_token(token_id): called for every generated token, including the one that stops generation.
    on_logits(token_id, logits): the same, with the logits the token was drawn from (for per-token probabilities).
    processors: LogitsProcessors (see there); when one is done after a token, the reply ends with finish "stop".
    steps: the (token, logits) pairs to turn into text instead of generate_step's (a batch engine's row, which
    prefills, draws and applies the processors itself); its `cached` attribute, read at the end, is how many prompt
    tokens it found cached.
    """
    t0 = time.perf_counter()
    stop_ids = set(tokenizer.eos_token_ids) | set(stop_token_ids or ())
    room = model.max_seq_len - start_pos - len(prompt_ids)
    limit = min(max_tokens, room)
    stats = Stats(prompt_tokens=start_pos + len(prompt_ids), cached_tokens=start_pos)
    detok = StreamingDetokenizer(tokenizer)
    text, shown = "", 0  # all text so far; how much of it was yielded
    finish = "length"
    done_early = False  # a processor ended the reply: no EOS came, so bytes may wait in the detokenizer
    t_first = None
    given = steps is not None
    if not given:
        steps = generate_step(model, prompt_ids, sampler=sampler, repeat_penalty=repeat_penalty, start_pos=start_pos,
                              history=history, cancel=cancel, processors=processors)
    n = 0
    try:
        if limit <= 0:
            finish = "length"
        else:
            for token, logits in steps:
                if t_first is None:
                    t_first = time.perf_counter()
                if on_token is not None:
                    on_token(token)
                if on_logits is not None:
                    on_logits(token, logits)
                if token in stop_ids:
                    finish = "stop"
                    break
                n += 1
                text += detok.add(token)
                hit = min((i for i in (text.find(s, max(0, shown - len(s))) for s in stop) if i >= 0), default=-1)
                if hit >= 0:
                    text, finish = text[:hit], "stop"
                    break
                safe = len(text) - _stop_hold(text, stop)
                if safe > shown:
                    yield GenerationChunk(text[shown:safe], token)
                    shown = safe
                if any(p.is_done() for p in processors):
                    finish, done_early = "stop", True
                    break
                if cancel is not None and cancel.is_set():
                    finish = "interrupted"
                    break
                if n >= limit:
                    finish = "length"
                    break
            else:  # the steps ended by themselves: only a cancelled prefill does that
                finish = "interrupted"
    finally:
        steps.close()
    if finish in ("length", "interrupted") or done_early:
        text += detok.flush()
    t_end = time.perf_counter()
    t_first = t_first or t_end
    if given:
        stats.cached_tokens = getattr(steps, "cached", 0)
    new_prompt = len(prompt_ids) + start_pos - stats.cached_tokens
    stats.completion_tokens = n
    stats.ttft_s = t_first - t0
    stats.prompt_tps = new_prompt / stats.ttft_s if stats.ttft_s > 0 else 0.0
    stats.decode_tps = (n - 1) / (t_end - t_first) if n > 1 and t_end > t_first else 0.0
    stats.total_s = t_end - t0
    yield GenerationChunk(text[shown:], None, finish, stats)
