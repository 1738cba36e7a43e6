"""Chapter 6, exercise 6: the Triton FlashAttention forward, against PyTorch's attention.

Without CUDA the kernel runs in Triton's CPU interpreter (TRITON_INTERPRET=1, set below before
anything imports triton), one program after another: shapes stay tiny (B*h <= 2, T <= 128), so
each test takes about a second. bf16 is checked on the GPU only (the interpreter gets it wrong).
The tests marked gpu run the compiled kernel at realistic sizes.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernel is first built

import llmcourse  # noqa: E402
from llmcourse.course.checks import expect_tensor  # noqa: E402
from llmcourse.kernels import triton_flash as TF  # noqa: E402

needs_triton = pytest.mark.skipif(not TF.triton_available(), reason="needs triton (pip install triton)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def visible_keys(n_queries: int, n_keys: int, device=None) -> torch.Tensor:
    """Boolean (T, S): query i sees key j <= S - T + i (the course's bottom-right causal alignment).

    Unlike llmcourse.attention.causal_mask it also takes T > S, where the first queries see nothing.
    """
    query_positions = torch.arange(n_queries, device=device)[:, None] + (n_keys - n_queries)
    return torch.arange(n_keys, device=device)[None, :] <= query_positions


def reference(q, k, v, is_causal, scale=None):
    """(out, lse) of PyTorch's attention in float32 or wider, with an explicit bottom-right mask."""
    wide = torch.promote_types(q.dtype, torch.float32)
    q, k, v = q.to(wide), k.to(wide), v.to(wide)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    mask = visible_keys(q.shape[-2], k.shape[-2], q.device) if is_causal else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    scores = scale * q @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return out, torch.logsumexp(scores, dim=-1)


def random_qkv(shape_q, n_keys, dtype=torch.float32, device=DEVICE, seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    batch, heads, _, head_dim = shape_q
    tensors = [torch.randn(shape_q, generator=generator),
               torch.randn(batch, heads, n_keys, head_dim, generator=generator),
               torch.randn(batch, heads, n_keys, head_dim, generator=generator)]
    return [t.to(device, dtype).requires_grad_(requires_grad) for t in tensors]


CASES = [  # (T, S, head_dim, is_causal)
    (64, 64, 16, False),
    (64, 64, 32, True),
    (37, 53, 32, False),  # ragged: neither a multiple of the tiles
    (37, 53, 32, True),  # T != S: bottom-right alignment
    (128, 128, 64, True),
    (1, 17, 16, True),  # one query (a decoding step) sees every key
]


@needs_triton
@pytest.mark.parametrize("n_queries, n_keys, head_dim, is_causal", CASES)
def test_forward_matches_sdpa_fp32(n_queries, n_keys, head_dim, is_causal):
    q, k, v = random_qkv((1, 2, n_queries, head_dim), n_keys)
    out, lse = TF.triton_flash_forward(q, k, v, is_causal=is_causal)
    expected_out, expected_lse = reference(q, k, v, is_causal)
    expect_tensor(out, expected_out, "out", atol=1e-5, rtol=0)
    expect_tensor(lse, expected_lse, "lse (natural log, float32)", atol=1e-5, rtol=0)


@needs_triton
@pytest.mark.parametrize("n_queries, n_keys, head_dim, is_causal",
                         [(64, 64, 32, False), (37, 53, 32, True), (128, 128, 64, True)])
def test_forward_fp16(n_queries, n_keys, head_dim, is_causal):
    q, k, v = random_qkv((1, 2, n_queries, head_dim), n_keys, dtype=torch.float16)
    out, lse = TF.triton_flash_forward(q, k, v, is_causal=is_causal)
    expected_out, expected_lse = reference(q, k, v, is_causal)  # float32 on the same fp16 inputs
    expect_tensor(out, expected_out.half(), "out (fp16)", atol=TOLERANCE[torch.float16], rtol=0)
    expect_tensor(lse, expected_lse, "lse (fp16 inputs)", atol=TOLERANCE[torch.float16], rtol=0)


@needs_triton
@pytest.mark.parametrize("block_m, block_n", [(16, 64), (64, 16)])
def test_unequal_tiles(block_m, block_n):
    """The causal loop bounds hold when query and key tiles differ in size."""
    q, k, v = random_qkv((1, 1, 75, 16), 101)
    out, lse = TF.triton_flash_forward(q, k, v, is_causal=True, block_m=block_m, block_n=block_n)
    expected_out, expected_lse = reference(q, k, v, True)
    expect_tensor(out, expected_out, f"out with block_m={block_m}, block_n={block_n}", atol=1e-5, rtol=0)
    expect_tensor(lse, expected_lse, f"lse with block_m={block_m}, block_n={block_n}", atol=1e-5, rtol=0)


@needs_triton
def test_scale_and_strided_inputs():
    """A given scale, and q, k, v that are views of (B, T, h, d) tensors (strides, not copies)."""
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, n, 2, 32, generator=generator).to(DEVICE).transpose(1, 2) for n in (40, 40, 40))
    out, lse = TF.triton_flash_forward(q, k, v, is_causal=True, scale=0.3)
    expected_out, expected_lse = reference(q, k, v, True, scale=0.3)
    expect_tensor(out, expected_out, "out of transposed inputs, scale 0.3", atol=1e-5, rtol=0)
    expect_tensor(lse, expected_lse, "lse of transposed inputs, scale 0.3", atol=1e-5, rtol=0)


