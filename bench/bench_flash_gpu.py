"""FlashAttention on a GPU: the course's Triton forward against PyTorch's flash backend, side by side.

    .venv/bin/python bench/bench_flash_gpu.py                          # bf16, d 64 and 128, T 1024..16384
    .venv/bin/python bench/bench_flash_gpu.py --seq-lens 2048,8192 --head-dims 128 --repeat 10
    TRITON_INTERPRET=1 .venv/bin/python bench/bench_flash_gpu.py --device cpu --dtype float32 \\
        --seq-lens 64 --tokens 128 --heads 2 --head-dims 16       # a smoke test of this script, no GPU

Ours is `llmcourse.kernels.triton_flash`: the Triton forward kernel, and for forward + backward
`TritonFlashAttention`, whose backward is `flash_attention_backward` (PyTorch, tile by tile, by
recomputation; not a Triton kernel). Theirs is `F.scaled_dot_product_attention` restricted to the
flash backend (`sdpa_kernel(SDPBackend.FLASH_ATTENTION)`, FlashAttention-2). Every point has
B*T = --tokens tokens and --heads heads of d features, so each T does the same amount of
projection work in a model; causal means T == S here.

FLOPs: 4*B*h*T*S*d for the forward (two matrix products of 2*T*S*d each), halved when causal;
the backward 2.5 times the forward; forward + backward 3.5 times. Times are CUDA events around
each call, after a warm-up, the median of --repeat runs, the two sides alternating. The outputs
(and, for forward + backward, the gradients) are compared before anything is timed; a point whose
output disagrees, or that fails in any way, is reported and skipped. The ratio is ours / PyTorch's
TFLOP/s: above 1.00x, ours is faster. A point is skipped once --budget-s seconds have passed.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORWARD_TOLERANCE = {"bfloat16": 5e-2, "float16": 1e-2, "float32": 1e-4}
"""The largest difference between the two outputs at which the point is timed: beyond it the two
kernels do not compute the same thing. bf16 keeps 8 bits: outputs near 4 round by 1/64 already."""

CONFIGS = {
    16: [(64, 64, 4, 3)], 32: [(64, 64, 4, 3)],
    64: [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3)],
    128: [(128, 64, 8, 3), (128, 64, 8, 2), (64, 64, 4, 3)],
}
"""Candidate (block_m, block_n, num_warps, num_stages) per head size, tried on one T before the
table; the fastest forward is used for every point. Each was compiled for sm_90 beforehand
without spilling registers (with 16-byte aligned strides)."""

TUNING_SEQ_LEN = 4096
"""The T at which the candidate configurations are compared (or the largest T asked for, if smaller)."""

BACKWARD_BLOCK = 1024
"""Tile edge of our PyTorch backward here: every tile costs a dozen kernel launches, so large tiles;
(B*h, 1024, 1024) float32 tiles take 4 MiB per (batch, head)."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device) -> float:
    """Seconds one call of fn takes: CUDA events on a GPU, the wall clock on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start_time = time.perf_counter()
    fn()
    return time.perf_counter() - start_time


def time_both(ours, theirs, device: torch.device, warmup: int, repeat: int) -> tuple[float, float]:
    """Median seconds of each, alternating which goes first."""
    for _ in range(warmup):
        ours()
        theirs()
    sync(device)
    our_times, their_times = [], []
    for i in range(repeat):
        pair = [(ours, our_times), (theirs, their_times)]
        for fn, times in (pair if i % 2 == 0 else pair[::-1]):
            times.append(time_call(fn, device))
    return statistics.median(our_times), statistics.median(their_times)


def forward_flops(batch: int, heads: int, n_queries: int, n_keys: int, head_dim: int, is_causal: bool) -> float:
    flops = 4.0 * batch * heads * n_queries * n_keys * head_dim
    return flops / 2 if is_causal else flops


def sdpa_flash(q, k, v, is_causal: bool):
    """PyTorch's attention, only its FlashAttention-2 backend (an error rather than a fallback)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)


def random_qkv(batch, heads, seq_len, head_dim, dtype, device, seed=0):
    generator = torch.Generator(device=device).manual_seed(seed)
    return [torch.randn(batch, heads, seq_len, head_dim, generator=generator, device=device, dtype=dtype)
            for _ in range(3)]


