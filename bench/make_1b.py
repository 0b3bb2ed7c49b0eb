"""A 1B model shaped like Llama 3.2 1B, with random weights, as a GGUF and in the store, for speed at scale (issue 22).

    .venv/bin/python bench/make_1b.py                    # makes it once; prints the store name and the bench command
    chatcli bench --model llama3.2-1b-shape --quant int4 --compare llama_cpp --compare transformers

Speed does not depend on the weights' values, so random weights show how our cost grows with the model: hidden 2048,
16 layers, 32 heads with 8 KV heads, intermediate 8192, tied embeddings and Llama 3's RoPE scaling, as in Llama 3.2
1B. The vocabulary is SmolLM2's (49152 tokens, its tokenizer files are copied from the pulled default model), so
its embedding is smaller than Llama 3.2's 128256 and any prompt tokenizes. The weights are bfloat16 (as Meta ships
them), seeded, so every machine makes the same model.

The safetensors folder is turned into a GGUF by the convert_hf_to_gguf.py of the llama.cpp that bench/build_llama_cpp.py
built (run it first), and that GGUF is imported (`chatcli import`), so chatcli and llama.cpp read the same numbers
and `--compare llama_cpp` finds the GGUF as the model's source. The HF folder and the GGUF stay in chatcli's cache
folder (about 2.5 GB each; the store's copy is another 2.5 GB). Needs transformers (the test extras) for the converter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

NAME = "llama3.2-1b-shape"
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "vocab_size": 49152, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "max_position_embeddings": 8192, "tie_word_embeddings": True,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
    "attention_bias": False, "mlp_bias": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def checkpoint(seed: int) -> dict:
    """Llama's checkpoint keys with random bfloat16 values: normal(0, 0.02) matrices, unit norms (as at init)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    c = CONFIG
    d, kv, ff = c["hidden_size"], c["num_key_value_heads"] * c["head_dim"], c["intermediate_size"]

    def normal(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    state = {"model.embed_tokens.weight": normal(c["vocab_size"], d), "model.norm.weight": torch.ones(d, dtype=torch.bfloat16)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        state |= {p + "self_attn.q_proj.weight": normal(d, d), p + "self_attn.k_proj.weight": normal(kv, d),
                  p + "self_attn.v_proj.weight": normal(kv, d), p + "self_attn.o_proj.weight": normal(d, d),
                  p + "mlp.gate_proj.weight": normal(ff, d), p + "mlp.up_proj.weight": normal(ff, d),
                  p + "mlp.down_proj.weight": normal(d, ff),
                  p + "input_layernorm.weight": torch.ones(d, dtype=torch.bfloat16),
                  p + "post_attention_layernorm.weight": torch.ones(d, dtype=torch.bfloat16)}
    return state


def write_folder(folder: Path, tokenizer_dir: Path, seed: int) -> None:
    """The HF folder, written under a temporary name and renamed: a half-written one is never taken for done."""
    from safetensors.torch import save_file

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, partial / name)
    (partial / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n", encoding="utf-8")
    save_file(checkpoint(seed), str(partial / "model.safetensors"), metadata={"format": "pt"})
    partial.rename(folder)


def converter() -> Path:
    """convert_hf_to_gguf.py of the build $CHATCLI_LLAMA_CPP names (its bin/ folder or the build itself), else of the
    newest llama.cpp build (bench/build_llama_cpp.py keeps it beside the binaries), as the binaries are found."""
    from chatcli.llamacpp import BUILD_HINT, builds, llama_cpp_home

    named = Path(os.environ["CHATCLI_LLAMA_CPP"]).expanduser() if os.environ.get("CHATCLI_LLAMA_CPP") else None
    roots = ([named, named.parent] if named else []) + builds()
    scripts = [d / "convert" / "convert_hf_to_gguf.py" for d in roots]
    found = next((s for s in scripts if s.is_file()), None)
    if found is None:
        raise SystemExit(f"make_1b: no convert_hf_to_gguf.py under {llama_cpp_home()}; {BUILD_HINT}")
    return found


def main() -> int:
    from chatcli import settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default=NAME, help="the store name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="a folder whose tokenizer files to copy (default: the pulled smollm2-135m-instruct)")
    args = ap.parse_args()

    work = settings.cache_dir() / "bench-1b"
    folder, gguf = work / "hf", work / f"{args.name}.BF16.gguf"
    tokenizer_dir = args.tokenizer or settings.models_dir() / "smollm2-135m-instruct"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise SystemExit(f"make_1b: no tokenizer.json in {tokenizer_dir}; run `chatcli pull smollm2-135m-instruct` or pass --tokenizer")
    if not folder.is_dir():
        print(f"writing random weights into {folder}", file=sys.stderr, flush=True)
        write_folder(folder, tokenizer_dir, args.seed)
    if not gguf.is_file():
        script = converter()
        env = {**os.environ, "PYTHONPATH": str(script.parent / "gguf-py")}  # the converter's own gguf-py, not ours
        partial = gguf.with_name(gguf.name + ".partial")
        subprocess.run([sys.executable, str(script), str(folder), "--outtype", "bf16", "--outfile", str(partial)],
                       check=True, env=env)
        partial.rename(gguf)
    if not (settings.models_dir() / args.name).is_dir():
        chatcli = Path(sys.executable).parent / "chatcli"
        subprocess.run([str(chatcli), "import", str(gguf), "--name", args.name], check=True)
    print(args.name)
    print(f"chatcli bench --model {args.name} --quant int4 --compare llama_cpp --compare transformers", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
