"""The stand-ins a grade cell puts in place of other exercises' code (llmcourse.course.oracles):
each keeps the contract of the reference it stands for, `on_its_own` always puts the learner's
code back, and learner code that names them is refused."""
from __future__ import annotations

import pytest
import torch

from llmcourse import attention, embeddings, flash_attention, sparse_attention, tokenizer, transformer
from llmcourse.config import TransformerConfig
from llmcourse.course import oracles
from llmcourse.course.checks import on_its_own
from llmcourse.course.submission import tampering
from llmcourse.models import gpt2, t5

pytestmark = [pytest.mark.course_infra]

REFERENCES = {"get_pair_counts": tokenizer, "merge": tokenizer, "normalize_rows": embeddings,
              "cosine_similarity_matrix": embeddings, "causal_mask": attention, "padding_mask": attention,
              "attention_weights": attention, "scaled_dot_product_attention": attention, "split_heads": attention,
              "merge_heads": attention, "repeat_kv": attention, "RMSNorm": transformer, "SwiGLU": transformer,
              "rope_inv_freq": transformer, "rotate_half": transformer, "apply_rope": transformer,
              "relative_position_bucket": t5, "RelativePositionBias": t5, "GPT2": gpt2, "causal_lm_loss": gpt2,
              "block_sparse_layout": sparse_attention, "layout_to_mask": sparse_attention,
              "flash_attention_forward": flash_attention, "flash_attention_backward": flash_attention}


def test_every_stand_in_has_a_reference():
    assert set(oracles.STAND_INS) == set(REFERENCES)
    for name in REFERENCES:
        assert hasattr(REFERENCES[name], name), f"llmcourse.{REFERENCES[name].__name__} has no {name}"


