# SPDX-License-Identifier: Apache-2.0
"""Counter-based dropout (custom op recops::dropout): the keep mask is a hash of (seed, element index), so the
backward is the same op on the gradient and nothing is stored; torch's CPU dropout draws every element from
a sequential Mersenne twister (bernoulli_) and keeps a mask."""

from typing import Optional

import torch
from torch import Tensor

from .._runtime import core as _C
from .._runtime import num_threads
from .attention_ref import check_seed, keep_bits, row_key, seed_bits, seed_tensor

_OP = "dropout"
_M32 = 0xFFFFFFFF


def dropout_keep(numel: int, p: float, seed: int, device="cpu") -> Tensor:
    """Boolean keep mask of `numel` elements: the bits of cpp/nn/dropout.h, in torch integer ops (the reference,
    and the path on devices without a recops kernel)."""
    e = torch.arange(numel, device=device, dtype=torch.int64)
    return keep_bits(row_key(seed, 0xFFFFFFFF, 0, e >> 32, device), e & _M32, p)


@torch.library.custom_op("recops::dropout", mutates_args=())
def _dropout(x: Tensor, p: float, seed: Tensor) -> Tensor:
    if x.device.type != "cpu":
        keep = dropout_keep(x.numel(), p, seed_bits(seed), x.device).view(x.shape)
        scale = torch.tensor(1.0 / (1.0 - p), dtype=x.dtype, device=x.device)  # as the kernel: x * (1 / (1 - p))
        return torch.where(keep, x * scale, torch.zeros((), dtype=x.dtype, device=x.device))
    xc = x.detach().contiguous()
    out = torch.empty_like(xc)
    _C.dropout(xc, out, p, seed_bits(seed), num_threads=num_threads())
    return out


@_dropout.register_fake
def _(x, p, seed):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    ctx.p = inputs[1]
    ctx.save_for_backward(inputs[2])


def _backward(ctx, grad):
    (seed,) = ctx.saved_tensors
    return _dropout(grad, ctx.p, seed), None, None


_dropout.register_autograd(_backward, setup_context=_setup)


def dropout(x: Tensor, p: float = 0.5, training: bool = True, seed: Optional[int] = None) -> Tensor:
    """Dropout with a counter-based mask: each element kept with probability 1 - p (scaled by 1 / (1 - p)).

    Element e (row-major index) is kept iff hash(seed, e) >= floor(p * 2^32), the generator of the attention
    dropout (cpp/hstu/attention_dropout.h, cpp/nn/dropout.h), so the same seed gives the same mask on every thread
    count and instruction set; the backward regenerates it (no mask is saved). `seed=None` draws one from torch's
    generator (torch.manual_seed makes runs repeatable). float32/float64 run the CPU kernel; float16/bfloat16 are
    computed in float32; other devices use the same bits in torch integer ops (recops.ops.dropout.dropout_keep).
    Not training or p = 0: x itself."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{_OP}: x must be a floating tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ValueError(f"{_OP}: p must be in [0, 1), got {p!r}")
    check_seed(_OP, seed)
    if not training or p == 0:
        return x
    seed_t = seed_tensor(_OP, seed)
    if x.device.type == "cpu" and x.dtype not in (torch.float32, torch.float64):
        return _dropout(x.float(), float(p), seed_t).to(x.dtype)
    return _dropout(x, float(p), seed_t)
