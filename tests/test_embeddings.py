"""Chapter 2: the embeddings module, against torch, known answers, properties and real MiniLM."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), m=st.integers(1, 6), d=st.integers(1, 9), batch=st.integers(0, 2), seed=st.integers(0, 10**6))
def test_cosine_matrix_matches_torch(n, m, d, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    lead = (3,) * batch
    a = torch.randn(*lead, n, d, generator=generator, dtype=torch.float64)
    b = torch.randn(*lead, m, d, generator=generator, dtype=torch.float64)
    got = E.cosine_similarity_matrix(a, b)
    want = F.cosine_similarity(a.unsqueeze(-2), b.unsqueeze(-3), dim=-1)
    expect_tensor(got, want, "cosine_similarity_matrix", atol=1e-12)
    assert bool((got.abs() <= 1 + 1e-12).all()), "cosines lie in [-1, 1]"
    expect_tensor(E.cosine_similarity_matrix(a), E.cosine_similarity_matrix(a).transpose(-1, -2), "symmetry", atol=1e-12)


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
    expect_tensor(E.mean_pool(h.masked_fill(~mask.bool()[..., None], 1e30), mask.bool()), want, "mean_pool (huge padding)")
    with pytest.raises(ValueError):
        E.mean_pool(h, mask[:2])


@pytest.mark.parity
def test_mean_pool_reproduces_the_real_sentence_encoder():
    """MiniLM sentence embeddings: transformers + our mean_pool + normalisation == sentence-transformers."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from llmcourse.course.pretrained import load_minilm, minilm_path

    sentences = ["A cat sleeps on the warm windowsill.", "Stocks fell sharply on Monday.",
                 "The kitten is napping in the sun.", "Hi", "Attention is all you need, they said."]
    tokenizer, model = load_minilm()
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    ours = E.normalize_rows(E.mean_pool(hidden, batch["attention_mask"]))
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
