"""Chapter 6's catalogue of realistic mistakes (see llmcourse/course/mistakes.py)."""
from llmcourse.course.mistakes import Mistake

MISTAKES = [
    # ex1: the online softmax
    Mistake("ex1-online", "the running sum not rescaled when the maximum grows",
            "running_sum = running_sum * torch.exp(running_max - safe_max) + ", "running_sum = running_sum + "),
    Mistake("ex1-online", "the maximum subtracted without a guard: a block of -inf gives NaN",
            "safe_max = new_max.masked_fill(torch.isneginf(new_max), 0.0)  # exp(-inf - 0) = 0, never NaN",
            "safe_max = new_max"),
    Mistake("ex1-online", "the last, shorter block dropped",
            "for start in range(0, wide.shape[-1], block_size):\n        block = wide",
            "for start in range(0, wide.shape[-1] - block_size + 1, block_size):\n        block = wide"),
    Mistake("ex1-online", "the maximum of each block alone, not the running maximum",
            "new_max = torch.maximum(running_max, block.amax(dim=-1))", "new_max = block.amax(dim=-1)"),
    Mistake("ex1-online", "the log of the sum returned without the maximum added back",
            "return (running_max + torch.log(running_sum)).to(x.dtype)", "return torch.log(running_sum).to(x.dtype)"),
    Mistake("ex1-online", "a row of -inf normalised to NaN in the softmax",
            "safe_lse = lse.masked_fill(torch.isneginf(lse), 0.0)[..., None]", "safe_lse = lse[..., None]"),
    # ex2: sliding window
    Mistake("ex2-sliding", "a window one key too wide (distance <= window)",
            "return (distance >= 0) & (distance < window)", "return (distance >= 0) & (distance <= window)"),
    Mistake("ex2-sliding", "the bidirectional window made causal",
            "return distance.abs() < window", "return (distance >= 0) & (distance < window)"),
    Mistake("ex2-sliding", "keys outside the sequence (the zero padding) not masked",
            "allowed = allowed & ((key_position >= 0) & (key_position < length))[:, None, :]  # (n, chunk, span)",
            "allowed = allowed[None]"),
    Mistake("ex2-sliding", "a window of window + 1 keys in the attention (offset > -window - 1)",
            "allowed = (offset > -window) & (offset <= after)", "allowed = (offset >= -window) & (offset <= after)"),
    Mistake("ex2-sliding", "scores not scaled by 1/sqrt(d)",
            "scores = (q_chunks * scale) @ k_chunks", "scores = q_chunks @ k_chunks"),
    Mistake("ex2-sliding", "the dense T x T scores masked, not chunks: the memory is O(T^2)",
            "    batch, heads, length, _ = q.shape\n"
            "    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale\n"
            "    chunk = min(window, length)",
            "    batch, heads, length, _ = q.shape\n"
            "    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale\n"
            "    dense = torch.softmax((q * scale) @ k.transpose(-1, -2) + torch.zeros(length, length, device=q.device)"
            ".masked_fill(~sliding_window_mask(length, window, is_causal, q.device), float('-inf')), dim=-1)\n"
            "    return dense.to(v.dtype) @ v\n    chunk = min(window, length)"),
    # ex3: block-sparse
    Mistake("ex3-block", "global blocks that see everything but are seen by nobody",
            "layout = ((i - j).abs() <= window_blocks) | (i < global_blocks) | (j < global_blocks)",
            "layout = ((i - j).abs() <= window_blocks) | (i < global_blocks)"),
    Mistake("ex3-block", "the local window one block short (|i - j| < window_blocks)",
            "layout = ((i - j).abs() <= window_blocks) |", "layout = ((i - j).abs() < window_blocks) |"),
    Mistake("ex3-block", "is_causal ignored in the layout",
            "return layout & (j <= i) if is_causal else layout", "return layout"),
    Mistake("ex3-block", "the block of a token counted with ceil division",
            "block_of = torch.arange(n, device=layout.device) // block_size",
            "block_of = (torch.arange(n, device=layout.device) + block_size - 1) // block_size"),
    Mistake("ex3-block", "the causal mask not applied inside the diagonal blocks",
            "        if is_causal:\n            scores = scores.masked_fill(keys[None, :] > positions[rows, None], "
            "float(\"-inf\"))\n",
            ""),
    Mistake("ex3-block", "a row that sees no key left as NaN",
            "weights = weights.nan_to_num(0.0).to(v.dtype)  # a row that sees no key attends to nothing",
            "weights = weights.to(v.dtype)"),
    Mistake("ex3-block", "the key blocks of the layout's column, not its row",
            "for block, kept in enumerate(layout.to(q.device)):",
            "for block, kept in enumerate(layout.to(q.device).T):"),
    # ex4: Linformer
    Mistake("ex4-linformer", "padded keys and values kept in the mixtures",
            "        k, v = k * keep, v * keep\n", "        k = k * keep\n"),
    Mistake("ex4-linformer", "the values mixed by E (proj_k) instead of F (proj_v)",
            "v_low = torch.einsum(\"bhsd,sk->bhkd\", v, proj_v)", "v_low = torch.einsum(\"bhsd,sk->bhkd\", v, proj_k)"),
    Mistake("ex4-linformer", "scores not scaled",
            "weights = torch.softmax((q * scale) @ k_low.transpose(-1, -2), dim=-1)  # (B, h, T, k)",
            "weights = torch.softmax(q @ k_low.transpose(-1, -2), dim=-1)  # (B, h, T, k)"),
    Mistake("ex4-linformer", "the projections not cut to the sequence's length",
            "out = linformer_attention(q, k, v, self.proj_k[:length], self.proj_v[:length], attention_mask)",
            "out = linformer_attention(q, k, v, self.proj_k[-length:], self.proj_v[-length:], attention_mask)"),
    Mistake("ex4-linformer", "the output projection forgotten",
            "return self.o_proj(merge_heads(out))", "return merge_heads(out)"),
    Mistake("ex4-linformer", "the projection's shape not checked",
            "        if proj.dim() != 2 or proj.shape[0] != n_keys:\n", "        if proj.dim() != 2:\n"),
    # ex5: FlashAttention in PyTorch
    Mistake("ex5-flash", "the accumulator not rescaled when the maximum grows",
            "acc = acc * rescale[..., None] + p @ v[..., cols, :].to(wide)",
            "acc = acc + p @ v[..., cols, :].to(wide)"),
    Mistake("ex5-flash", "lse without the running maximum",
            "lse[..., rows] = torch.where(seen, running_max + torch.log(running_sum), float(\"-inf\"))",
            "lse[..., rows] = torch.where(seen, torch.log(running_sum), float(\"-inf\"))"),
    Mistake("ex5-flash", "causal tiles skipped one tile too early",
            "        for j in range(0, last_visible_key(rows.stop, n_queries, n_keys, is_causal), block_k):\n"
            "            cols = slice(j, min(j + block_k, n_keys))\n            scores = q_tile",
            "        for j in range(0, last_visible_key(rows.start, n_queries, n_keys, is_causal), block_k):\n"
            "            cols = slice(j, min(j + block_k, n_keys))\n            scores = q_tile"),
    Mistake("ex5-flash", "the mask ignored in the forward",
            "            extra = tile_mask(mask, is_causal, shape, rows, cols, wide, q.device)\n"
            "            if extra is not "
            "None:\n                scores = scores + extra\n            new_max",
            "            extra = tile_mask(None, is_causal, shape, rows, cols, wide, q.device)\n"
            "            if extra is not "
            "None:\n                scores = scores + extra\n            new_max"),
    Mistake("ex5-flash", "the backward without D = rowsum(dO * O)",
            "ds = p * (do_tile @ v_tile.transpose(-1, -2) - delta[..., rows, None])",
            "ds = p * (do_tile @ v_tile.transpose(-1, -2))"),
    Mistake("ex5-flash", "dK without the scale",
            "dk[..., cols, :] += scale * (ds.transpose(-1, -2) @ q_tile)",
            "dk[..., cols, :] += ds.transpose(-1, -2) @ q_tile"),
    Mistake("ex5-flash", "dV overwritten by each query tile instead of accumulated",
            "dv[..., cols, :] += p.transpose(-1, -2) @ do_tile", "dv[..., cols, :] = p.transpose(-1, -2) @ do_tile"),
    Mistake("ex5-flash", "the autograd function returns the gradients in the wrong order",
            "        return dq, dk, dv, None, None, None, None, None",
            "        return dk, dq, dv, None, None, None, None, None"),
    Mistake("ex5-flash", "the backward reads the options of the default call, not those saved",
            "dq, dk, dv = flash_attention_backward(q, k, v, out, lse, grad_out, ctx.mask, *ctx.options)",
            "dq, dk, dv = flash_attention_backward(q, k, v, out, lse, grad_out)"),
    Mistake("ex5-flash", "the whole T x S score matrix computed at once (no tiles)",
            "    for i in range(0, n_queries, block_q):\n        rows = slice(i, min(i + block_q, n_queries))\n"
            "        q_tile = q[..., rows, :].to(wide) * scale",
            "    block_q = block_k = max(n_queries, n_keys)\n"
            "    for i in range(0, n_queries, block_q):\n        rows = slice(i, min(i + block_q, n_queries))\n"
            "        q_tile = q[..., rows, :].to(wide) * scale"),
    # ex6: the Triton kernel
    Mistake("ex6-kernel", "the accumulator not rescaled by alpha",
            "acc = acc * alpha[:, None] + tl.dot(", "acc = acc + tl.dot("),
    Mistake("ex6-kernel", "exp instead of exp2 on scores in base-2 units",
            "p = tl.exp2(scores - m_ref[:, None])", "p = tl.exp(scores - m_ref[:, None])"),
    Mistake("ex6-kernel", "the causal comparison aligned to the top-left corner (no S - T offset)",
            "visible = visible & (keys[None, :] <= query_rows[:, None] + causal_offset)",
            "visible = visible & (keys[None, :] <= query_rows[:, None])"),
    Mistake("ex6-kernel", "lse left in base-2 units",
            "lse = tl.where(seen, (m_i + tl.log2(l_safe)) / LOG2_E, float(\"-inf\"))",
            "lse = tl.where(seen, m_i + tl.log2(l_safe), float(\"-inf\"))"),
    Mistake("ex6-kernel", "the causal loop runs over every key tile (nothing skipped, future keys read)",
            "key_stop = tl.minimum(n_keys, first_query + BLOCK_M + causal_offset)  # tiles past this: skipped",
            "key_stop = n_keys"),
    Mistake("ex6-kernel", "the ragged last key tile not masked (keys past S read as zeros)",
            "visible = key_exists[None, :]", "visible = keys[None, :] >= 0"),
    Mistake("ex6-kernel", "the output not divided by the sum",
            "out = acc / l_safe[:, None]", "out = acc"),
]
