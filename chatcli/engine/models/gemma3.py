"""Gemma 3 (text): sandwich-normed blocks whose sliding-window local attention interleaves with global attention.

Differences from the Llama family: the embedding is scaled by sqrt(hidden_size); RMSNorm scales by (1 + weight) in
float32; four norms per block; q and k are RMS-normed per head; the attention scale is query_pre_attn_scalar**-0.5;
the MLP is GeGLU (tanh GELU); local and global layers use different RoPE bases; the embeddings are tied.

Local layers keep their keys and values in a ring buffer of window + rewind slots written at position % size, so a
long chat costs them constant memory. The ring can be rewound only so far: see Model.max_reusable_prefix.

attn_logit_softcapping is ignored, as transformers' Gemma 3 ignores it (q/k norms replaced Gemma 2's soft-capping);
final_logit_softcapping is applied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.engine.cache import KVCache, ModelCache, ragged_mask
from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import EngineError, ModelLoadError
from chatcli.engine.layers import causal_mask
from chatcli.engine.models.base import FamilyModel, eager_probs, rope_from_zero, split_heads
from chatcli.engine.rope import apply_rope, cos_sin, inv_frequencies

LOCAL, GLOBAL = "sliding_attention", "full_attention"
GELU_APPROXIMATION = {"gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu": "none"}
FAR_PAST = -(2**62)  # the position given to an empty or stale ring slot: outside every window


def layer_types(c: ModelConfig) -> list[str]:
    """The per-layer attention kind from layer_types, or from the older sliding_window_pattern (every Nth is global)."""
    if c.layer_types is not None:
        kinds = list(c.layer_types)
        if len(kinds) != c.num_hidden_layers or any(k not in (LOCAL, GLOBAL) for k in kinds):
            raise ModelLoadError(
                f"config.json: layer_types must list {c.num_hidden_layers} entries of {LOCAL!r} or {GLOBAL!r}, got {kinds!r}"
            )
        return kinds
    pattern = c.sliding_window_pattern or c.extra.get("_sliding_window_pattern") or 6
    return [LOCAL if (i + 1) % pattern else GLOBAL for i in range(c.num_hidden_layers)]


class GemmaRMSNorm(nn.Module):
    """RMS norm scaled by (1 + weight), multiplied in float32 before the cast back (unlike Llama's norm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.register_buffer("scale", None, persistent=False)  # 1 + weight in float32, once the weights are in

    def prepare(self) -> None:
        """Precompute the float32 scale from the loaded weight: the same numbers as computing it per call, and an
        exported step then reads it as a named constant rather than one inductor derives (which chatcli could not
        bind to the model's own tensors)."""
        self.scale = 1.0 + self.weight.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        scale = self.scale if self.scale is not None else 1.0 + self.weight.float()
        return (h * scale).to(x.dtype)


class RingKVCache:
    """Keys and values of the last `size` positions, [B, n_kv_heads, size, head_dim]; position p lives in slot p % size."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v, self.size = k, v, k.shape[2]

    @classmethod
    def zeros(cls, batch: int, n_kv_heads: int, size: int, head_dim: int, dtype: torch.dtype) -> RingKVCache:
        # zeros, not empty: attention reads every slot and masks the unwritten ones, and a masked NaN would still
        # poison the output (0 * NaN).
        shape = (batch, n_kv_heads, size, head_dim)
        return cls(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))

    def write(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v [B, KV, T, D] of positions start_pos.. ; only the last `size` of them can stay. The slots are
        a tensor, so an exported step keeps one graph for every position (a slice would need the remainder as a
        symbolic size)."""
        T = k.shape[2]
        keep = min(T, self.size)
        slots = torch.arange(start_pos + T - keep, start_pos + T) % self.size
        self.k.index_copy_(2, slots, k[:, :, T - keep :])
        self.v.index_copy_(2, slots, v[:, :, T - keep :])

    def write_rows(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """One token per row, k, v [B, KV, D], row b at position pos[b]."""
        rows = torch.arange(k.shape[0])
        self.k[rows, :, pos % self.size] = k
        self.v[rows, :, pos % self.size] = v

    def zero(self, b: int, start: int, end: int) -> None:
        """Nothing to do: the ring starts zeroed and its slots always hold numbers."""

    def rows(self, start: int, stop: int) -> RingKVCache:
        return RingKVCache(self.k[start:stop], self.v[start:stop])

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class GemmaCache(ModelCache):
    """Global layers' full caches and local layers' rings, and per row the span [lo, hi) of positions every ring
    holds for that row's tokens (the rings can be rewound only within it)."""

    def __init__(self, layers: list, batch: int, max_len: int, window: int, ring_size: int,
                 tokens: list[list[int]] | None = None, clean: torch.Tensor | None = None, spans: list[list[int]] | None = None):
        super().__init__(layers, batch, max_len, tokens, clean)
        self.window, self.ring_size = window, ring_size
        self.spans = spans if spans is not None else [[0, 0] for _ in range(batch)]

    @classmethod
    def _view(cls, parent: GemmaCache, start: int, stop: int) -> GemmaCache:
        return cls([layer.rows(start, stop) for layer in parent.layers], stop - start, parent.max_len, parent.window,
                   parent.ring_size, parent.tokens[start:stop], parent.clean[start:stop], parent.spans[start:stop])

    def reusable(self, b: int, n: int) -> int:
        """N, or 0 when the rings no longer hold the window before position N (the prompt is then prefilled whole)."""
        if not self.ring_size:
            return n
        lo, hi = self.spans[b]
        s = min(n, hi)
        return s if max(0, s - self.window + 1) >= min(lo, s) else 0

    def claim(self, b: int, s: int, T: int) -> torch.Tensor:
        """Check that row B's rings hold the window before position s, mark what a forward of T tokens from s
        overwrites, and return the local layers' mask: [T, size + T] over (ring as it was, the chunk) for a chunk,
        [1, size] for one token."""
        C, W = self.ring_size, self.window
        lo, hi = self.spans[b]
        if s > hi or max(0, s - W + 1) < min(lo, s):
            raise EngineError(
                f"the sliding-window cache holds positions {lo}..{hi - 1} and cannot resume at position {s}; "
                f"prefill from model.max_reusable_prefix() (0 means from the start)"
            )
        lo = min(lo, s)  # positions >= s are stale from here on; if the forward is interrupted, so is the overwritten tail
        self.spans[b][:] = [max(lo, s + T - C), s]
        last = s if T == 1 else s - 1  # the newest position in the ring when attention reads it
        slot_pos = last - torch.remainder(last - torch.arange(C), C)  # the position each slot holds [C]
        slot_pos = torch.where(slot_pos >= lo, slot_pos, FAR_PAST)
        if T == 1:
            return (slot_pos > s - W).unsqueeze(0)  # [1, C]
        keys = torch.cat((slot_pos, torch.arange(s, s + T)))  # [C + T]
        q = torch.arange(s, s + T).unsqueeze(1)  # [T, 1]
        return (keys <= q) & (keys > q - W)

    def done(self, b: int, last: int) -> None:
        """Row B's rings now hold positions up to LAST."""
        if self.ring_size:
            lo = self.spans[b][0]
            self.spans[b][:] = [max(lo, last + 1 - self.ring_size), last + 1]


class Attention(nn.Module):
    """Grouped-query attention with per-head q/k norms; global layers cache every position, local ones a ring."""

    def __init__(self, config: ModelConfig, kind: str):
        super().__init__()
        c = config
        self.n_heads, self.n_kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.n_heads * self.head_dim, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, self.n_kv_heads * self.head_dim, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, self.n_kv_heads * self.head_dim, bias=c.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, c.hidden_size, bias=c.attention_bias)
        self.q_norm = GemmaRMSNorm(self.head_dim, c.rms_norm_eps)
        self.k_norm = GemmaRMSNorm(self.head_dim, c.rms_norm_eps)
        self.is_local = kind == LOCAL
        self.scale = (c.query_pre_attn_scalar or 256) ** -0.5

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int | torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | RingKVCache) -> torch.Tensor:
        """start_pos a tensor [B]: one token per row at its own position, under the rows' MASK [B, 1, 1, slots]."""
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2))  # [B, H, T, D]
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2))  # [B, KV, T, D]
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if isinstance(start_pos, torch.Tensor):
            cache.write_rows(start_pos, k[:, :, 0], v[:, :, 0])
            L = mask.shape[-1]
            k, v = cache.k[:, :, :L], cache.v[:, :, :L]
        elif self.is_local and T == 1:
            # The slot a decode step overwrites held position start_pos - size, outside the window already.
            cache.write(start_pos, k, v)
            k, v = cache.k, cache.v  # [B, KV, size, D]
        elif self.is_local:
            # A chunk attends over the ring as it was plus its own keys, so a chunk longer than the ring still sees
            # every key of its window; the concatenation is a copy, so the ring can be overwritten right after.
            k_all, v_all = torch.cat((cache.k, k), 2), torch.cat((cache.v, v), 2)  # [B, KV, size+T, D]
            cache.write(start_pos, k, v)
            k, v = k_all, v_all
        elif T == 1:
            cache.k[:, :, start_pos : start_pos + 1].copy_(k)  # a slice copy, which an exported step keeps symbolic
            cache.v[:, :, start_pos : start_pos + 1].copy_(v)
            k, v = cache.k[:, :, : start_pos + 1], cache.v[:, :, : start_pos + 1]
        else:
            k, v = cache.update(start_pos, k, v)  # [B, KV, start_pos+T, D]
        if T == 1 and self.n_kv_heads != self.n_heads:
            # One query per head: the heads sharing a KV head become rows of one attention, which CPU kernels run
            # several times faster than enable_gqa (10x in bfloat16) for a decode step.
            rows = q.reshape(B, self.n_kv_heads, self.n_heads // self.n_kv_heads, self.head_dim)  # [B, KV, H/KV, D]
            out = F.scaled_dot_product_attention(rows, k, v, attn_mask=mask, scale=self.scale).reshape(B, self.n_heads, 1, self.head_dim)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=self.n_kv_heads != self.n_heads)  # [B, H, T, D]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))  # [B, T, hidden]


