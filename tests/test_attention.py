"""Chapter 3: the attention module, against PyTorch's attention and HF transformers' Llama attention."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse import attention as A
from llmcourse.config import ATTENTION_IMPLEMENTATIONS, TransformerConfig
from llmcourse.course.checks import (
    ATTENTION_FAST_PATHS,
    ATTENTION_FORBIDDEN,
    attention_tripwires,
    expect_tensor,
    forbidden_uses_in_cell,
)
from llmcourse.course.torch_weights import copy_torch_attention

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def test_the_module_does_not_use_library_attention():
    """Only the given fast path may call PyTorch's attention; every graded definition computes its own."""
    source = inspect.getsource(A)
    graded = {name for name in dir(A) if not name.startswith("_")} - set(ATTENTION_FAST_PATHS)
    uses = forbidden_uses_in_cell(source, ATTENTION_FORBIDDEN, defines=graded)
    assert not uses, f"llmcourse.attention uses library attention outside {ATTENTION_FAST_PATHS}: {uses}"


def random_mask(kind, shape, T, S, device):
    if kind is None:
        return None
    if kind == "bool":
        mask = torch.rand(*shape, T, S, device=device) > 0.4
        mask[..., 0] = True
        return mask
    return torch.randn(*shape, T, S, device=device)  # additive


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, pytest.param(torch.bfloat16, marks=pytest.mark.gpu)])
@pytest.mark.parametrize("mask_kind", [None, "bool", "additive"])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_torch(device, dtype, mask_kind, causal):
    if dtype == torch.bfloat16 and device == "cpu":
        pytest.skip("bf16 attention is checked on CUDA")
    torch.manual_seed(0)
    q = torch.randn(2, 3, 9, 16, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(2, 3, 9, 16, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(2, 3, 9, 8, device=device, dtype=dtype, requires_grad=True)
    mask = random_mask(mask_kind, (2, 1), 9, 9, device)
    if mask is not None and mask.is_floating_point():
        mask = mask.to(dtype)
    if causal:  # torch takes no mask together with is_causal: give it the combined mask
        tri = torch.ones(9, 9, dtype=torch.bool, device=device).tril()
        torch_mask = tri if mask is None else (mask & tri if mask.dtype == torch.bool
                                                 else mask.masked_fill(~tri, float("-inf")))
    else:
        torch_mask = mask
    with attention_tripwires():
        got = A.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=causal)
    grads = torch.autograd.grad(got, (q, k, v), torch.ones_like(got))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=torch_mask)
    want_grads = torch.autograd.grad(want, (q, k, v), torch.ones_like(want))
    tol = TOLERANCE[dtype]
    expect_tensor(got, want, "attention output", atol=tol, rtol=tol)
    for name, a, b in zip("qkv", grads, want_grads):
        expect_tensor(a, b, f"the gradient of {name}", atol=tol * 10, rtol=tol * 10)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 7), S=st.integers(1, 7), d=st.integers(1, 12), dv=st.integers(1, 5),
       heads=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_sdpa_any_shape_with_masks(T, S, d, dv, heads, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(heads, T, d, generator=g, dtype=torch.float64),
            torch.randn(heads, S, d, generator=g, dtype=torch.float64))
    v = torch.randn(heads, S, dv, generator=g, dtype=torch.float64)
    mask = torch.rand(T, S, generator=g) > 0.5  # rows may be fully blocked: both give zeros
    with attention_tripwires():
        got = A.scaled_dot_product_attention(q, k, v, mask=mask)
        weights = A.attention_weights(q, k, mask=mask)
    expect_tensor(got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), "attention", atol=1e-12, rtol=1e-12)
    rows = mask.any(-1)
    expect_tensor(weights.sum(-1), rows.double().expand(heads, T), "row sums (1, or 0 when fully blocked)", atol=1e-12,
                  rtol=1e-12)


def test_causal_mask_alignment_and_errors():
    expect_tensor(A.causal_mask(3, 5).long(), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
                  "causal_mask(3, 5)")
    assert A.causal_mask(4).dtype == torch.bool
    with pytest.raises(ValueError):
        A.causal_mask(4, 2)
    with pytest.raises(ValueError):
        A.scaled_dot_product_attention(torch.randn(2, 4), torch.randn(3, 5), torch.randn(3, 2))
    with pytest.raises(ValueError):
        A.scaled_dot_product_attention(torch.randn(2, 4), torch.randn(3, 4), torch.randn(5, 2))
    expect_tensor(A.additive_mask(torch.tensor([True, False])), torch.tensor([0.0, float("-inf")]), "additive_mask")


