# SPDX-License-Identifier: Apache-2.0
"""Jagged tensor ops: packed variable-length sequences (values [L, *] + offsets [B+1]) <-> padded [B, N, *].

Offsets are int32 or int64 and must start at 0, never decrease and end at L; kernels check this before
touching memory (on CUDA on the device, with one flag read per call while `recops.checks_enabled()`).
"""

import functools
import math
from typing import Optional

import torch
from torch import Tensor

from .._runtime import core as _C
from .._runtime import Launch, check_same_device, num_threads

_MOVABLE_SIZES = (1, 2, 4, 8)


def _check_offsets_arg(op: str, offsets: Tensor, data: Optional[Tensor] = None, name: str = "values") -> None:
    check_same_device(op, **{name: data, "offsets": offsets})
    if offsets.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{op}: offsets must be int32 or int64, got {offsets.dtype}")
    if offsets.dim() != 1:
        raise ValueError(f"{op}: offsets must have 1 dimensions, got {offsets.dim()}")
    if offsets.shape[0] < 1:
        raise ValueError(f"{op}: offsets must have at least 1 element, got 0")


def _check_data_arg(op: str, name: str, t: Tensor, ndim: int) -> None:
    if t.dim() < ndim:
        raise ValueError(f"{op}: {name} must have at least {ndim} dimensions, got {t.dim()}")
    if t.element_size() not in _MOVABLE_SIZES:
        raise TypeError(f"{op}: {name} dtype must have 1, 2, 4 or 8 bytes per element, got {t.dtype}")


@functools.lru_cache(maxsize=256)
def _padding_bits(dtype: torch.dtype, value: float) -> int:
    """Bit pattern of `value` in `dtype`, as an unsigned int (the kernels only move bits)."""
    try:
        t = torch.tensor([value], dtype=dtype)
    except (RuntimeError, OverflowError) as e:
        raise ValueError(f"jagged_to_padded: padding_value {value!r} cannot be represented in {dtype}") from e
    if not (dtype.is_floating_point or dtype.is_complex) and t.item() != value:
        raise ValueError(f"jagged_to_padded: padding_value {value!r} cannot be represented in {dtype}")
    return int.from_bytes(t.view(torch.uint8).numpy().tobytes(), "little")


def _recheck(op: str, offsets: Tensor, total_len: int, max_len: int):
    """The CPU core's data checks on a host copy (max_len < 0: offsets only), for Launch.raise_errors."""
    return lambda: _C.check_jagged(offsets.cpu(), total_len, max_len, op)


def _padded_to_jagged_impl(op: str, padded: Tensor, offsets: Tensor, total_len: int, truncate: bool) -> Tensor:
    _check_data_arg(op, "padded", padded, 2)
    _check_offsets_arg(op, offsets, padded, "padded")
    if total_len < 0:
        raise ValueError(f"{op}: total_len must be >= 0, got {total_len}")
    batch, max_len = padded.shape[0], padded.shape[1]
    dim = math.prod(padded.shape[2:])
    out = padded.new_empty((total_len, *padded.shape[2:]))
    with Launch(padded, op, _recheck(op, offsets, total_len, -1 if truncate else max_len)) as launch:
        _C.padded_to_jagged(
            padded.detach().contiguous().view(batch, max_len, dim),
            offsets.detach().contiguous(),
            truncate,
            out.view(total_len, dim),
            num_threads=num_threads(),
            stream=launch.stream,
            error_flag=launch.flag,
        )
    launch.raise_errors()
    return out


# ---------------------------------------------------------------------------------------------------------
# jagged_to_padded


@torch.library.custom_op("recops::jagged_to_padded", mutates_args=())
def jagged_to_padded(values: Tensor, offsets: Tensor, max_len: int, padding_value: float = 0.0) -> Tensor:
    """Pad a jagged batch into a dense tensor.

    Args:
        values: [L, *] rows of all sequences back to back (any dtype of 1, 2, 4 or 8 bytes).
        offsets: [B+1] int32/int64; sequence b is values[offsets[b]:offsets[b+1]].
        max_len: N, the padded length. Sequences longer than N are truncated to their first N rows.
        padding_value: value written past each sequence's end (must be representable in values.dtype).

    Returns:
        [B, N, *] tensor of values.dtype on values.device.

    Differentiable w.r.t. values (rows dropped by truncation get zero gradient).
    """
    op = "jagged_to_padded"
    _check_data_arg(op, "values", values, 1)
    _check_offsets_arg(op, offsets, values)
    if max_len < 0:
        raise ValueError(f"{op}: max_len must be >= 0, got {max_len}")
    total_len = values.shape[0]
    batch = offsets.shape[0] - 1
    dim = math.prod(values.shape[1:])
    out = values.new_empty((batch, max_len, *values.shape[1:]))
    bits_value = _padding_bits(values.dtype, float(padding_value))
    with Launch(values, op, _recheck(op, offsets, total_len, -1)) as launch:
        _C.jagged_to_padded(
            values.detach().contiguous().view(total_len, dim),
            offsets.detach().contiguous(),
            max_len,
            bits_value,
            out.view(batch, max_len, dim),
            num_threads=num_threads(),
            stream=launch.stream,
            error_flag=launch.flag,
        )
    launch.raise_errors()
    return out


