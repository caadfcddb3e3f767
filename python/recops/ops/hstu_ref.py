# SPDX-License-Identifier: Apache-2.0
"""Pure-PyTorch reference of HSTU attention: padded [B, N, N] scores, written from the formulas in
recops.ops.hstu.hstu_attention. Differentiable in q, k, v, pos_bias and time_bias."""

import math
from typing import Optional, Union

import torch
from torch import Tensor

from . import jagged_ref


def hstu_mask(lengths: Tensor, n_pad: int, num_targets: Optional[Tensor] = None, contextual_len: int = 0,
              max_attn_len: int = 0, causal: bool = True, min_full_attn_seq_len: int = 0) -> Tensor:
    """Boolean [B, n_pad, n_pad] mask (query row i, key row j) of the HSTU mask rule (causal, or the
    bidirectional rule of recops.ops.hstu_attention); False outside lengths."""
    lengths = lengths.long()
    idx = torch.arange(n_pad, device=lengths.device)
    c = contextual_len
    m = (lengths - c + 1 if c > 0 else lengths)
    if num_targets is not None:
        m = m - num_targets.long()
    p = idx[None, :] if c == 0 else (idx[None, :] - c + 1).clamp(min=0)
    p = torch.minimum(p.expand(lengths.numel(), n_pad), m[:, None])   # [B, n]
    d = p[:, :, None] - p[:, None, :]
    near = d.abs() <= max_attn_len  # inside the window (causal: d > 0 is required as well)
    if min_full_attn_seq_len > 0:  # semi-local: rows with p(i) >= m - F ignore the window
        near = near | (p >= (m - min_full_attn_seq_len)[:, None])[:, :, None]
    if causal:
        valid = (d > 0) if max_attn_len == 0 else ((d > 0) & near)
    else:
        valid = (p[:, None, :] < m[:, None, None]).expand_as(d)
        valid = valid if max_attn_len == 0 else (valid & near)
    valid = valid | torch.eye(n_pad, dtype=torch.bool, device=lengths.device)[None]
    if c > 0:
        valid = valid | ((p[:, :, None] == 0) & (p[:, None, :] < m[:, None, None]))
    inside = idx[None, :] < lengths[:, None]
    return valid & inside[:, :, None] & inside[:, None, :]


def time_buckets(timestamps_padded: Tensor, lengths: Tensor, num_buckets: int, base: float) -> Tensor:
    """[B, n, n] buckets clamp(floor(ln(max(|t'_i - t_j|, 1)) / base), 0, num_buckets - 1), t'_i = t_{i+1}
    (t_{n-1} for the last row), computed in float64."""
    n_pad = timestamps_padded.shape[1]
    nxt = torch.minimum(torch.arange(n_pad, device=lengths.device)[None, :] + 1, (lengths[:, None] - 1).clamp(min=0))
    tq = torch.gather(timestamps_padded, 1, nxt)
    diff = (tq[:, :, None].double() - timestamps_padded[:, None, :].double()).abs().clamp(min=1.0)
    return torch.floor(torch.log(diff) / base).clamp(0, num_buckets - 1).long()


def hstu_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, max_seq_len: int, *, alpha: float = 1.0,
                   attn_scale: Union[None, float, Tensor] = None, num_targets: Optional[Tensor] = None,
                   contextual_len: int = 0, max_attn_len: int = 0, pos_bias: Optional[Tensor] = None,
                   timestamps: Optional[Tensor] = None, time_bias: Optional[Tensor] = None,
                   time_bucket_base: float = 0.301, causal: bool = True, min_full_attn_seq_len: int = 0) -> Tensor:
    """Reference implementation; slow. See recops.ops.hstu_attention."""
    L, H, dqk = q.shape
    dv = v.shape[2]
    batch = offsets.numel() - 1
    lengths = (offsets[1:] - offsets[:-1]).long()
    n_pad = max(int(lengths.max()) if batch else 0, 1)

    def pad(x):
        flat = x.reshape(L, math.prod(x.shape[1:]))
        return jagged_ref.jagged_to_padded(flat, offsets, n_pad).view(batch, n_pad, *x.shape[1:])

    qp, kp, vp = pad(q), pad(k), pad(v)
    s = alpha * torch.einsum("bihd,bjhd->bhij", qp, kp)
    idx = torch.arange(n_pad, device=q.device)
    if pos_bias is not None:
        s = s + pos_bias[(max_seq_len - 1) + idx[None, :] - idx[:, None]][None, None]
    if time_bias is not None:
        buckets = time_buckets(pad(timestamps), lengths, time_bias.numel(), time_bucket_base)
        s = s + time_bias[buckets][:, None]
    valid = hstu_mask(lengths, n_pad, num_targets, contextual_len, max_attn_len, causal, min_full_attn_seq_len)
    if attn_scale is None:
        scale = torch.full((batch, n_pad), 1.0 / max_seq_len, dtype=q.dtype, device=q.device)
    elif isinstance(attn_scale, Tensor):
        scale = pad(attn_scale)
    else:
        scale = torch.full((batch, n_pad), float(attn_scale), dtype=q.dtype, device=q.device)
    p = torch.nn.functional.silu(s) * valid[:, None] * scale[:, None, :, None]
    out = torch.einsum("bhij,bjhd->bihd", p, vp)
    return jagged_ref.padded_to_jagged(out.reshape(batch, n_pad, H * dv), offsets, L).reshape(L, H, dv)
