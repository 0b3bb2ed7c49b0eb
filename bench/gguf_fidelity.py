"""How faithfully each way of storing and quantizing a GGUF keeps its numbers (issue 19; not a test).

    .venv/bin/python bench/gguf_fidelity.py                       # SmolLM2's catalog GGUF, 10 prompts x 24 tokens
    .venv/bin/python bench/gguf_fidelity.py --gguf FILE.gguf --tokens 32 --json

The reference is transformers loading the GGUF (dequantized, float32). Each path converts the GGUF into a temporary
folder (--dtype exact, the default, and bfloat16, the former default), loads it in our engine with a compute dtype and
a --quant mode, and runs raw greedy completions (no chat template, EOS not stopping) of the prompts. Reported per path:
prompts whose completion equals the reference's, the mean length of the common prefix, the first tokens that agree,
and the folder's size on disk (for int4/int8 also the stored quantization, `chatcli models quantize`). The rows
int4-file and int8-file quantize from the file's float32 values instead of the loader's bfloat16 copy of them: for
int4 that is exactly the GGUF's own codes with their scales rounded to bfloat16.

Then, per GGUF tensor, whether our kernels could take the GGUF's own codes: for Q4_0/Q4_1 the codes that int4 in
groups of 32 gets by re-quantizing the float32 values, and by re-quantizing bfloat16-rounded values (what a bfloat16
load quantizes), against the GGUF's; whether the kernel's bfloat16 scales hold the GGUF's float16 scales; for Q8_0,
the rows whose 32-value blocks share one scale (what a per-row int8 layer could hold exactly).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [
    "Give me a short recipe for pancakes.",  # a near tie on the first token (issue 19)
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Explain why the sky is blue.",
    "import numpy as np\n",
    "What is the square root of 144?",
    "My favorite book is",
    "Translate to French: Good morning, how are you?",
]


def reference(gguf: Path, prompts: list[list[int]], n: int):
    """transformers' greedy tokens and, per prompt, the smallest top-1/top-2 probability gap along its completion."""
    import torch
    import transformers

    try:
        import accelerate  # noqa: F401  (from_pretrained(gguf_file=...) wants it)

        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except ImportError:  # the same loader without it: the GGUF's config, then its dequantized tensors
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        config = transformers.AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"], strict=False)
        model.tie_weights()
    model.eval()
    out, gaps = [], []
    with torch.no_grad():
        for ids in prompts:
            g = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                               pad_token_id=0, output_scores=True, return_dict_in_generate=True)
            out.append(g.sequences[0, len(ids):].tolist())
            top2 = [s[0].softmax(-1).topk(2).values.tolist() for s in g.scores]
            gaps.append(min(a - b for a, b in top2))
    return out, gaps


def engine_greedy(folder: Path, dtype: str, quant: str | None, prompts: list[list[int]], n: int,
                  from_file: bool = False) -> list[list[int]]:
    """Our greedy tokens. from_file: quantize the linear layers from the file's values, not from their DTYPE copy
    (the loader converts a block to DTYPE before quantizing it); with an exact folder that is the GGUF's own int4
    codes (codes_report: weights_equal_from_f32)."""
    import torch

    from chatcli.engine import loader
    from chatcli.engine.generate import generate_step
    from chatcli.engine.sampling import make_sampler

    convert = loader._convert
    if from_file:
        def keep_linear(module, dt, keep=frozenset()):
            linear = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Linear)}
            convert(module, dt, set(keep) | linear)

        loader._convert = keep_linear
    try:
        model = loader.load_model(folder, dtype, max_seq_len=256, quant=quant, use_stored=False)
    finally:
        loader._convert = convert
    out = []
    for ids in prompts:
        steps = generate_step(model, ids, sampler=make_sampler(temperature=0))
        out.append([next(steps)[0] for _ in range(n)])
    return out


def agreement(got: list[list[int]], ref: list[list[int]]) -> dict:
    def prefix(a, b):
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))

    return {"equal": sum(a == b for a, b in zip(got, ref)), "prompts": len(ref),
            "mean_prefix": round(sum(prefix(a, b) for a, b in zip(got, ref)) / len(ref), 1),
            "first_token": sum(a[0] == b[0] for a, b in zip(got, ref))}


