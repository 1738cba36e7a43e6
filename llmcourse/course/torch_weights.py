"""Copy the weights of PyTorch's own attention and Transformer layers into the course's modules.

`nn.MultiheadAttention` packs the query, key and value projections into one `in_proj_weight`
of shape (3 d, d); the course's modules keep them apart as `q_proj`, `k_proj`, `v_proj` (the
names of real checkpoints). Tests and grade cells use these maps to compare the two.
"""
from __future__ import annotations

import torch


def copy_torch_attention(ours, theirs: torch.nn.MultiheadAttention) -> None:
    """`theirs`' packed in_proj into ours' q/k/v projections, its out_proj into o_proj."""
    with torch.no_grad():
        for chunk, proj in zip(theirs.in_proj_weight.chunk(3), (ours.q_proj, ours.k_proj, ours.v_proj)):
            proj.weight.copy_(chunk)
        for chunk, proj in zip(theirs.in_proj_bias.chunk(3), (ours.q_proj, ours.k_proj, ours.v_proj)):
            proj.bias.copy_(chunk)
    ours.o_proj.load_state_dict(theirs.out_proj.state_dict())


def copy_torch_layer(ours, theirs) -> None:
    """An `nn.TransformerEncoderLayer` or `nn.TransformerDecoderLayer` into an encoder or decoder block."""
    copy_torch_attention(ours.self_attn, theirs.self_attn)
    if hasattr(theirs, "multihead_attn"):
        copy_torch_attention(ours.cross_attn, theirs.multihead_attn)
    ours.mlp.up_proj.load_state_dict(theirs.linear1.state_dict())
    ours.mlp.down_proj.load_state_dict(theirs.linear2.state_dict())
    for name in ("norm1", "norm2", "norm3"):
        if hasattr(theirs, name):
            getattr(ours, name).load_state_dict(getattr(theirs, name).state_dict())
