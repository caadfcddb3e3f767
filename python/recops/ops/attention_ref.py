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


def row_key(seed: int, b, h, i, device="cpu") -> Tensor:
    """dropout_row_key(seed, b, h, i) of cpp/hstu/attention_dropout.h on int64 tensors (b, h, i broadcast)."""
    seed &= (1 << 64) - 1
    x = _mix(torch.tensor((seed & _M32) ^ 0x5851F42D, dtype=torch.int64, device=device))
    x = _mix(x ^ (seed >> 32))
    return _mix(_mix(_mix(x ^ b) ^ h) ^ i)


def keep_bits(key: Tensor, j: Tensor, p: float) -> Tensor:
    """dropout_bits(key, j) >= dropout_threshold(p), on int64 tensors (key and j broadcast)."""
    return _mix(key ^ ((j * 0x9E3779B9) & _M32)) >= dropout_threshold(p)


def dropout_keep(seed: int, lengths: Tensor, num_heads: int, n_pad: int, p: float) -> Tensor:
    """Boolean [B, H, n_pad, n_pad] keep mask of the kernels' attention dropout for `seed` (the same bits)."""
    dev = lengths.device
    b = torch.arange(lengths.numel(), device=dev, dtype=torch.int64)[:, None, None]
    h = torch.arange(num_heads, device=dev, dtype=torch.int64)[None, :, None]
    i = torch.arange(n_pad, device=dev, dtype=torch.int64)[None, None, :]
    key = row_key(seed, b, h, i, dev)                                        # [B, H, n]
    return keep_bits(key[..., None], torch.arange(n_pad, device=dev, dtype=torch.int64), p)  # [B, H, n, n]


def check_seed(op: str, seed) -> None:
    """TypeError unless `seed` is an int or None."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"{op}: seed must be an int or None, got {type(seed).__name__}")


def seed_tensor(op: str, seed) -> Tensor:
    """The 0-d int64 seed tensor a dropout op takes: `seed` (any int, kept modulo 2^64) or, for None, a draw from
    torch's default generator (traced by torch.compile, repeatable under torch.manual_seed)."""
    check_seed(op, seed)
    if seed is None:
        return torch.randint(-(1 << 63), (1 << 63) - 1, (), dtype=torch.int64)
    return torch.tensor(((seed + (1 << 63)) & ((1 << 64) - 1)) - (1 << 63), dtype=torch.int64)


def seed_bits(seed: Optional[Tensor]) -> int:
    """The uint64 seed the kernels take from seed_tensor's tensor (0 for None)."""
    return 0 if seed is None else int(seed.item()) & ((1 << 64) - 1)


def dropout_threshold(p: float) -> int:
    """floor(p * 2^32), clamped below 2^32 (cpp/hstu/attention_dropout.h)."""
    t = p * 4294967296.0
    return 0xFFFFFFFF if t >= 4294967295.0 else int(t)


def jagged_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, max_seq_len: int, *, causal: bool = True,
                     scale: Optional[float] = None, num_targets: Optional[Tensor] = None, contextual_len: int = 0,
                     max_attn_len: int = 0, dropout_p: float = 0.0, seed: Optional[int] = None,
                     min_full_attn_seq_len: int = 0) -> Tensor:
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
    valid = hstu_mask(lengths, n_pad, num_targets, contextual_len, max_attn_len, causal, min_full_attn_seq_len)[:, None]
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
