# SPDX-License-Identifier: Apache-2.0
"""Pure-PyTorch references of the jagged ops: same names and signatures, plain differentiable torch."""

from typing import Optional

import torch
from torch import Tensor


def _positions(offsets: Tensor, total_len: int):
    """(sequence id, position within the sequence) of each of the L rows."""
    offsets = offsets.long()
    lengths = offsets[1:] - offsets[:-1]
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device), lengths,
                                  output_size=total_len)
    pos = torch.arange(total_len, device=offsets.device) - offsets[:-1][seq]
    return seq, pos


def jagged_to_padded(values: Tensor, offsets: Tensor, max_len: int, padding_value: float = 0.0) -> Tensor:
    """Reference implementation; slow. See recops.ops.jagged_to_padded."""
    batch = offsets.numel() - 1
    seq, pos = _positions(offsets, values.shape[0])
    keep = pos < max_len
    out = values.new_full((batch * max_len, *values.shape[1:]), padding_value)
    out = out.index_put((seq[keep] * max_len + pos[keep],), values[keep])
    return out.view(batch, max_len, *values.shape[1:])


def jagged_to_padded_backward(grad_padded: Tensor, offsets: Tensor, total_len: int) -> Tensor:
    """Reference implementation; slow. See recops.ops.jagged_to_padded_backward."""
    batch, max_len = grad_padded.shape[0], grad_padded.shape[1]
    seq, pos = _positions(offsets, total_len)
    keep = pos < max_len
    flat = grad_padded.reshape(batch * max_len, *grad_padded.shape[2:])
    out = grad_padded.new_zeros((total_len, *grad_padded.shape[2:]))
    return out.index_put((keep.nonzero().squeeze(1),), flat[(seq * max_len + pos)[keep]])


def padded_to_jagged(padded: Tensor, offsets: Tensor, total_len: Optional[int] = None) -> Tensor:
    """Reference implementation; slow. See recops.ops.padded_to_jagged."""
    if total_len is None:
        total_len = int(offsets[-1])
    batch, max_len = padded.shape[0], padded.shape[1]
    seq, pos = _positions(offsets, total_len)
    if total_len and int(pos.max()) >= max_len:
        raise ValueError(f"padded_to_jagged: sequence lengths must be <= padded.shape[1]={max_len}")
    flat = padded.reshape(batch * max_len, *padded.shape[2:])
    return flat[seq * max_len + pos]


def lengths_to_offsets(lengths: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """Reference implementation; slow. See recops.ops.lengths_to_offsets."""
    dtype = dtype or (lengths.dtype if lengths.dtype in (torch.int32, torch.int64) else torch.int64)
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(dtype)


def offsets_to_lengths(offsets: Tensor) -> Tensor:
    """Reference implementation; slow. See recops.ops.offsets_to_lengths."""
    return torch.diff(offsets)

