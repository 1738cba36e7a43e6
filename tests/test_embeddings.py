"""Chapter 2: the embeddings module, against torch, known answers, properties and real MiniLM."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

from llmcourse import embeddings as E
from llmcourse.course.checks import expect_tensor


def test_embedding_is_one_hot_times_weight_and_matches_torch(device):
    torch.manual_seed(0)
    reference = torch.nn.Embedding(100, 16, device=device)
    ours = E.Embedding(100, 16, device=device)
    with torch.no_grad():
        ours.weight.copy_(reference.weight)
    ids = torch.randint(0, 100, (4, 9), device=device)
    out = ours(ids)
    expect_tensor(out, reference(ids), "Embedding(ids)", atol=0, rtol=0)
    expect_tensor(out, F.one_hot(ids, 100).float() @ ours.weight.detach(), "one_hot(ids) @ weight", atol=1e-6)
    grad = torch.randn(4, 9, 16, device=device)
    out.backward(grad)
    reference(ids).backward(grad)
    expect_tensor(ours.weight.grad, reference.weight.grad, "the gradient of the table")
    untouched = torch.ones(100, dtype=torch.bool, device=device)
    untouched[ids.flatten()] = False
    assert bool((ours.weight.grad[untouched] == 0).all()), "rows that were not looked up must get no gradient"


def test_embedding_dtype_device_and_bad_ids():
    table = E.Embedding(7, 3, dtype=torch.bfloat16)
    assert table.weight.dtype == torch.bfloat16 and table(torch.tensor([[1, 2]])).shape == (1, 2, 3)
    assert isinstance(table.weight, torch.nn.Parameter)
    with pytest.raises(TypeError):
        table(torch.tensor([0.0]))
    with pytest.raises(TypeError):  # indexing would read 7 booleans as a mask over the 7 rows
        table(torch.ones(7, dtype=torch.bool))


def _names_the_number(message: str, number: int) -> bool:
    """Whether `number` appears in `message` as a whole number (so -1 is not found in -100)."""
    return re.search(rf"(?<![\d-]){re.escape(str(number))}(?!\d)", message) is not None


@pytest.mark.parametrize("bad", [-1, -100, -300, 300, 1000])
def test_embedding_rejects_ids_outside_the_table(device, bad):
    """Like torch.nn.Embedding: a negative id (-100 is the usual ignore index) or an id >= rows raises.

    Plain indexing would read -1 as the last row and -100 as row 200 of this 300-row table.
    """
    table = E.Embedding(300, 3, device=device)
    ids = torch.tensor([[0, 299, 2], [3, bad, 1]], device=device)
    with pytest.raises(IndexError) as caught:
        table(ids)
    message = str(caught.value)
    assert _names_the_number(message, bad), f"the error should name the bad id {bad}: {message!r}"
    assert _names_the_number(message, 299) or _names_the_number(message, 300), \
        f"the error should give the valid range, 0 to 299: {message!r}"
    expect_tensor(table(torch.tensor([0, 299], device=device)), table.weight[[0, 299]], "the first and last rows",
                  atol=0, rtol=0)
    assert table(torch.zeros(0, 4, dtype=torch.long, device=device)).shape == (0, 4, 3), "no ids, no rows"


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 6), d=st.integers(1, 9), batch=st.integers(0, 2),
       seed=st.integers(0, 10**6))
def test_cosine_matrix_matches_torch(n, m, d, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    lead = (3,) * batch
    a = torch.randn(*lead, n, d, generator=generator, dtype=torch.float64)
    b = torch.randn(*lead, m, d, generator=generator, dtype=torch.float64)
    got = E.cosine_similarity_matrix(a, b)
    want = F.cosine_similarity(a.unsqueeze(-2), b.unsqueeze(-3), dim=-1)
    expect_tensor(got, want, "cosine_similarity_matrix", atol=1e-12, rtol=1e-12)
    assert bool((got.abs() <= 1 + 1e-12).all()), "cosines lie in [-1, 1]"
    expect_tensor(E.cosine_similarity_matrix(a), E.cosine_similarity_matrix(a).transpose(-1, -2), "symmetry",
                  atol=1e-12, rtol=1e-12)


def test_cosine_zero_vectors_and_scale():
    z = torch.zeros(2, 4)
    x = torch.randn(3, 4)
    expect_tensor(E.cosine_similarity_matrix(z, x), torch.zeros(2, 3), "a zero vector has similarity 0")
    expect_tensor(E.cosine_similarity_matrix(x, 1e-3 * x).diagonal(), torch.ones(3), "scale invariance")
    with pytest.raises(ValueError):
        E.cosine_similarity_matrix(torch.randn(2, 3), torch.randn(2, 5))


def test_top_k_neighbours_against_brute_force(device):
    torch.manual_seed(1)
    keys = torch.randn(200, 24, device=device)
    keys[7] = keys[3]  # an exact tie
    queries = torch.cat([torch.randn(5, 24, device=device), keys[3:4]])
    scores, indices = E.top_k_neighbours(queries, keys, 10)
    sims = F.cosine_similarity(queries[:, None].cpu().double(), keys[None].cpu().double(), dim=-1)
    for row in range(queries.shape[0]):
        order = sorted(range(200), key=lambda j: (-round(sims[row, j].item(), 6), j))[:10]
        assert indices[row].tolist() == order
    assert indices.dtype == torch.int64 and indices[-1, :2].tolist() == [3, 7]
    expect_tensor(scores.cpu().double(), torch.gather(sims, 1, indices.cpu()), "neighbour scores", atol=1e-5)
    single_scores, single = E.top_k_neighbours(queries[0], keys, 3)
    assert single.shape == (3,) and single.tolist() == indices[0, :3].tolist()
    with pytest.raises(ValueError):
        E.top_k_neighbours(queries, keys, 201)


def test_mean_pool_ignores_padding(device):
    torch.manual_seed(2)
    h = torch.randn(3, 6, 8, device=device)
    lengths = [6, 2, 0]
    mask = torch.tensor([[1] * n + [0] * (6 - n) for n in lengths], device=device)
    want = torch.stack([h[i, :n].mean(0) if n else torch.zeros(8, device=device) for i, n in enumerate(lengths)])
    expect_tensor(E.mean_pool(h, mask), want, "mean_pool")
    poisoned = h.masked_fill(~mask.bool()[..., None], 1e30)
    expect_tensor(E.mean_pool(poisoned, mask.bool()), want, "mean_pool (huge padding)")
    with pytest.raises(ValueError):
        E.mean_pool(h, mask[:2])


def _long_text() -> str:
    """Some 600 WordPiece tokens of varied English, well past MiniLM's limit of 256."""
    topics = ["cats sleeping in the sun", "the stock market on Monday", "baking bread at home",
              "rain in the mountains", "a compiler reporting errors"]
    return " ".join(f"Sentence {i} is about {topics[i % len(topics)]}." for i in range(90))


