"""Linear layers that compute faster than nn.Linear on a CPU: prepacked dense weights, int8 and int4 weights.

Each replaces an nn.Linear in place (same in_features/out_features, same call), and each can give back the weight it
computes with (`dequantized_weight()`); none has a `.weight`, since none keeps one.
Measured on the target machine (2 cores, AVX512-BF16) for a 3072x576 matrix, one token: plain bf16 F.linear 0.19 ms,
the same weight prepacked for oneDNN 0.085 ms; plain float32 0.21-0.27 ms, prepacked 0.15-0.18 ms.
"""

from __future__ import annotations

import functools
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.engine import cpu

# The int8/int4 kernels are fast only with bfloat16 activations (fbgemm's dynamic int8 takes float32), on every CPU:
# float32 activations made SmolLM2's 1536x576 int4 GEMV 15x slower with torch's AVX2 kernels (0.79 against 0.052 ms)
# as with its AVX-512 ones (`ATEN_CPU_CAPABILITY=avx2`, Zen 5, 2 threads).
COMPUTE_DTYPE = torch.bfloat16
# Prompts of at least this many tokens run int8 layers through a dense copy of the weights made on the fly (in a
# scratch matrix): the weight-only kernel is a GEMV kernel whose cost grows with every row, the dequantization is paid
# once per call. Measured on Zen 5 (AVX512-BF16, 2 threads), 8192x2048: 32 rows kernel 4.6 ms, dense 5.2; 64 rows
# kernel 8.9, dense 6.2 (SmolLM2's 1536x576 crosses at the same size).
DENSE_MIN_TOKENS = 48
# Prompts of at least this many tokens run a plain bf16 layer (a CPU without native bf16) through a float32 copy of
# its weight: torch's emulated bf16 GEMM is several times slower than widening once (Bf16Linear).
WIDEN_MIN_TOKENS = 16


@functools.cache
def prompt_dtype() -> torch.dtype:
    """The dtype of the dense GEMMs that prompts run on (int8 and int4 weights dequantized, plain bf16 layers):
    bfloat16 where the CPU multiplies it natively, else float32. Measured with torch's AVX2 kernels
    (ATEN_CPU_CAPABILITY=avx2, 1 thread, 640 tokens x 576 -> 1536): bf16 x @ W 624 ms, bf16 F.linear 58 ms, float32
    F.linear 12.8 ms; with AVX-512 and AVX512-BF16, bf16 3.0 ms against float32's 13.8."""
    return torch.bfloat16 if cpu.info().native_bf16 else torch.float32


def _flat(x: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """x as a contiguous matrix [M, K] of DTYPE (no-op calls skipped: at one token each call costs more than the
    arithmetic). A prompt's half of a fused gate/up output is a strided view, which the int4 kernel refuses."""
    x = x.reshape(-1, k).contiguous()
    return x if x.dtype == dtype else x.to(dtype)


def _unflat(y: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y [M, N] (+ bias) shaped and typed like the input x [..., K]."""
    if bias is not None:
        y += bias
    y = y.view(*x.shape[:-1], y.shape[-1])
    return y if y.dtype == x.dtype else y.to(x.dtype)


def _stored(stored: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """STORED[NAME], checked: a stored quantization that does not fit this layer raises ValueError (the caller then
    quantizes the layer afresh)."""
    t = stored.get(name)
    if t is None or tuple(t.shape) != tuple(shape) or t.dtype != dtype:
        found = "missing" if t is None else f"{t.dtype} {list(t.shape)}"
        raise ValueError(f"stored {name} is {found}, this layer needs {dtype} {list(shape)}")
    # A view of the file lies wherever safetensors put it (8-byte alignment); aten._weight_int8pack_mm reads its
    # weight with 16-byte loads from 4 rows of input up and segfaults on one that is not 16-byte aligned. A copy is.
    return t if t.data_ptr() % 64 == 0 else t.clone()


class PackedLinear(nn.Module):
    """A dense layer whose weight is reordered once into oneDNN's blocked layout (what inductor's freezing does).

    PyTorch's plain bf16 GEMV is a slow kernel (about 15 GB/s here); the prepacked one streams weights at full speed.
    """

    def __init__(self, linear: nn.Linear, weight: torch.Tensor | None = None):
        super().__init__()
        w = (linear.weight if weight is None else weight).detach()
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, w.dtype
        # A plain attribute, not a buffer: an opaque oneDNN tensor that state_dict() and .to() must not touch.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), 1)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def dequantized_weight(self) -> torch.Tensor:
        """The weight, read back through the kernel from the identity (the packed layout is oneDNN's own)."""
        eye = torch.eye(self.in_features, dtype=self.dtype)
        return torch.ops.mkldnn._linear_pointwise(eye, self.packed, None, "none", [], "").T.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


@functools.cache
def can_pack(dtype: torch.dtype = torch.float32) -> bool:
    """True when oneDNN's prepacked linear works here for DTYPE weights: float32 in x86 and most ARM builds, bfloat16
    only where the CPU module says oneDNN takes it (AVX512 BW/VL/DQ or AVX-NE-CONVERT; elsewhere the reorder raises)."""
    if dtype == torch.bfloat16:
        return cpu.onednn_bf16_pack()
    try:
        w = torch.ones(16, 16, dtype=dtype)
        x = torch.ones(1, 16, dtype=dtype)
        y = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, 1), None, "none", [], "")
        return bool(torch.equal(y, x @ w.T))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


