"""Chapter 5: BERT, T5 and GPT-2 against HF transformers on the same weights, the real MiniLM,
masking, span corruption, training and sampling, parameter counts and checkpoints."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from transformers.models.bert import modeling_bert as hf_bert
from transformers.models.t5 import modeling_t5 as hf_t5

from llmcourse.course.checks import expect_equal, expect_tensor
from llmcourse.course.pretrained import load_minilm, minilm_path
from llmcourse.models import bert as B
from llmcourse.models import gpt2 as G
from llmcourse.models import t5 as T5
from llmcourse.models import weights as W

transformers.logging.set_verbosity_error()  # tiny configs make transformers warn about token ids it never uses

TOLERANCE = {"cpu": 1e-5, "cuda": 1e-4}
"""Absolute tolerance of fp32 parity: CUDA's kernels sum in another order than the CPU's."""


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """The models here are tiny: one thread runs them faster than several, which spend their time
    waiting for each other, most of all on a machine that is busy with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- helpers

MATRIX_STD = 0.1
"""BERT's and GPT-2's matrices start from N(0, 0.02): so small that each block barely changes the
residual stream, and a mistake inside a block moves the outputs by little more than the
tolerance. From N(0, 0.1) the blocks matter (T5 keeps its own, larger initialisation)."""


def randomise(model: torch.nn.Module, seed: int, matrix_std: float | None = None) -> torch.nn.Module:
    """Norm weights around 1 and biases around 0, not HF's initial ones and zeros: a norm or bias
    loaded into the wrong place then changes the outputs. With matrix_std, every matrix and
    embedding table is drawn again from N(0, matrix_std)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = any(part in name for part in ("LayerNorm", "layer_norm", ".ln_"))
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias") and p.dim() == 1:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif matrix_std is not None and p.dim() == 2:
                p.copy_(matrix_std * torch.randn(p.shape, generator=g))
    return model


def hf_bert_model(seed: int = 0, vocab_size: int = 60, max_position_embeddings: int = 32, **sizes):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings,
                                     attn_implementation="eager", pad_token_id=0, **sizes)
    return randomise(hf_bert.BertModel(config).eval(), seed, MATRIX_STD)


def hf_t5_model(seed: int = 0, vocab_size: int = 50, **sizes):
    torch.manual_seed(seed)
    sizes = {"decoder_start_token_id": 0, "pad_token_id": 0, **sizes}
    config = transformers.T5Config(vocab_size=vocab_size, attn_implementation="eager", **sizes)
    return randomise(hf_t5.T5ForConditionalGeneration(config).eval(), seed)


def hf_gpt2_model(seed: int = 0, vocab_size: int = 64, attn_implementation: str = "eager", **sizes):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                                     attn_implementation=attn_implementation, **sizes)
    return randomise(transformers.GPT2LMHeadModel(config).eval(), seed, MATRIX_STD)


def ours_bert(hf, device="cpu") -> B.BertModel:
    return B.load_hf_bert(B.BertModel(B.BertConfig.from_hf(hf.config), device=device).eval(), hf.state_dict())


def ours_t5(hf, device="cpu") -> T5.T5ForConditionalGeneration:
    model = T5.T5ForConditionalGeneration(T5.T5Config.from_hf(hf.config), device=device)
    return T5.load_hf_t5(model.eval(), hf.state_dict())


def ours_gpt2(hf, device="cpu", dtype=None) -> G.GPT2:
    model = G.GPT2(G.GPT2Config.from_hf(hf.config), device=device, dtype=dtype)
    return G.load_hf_gpt2(model.eval(), hf.state_dict())


def mapped(ours: torch.nn.Module, key_map: dict, tensor_of) -> dict[str, torch.Tensor]:
    """{checkpoint name: our tensor(s) as the checkpoint lays them out}, for every Param of key_map.

    tensor_of(parameter) picks what to compare (the parameter or its gradient). A Param cut in
    parts is put back together and transposed back, the inverse of load_mapped.
    """
    params = dict(ours.named_parameters())
    laid_out = {}
    for name, target in key_map.items():
        if isinstance(target, W.Tied):
            continue
        tensor = torch.cat([tensor_of(params[part]) for part in target.names], dim=0)
        laid_out[name] = tensor.t() if target.transpose else tensor
    return laid_out


def expect_mapped_grads(ours, hf, key_map: dict, what: str, atol: float = 1e-5) -> None:
    """Every gradient of ours equals HF's gradient of the checkpoint tensor it was loaded from."""
    hf_params = dict(hf.named_parameters())
    missing = [name for name, p in ours.named_parameters() if p.grad is None]
    assert not missing, f"{what}: no gradient reached {missing}"
    for name, grad in mapped(ours, key_map, lambda p: p.grad).items():
        expect_tensor(grad, hf_params[name].grad, f"{what}: the gradient of {name}", atol=atol, rtol=1e-4)


def padded(lengths: list[int], length: int, device="cpu") -> torch.Tensor:
    """An attention mask (B, length) of 1 for the first lengths[b] tokens of row b, 0 after them."""
    return (torch.arange(length, device=device)[None] < torch.tensor(lengths, device=device)[:, None]).long()


def ids_in(vocab: int, shape: tuple[int, ...], seed: int, low: int = 1, device="cpu") -> torch.Tensor:
    return torch.randint(low, vocab, shape, generator=torch.Generator().manual_seed(seed)).to(device)


# ---------------------------------------------------------------- BERT (exercise 1)

