"""Chapter 6: the online softmax, sliding-window and block-sparse attention, Linformer and
FlashAttention in PyTorch, against PyTorch's attention, transformers' Mistral and the `linformer`
package; memory measured by the course's tensor tracker."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from llmcourse import flash_attention as FA
from llmcourse import sparse_attention as SA
from llmcourse.attention import causal_mask, repeat_kv
from llmcourse.course.checks import expect_equal, expect_tensor
from llmcourse.course.memory import measure_peak

transformers.logging.set_verbosity_error()

TOLERANCE = {"cpu": 1e-5, "cuda": 1e-4}
"""fp32 parity: CUDA's kernels sum in another order than the CPU's."""


def reference_attention(q, k, v, mask=None, is_causal=False, scale=None):
    """(out, lse) from the whole score matrix, in q's dtype, by PyTorch alone; rows with every key
    blocked give 0 and -inf."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    if is_causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], device=q.device), float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0) @ v, torch.logsumexp(scores, dim=-1)


def grads(out, inputs, grad_out):
    return torch.autograd.grad(out, inputs, grad_out)


# ---------------------------------------------------------------- exercise 1: the online softmax

@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 70), block=st.integers(1, 80), masked=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**31 - 1))
def test_online_logsumexp_and_softmax_equal_torch(rows, cols, block, masked, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * 8
    x = x.masked_fill(torch.rand(rows, cols, generator=g) < masked, float("-inf"))
    expect_tensor(FA.online_logsumexp(x, block), torch.logsumexp(x, dim=-1), f"online_logsumexp, block {block}",
                  atol=1e-5)
    expect_tensor(FA.online_softmax(x, block), torch.softmax(x, dim=-1).nan_to_num(0.0),
                  f"online_softmax, block {block}", atol=1e-6)


def test_online_softmax_extremes_and_dtypes():
    x = torch.tensor([[1000.0, -1000.0, 999.0, 1001.0], [float("-inf")] * 4, [0.0, float("-inf"), 0.0, 0.0]])
    for block in (1, 2, 3, 4, 5):
        expect_tensor(FA.online_logsumexp(x, block), torch.logsumexp(x, dim=-1), f"extremes, block {block}")
        expect_tensor(FA.online_softmax(x, block), torch.softmax(x, dim=-1).nan_to_num(0.0), f"softmax, block {block}")
    x64 = torch.randn(3, 41, dtype=torch.float64) * 20
    expect_tensor(FA.online_logsumexp(x64, 6), torch.logsumexp(x64, dim=-1), "float64", atol=1e-12)
    half = torch.randn(2, 30).half()
    expect_tensor(FA.online_softmax(half, 7), torch.softmax(half.float(), dim=-1).half(), "float16", atol=1e-3)
    for bad in (0, -3, 1.5, None):
        with pytest.raises(ValueError):
            FA.online_logsumexp(x, bad)


# ---------------------------------------------------------------- exercise 2: sliding window

def test_sliding_window_mask_known_answers():
    expect_equal(SA.sliding_window_mask(4, 2).int().tolist(), [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]],
                 "causal, window 2")
    expect_equal(SA.sliding_window_mask(4, 2, is_causal=False).int().tolist(),
                 [[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]], "bidirectional, window 2")
    assert SA.sliding_window_mask(6, 10).equal(causal_mask(6)), "a window longer than the sequence is causal attention"
    with pytest.raises(ValueError):
        SA.sliding_window_mask(4, 0)


@pytest.mark.parametrize("length,window,is_causal", [(1, 1, True), (17, 1, False), (17, 4, True), (17, 4, False),
                                                     (32, 8, True), (9, 20, False), (50, 7, True)])