def pick_config(args, head_dim: int, device: torch.device, dtype: torch.dtype):
    """The fastest of CONFIGS[head_dim] on a non-causal forward at TUNING_SEQ_LEN (the first with --no-tune)."""
    from llmcourse.kernels.triton_flash import triton_flash_forward

    candidates = CONFIGS.get(head_dim, [(64, 64, 4, 2)])
    if args.no_tune or len(candidates) == 1:
        return candidates[0]
    seq_len = min(TUNING_SEQ_LEN, max(args.seq_lens))
    q, k, v = random_qkv(max(1, args.tokens // seq_len), args.heads, seq_len, head_dim, dtype, device)
    best, best_time = candidates[0], math.inf
    for block_m, block_n, warps, stages in candidates:
        def run(block_m=block_m, block_n=block_n, warps=warps, stages=stages):
            return triton_flash_forward(q, k, v, block_m=block_m, block_n=block_n, num_warps=warps, num_stages=stages)
        try:
            seconds, _ = time_both(run, lambda: None, device, warmup=1, repeat=3)
        except Exception as error:  # a configuration the GPU cannot run: say so, try the next
            print(f"  d={head_dim}: block {block_m}x{block_n}, {warps} warps, {stages} stages failed: "
                  f"{first_line(error)}")
            continue
        print(f"  d={head_dim}: block {block_m}x{block_n}, {warps} warps, {stages} stages: {seconds * 1e3:.3f} ms")
        if seconds < best_time:
            best, best_time = (block_m, block_n, warps, stages), seconds
    return best


def first_line(error: Exception) -> str:
    """The error's type and the first line of its message, for one table cell."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message.splitlines()[0] if message else ''}".replace("|", "/")


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def forward_point(q, k, v, is_causal, config, args, device):
    """(our seconds, their seconds, max |out difference|), or None times when the outputs disagree."""
    from llmcourse.kernels.triton_flash import triton_flash_forward

    block_m, block_n, warps, stages = config

    def ours():
        return triton_flash_forward(q, k, v, is_causal=is_causal, block_m=block_m, block_n=block_n,
                                    num_warps=warps, num_stages=stages)[0]

    def theirs():
        return sdpa_flash(q, k, v, is_causal)

    difference = max_difference(ours(), theirs())
    if not difference <= FORWARD_TOLERANCE[args.dtype]:
        return None, None, difference
    our_time, their_time = time_both(ours, theirs, device, args.warmup, args.repeat)
    return our_time, their_time, difference


def backward_point(q, k, v, is_causal, config, args, device):
    """(our seconds, their seconds, max |gradient difference|) of forward + backward."""
    from llmcourse.kernels.triton_flash import TritonFlashAttention

    block_m, block_n, _, _ = config
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    grad_out = torch.randn_like(q)

    def ours():
        q.grad = k.grad = v.grad = None
        TritonFlashAttention.apply(q, k, v, is_causal, None, block_m, block_n, BACKWARD_BLOCK).backward(grad_out)

    def theirs():
        q.grad = k.grad = v.grad = None
        sdpa_flash(q, k, v, is_causal).backward(grad_out)

    ours()
    our_grads = [x.grad for x in (q, k, v)]
    theirs()
    difference = max(max_difference(a, x.grad) for a, x in zip(our_grads, (q, k, v)))
    del our_grads
    our_time, their_time = time_both(ours, theirs, device, args.warmup, args.repeat)
    return our_time, their_time, difference


def tflops(flops: float, seconds: float | None) -> str:
    return "—" if seconds is None else f"{flops / seconds / 1e12:.1f}"


def ratio(our_seconds: float | None, their_seconds: float | None) -> str:
    return "—" if our_seconds is None or their_seconds is None else f"{their_seconds / our_seconds:.2f}x"


def run_point(args, head_dim, seq_len, is_causal, config, device, dtype, started) -> str:
    """One row of the table; any failure is reported in the row and the next point goes on."""
    batch = max(1, args.tokens // seq_len)
    label = f"| {head_dim} | {seq_len} | {batch}x{args.heads} | {'yes' if is_causal else 'no'} "
    if time.perf_counter() - started > args.budget_s:
        return label + "| skipped: out of --budget-s | | | | | | |"
    flops = forward_flops(batch, args.heads, seq_len, seq_len, head_dim, is_causal)
    try:
        q, k, v = random_qkv(batch, args.heads, seq_len, head_dim, dtype, device, seed=seq_len)
        our_fwd, their_fwd, fwd_diff = forward_point(q, k, v, is_causal, config, args, device)
        if our_fwd is None:
            return label + f"| outputs differ by {fwd_diff:.3g}: not timed | | | | | | |"
        row = label + f"| {tflops(flops, our_fwd)} | {tflops(flops, their_fwd)} | {ratio(our_fwd, their_fwd)} "
    except Exception as error:  # one point's failure (out of memory, a compile error) must not end the run
        return label + f"| failed: {first_line(error)} | | | | | | |"
    if args.forward_only or time.perf_counter() - started > args.budget_s:
        return row + f"| — | — | — | {fwd_diff:.1e} / — |"
    try:
        our_both, their_both, grad_diff = backward_point(q, k, v, is_causal, config, args, device)
    except Exception as error:
        return row + f"| failed: {first_line(error)} | | | {fwd_diff:.1e} / — |"
    both = 3.5 * flops
    return row + (f"| {tflops(both, our_both)} | {tflops(both, their_both)} | {ratio(our_both, their_both)} "
                  f"| {fwd_diff:.1e} / {grad_diff:.1e} |")


def describe(device: torch.device) -> str:
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU (interpreter)"
    return f"{name}, torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-lens", default="1024,2048,4096,8192,16384", help="comma-separated T (= S)")
    parser.add_argument("--head-dims", default="64,128", help="comma-separated head sizes d (16..128, powers of two)")
    parser.add_argument("--tokens", type=int, default=16384, help="B*T of every point (B = tokens // T)")
    parser.add_argument("--heads", type=int, default=16, help="heads h")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(FORWARD_TOLERANCE))
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each side (the median counts)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each side first")
    parser.add_argument("--forward-only", action="store_true", help="skip forward + backward")
    parser.add_argument("--no-tune", action="store_true", help="use the first of CONFIGS for each head size")
    parser.add_argument("--budget-s", type=float, default=170.0, help="skip the points left after this many seconds")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test under TRITON_INTERPRET=1")
    args = parser.parse_args()
    args.seq_lens = [int(n) for n in args.seq_lens.split(",")]
    head_dims = [int(n) for n in args.head_dims.split(",")]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_flash_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False): nothing to measure.")
        return
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        print("--device cpu runs the kernel in Triton's interpreter: set TRITON_INTERPRET=1 first.")
        return
    from llmcourse.kernels.triton_flash import triton_available

    if not triton_available():
        print("bench_flash_gpu.py needs Triton: pip install triton")
        return
    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    print(describe(device))
    print(f"{args.dtype}, B*T = {args.tokens} tokens, {args.heads} heads; median of {args.repeat} after "
          f"{args.warmup} warm-up; our backward: PyTorch flash_attention_backward, tiles of {BACKWARD_BLOCK}\n")
    configs = {}
    for head_dim in head_dims:
        try:
            configs[head_dim] = pick_config(args, head_dim, device, dtype)
        except Exception as error:  # the points will report their own failures
            print(f"  d={head_dim}: tuning failed ({type(error).__name__}: {error}); using the first configuration")
            configs[head_dim] = CONFIGS.get(head_dim, [(64, 64, 4, 2)])[0]
        block_m, block_n, warps, stages = configs[head_dim]
        print(f"d={head_dim}: block_m {block_m}, block_n {block_n}, {warps} warps, {stages} stages")
    print("\n| d | T | B x h | causal | fwd ours TFLOP/s | fwd SDPA flash TFLOP/s | fwd ours/SDPA "
          "| fwd+bwd ours TFLOP/s | fwd+bwd SDPA flash TFLOP/s | fwd+bwd ours/SDPA | max diff out / grads |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for head_dim in head_dims:
        for is_causal in (False, True):
            for seq_len in args.seq_lens:
                print(run_point(args, head_dim, seq_len, is_causal, configs[head_dim], device, dtype, started),
                      flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