BERT_SIZES = [
    {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
    {"hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 6, "intermediate_size": 80,
     "layer_norm_eps": 1e-5, "type_vocab_size": 3},
    {"hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 40,
     "hidden_act": "gelu_new", "layer_norm_eps": 1e-3},
    {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 16, "intermediate_size": 32},
]


@pytest.mark.parity
@pytest.mark.parametrize("sizes", BERT_SIZES, ids=lambda s: f"{s['num_hidden_layers']}x{s['num_attention_heads']}h"
                                                             f"{s['hidden_size']}")
def test_bert_matches_transformers_bert_model(device, sizes):
    hf = hf_bert_model(seed=1, **sizes).to(device)
    model = ours_bert(hf, device)
    assert model.pooler is not None
    types = sizes.get("type_vocab_size", 2)
    ids = ids_in(60, (3, 32), seed=2, device=device)  # every position of the table
    attention_mask = padded([32, 9, 20], 32, device)
    token_types = ids_in(types, (3, 32), seed=3, low=0, device=device)
    with torch.no_grad():
        got = model(ids, attention_mask, token_types)
        want = hf(ids, attention_mask=attention_mask, token_type_ids=token_types)
        name = f"BertModel {sizes}"
        real = attention_mask.bool()
        expect_tensor(got[real], want.last_hidden_state[real], f"{name}: last hidden state at real tokens",
                      atol=TOLERANCE[device])
        expect_tensor(model.pooled(got), want.pooler_output, f"{name}: the pooled output", atol=TOLERANCE[device])
        alone = model(ids[1:2, :9], token_type_ids=token_types[1:2, :9])
        expect_tensor(alone[0], got[1, :9], f"{name}: a sentence alone vs padded in a batch", atol=TOLERANCE[device])
        without_mask = model(ids[:, :7])
        expect_tensor(without_mask, hf(ids[:, :7]).last_hidden_state, f"{name}: no attention_mask, no token types",
                      atol=TOLERANCE[device])
    with pytest.raises(ValueError):
        model(torch.ones(1, 33, dtype=torch.long, device=device))


@pytest.mark.parity
def test_bert_gradients_match_transformers():
    hf = hf_bert_model(seed=4, **BERT_SIZES[1])
    model = ours_bert(hf)
    ids, token_types = ids_in(60, (3, 11), seed=5), ids_in(3, (3, 11), seed=6, low=0)
    attention_mask = padded([11, 4, 9], 11)
    real = attention_mask.bool()
    got = model(ids, attention_mask, token_types)
    want = hf(ids, attention_mask=attention_mask, token_type_ids=token_types)
    # a weighted sum: a plain sum of LayerNorm outputs hardly depends on what comes before them
    g = torch.randn(want.last_hidden_state[real].shape, generator=torch.Generator().manual_seed(7))
    h = torch.randn(want.pooler_output.shape, generator=torch.Generator().manual_seed(8))
    ((got[real] * g).sum() + (model.pooled(got) * h).sum()).backward()
    ((want.last_hidden_state[real] * g).sum() + (want.pooler_output * h).sum()).backward()
    expect_mapped_grads(model, hf, B.bert_key_map(model.config), "BertModel")


@pytest.fixture(scope="module")
def minilm():
    """(tokenizer, transformers' BertModel, our BertModel) of the real all-MiniLM-L6-v2."""
    tokenizer, reference = load_minilm()
    folder = minilm_path()
    config = B.BertConfig.from_hf(json.loads((folder / "config.json").read_text()))
    ours = B.load_hf_bert(B.BertModel(config).eval(), load_file(str(folder / "model.safetensors")))
    return tokenizer, reference, ours


@pytest.mark.parity
def test_minilm_sentence_embeddings_match_transformers(minilm):
    tokenizer, reference, ours = minilm
    sentences = ["Where is the nearest train station?", "今天天气很好，我们去公园散步吧。", "🚀🌕✨",
                 "She said 'bonjour' 👋 and left.", "x",
                 "Attention lets every token look at every other token in the same sentence, and the weights "
                 "of that look are learned from data rather than written by hand."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch should be padded"
    with torch.no_grad():
        got = ours.sentence_embedding(batch["input_ids"], batch["attention_mask"])
        hidden = reference(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        want = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        expect_tensor(got, want, "MiniLM sentence embeddings (English, Chinese, emoji, one padded batch)")
        expect_tensor(got.norm(dim=-1), torch.ones(len(sentences)), "the length of each sentence embedding")
        similarity = got @ got.T
    assert similarity[0, 1] < 0.9, "different sentences should not embed to the same vector"


# ---------------------------------------------------------------- masked language modelling (exercise 2)

def hf_bert_mlm(seed: int, **sizes):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=40, max_position_embeddings=24, attn_implementation="eager", **sizes)
    model = randomise(hf_bert.BertForMaskedLM(config).eval(), seed, MATRIX_STD)
    with torch.no_grad():
        model.cls.predictions.bias.normal_(0.0, 0.5)
    return model


@pytest.mark.parity
@pytest.mark.parametrize("sizes", [
    {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32},
    {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 8, "intermediate_size": 48,
     "layer_norm_eps": 1e-6},
])
def test_bert_for_masked_lm_and_mlm_loss_match_transformers(sizes):
    hf = hf_bert_mlm(seed=21, **sizes)
    config = B.BertConfig.from_hf(hf.config)
    model = B.BertForMaskedLM(config).eval()
    W.load_mapped(model, hf.state_dict(), B.bert_mlm_key_map(config))
    ids = ids_in(40, (3, 12), seed=22)
    attention_mask = padded([12, 7, 10], 12)
    labels = ids_in(40, (3, 12), seed=23, low=0).masked_fill(torch.rand(3, 12, generator=torch.Generator()
                                                                        .manual_seed(24)) < 0.7, -100)
    labels[attention_mask == 0] = -100
    labels[0, 0] = 5
    logits = model(ids, attention_mask)
    want = hf(ids, attention_mask=attention_mask, labels=labels)
    real = attention_mask.bool()
    expect_tensor(logits[real], want.logits[real], f"BertForMaskedLM {sizes}: logits at real tokens")
    loss = B.mlm_loss(logits, labels)
    expect_tensor(loss, want.loss, f"mlm_loss vs BertForMaskedLM's loss with labels, {sizes}")
    loss.backward()
    want.loss.backward()
    expect_mapped_grads(model, hf, B.bert_mlm_key_map(config), "BertForMaskedLM trained with mlm_loss", atol=1e-5)
    every = torch.randn(2, 5, 9, generator=torch.Generator().manual_seed(25))
    all_labels = torch.randint(0, 9, (2, 5), generator=torch.Generator().manual_seed(26))
    expect_tensor(B.mlm_loss(every, all_labels), F.cross_entropy(every.reshape(-1, 9), all_labels.reshape(-1)),
                  "mlm_loss with every position labelled: the plain mean cross-entropy")
    with pytest.raises(ValueError):
        B.mlm_loss(torch.randn(2, 5, 9), torch.zeros(2, 6, dtype=torch.long))


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


@pytest.mark.parity
@pytest.mark.parametrize("probability, seed", [(0.15, 0), (0.5, 1), (0.05, 2)])
def test_mlm_mask_equals_data_collator_for_language_modeling(minilm_tokenizer, probability, seed):
    tokenizer = minilm_tokenizer
    texts = ["The quick brown fox jumps over the lazy dog.", "机器学习 🤖", "Masked language models read both ways.",
             "a b c d e f g h i j k l m n o p"]
    batch = tokenizer(texts, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    ids, special = batch["input_ids"].repeat(8, 1), batch["special_tokens_mask"].bool().repeat(8, 1)
    before = ids.clone()
    inputs, labels = B.mlm_mask(ids, special, tokenizer.mask_token_id, len(tokenizer), probability,
                                generator=torch.Generator().manual_seed(seed))
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)
    collator.generator = torch.Generator().manual_seed(seed)
    want_inputs, want_labels = collator.torch_mask_tokens(ids.clone(), special.clone())
    expect_tensor(ids, before, "input_ids after mlm_mask (unchanged)", atol=0, rtol=0)
    expect_tensor(labels, want_labels, f"labels vs DataCollatorForLanguageModeling, p={probability}", atol=0, rtol=0)
    expect_tensor(inputs, want_inputs, f"inputs vs DataCollatorForLanguageModeling, p={probability}", atol=0, rtol=0)


def test_mlm_mask_proportions_on_a_large_sample():
    mask_id, vocab = 103, 30522
    ids = torch.randint(1000, 30000, (512, 128), generator=torch.Generator().manual_seed(0))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True  # [CLS]
    lengths = torch.randint(20, 128, (512,), generator=torch.Generator().manual_seed(1))
    special |= torch.arange(128)[None] >= lengths[:, None]  # [SEP] and the padding after it
    inputs, labels = B.mlm_mask(ids, special, mask_id, vocab, generator=torch.Generator().manual_seed(2))
    assert inputs.shape == labels.shape == ids.shape and inputs.dtype == labels.dtype == ids.dtype
    chosen = labels != B.IGNORE_INDEX
    assert not chosen[special].any(), "a special or padding position was chosen"
    expect_tensor(labels[chosen], ids[chosen], "labels at the chosen positions (the original ids)", atol=0, rtol=0)
    expect_tensor(inputs[~chosen], ids[~chosen], "inputs at positions not chosen (unchanged)", atol=0, rtol=0)
    ordinary, n = int((~special).sum()), int(chosen.sum())

    def within(share: float, expected: float, count: int) -> bool:  # 5 standard deviations of a binomial share
        return abs(share - expected) < 5 * math.sqrt(expected * (1 - expected) / count)

    assert within(n / ordinary, 0.15, ordinary), f"expected about 15% chosen, got {n / ordinary:.2%}"
    masked = int((inputs[chosen] == mask_id).sum())
    kept = int((inputs[chosen] == ids[chosen]).sum())
    randomised = inputs[chosen & (inputs != mask_id) & (inputs != ids)]
    assert within(masked / n, 0.8, n), f"expected 80% of the chosen as [MASK], got {masked / n:.2%}"
    assert within(kept / n, 0.1, n), f"expected about 10% of the chosen unchanged, got {kept / n:.2%}"
    assert within(len(randomised) / n, 0.1, n), f"expected about 10% random, got {len(randomised) / n:.2%}"
    assert randomised.min() >= 0 and randomised.max() < vocab
    assert randomised.unique().numel() > 0.9 * len(randomised), "random replacements spread over the vocabulary"
    assert (randomised < 1000).any(), "random ids come from the whole vocabulary, not from the batch"
    nothing, none_labels = B.mlm_mask(ids, special, mask_id, vocab, probability=0.0)
    assert (none_labels == B.IGNORE_INDEX).all() and torch.equal(nothing, ids), "probability 0 chooses nothing"
    _, all_labels = B.mlm_mask(ids, special, mask_id, vocab, probability=1.0)
    assert torch.equal(all_labels != B.IGNORE_INDEX, ~special), "probability 1 chooses every ordinary token"
    with pytest.raises(ValueError):
        B.mlm_mask(ids, special[:, :-1], mask_id, vocab)


# ---------------------------------------------------------------- T5 (exercise 3)

@pytest.mark.parity
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (16, 64), (64, 500), (8, 20), (10, 33), (6, 7)])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bucket_matches_transformers(num_buckets, max_distance, bidirectional):
    offsets = torch.arange(-3000, 3001)  # key - query
    want = hf_t5.T5Attention._relative_position_bucket(offsets, bidirectional=bidirectional,
                                                       num_buckets=num_buckets, max_distance=max_distance)
    got = T5.relative_position_bucket(offsets, bidirectional, num_buckets, max_distance)
    expect_tensor(got, want, f"buckets of -3000 … 3000, {num_buckets} buckets, max_distance {max_distance}, "
                             f"bidirectional={bidirectional}", atol=0, rtol=0)
    grid = torch.arange(-5, 6).reshape(1, 11, 1) - torch.arange(4).reshape(1, 1, 4)  # any shape
    want = hf_t5.T5Attention._relative_position_bucket(grid, bidirectional=bidirectional,
                                                       num_buckets=num_buckets, max_distance=max_distance)
    expect_tensor(T5.relative_position_bucket(grid, bidirectional, num_buckets, max_distance), want,
                  "buckets of a (1, 11, 4) tensor", atol=0, rtol=0)


