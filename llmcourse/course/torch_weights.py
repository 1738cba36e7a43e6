"""Copy the weights of PyTorch's own attention and Transformer layers into the course's modules.

`nn.MultiheadAttention` packs the query, key and value projections into one `in_proj_weight`
of shape (3 d, d); the course's modules keep them apart as `q_proj`, `k_proj`, `v_proj` (the
names of real checkpoints). Tests and grade cells use these maps to compare the two.

Every copy checks the shapes first and names the tensor when they differ: `Tensor.copy_`
broadcasts, so a (1, d) source would silently fill a (d, d) weight.
"""
from __future__ import annotations

import torch


def copy_tensor(target: torch.Tensor | None, source: torch.Tensor | None, name: str) -> None:
    """target[...] = source, refusing a missing tensor or any difference in shape."""
    if target is None or source is None:
        missing = "ours" if target is None else "the reference's"
        raise ValueError(f"cannot copy {name}: {missing} is missing (is bias set the same way on both?)")
    if tuple(target.shape) != tuple(source.shape):
        raise ValueError(f"cannot copy {name}: ours has shape {tuple(target.shape)}, "
                         f"the reference's {tuple(source.shape)}")
    with torch.no_grad():
        target.copy_(source)


def copy_linear(ours: torch.nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None, name: str) -> None:
    copy_tensor(ours.weight, weight, f"{name}.weight")
    if (ours.bias is None) != (bias is None):
        has = "has" if ours.bias is not None else "has no"
        raise ValueError(f"cannot copy {name}.bias: ours {has} bias but the reference does the opposite")
    if bias is not None:
        copy_tensor(ours.bias, bias, f"{name}.bias")


def copy_module(ours: torch.nn.Module, theirs: torch.nn.Module, name: str) -> None:
    """Every tensor of `theirs`' state dict into the tensor of the same name in `ours`, shapes checked."""
    mine, reference = ours.state_dict(), theirs.state_dict()
    if set(mine) != set(reference):
        raise ValueError(f"cannot copy {name}: ours has {sorted(mine)}, the reference {sorted(reference)}")
    for key, tensor in reference.items():
        copy_tensor(mine[key], tensor, f"{name}.{key}")


def copy_torch_attention(ours, theirs: torch.nn.MultiheadAttention) -> None:
    """`theirs`' packed in_proj into ours' q/k/v projections, its out_proj into o_proj."""
    weights = theirs.in_proj_weight.chunk(3)
    biases = theirs.in_proj_bias.chunk(3) if theirs.in_proj_bias is not None else (None,) * 3
    for name, weight, bias in zip(("q_proj", "k_proj", "v_proj"), weights, biases):
        copy_linear(getattr(ours, name), weight, bias, name)
    copy_linear(ours.o_proj, theirs.out_proj.weight, theirs.out_proj.bias, "o_proj")


def copy_torch_layer(ours, theirs) -> None:
    """An `nn.TransformerEncoderLayer` or `nn.TransformerDecoderLayer` into an encoder or decoder block."""
    copy_torch_attention(ours.self_attn, theirs.self_attn)
    if hasattr(theirs, "multihead_attn"):
        copy_torch_attention(ours.cross_attn, theirs.multihead_attn)
    copy_module(ours.mlp.up_proj, theirs.linear1, "mlp.up_proj")
    copy_module(ours.mlp.down_proj, theirs.linear2, "mlp.down_proj")
    for name in ("norm1", "norm2", "norm3"):
        if hasattr(theirs, name):
            copy_module(getattr(ours, name), getattr(theirs, name), name)