def _minilm_sentence_embeddings(tokenizer, model, texts) -> torch.Tensor:
    """The book's recipe: tokenize (padding, truncation), encode, mean-pool, normalise -> (B, 384)."""
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, 384)
    return E.normalize_rows(E.mean_pool(hidden, batch["attention_mask"]))


def test_minilm_recipe_reads_only_the_first_256_tokens():
    """MiniLM is trained and used at 256 tokens ([CLS] and [SEP] included), not at its table's 512."""
    pytest.importorskip("transformers")
    from llmcourse.course import pretrained

    limit = json.loads((pretrained.minilm_path() / "sentence_bert_config.json").read_text())["max_seq_length"]
    assert limit == 256, f"all-MiniLM-L6-v2 is used at 256 tokens, its sentence_bert_config.json says {limit}"
    tokenizer, model = pretrained.load_minilm()
    text = _long_text()
    ids = tokenizer(text, truncation=False)["input_ids"]  # [CLS] ... [SEP]
    assert len(ids) > 512, f"the test text should be longer than both limits, it has {len(ids)} tokens"
    first = torch.tensor([ids[:limit - 1] + [tokenizer.sep_token_id]])  # (1, 256): [CLS], 254 tokens, [SEP]
    with torch.no_grad():
        want = E.normalize_rows(model(input_ids=first).last_hidden_state.mean(dim=1))  # (1, 384)
    got = _minilm_sentence_embeddings(tokenizer, model, [text, "Hi"])
    expect_tensor(got[:1], want, "the embedding of a long text (vs its first 256 tokens)", atol=1e-5)
    assert tokenizer([text], truncation=True)["input_ids"][0] == first[0].tolist()
    assert pretrained.minilm_max_seq_length() == limit