@pytest.mark.parity
@pytest.mark.parametrize("heads, num_buckets, max_distance", [(3, 32, 128), (2, 8, 20), (5, 16, 40)])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_bias_matches_compute_bias(heads, num_buckets, max_distance, bidirectional):
    torch.manual_seed(31)
    hf_config = transformers.T5Config(vocab_size=30, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=heads,
                                      relative_attention_num_buckets=num_buckets,
                                      relative_attention_max_distance=max_distance, is_decoder=not bidirectional)
    reference = hf_t5.T5Attention(hf_config, has_relative_attention_bias=True).eval()
    bias = T5.RelativePositionBias(T5.T5Config.from_hf(hf_config), bidirectional=bidirectional)
    bias.load_state_dict(reference.relative_attention_bias.state_dict(prefix="relative_attention_bias."))
    for queries, keys in ((7, 7), (1, 1), (50, 50), (3, 9), (9, 3)):
        expect_tensor(bias(queries, keys), reference.compute_bias(queries, keys),
                      f"RelativePositionBias(bidirectional={bidirectional})({queries}, {keys}) vs compute_bias",
                      atol=0, rtol=0)


T5_SIZES = [
    {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4},
    {"d_model": 24, "d_kv": 10, "d_ff": 40, "num_layers": 3, "num_decoder_layers": 1, "num_heads": 3,
     "relative_attention_num_buckets": 16, "relative_attention_max_distance": 20},
    {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_decoder_layers": 2, "num_heads": 6,
     "tie_word_embeddings": False, "decoder_start_token_id": 2, "pad_token_id": 1},
    {"d_model": 48, "d_kv": 6, "d_ff": 24, "num_layers": 2, "num_decoder_layers": 3, "num_heads": 2,
     "layer_norm_epsilon": 1e-3, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 10},
]


@pytest.mark.parity
@pytest.mark.parametrize("sizes", T5_SIZES, ids=lambda s: f"{s['num_layers']}+{s.get('num_decoder_layers', '=')}"
                                                          f"x{s['num_heads']}h{s['d_kv']}")