@needs_triton
def test_causal_never_reads_future_tiles():
    """Key tiles wholly in a query tile's future are skipped, not loaded and masked: values there
    set to NaN would otherwise reach the output through 0 * NaN."""
    q, k, v = random_qkv((1, 1, 128, 16), 128)
    v[..., 64:, :] = float("nan")  # the future of queries 0..63: tiles 2 and 3 of 32 keys
    out, _ = TF.triton_flash_forward(q, k, v, is_causal=True, block_m=32, block_n=32)
    expected_out, _ = reference(q[..., :64, :], k[..., :64, :], v[..., :64, :], True)
    expect_tensor(out[..., :64, :], expected_out, "out of queries 0..63 (their future is NaN)", atol=1e-5, rtol=0)


@needs_triton
def test_queries_that_see_no_key():
    """Causal with T > S: the first T - S queries see no key, and get out = 0 and lse = -inf."""
    q, k, v = random_qkv((1, 2, 50, 16), 20)
    out, lse = TF.triton_flash_forward(q, k, v, is_causal=True)
    expect_tensor(out[..., :30, :], torch.zeros_like(out[..., :30, :]), "out of queries that see no key")
    expect_tensor(lse[..., :30], torch.full_like(lse[..., :30], float("-inf")), "lse of queries that see no key")
    expected_out, expected_lse = reference(q[..., 30:, :], k, v, True)
    expect_tensor(out[..., 30:, :], expected_out, "out of the other queries", atol=1e-5, rtol=0)
    expect_tensor(lse[..., 30:], expected_lse, "lse of the other queries", atol=1e-5, rtol=0)


