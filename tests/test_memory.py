"""PeakMemory, the tracker the chapter 6 benchmarks and graded cells measure memory with: known answers."""
from __future__ import annotations

import pytest
import torch

from llmcourse.course.memory import MIB, PeakMemory, cuda_peak_allocated, measure_peak

pytestmark = pytest.mark.course_infra

FLOAT32_BYTES = 4


def expect_bytes(got: int, want: int, what: str) -> None:
    assert got == want, f"{what}: expected {want} bytes ({want / MIB:.3f} MiB), got {got} ({got / MIB:.3f} MiB)"


def test_one_tensor_allocated_in_the_block_is_its_size():
    with PeakMemory() as memory:
        kept = torch.empty(1024, 1024)
    expect_bytes(memory.peak, 4 * MIB, "peak of one float32 (1024, 1024) tensor")
    expect_bytes(memory.current, 4 * MIB, "bytes alive at the end of the block")
    assert memory.peak_by_device == {"cpu": 4 * MIB}, f"per device: got {memory.peak_by_device}"
    del kept
    expect_bytes(memory.current, 4 * MIB, "bytes alive at the end, after the block (frozen)")


def test_a_tensor_freed_before_the_next_does_not_add():
    with PeakMemory() as memory:
        first = torch.empty(1024, 1024)
        del first
        second = torch.ones(1024, 1024)
        del second
    expect_bytes(memory.peak, 4 * MIB, "peak of two tensors alive one after the other")
    expect_bytes(memory.current, 0, "bytes alive at the end")
    with PeakMemory() as both:
        pair = (torch.empty(1024, 1024), torch.ones(1024, 1024))
    expect_bytes(both.peak, 8 * MIB, "peak of two tensors alive together")
    assert len(pair) == 2


def test_views_share_their_storage():
    with PeakMemory() as memory:
        base = torch.zeros(1024, 1024)
        views = [base[0], base.t(), base.view(-1), base[:, ::2], base.unsqueeze(0).expand(3, -1, -1)]
        base.add_(1.0)  # in place: no new storage
    expect_bytes(memory.peak, 4 * MIB, "peak of a tensor and five views of it")
    assert len(views) == 5


def test_tensors_alive_before_the_block_do_not_count():
    outside = torch.randn(1024, 1024)
    with PeakMemory() as memory:
        outside.mul_(2.0)
        row = outside[3]
        total = outside.sum()
    expect_bytes(memory.peak, FLOAT32_BYTES, "peak when only a scalar is created")
    assert row.shape == (1024,) and total.dim() == 0


def test_softmax_of_a_square_matrix_shows_its_size():
    n = 512
    scores = torch.randn(n, n)
    weights, peak = measure_peak(torch.softmax, scores, dim=-1)
    expect_bytes(peak, n * n * FLOAT32_BYTES, f"peak of softmax over a ({n}, {n}) float32 matrix")
    assert weights.shape == (n, n), f"measure_peak returns fn's result, got shape {tuple(weights.shape)}"


def test_autograd_saved_tensors_and_gradients_count():
    n = 4096
    x = torch.randn(n, requires_grad=True)
    with torch.no_grad(), PeakMemory() as no_graph:
        x.exp().sum()
    expect_bytes(no_graph.current, 0, "bytes alive after exp().sum() without autograd")
    with PeakMemory() as forward:
        loss = x.exp().sum()  # exp's output is saved for the backward pass
    expect_bytes(forward.current, n * FLOAT32_BYTES + FLOAT32_BYTES, "bytes alive after exp().sum() with autograd "
                 "(the saved exp and the loss)")
    with PeakMemory() as backward:
        loss.backward()
    expect_bytes(backward.current, n * FLOAT32_BYTES, "bytes alive after backward (x.grad)")


def test_tensors_made_from_python_data_count():
    with PeakMemory() as memory:
        made = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    expect_bytes(memory.peak, made.numel() * FLOAT32_BYTES, "peak of torch.tensor(2 x 2 floats)")


def test_a_tracker_measures_one_block():
    memory = PeakMemory()
    with memory:
        torch.empty(8)
    with pytest.raises(RuntimeError, match="new one"):
        with memory:
            pass


@pytest.mark.gpu
def test_agrees_with_the_cuda_allocator():
    def attention_scores(q, k):
        return torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (T, T), made and copied

    q, k = (torch.randn(2048, 64, device="cuda") for _ in range(2))
    attention_scores(q, k)  # warm-up: cuBLAS allocates its workspace on the first matmul
    (weights, tracked), allocated = cuda_peak_allocated(measure_peak, attention_scores, q, k)
    expect_bytes(tracked, 2 * weights.numel() * FLOAT32_BYTES, "PeakMemory on CUDA: scores and their softmax")
    expect_bytes(allocated, tracked, "torch.cuda.max_memory_allocated against PeakMemory")