@jagged_to_padded.register_fake
def _(values, offsets, max_len, padding_value=0.0):
    _check_data_arg("jagged_to_padded", "values", values, 1)
    _check_offsets_arg("jagged_to_padded", offsets, values)
    return values.new_empty((offsets.shape[0] - 1, max_len, *values.shape[1:]))


# ---------------------------------------------------------------------------------------------------------
# padded -> jagged ops: jagged_to_padded_backward (truncating: also jagged_to_padded's inverse) and
# padded_to_jagged (every length must fit); they share the fake and the autograd registered below


@torch.library.custom_op("recops::jagged_to_padded_backward", mutates_args=())
def jagged_to_padded_backward(grad_padded: Tensor, offsets: Tensor, total_len: int) -> Tensor:
    """Gradient of jagged_to_padded w.r.t. values: [B, N, *] -> [L, *]; rows past N get zero."""
    return _padded_to_jagged_impl("jagged_to_padded_backward", grad_padded, offsets, total_len, True)


@torch.library.custom_op("recops::padded_to_jagged", mutates_args=())
def _padded_to_jagged(padded: Tensor, offsets: Tensor, total_len: int) -> Tensor:
    return _padded_to_jagged_impl("padded_to_jagged", padded, offsets, total_len, False)


# ---------------------------------------------------------------------------------------------------------
# autograd: each op is op(data, offsets, size, ...) whose gradient w.r.t. data is the opposite direction's
# op on the same offsets, sized by one dimension of data


def _register_inverse_autograd(op, size_dim: int, inverse) -> None:
    """op's gradient w.r.t. its first input x is inverse(grad, offsets, x.shape[size_dim]); none for the rest."""

    def setup_context(ctx, inputs, output):
        ctx.size = inputs[0].shape[size_dim]
        ctx.num_rest = len(inputs) - 1
        ctx.save_for_backward(inputs[1])

    def backward(ctx, grad):
        (offsets,) = ctx.saved_tensors
        return (inverse(grad, offsets, ctx.size), *(None,) * ctx.num_rest)

    op.register_autograd(backward, setup_context=setup_context)


def _register_padded_to_jagged(op, name: str) -> None:
    """Fake and autograd of a [B, N, *] -> [L, *] op: its gradient pads with zeros to N."""

    def fake(padded, offsets, total_len):
        _check_offsets_arg(name, offsets, padded, "padded")
        return padded.new_empty((total_len, *padded.shape[2:]))

    op.register_fake(fake)
    _register_inverse_autograd(op, 1, jagged_to_padded)


_register_inverse_autograd(jagged_to_padded, 0, jagged_to_padded_backward)
_register_padded_to_jagged(jagged_to_padded_backward, "jagged_to_padded_backward")
_register_padded_to_jagged(_padded_to_jagged, "padded_to_jagged")


def padded_to_jagged(padded: Tensor, offsets: Tensor, total_len: Optional[int] = None) -> Tensor:
    """Pack a padded batch back into jagged values (the op `recops::padded_to_jagged`).

    Args:
        padded: [B, N, *] dense batch.
        offsets: [B+1] int32/int64 offsets of the result; every length must be <= N (ValueError otherwise).
        total_len: L = offsets[-1]. Read from offsets when None (a device sync on CUDA; pass it explicitly
            under torch.compile).

    Returns:
        [L, *] tensor; row offsets[b] + t is padded[b, t]. Differentiable w.r.t. padded.
    """
    if total_len is None:
        _check_offsets_arg("padded_to_jagged", offsets)
        total_len = int(offsets[-1])
    return _padded_to_jagged(padded, offsets, total_len)


# ---------------------------------------------------------------------------------------------------------
# lengths <-> offsets (plain torch: a cumsum is already as fast as it gets)


def lengths_to_offsets(lengths: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """[B] non-negative integer lengths -> [B+1] offsets (0, cumsum). dtype defaults to lengths' (int64 if
    lengths is not int32/int64). Raises ValueError for a negative length (a device sync on CUDA)."""
    if lengths.dim() != 1:
        raise ValueError(f"lengths_to_offsets: lengths must have 1 dimensions, got {lengths.dim()}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths_to_offsets: lengths must be an integer tensor, got {lengths.dtype}")
    if dtype is None:
        dtype = lengths.dtype if lengths.dtype in (torch.int32, torch.int64) else torch.int64
    if lengths.numel() and bool((lengths < 0).any()):
        b = int(torch.nonzero(lengths < 0)[0, 0])
        raise ValueError(f"lengths_to_offsets: lengths must be >= 0, got lengths[{b}]={int(lengths[b])}")
    out = torch.zeros(lengths.shape[0] + 1, dtype=dtype, device=lengths.device)
    torch.cumsum(lengths, 0, dtype=dtype, out=out[1:])
    return out


def offsets_to_lengths(offsets: Tensor) -> Tensor:
    """[B+1] offsets -> [B] lengths (offsets[1:] - offsets[:-1]), same dtype."""
    _check_offsets_arg("offsets_to_lengths", offsets)
    return offsets[1:] - offsets[:-1]
