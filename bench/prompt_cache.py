"""Time to first token with a long system prompt that repeats across requests (`chatcli serve`; not a test).

    CHATCLI_HOME=$PWD .venv/bin/python bench/prompt_cache.py [--system-words 700] [--repeats 5] [-- SERVE OPTIONS]

It starts `chatcli serve` (bench/serve_load.py's way; options after -- go to it) and, REPEATS times with a fresh
question each time, sends three streamed requests with max_tokens 1:
  first:  a system prompt of about 1,000 tokens (the first time: evaluated in full) and the question,
  again:  the same system prompt and another question (the server should start from its cached prefix),
  alone:  the other question without a system prompt: the new tokens alone, the reference for "again".
It prints the medians of each TTFT, the prompt and cached tokens the server reported, and again / alone, which the
prompt-cache target of issue 21 wants at or under 1.2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import start_chatcli, stop  # noqa: E402

RULES = ("Answer in plain English.", "Prefer short sentences.", "Name the units of every number.",
         "Say when you are unsure.", "Quote the user's words exactly when you refer to them.",
         "Never invent a citation.", "Use metric units unless asked otherwise.", "Keep lists under seven items.")


def system_prompt(words: int) -> str:
    """A deterministic system prompt of about WORDS words: numbered house rules."""
    lines, n = [], 0
    while n < words:
        rule = f"Rule {len(lines) + 1}: {RULES[len(lines) % len(RULES)]}"
        lines.append(rule)
        n += len(rule.split())
    return "You are a careful assistant. Follow these rules.\n" + "\n".join(lines)


def timed(client: openai.OpenAI, model: str, messages: list[dict]) -> tuple[float, int, int]:
    """TTFT of one streamed request, and the prompt and cached tokens its usage reports."""
    t0 = time.perf_counter()
    first = None
    usage = None
    stream = client.chat.completions.create(model=model, messages=messages, stream=True, max_tokens=1,
                                            temperature=0, stream_options={"include_usage": True})
    for event in stream:
        if first is None and any(c.delta.content for c in event.choices):
            first = time.perf_counter() - t0
        usage = event.usage or usage
    cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0
    return (first if first is not None else time.perf_counter() - t0), usage.prompt_tokens, cached


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--system-words", type=int, default=700, help="about 1,000 tokens for SmolLM2's tokenizer")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("serve_args", nargs="*")
    args = ap.parse_args()
    proc, url = start_chatcli(args.model, args.threads, args.serve_args)
    try:
        client = openai.OpenAI(base_url=url, api_key="none")
        model = client.models.list().data[0].id
        system = {"role": "system", "content": system_prompt(args.system_words)}
        timed(client, model, [{"role": "user", "content": "warm up"}])
        rows = {"first": [], "again": [], "alone": []}
        for i in range(args.repeats):
            # A new system prompt each round (a number in front), so "first" never finds it cached.
            sys_i = {"role": "system", "content": f"Session {i}. " + system["content"]}
            q1 = {"role": "user", "content": f"Question {i}: what is {i} plus {i + 1}?"}
            q2 = {"role": "user", "content": f"Question {i}b: name a colour that starts with the letter {'bcdgprwy'[i % 8]}."}
            rows["first"].append(timed(client, model, [sys_i, q1]))
            rows["again"].append(timed(client, model, [sys_i, q2]))
            rows["alone"].append(timed(client, model, [q2]))
        med = {k: statistics.median(t for t, _, _ in v) for k, v in rows.items()}
        for k, v in rows.items():
            print(f"{k:6s} ttft_median_s={med[k]:.3f}  runs={[round(t, 3) for t, _, _ in v]}  "
                  f"prompt_tokens={[p for _, p, _ in v]}  cached_tokens={[c for _, _, c in v]}")
        print(f"again/alone={med['again'] / med['alone']:.2f}  first/alone={med['first'] / med['alone']:.2f}")
    finally:
        stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