class MLP(nn.Module):
    """GeGLU: down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        act = config.hidden_activation or "gelu_pytorch_tanh"
        if act not in GELU_APPROXIMATION:
            raise ModelLoadError(f"config.json: hidden_activation {act!r} is not supported (supported: {', '.join(GELU_APPROXIMATION)})")
        self.approximate = GELU_APPROXIMATION[act]
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate=self.approximate) * self.up_proj(x))


class Block(nn.Module):
    """h = x + norm(attn(norm(x))); out = h + norm(mlp(norm(h))): every sublayer is normed before and after."""

    def __init__(self, config: ModelConfig, kind: str):
        super().__init__()
        dim, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(dim, eps)
        self.self_attn = Attention(config, kind)
        self.post_attention_layernorm = GemmaRMSNorm(dim, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(dim, eps)
        self.mlp = MLP(config)
        self.post_feedforward_layernorm = GemmaRMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start_pos: int | torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | RingKVCache) -> torch.Tensor:
        h = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, start_pos, mask, cache))
        return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))


class Backbone(nn.Module):
    """Embedding, blocks and the final norm: the `model.` prefix of the checkpoint."""

    def __init__(self, config: ModelConfig, kinds: list[str]):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, kind) for kind in kinds)
        self.norm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps)


class Model(FamilyModel):
    """tokens -> scaled embedding -> local/global blocks -> norm -> tied unembedding -> logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.extra.get("use_bidirectional_attention"):
            raise ModelLoadError("config.json: use_bidirectional_attention is true (an embedding model); chatcli runs causal language models only")
        self.config = config
        self.kinds = layer_types(config)
        self.window = config.sliding_window or 4096  # transformers' Gemma3TextConfig default
        if self.window <= 0:
            raise ModelLoadError(f"config.json: sliding_window must be positive, got {self.window}")
        self.model = Backbone(config, self.kinds)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.max_seq_len = 0
        self.ring_size = 0  # slots of each local layer's ring; 0 when there are no local layers

    def prepare(self) -> None:
        """Called by the loader once the weights are in: precompute every norm's scale."""
        for m in self.modules():
            if isinstance(m, GemmaRMSNorm):
                m.prepare()

    def tie_weights(self) -> None:
        """Share the unembedding with the embedding (Gemma 3 checkpoints always tie them)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def compute_dtype(self) -> torch.dtype:
        """What activations and the KV cache use: the final norm's dtype (the embedding table may stay narrower)."""
        return self.model.norm.weight.dtype

    def make_cache(self, batch: int = 1, max_len: int | None = None) -> GemmaCache:
        """Caches for BATCH rows: global layers cache every position up to MAX_LEN (default: setup_cache's), local
        layers a ring of ring_size slots."""
        c, max_len = self.config, max_len or self.max_seq_len
        ring = min(self.ring_size, max_len)
        layers = [RingKVCache.zeros(batch, c.num_key_value_heads, ring, c.head_dim, self.compute_dtype) if layer.self_attn.is_local
                  else KVCache.empty(batch, c.num_key_value_heads, max_len, c.head_dim, self.compute_dtype) for layer in self.model.layers]
        return GemmaCache(layers, batch, max_len, self.window, ring)

    def setup_cache(self, max_seq_len: int | None = None, batch: int = 1, rewind: int | None = None) -> None:
        """The RoPE frequencies and the model's own cache for up to max_seq_len positions (default: the model's
        context).

        Global layers get a cache of every position; local layers a ring of window + REWIND slots (default: one more
        window), so a later prompt may diverge from the cached tokens up to REWIND positions back and still reuse it.
        """
        c = self.config
        self.max_seq_len = max_seq_len or c.max_position_embeddings
        rewind = self.window if rewind is None else rewind
        self.ring_size = min(self.max_seq_len, self.window + rewind) if LOCAL in self.kinds else 0
        self.cache = self.make_cache(batch)
        # cos/sin are computed per forward from these (as transformers does): two full tables would cost as much
        # memory as the global KV cache. Buffers, so that an exported step finds them by name among its constants.
        inv_global, self.rope_global_scaling = inv_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
        inv_local, self.rope_local_scaling = inv_frequencies(c.head_dim, c.rope_local_base_freq or 10000.0, None)
        self.register_buffer("rope_global_inv_freq", inv_global, persistent=False)
        self.register_buffer("rope_local_inv_freq", inv_local, persistent=False)
        # transformers multiplies by sqrt(hidden_size) rounded to the weights' dtype (55.4256 becomes 55.5 in bf16).
        self.embed_scale = float(torch.tensor(c.hidden_size**0.5, dtype=torch.float32, device="cpu").to(self.compute_dtype))

    def forward(self, tokens: torch.Tensor, start_pos: int | torch.Tensor = 0, last_only: bool = False,
                cache: GemmaCache | None = None) -> torch.Tensor:
        """Logits (float32) [B, T, vocab] for tokens [B, T] placed at positions start_pos..start_pos+T-1 of CACHE
        (default: the model's own); start_pos a tensor [B]: one token per row, row b at start_pos[b].

        last_only: only the last position's logits [B, 1, vocab]; a prefill needs no more, and Gemma's 262k-row
        unembedding costs about as much as the rest of the model per position.
        """
        cache = self.cache if cache is None else cache
        T = tokens.shape[1]
        if isinstance(start_pos, torch.Tensor):
            pos = start_pos.tolist()
            local = torch.stack([cache.claim(b, p, 1) for b, p in enumerate(pos)])[:, None] if cache.ring_size else None  # [B, 1, 1, C]
            hidden = self.body(tokens, start_pos, cache, [local] if local is not None else [])
            for b, p in enumerate(pos):
                cache.done(b, p)
        else:
            if start_pos + T > cache.max_len:
                raise EngineError(f"positions {start_pos}..{start_pos + T - 1} do not fit the cache of {cache.max_len}; "
                                  "call setup_cache with a larger max_seq_len")
            # Every row of one call is at the same place, so their rings hold the same span: one mask serves all.
            local = [cache.claim(b, start_pos, T) for b in range(cache.batch)][0] if cache.ring_size else None
            hidden = self.body(tokens, start_pos, cache, [local] if local is not None else [])
            for b in range(cache.batch):
                cache.done(b, start_pos + T - 1)
        return self.unembed(hidden[:, -1:] if last_only else hidden)

    def body(self, tokens: torch.Tensor, start_pos: int | torch.Tensor, cache: GemmaCache, extras: list[torch.Tensor]) -> torch.Tensor:
        """The final norm's output [B, T, hidden]; EXTRAS: the local layers' mask over the ring, computed by the
        caller (forward, or decode_extras for an exported step, which cannot keep the ring bookkeeping in its graph)."""
        T = tokens.shape[1]
        local_mask = extras[0] if extras else None
        if isinstance(start_pos, torch.Tensor):
            L = int(start_pos.max()) + 1
            cache.ready(start_pos, L)
            global_mask = ragged_mask(start_pos, L)
            positions, shape = start_pos.float(), (-1, 1, 1, self.config.head_dim)  # cos/sin rows per row, [B, 1, 1, D]
        else:
            global_mask = causal_mask(start_pos, T)
            positions, shape = torch.arange(start_pos, start_pos + T, dtype=torch.float32), (T, -1)
        dtype = self.compute_dtype
        rope = {kind: tuple(t.to(dtype).reshape(shape) for t in cos_sin(positions, inv, scaling)) for kind, inv, scaling in
                ((LOCAL, self.rope_local_inv_freq, self.rope_local_scaling), (GLOBAL, self.rope_global_inv_freq, self.rope_global_scaling))}
        x = self.model.embed_tokens(tokens).to(dtype) * self.embed_scale  # [B, T, hidden]
        for layer, kind, layer_cache in zip(self.model.layers, self.kinds, cache.layers):
            x = layer(x, *rope[kind], start_pos, local_mask if kind == LOCAL else global_mask, layer_cache)
        return self.model.norm(x)

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits (float32) from the final norm's output, soft-capped as the config says."""
        logits = self.lm_head(hidden).float()
        cap = self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def decode_extras(self, pos: int) -> list[torch.Tensor]:
        """What an exported one-token step at POS takes besides the token and the caches: the local layers' mask
        over the ring (claiming the slot POS overwrites, as a forward pass does)."""
        return [self.cache.claim(0, pos, 1)] if self.ring_size else []

    def decode_done(self, last: int) -> None:
        """The rings now hold positions up to LAST (after an exported step ending there)."""
        self.cache.done(0, last)

    @classmethod
    def exportable(cls, config: ModelConfig) -> bool:
        """Local layers read their whole ring under a mask computed outside the graph (decode_extras), so the step
        exports whatever the window."""
        return True

    def attention_probs(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Per-head RMS-normed q and k, RoPE with the layer kind's base (local or global), scale
        query_pre_attn_scalar^-½, and the sliding window on local layers; [B, H, T, T]."""
        c = self.config
        theta, scaling = (c.rope_local_base_freq or 10000.0, None) if attn.is_local else (c.rope_theta, c.rope_scaling)
        q = rope_from_zero(attn.q_norm(split_heads(attn.q_proj(x), attn.n_heads, attn.head_dim)), theta, scaling)
        k = rope_from_zero(attn.k_norm(split_heads(attn.k_proj(x), attn.n_kv_heads, attn.head_dim)), theta, scaling)
        scale = (c.query_pre_attn_scalar or 256) ** -0.5
        return eager_probs(q, k, attn.n_heads, scale, self.window if attn.is_local else None)