@needs_triton
@pytest.mark.parametrize("n_queries, n_keys, is_causal", [(48, 48, False), (37, 53, True)])
def test_gradients_match_sdpa(n_queries, n_keys, is_causal):
    q, k, v = random_qkv((1, 2, n_queries, 32), n_keys, requires_grad=True)
    grad_out = torch.randn(1, 2, n_queries, 32, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    TF.triton_flash_attention(q, k, v, is_causal=is_causal).backward(grad_out)
    ours = [x.grad for x in (q, k, v)]
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    reference(q2, k2, v2, is_causal)[0].backward(grad_out)
    for name, actual, x in zip("qkv", ours, (q2, k2, v2)):
        expect_tensor(actual, x.grad, f"d{name}", atol=1e-5, rtol=1e-4)


@needs_triton
def test_gradients_with_shared_key_value_heads():
    """Two query heads share one key/value head (repeat_kv, gradients summed back)."""
    q, = random_qkv((1, 2, 40, 16), 40, requires_grad=True)[:1]
    k, v = (x[:, :1].detach().clone().requires_grad_() for x in random_qkv((1, 2, 40, 16), 40, seed=3)[1:])
    grad_out = torch.randn(1, 2, 40, 16, generator=torch.Generator().manual_seed(6)).to(DEVICE)
    TF.triton_flash_attention(q, k, v, is_causal=True).backward(grad_out)
    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    reference(q2, k2.expand(1, 2, 40, 16), v2.expand(1, 2, 40, 16), True)[0].backward(grad_out)
    for name, actual, x in zip("qkv", (q.grad, k.grad, v.grad), (q2, k2, v2)):
        expect_tensor(actual, x.grad, f"d{name} (GQA)", atol=1e-5, rtol=1e-4)



@needs_triton
@pytest.mark.parametrize("change, message", [
    (lambda q, k, v: (q[..., :24], k[..., :24], v[..., :24]), "head size 24"),
    (lambda q, k, v: (q.double(), k.double(), v.double()), "float64"),
    (lambda q, k, v: (q, k.half(), v), "one dtype"),
    (lambda q, k, v: (q, k[:, :1], v[:, :1]), "number of heads"),
    (lambda q, k, v: (q[0], k[0], v[0]), "4-dimensional"),
])
def test_bad_inputs_are_refused(change, message):
    q, k, v = change(*random_qkv((1, 2, 8, 32), 8))
    with pytest.raises(ValueError, match=message):
        TF.triton_flash_forward(q, k, v)


@needs_triton
def test_bad_block_size_is_refused():
    q, k, v = random_qkv((1, 1, 8, 16), 8)
    with pytest.raises(ValueError, match="block_n should be a power of two"):
        TF.triton_flash_forward(q, k, v, block_n=24)


def test_imports_and_explains_without_triton():
    """The module imports without Triton; calling the kernel then says what to install."""
    script = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # as if not installed: import fails, find_spec gives None
        import torch
        from llmcourse.kernels import triton_flash as TF
        assert TF.triton_available() is False, "triton_available() should be False"
        q = torch.randn(1, 1, 4, 16)
        try:
            TF.triton_flash_forward(q, q, q)
        except ImportError as error:
            print(error)
        else:
            raise SystemExit("no ImportError without triton")
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(llmcourse.__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"without triton: {result.stderr or result.stdout}"
    assert "pip install triton" in result.stdout, f"the ImportError should say `pip install triton`: {result.stdout}"
    assert "TRITON_INTERPRET=1" in result.stdout, f"the ImportError should mention TRITON_INTERPRET=1: {result.stdout}"


# On the GPU: the compiled kernel at realistic sizes, bf16 included.

@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("is_causal", [False, True])
def test_gpu_forward_half(dtype, head_dim, is_causal):
    q, k, v = random_qkv((2, 4, 1024, head_dim), 1024, dtype=dtype, device="cuda")
    out, lse = TF.triton_flash_forward(q, k, v, is_causal=is_causal, block_m=64, block_n=64)
    expected_out, expected_lse = reference(q, k, v, is_causal)
    tolerance = TOLERANCE[torch.bfloat16]  # one bf16 step of 2**-8 relative, both sides rounded
    expect_tensor(out, expected_out.to(dtype), f"out ({dtype})", atol=tolerance, rtol=tolerance)
    expect_tensor(lse, expected_lse, f"lse ({dtype} inputs)", atol=tolerance, rtol=0)


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("is_causal", [False, True])
def test_gpu_forward_fp32_is_not_tf32(is_causal):
    """fp32 inputs stay fp32 in tl.dot (input_precision="ieee"): TF32 would be off by about 1e-3."""
    q, k, v = random_qkv((1, 4, 1000, 64), 1024, device="cuda")  # ragged, and T < S
    out, lse = TF.triton_flash_forward(q, k, v, is_causal=is_causal)
    expected_out, expected_lse = reference(q.double(), k.double(), v.double(), is_causal)
    expect_tensor(out, expected_out.float(), "out (fp32)", atol=1e-5, rtol=0)
    expect_tensor(lse, expected_lse.float(), "lse (fp32)", atol=1e-5, rtol=0)


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_gradients_half(dtype):
    """Gradients at least as close to float64 as PyTorch's own in the same dtype (or within 1e-2)."""
    q, k, v = random_qkv((1, 4, 1024, 64), 1024, dtype=dtype, device="cuda", requires_grad=True)
    grad_out = torch.randn(1, 4, 1024, 64, device="cuda", dtype=dtype)
    TF.triton_flash_attention(q, k, v, is_causal=True).backward(grad_out)
    ours = [x.grad for x in (q, k, v)]
    theirs_inputs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    F.scaled_dot_product_attention(*theirs_inputs, is_causal=True).backward(grad_out)
    exact_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    F.scaled_dot_product_attention(*exact_inputs, is_causal=True).backward(grad_out.double())
    for name, actual, theirs, exact in zip("qkv", ours, theirs_inputs, exact_inputs):
        our_error = (actual.double() - exact.grad).abs().max().item()
        their_error = (theirs.grad.double() - exact.grad).abs().max().item()
        assert our_error <= max(2 * their_error, TOLERANCE[torch.bfloat16]), (
            f"d{name} in {dtype}: max error {our_error:.3g} against float64, PyTorch's {their_error:.3g}")
