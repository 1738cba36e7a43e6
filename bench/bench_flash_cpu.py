"""Attention's cost on the CPU: peak memory and time of naive attention, the tiled FlashAttention
forward in PyTorch, and PyTorch's fused kernel, on the same tensors, in the same run.

    .venv/bin/python bench/bench_flash_cpu.py                               # T = 1024 ... 16384, d = 64
    .venv/bin/python bench/bench_flash_cpu.py --seq-lens 1024,2048 --max-naive-seq-len 8192 --block-q 128

Three implementations of the forward pass, float32, B = 1, one head of 64 by default:
- naive: `llmcourse.attention.scaled_dot_product_attention`, the course's eager attention (Eq. 3.1),
  which materialises the (T, T) scores and their softmax;
- tiled: `llmcourse.flash_attention.flash_attention_forward`, scores block_q x block_k at a time with
  the online softmax (Algorithm 6.1); its output, not its logsumexp, is compared;
- sdpa: `torch.nn.functional.scaled_dot_product_attention`, PyTorch's fused CPU kernel.

Peak memory is measured with the course's tracker, `llmcourse.course.memory.PeakMemory`: the most
bytes of tensor storages alive at once among those the call creates (the output included, q, k and
v not). It sees every tensor a PyTorch operator returns, so the naive scores, the tiled loop's tiles
and its output; it does not see the scratch memory a single kernel keeps to itself (sdpa's per-thread
tiles), so sdpa's figure is its output and logsumexp only. One untimed run each, under the tracker.

Time is wall-clock (`time.perf_counter`), the median of --repeat runs after --warmup, without the
tracker; within each repeat the implementations take turns in a rotating order, so that other work
on the machine slows all alike. Before anything is timed, each output is compared with sdpa's.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmcourse.attention import scaled_dot_product_attention  # noqa: E402
from llmcourse.course.memory import MIB, measure_peak  # noqa: E402
from llmcourse.flash_attention import flash_attention_forward  # noqa: E402

AGREEMENT_TOLERANCE = 1e-4
"""The largest difference from sdpa's output (float32) at which the timing goes on: beyond it an
implementation computes something else, and its time and memory say nothing."""

TARGET_SEQ_LEN = 8192
TARGET_MEMORY_RATIO = 10
"""The target: at T = TARGET_SEQ_LEN, the tiled forward's peak is at most 1/TARGET_MEMORY_RATIO of the
naive one's. The naive peak grows as T^2 and the tiled one as T, so any T large enough meets it; 8192
is where a (T, T) float32 matrix (256 MiB) stops being small on a laptop."""

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]


def implementations(args) -> dict[str, Attention]:
    """name -> f(q, k, v, is_causal) -> out (B, h, T, d)."""
    def naive(q, k, v, is_causal):
        return scaled_dot_product_attention(q, k, v, is_causal=is_causal)

    def tiled(q, k, v, is_causal):
        return flash_attention_forward(q, k, v, is_causal=is_causal, block_q=args.block_q, block_k=args.block_k)[0]

    def sdpa(q, k, v, is_causal):
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)

    return {"naive": naive, "tiled": tiled, "sdpa": sdpa}


def make_inputs(args, seq_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seq_len)
    shape = (args.batch, args.heads, seq_len, args.head_dim)  # (B, h, T, d)
    return tuple(torch.randn(shape, generator=generator) for _ in range(3))


def peaks_and_outputs(functions: dict[str, Attention], inputs, is_causal: bool) -> tuple[dict, dict]:
    """One untimed run of each under PeakMemory: {name: peak bytes}, {name: output}."""
    peaks, outputs = {}, {}
    with torch.no_grad():
        for name, fn in functions.items():
            outputs[name], peaks[name] = measure_peak(fn, *inputs, is_causal)
    return peaks, outputs


def check_agreement(outputs: dict[str, torch.Tensor], where: str) -> str:
    """Max abs difference of each output from sdpa's; stops the run if one is beyond the tolerance."""
    reference = outputs["sdpa"]
    differences = {name: (out - reference).abs().max().item() for name, out in outputs.items() if name != "sdpa"}
    for name, difference in differences.items():
        if not difference <= AGREEMENT_TOLERANCE:
            raise SystemExit(f"{where}: {name} differs from sdpa by {difference:.3g} (more than "
                             f"{AGREEMENT_TOLERANCE:g}): not timing implementations that disagree")
    return ", ".join(f"{name} {difference:.1e}" for name, difference in differences.items())


