"""Attention: the course's eager attention and its sdpa fast path against PyTorch's
F.scaled_dot_product_attention, on the same tensors, in the same run.

    .venv/bin/python bench/bench_attention.py --seq-len 1024 --heads 8

Three rows per case: the bare functions (q, k, v already split into heads), the whole
`Attention` layer with `attn_implementation="eager"` and `"sdpa"` (projections included), and
PyTorch's `F.scaled_dot_product_attention` on the same q, k, v as the reference. The ratio
column is time / PyTorch's time. Forward only, no grad, best of --repeat after a warm-up.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmcourse import attention as A  # noqa: E402
from llmcourse.config import TransformerConfig  # noqa: E402


def best_time(fn, repeat: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def run_case(args, n_kv_heads: int, causal: bool) -> list[tuple[str, float]]:
    torch.manual_seed(0)
    device, dtype = args.device, getattr(torch, args.dtype)
    config = TransformerConfig(d_model=args.heads * args.head_dim, n_heads=args.heads, n_kv_heads=n_kv_heads,
                               bias=False)
    B, T, h, d = args.batch, args.seq_len, args.heads, args.head_dim
    q = torch.randn(B, h, T, d, device=device, dtype=dtype)
    k = torch.randn(B, n_kv_heads, T, d, device=device, dtype=dtype)
    v = torch.randn(B, n_kv_heads, T, d, device=device, dtype=dtype)
    x = torch.randn(B, T, config.d_model, device=device, dtype=dtype)
    eager_layer = A.Attention(config, device=device, dtype=dtype)
    sdpa_layer = A.Attention(TransformerConfig(**{**config.__dict__, "attn_implementation": "sdpa"}),
                             device=device, dtype=dtype)
    sdpa_layer.load_state_dict(eager_layer.state_dict())
    gqa = n_kv_heads != h
    rows = []
    with torch.no_grad():
        for name, fn in [
            ("torch F.scaled_dot_product_attention",
             lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)),
            ("ours eager_attention", lambda: A.eager_attention(q, k, v, is_causal=causal)),
            ("ours sdpa_attention", lambda: A.sdpa_attention(q, k, v, is_causal=causal)),
            ("Attention layer, eager", lambda: eager_layer(x, is_causal=causal)),
            ("Attention layer, sdpa", lambda: sdpa_layer(x, is_causal=causal)),
        ]:
            rows.append((name, best_time(fn, args.repeat, device)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, B={args.batch} T={args.seq_len} h={args.heads} d={args.head_dim} {args.dtype}")
    for n_kv_heads in (args.heads, max(1, args.heads // 4)):
        for causal in (False, True):
            rows = run_case(args, n_kv_heads, causal)
            reference = rows[0][1]
            print(f"\n{n_kv_heads} key/value heads, {'causal' if causal else 'no mask'}")
            print(f"  {'':40s} {'ms':>9s} {'x torch':>8s}")
            for name, seconds in rows:
                print(f"  {name:40s} {seconds * 1e3:9.2f} {seconds / reference:8.2f}")


if __name__ == "__main__":
    main()