def block_codes(raw, type_name: str, shape):
    """(codes 0..15 int32 [N, K], scale, zero [N, K/32]) of a Q4_0/Q4_1 tensor, as int4's w = (q - 8) * scale + zero."""
    import numpy as np
    import torch

    N, K = shape
    width = 20 if type_name == "Q4_1" else 18
    b = np.ascontiguousarray(raw).reshape(N, K // 32, width)
    d = b[..., 0:2].copy().view(np.float16).astype(np.float32)[..., 0]
    qs = b[..., width - 16:].astype(np.int32)
    q = np.concatenate([qs & 15, qs >> 4], -1).reshape(N, K)  # a block's low nibbles are its first 16 values
    if type_name == "Q4_1":
        m = b[..., 2:4].copy().view(np.float16).astype(np.float32)[..., 0]
        zero = m + 8 * d
    else:
        zero = np.zeros_like(d)
    return torch.from_numpy(q), torch.from_numpy(d), torch.from_numpy(zero)


def kernel_weight(q, scale, zero):
    """What Int4Linear computes with for these codes: scales and zeros rounded to bfloat16 (the kernel's)."""
    import torch

    N, K = q.shape
    s, z = scale.to(torch.bfloat16).float(), zero.to(torch.bfloat16).float()
    return ((q.view(N, K // 32, 32).float() - 8) * s[..., None] + z[..., None]).view(N, K)


def codes_report(gguf: Path) -> dict:
    import numpy as np
    import torch
    from gguf.quants import dequantize

    from chatcli.engine.linear import quantize_int4_groups
    from chatcli.store.gguf_file import GGUFFile

    totals = {"q4_tensors": 0, "codes_equal_from_f32": 0, "codes_equal_from_bf16": 0, "weights_equal_from_f32": 0,
              "weights_equal_from_bf16": 0, "scales_held_by_bf16": 0.0, "q8_tensors": 0, "q8_rows_one_scale": 0.0}
    with GGUFFile(gguf) as g:
        for info in g.tensors.values():
            if info.type_name in ("Q4_0", "Q4_1") and len(info.shape) == 2:
                raw = g.raw(info)
                exact = torch.from_numpy(dequantize(raw, info.ggml_type))
                q, s, z = block_codes(raw, info.type_name, info.shape)
                ours = kernel_weight(q, s, z)
                totals["q4_tensors"] += 1
                for src, key in ((exact, "f32"), (exact.to(torch.bfloat16), "bf16")):
                    q2, s2, z2 = quantize_int4_groups(src, 32)
                    totals[f"codes_equal_from_{key}"] += bool(torch.equal(q2, q))
                    totals[f"weights_equal_from_{key}"] += bool(torch.equal(kernel_weight(q2, s2, z2), ours))
                totals["scales_held_by_bf16"] += float((s.to(torch.bfloat16).float() == s).float().mean())
            elif info.type_name == "Q8_0" and len(info.shape) == 2:
                N, K = info.shape
                d = np.ascontiguousarray(g.raw(info)).reshape(N, K // 32, 34)[..., 0:2].copy().view(np.float16)[..., 0]
                totals["q8_tensors"] += 1
                totals["q8_rows_one_scale"] += float((d == d[:, :1]).all(1).mean())
    if totals["q4_tensors"]:
        totals["scales_held_by_bf16"] = round(totals["scales_held_by_bf16"] / totals["q4_tensors"], 4)
    if totals["q8_tensors"]:
        totals["q8_rows_one_scale"] = round(totals["q8_rows_one_scale"] / totals["q8_tensors"], 4)
    return totals


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default=None, help="a GGUF file (default: the default model's cached catalog GGUF)")
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.add_argument("--reference-cache", default=None, help="a JSON file keeping transformers' tokens between runs")
    a = p.parse_args(argv)

    import torch

    from chatcli.engine import quantsave
    from chatcli.engine.tokenizer import load_tokenizer
    from chatcli.store.convert import convert_gguf
    from chatcli.store.pull import cached_gguf

    torch.set_num_threads(a.threads)
    gguf = Path(a.gguf) if a.gguf else cached_gguf("smollm2-135m-instruct")
    report: dict = {"gguf": gguf.name, "tokens": a.tokens, "paths": []}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for dtype in ("exact", "bfloat16", "float32"):
            folders[dtype] = Path(tmp) / dtype
            folders[dtype].mkdir()
            convert_gguf(gguf, folders[dtype], dtype=dtype)
        # --dtype float32 stores what exact stores wherever the GGUF holds no float16/bfloat16 tensor
        report["float32_same_bytes_as_exact"] = (folders["float32"] / "model.safetensors").read_bytes() == (
            folders["exact"] / "model.safetensors").read_bytes()
        report["float32_folder_bytes"] = size(folders["float32"])
        tok = load_tokenizer(folders["exact"])
        prompts = [tok.encode(t) for t in PROMPTS]
        t0 = time.perf_counter()
        cache = Path(a.reference_cache) if a.reference_cache else None
        key = [gguf.name, gguf.stat().st_size, prompts, a.tokens]
        cached = json.loads(cache.read_text()) if cache and cache.is_file() else {}
        if cached.get("key") == key:
            ref, gaps = cached["tokens"], cached["gaps"]
        else:
            ref, gaps = reference(gguf, prompts, a.tokens)
            if cache:
                cache.write_text(json.dumps({"key": key, "tokens": ref, "gaps": gaps}))
        report["reference_s"] = round(time.perf_counter() - t0, 1)
        report["near_ties"] = {PROMPTS[i]: round(gap, 4) for i, gap in enumerate(gaps) if gap < 0.05}
        report["reference_texts"] = {PROMPTS[i]: tok.decode(r) for i, r in enumerate(ref[:1])}
        for folder_dtype in ("exact", "bfloat16"):
            folder = folders[folder_dtype]
            for compute in ("float32", "bfloat16"):
                for quant in (None, "int4", "int8"):
                    got = engine_greedy(folder, compute, quant, prompts, a.tokens)
                    row = {"folder": folder_dtype, "compute": compute, "quant": quant or "none",
                           **agreement(got, ref), "folder_bytes": size(folder)}
                    if quant:
                        stored, nbytes, _ = quantsave.save(folder, quant, compute)
                        row["quantized_bytes"] = nbytes
                        stored.unlink()
                    if folder_dtype == "exact" and compute == "float32" and quant is None:
                        report["reference_texts"]["ours: " + PROMPTS[0]] = tok.decode(got[0])
                    report["paths"].append(row)
        for quant in ("int4", "int8"):  # bfloat16 compute, quantized from the exact file's values
            got = engine_greedy(folders["exact"], "bfloat16", quant, prompts, a.tokens, from_file=True)
            report["paths"].append({"folder": "exact", "compute": "bfloat16", "quant": quant + "-file",
                                    **agreement(got, ref), "folder_bytes": size(folders["exact"])})
    report["codes"] = codes_report(gguf)
    if a.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{gguf.name}: {len(PROMPTS)} raw prompts x {a.tokens} greedy tokens against transformers loading the GGUF "
          f"(float32, {report['reference_s']} s)")
    print(f"near ties (top-1 minus top-2 probability < 0.05 on the reference's path): {report['near_ties']}")
    for k, v in report["reference_texts"].items():
        print(f"  {k!r} -> {v!r}")
    print(f"--dtype float32 folder: {report['float32_folder_bytes'] / 1e6:.1f} MB, "
          f"same weights file as exact: {report['float32_same_bytes_as_exact']}")
    print("folder    compute   quant  equal  mean_prefix  first_token  folder_MB  quantized_MB")
    for r in report["paths"]:
        qmb = f"{r['quantized_bytes'] / 1e6:.1f}" if "quantized_bytes" in r else "-"
        print(f"{r['folder']:<9} {r['compute']:<9} {r['quant']:<6} {r['equal']:>2}/{r['prompts']:<3} {r['mean_prefix']:>10}"
              f"   {r['first_token']:>6}/{r['prompts']:<5} {r['folder_bytes'] / 1e6:>9.1f}  {qmb:>12}")
    print("GGUF codes against our kernels:", json.dumps(report["codes"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