class Bf16Linear(nn.Linear):
    """A plain bf16 layer for a CPU where oneDNN cannot pack bf16 (AVX2): one token runs torch's bf16 GEMV, which
    reads half the bytes of float32 (1.46 against 3.24 ms for SmolLM2's packed float32 head, AVX2 kernels); a prompt
    widens the weight and runs the float32 GEMM, since torch's emulated bf16 GEMM is 4.5x slower there (prompt_dtype).
    An nn.Linear still, so readers of .weight see the stored weight."""

    @classmethod
    def of(cls, layer: nn.Linear) -> Bf16Linear:
        """LAYER's own parameters (a tied head stays tied) behind this forward."""
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        new.weight, new.bias = layer.weight, layer.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = prompt_dtype()
        if dt == self.weight.dtype or x.numel() // self.in_features < WIDEN_MIN_TOKENS:
            return F.linear(x, self.weight, self.bias)
        bias = None if self.bias is None else self.bias.to(dt)
        w = _scratch((self.out_features, self.in_features), dt).copy_(self.weight)
        return F.linear(x.to(dt), w, bias).to(x.dtype)


class Int8Linear(nn.Module):
    """Weight-only int8: w = w_int8 * scale, one symmetric scale per output row (aten._weight_int8pack_mm).

    stored: the tensors a former layer's stored() gave, instead of quantizing linear.weight (engine/quantstore.py)."""

    def __init__(self, linear: nn.Linear, stored: dict[str, torch.Tensor] | None = None):
        super().__init__()
        N, K = self.out_features, self.in_features = linear.out_features, linear.in_features
        if stored is None:
            q, scale = quantize_int8_rows(linear.weight.detach())
            scale = scale.to(COMPUTE_DTYPE)
        else:
            q, scale = _stored(stored, "weight_int8", (N, K), torch.int8), _stored(stored, "scales", (N,), COMPUTE_DTYPE)
        self.register_buffer("weight_int8", q)
        self.register_buffer("scales", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(COMPUTE_DTYPE))

    def stored(self) -> dict[str, torch.Tensor]:
        """What a stored quantization keeps of this layer (the bias stays in the model's own weights)."""
        return {"weight_int8": self.weight_int8, "scales": self.scales}

    def dequantized_weight(self) -> torch.Tensor:
        """The weight this layer computes with, float32 [out_features, in_features]."""
        return self.weight_int8.float() * self.scales.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = _flat(x, self.in_features, COMPUTE_DTYPE)
        if x2.shape[0] >= DENSE_MIN_TOKENS:
            y = F.linear(x2.to(prompt_dtype()), self._dequantized())
        else:
            y = torch.ops.aten._weight_int8pack_mm(x2, self.weight_int8, self.scales)  # [M, N]
        return _unflat(y, x, self.bias)

    def _dequantized(self) -> torch.Tensor:
        """The weight in prompt_dtype, in this thread's scratch matrix for the shape (valid until the next layer of
        the same shape runs). An in-place copy then scale: `q.to(bf16) * scale` allocates twice and converts on a
        slow path (8192x2048: 31 ms against 2.2)."""
        w = _scratch((self.out_features, self.in_features), prompt_dtype())
        return w.copy_(self.weight_int8).mul_(self.scales.to(w.dtype)[:, None])


