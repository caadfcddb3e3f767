# SPDX-License-Identifier: Apache-2.0
"""Pure-PyTorch references of the embedding ops (same names and signatures as recops.ops.embedding)."""

from typing import Optional

import torch
from torch import Tensor


def embedding_bag(weight: Tensor, indices: Tensor, offsets: Tensor, mode: str = "sum",
                  per_sample_weights: Optional[Tensor] = None) -> Tensor:
    """Reference implementation; slow. Gather rows, scale by per_sample_weights, reduce per bag in float32
    (float64 for float64 weights) with index_add / scatter_reduce; empty bags give zeros."""
    acc = torch.float64 if weight.dtype == torch.float64 else torch.float32
    batch = offsets.shape[0] - 1
    lengths = (offsets[1:] - offsets[:-1]).long()
    bag = torch.repeat_interleave(torch.arange(batch, device=weight.device), lengths)
    rows = weight.to(acc)[indices.long()]
    if per_sample_weights is not None:
        rows = rows * per_sample_weights.to(acc)[:, None]
    out = rows.new_zeros(batch, weight.shape[1])
    if mode == "max":
        out = out.fill_(-float("inf")).scatter_reduce(0, bag[:, None].expand_as(rows), rows, "amax")
        out = torch.where((lengths > 0)[:, None], out, torch.zeros_like(out))
    else:
        out = out.index_add(0, bag, rows)
        if mode == "mean":
            out = out / lengths.clamp(min=1).to(acc)[:, None]
    return out.to(weight.dtype)


def dequantize_int8_rowwise(packed: Tensor, dim: int) -> Tensor:
    """Reference implementation; slow. [V, D + 8] uint8 rows (D codes, float32 scale, float32 bias) ->
    [V, D] float32 values code * scale + bias."""
    sb = packed[:, dim:dim + 8].contiguous().view(torch.float32)
    return packed[:, :dim].float() * sb[:, :1] + sb[:, 1:2]