def test_sliding_window_attention_equals_dense(device, length, window, is_causal):
    torch.manual_seed(length * 31 + window)
    q, k = (torch.randn(2, 3, length, 8, device=device, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 3, length, 5, device=device, requires_grad=True)
    got = SA.sliding_window_attention(q, k, v, window, is_causal=is_causal)
    mask = SA.sliding_window_mask(length, window, is_causal, device=device)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    expect_tensor(got, want, f"T={length}, window={window}, causal={is_causal}", atol=TOLERANCE[device])
    g = torch.randn_like(want)
    for name, a, b in zip("qkv", grads(got, (q, k, v), g), grads(want, (q, k, v), g)):
        expect_tensor(a, b, f"d{name}", atol=TOLERANCE[device])


def test_sliding_window_memory_is_linear_in_length():
    q = torch.randn(1, 1, 4096, 16)
    _, peak_2k = measure_peak(SA.sliding_window_attention, q[:, :, :2048], q[:, :, :2048], q[:, :, :2048], 16)
    _, peak_4k = measure_peak(SA.sliding_window_attention, q, q, q, 16)
    score_matrix = 4096 * 4096 * 4
    assert peak_4k < score_matrix / 16, f"peak {peak_4k / 2**20:.2f} MiB at T=4096, window 16"
    assert peak_4k < 2.5 * peak_2k, f"peaks {peak_2k} and {peak_4k} bytes: not linear in T"


def test_sliding_window_attention_refuses_other_shapes():
    with pytest.raises(ValueError):
        SA.sliding_window_attention(torch.randn(1, 1, 4, 8), torch.randn(1, 1, 5, 8), torch.randn(1, 1, 5, 8), 2)
    with pytest.raises(ValueError):
        SA.sliding_window_attention(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8), 2)


def hf_attention_with(function_name, function):
    transformers.AttentionInterface.register(function_name, function)
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionMaskInterface.register(function_name, sdpa_mask)


@pytest.mark.parity
@pytest.mark.parametrize("layers,heads,kv_heads,head_dim,window,length", [(2, 4, 2, 8, 5, 23), (3, 6, 3, 16, 3, 31),
                                                                          (1, 2, 1, 8, 40, 17)])
def test_sliding_window_attention_inside_mistral(layers, heads, kv_heads, head_dim, window, length):
    def course_sliding_window(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                              sliding_window=None, **kwargs):
        n_rep = query.shape[1] // key.shape[1]
        out = SA.sliding_window_attention(query, repeat_kv(key, n_rep), repeat_kv(value, n_rep), sliding_window,
                                          is_causal=True, scale=scaling)
        return out.transpose(1, 2).contiguous(), None

    hf_attention_with("course_sliding_window_test", course_sliding_window)
    torch.manual_seed(layers * 100 + window)
    config = transformers.MistralConfig(vocab_size=60, hidden_size=heads * head_dim, intermediate_size=72,
                                        num_hidden_layers=layers, num_attention_heads=heads,
                                        num_key_value_heads=kv_heads, head_dim=head_dim, sliding_window=window,
                                        max_position_embeddings=64, attn_implementation="eager")
    theirs = transformers.MistralForCausalLM(config).eval()
    ours = transformers.MistralForCausalLM(config).eval()
    ours.load_state_dict(theirs.state_dict())
    ours.config._attn_implementation = "course_sliding_window_test"
    ids = torch.randint(0, 60, (2, length))
    got, want = ours(ids).logits, theirs(ids).logits
    expect_tensor(got, want, f"Mistral logits, window {window}, {length} tokens")
    (got.square().sum()).backward()
    (want.square().sum()).backward()
    name = "model.layers.0.self_attn.q_proj.weight"
    expect_tensor(ours.get_parameter(name).grad, theirs.get_parameter(name).grad, f"the gradient of {name}", atol=1e-4)


# ---------------------------------------------------------------- exercise 3: block-sparse

@pytest.mark.parametrize("n_blocks,window_blocks,global_blocks,is_causal", [(1, 1, 1, False), (5, 1, 1, False),
                                                                            (6, 0, 2, True), (7, 2, 0, False),
                                                                            (4, 5, 0, True)])
def test_block_sparse_layout_by_definition(n_blocks, window_blocks, global_blocks, is_causal):
    want = [[int((abs(i - j) <= window_blocks or i < global_blocks or j < global_blocks) and (j <= i or not is_causal))
             for j in range(n_blocks)] for i in range(n_blocks)]
    layout = SA.block_sparse_layout(n_blocks, window_blocks, global_blocks, is_causal)
    assert layout.dtype == torch.bool
    expect_equal(layout.int().tolist(), want, f"block_sparse_layout{(n_blocks, window_blocks, global_blocks)}")