class DynamicInt8Linear(nn.Module):
    """int8 weights, and activations quantized to int8 per token on the fly: fbgemm's VNNI kernels, about twice as
    fast here as the weight-only aten kernel for one token, and faster than the bfloat16 GEMM for a prompt."""

    def __init__(self, linear: nn.Linear, stored: dict[str, torch.Tensor] | None = None):
        super().__init__()
        N, K = self.out_features, self.in_features = linear.out_features, linear.in_features
        if stored is None:
            q, scale = quantize_int8_rows(linear.weight.detach())
        else:  # fbgemm's packed layout is opaque: the codes are stored, and packed again here
            q, scale = _stored(stored, "codes", (N, K), torch.int8), _stored(stored, "scales", (N,), torch.float32)
        parts = [(q[i : i + PACK_ROWS], scale[i : i + PACK_ROWS]) for i in range(0, N, PACK_ROWS)]
        if len(parts) == 1:
            self.packed = [_prepack_int8(*parts[0])]
        else:  # fbgemm's packing runs outside the GIL, so the parts pack side by side
            with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
                self.packed = list(pool.map(lambda part: _prepack_int8(*part), parts))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float())
        # Without VNNI, fbgemm sums pairs of u8 x s8 products in saturating 16 bits (255 * 127 * 2 > 32767): on an
        # AVX2 CPU full-range activations lost up to 25 % of a random layer's output. 7-bit activations cannot
        # saturate, at half the activation resolution (the bound in tests/test_quant.py says how much that costs).
        self.reduce_range = not cpu.info().int8_dot

    def _codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The int8 codes [out_features, in_features] and float32 row scales read back from fbgemm's packed parts
        (exactly what was packed)."""
        rows = [torch.ops.quantized.linear_unpack(p)[0] for p in self.packed]
        return torch.cat([r.int_repr() for r in rows]), torch.cat([r.q_per_channel_scales() for r in rows]).float()

    def dequantized_weight(self) -> torch.Tensor:
        """The weight this layer computes with, float32 [out_features, in_features]."""
        codes, scales = self._codes()
        return codes.float() * scales[:, None]

    def stored(self) -> dict[str, torch.Tensor]:
        """What a stored quantization keeps of this layer: its codes and row scales."""
        codes, scales = self._codes()
        return {"codes": codes, "scales": scales}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = _flat(x, self.in_features, torch.float32)  # fbgemm takes float32 activations
        if x2.shape[0] == 1:
            y = self._linear(x2)
        else:
            # fbgemm quantizes the whole activation matrix with one scale; dividing each row by its own max first makes
            # that scale per token, so one loud token does not flatten the others.
            amax = x2.abs().amax(-1, keepdim=True).clamp(min=1e-8)  # [M, 1]
            y = self._linear(x2 / amax) * amax
        return _unflat(y, x, self.bias)

    def _linear(self, x2: torch.Tensor) -> torch.Tensor:
        if len(self.packed) == 1:
            return torch.ops.quantized.linear_dynamic(x2, self.packed[0], self.reduce_range)
        return torch.cat([torch.ops.quantized.linear_dynamic(x2, p, self.reduce_range) for p in self.packed], -1)


# fbgemm packs a tall matrix several times slower per row than a few shorter ones: Gemma 3's 262,144 x 640 unembedding
# took 3.1 s whole, and 0.74 s as 8 parts of 32,768 rows packed on 2 threads (SmolLM2's 49,152 rows: 0.26 -> 0.16 s).
# Each part costs one more call per token, +0.05-0.08 ms for those two heads, so the parts stay large.
PACK_ROWS = 32768


def _prepack_int8(q: torch.Tensor, scale: torch.Tensor):
    """fbgemm's packed weight for int8 codes Q [N, K] with one float32 scale per row."""
    with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao, which we do not ship
        warnings.simplefilter("ignore")
        qw = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
        return torch.ops.quantized.linear_prepack(qw, None)  # fbgemm's own layout; q is not kept


@functools.cache
def can_dynamic_int8() -> bool:
    """True when fbgemm's dynamic int8 linear works in this build (x86 with the quantized engines compiled in)."""
    try:
        Linear = nn.Linear(32, 16)
        DynamicInt8Linear(Linear)(torch.ones(1, 32))
        return True
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


