"""Weight-only quantization and prepacked layers on tiny random models: each layer computes what it says it computes,
reads its weight back, survives the loader's block-by-block path, and holds the checkpoint's tensors where the
family's sanitize stacked them (issue 6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from chatcli.engine import cpu
from chatcli.engine import linear as L
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.introspect.params import parameter_report
from chatcli.engine.loader import load_model
from chatcli.engine.quant import quantize


def dense(n_out=96, n_in=64, bias=True, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias)
    return layer.to(dtype).requires_grad_(False)


def weight_of(layer):
    """The weight LAYER computes with, whether it is plain, packed or quantized."""
    return layer.dequantized_weight() if hasattr(layer, "dequantized_weight") else layer.weight


def make(kind, layer):
    if kind == "packed":
        return L.PackedLinear(layer)
    if kind == "int8":
        return L.Int8Linear(layer)
    if kind == "dyn8":
        if not L.can_dynamic_int8():
            pytest.skip("fbgemm's dynamic int8 linear is not in this build")
        return L.DynamicInt8Linear(layer)
    return L.Int4Linear(layer, 32)


# Relative error bounds of the output against the float layer, set from what each path is: 8 bits per weight keep a
# random layer's outputs within about 1%; dyn8 also rounds activations to 8 bits, or to 7 where the CPU has no VNNI
# (fbgemm's reduce_range, engine/cpu.py), about 0.8 % and 1.5 % here, so 0.05 holds either way; 4 bits within
# about 15%.
BOUND = {"packed": 1e-5, "int8": 0.03, "dyn8": 0.05, "int4": 0.2}


@pytest.mark.parametrize("kind", ["packed", "int8", "dyn8", "int4"])
# a decode step, a short prompt, and prompts past int8's and int4's dense thresholds (different code paths)
@pytest.mark.parametrize("tokens", [1, 5, 40, 96])
def test_layer_output_close_to_float(kind, tokens):
    layer = dense()
    q = make(kind, layer)
    x = torch.randn(1, tokens, 64)
    want = layer(x)
    got = q(x)
    assert got.shape == want.shape and got.dtype == x.dtype
    rel = (got - want).norm() / want.norm()
    assert rel < BOUND[kind], rel
    # The layer computes with exactly the weight it reports (up to the bf16 activations of the quantized kernels).
    again = F.linear(x, q.dequantized_weight().float(), None if q.bias is None else q.bias.float())
    assert (got - again).norm() / again.norm() < (1e-5 if kind == "packed" else 0.02)


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_dequantized_weight_error_is_bounded_by_the_step(kind):
    layer = dense(bias=False)
    w, q = layer.weight, make(kind, layer).dequantized_weight()
    if kind == "int8":
        step = w.abs().amax(1, keepdim=True) / 127
    else:
        g = w.view(w.shape[0], -1, 32)
        step = ((g.amax(-1) - g.amin(-1)) / 15).repeat_interleave(32, 1)
    assert ((q - w).abs() <= step * 0.5 + 2e-2 * w.abs() + 1e-6).all()  # half a step, plus bf16 rounding of scales


def _int4_block() -> int:
    block = L.int4_block_n()
    if block is None:
        pytest.skip("the int4 kernel's packed layout is not one chatcli reads on this CPU; "
                    "test_int4_long_prompt_without_a_known_layout_runs_the_kernel covers the fallback")
    return block


@pytest.mark.parametrize("n_out", [128, 96])  # whole blocks (64 rows with AVX-512, 32 with AVX2) take the dense path
def test_int4_long_prompt_dequantizes_once_and_matches_the_kernel(n_out):
    """A prompt of INT4_DENSE_MIN_TOKENS or more runs the dense GEMM on the weight dequantized from the kernel's own
    packed layout: the same numbers as the kernel, to bf16 rounding."""
    block = _int4_block()
    assert block == cpu.int4_block_n()  # the layout torch packs for its dispatch level is the one the CPU module names
    layer = dense(n_out=n_out)
    q = L.Int4Linear(layer, 32)
    assert (q.row_scales is not None) == (n_out % block == 0)
    x = torch.randn(L.INT4_DENSE_MIN_TOKENS + 3, 64)
    kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), q.weight_int4, 32, q.scales_and_zeros)
    got = q(x)
    assert torch.allclose(got, kernel.float() + layer.bias, atol=2e-2, rtol=2e-2)
    # and again, through the same scratch matrix, with another layer of the same shape in between
    other = L.Int4Linear(dense(n_out=n_out, seed=1), 32)
    other(x)
    assert torch.equal(q(x), got)


def test_int4_long_prompt_without_a_known_layout_runs_the_kernel(monkeypatch):
    """Where the packed layout is not one chatcli reads (another dispatch level or a changed build), prompts go
    through the int4 kernel itself: the same numbers, only slower."""
    monkeypatch.setattr(L, "int4_block_n", lambda: None)
    layer = dense(n_out=128)
    q = L.Int4Linear(layer, 32)
    assert q.row_scales is None
    x = torch.randn(L.INT4_DENSE_MIN_TOKENS + 3, 64)
    kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), q.weight_int4, 32, q.scales_and_zeros)
    assert torch.allclose(q(x), kernel.float() + layer.bias, atol=2e-2, rtol=2e-2)  # the bias is added in bf16


def test_packed_bfloat16_matches_plain_bfloat16():
    if not L.can_pack(torch.bfloat16):
        pytest.skip(f"oneDNN cannot pack bf16 weights on this CPU ({cpu.info().summary}); "
                    "test_bfloat16_without_onednn_stays_plain covers the fallback")
    layer = dense(dtype=torch.bfloat16)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    assert torch.allclose(L.PackedLinear(layer)(x).float(), layer(x).float(), atol=1e-2, rtol=1e-2)


def test_int4_falls_back_to_int8_for_shapes_the_kernel_cannot_take():
    assert L.int4_group_size(64, 100) is None  # output rows must be a multiple of 16
    assert L.int4_group_size(576, 1536) == 32 and L.int4_group_size(96, 64) == 32
    model = nn.Sequential(nn.Linear(64, 100))
    quantize(model, "int4")
    assert isinstance(model[0], L.Int8Linear)


def test_unknown_mode_is_refused():
    with pytest.raises(ModelLoadError, match="int4"):
        quantize(nn.Sequential(nn.Linear(4, 4)), "int3")


@pytest.mark.parametrize("mode", ["none", "int8", "int4"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "olmo2", "smollm3", "phi3"])  # qwen2 has q/k/v biases; the newer families their own layouts
def test_quantized_model_stays_close_and_holds_the_checkpoint_rows(tiny_model_factory, mode, arch):
    from safetensors.torch import load_file

    path = tiny_model_factory(arch)
    ref = load_model(path, "float32")
    model = load_model(path, "float32", quant=mode)
    ids = torch.randint(0, 300, (1, 24), generator=torch.Generator().manual_seed(3))
    want, got = ref(ids, 0), model(ids, 0)
    rel = (got - want).norm() / want.norm()
    assert rel < {"none": 1e-5, "int8": 0.05, "int4": 0.25}[mode], rel
    attn, ref_attn = model.model.layers[0].self_attn, ref.model.layers[0].self_attn
    # The checkpoint's k rows (Phi-3's checkpoint fuses them itself) sit where sanitize stacked them, q's then k's then v's.
    file = load_file(path / "model.safetensors")
    H, KV, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    k_rows = slice(H * D, (H + KV) * D)
    k = file["model.layers.0.self_attn.qkv_proj.weight"][k_rows] if arch == "phi3" else file["model.layers.0.self_attn.k_proj.weight"]
    assert torch.equal(ref_attn.qkv_proj.weight[k_rows], k)
    if arch != "phi3":
        assert torch.equal(ref.model.layers[1].mlp.gate_up_proj.weight[model.config.intermediate_size :], file["model.layers.1.mlp.up_proj.weight"])
    tol = {"none": 1e-6, "int8": 0.02, "int4": 0.1}[mode]
    assert (weight_of(attn.qkv_proj).float()[k_rows] - k).abs().max() < tol * 10 + tol
    if arch == "qwen2":
        assert torch.equal(ref_attn.qkv_proj.bias[(H + KV) * D :], file["model.layers.0.self_attn.v_proj.bias"])
        assert torch.allclose(attn.qkv_proj.bias.float(), ref_attn.qkv_proj.bias, atol=1e-2)
    x = torch.randn(1, 2, model.config.hidden_size)
    assert torch.allclose(attn.qkv_proj(x), ref_attn.qkv_proj(x), atol=tol * 10 + 1e-4)


def test_bfloat16_without_onednn_stays_plain(tiny_model_factory, monkeypatch):
    """bfloat16 asked for where oneDNN cannot pack it: the layers stay plain nn.Linear in bf16, compute the same as
    the unpacked model, and the load says once why (the local backend prints load_notes)."""
    monkeypatch.setattr(cpu, "onednn_bf16_pack", lambda: False)
    L.can_pack.cache_clear()
    try:
        model = load_model(tiny_model_factory("llama"), "bfloat16", quant="none")
        plain = load_model(tiny_model_factory("llama"), "bfloat16", quant=None)
    finally:
        L.can_pack.cache_clear()
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, L.PackedLinear))]
    assert layers and all(isinstance(m, nn.Linear) and m.weight.dtype == torch.bfloat16 for m in layers)
    assert len(model.load_notes) == 1 and "oneDNN" in model.load_notes[0]
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(2))
    assert torch.equal(model(ids, 0), plain(ids, 0))


def test_int8_long_prompt_runs_the_dense_gemm_on_the_kernels_numbers():
    """A prompt of DENSE_MIN_TOKENS or more multiplies by the weight dequantized into a scratch matrix: the kernel's
    numbers to bf16 rounding, and the same again after another layer of the shape has used the scratch."""
    layer = dense()
    q = L.Int8Linear(layer)
    x = torch.randn(L.DENSE_MIN_TOKENS + 3, 64)
    kernel = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), q.weight_int8, q.scales)
    got = q(x)
    assert torch.allclose(got, kernel.float() + layer.bias, atol=2e-2, rtol=2e-2)
    L.Int8Linear(dense(seed=1))(x)
    assert torch.equal(q(x), got)


@pytest.mark.parametrize("tokens", [1, 40])  # a decode step (bf16 GEMV) and a prompt (float32 GEMM)
def test_bf16_layer_computes_the_plain_layer(monkeypatch, tokens):
    """Where bf16 is emulated, a plain bf16 layer runs prompts in float32: the numbers of the bf16 layer to bf16
    rounding (the output is rounded to bf16 once, instead of by the emulated kernel)."""
    monkeypatch.setattr(L, "prompt_dtype", lambda: torch.float32)
    layer = dense(dtype=torch.bfloat16)
    x = torch.randn(1, tokens, 64, dtype=torch.bfloat16)
    got = L.Bf16Linear.of(layer)(x)
    assert got.dtype == torch.bfloat16 and got.shape == (1, tokens, 96)
    assert torch.allclose(got.float(), layer(x).float(), atol=1e-2, rtol=1e-2)


def test_tied_unembedding_stays_tied_after_packing(tiny_model_factory):
    path = tiny_model_factory("llama_tied")
    model = load_model(path, "bfloat16", quant="none")
    head, embed = model.lm_head, model.model.embed_tokens.weight
    assert isinstance(head, L.PackedLinear if L.can_pack(torch.bfloat16) else nn.Linear)
    # The packed head computes with the embedding's matrix, and introspection still reports the tie.
    assert torch.equal(weight_of(head), embed)
    assert parameter_report(model).tied


def test_cached_decoding_equals_full_forward_when_quantized(tiny_model_factory):
    model = load_model(tiny_model_factory("llama"), "bfloat16", quant="int4")
    ids = torch.randint(0, 300, (1, 30), generator=torch.Generator().manual_seed(4))
    full = model(ids, 0)
    parts = [model(ids[:, :20], 0)] + [model(ids[:, i : i + 1], i) for i in range(20, 30)]
    assert (torch.cat(parts, 1) - full).abs().max() < 0.05 * full.abs().max()


@pytest.mark.parametrize("arch", ["llama", "llama_tied", "gemma3"])
def test_float32_from_a_bfloat16_file_widens_embedding_rows_not_the_table(arch, tiny_model_factory, tmp_path):
    """Widening bfloat16 to float32 is exact, so a float32 model of a bfloat16 file keeps the table as stored and widens
    the rows it looks up (SmolLM2: 113 MB less). Its logits equal those of the table widened whole."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "bf16"
    shutil.copytree(tiny_model_factory(arch), folder)
    for f in folder.glob("*.safetensors"):
        save_file({k: v.to(torch.bfloat16) for k, v in load_file(f).items()}, f)
    ids = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(3))
    whole = load_model(folder, "float32")  # no packing: a tied head computes from the table, so it is widened whole
    tied = whole.config.tie_word_embeddings
    assert whole.model.embed_tokens.weight.dtype == (torch.float32 if tied else torch.bfloat16)
    for quant in ("none", "int8"):
        model = load_model(folder, "float32", quant=quant)
        assert model.model.embed_tokens.weight.dtype == torch.bfloat16 and model.compute_dtype == torch.float32
        assert model.cache.layers[0].k.dtype == torch.float32
        if tied and quant == "none":
            assert parameter_report(model).tied  # still tied for introspection
        got, want = model(ids, 0), whole(ids, 0)
        assert (got - want).abs().max() < (1e-4 if quant == "none" else 0.1 * want.abs().max()), quant


def test_dynamic_int8_packed_in_parts_computes_the_same(monkeypatch):
    """A tall matrix (Gemma 3's unembedding) is packed in parts, side by side: the same outputs, weight and stored
    codes as one packed matrix."""
    if not L.can_dynamic_int8():
        pytest.skip("fbgemm's dynamic int8 linear is not in this build")
    layer = dense(n_out=100)
    whole = L.DynamicInt8Linear(layer)
    monkeypatch.setattr(L, "PACK_ROWS", 40)
    parts = L.DynamicInt8Linear(layer)
    assert len(whole.packed) == 1 and len(parts.packed) == 3
    for tokens in (1, 5):
        x = torch.randn(1, tokens, 64)
        assert torch.equal(parts(x), whole(x))
    assert torch.equal(parts.dequantized_weight(), whole.dequantized_weight())
    assert all(torch.equal(a, b) for a, b in zip(parts.stored().values(), whole.stored().values()))