def test_kv_cache_steps_equal_full_causal_attention():
    """Attending with the last T queries of S (bottom-right causal mask) equals the full causal result."""
    torch.manual_seed(3)
    q, k, v = torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    full = A.scaled_dot_product_attention(q, k, v, is_causal=True)
    for start in (0, 4, 9):
        part = A.scaled_dot_product_attention(q[:, :, start:], k, v, is_causal=True)
        expect_tensor(part, full[:, :, start:], f"queries {start}.. against all keys")


def config(d_model=32, n_heads=4, **fields) -> TransformerConfig:
    return TransformerConfig(d_model=d_model, n_heads=n_heads, **fields)


def test_config_derives_fields_and_refuses_impossible_shapes():
    c = config(48, 6)
    assert (c.n_kv_heads, c.head_dim, c.d_ff, c.n_rep) == (6, 8, 192, 1)
    c = config(48, 6, n_kv_heads=2, head_dim=16)
    assert (c.n_kv_heads, c.head_dim, c.n_rep) == (2, 16, 3)
    assert set(ATTENTION_IMPLEMENTATIONS) == set(A.ATTENTION_FUNCTIONS), "every implementation has a function"
    for bad, words in [(dict(n_kv_heads=3), "multiple of n_kv_heads"), (dict(d_model=30), "set head_dim"),
                       (dict(n_kv_heads=0), "n_kv_heads"), (dict(head_dim=-1), "head_dim"),
                       (dict(n_heads=2.0), "n_heads"), (dict(attn_implementation="flash"), "attn_implementation"),
                       (dict(norm_eps=0.0), "norm_eps")]:
        with pytest.raises(ValueError, match=words):
            config(**bad)


@pytest.mark.parametrize("d_model, n_heads", [(64, 8), (48, 3), (16, 1)])
def test_multi_head_attention_matches_torch(device, d_model, n_heads):
    torch.manual_seed(4)
    reference = torch.nn.MultiheadAttention(d_model, n_heads, batch_first=True, device=device)
    ours = A.Attention(config(d_model, n_heads), device=device)
    copy_torch_attention(ours, reference)
    x = torch.randn(3, 7, d_model, device=device)
    context = torch.randn(3, 5, d_model, device=device)
    lengths = torch.tensor([5, 3, 1], device=device)
    keep = torch.arange(5, device=device)[None] < lengths[:, None]
    blocked_future = ~torch.ones(7, 7, dtype=torch.bool, device=device).tril()
    with attention_tripwires():
        got = {"self": ours(x), "causal": ours(x, is_causal=True), "cross": ours(x, context, mask=A.padding_mask(keep))}
    want = {"self": reference(x, x, x, need_weights=False)[0],
            "causal": reference(x, x, x, attn_mask=blocked_future, need_weights=False)[0],
            "cross": reference(x, context, context, key_padding_mask=~keep, need_weights=False)[0]}
    for name in want:
        expect_tensor(got[name], want[name], f"{name}-attention")
    loss_ours, loss_ref = got["cross"].square().sum(), want["cross"].square().sum()
    loss_ours.backward()
    loss_ref.backward()
    expect_tensor(ours.k_proj.weight.grad, reference.in_proj_weight.grad.chunk(3)[1], "the gradient of k_proj.weight",
                  atol=1e-4)
    expect_tensor(ours.o_proj.bias.grad, reference.out_proj.bias.grad, "the gradient of o_proj.bias", atol=1e-4)


def test_copying_torch_weights_checks_shapes():
    reference = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    with pytest.raises(ValueError, match=r"k_proj.weight: ours has shape \(8, 32\)"):
        copy_torch_attention(A.Attention(config(32, 4, n_kv_heads=1)), reference)
    with pytest.raises(ValueError, match="q_proj.bias"):
        copy_torch_attention(A.Attention(config(32, 4, bias=False)), reference)


def hf_llama_attention(d_model, n_heads, n_kv_heads, device, dtype=torch.float32, head_dim=None):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention

    hf_config = LlamaConfig(hidden_size=d_model, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                            head_dim=head_dim or d_model // n_heads, intermediate_size=4 * d_model,
                            attention_bias=False, attn_implementation="eager")
    return LlamaAttention(hf_config, layer_idx=0).to(device=device, dtype=dtype)


@pytest.mark.parity
@pytest.mark.parametrize("n_heads, n_kv_heads, head_dim", [(8, 8, 12), (8, 4, 12), (8, 2, 12), (8, 1, 12),
                                                           (12, 4, 8), (6, 3, 16), (4, 2, 32)])
