"""Stand-ins: the course's own version of each definition a later exercise may build on.

A grade cell tests one exercise. When the learner's code for it calls what another exercise
defines (MultiHeadAttention calls split_heads, DecoderBlock builds RMSNorm and SwiGLU), the grade
cell swaps in these stand-ins for the length of its test (`checks.on_its_own`), so a mistake in
split_heads costs split_heads' points and nothing else.

Each stand-in keeps the contract of the exercise it stands for (signature, shapes, dtypes,
errors) but is written independently of the reference solutions: none of it imports a chapter
module, and where a library computes the same thing it is used (F.normalize, repeat_interleave).
Chapter 1's oracles live in tokenizer_oracles.py.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.course import tokenizer_oracles

# --- chapter 1: tokenizers -------------------------------------------------------------------------


def get_pair_counts(ids, counts=None) -> dict:
    """{(a, b): occurrences} of the adjacent pairs of `ids`, added to `counts` when given."""
    counts = {} if counts is None else counts
    for pair, n in Counter(zip(ids, ids[1:])).items():
        counts[pair] = counts.get(pair, 0) + n
    return counts


# --- chapter 2: embeddings -------------------------------------------------------------------------


def normalize_rows(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / max(||x||, eps) over the last dimension."""
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """(..., n, d), (..., m, d) -> (..., n, m) cosine similarities; a zero vector scores 0."""
    b = a if b is None else b
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"a has vectors of size {a.shape[-1]} but b has vectors of size {b.shape[-1]}")
    return F.normalize(a, dim=-1, eps=eps) @ F.normalize(b, dim=-1, eps=eps).mT


# --- chapter 3: attention --------------------------------------------------------------------------