def test_t5_matches_transformers(device, sizes):
    hf = hf_t5_model(seed=33, **sizes).to(device)
    model = ours_t5(hf, device)
    source = ids_in(50, (3, 25), seed=34, device=device)
    source_mask = padded([25, 12, 20], 25, device)
    labels = ids_in(50, (3, 18), seed=35, device=device)
    labels[0, 11:] = -100  # shorter targets
    labels[2, 16:] = -100
    tol = TOLERANCE[device]
    with torch.no_grad():
        logits, loss = model(source, attention_mask=source_mask, labels=labels)
        want = hf(input_ids=source, attention_mask=source_mask, labels=labels)
        expect_tensor(logits, want.logits, f"T5 {sizes}: logits", atol=tol)
        expect_tensor(loss, want.loss, f"T5 {sizes}: loss", atol=tol)
        memory = model.encode(source, source_mask)
        hf_memory = hf.encoder(input_ids=source, attention_mask=source_mask).last_hidden_state
        real = source_mask.bool()
        expect_tensor(memory[real], hf_memory[real], f"T5 {sizes}: encode() at real tokens", atol=tol)
        decoder_ids = hf._shift_right(labels)
        decoder_mask = padded([18, 18, 17], 18, device)
        got = model.decode(decoder_ids, memory, source_mask, decoder_mask)
        want = hf(input_ids=source, attention_mask=source_mask, decoder_input_ids=decoder_ids,
                  decoder_attention_mask=decoder_mask).logits
        expect_tensor(got, want, f"T5 {sizes}: decode() with a decoder padding mask", atol=tol)
        logits, loss = model(source[:, :5], decoder_input_ids=decoder_ids[:, :4])
        want = hf(input_ids=source[:, :5], decoder_input_ids=decoder_ids[:, :4])
        expect_tensor(logits, want.logits, f"T5 {sizes}: no masks, decoder_input_ids given", atol=tol)
        assert loss is None, "without labels there is no loss"


@pytest.mark.parity
def test_t5_gradients_match_transformers():
    hf = hf_t5_model(seed=36, **T5_SIZES[1])
    model = ours_t5(hf)
    source, labels = ids_in(50, (3, 15), seed=37), ids_in(50, (3, 9), seed=38)
    source_mask = padded([15, 6, 11], 15)
    labels[1, 6:] = -100
    logits, loss = model(source, attention_mask=source_mask, labels=labels)
    want = hf(input_ids=source, attention_mask=source_mask, labels=labels)
    g = torch.randn(logits.shape, generator=torch.Generator().manual_seed(39))
    (loss + (logits * g).sum() / logits.numel()).backward()
    (want.loss + (want.logits * g).sum() / logits.numel()).backward()
    expect_mapped_grads(model, hf, T5.t5_key_map(model.config), "T5ForConditionalGeneration")


@pytest.mark.parity
@pytest.mark.parametrize("start, pad", [(0, 0), (2, 1)])
def test_shift_right_equals_transformers(start, pad):
    hf = hf_t5_model(seed=0, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2, decoder_start_token_id=start,
                     pad_token_id=pad)
    labels = ids_in(50, (4, 7), seed=40)
    labels[0, 5:] = -100
    labels[2, 1:] = -100
    labels[3, 0] = -100
    expect_tensor(T5.shift_right(labels, start, pad), hf._shift_right(labels),
                  f"shift_right(labels, start={start}, pad={pad}) vs transformers' _shift_right", atol=0, rtol=0)
    expect_tensor(labels[0, 5:], torch.tensor([-100, -100]), "labels after shift_right (unchanged)", atol=0, rtol=0)
    one = torch.tensor([[9]])
    expect_tensor(T5.shift_right(one, start, pad), torch.tensor([[start]]), "shift_right of one label", atol=0, rtol=0)


def test_span_corruption_known_answers():
    ids = [10, 11, 12, 13, 14, 15, 16, 17]
    cases = [  # noise flags, inputs, targets; sentinels 99, 98, ...
        ([0, 1, 1, 0, 1, 0, 0, 1], [10, 99, 13, 98, 15, 16, 97], [99, 11, 12, 98, 14, 97, 17, 96]),
        ([1, 1, 0, 0, 0, 0, 1, 1], [99, 12, 13, 14, 15, 98], [99, 10, 11, 98, 16, 17, 97]),
        ([1, 0, 1, 0, 1, 0, 1, 0], [99, 11, 98, 13, 97, 15, 96, 17], [99, 10, 98, 12, 97, 14, 96, 16, 95]),
        ([0, 0, 0, 1, 1, 1, 0, 0], [10, 11, 12, 99, 16, 17], [99, 13, 14, 15, 98]),
    ]
    for flags, want_inputs, want_targets in cases:
        inputs, targets = T5.span_corruption(ids, [bool(f) for f in flags], first_sentinel=99)
        expect_equal(inputs, want_inputs, f"span_corruption inputs with noise {flags}")
        expect_equal(targets, want_targets, f"span_corruption targets with noise {flags}")
    inputs, targets = T5.span_corruption([7], [True], first_sentinel=32099, eos_id=1)
    expect_equal((inputs, targets), ([32099, 1], [32099, 7, 32098, 1]), "one hidden token with eos_id=1")
    inputs, targets = T5.span_corruption([], [], first_sentinel=32099, eos_id=1)
    expect_equal((inputs, targets), ([1], [32099, 1]), "an empty sequence with eos_id=1")
    with pytest.raises(ValueError):
        T5.span_corruption(ids, [False] * 7, first_sentinel=99)


@settings(max_examples=80, deadline=None)
@given(ids=st.lists(st.integers(0, 999), max_size=30), data=st.data())
def test_span_corruption_can_be_undone(ids, data):
    """Putting each sentinel's hidden tokens back where the sentinel stands gives the sequence back."""
    noise = data.draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)))
    first = 2000  # sentinels count down from here; the ids are below 1000

    def is_sentinel(token: int) -> bool:
        return token >= 1000

    inputs, targets = T5.span_corruption(ids, noise, first_sentinel=first)
    spans = sum(1 for i, hidden in enumerate(noise) if hidden and (i == 0 or not noise[i - 1]))
    assert [t for t in inputs if is_sentinel(t)] == list(range(first, first - spans, -1)), "one sentinel per span"
    assert [t for t in targets if is_sentinel(t)] == list(range(first, first - spans - 1, -1))
    assert len(inputs) == len(ids) - sum(noise) + spans and len(targets) == sum(noise) + spans + 1
    hidden_by_sentinel, current = {}, None
    for token in targets:
        if is_sentinel(token):
            current = hidden_by_sentinel.setdefault(token, [])
        else:
            current.append(token)
    restored = [token for t in inputs for token in (hidden_by_sentinel[t] if is_sentinel(t) else [t])]
    assert restored == ids


# ---------------------------------------------------------------- GPT-2 (exercise 4)