def test_grouped_query_attention_matches_llama(device, n_heads, n_kv_heads, head_dim):
    """GQA with Llama's weights = transformers' LlamaAttention without rotation (cos=1, sin=0)."""
    torch.manual_seed(5)
    d_model = 96
    hf = hf_llama_attention(d_model, n_heads, n_kv_heads, device, head_dim=head_dim)
    ours = A.Attention(config(d_model, n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim, bias=False), device=device)
    ours.load_state_dict(hf.state_dict(), strict=True)
    T = 11
    x = torch.randn(2, T, d_model, device=device, requires_grad=True)
    x_hf = x.detach().clone().requires_grad_()
    no_rotation = (torch.ones(2, T, head_dim, device=device), torch.zeros(2, T, head_dim, device=device))
    lengths = torch.tensor([T, 6], device=device)
    keep = (torch.arange(T, device=device)[None] < lengths[:, None])[:, None, None, :] & A.causal_mask(T, device=device)
    with attention_tripwires():
        got = ours(x, mask=keep)
    want = hf(x_hf, position_embeddings=no_rotation, attention_mask=A.additive_mask(keep))[0]
    expect_tensor(got, want, f"GQA {n_heads}/{n_kv_heads} heads of {head_dim} vs LlamaAttention")
    g = torch.randn_like(want)
    got.backward(g)
    want.backward(g)
    expect_tensor(x.grad, x_hf.grad, "the input gradient")
    ours_params = dict(ours.named_parameters())
    for name, p in hf.named_parameters():
        expect_tensor(ours_params[name].grad, p.grad, f"the gradient of {name}", atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parity
def test_grouped_query_attention_bf16_on_cuda():
    torch.manual_seed(6)
    hf = hf_llama_attention(128, 8, 2, "cuda", torch.bfloat16)
    ours = A.Attention(config(128, 8, n_kv_heads=2, bias=False), device="cuda", dtype=torch.bfloat16)
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(2, 33, 128, device="cuda", dtype=torch.bfloat16)
    rot = (torch.ones(2, 33, 16, device="cuda", dtype=torch.bfloat16),
           torch.zeros(2, 33, 16, device="cuda", dtype=torch.bfloat16))
    causal = A.additive_mask(A.causal_mask(33, device="cuda"), torch.bfloat16)[None, None]
    with torch.no_grad():
        expect_tensor(ours(x, is_causal=True), hf(x, position_embeddings=rot, attention_mask=causal)[0],
                      "bf16 GQA on CUDA", atol=2e-2, rtol=2e-2)


def test_attention_builds_each_projection_once_at_its_size():
    """k_proj and v_proj are made at n_kv_heads * head_dim: no layer is built and thrown away."""
    c = config(32, 4, n_kv_heads=1, head_dim=6, bias=False)
    torch.manual_seed(8)
    layer = A.Attention(c)
    after = torch.rand(4)
    torch.manual_seed(8)
    for n_in, n_out in [(32, 24), (32, 6), (32, 6), (24, 32)]:
        torch.nn.Linear(n_in, n_out, bias=False)
    expect_tensor(after, torch.rand(4), "the random stream after building Attention")
    shapes = {name: tuple(t.shape) for name, t in layer.state_dict().items()}
    assert shapes == {"q_proj.weight": (24, 32), "k_proj.weight": (6, 32), "v_proj.weight": (6, 32),
                      "o_proj.weight": (32, 24)}
    assert all(m.bias is not None for m in A.Attention(config(32, 4)).modules() if isinstance(m, torch.nn.Linear)), \
        "the default config has biases in every projection, whatever n_kv_heads is"


def test_gqa_variants_and_repeat_kv():
    torch.manual_seed(7)
    x = torch.randn(2, 3, 4, 5)
    rep = A.repeat_kv(x, 3)
    expect_tensor(rep, x.repeat_interleave(3, dim=1), "repeat_kv = repeat_interleave on the head axis")
    assert A.repeat_kv(x, 1) is x
    heads = torch.randn(2, 4, 5, 8)
    expect_tensor(A.split_heads(A.merge_heads(heads), 4), heads, "split_heads(merge_heads(x))")
    with pytest.raises(ValueError):
        A.split_heads(torch.randn(2, 5, 30), 4)
    # GQA equals MHA whose key/value projections repeat each group's weights
    x = torch.randn(2, 6, 32)
    gqa = A.Attention(config(32, 4, n_kv_heads=2, bias=False))
    expanded = A.Attention(config(32, 4, bias=False))
    with torch.no_grad():
        expanded.q_proj.weight.copy_(gqa.q_proj.weight)
        expanded.o_proj.weight.copy_(gqa.o_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32)
            getattr(expanded, name).weight.copy_(w)
    expect_tensor(gqa(x), expanded(x), "GQA vs MHA with repeated key/value weights")
    with pytest.raises(ValueError, match="rotary"):
        gqa(x, position_embeddings=(torch.ones(6, 8), torch.zeros(6, 8)))


def masks_for(kind, batch, T, S):
    if kind is None:
        return None
    if kind == "padding":
        lengths = torch.tensor([S, max(1, S - 3)])[:batch]
        return A.padding_mask((torch.arange(S)[None] < lengths[:, None]).long())
    if kind == "bool":
        mask = torch.rand(batch, 1, T, S) > 0.3
        mask[..., -1] = True  # every query keeps a key, so no row is fully blocked
        return mask
    return torch.randn(T, S)  # additive


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("mask_kind", [None, "padding", "bool", "additive"])
@pytest.mark.parametrize("T, S, causal", [(7, 7, True), (7, 7, False), (3, 9, True), (5, 8, False)])
def test_eager_and_sdpa_agree(n_kv_heads, mask_kind, T, S, causal):
    """The fast path is the same attention: masks, GQA, and T != S with the bottom-right causal mask."""
    torch.manual_seed(9)
    q = torch.randn(2, 4, T, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, n_kv_heads, S, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, n_kv_heads, S, 8, dtype=torch.float64, requires_grad=True)
    mask = masks_for(mask_kind, 2, T, S)
    if mask is not None and mask.is_floating_point():
        mask = mask.double()
    eager = A.eager_attention(q, k, v, mask=mask, is_causal=causal)
    sdpa = A.sdpa_attention(q, k, v, mask=mask, is_causal=causal)
    expect_tensor(sdpa, eager, "sdpa vs eager attention", atol=1e-12, rtol=1e-12)
    g = torch.randn_like(eager)
    for name, a, b in zip("qkv", torch.autograd.grad(eager, (q, k, v), g), torch.autograd.grad(sdpa, (q, k, v), g)):
        expect_tensor(b, a, f"the gradient of {name}, sdpa vs eager", atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("n_kv_heads", [4, 1])
def test_attention_layer_switches_implementation(device, n_kv_heads, monkeypatch):
    torch.manual_seed(10)
    eager = A.Attention(config(32, 4, n_kv_heads=n_kv_heads), device=device)
    fast = A.Attention(config(32, 4, n_kv_heads=n_kv_heads, attn_implementation="sdpa"), device=device)
    fast.load_state_dict(eager.state_dict())
    x, context = torch.randn(2, 6, 32, device=device), torch.randn(2, 9, 32, device=device)
    keep = A.padding_mask(torch.tensor([[1] * 9, [1] * 5 + [0] * 4], device=device))
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: calls.append(1) or sdpa(*a, **kw))
    for kwargs in (dict(is_causal=True), dict(context=context, mask=keep), dict(context=context, is_causal=True)):
        calls.clear()
        want = eager(x, **kwargs)
        assert not calls, "the eager path must not call PyTorch's attention"
        got = fast(x, **kwargs)
        assert calls, "attn_implementation='sdpa' must call F.scaled_dot_product_attention"
        expect_tensor(got, want, f"Attention with sdpa vs eager, {sorted(kwargs)}", atol=1e-5)


def test_kv_cache_bytes_known_sizes():
    assert A.kv_cache_bytes(32, 32, 128, 4096) == 2 * 2**30  # Llama-2-7B, 4k tokens, bf16
    assert A.kv_cache_bytes(32, 8, 128, 8192) == 2**30  # Llama-3-8B, 8k tokens, bf16
    assert A.kv_cache_bytes(80, 8, 128, 131072, batch_size=2, bytes_per_element=1) == 2 * 80 * 8 * 128 * 131072 * 2
    for bad in (dict(seq_len=0), dict(head_dim=2.0), dict(n_layers=True)):
        with pytest.raises(ValueError):
            A.kv_cache_bytes(**(dict(n_layers=1, n_kv_heads=1, head_dim=1, seq_len=1) | bad))


def test_scale_zero_dtype_head_dim_and_kv_cache_contract():
    torch.manual_seed(14)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 5)
    with attention_tripwires():
        got = A.scaled_dot_product_attention(q, k, v, scale=0.0)
    expect_tensor(got, F.scaled_dot_product_attention(q, k, v, scale=0.0), "scale=0.0: uniform weights")
    for dtype in (torch.float16, torch.bfloat16):
        weights = A.attention_weights(q.to(dtype), k.to(dtype))
        assert weights.dtype == dtype, f"attention weights of {dtype} queries should be {dtype}, got {weights.dtype}"
    layer = A.Attention(config(48, 4, n_kv_heads=2, head_dim=16))
    assert (layer.n_heads, layer.n_kv_heads, layer.head_dim) == (4, 2, 16), "the layer reads its shape from the config"
    size = A.kv_cache_bytes(32, 8, 128, 8192)
    assert type(size) is int and size == 2**30, f"kv_cache_bytes should be the int 2**30, got {size!r}"
    for name in ("n_layers", "seq_len", "bytes_per_element"):
        with pytest.raises(ValueError, match=name):
            A.kv_cache_bytes(**{"n_layers": 1, "n_kv_heads": 1, "head_dim": 1, "seq_len": 1, name: 0})