def median_times(functions: dict[str, Attention], inputs, is_causal: bool, warmup: int,
                 repeat: int) -> dict[str, float]:
    """Median seconds per call of each, the order rotating from one repeat to the next."""
    names = list(functions)
    times = {name: [] for name in names}
    with torch.no_grad():
        for _ in range(warmup):
            for name in names:
                functions[name](*inputs, is_causal)
        for i in range(repeat):
            for name in names[i % len(names):] + names[:i % len(names)]:
                start = time.perf_counter()
                functions[name](*inputs, is_causal)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def run_case(args, seq_len: int, is_causal: bool) -> dict:
    """Peaks (bytes) and median times (s) of the implementations at one T, naive left out past the limit."""
    functions = implementations(args)
    if args.max_naive_seq_len is not None and seq_len > args.max_naive_seq_len:
        del functions["naive"]
    inputs = make_inputs(args, seq_len)
    where = f"T={seq_len}, {'causal' if is_causal else 'full'}"
    peaks, outputs = peaks_and_outputs(functions, inputs, is_causal)
    agreement = check_agreement(outputs, where)
    del outputs
    times = median_times(functions, inputs, is_causal, args.warmup, args.repeat)
    print(f"  {where}: max |diff| from sdpa: {agreement}; load average {os.getloadavg()[0]:.1f}", flush=True)
    return {"seq_len": seq_len, "causal": is_causal, "peaks": peaks, "times": times}


def cell(row: dict, kind: str, name: str) -> str:
    if name not in row[kind]:
        return "skipped"
    value = row[kind][name]
    return f"{value / MIB:.2f}" if kind == "peaks" else f"{value * 1e3:.1f}"


def ratio(row: dict, kind: str, top: str, bottom: str) -> str:
    values = row[kind]
    return f"{values[top] / values[bottom]:.1f}x" if top in values and bottom in values else "—"


def print_table(rows: list[dict]) -> None:
    print("\n| mask | T | naive peak (MiB) | tiled peak (MiB) | sdpa peak (MiB) | naive / tiled peak "
          "| naive (ms) | tiled (ms) | sdpa (ms) | naive / tiled time | tiled / sdpa time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        mask = "causal" if row["causal"] else "full"
        print(f"| {mask} | {row['seq_len']} | {cell(row, 'peaks', 'naive')} | {cell(row, 'peaks', 'tiled')} "
              f"| {cell(row, 'peaks', 'sdpa')} | {ratio(row, 'peaks', 'naive', 'tiled')} "
              f"| {cell(row, 'times', 'naive')} | {cell(row, 'times', 'tiled')} | {cell(row, 'times', 'sdpa')} "
              f"| {ratio(row, 'times', 'naive', 'tiled')} | {ratio(row, 'times', 'tiled', 'sdpa')} |")


def print_target(rows: list[dict]) -> None:
    """Whether the tiled peak at T = TARGET_SEQ_LEN is at most 1/TARGET_MEMORY_RATIO of the naive peak."""
    target = f"Target: tiled peak at T = {TARGET_SEQ_LEN} <= 1/{TARGET_MEMORY_RATIO} of naive"
    measured = [row for row in rows if row["seq_len"] == TARGET_SEQ_LEN and "naive" in row["peaks"]]
    if not measured:
        print(f"{target}: not measured (T = {TARGET_SEQ_LEN} not run, or naive skipped there)")
        return
    for row in measured:
        peaks = row["peaks"]
        held = peaks["tiled"] * TARGET_MEMORY_RATIO <= peaks["naive"]
        print(f"{target}, {'causal' if row['causal'] else 'full'}: {'held' if held else 'NOT held'} "
              f"({peaks['naive'] / MIB:.1f} MiB / {peaks['tiled'] / MIB:.2f} MiB = "
              f"{peaks['naive'] / peaks['tiled']:.0f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-lens", default="1024,2048,4096,8192,16384", help="comma-separated T (queries = keys)")
    parser.add_argument("--head-dim", type=int, default=64, help="features per head, d")
    parser.add_argument("--batch", type=int, default=1, help="B")
    parser.add_argument("--heads", type=int, default=1, help="h")
    parser.add_argument("--block-q", type=int, default=64, help="tiled: queries per tile (the API's default)")
    parser.add_argument("--block-k", type=int, default=64, help="tiled: keys per tile (the API's default)")
    parser.add_argument("--masks", default="full,causal", help="comma-separated: full (no mask), causal")
    parser.add_argument("--max-naive-seq-len", type=int, default=None,
                        help="skip naive attention for T above this (at T = 16384 it holds 2-2.5 GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each after the warm-up (median shown)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seq_lens = [int(n) for n in args.seq_lens.split(",")]
    masks = args.masks.split(",")
    unknown = set(masks) - {"full", "causal"}
    if unknown:
        raise SystemExit(f"--masks takes full and causal, got {sorted(unknown)}")

    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"B={args.batch}, h={args.heads}, d={args.head_dim}, float32, forward only; tiled blocks "
          f"{args.block_q} x {args.block_k}; median of {args.repeat} after {args.warmup} warm-up; "
          f"naive up to T={args.max_naive_seq_len or max(seq_lens)}")
    print("the (T, T) float32 score matrix alone: "
          + ", ".join(f"T={n}: {n * n * 4 * args.batch * args.heads / MIB:.0f} MiB" for n in seq_lens) + "\n")
    rows = [run_case(args, seq_len, mask == "causal") for mask in masks for seq_len in seq_lens]
    print_table(rows)
    print()
    print_target(rows)


if __name__ == "__main__":
    main()
