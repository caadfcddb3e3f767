# SPDX-License-Identifier: Apache-2.0
"""Pure-PyTorch reference of jagged softmax attention: padded [B, H, N, N] scores with an explicit mask, written
from the definition in recops.ops.attention.jagged_attention (softmax over the allowed keys, attention dropout
with the kernels' counter-based mask). Differentiable in q, k and v."""

import math
from typing import Optional

import torch
from torch import Tensor

from . import jagged_ref
from .hstu_ref import hstu_mask

_M32 = 0xFFFFFFFF


def _mix(x: Tensor) -> Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding uint32 values (cpp/hstu/attention_dropout.h)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def dropout_keep(seed: int, lengths: Tensor, num_heads: int, n_pad: int, p: float) -> Tensor:
    """Boolean [B, H, n_pad, n_pad] keep mask of the kernels' attention dropout for `seed` (the same bits)."""
    seed &= (1 << 64) - 1
    dev = lengths.device
    b = torch.arange(lengths.numel(), device=dev, dtype=torch.int64)[:, None, None]
    h = torch.arange(num_heads, device=dev, dtype=torch.int64)[None, :, None]
    i = torch.arange(n_pad, device=dev, dtype=torch.int64)[None, None, :]
    x = _mix(torch.tensor((seed & _M32) ^ 0x5851F42D, dtype=torch.int64, device=dev))
    x = _mix(x ^ (seed >> 32))
    x = _mix(x ^ b)
    x = _mix(x ^ h)
    key = _mix(x ^ i)                                                        # [B, H, n]
    j = (torch.arange(n_pad, device=dev, dtype=torch.int64) * 0x9E3779B9) & _M32
    bits = _mix(key[..., None] ^ j)                                          # [B, H, n, n]
    return bits >= dropout_threshold(p)


def dropout_threshold(p: float) -> int:
    """floor(p * 2^32), clamped below 2^32 (cpp/hstu/attention_dropout.h)."""
    t = p * 4294967296.0
    return 0xFFFFFFFF if t >= 4294967295.0 else int(t)


def jagged_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, max_seq_len: int, *, causal: bool = True,
                     scale: Optional[float] = None, num_targets: Optional[Tensor] = None, contextual_len: int = 0,
                     max_attn_len: int = 0, dropout_p: float = 0.0, seed: Optional[int] = None) -> Tensor:
    """Reference implementation; slow. See recops.ops.jagged_attention (seed is required with dropout here)."""
    L, H, dqk = q.shape
    dv = v.shape[2]
    batch = offsets.numel() - 1
    lengths = (offsets[1:] - offsets[:-1]).long()
    n_pad = max(int(lengths.max()) if batch else 0, 1)
    scale = 1.0 / math.sqrt(dqk) if scale is None else scale

    def pad(x):
        flat = x.reshape(L, math.prod(x.shape[1:]))
        return jagged_ref.jagged_to_padded(flat, offsets.long(), n_pad).view(batch, n_pad, *x.shape[1:])

    s = scale * torch.einsum("bihd,bjhd->bhij", pad(q), pad(k))
    valid = hstu_mask(lengths, n_pad, num_targets, contextual_len, max_attn_len, causal)[:, None]
    s = s.masked_fill(~valid, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(s - m)
    denom = e.sum(-1, keepdim=True)
    p = e / torch.where(denom > 0, denom, torch.ones_like(denom))
    if dropout_p > 0:
        if seed is None:
            raise ValueError("attention_ref.jagged_attention: dropout needs an explicit seed")
        keep = dropout_keep(seed, lengths, H, n_pad, dropout_p)
        p = p * keep / (1.0 - dropout_p)
    out = torch.einsum("bhij,bjhd->bihd", p, pad(v))
    return jagged_ref.padded_to_jagged(out.reshape(batch, n_pad, H * dv), offsets.long(), L).reshape(L, H, dv)