@pytest.mark.parity
def test_mean_pool_reproduces_the_real_sentence_encoder():
    """MiniLM sentence embeddings: transformers + our mean_pool + normalisation == sentence-transformers."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from llmcourse.course.pretrained import load_minilm, minilm_path

    sentences = ["A cat sleeps on the warm windowsill.", "Stocks fell sharply on Monday.",
                 "The kitten is napping in the sun.", "Hi", "Attention is all you need, they said.", _long_text()]
    tokenizer, model = load_minilm()
    ours = _minilm_sentence_embeddings(tokenizer, model, sentences)
    encoder = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    want = encoder.encode(sentences, convert_to_tensor=True, normalize_embeddings=True)
    expect_tensor(ours, want, "MiniLM sentence embeddings", atol=1e-5)
    sims = E.cosine_similarity_matrix(ours)
    assert sims[0, 2] > sims[0, 1] + 0.3, "the two cat sentences should be far more similar than cat vs stocks"


def test_sinusoidal_known_values_and_properties(device):
    table = E.sinusoidal_position_encoding(2048, 64, device=device, dtype=torch.float64)
    p, i = 1234, 5
    assert table.device.type == device
    assert math.isclose(table[p, 2 * i].item(), math.sin(p / 10000 ** (2 * i / 64)), abs_tol=1e-12)
    assert math.isclose(table[p, 2 * i + 1].item(), math.cos(p / 10000 ** (2 * i / 64)), abs_tol=1e-12)
    expect_tensor(table.norm(dim=-1), torch.full((2048,), math.sqrt(32), dtype=torch.float64, device=device), "norms")
    # the dot product of two positions depends only on their distance
    dots = table @ table.T
    for k in (1, 7, 100):
        diagonal = torch.diagonal(dots, offset=k)
        assert float(diagonal.max() - diagonal.min()) < 1e-9
    assert E.sinusoidal_position_encoding(4, 8, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        E.sinusoidal_position_encoding(4, 7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_sinusoidal_low_precision_is_the_float64_table_rounded(device, dtype):
    exact = E.sinusoidal_position_encoding(300, 32, device=device, dtype=torch.float64)
    table = E.sinusoidal_position_encoding(300, 32, device=device, dtype=dtype)
    expect_tensor(table, exact.to(dtype), f"the {dtype} table (vs the float64 table, rounded)", atol=0, rtol=0)


def test_sinusoidal_default_dtype_is_torchs_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        table = E.sinusoidal_position_encoding(3, 4)
    finally:
        torch.set_default_dtype(previous)
    assert table.dtype == torch.float64, \
        f"dtype=None should mean torch's default dtype (float64 here), got {table.dtype}"


class _RecordFloat64OffTheCpu(TorchFunctionMode):
    """Records every torch call that returns a float64 tensor outside the CPU."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64 and tensor.device.type != "cpu":
                self.calls.append(getattr(func, "__name__", repr(func)))
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sinusoidal_builds_its_float64_table_on_the_cpu(device, dtype):
    """Some accelerators (Apple's MPS) have no float64: only the finished, rounded table may leave the CPU.

    The `meta` device stands in for an accelerator on a machine without one.
    """
    target = "meta" if device == "cpu" else device
    with _RecordFloat64OffTheCpu() as recorder:
        table = E.sinusoidal_position_encoding(16, 8, device=target, dtype=dtype)
    assert not recorder.calls, f"float64 tensors were created on {target} by: {', '.join(recorder.calls)}"
    assert table.device.type == target and table.dtype == dtype and table.shape == (16, 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normalize_rows_keeps_tiny_vectors_unit(dtype):
    """Only the zero vector lacks a direction: x / (|x| + eps) or clamping |x|^2 shrinks tiny vectors."""
    for scale in (1.0, 1e-3, 1e-6, 1e-8, 2e-8):
        v = torch.tensor([[3.0, 4.0], [0.0, -1.0]], dtype=dtype) * scale
        expect_tensor(E.normalize_rows(v), F.normalize(v, dim=-1), f"normalize_rows of vectors of norm {5 * scale:g}")
    expect_tensor(E.normalize_rows(torch.zeros(2, 3, dtype=dtype)), torch.zeros(2, 3, dtype=dtype), "the zero vector")


def test_embedding_reads_int32_ids_refuses_mask_dtypes_and_starts_standard_normal():
    torch.manual_seed(12)
    table = E.Embedding(1000, 64)
    ids = torch.tensor([3, 999, 0])
    expect_tensor(table(ids.int()), table(ids), "int32 ids read the same rows as int64 ids")
    for dtype in (torch.uint8, torch.bool, torch.float32):
        with pytest.raises(TypeError):
            table(torch.tensor([1, 0, 1]).to(dtype))
    weight = table.weight.detach()
    assert abs(weight.mean().item()) < 0.02 and abs(weight.std().item() - 1) < 0.02, \
        f"a new table is N(0, 1) like nn.Embedding's: mean {weight.mean().item():.3f}, std {weight.std().item():.3f}"


def test_eps_and_base_arguments_are_used():
    v = torch.tensor([[3e-4, 4e-4]], dtype=torch.float64)  # norm 5e-4
    expect_tensor(E.normalize_rows(v, eps=1e-3), v / 1e-3, "normalize_rows with eps above the norm")
    expect_tensor(E.cosine_similarity_matrix(v, v, eps=1e-3), (v / 1e-3) @ (v / 1e-3).T, "cosine with a large eps")
    table = E.sinusoidal_position_encoding(6, 4, base=100.0, dtype=torch.float64)
    p, i = torch.arange(6.0, dtype=torch.float64)[:, None], torch.arange(2, dtype=torch.float64)
    expect_tensor(table[:, 0::2], torch.sin(p / 100.0 ** (2 * i / 4)), "the sines with base=100", atol=1e-12, rtol=0)


def test_top_k_accepts_every_key_and_mean_pool_keeps_low_precision():
    keys = torch.randn(7, 5, generator=torch.Generator().manual_seed(13))
    scores, indices = E.top_k_neighbours(keys[0], keys, 7)
    assert sorted(indices.tolist()) == list(range(7)), "k equal to the number of keys returns every key"
    for dtype in (torch.bfloat16, torch.float16):
        pooled = E.mean_pool(torch.randn(2, 3, 4).to(dtype), torch.tensor([[1, 1, 0], [1, 0, 0]]))
        assert pooled.dtype == dtype, f"mean_pool of {dtype} states should stay {dtype}, got {pooled.dtype}"
