"""Chapter 4: norms, feed-forward networks, RoPE and blocks, against PyTorch and HF transformers' Llama."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as hf_llama

from llmcourse import attention as A
from llmcourse import transformer as TR
from llmcourse.config import TransformerConfig
from llmcourse.course.checks import expect_tensor
from llmcourse.course.torch_weights import copy_torch_layer


def llama_config(d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, layers=1, base=10000.0, head_dim=None):
    return LlamaConfig(hidden_size=d_model, intermediate_size=d_ff, num_attention_heads=n_heads,
                       num_key_value_heads=n_kv_heads, head_dim=head_dim or d_model // n_heads,
                       num_hidden_layers=layers, rms_norm_eps=1e-5, rope_theta=base, max_position_embeddings=256,
                       vocab_size=97, attn_implementation="eager")


def ours_from(hf_config: LlamaConfig, **fields) -> TransformerConfig:
    """The course's config for the same Llama shape (no biases, RMSNorm's eps)."""
    return TransformerConfig(d_model=hf_config.hidden_size, n_heads=hf_config.num_attention_heads,
                             n_kv_heads=hf_config.num_key_value_heads, head_dim=hf_config.head_dim,
                             d_ff=hf_config.intermediate_size, bias=False, norm_eps=hf_config.rms_norm_eps, **fields)


def encoder_config(d_model, n_heads, d_ff, norm_first) -> TransformerConfig:
    """The shape of an nn.TransformerEncoderLayer/DecoderLayer with GELU."""
    return TransformerConfig(d_model=d_model, n_heads=n_heads, d_ff=d_ff, norm_first=norm_first, activation="gelu")


NORMS = (torch.nn.LayerNorm, torch.nn.RMSNorm, TR.RMSNorm, hf_llama.LlamaRMSNorm)


def randomise_norms(module):
    """Give every norm inside `module` (or `module` itself) weights other than ones."""
    norms = [m for m in module.modules() if isinstance(m, NORMS)]
    assert norms, f"{type(module).__name__} has no norm to randomise"
    with torch.no_grad():
        for norm in norms:
            norm.weight.normal_(1.0, 0.2)
            if getattr(norm, "bias", None) is not None:
                norm.bias.normal_(0.0, 0.2)


def compare_grads(ours, theirs, atol=1e-4):
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        expect_tensor(ours_params[name].grad, p.grad, f"the gradient of {name}", atol=atol, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_matches_torch_and_llama(device, dtype):
    torch.manual_seed(0)
    ours = TR.RMSNorm(48, eps=1e-5, device=device)
    randomise_norms(ours)
    llama = hf_llama.LlamaRMSNorm(48, eps=1e-5).to(device)
    llama.load_state_dict(ours.state_dict())
    ours, llama = ours.to(dtype), llama.to(dtype)
    x = (torch.randn(3, 5, 48, device=device) * 50).to(dtype)
    expect_tensor(ours(x), llama(x), f"RMSNorm ({dtype}) vs LlamaRMSNorm", atol=0, rtol=0)
    if dtype == torch.float32:
        reference = torch.nn.RMSNorm(48, eps=1e-5, device=device)
        reference.load_state_dict(ours.state_dict())
        expect_tensor(ours(x), reference(x), "RMSNorm vs torch.nn.RMSNorm")
        x64 = x.double()
        formula = x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5) * ours.weight.double()
        expect_tensor(ours.double()(x64), formula, "RMSNorm in float64 vs the formula", atol=1e-12, rtol=1e-12)


def test_swiglu_and_feedforward_match_formulas(device):
    torch.manual_seed(1)
    config = llama_config(d_model=32, d_ff=88)
    llama = hf_llama.LlamaMLP(config).to(device)
    ours = TR.SwiGLU(ours_from(config), device=device)
    ours.load_state_dict(llama.state_dict(), strict=True)
    x = torch.randn(2, 5, 32, device=device, requires_grad=True)
    x_hf = x.detach().clone().requires_grad_()
    got, want = ours(x), llama(x_hf)
    expect_tensor(got, want, "SwiGLU vs LlamaMLP")
    gate = x.detach() @ ours.gate_proj.weight.T
    formula = (gate * torch.sigmoid(gate) * (x.detach() @ ours.up_proj.weight.T)) @ ours.down_proj.weight.T
    expect_tensor(got.detach(), formula, "SwiGLU vs its formula")
    got.sum().backward()
    want.sum().backward()
    expect_tensor(x.grad, x_hf.grad, "the input gradient of SwiGLU")
    compare_grads(ours, llama)
    y = torch.randn(4, 16, device=device)
    for activation, formula in [
        ("gelu", torch.nn.functional.gelu), ("relu", torch.relu),
        ("gelu_tanh", lambda z: 0.5 * z * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (z + 0.044715 * z ** 3)))),
    ]:
        ffn = TR.FeedForward(TransformerConfig(d_model=16, n_heads=2, d_ff=64, activation=activation), device=device)
        expect_tensor(ffn(y), formula(y @ ffn.up_proj.weight.T + ffn.up_proj.bias) @ ffn.down_proj.weight.T
                      + ffn.down_proj.bias, f"FeedForward({activation}) vs its formula")
    with pytest.raises(ValueError, match="activation"):
        TR.FeedForward(TransformerConfig(d_model=16, n_heads=2, activation="swish"))


@pytest.mark.parity
@pytest.mark.parametrize("head_dim, base", [(16, 10000.0), (64, 500000.0), (128, 10000.0)])
def test_rope_matches_llama(device, head_dim, base):
    config = llama_config(d_model=head_dim * 2, n_heads=2, n_kv_heads=1, base=base)
    hf = hf_llama.LlamaRotaryEmbedding(config).to(device)
    ours = TR.RotaryEmbedding(head_dim, base=base, device=device)
    expect_tensor(ours.inv_freq, hf.inv_freq, "inv_freq", atol=0, rtol=0)
    assert "inv_freq" not in ours.state_dict()
    positions = torch.stack([torch.arange(0, 40), torch.arange(200, 240)]).to(device)
    x = torch.randn(2, 3, 40, head_dim, device=device)
    (cos, sin), (hcos, hsin) = ours(x, positions), hf(x, positions)
    expect_tensor(cos, hcos, "cos", atol=0, rtol=0)
    expect_tensor(sin, hsin, "sin", atol=0, rtol=0)
    k = torch.randn_like(x)
    hq, hk = hf_llama.apply_rotary_pos_emb(x, k, hcos, hsin)
    expect_tensor(TR.apply_rope(x, cos, sin), hq, "apply_rope(q)")
    expect_tensor(TR.apply_rope(k, cos, sin), hk, "apply_rope(k)")
    expect_tensor(TR.rotate_half(x), hf_llama.rotate_half(x), "rotate_half", atol=0, rtol=0)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(0, 4000), n=st.integers(0, 4000), shift=st.integers(-2000, 2000), seed=st.integers(0, 10**6))
def test_rope_scores_depend_only_on_the_offset(m, n, shift, seed):
    """<RoPE(q, m), RoPE(k, n)> = <RoPE(q, m + s), RoPE(k, n + s)> for every shift s."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, 1, 1, 64, generator=g, dtype=torch.float64),
            torch.randn(1, 1, 1, 64, generator=g, dtype=torch.float64))
    m2, n2 = m + shift, n + shift
    if min(m2, n2) < 0:
        return
    rope = TR.RotaryEmbedding(64)

    def score(a, b):
        ca, sa = rope(q, torch.tensor([a]))
        cb, sb = rope(k, torch.tensor([b]))
        return (TR.apply_rope(q, ca, sa) * TR.apply_rope(k, cb, sb)).sum().item()

    # the angles are float32 as in Llama: their rounding error grows with the position
    tolerance = 2e-6 * (1 + max(m, n, m2, n2)) * (q.norm() * k.norm()).item()
    assert abs(score(m, n) - score(m2, n2)) < tolerance
    assert abs(score(m, m) - (q * k).sum().item()) < tolerance, "equal positions: the rotation cancels"