def close(dtype):
    """Tolerances for two correct computations that round differently."""
    return {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {}


def pair(name):
    return oracles.STAND_INS[name], getattr(REFERENCES[name], name)


def test_tokenizer_stand_ins_agree():
    ours, ref = pair("get_pair_counts")
    ids = [1, 2, 1, 2, 1, 1, 1]
    assert ours(ids) == ref(ids)
    assert ours(ids, {(1, 2): 5, (9, 9): 1}) == ref(ids, {(1, 2): 5, (9, 9): 1})
    ours, ref = pair("merge")
    for ids, pair_, new in [([1, 1, 1, 2, 1, 1], (1, 1), 7), ([], (1, 2), 3), ([5, 6, 5, 6], (5, 6), 5)]:
        assert ours(ids, pair_, new) == ref(ids, pair_, new)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_embedding_stand_ins_agree(dtype):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 6, generator=g, dtype=dtype), torch.randn(2, 4, 6, generator=g, dtype=dtype)
    a[0, 1] = 0.0
    a[1, 2] = 1e-9
    for name, args in [("normalize_rows", (a,)), ("cosine_similarity_matrix", (a, b)),
                       ("cosine_similarity_matrix", (a,))]:
        ours, ref = pair(name)
        torch.testing.assert_close(ours(*args), ref(*args))
    with pytest.raises(ValueError):
        oracles.cosine_similarity_matrix(a, torch.randn(3, 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_attention_stand_ins_agree(dtype):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g).to(dtype) for n in (5, 7, 7))
    masks = [None, torch.rand(5, 7, generator=g) > 0.5, torch.randn(2, 1, 5, 7, generator=g),
             torch.zeros(5, 7, dtype=torch.bool)]
    for mask in masks:
        for is_causal in (False, True):
            for scale in (None, 0.0, 0.3):
                ours, ref = pair("scaled_dot_product_attention")
                torch.testing.assert_close(ours(q, k, v, mask=mask, is_causal=is_causal, scale=scale),
                                           ref(q, k, v, mask=mask, is_causal=is_causal, scale=scale), **close(dtype))
        ours, ref = pair("attention_weights")
        torch.testing.assert_close(ours(q, k, mask), ref(q, k, mask), **close(dtype))
    for args in [(3,), (2, 5), (1, 4), (4, 4)]:
        assert torch.equal(oracles.causal_mask(*args), attention.causal_mask(*args))
    am = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert torch.equal(oracles.padding_mask(am), attention.padding_mask(am))
    x = torch.randn(2, 5, 12, generator=g).to(dtype)
    assert torch.equal(oracles.split_heads(x, 3), attention.split_heads(x, 3))
    assert torch.equal(oracles.merge_heads(oracles.split_heads(x, 4)), x)
    kv = torch.randn(2, 2, 5, 4, generator=g).to(dtype)
    for n_rep in (1, 3):
        assert torch.equal(oracles.repeat_kv(kv, n_rep), attention.repeat_kv(kv, n_rep))
    for bad in [lambda f: f.causal_mask(5, 3), lambda f: f.padding_mask(torch.ones(3)),
                lambda f: f.split_heads(torch.ones(1, 2, 10), 4), lambda f: f.attention_weights(q, kv)]:
        for module in (oracles, attention):
            with pytest.raises(ValueError):
                bad(module)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transformer_stand_ins_agree(dtype):
    torch.manual_seed(2)
    config = TransformerConfig(d_model=16, n_heads=2, d_ff=24, bias=False)
    x = torch.randn(2, 5, 16).to(dtype)
    for name, make in [("RMSNorm", lambda cls: cls(16, eps=1e-5, dtype=dtype)),
                       ("SwiGLU", lambda cls: cls(config, dtype=dtype))]:
        ours_cls, ref_cls = pair(name)
        ref = make(ref_cls)
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_()
        ours = make(ours_cls)
        ours.load_state_dict(ref.state_dict(), strict=True)
        torch.testing.assert_close(ours(x), ref(x), **close(dtype))
    for head_dim, base in [(8, 10000.0), (64, 500000.0)]:
        assert torch.equal(oracles.rope_inv_freq(head_dim, base), transformer.rope_inv_freq(head_dim, base))
    cos, sin = transformer.RotaryEmbedding(8)(x, torch.arange(5))
    h = torch.randn(2, 3, 5, 8).to(dtype)
    torch.testing.assert_close(oracles.apply_rope(h, cos, sin), transformer.apply_rope(h, cos, sin), **close(dtype))
    assert torch.equal(oracles.rotate_half(h), transformer.rotate_half(h))
    with pytest.raises(ValueError):
        oracles.rope_inv_freq(7)