def test_layout_to_mask_and_refusals():
    layout = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
    mask = SA.layout_to_mask(layout, 3, 8)
    expect_equal(mask.int().tolist(), [[int(bool(layout[i // 3, j // 3])) for j in range(8)] for i in range(8)],
                 "layout_to_mask(layout, 3, 8)")
    for bad in (torch.ones(2, 2, dtype=torch.bool), torch.ones(3, 3), torch.ones(3, 4, dtype=torch.bool)):
        with pytest.raises(ValueError):
            SA.layout_to_mask(bad, 3, 8)
    for args in ((0,), (3, -1), (3, 1, -1), (2.0,)):
        with pytest.raises(ValueError):
            SA.block_sparse_layout(*args)


@pytest.mark.parametrize("length,block_size,is_causal", [(20, 4, False), (22, 4, True), (30, 8, True), (9, 16, False),
                                                         (33, 5, False)])
def test_block_sparse_attention_equals_dense(device, length, block_size, is_causal):
    torch.manual_seed(length + block_size)
    n_blocks = -(-length // block_size)
    layout = SA.block_sparse_layout(n_blocks, 1, 1, is_causal) | (torch.rand(n_blocks, n_blocks) < 0.2)
    layout = layout.tril() if is_causal else layout
    q, k = (torch.randn(2, 2, length, 8, device=device, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 2, length, 6, device=device, requires_grad=True)
    got = SA.block_sparse_attention(q, k, v, layout, block_size, is_causal=is_causal)
    mask = SA.layout_to_mask(layout, block_size, length).to(device)
    mask = mask & causal_mask(length, device=device) if is_causal else mask
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    expect_tensor(got, want, f"T={length}, blocks of {block_size}, causal={is_causal}", atol=TOLERANCE[device])
    g = torch.randn_like(want)
    for name, a, b in zip("qkv", grads(got, (q, k, v), g), grads(want, (q, k, v), g)):
        expect_tensor(a, b, f"d{name}", atol=TOLERANCE[device])


def test_block_sparse_attention_rows_without_keys_are_zero():
    x = torch.randn(1, 2, 6, 4)
    got = SA.block_sparse_attention(x, x, x, torch.tensor([[False, False], [True, True]]), 3)
    expect_tensor(got[..., :3, :], torch.zeros(1, 2, 3, 4), "rows of a block with no key block")


# ---------------------------------------------------------------- exercise 4: Linformer

def test_linformer_identity_projection_is_attention_and_padding_is_ignored():
    torch.manual_seed(4)
    q, k, v = torch.randn(2, 3, 12, 8), torch.randn(2, 3, 12, 8), torch.randn(2, 3, 12, 5)
    eye = torch.eye(12)
    expect_tensor(SA.linformer_attention(q, k, v, eye, eye), F.scaled_dot_product_attention(q, k, v), "E = F = I")
    keep = torch.tensor([[1] * 12, [1] * 7 + [0] * 5])
    proj = torch.randn(12, 5)
    changed_k, changed_v = k.clone(), v.clone()
    changed_k[1, :, 7:] = 50.0
    changed_v[1, :, 7:] = -9.0
    expect_tensor(SA.linformer_attention(q, changed_k, changed_v, proj, proj, keep),
                  SA.linformer_attention(q, k, v, proj, proj, keep), "padding must not matter")
    with pytest.raises(ValueError):
        SA.linformer_attention(q, k, v, torch.randn(11, 5), proj)
    with pytest.raises(ValueError):
        SA.linformer_attention(q, k, v, proj, proj, torch.ones(2, 11))


def test_linformer_is_not_causal_and_its_error_falls_with_k():
    torch.manual_seed(5)
    q, k, v = torch.randn(1, 1, 16, 8), torch.randn(1, 1, 16, 8), torch.randn(1, 1, 16, 8)
    proj = torch.randn(16, 4)
    changed = v.clone()
    changed[..., -1, :] += 1.0
    first = SA.linformer_attention(q, k, v, proj, proj)[..., 0, :]
    assert (SA.linformer_attention(q, k, changed, proj, proj)[..., 0, :] - first).abs().max() > 1e-3, \
        "the first position depends on the last one: Linformer is not causal"
    g = torch.Generator().manual_seed(6)
    n = 96
    keys = torch.randn(1, 1, 3, 16, generator=g)[:, :, torch.randint(0, 3, (n,), generator=g)]
    keys = keys + 0.05 * torch.randn(1, 1, n, 16, generator=g)
    values, queries = torch.randn(1, 1, n, 16, generator=g), torch.randn(1, 1, n, 16, generator=g)
    exact = F.scaled_dot_product_attention(queries, keys, values)
    errors = []
    for rank in (3, 12, 48, 96):
        trials = [(SA.linformer_attention(queries, keys, values, e, e) - exact).norm().item()
                  for e in (torch.randn(n, rank, generator=g) / math.sqrt(rank) for _ in range(10))]
        errors.append(sum(trials) / len(trials))
    assert errors == sorted(errors, reverse=True), f"mean errors for k = 3, 12, 48, 96: {errors}"


@pytest.mark.parity
@pytest.mark.parametrize("d_model,heads,seq_len,rank,length", [(32, 4, 16, 6, 16), (48, 3, 20, 5, 13),
                                                                (64, 8, 32, 32, 32)])
def test_linformer_layer_equals_the_linformer_package(d_model, heads, seq_len, rank, length):
    linformer = pytest.importorskip("linformer")
    torch.manual_seed(d_model + length)
    theirs = linformer.LinformerSelfAttention(dim=d_model, seq_len=seq_len, k=rank, heads=heads).eval()
    ours = SA.LinformerSelfAttention(d_model, heads, seq_len, rank).eval()
    names = {"to_q.weight": "q_proj.weight", "to_k.weight": "k_proj.weight", "to_v.weight": "v_proj.weight",
             "to_out.weight": "o_proj.weight", "to_out.bias": "o_proj.bias", "proj_k": "proj_k", "proj_v": "proj_v"}
    ours.load_state_dict({names[name]: t for name, t in theirs.state_dict().items()})
    x = torch.randn(2, length, d_model, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    got, want = ours(x), theirs(x_ref)
    expect_tensor(got, want, "LinformerSelfAttention vs linformer")
    got.sum().backward()
    want.sum().backward()
    expect_tensor(x.grad, x_ref.grad, "the input gradient")
    expect_tensor(ours.proj_v.grad, theirs.proj_v.grad, "the gradient of proj_v")
    with pytest.raises(ValueError):
        ours(torch.randn(1, seq_len + 1, d_model))


# ---------------------------------------------------------------- exercise 5: FlashAttention in PyTorch

FLASH_CASES = [(37, 53, False, 16, 8), (37, 53, True, 16, 8), (64, 64, True, 64, 64), (29, 29, True, 7, 5),
               (1, 40, True, 64, 64), (50, 20, False, 16, 32), (33, 70, True, 8, 16)]


@pytest.mark.parametrize("n_queries,n_keys,is_causal,block_q,block_k", FLASH_CASES)
def test_flash_forward_and_backward_equal_attention(device, n_queries, n_keys, is_causal, block_q, block_k):
    torch.manual_seed(n_queries * 7 + n_keys)
    q = torch.randn(2, 3, n_queries, 16, device=device, requires_grad=True)
    k = torch.randn(2, 3, n_keys, 16, device=device, requires_grad=True)
    v = torch.randn(2, 3, n_keys, 8, device=device, requires_grad=True)
    out, lse = FA.flash_attention_forward(q, k, v, is_causal=is_causal, block_q=block_q, block_k=block_k)
    want_out, want_lse = reference_attention(q, k, v, is_causal=is_causal)
    tol = TOLERANCE[device]
    expect_tensor(out, want_out, "out", atol=tol)
    expect_tensor(lse, want_lse, "lse", atol=tol)
    g = torch.randn_like(want_out)
    got = FA.flash_attention_backward(q, k, v, out, lse, g, is_causal=is_causal, block_q=block_q, block_k=block_k)
    for name, a, b in zip("qkv", got, grads(want_out, (q, k, v), g)):
        expect_tensor(a, b, f"d{name}", atol=tol)
    sdpa_mask = causal_mask(n_queries, n_keys, device=device) if is_causal else None
    through_autograd = FA.flash_attention(q, k, v, is_causal=is_causal, block_q=block_q, block_k=block_k)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask)
    expect_tensor(through_autograd, sdpa, "flash_attention vs F.scaled_dot_product_attention", atol=tol)
    for name, a, b in zip("qkv", grads(through_autograd, (q, k, v), g), grads(sdpa, (q, k, v), g)):
        expect_tensor(a, b, f"d{name} through autograd", atol=tol)


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "padding"])
def test_flash_attention_with_masks_in_float64(mask_kind):
    torch.manual_seed(11)
    q = torch.randn(2, 2, 19, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 26, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 26, 4, dtype=torch.float64, requires_grad=True)
    if mask_kind == "bool":
        mask = torch.rand(19, 26) > 0.3
        mask[:, 0] = True
    elif mask_kind == "additive":
        mask = torch.randn(1, 2, 19, 26, dtype=torch.float64).masked_fill(torch.rand(1, 2, 19, 26) < 0.2,
                                                                          float("-inf"))
        mask[..., 0] = 0.0
    else:
        mask = torch.tensor([[1] * 26, [1] * 10 + [0] * 16]).bool()[:, None, None, :]
    for is_causal in (False, True):
        out = FA.flash_attention(q, k, v, mask=mask, is_causal=is_causal, scale=0.5, block_q=6, block_k=7)
        want, _ = reference_attention(q, k, v, mask=mask, is_causal=is_causal, scale=0.5)
        expect_tensor(out, want, f"{mask_kind} mask, causal={is_causal}", atol=1e-12)
        g = torch.randn_like(want)
        for name, a, b in zip("qkv", grads(out, (q, k, v), g), grads(want, (q, k, v), g)):
            expect_tensor(a, b, f"d{name}, {mask_kind} mask, causal={is_causal}", atol=1e-12)


def test_flash_attention_gradcheck_gqa_and_blocked_rows():
    torch.manual_seed(12)
    q = torch.randn(1, 4, 9, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 11, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 11, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v: FA.flash_attention(q, k, v, None, True, None, 4, 3), (q, k, v))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(9, 11), enable_gqa=True)
    expect_tensor(FA.flash_attention(q, k, v, is_causal=True, block_q=4, block_k=3), want, "GQA", atol=1e-12)
    blocked = torch.ones(9, 11, dtype=torch.bool)
    blocked[3] = False
    out, lse = FA.flash_attention_forward(q, repeat_kv(k, 2), repeat_kv(v, 2), mask=blocked, block_q=4, block_k=4)
    assert out[:, :, 3].abs().max() == 0 and torch.isneginf(lse[:, :, 3]).all()
    dq, dk, dv = FA.flash_attention_backward(q, repeat_kv(k, 2), repeat_kv(v, 2), out, lse, torch.ones_like(out),
                                             mask=blocked, block_q=4, block_k=4)
    assert dq[:, :, 3].abs().max() == 0 and dk.isfinite().all() and dv.isfinite().all()


def test_flash_attention_refuses_bad_inputs():
    x = torch.randn(1, 1, 4, 8)
    for call in (lambda: FA.flash_attention_forward(x, torch.randn(1, 1, 5, 6), torch.randn(1, 1, 5, 6)),
                 lambda: FA.flash_attention_forward(x, x, x, block_q=0),
                 lambda: FA.flash_attention_forward(x, x, x, block_k=2.5),
                 lambda: FA.flash_attention_forward(torch.randn(1, 1, 5, 8), x, x, is_causal=True),
                 lambda: FA.flash_attention(torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8))):
        with pytest.raises(ValueError):
            call()


def test_flash_memory_is_tiles_not_the_score_matrix():
    q = torch.randn(1, 1, 2048, 64)
    _, naive = measure_peak(lambda: reference_attention(q, q, q)[0])
    _, tiled = measure_peak(FA.flash_attention_forward, q, q, q)
    assert naive > 2048 * 2048 * 4, f"the naive peak {naive} should hold a 16 MiB score matrix"
    assert tiled < naive / 10, f"tiled peak {tiled / 2**20:.2f} MiB against naive {naive / 2**20:.2f} MiB"
    qg = q.detach().requires_grad_()
    out = FA.flash_attention(qg, qg, qg, is_causal=True)
    _, backward = measure_peak(lambda: out.backward(torch.ones_like(out)))
    assert backward < naive / 5, f"the backward's peak {backward / 2**20:.2f} MiB: it should recompute tiles"


def test_flash_causal_skips_future_tiles():
    q = torch.randn(1, 1, 1024, 16)

    def flops(**options):
        with FlopCounterMode(display=False) as count:
            FA.flash_attention_forward(q, q, q, block_q=64, block_k=64, **options)
        return count.get_total_flops()

    full, causal = flops(), flops(is_causal=True)
    assert causal < 0.6 * full, f"{causal} FLOPs of matrix products with the causal mask against {full} without"


@pytest.mark.gpu
def test_flash_attention_on_cuda_in_low_precision():
    torch.manual_seed(13)
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v = (torch.randn(2, 4, 300, 64, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
        out = FA.flash_attention(q, k, v, is_causal=True)
        want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        expect_tensor(out, want, f"{dtype} on CUDA", atol=2e-2, rtol=2e-2)
        g = torch.randn_like(out)
        for name, a, b in zip("qkv", grads(out, (q, k, v), g), grads(want, (q, k, v), g)):
            expect_tensor(a, b, f"d{name}, {dtype} on CUDA", atol=5e-2, rtol=5e-2)