def test_rope_preserves_norms_and_checks_shapes():
    rope = TR.RotaryEmbedding(32)
    x = torch.randn(2, 4, 10, 32)
    cos, sin = rope(x, torch.arange(10))
    assert cos.shape == (10, 32)
    expect_tensor(TR.apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), "norms after rotation")
    with pytest.raises(ValueError):
        TR.rope_inv_freq(33)
    with pytest.raises(ValueError):
        TR.apply_rope(torch.randn(1, 1, 10, 16), cos, sin)


@pytest.mark.parity
@pytest.mark.parametrize("n_heads, n_kv_heads, head_dim", [(4, 4, 16), (4, 2, 16), (4, 1, 16), (8, 2, 8), (4, 2, 24)])
def test_decoder_block_matches_llama_decoder_layer(device, n_heads, n_kv_heads, head_dim):
    torch.manual_seed(2)
    config = llama_config(d_model=64, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim)
    hf = hf_llama.LlamaDecoderLayer(config, layer_idx=0).to(device)
    randomise_norms(hf)
    ours = TR.DecoderBlock(ours_from(config), device=device)
    ours.load_state_dict(hf.state_dict(), strict=True)  # the names are Llama's: a 1:1 map
    T = 13
    x = torch.randn(2, T, 64, device=device, requires_grad=True)
    x_hf = x.detach().clone().requires_grad_()
    positions = torch.arange(T, device=device)[None].expand(2, T)
    lengths = torch.tensor([T, 8], device=device)
    keep = (torch.arange(T, device=device)[None] < lengths[:, None])[:, None, None, :] & A.causal_mask(T, device=device)
    got = ours(x, TR.RotaryEmbedding(head_dim, device=device)(x, positions), mask=keep)
    want = hf(x_hf, attention_mask=A.additive_mask(keep),
              position_embeddings=hf_llama.LlamaRotaryEmbedding(config).to(device)(x_hf, positions))
    want = want[0] if isinstance(want, tuple) else want
    expect_tensor(got, want, f"DecoderBlock {n_heads}/{n_kv_heads} heads of {head_dim} vs LlamaDecoderLayer")
    g = torch.randn_like(want)
    got.backward(g)
    want.backward(g)
    expect_tensor(x.grad, x_hf.grad, "the input gradient", atol=1e-4)
    compare_grads(ours, hf)