GPT2_SIZES = [
    {"n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 4},
    {"n_positions": 20, "n_embd": 48, "n_layer": 3, "n_head": 6, "n_inner": 72, "layer_norm_epsilon": 1e-3},
    {"n_positions": 16, "n_embd": 24, "n_layer": 1, "n_head": 8, "activation_function": "gelu"},
    {"n_positions": 24, "n_embd": 16, "n_layer": 2, "n_head": 1, "activation_function": "gelu_pytorch_tanh"},
]


@pytest.mark.parity
@pytest.mark.parametrize("sizes", GPT2_SIZES, ids=lambda s: f"{s['n_layer']}x{s['n_head']}h{s['n_embd']}")
def test_gpt2_matches_transformers(device, sizes):
    hf = hf_gpt2_model(seed=41, **sizes).to(device)
    model = ours_gpt2(hf, device)
    length = sizes["n_positions"]
    ids = ids_in(64, (3, length), seed=42, low=0, device=device)
    attention_mask = padded([length, length - 6, 5], length, device)
    tol = TOLERANCE[device]
    with torch.no_grad():
        expect_tensor(model(ids), hf(ids).logits, f"GPT2 {sizes}: logits", atol=tol)
        got = model(ids, attention_mask)
        want = hf(ids, attention_mask=attention_mask).logits
        real = attention_mask.bool()
        expect_tensor(got[real], want[real], f"GPT2 {sizes}: logits at real tokens, right padding", atol=tol)
        expect_tensor(got[0], model(ids[:1])[0], f"GPT2 {sizes}: an unpadded row is unchanged by the mask", atol=tol)
        changed = ids.clone()
        changed[:, -1] = (changed[:, -1] + 1) % 64
        expect_tensor(model(changed)[:, :-1], model(ids)[:, :-1], f"GPT2 {sizes}: causal, the future is not seen",
                      atol=tol)
    with pytest.raises(ValueError):
        model(torch.zeros(1, length + 1, dtype=torch.long, device=device))


@pytest.mark.parity
def test_gpt2_gradients_match_transformers():
    hf = hf_gpt2_model(seed=43, **GPT2_SIZES[1])
    model = ours_gpt2(hf)
    ids = ids_in(64, (3, 20), seed=44, low=0)
    attention_mask = padded([20, 14, 5], 20)
    labels = ids.masked_fill(attention_mask == 0, -100)
    loss = G.causal_lm_loss(model(ids, attention_mask), labels)
    want = hf(ids, attention_mask=attention_mask, labels=labels).loss
    expect_tensor(loss, want, "causal_lm_loss of our logits vs GPT2LMHeadModel's loss")
    loss.backward()
    want.backward()
    expect_mapped_grads(model, hf, G.gpt2_key_map(model.config), "GPT2")


@pytest.mark.parity
def test_causal_lm_loss_matches_transformers():
    hf = hf_gpt2_model(seed=45, vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    ids = ids_in(40, (3, 11), seed=46, low=0)
    for what, labels in [("labels = ids", ids.clone()),
                         ("a prompt not trained on", ids.clone().index_fill_(1, torch.arange(6), -100)),
                         ("-100 here and there", ids.masked_fill(torch.rand(3, 11, generator=torch.Generator()
                                                                            .manual_seed(47)) < 0.4, -100)),
                         ("only the first label counts (it predicts nothing)",
                          torch.full_like(ids, -100).index_fill_(1, torch.tensor([0, 1]), 3))]:
        out = hf(ids, labels=labels)
        logits = out.logits.detach().requires_grad_()
        loss = G.causal_lm_loss(logits, labels)
        expect_tensor(loss, out.loss, f"causal_lm_loss vs GPT2LMHeadModel's loss, {what}")
        loss.backward()
        counted = torch.zeros_like(labels, dtype=torch.bool)
        counted[:, :-1] = labels[:, 1:] != -100
        assert (logits.grad[~counted] == 0).all(), f"{what}: logits that predict an ignored label get no gradient"
    with pytest.raises(ValueError):
        G.causal_lm_loss(torch.randn(2, 4, 7), torch.zeros(2, 5, dtype=torch.long))


def test_gpt2_config_refuses_what_the_model_does_not_compute():
    """A checkpoint configured to compute something else is refused, not loaded into the wrong model."""
    for option, value in [("scale_attn_weights", False), ("scale_attn_by_inverse_layer_idx", True)]:
        hf = transformers.GPT2Config(n_embd=16, n_head=2, n_layer=1, vocab_size=30, n_positions=8, **{option: value})
        with pytest.raises(ValueError, match=option):
            G.GPT2Config.from_hf(hf)
    with pytest.raises(ValueError, match="relu"):
        G.GPT2Config.from_hf(transformers.GPT2Config(activation_function="relu"))


def test_gpt2_output_layer_is_the_token_embedding():
    torch.manual_seed(48)
    config = G.GPT2Config(d_model=16, n_heads=2, n_layers=1, vocab_size=30, max_seq_len=8, dropout=0.0)
    model = G.GPT2(config).eval()
    matrices = [name for name, p in model.named_parameters() if p.shape == (30, 16)]
    assert matrices == ["wte.weight"], f"the only (vocab, d_model) parameter should be wte.weight, got {matrices}"
    ids = torch.tensor([[1, 2, 3]])
    before = model(ids).detach()
    with torch.no_grad():
        model.wte.weight[29] += torch.randn(16)  # a token the input does not contain: only the output reads its row
    after = model(ids).detach()
    assert (after[..., 29] - before[..., 29]).abs().min() > 1e-3, "the logits of token 29 follow its embedding"
    expect_tensor(after[..., :29], before[..., :29], "the other logits")
    hf = hf_gpt2_model(seed=48, vocab_size=30, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    G.load_hf_gpt2(model, hf.state_dict())
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    expect_tensor(model(ids), hf(ids).logits, "logits after loading a tied checkpoint")


# ---------------------------------------------------------------- training and sampling (exercise 5)

@pytest.mark.parity
def test_train_step_equals_a_transformers_training_step():
    sizes = {"vocab_size": 40, "n_positions": 12, "n_embd": 16, "n_layer": 2, "n_head": 2,
             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    hf = hf_gpt2_model(seed=51, **sizes)
    model = ours_gpt2(hf)
    ids = ids_in(40, (4, 12), seed=52, low=0)
    attention_mask = padded([12, 8, 12, 3], 12)
    ours_opt = torch.optim.SGD(model.parameters(), lr=0.5)
    hf_opt = torch.optim.SGD(hf.parameters(), lr=0.5)
    for step, (mask, clip) in enumerate([(None, 1.0), (attention_mask, 0.05), (attention_mask, None)]):
        loss = G.train_step(model, ours_opt, ids, mask, max_grad_norm=clip)
        hf.train()
        hf_opt.zero_grad()
        labels = ids if mask is None else ids.masked_fill(mask == 0, -100)
        want = hf(ids, attention_mask=mask, labels=labels).loss
        want.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(hf.parameters(), clip)
        hf_opt.step()
        assert type(loss) is float, f"train_step should return a Python float, got {type(loss).__name__}"
        assert abs(loss - want.item()) < 1e-5, f"step {step}: the loss {loss} should be {want.item()}"
        assert model.training, "train_step puts the model in training mode"
        for name, tensor in mapped(model, G.gpt2_key_map(model.config), lambda p: p.detach()).items():
            expect_tensor(tensor, hf.state_dict()[name], f"{name} after step {step} (mask: {mask is not None}, "
                                                         f"clip: {clip})", atol=1e-5)


def test_train_step_drives_the_loss_down():
    torch.manual_seed(53)
    model = G.GPT2(G.GPT2Config(d_model=32, n_heads=4, n_layers=2, vocab_size=50, max_seq_len=16, dropout=0.0))
    ids = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(54))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = [G.train_step(model, optimizer, ids) for _ in range(250)]
    assert abs(losses[0] - math.log(50)) < 0.5, f"a fresh model guesses about uniformly: loss {losses[0]:.2f}"
    assert losses[-1] < 0.1 * losses[0], f"250 steps on one batch: the loss went {losses[0]:.3f} -> {losses[-1]:.3f}"
    model.eval()
    with torch.no_grad():
        predicted = model(ids)[:, :-1].argmax(-1)
    assert (predicted == ids[:, 1:]).float().mean() > 0.9, "the model learned the batch by heart"


@pytest.fixture(scope="module")
def small_gpt2():
    """(transformers' GPT2LMHeadModel, ours on the same weights): 2 blocks, 48 tokens, 24 positions."""
    hf = hf_gpt2_model(seed=55, vocab_size=48, n_positions=24, n_embd=32, n_layer=2, n_head=4)
    return hf, ours_gpt2(hf)


@pytest.mark.parity
def test_sample_draws_as_transformers_generate(small_gpt2):
    hf, model = small_gpt2
    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    common = {"max_new_tokens": 12, "eos_token_id": None, "pad_token_id": 0, "top_k": 0, "top_p": 1.0}
    torch.manual_seed(56)
    want = hf.generate(prompt, do_sample=True, temperature=0.7, **common)
    torch.manual_seed(56)
    got = G.sample(model, prompt, 12, temperature=0.7)
    expect_tensor(got, want, "sample(temperature=0.7) vs generate(do_sample=True) under the same seed", atol=0, rtol=0)
    greedy = hf.generate(prompt, do_sample=False, **common)
    cold = G.sample(model, prompt, 12, temperature=1e-4, generator=torch.Generator().manual_seed(57))
    expect_tensor(cold, greedy, "sample at temperature 1e-4 vs greedy generate", atol=0, rtol=0)


def test_sample_is_reproducible_and_keeps_to_its_contract(small_gpt2):
    _, model = small_gpt2
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    first = G.sample(model, prompt, 30, temperature=1.3, generator=torch.Generator().manual_seed(58))
    again = G.sample(model, prompt, 30, temperature=1.3, generator=torch.Generator().manual_seed(58))
    other = G.sample(model, prompt, 30, temperature=1.3, generator=torch.Generator().manual_seed(59))
    assert first.shape == (3, 33) and first.dtype == prompt.dtype
    expect_tensor(first[:, :3], prompt, "the prompt at the start of the sample", atol=0, rtol=0)
    expect_tensor(again, first, "a sample with the same generator seed", atol=0, rtol=0)
    assert not torch.equal(first, other), "another seed should draw other tokens"
    assert first.min() >= 0 and first.max() < 48
    expect_tensor(G.sample(model, prompt, 0), prompt, "sample(model, prompt, 0)", atol=0, rtol=0)
    model.train()
    G.sample(model, prompt, 2)
    assert model.training, "sample puts the model back in training mode"
    model.eval()
    G.sample(model, prompt, 2)
    assert not model.training, "sample leaves a model in eval mode in eval mode"
    with pytest.raises(ValueError):
        G.sample(model, prompt, 2, temperature=0.0)
    # past the positions: the model reads only the last max_seq_len (24) tokens
    long_prompt = ids_in(48, (1, 30), seed=60, low=0)
    got = G.sample(model, long_prompt, 3, generator=torch.Generator().manual_seed(61))
    cut = G.sample(model, long_prompt[:, -24:], 3, generator=torch.Generator().manual_seed(61))
    expect_tensor(got[:, -3:], cut[:, -3:], "tokens after a prompt longer than the positions", atol=0, rtol=0)


def test_sample_follows_the_softmax_at_its_temperature(small_gpt2):
    _, model = small_gpt2
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        logits = model(prompt)[0, -1]
    rows = 4000
    for temperature in (0.5, 2.0):
        drawn = G.sample(model, prompt.expand(rows, -1), 1, temperature=temperature,
                         generator=torch.Generator().manual_seed(62))[:, -1]
        frequency = torch.bincount(drawn, minlength=48).double() / rows
        p = torch.softmax(logits.double() / temperature, dim=-1)
        spread = 5 * torch.sqrt(p * (1 - p) / rows) + 2e-3
        worst = int(((frequency - p).abs() - spread).argmax())
        assert ((frequency - p).abs() <= spread).all(), (
            f"temperature {temperature}: token {worst} drawn {frequency[worst]:.3f} of the time, "
            f"softmax(logits / T) gives it {p[worst]:.3f}")


# ---------------------------------------------------------------- parameter counts (exercise 6)

@pytest.mark.parity
@pytest.mark.parametrize("sizes", BERT_SIZES[:3] + [{"hidden_size": 24, "num_hidden_layers": 1,
                                                     "num_attention_heads": 2, "intermediate_size": 24,
                                                     "type_vocab_size": 5, "max_position_embeddings": 17}])
def test_bert_parameter_count_matches_transformers(sizes):
    sizes = {"vocab_size": 77, **sizes}
    for pooler in (True, False):
        hf = hf_bert.BertModel(transformers.BertConfig(**sizes), add_pooling_layer=pooler)
        expect_equal(B.bert_parameter_count(B.BertConfig.from_hf(hf.config), pooler=pooler),
                     sum(p.numel() for p in hf.parameters()), f"bert_parameter_count, {sizes}, pooler={pooler}")


@pytest.mark.parity
@pytest.mark.parametrize("sizes", T5_SIZES)
def test_t5_parameter_count_matches_transformers(sizes):
    hf = hf_t5.T5ForConditionalGeneration(transformers.T5Config(vocab_size=55, **sizes))
    expect_equal(T5.t5_parameter_count(T5.T5Config.from_hf(hf.config)), sum(p.numel() for p in hf.parameters()),
                 f"t5_parameter_count, {sizes}")


@pytest.mark.parity
@pytest.mark.parametrize("sizes", GPT2_SIZES)
def test_gpt2_parameter_count_matches_transformers(sizes):
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=90, **sizes))
    expect_equal(G.gpt2_parameter_count(G.GPT2Config.from_hf(hf.config)), sum(p.numel() for p in hf.parameters()),
                 f"gpt2_parameter_count, {sizes}")


def test_parameter_counts_of_the_published_models():
    """BERT-base, T5-small and GPT-2 small from their configs alone (nothing that big is built)."""
    bert = B.BertConfig.from_hf(transformers.BertConfig())
    expect_equal(B.bert_parameter_count(bert), 109_482_240, "BERT-base with its pooler")
    expect_equal(B.bert_parameter_count(bert, pooler=False), 109_482_240 - 768 * 768 - 768, "BERT-base, no pooler")
    expect_equal(T5.t5_parameter_count(T5.T5Config.from_hf(transformers.T5Config())), 60_506_624, "T5-small")
    expect_equal(G.gpt2_parameter_count(G.GPT2Config.from_hf(transformers.GPT2Config())), 124_439_808,
                 "GPT-2 small")
    expect_equal(B.bert_parameter_count(B.BertConfig()), 109_482_240, "BertConfig()'s defaults are BERT-base's")
    expect_equal(T5.t5_parameter_count(T5.T5Config()), 60_506_624, "T5Config()'s defaults are T5-small's")
    expect_equal(G.gpt2_parameter_count(G.GPT2Config()), 124_439_808, "GPT2Config()'s defaults are GPT-2 small's")


def test_parameter_counts_equal_the_models_with_narrow_heads():
    """head_dim * n_heads != d_model, which transformers' BERT and GPT-2 cannot build: count our models."""
    small = {"d_model": 32, "n_heads": 4, "head_dim": 6, "d_ff": 20, "n_layers": 2, "vocab_size": 10, "max_seq_len": 8}
    bert = B.BertConfig(**small, type_vocab_size=3)
    for pooler in (True, False):
        model = B.BertModel(bert, add_pooler=pooler)
        expect_equal(B.bert_parameter_count(bert, pooler=pooler), sum(p.numel() for p in model.parameters()),
                     f"bert_parameter_count, heads of 6, pooler={pooler}")
    gpt2 = G.GPT2Config(**small)
    expect_equal(G.gpt2_parameter_count(gpt2), sum(p.numel() for p in G.GPT2(gpt2).parameters()),
                 "gpt2_parameter_count, heads of 6")
    t5 = T5.T5Config(**{**small, "n_decoder_layers": 3, "num_buckets": 8, "max_distance": 16})
    expect_equal(T5.t5_parameter_count(t5), sum(p.numel() for p in T5.T5ForConditionalGeneration(t5).parameters()),
                 "t5_parameter_count, heads of 6, 2 + 3 layers")


# ---------------------------------------------------------------- loading and saving (given)

def test_loading_names_the_tensor_at_fault():
    hf = hf_gpt2_model(seed=61, n_positions=8, n_embd=16, n_layer=2, n_head=2)
    model = G.GPT2(G.GPT2Config.from_hf(hf.config))
    before = {name: p.detach().clone() for name, p in model.state_dict().items()}
    state = hf.state_dict()

    def refused(checkpoint, key: str, loader=G.load_hf_gpt2, target=model):
        with pytest.raises(W.WeightError) as error:
            loader(target, checkpoint)
        assert key in str(error.value), f"the error should name {key!r}: {error.value}"

    refused({k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.bias"}, "transformer.h.1.mlp.c_fc.bias")
    refused({**state, "transformer.h.2.ln_1.weight": torch.ones(16)}, "transformer.h.2.ln_1.weight")
    refused({**state, "transformer.wpe.weight": torch.zeros(9, 16)}, "transformer.wpe.weight")
    refused({**state, "transformer.h.0.attn.c_attn.weight": torch.zeros(48, 16)}, "transformer.h.0.attn.c_attn.weight")
    refused({**state, "lm_head.weight": state["lm_head.weight"] + 1}, "lm_head.weight")
    for name, tensor in model.state_dict().items():
        expect_tensor(tensor, before[name], f"{name} after refused loads (nothing is copied)", atol=0, rtol=0)

    bert = hf_bert_model(seed=62, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    state = bert.state_dict()
    ours = B.BertModel(B.BertConfig.from_hf(bert.config))
    key = "encoder.layer.0.attention.self.key.weight"
    refused({**state, key: torch.zeros(16, 8)}, key, B.load_hf_bert, ours)
    refused({k: v for k, v in state.items() if not k.startswith("pooler.")}, "pooler.dense", B.load_hf_bert, ours)
    t5 = hf_t5_model(seed=63, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2)
    state = t5.state_dict()
    ours = T5.T5ForConditionalGeneration(T5.T5Config.from_hf(t5.config))
    refused({**state, "decoder.embed_tokens.weight": torch.zeros_like(state["shared.weight"])},
            "decoder.embed_tokens.weight", T5.load_hf_t5, ours)
    key = "decoder.block.0.layer.1.EncDecAttention.v.weight"
    refused({k: v for k, v in state.items() if k != key}, key, T5.load_hf_t5, ours)
    # a key map that leaves one of our parameters without a tensor
    key_map = G.gpt2_key_map(model.config)
    del key_map["transformer.ln_f.bias"]
    with pytest.raises(W.WeightError, match="ln_f.bias"):
        W.load_mapped(model, hf.state_dict(), key_map, ignore=("transformer.ln_f.bias",))


def test_checkpoint_round_trip_restores_outputs(tmp_path):
    torch.manual_seed(64)
    gpt2 = G.GPT2(G.GPT2Config(d_model=16, n_heads=2, n_layers=2, vocab_size=30, max_seq_len=10, dropout=0.0)).eval()
    t5 = T5.T5ForConditionalGeneration(T5.T5Config(d_model=16, n_heads=2, head_dim=4, d_ff=8, n_layers=1,
                                                   n_decoder_layers=2, vocab_size=30, num_buckets=8,
                                                   max_distance=16, dropout=0.0)).eval()
    ids = torch.randint(0, 30, (2, 7))
    for name, model, run in [("gpt2", gpt2, lambda m: m(ids)), ("t5", t5, lambda m: m(ids, ids[:, :4])[0])]:
        path = tmp_path / f"{name}.safetensors"
        W.save_checkpoint(model, path, metadata={"model": name})
        fresh = type(model)(model.config).eval()
        assert not torch.equal(run(fresh), run(model)), "a fresh model starts from other weights"
        W.load_checkpoint(fresh, path)
        expect_tensor(run(fresh), run(model), f"{name}'s outputs after a save_checkpoint/load_checkpoint round trip",
                      atol=0, rtol=0)
        assert path.read_bytes()[8:9] == b"{", "a safetensors file: a length, then a JSON header"
    path = tmp_path / "gpt2.safetensors"
    deeper = G.GPT2(G.GPT2Config(d_model=16, n_heads=2, n_layers=3, vocab_size=30, max_seq_len=10))
    with pytest.raises(W.WeightError, match=r"h\.2\."):
        W.load_checkpoint(deeper, path)
    with pytest.raises(W.WeightError, match="gpt2.safetensors"):
        W.load_checkpoint(B.BertModel(B.BertConfig(d_model=16, n_heads=2, d_ff=8, n_layers=1, vocab_size=30)), path)
    config = gpt2.config
    larger = G.GPT2(G.GPT2Config(d_model=config.d_model, n_heads=config.n_heads, n_layers=config.n_layers,
                                 vocab_size=config.vocab_size + 1, max_seq_len=config.max_seq_len))
    before = {name: p.clone() for name, p in larger.state_dict().items()}
    with pytest.raises(W.WeightError, match=r"wte\.weight.*shape"):
        W.load_checkpoint(larger, path)
    changed = [name for name, p in larger.state_dict().items() if not torch.equal(p, before[name])]
    assert not changed, f"a checkpoint that does not fit changed the model: {changed[:3]}"
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(W.WeightError, match="not a safetensors checkpoint"):
        W.load_checkpoint(gpt2, garbage)
    with pytest.raises(FileNotFoundError):
        W.load_checkpoint(gpt2, tmp_path / "missing.safetensors")


# ---------------------------------------------------------------- devices and dtypes

@pytest.mark.parity
def test_gpt2_takes_the_dtype_it_is_given():
    hf = hf_gpt2_model(seed=65, **GPT2_SIZES[0])
    ids = ids_in(64, (2, 32), seed=66, low=0)
    with torch.no_grad():
        want = hf(ids).logits
        model = ours_gpt2(hf, dtype=torch.bfloat16)
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        logits = model(ids)
        assert logits.dtype == torch.bfloat16, f"a bfloat16 GPT2 gives bfloat16 logits, got {logits.dtype}"
        expect_tensor(logits.float(), want, "bfloat16 GPT2 vs transformers' float32", atol=0.15, rtol=0.05)
        expect_tensor(ours_gpt2(hf, dtype=torch.float64)(ids), hf.double()(ids).logits,
                      "float64 GPT2 vs transformers in float64", atol=1e-10, rtol=1e-10)


@pytest.mark.parity
def test_bert_takes_the_dtype_it_is_given():
    hf = hf_bert_model(seed=67, **BERT_SIZES[0])
    mask, ids = padded([16, 9], 16), ids_in(60, (2, 16), seed=68)
    real = mask.bool()
    with torch.no_grad():
        want = hf(ids, attention_mask=mask).last_hidden_state
        config = B.BertConfig.from_hf(hf.config)
        half = B.load_hf_bert(B.BertModel(config, dtype=torch.bfloat16).eval(), hf.state_dict())
        got = half(ids, mask)
        assert got.dtype == torch.bfloat16, f"a bfloat16 BertModel gives bfloat16 states, got {got.dtype}"
        expect_tensor(got[real].float(), want[real], "bfloat16 BertModel vs transformers' float32", atol=0.1,
                      rtol=0.05)
        wide = B.load_hf_bert(B.BertModel(config, dtype=torch.float64).eval(), hf.state_dict())
        expect_tensor(wide(ids, mask)[real], hf.double()(ids, attention_mask=mask).last_hidden_state[real],
                      "float64 BertModel vs transformers in float64", atol=1e-10, rtol=1e-10)


@pytest.mark.parity
def test_t5_takes_the_dtype_it_is_given():
    hf = hf_t5_model(seed=69, **T5_SIZES[0])
    source, target = ids_in(50, (2, 9), seed=70), ids_in(50, (2, 5), seed=71)
    with torch.no_grad():
        want = hf(input_ids=source, decoder_input_ids=target).logits
        config = T5.T5Config.from_hf(hf.config)
        half = T5.load_hf_t5(T5.T5ForConditionalGeneration(config, dtype=torch.bfloat16).eval(), hf.state_dict())
        logits, _ = half(source, target)
        assert logits.dtype == torch.bfloat16, f"a bfloat16 T5 gives bfloat16 logits, got {logits.dtype}"
        expect_tensor(logits.float(), want, "bfloat16 T5 vs transformers' float32", atol=0.15, rtol=0.05)
        wide = T5.load_hf_t5(T5.T5ForConditionalGeneration(config, dtype=torch.float64).eval(), hf.state_dict())
        # transformers' T5LayerNorm takes the mean of squares in float32 even in a float64 model
        expect_tensor(wide(source, target)[0], hf.double()(input_ids=source, decoder_input_ids=target).logits,
                      "float64 T5 vs transformers in float64", atol=1e-6, rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.parity
def test_variants_on_cuda_match_transformers():
    with torch.no_grad():
        hf = hf_gpt2_model(seed=72, **GPT2_SIZES[1]).to("cuda")
        ids = ids_in(64, (3, 20), seed=73, low=0, device="cuda")
        expect_tensor(ours_gpt2(hf, "cuda")(ids), hf(ids).logits, "GPT2 on CUDA, float32", atol=1e-4)
        hf16 = hf.to(torch.bfloat16)
        got = ours_gpt2(hf16, "cuda", dtype=torch.bfloat16)(ids)
        assert got.dtype == torch.bfloat16
        expect_tensor(got, hf16(ids).logits, "GPT2 on CUDA, bfloat16", atol=0.1, rtol=0.05)
        bert = hf_bert_model(seed=74, **BERT_SIZES[1]).to("cuda")
        mask = padded([11, 4, 9], 11, "cuda")
        bids = ids_in(60, (3, 11), seed=75, device="cuda")
        real = mask.bool()
        want = bert(bids, attention_mask=mask).last_hidden_state
        expect_tensor(ours_bert(bert, "cuda")(bids, mask)[real], want[real], "BertModel on CUDA, float32", atol=1e-4)
        t5 = hf_t5_model(seed=76, **T5_SIZES[1]).to("cuda")
        source, labels = ids_in(50, (2, 12), seed=77, device="cuda"), ids_in(50, (2, 6), seed=78, device="cuda")
        source_mask = padded([12, 7], 12, "cuda")
        logits, loss = ours_t5(t5, "cuda")(source, attention_mask=source_mask, labels=labels)
        want = t5(input_ids=source, attention_mask=source_mask, labels=labels)
        expect_tensor(logits, want.logits, "T5 on CUDA, float32", atol=1e-4)
        expect_tensor(loss, want.loss, "T5's loss on CUDA", atol=1e-4)
        generator = torch.Generator().manual_seed(79)
        drawn = G.sample(ours_gpt2(hf.float(), "cuda"), ids[:, :4], 5, generator=generator)
        assert drawn.device.type == "cuda" and drawn.shape == (3, 9)
