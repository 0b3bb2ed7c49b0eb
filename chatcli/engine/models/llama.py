"""The Llama family (llama, mistral, qwen2): pre-norm blocks of grouped-query attention with RoPE and a SwiGLU MLP.

Parameter names are the checkpoint's own (model.layers.N.self_attn.o_proj ...) but for two fused layers, built fused:
self_attn.qkv_proj (q_proj, k_proj, v_proj stacked) and mlp.gate_up_proj (gate_proj, up_proj), one GEMV each per
token instead of three and two. sanitize() stacks the checkpoint's tensors into them before loading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from chatcli.engine.cache import KVCache, ModelCache, ragged_mask
from chatcli.engine.config import ModelConfig
from chatcli.engine.errors import ModelLoadError
from chatcli.engine.layers import RMSNorm, causal_mask
from chatcli.engine.models.base import FamilyModel, eager_probs, stack_rows
from chatcli.engine.rope import Rope, rope_tables, rotate, split_tables

# The layers this family computes as one, and the checkpoint's layers stacked into each (rows in this order).
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def attention_window(config: ModelConfig) -> int | None:
    """How many past positions a query may see: mistral's sliding window; the others see the whole context."""
    return config.sliding_window if config.model_type == "mistral" else None


class Attention(nn.Module):
    """Causal self-attention with grouped-query heads, RoPE and a KV cache."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.groups = self.n_heads // self.n_kv_heads
        # qwen2 always has q/k/v biases; llama and mistral have them when attention_bias says so.
        qkv_bias = config.attention_bias or config.model_type == "qwen2"
        self.qkv_proj = nn.Linear(config.hidden_size, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)
        self.window = attention_window(config)
        self.use_rope = True  # SmolLM3 turns RoPE off in some layers

    def position_qk(self, qk: torch.Tensor, rope: Rope) -> torch.Tensor:
        """The q and k heads [..., H+KV, D] as attention compares them: rotated here; families with q/k norms
        (Qwen3, OLMo 2) norm them first by overriding this."""
        return rotate(qk, rope) if self.use_rope else qk

    def forward(self, x: torch.Tensor, rope: Rope, start_pos: int | torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache) -> torch.Tensor:
        """x [B, T, hidden] at positions start_pos.. (mask: the causal mask of those T queries; unused for one token).

        start_pos may be a tensor [B] for one token per row, each at its own position (ragged batched decode); mask
        is then the rows' mask over the cache (cache.ragged_mask)."""
        B, T, _ = x.shape
        H, KV, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv_proj(x)
        if isinstance(start_pos, torch.Tensor):
            return self._decode_rows(qkv.view(B, H + 2 * KV, D), rope, start_pos, mask, cache)
        if T == 1:
            return self._decode(qkv.view(B, H + 2 * KV, D), rope, start_pos, cache.k, cache.v)
        qkv = qkv.view(B, T, H + 2 * KV, D)
        qk = self.position_qk(qkv[:, :, : H + KV], rope)  # q and k heads rotated together: [B, T, H+KV, D]
        q = qk[:, :, :H].transpose(1, 2)  # [B, H, T, D]
        k = qk[:, :, H:].transpose(1, 2)  # [B, KV, T, D]
        v = qkv[:, :, H + KV :].transpose(1, 2)
        k, v = cache.update(start_pos, k, v)  # [B, KV, start_pos+T, D]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=KV != H)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * D))  # [B, T, hidden]

    def _decode(self, qkv: torch.Tensor, rope: Rope, pos: int, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        """One token, qkv [B, H+2KV, D]: the same math as forward() in the fewest ops (this runs once per layer and
        token, and at this size each op costs more in dispatch than in arithmetic)."""
        B, H, KV, D = qkv.shape[0], self.n_heads, self.n_kv_heads, self.head_dim
        qk = self.position_qk(qkv[:, : H + KV], rope)  # [B, H+KV, D]
        # The cache slot of this position, [B, KV, 1, D]; a slice, not an index, so an exported graph keeps pos symbolic.
        k_cache[:, :, pos : pos + 1].copy_(qk[:, H:, None])
        v_cache[:, :, pos : pos + 1].copy_(qkv[:, H + KV :, None])
        lo = 0 if self.window is None else max(0, pos + 1 - self.window)
        # No mask: the token sees the whole (windowed) cache. The G query heads sharing a kv head act as G query rows
        # of that head: grouped-query attention without repeating k and v.
        out = F.scaled_dot_product_attention(qk[:, :H].view(B, KV, self.groups, D), k_cache[:, :, lo : pos + 1], v_cache[:, :, lo : pos + 1])
        return self.o_proj(out.view(B, 1, H * D))  # heads in order kv*G + g: [B, 1, hidden]

    def _decode_rows(self, qkv: torch.Tensor, rope: Rope, pos: torch.Tensor, mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token per row, row b at pos[b]: written at its own slot, attending under MASK [B, 1, 1, L] over the
        first L = max(pos) + 1 slots (a shorter row's unwritten tail is masked)."""
        B, H, KV, D = qkv.shape[0], self.n_heads, self.n_kv_heads, self.head_dim
        qk = self.position_qk(qkv[:, : H + KV], rope)  # rope rows gathered per row: [B, 1, D]
        cache.write_rows(pos, qk[:, H:], qkv[:, H + KV :])
        L = mask.shape[-1]
        out = F.scaled_dot_product_attention(qk[:, :H].view(B, KV, self.groups, D), cache.k[:, :, :L], cache.v[:, :, :L], attn_mask=mask)
        return self.o_proj(out.reshape(B, 1, H * D))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        bias = config.mlp_bias
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, -1)  # [B, T, intermediate] each, halves of a fresh output
        # In place: at one token each saved allocation is worth more than the arithmetic.
        return self.down_proj(F.silu(gate, inplace=True).mul_(up))


class Block(nn.Module):
    """x + attn(norm(x)), then h + mlp(norm(h))."""

    attention_class, mlp_class = Attention, MLP  # what a family built on this one swaps (OLMo 2's q/k norms)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = self.attention_class(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = self.mlp_class(config)

    def forward(self, x: torch.Tensor, rope: Rope, start_pos: int | torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x), rope, start_pos, mask, cache)
        h += x  # the residual added into the projection's fresh output rather than into a new tensor
        out = self.mlp(self.post_attention_layernorm(h))
        out += h
        return out


class Backbone(nn.Module):
    """Embedding, blocks and the final norm: the `model.` prefix of the checkpoint."""

    def __init__(self, config: ModelConfig, block_class: type[nn.Module] = Block):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(block_class(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Model(FamilyModel):
    """tokens -> embedding -> blocks -> norm -> unembedding -> logits."""

    block_class = Block
    fused = FUSED  # what sanitize() stacks (Phi-3's checkpoint holds the fused layers already)
    window_of = staticmethod(attention_window)  # the sliding window a config gives (compile asks the class before loading)

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.hidden_act not in ("silu", "swish"):  # the MLP below is SwiGLU; another activation would be wrong numbers
            raise ModelLoadError(f"config.json: hidden_act {config.hidden_act!r} is not supported by {config.model_type} (supported: silu)")
        self.config = config
        self.model = Backbone(config, self.block_class)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.max_seq_len = 0
        self.rotary_dim = config.head_dim  # how many leading dimensions of each head rotate (Phi-3: fewer)
        self.rope_scaling = config.rope_scaling
        self.window = self.window_of(config)

    def sanitize(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The checkpoint's q/k/v and gate/up weights (and biases: qwen2's q/k/v) stacked into the fused layers."""
        return stack_rows(super().sanitize(state), self.fused)

    def tie_weights(self) -> None:
        """Share the unembedding with the embedding when the checkpoint says so."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def compute_dtype(self) -> torch.dtype:
        """What activations and the KV cache use: the final norm's dtype (the embedding table may stay narrower)."""
        return self.model.norm.weight.dtype

    def make_cache(self, batch: int = 1, max_len: int | None = None) -> ModelCache:
        """KV caches for BATCH rows of up to MAX_LEN positions (default: the length setup_cache allowed)."""
        c, max_len = self.config, max_len or self.max_seq_len
        layers = [KVCache.empty(batch, c.num_key_value_heads, max_len, c.head_dim, self.compute_dtype) for _ in self.model.layers]
        return ModelCache(layers, batch, max_len)

    def setup_cache(self, max_seq_len: int | None = None, batch: int = 1) -> None:
        """RoPE tables for up to max_seq_len positions (default: the model's context), and the model's own cache of
        BATCH rows (what forward uses when no cache is passed in)."""
        c = self.config
        self.max_seq_len = max_seq_len or c.max_position_embeddings
        self.cache = self.make_cache(batch)
        cos, sin = rope_tables(self.max_seq_len, c.head_dim, c.rope_theta, self.rope_scaling, rotary_dim=self.rotary_dim)  # [S, rd]
        self.register_rope("rope", cos, sin)

    def register_rope(self, prefix: str, cos: torch.Tensor, sin: torch.Tensor) -> None:
        """Keep cos/sin tables [S, rd] as PREFIX_cos [S, 1, rd] (broadcast over heads) and the sine as its two halves
        with rotate_half's sign folded in."""
        for name, t in zip(("cos", "neg_sin", "sin"), split_tables(cos, sin, self.compute_dtype)):
            self.register_buffer(f"{prefix}_{name}", t, persistent=False)

    def rope_rows(self, start: int, end: int) -> Rope:
        """The RoPE rows of positions start..end-1 (Phi-3's longrope picks its set by the chunk)."""
        return self.rope_cos[start:end], self.rope_neg_sin[start:end], self.rope_sin[start:end]

    def forward(self, tokens: torch.Tensor, start_pos: int | torch.Tensor = 0, last_only: bool = False,
                cache: ModelCache | None = None) -> torch.Tensor:
        """Logits (float32) [B, T, vocab] for tokens [B, T] placed at positions start_pos..start_pos+T-1 of CACHE
        (default: the model's own); start_pos a tensor [B]: one token per row, row b at start_pos[b].

        last_only: only the last position's logits [B, 1, vocab], which is all a prefill needs (the unembedding of
        every prompt position would cost about a fifth of SmolLM2's prefill).
        """
        hidden = self.body(tokens, start_pos, self.cache if cache is None else cache)
        return self.unembed(hidden[:, -1:] if last_only else hidden)

    def body(self, tokens: torch.Tensor, start_pos: int | torch.Tensor, cache: ModelCache) -> torch.Tensor:
        """The final norm's output [B, T, hidden]: all of forward but the unembedding (engine.compile exports this
        for one token, with the cache's tensors as the graph's inputs)."""
        T = tokens.shape[1]
        if isinstance(start_pos, torch.Tensor):  # one token per row, each at its own position
            rope = self.rope_cos[start_pos], self.rope_neg_sin[start_pos], self.rope_sin[start_pos]  # [B, 1, rd]
            L = int(start_pos.max()) + 1
            cache.ready(start_pos, L)
            mask = ragged_mask(start_pos, L, self.window)
        else:
            rope = self.rope_rows(start_pos, start_pos + T)
            # One mask for every layer; one token needs none (_decode slices the cache to what it may see).
            mask = None if T == 1 else causal_mask(start_pos, T, self.window)
        x = self.model.embed_tokens(tokens).to(self.compute_dtype)  # [B, T, hidden]; rows widened exactly if stored narrow
        for layer, layer_cache in zip(self.model.layers, cache.layers):
            x = layer(x, rope, start_pos, mask, layer_cache)
        return self.model.norm(x)

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits (float32) from the final norm's output."""
        return self.lm_head(hidden).float()

    @classmethod
    def exportable(cls, config: ModelConfig) -> bool:
        """The one-token step takes its caches as graph inputs; a sliding window (mistral's, Phi-3-mini-4k's) would
        make the attended range depend on the position in Python, which export cannot keep symbolic."""
        return cls.window_of(config) is None

    def attention_probs(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """q and k from the fused projection, normed and rotated by the layer's own position_qk (so a family built on this
        block shows what it computes: Qwen3's and OLMo 2's norms, SmolLM3's NoPE layers, Phi-3's partial and long
        RoPE), for positions 0..T-1; scale 1/√head_dim and the layer's window; [B, H, T, T]."""
        B, T, _ = x.shape
        H, KV, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
        qk = attn.qkv_proj(x).view(B, T, H + 2 * KV, D)[:, :, : H + KV]  # v's heads are not needed
        qk = attn.position_qk(qk, self.rope_rows(0, T)).transpose(1, 2)  # [B, H+KV, T, D]
        return eager_probs(qk[:, :H], qk[:, H:], H, D**-0.5, attn.window)