@pytest.mark.parity
def test_a_stack_of_blocks_is_a_llama_model():
    """Llama = embedding, blocks, final RMSNorm: our blocks reproduce LlamaModel's hidden states."""
    torch.manual_seed(3)
    config = llama_config(layers=3)
    hf = hf_llama.LlamaModel(config).eval()
    randomise_norms(hf)
    blocks = torch.nn.ModuleList(TR.DecoderBlock(ours_from(config)) for _ in range(3))
    blocks.load_state_dict(hf.layers.state_dict(), strict=True)
    final_norm = TR.RMSNorm(64, eps=1e-5)
    final_norm.load_state_dict(hf.norm.state_dict())
    ids = torch.randint(0, 97, (2, 17))
    with torch.no_grad():
        want = hf(input_ids=ids).last_hidden_state
        h = hf.embed_tokens(ids)
        rope = TR.RotaryEmbedding(16)(h, torch.arange(17))
        for block in blocks:
            h = block(h, rope)
        got = final_norm(h)
    expect_tensor(got, want, "three DecoderBlocks + RMSNorm vs LlamaModel")


@pytest.mark.gpu
@pytest.mark.parity
def test_decoder_block_bf16_on_cuda():
    torch.manual_seed(4)
    config = llama_config(d_model=128, n_heads=8, n_kv_heads=2, d_ff=256)
    hf = hf_llama.LlamaDecoderLayer(config, layer_idx=0).to("cuda", torch.bfloat16)
    ours = TR.DecoderBlock(ours_from(config), device="cuda", dtype=torch.bfloat16)
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(2, 40, 128, device="cuda", dtype=torch.bfloat16)
    positions = torch.arange(40, device="cuda")[None].expand(2, 40)
    causal = A.additive_mask(A.causal_mask(40, device="cuda"), torch.bfloat16)[None, None]
    with torch.no_grad():
        want = hf(x, attention_mask=causal,
                  position_embeddings=hf_llama.LlamaRotaryEmbedding(config).to("cuda")(x, positions))
        want = want[0] if isinstance(want, tuple) else want
        got = ours(x, TR.RotaryEmbedding(16, device="cuda")(x, positions))
    expect_tensor(got, want, "bf16 DecoderBlock on CUDA", atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block_matches_torch(device, norm_first):
    torch.manual_seed(5)
    reference = torch.nn.TransformerEncoderLayer(64, 8, 256, dropout=0.0, activation="gelu", batch_first=True,
                                                 norm_first=norm_first, device=device)
    randomise_norms(reference)
    ours = TR.EncoderBlock(encoder_config(64, 8, 256, norm_first), device=device)
    copy_torch_layer(ours, reference)
    x = torch.randn(3, 9, 64, device=device, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    keep = torch.arange(9, device=device)[None] < torch.tensor([9, 5, 1], device=device)[:, None]
    got = ours(x, mask=A.padding_mask(keep))
    want = reference(x_ref, src_key_padding_mask=~keep)
    expect_tensor(got, want, f"EncoderBlock(norm_first={norm_first})")
    got.square().sum().backward()
    want.square().sum().backward()
    expect_tensor(x.grad, x_ref.grad, "the input gradient", atol=1e-4)
    expect_tensor(ours.mlp.up_proj.weight.grad, reference.linear1.weight.grad, "the gradient of mlp.up_proj", atol=1e-4)
    future = torch.ones(9, 9, dtype=torch.bool, device=device).triu(1)  # PyTorch's convention: True = blocked
    with torch.no_grad():  # the same block made causal, as GPT-2 uses it (chapter 5)
        expect_tensor(ours(x, mask=A.padding_mask(keep), is_causal=True),
                      reference(x, src_mask=future, src_key_padding_mask=~keep, is_causal=True),
                      f"EncoderBlock(norm_first={norm_first}, is_causal=True) with padding")


@pytest.mark.parametrize("norm_first", [False, True])
def test_cross_attention_decoder_block_matches_torch(device, norm_first):
    torch.manual_seed(6)
    reference = torch.nn.TransformerDecoderLayer(64, 8, 256, dropout=0.0, activation="gelu", batch_first=True,
                                                 norm_first=norm_first, device=device)
    randomise_norms(reference)
    ours = TR.CrossAttentionDecoderBlock(encoder_config(64, 8, 256, norm_first), device=device)
    copy_torch_layer(ours, reference)
    x = torch.randn(2, 7, 64, device=device, requires_grad=True)
    memory = torch.randn(2, 11, 64, device=device, requires_grad=True)
    x_ref, memory_ref = (t.detach().clone().requires_grad_() for t in (x, memory))
    keep = torch.arange(11, device=device)[None] < torch.tensor([11, 4], device=device)[:, None]
    causal = torch.nn.Transformer.generate_square_subsequent_mask(7, device=device)
    got = ours(x, memory, memory_mask=A.padding_mask(keep))
    want = reference(x_ref, memory_ref, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=~keep)
    expect_tensor(got, want, f"CrossAttentionDecoderBlock(norm_first={norm_first})")
    got.square().sum().backward()
    want.square().sum().backward()
    expect_tensor(memory.grad, memory_ref.grad, "the gradient of memory", atol=1e-4)
    expect_tensor(ours.cross_attn.v_proj.weight.grad, reference.multihead_attn.in_proj_weight.grad.chunk(3)[2],
                  "the gradient of cross_attn.v_proj", atol=1e-4)


def test_one_forward_signature_for_every_attention():
    """RotaryAttention keeps Attention's forward; positions are a keyword of the same call."""
    import inspect

    assert TR.RotaryAttention.forward is A.Attention.forward
    assert "position_embeddings" in inspect.signature(A.Attention.forward).parameters
    layer = TR.RotaryAttention(TransformerConfig(d_model=32, n_heads=4, n_kv_heads=2))
    with pytest.raises(ValueError, match="position_embeddings"):
        layer(torch.randn(1, 3, 32))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_blocks_take_one_config(attn_implementation):
    """Every block is built from a TransformerConfig; its fields reach every layer."""
    config = TransformerConfig(d_model=48, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=80, bias=False, norm_eps=1e-5,
                               attn_implementation=attn_implementation)
    block = TR.DecoderBlock(config)
    shapes = {name: tuple(p.shape) for name, p in block.named_parameters()}
    assert shapes["self_attn.q_proj.weight"] == (64, 48) and shapes["self_attn.k_proj.weight"] == (32, 48)
    assert shapes["mlp.gate_proj.weight"] == (80, 48) and block.input_layernorm.eps == 1e-5
    assert not any(name.endswith("bias") for name in shapes), "bias=False reaches every layer"
    encoder = TR.EncoderBlock(TransformerConfig(d_model=48, n_heads=4, head_dim=16, d_ff=80, norm_first=False))
    assert tuple(encoder.self_attn.o_proj.weight.shape) == (48, 64) and encoder.self_attn.o_proj.bias is not None
    x = torch.randn(2, 5, 48)
    assert encoder(x).shape == x.shape
    decoder = TR.CrossAttentionDecoderBlock(TransformerConfig(d_model=48, n_heads=4, n_kv_heads=1))
    assert decoder(x, torch.randn(2, 3, 48)).shape == x.shape


@pytest.mark.parity
def test_decoder_block_sdpa_equals_eager(device):
    torch.manual_seed(11)
    config = llama_config(d_model=64, n_heads=8, n_kv_heads=2)
    eager = TR.DecoderBlock(ours_from(config), device=device)
    fast = TR.DecoderBlock(ours_from(config, attn_implementation="sdpa"), device=device)
    fast.load_state_dict(eager.state_dict())
    x = torch.randn(2, 9, 64, device=device)
    pe = TR.RotaryEmbedding(8, device=device)(x, torch.arange(9, device=device))
    keep = A.padding_mask(torch.tensor([[1] * 9, [1] * 6 + [0] * 3], device=device))
    expect_tensor(fast(x, pe, mask=keep), eager(x, pe, mask=keep), "DecoderBlock with sdpa vs eager")


def test_layers_take_the_dtype_they_are_given_and_rope_reaches_far_positions():
    config = TransformerConfig(d_model=16, n_heads=2, d_ff=24, bias=False)
    for dtype in (torch.float16, torch.float64):
        assert TR.RMSNorm(16, dtype=dtype).weight.dtype == dtype
        assert {p.dtype for p in TR.SwiGLU(config, dtype=dtype).parameters()} == {dtype}
    hf = hf_llama.LlamaRotaryEmbedding(llama_config(d_model=128, n_heads=2, n_kv_heads=1))
    ours = TR.RotaryEmbedding(64)
    far = torch.tensor([[0, 255, 1001, 2049, 4095]])
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.zeros(1, dtype=dtype)
        (cos, sin), (hcos, hsin) = ours(x, far), hf(x, far)
        assert cos.dtype == sin.dtype == dtype, f"the tables come back in x's dtype {dtype}, got {cos.dtype}"
        tol = 0 if dtype == torch.float32 else 1e-2
        expect_tensor(cos, hcos, f"cos at positions up to 4095 ({dtype})", atol=tol, rtol=0)
        expect_tensor(sin, hsin, f"sin at positions up to 4095 ({dtype})", atol=tol, rtol=0)


def test_blocks_pass_is_causal_and_masks_on():
    torch.manual_seed(15)
    config = TransformerConfig(d_model=32, n_heads=4, n_kv_heads=2, d_ff=64, bias=False)
    block = TR.DecoderBlock(config).eval()
    x = torch.randn(1, 5, 32)
    pe = TR.RotaryEmbedding(8)(x, torch.arange(5))
    changed = x.clone()
    changed[0, 4] += torch.randn(32)
    assert (block(x, pe, is_causal=False)[0, 0] - block(changed, pe, is_causal=False)[0, 0]).abs().max() > 1e-4, \
        "with is_causal=False the first position sees the last"
    reference = torch.nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, activation="gelu", batch_first=True).eval()
    ours = TR.CrossAttentionDecoderBlock(encoder_config(32, 4, 64, False)).eval()
    copy_torch_layer(ours, reference)
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 3, 32)
    keep = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]).bool()
    with torch.no_grad():
        expect_tensor(ours(x, memory, is_causal=False), reference(x, memory), "the decoder block without a causal mask")
        expect_tensor(ours(x, memory, mask=A.padding_mask(keep), is_causal=False),
                      reference(x, memory, tgt_key_padding_mask=~keep), "the decoder block with a target padding mask")