def causal_mask(n_queries: int, n_keys: int | None = None, device=None) -> torch.Tensor:
    """(n_queries, n_keys) booleans, the queries being the last n_queries positions."""
    n_keys = n_queries if n_keys is None else n_keys
    if n_keys < n_queries:
        raise ValueError(f"a causal mask needs at least as many keys ({n_keys}) as queries ({n_queries})")
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(n_keys - n_queries)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) of 1/0 -> (B, 1, 1, S) booleans, True on real tokens."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask should be (B, S), got shape {tuple(attention_mask.shape)}")
    return (attention_mask != 0).view(attention_mask.shape[0], 1, 1, attention_mask.shape[1])


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                      scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) in at least float32; a row with every key blocked is all zeros."""
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q has {q.shape[-1]} features per head but k has {k.shape[-1]}")
    wide = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q.to(wide), k.to(wide).transpose(-2, -1))
    scores = scores * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask.to(wide)
    keep = ~torch.isneginf(scores).all(dim=-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(~keep, 0.0), dim=-1) * keep
    return weights.to(q.dtype)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                                 is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, is_causal aligned to the bottom-right corner."""
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k has {k.shape[-2]} positions but v has {v.shape[-2]}")
    if is_causal:
        future = ~causal_mask(q.shape[-2], k.shape[-2], device=q.device)
        if mask is None:
            mask = ~future
        elif mask.dtype == torch.bool:
            mask = mask & ~future
        else:
            mask = mask.masked_fill(future, -math.inf)
    return attention_weights(q, k, mask, scale) @ v


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, h * d) -> (B, h, T, d)."""
    if x.shape[-1] % n_heads:
        raise ValueError(f"{x.shape[-1]} features cannot be split into {n_heads} heads of equal size")
    return x.unflatten(-1, (n_heads, x.shape[-1] // n_heads)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, T, d) -> (B, T, h * d)."""
    return x.transpose(1, 2).flatten(2)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, h_kv, S, d) -> (B, h_kv * n_rep, S, d), each head n_rep times in a row."""
    return x if n_rep == 1 else torch.repeat_interleave(x, n_rep, dim=1)


# --- chapter 4: the Transformer block --------------------------------------------------------------


class RMSNorm(nn.RMSNorm):
    """PyTorch's RMSNorm, built the way the exercise's is: RMSNorm(dim, eps, device, dtype)."""

    def __init__(self, dim: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__(dim, eps=eps, device=device, dtype=dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), with Llama's names for the three projections."""

    def __init__(self, config, device=None, dtype=None):
        super().__init__()
        shape = {"bias": config.bias, "device": device, "dtype": dtype}
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, **shape)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, **shape)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, **shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_inv_freq(head_dim: int, base: float = 10000.0, device=None) -> torch.Tensor:
    """base^(-2i/d) for i < d/2, float32."""
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of features: head_dim must be even, got {head_dim}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / base ** exponents


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] over the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, h, T, d) rotated by (T, d) or (B, T, d) tables."""
    if cos.shape[-1] != x.shape[-1]:
        raise ValueError(f"x has head_dim {x.shape[-1]} but the RoPE tables have {cos.shape[-1]}")
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


# --- chapter 5: BERT, T5 and GPT-2 -------------------------------------------------------------------
# transformers is the reference here: imported when a stand-in is first used, not with this module.


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """T5's bucket of each (key - query) offset, by transformers' own function."""
    from transformers.models.t5.modeling_t5 import T5Attention

    return T5Attention._relative_position_bucket(relative_position, bidirectional=bidirectional,
                                                 num_buckets=num_buckets, max_distance=max_distance)


class RelativePositionBias(nn.Module):
    """T5's bias table, read as transformers' T5Attention.compute_bias reads it: (1, heads, T, S)."""

    def __init__(self, config, bidirectional: bool, device=None, dtype=None):
        super().__init__()
        self.bidirectional, self.num_buckets, self.max_distance = bidirectional, config.num_buckets, config.max_distance
        self.relative_attention_bias = nn.Embedding(config.num_buckets, config.n_heads, device=device, dtype=dtype)

    def forward(self, n_queries: int, n_keys: int) -> torch.Tensor:
        device = self.relative_attention_bias.weight.device
        offsets = torch.arange(n_keys, device=device)[None, :] - torch.arange(n_queries, device=device)[:, None]
        buckets = relative_position_bucket(offsets, self.bidirectional, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]


class GPT2(nn.Module):
    """GPT-2 with its head, as transformers' GPT2LMHeadModel computes it, behind the course's interface:
    GPT2(config) with a GPT2Config, forward(input_ids, attention_mask=None) -> logits."""

    def __init__(self, config, device=None, dtype=None):
        super().__init__()
        import transformers

        if config.head_dim * config.n_heads != config.d_model:
            raise ValueError("the GPT2 stand-in needs head_dim * n_heads == d_model")
        activation = {"gelu_tanh": "gelu_new", "gelu": "gelu"}[config.activation]
        hf_config = transformers.GPT2Config(vocab_size=config.vocab_size, n_positions=config.max_seq_len,
                                            n_embd=config.d_model, n_layer=config.n_layers, n_head=config.n_heads,
                                            n_inner=config.d_ff, activation_function=activation,
                                            resid_pdrop=config.dropout, embd_pdrop=config.dropout,
                                            attn_pdrop=config.dropout, layer_norm_epsilon=config.norm_eps,
                                            bos_token_id=0, eos_token_id=0)
        self.config = config
        self.model = transformers.GPT2LMHeadModel(hf_config).to(device=device, dtype=dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.shape[1] > self.config.max_seq_len:
            raise ValueError(f"{input_ids.shape[1]} tokens, but this GPT-2 has {self.config.max_seq_len} positions")
        return self.model(input_ids, attention_mask=attention_mask).logits


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of position t's logits against labels[t + 1], -100 not counted."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


# --- chapter 6: computation ------------------------------------------------------------------------


def block_sparse_layout(n_blocks: int, window_blocks: int = 1, global_blocks: int = 1,
                        is_causal: bool = False) -> torch.Tensor:
    """(n_blocks, n_blocks) booleans: local band of window_blocks, global first blocks, causal."""
    if type(n_blocks) is not int or n_blocks < 1:
        raise ValueError(f"n_blocks must be a positive int, got {n_blocks!r}")
    if type(window_blocks) is not int or window_blocks < 0 or type(global_blocks) is not int or global_blocks < 0:
        raise ValueError("window_blocks and global_blocks must be ints >= 0")
    band = torch.ones(n_blocks, n_blocks, dtype=torch.bool).triu(-window_blocks).tril(window_blocks)
    band[:global_blocks] = True
    band[:, :global_blocks] = True
    return band.tril() if is_causal else band


def layout_to_mask(layout: torch.Tensor, block_size: int, n: int) -> torch.Tensor:
    """The (n, n) token mask of a block layout, by repeating each block entry block_size times."""
    if type(block_size) is not int or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    n_blocks = math.ceil(n / block_size)
    if layout.dtype != torch.bool or tuple(layout.shape) != (n_blocks, n_blocks):
        raise ValueError(f"{n} tokens in blocks of {block_size} need a boolean ({n_blocks}, {n_blocks}) layout")
    return layout.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)[:n, :n]


def _scores(q, k, mask, is_causal, scale):
    """Scaled, masked scores in at least float32 (the whole matrix: stand-ins need no tiles)."""
    if is_causal and k.shape[-2] < q.shape[-2]:
        raise ValueError("causal attention needs at least as many keys as queries")
    wide = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("bhtd,bhsd->bhts", q.to(wide), k.to(wide)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.to(wide)
    if is_causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], device=q.device), float("-inf"))
    return scores


def flash_attention_forward(q, k, v, mask=None, is_causal=False, scale=None, block_q=64, block_k=64):
    """(out, lse) of attention, computed at once: out in q's dtype, lse in float32 (float64)."""
    scores = _scores(q, k, mask, is_causal, scale)
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.exp(scores - lse.masked_fill(lse.isneginf(), 0.0)[..., None])
    return (weights @ v.to(scores.dtype)).to(q.dtype), lse


def flash_attention_backward(q, k, v, out, lse, grad_out, mask=None, is_causal=False, scale=None, block_q=64,
                             block_k=64):
    """(dq, dk, dv) of attention, by autograd through the whole score matrix (out and lse unused)."""
    with torch.enable_grad():
        inputs = [t.detach().requires_grad_() for t in (q, k, v)]
        scores = _scores(*inputs[:2], mask, is_causal, scale)
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        result = (weights @ inputs[2].to(scores.dtype)).to(q.dtype)
        return torch.autograd.grad(result, inputs, grad_out)


STAND_INS = {
    "get_pair_counts": get_pair_counts,
    "merge": tokenizer_oracles.merge_by_string_replace,
    **{f.__name__: f for f in (normalize_rows, cosine_similarity_matrix, causal_mask, padding_mask, attention_weights,
                               scaled_dot_product_attention, split_heads, merge_heads, repeat_kv, RMSNorm, SwiGLU,
                               rope_inv_freq, rotate_half, apply_rope, relative_position_bucket,
                               RelativePositionBias, GPT2, causal_lm_loss, block_sparse_layout, layout_to_mask,
                               flash_attention_forward, flash_attention_backward)},
}
"""name in a notebook -> the stand-in a grade cell may put in its place (checks.on_its_own)."""