class Int4Linear(nn.Module):
    """Asymmetric 4-bit weights in groups of `group_size` inputs: w = (q - 8) * scale + zero, per group and row.

    A decode step runs the int4 kernel. That kernel dequantizes its weights again for every few rows of input, so a
    prompt of at least INT4_DENSE_MIN_TOKENS tokens instead dequantizes the weight once into a scratch matrix (bfloat16,
    or float32 where bf16 is emulated: prompt_dtype)
    and runs the dense GEMM on it (measured on SmolLM2's 30 blocks, 2 threads: 128 tokens 150 against 184 ms, 256
    tokens 238 against 368; at 64 tokens the two tie).
    """

    def __init__(self, linear: nn.Linear, group_size: int, stored: dict[str, torch.Tensor] | None = None):
        super().__init__()
        N, K = linear.out_features, linear.in_features
        self.in_features, self.out_features, self.group_size = K, N, group_size
        block = int4_block_n()
        dense = block is not None and N % block == 0  # whether prompts can dequantize from the packed layout
        groups = K // group_size
        if stored is None:
            q, scale, zero = quantize_int4_groups(linear.weight.detach(), group_size)
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)  # [N, K/2] uint8, the kernel's own layout
            # The kernel's layout: [K / group_size, N, 2] holding (scale, zero) per group and output row.
            scales_and_zeros = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(COMPUTE_DTYPE)
            # For prompts: w = q * scale + (zero - 8 * scale), as [K / group_size, 1, N] to broadcast over a group's
            # rows (4 bytes per group and row: 13 MB for SmolLM2).
            if dense:
                row_scales = scale.T.unsqueeze(1).to(COMPUTE_DTYPE).contiguous()
                row_offsets = (zero - 8.0 * scale).T.unsqueeze(1).to(COMPUTE_DTYPE).contiguous()
        else:
            # The packed layout is the kernel's for this torch and CPU, both part of the stored file's key.
            packed = _stored(stored, "weight_int4", (N, K // 2), torch.uint8)
            scales_and_zeros = _stored(stored, "scales_and_zeros", (groups, N, 2), COMPUTE_DTYPE)
            if dense:
                row_scales = _stored(stored, "row_scales", (groups, 1, N), COMPUTE_DTYPE)
                row_offsets = _stored(stored, "row_offsets", (groups, 1, N), COMPUTE_DTYPE)
        self.register_buffer("weight_int4", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(COMPUTE_DTYPE))
        if dense:  # derived state: not in state_dict(), but kept by a stored quantization
            self.register_buffer("row_scales", row_scales, persistent=False)
            self.register_buffer("row_offsets", row_offsets, persistent=False)
        else:
            self.row_scales = self.row_offsets = None

    def stored(self) -> dict[str, torch.Tensor]:
        """What a stored quantization keeps of this layer: the kernel's packed weight and every scale it uses."""
        out = {"weight_int4": self.weight_int4, "scales_and_zeros": self.scales_and_zeros}
        if self.row_scales is not None:
            out |= {"row_scales": self.row_scales, "row_offsets": self.row_offsets}
        return out

    def dequantized_weight(self) -> torch.Tensor:
        """The weight this layer computes with, float32 [out_features, in_features] (read through the kernel, whose
        packed layout is its own, from the identity)."""
        eye = torch.eye(self.in_features, dtype=COMPUTE_DTYPE)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.weight_int4, self.group_size, self.scales_and_zeros).float().T.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = _flat(x, self.in_features, COMPUTE_DTYPE)
        if x2.shape[0] >= INT4_DENSE_MIN_TOKENS and self.row_scales is not None:
            w = self._dequantize_transposed()
            y = x2.to(w.dtype) @ w
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.weight_int4, self.group_size, self.scales_and_zeros)  # [M, N]
        return _unflat(y, x, self.bias)

    def _dequantize_transposed(self) -> torch.Tensor:
        """The weight transposed, bfloat16 [K, N], in this thread's scratch matrix for the shape (valid until the next
        layer of the same shape runs). The kernel packs each block of B output rows (64 for AVX-512, 32 for AVX2) as
        [K, B/2] bytes: row j in the low nibble, row B/2 + j in the high one, which as [K, N] is one strided copy per
        nibble."""
        K, N, gs, B = self.in_features, self.out_features, self.group_size, int4_block_n()
        out = _scratch((K, N), prompt_dtype())
        packed = self.weight_int4.view(N // B, K, B // 2).transpose(0, 1)  # [K, N/B, B/2]
        view = out.view(K, N // B, B)
        view[..., : B // 2] = packed & 15
        view[..., B // 2 :] = packed >> 4
        groups = out.view(K // gs, gs, N)
        torch.addcmul(self.row_offsets, groups, self.row_scales, out=groups)
        return out


INT4_DENSE_MIN_TOKENS = 80
_scratch_space = threading.local()


def _scratch(shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """A matrix of SHAPE and DTYPE reused by every call in this thread: a fresh 3.5 MB allocation per layer costs page
    faults (at 40 tokens, 118 against 83 ms for the 120 int4 layers of SmolLM2)."""
    buffers = _scratch_space.__dict__.setdefault("buffers", {})
    if (shape, dtype) not in buffers:
        buffers[shape, dtype] = torch.empty(shape, dtype=dtype)
    return buffers[shape, dtype]


@functools.cache
def int4_block_n() -> int | None:
    """Output rows per block of the int4 kernel's packed layout, when it is the one _dequantize_transposed reads; None
    when not (prompts then run through the kernel). The block follows torch's dispatch level (the CPU module's
    guess), and since the layout is private it is checked on a known matrix, once per process, rather than trusted."""
    B = cpu.int4_block_n()
    q = torch.randint(0, 16, (2 * B, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    try:
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        v = packed.view(2, 64, B // 2)
        unpacked = torch.cat([v & 15, v >> 4], -1).transpose(1, 2).reshape(2 * B, 64)
    except (RuntimeError, AttributeError, NotImplementedError):
        return None
    return B if torch.equal(unpacked.to(torch.int32), q) else None


ROW_CHUNK = 4096  # rows quantized at a time, so a 49152-row unembedding never has a float32 copy in memory


def quantize_int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (int8 [N, K]) and one symmetric float32 scale per row ([N]) with w ≈ q * scale."""
    q = torch.empty(w.shape, dtype=torch.int8)
    scale = torch.empty(w.shape[0])
    for i in range(0, w.shape[0], ROW_CHUNK):
        rows = w[i : i + ROW_CHUNK].to(torch.float32, copy=True)  # a copy: the in-place steps must not touch w
        lo, hi = torch.aminmax(rows, dim=1)  # one pass for both ends (this runs at every load)
        s = torch.maximum(-lo, hi).clamp(min=1e-8) / 127.0
        q[i : i + ROW_CHUNK] = rows.div_(s[:, None]).round_().clamp_(-127, 127)
        scale[i : i + ROW_CHUNK] = s
    return q, scale


def quantize_int4_groups(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes q in 0..15 (int32 [N, K]), scale and zero ([N, K/group_size]) with w ≈ (q - 8) * scale + zero.

    Each group's range is its min..max, so both extremes are represented exactly (asymmetric, like llama.cpp's Q4_1,
    which is what SmolLM2's source GGUF holds: int4 in groups of 32 then reproduces it nearly exactly).
    """
    N, K = w.shape
    q = torch.empty(N, K, dtype=torch.int32)
    scale, zero = torch.empty(N, K // group_size), torch.empty(N, K // group_size)
    for i in range(0, N, ROW_CHUNK):
        g = w[i : i + ROW_CHUNK].to(torch.float32, copy=True).view(-1, K // group_size, group_size)
        lo, hi = torch.aminmax(g, dim=-1)  # [rows, K/gs], in one pass; in place below: this runs at every load
        s = ((hi - lo) / 15.0).clamp(min=1e-8)
        q[i : i + ROW_CHUNK] = g.sub_(lo[..., None]).div_(s[..., None]).round_().clamp_(0, 15).view(-1, K)
        scale[i : i + ROW_CHUNK], zero[i : i + ROW_CHUNK] = s, lo + 8.0 * s
    return q, scale, zero


def int4_group_size(in_features: int, out_features: int) -> int | None:
    """Groups of 32 inputs (as fast here as 64, and more accurate), or 64; None when the kernel cannot take the layer."""
    if out_features % 16:  # the packing kernel tiles output rows by 16
        return None
    return next((g for g in (32, 64) if in_features % g == 0), None)
