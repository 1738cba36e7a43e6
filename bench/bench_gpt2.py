"""A GPT-2 training step, the course's GPT2 against transformers' GPT2LMHeadModel, side by side.

    .venv/bin/python bench/bench_gpt2.py                                  # GPT-2 small's shape, B=4, T=256
    .venv/bin/python bench/bench_gpt2.py --layers 2 --d-model 128 --heads 4 --seq-len 128 --batch 8

Both models get the same weights and the same inputs in the same run. One forward and backward
pass each (logits, then the same next-token cross-entropy on both sides, then backward), timed
after a warm-up; the two models alternate within every repeat so that a busy machine slows both
alike. The weights are transformers' (random, from the config), loaded into ours with
`load_hf_gpt2`. Before timing, the logits, the loss and every gradient are compared.

Attention backends are compared like for like: both sides "sdpa" (PyTorch's fused kernel,
transformers' default), then both sides "eager" (the attention written out; ours is the course's
`eager_attention`, the default of `TransformerConfig`). A last row times the two defaults against
each other: ours eager against transformers' sdpa. The ratio is transformers' time / ours:
above 1.0x, ours is faster.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmcourse.models.gpt2 import GPT2, GPT2Config, gpt2_key_map, load_hf_gpt2  # noqa: E402
from llmcourse.models.weights import Tied  # noqa: E402

LOGITS_TOLERANCE = {"float32": 1e-4, "bfloat16": 0.5, "float64": 1e-9}
"""The largest logits difference at which the timing goes on: beyond it the two models do not
compute the same thing, and their times say nothing."""


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The same loss on both sides: position t predicts token t + 1, in float32."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def hf_step(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids).logits
    loss = next_token_loss(logits, ids)
    loss.backward()
    return logits.detach(), loss.detach()


def our_step(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits = model(ids)
    loss = next_token_loss(logits, ids)
    loss.backward()
    return logits.detach(), loss.detach()


def build(args, hf_backend: str, our_backend: str):
    """transformers' model (attention `hf_backend`) and ours (`our_backend`) on the same weights."""
    import transformers

    torch.manual_seed(args.seed)
    hf_config = transformers.GPT2Config(
        vocab_size=args.vocab, n_positions=max(args.seq_len, 1024), n_embd=args.d_model, n_layer=args.layers,
        n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        attn_implementation=hf_backend)
    dtype = getattr(torch, args.dtype)
    hf = transformers.GPT2LMHeadModel(hf_config).to(dtype).train()
    config = dataclasses.replace(GPT2Config.from_hf(hf_config), attn_implementation=our_backend)
    ours = load_hf_gpt2(GPT2(config, dtype=dtype), hf.state_dict()).train()
    return hf, ours


def agreement(hf, ours, ids: torch.Tensor) -> dict[str, float]:
    """Max abs differences of logits, loss and gradients (every gradient, mapped back to HF's names)."""
    hf_logits, hf_loss = hf_step(hf, ids)
    our_logits, our_loss = our_step(ours, ids)
    hf_params = dict(hf.named_parameters())
    our_params = dict(ours.named_parameters())
    worst_grad, worst_name = 0.0, ""
    for name, target in gpt2_key_map(ours.config).items():
        if isinstance(target, Tied):
            continue
        grad = torch.cat([our_params[part].grad for part in target.names], dim=0)
        grad = grad.t() if target.transpose else grad
        difference = (grad.float() - hf_params[name].grad.float()).abs().max().item()
        if difference >= worst_grad:
            worst_grad, worst_name = difference, name
    return {"logits": (our_logits.float() - hf_logits.float()).abs().max().item(),
            "loss": abs(our_loss.item() - hf_loss.item()), "grad": worst_grad, "grad_name": worst_name}


def time_both(hf, ours, ids: torch.Tensor, warmup: int, repeat: int) -> tuple[list[float], list[float]]:
    """Seconds per step of each, alternating HF and ours within every repeat."""
    for _ in range(warmup):
        hf_step(hf, ids)
        our_step(ours, ids)
    hf_times, our_times = [], []
    for i in range(repeat):
        order = [(hf, hf_step, hf_times), (ours, our_step, our_times)]
        for model, step, times in (order if i % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            step(model, ids)
            times.append(time.perf_counter() - start)
    return hf_times, our_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12, help="blocks (GPT-2 small: 12)")
    parser.add_argument("--d-model", type=int, default=768, help="width of the residual stream (GPT-2 small: 768)")
    parser.add_argument("--heads", type=int, default=12, help="attention heads (GPT-2 small: 12)")
    parser.add_argument("--vocab", type=int, default=50257, help="vocabulary size (GPT-2: 50257)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per row, T")
    parser.add_argument("--batch", type=int, default=4, help="rows per batch, B")
    parser.add_argument("--repeat", type=int, default=5, help="timed steps of each model after the warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each model first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    parser.add_argument("--backends", default="sdpa,eager,defaults",
                        help="comma-separated: sdpa (both sides), eager (both sides), defaults (ours eager vs HF sdpa)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    transformers.logging.set_verbosity_error()
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}")
    print(f"GPT-2: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, vocab {args.vocab}; "
          f"B={args.batch}, T={args.seq_len}, {args.dtype}; forward + backward, warm-up {args.warmup}, "
          f"{args.repeat} timed steps each\n")
    ids = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(1))
    cases = {"sdpa": ("sdpa", "sdpa"), "eager": ("eager", "eager"), "defaults": ("sdpa", "eager")}
    rows = []
    for case in args.backends.split(","):
        hf_backend, our_backend = cases[case]
        hf, ours = build(args, hf_backend, our_backend)
        check = agreement(hf, ours, ids)
        print(f"{case}: HF {hf_backend} vs ours {our_backend}: max |logits diff| {check['logits']:.2e}, "
              f"|loss diff| {check['loss']:.2e}, max |grad diff| {check['grad']:.2e} ({check['grad_name']})")
        if not check["logits"] <= LOGITS_TOLERANCE[args.dtype]:
            raise SystemExit(f"the logits differ by {check['logits']:.3g} (more than {LOGITS_TOLERANCE[args.dtype]:g} "
                             f"in {args.dtype}): not timing models that disagree")
        hf_times, our_times = time_both(hf, ours, ids, args.warmup, args.repeat)
        rows.append((f"HF {hf_backend} / ours {our_backend}", hf_times, our_times))
        load = os.getloadavg()[0]
        shared = load > torch.get_num_threads() + 0.5
        busy = " (more than this run's threads: other work shared the CPUs)" if shared else ""
        print(f"  timed; load average now {load:.1f}{busy}")
        del hf, ours

    print("\n| attention (HF / ours) | HF best (ms) | HF median (ms) | ours best (ms) | ours median (ms) "
          "| HF / ours (median) |\n|---|---|---|---|---|---|")
    for name, hf_times, our_times in rows:
        hf_median, our_median = statistics.median(hf_times), statistics.median(our_times)
        print(f"| {name} | {min(hf_times) * 1e3:.0f} | {hf_median * 1e3:.0f} | {min(our_times) * 1e3:.0f} "
              f"| {our_median * 1e3:.0f} | {hf_median / our_median:.2f}x |")


if __name__ == "__main__":
    main()