def test_variant_stand_ins_agree():
    offsets = torch.arange(-300, 301)
    for bidirectional in (True, False):
        for num_buckets, max_distance in [(32, 128), (8, 20), (6, 7)]:
            ours, ref = pair("relative_position_bucket")
            assert torch.equal(ours(offsets, bidirectional, num_buckets, max_distance),
                               ref(offsets, bidirectional, num_buckets, max_distance))
    torch.manual_seed(5)
    config = t5.T5Config(d_model=16, n_heads=3, head_dim=4, d_ff=20, vocab_size=30, num_buckets=8, max_distance=12)
    for bidirectional in (True, False):
        ours_cls, ref_cls = pair("RelativePositionBias")
        ref = ref_cls(config, bidirectional)
        ours = ours_cls(config, bidirectional)
        ours.load_state_dict(ref.state_dict(), strict=True)
        assert torch.equal(ours(7, 9), ref(7, 9)) and ours(7, 9).shape == (1, 3, 7, 9)

    config = gpt2.GPT2Config(d_model=16, n_heads=2, n_layers=2, vocab_size=30, max_seq_len=12)
    stand_in = oracles.GPT2(config)
    ours = gpt2.load_hf_gpt2(gpt2.GPT2(config), stand_in.model.state_dict())
    ids = torch.randint(0, 30, (3, 12))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, 9:] = 0
    ours.eval(), stand_in.eval()
    want, got = ours(ids, attention_mask), stand_in(ids, attention_mask)
    torch.testing.assert_close(got[attention_mask.bool()], want[attention_mask.bool()], atol=1e-5, rtol=1e-5)
    labels = ids.masked_fill(attention_mask == 0, -100)
    torch.testing.assert_close(oracles.causal_lm_loss(want, labels), gpt2.causal_lm_loss(want, labels))
    with pytest.raises(ValueError):
        stand_in(torch.randint(0, 30, (1, 13)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_computation_stand_ins_agree(dtype):
    for args in [(1,), (5, 1, 1), (6, 0, 2, True), (7, 2, 0), (4, 5, 0, True)]:
        ours, ref = pair("block_sparse_layout")
        assert torch.equal(ours(*args), ref(*args)), args
    layout = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=torch.bool)
    ours, ref = pair("layout_to_mask")
    assert torch.equal(ours(layout, 3, 8), ref(layout, 3, 8))
    for bad in (torch.ones(2, 2, dtype=torch.bool), torch.ones(3, 3)):
        with pytest.raises(ValueError):
            ours(bad, 3, 8)
    torch.manual_seed(6)
    q = torch.randn(2, 3, 13, 8, dtype=dtype)
    k, v = torch.randn(2, 3, 17, 8, dtype=dtype), torch.randn(2, 3, 17, 5, dtype=dtype)
    keep = torch.rand(13, 17) > 0.3
    keep[:, 0] = True
    grad_out = torch.randn(2, 3, 13, 5, dtype=dtype)
    for mask in (None, keep):
        for is_causal in (False, True):
            ours, ref = pair("flash_attention_forward")
            (out, lse), (want_out, want_lse) = ours(q, k, v, mask, is_causal, 0.4), ref(q, k, v, mask, is_causal, 0.4)
            torch.testing.assert_close(out, want_out)
            torch.testing.assert_close(lse, want_lse)
            ours, ref = pair("flash_attention_backward")
            for a, b in zip(ours(q, k, v, out, lse, grad_out, mask, is_causal, 0.4),
                            ref(q, k, v, out, lse, grad_out, mask, is_causal, 0.4)):
                torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        oracles.flash_attention_forward(torch.randn(1, 1, 5, 8), torch.randn(1, 1, 3, 8), torch.randn(1, 1, 3, 8),
                                        is_causal=True)


def test_on_its_own_always_puts_the_learners_code_back():
    def split_heads(x, n):
        return "the learner's"

    namespace = {"split_heads": split_heads}
    with on_its_own(namespace, "split_heads", "merge_heads"):
        assert namespace["split_heads"] is oracles.split_heads
        assert namespace["merge_heads"] is oracles.merge_heads
    assert namespace == {"split_heads": split_heads}
    with pytest.raises(AssertionError), on_its_own(namespace, "split_heads"):
        raise AssertionError("a failed test")
    assert namespace == {"split_heads": split_heads}
    with pytest.raises(KeyError, match="no stand-in"), on_its_own(namespace, "no_such_exercise"):
        pass


@pytest.mark.parametrize("source", [
    "from llmcourse.course.oracles import split_heads",
    "from llmcourse.course import oracles",
    "import llmcourse.course.tokenizer_oracles as t",
    "import llmcourse\nf = llmcourse.course.oracles.repeat_kv",
    "import importlib\nm = importlib.import_module('llmcourse.course.oracles')",
])
def test_learner_code_may_not_use_the_stand_ins(source):
    reason = tampering(source, {"llmcourse", "importlib"})
    assert reason is not None and "answers" in reason, reason


def test_learner_code_that_only_mentions_oracles_in_prose_is_fine():
    source = 'def f(x):\n    """Compared with the oracles of the course."""\n    return x\nf(1)\n'
    assert tampering(source, set()) is None
