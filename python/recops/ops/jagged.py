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
from .._runtime import Launch, check_same_device, eager, num_threads

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
# lengths <-> offsets (plain torch: a cumsum is already as fast as it gets). Their checks read data, so under
# torch.compile (and for tensor subclasses) they run as the ops recops::lengths_to_offsets and
# recops::offsets_to_lengths, whose bodies are the same eager code: fullgraph tracing needs no host read and bad
# input still raises the eager ValueError.

_OFFSET_DTYPES = (torch.int32, torch.int64)


def _first_true(mask: Tensor) -> int:
    return int(mask.nonzero()[0, 0])


def check_offsets_values(what: str, offsets: Tensor, total_len: Optional[int] = None) -> None:
    """ValueError "<what> must start at 0 / be non-decreasing / [-1] must equal len(values)=total_len" for bad
    1-D `offsets` (at least 1 element; total_len None: any end); `what` leads the message, e.g. "op: offsets".
    One host copy of three numbers (a device sync on CUDA)."""
    down = offsets[1:] < offsets[:-1]
    first, num_down, last = torch.stack([offsets[0].long(), down.sum(), offsets[-1].long()]).tolist()
    if first != 0:
        raise ValueError(f"{what} must start at 0, got offsets[0]={first}")
    if num_down:
        b = _first_true(down)
        raise ValueError(f"{what} must be non-decreasing, got offsets[{b}]={int(offsets[b])} > "
                         f"offsets[{b + 1}]={int(offsets[b + 1])}")
    if total_len is not None and last != total_len:
        raise ValueError(f"{what}[-1] must equal len(values)={total_len}, got {last}")


def _lengths_to_offsets_impl(lengths: Tensor, dtype: torch.dtype) -> Tensor:
    op = "lengths_to_offsets"
    out = torch.zeros(lengths.shape[0] + 1, dtype=dtype, device=lengths.device)
    # int64 running sums: with lengths >= 0 the first sum to wrap is negative, so no overflow goes unseen
    sums = out[1:] if dtype == torch.int64 else lengths.new_empty(lengths.shape[0], dtype=torch.int64)
    torch.cumsum(lengths, 0, dtype=torch.int64, out=sums)
    limit = torch.iinfo(dtype).max
    negative, too_big = lengths < 0, (sums < 0) | (sums > limit)
    any_negative, any_too_big = torch.stack([negative.any(), too_big.any()]).tolist()
    if any_negative:
        b = _first_true(negative)
        raise ValueError(f"{op}: lengths must be >= 0, got lengths[{b}]={int(lengths[b])}")
    if any_too_big:
        b = _first_true(too_big)
        total = (int(sums[b - 1]) if b else 0) + int(lengths[b])  # exact: sums[b - 1] did not wrap
        raise ValueError(f"{op}: lengths must sum to at most {limit} (the largest {dtype} offset), got "
                         f"sum(lengths[:{b + 1}])={total}")
    if dtype != torch.int64:
        out[1:] = sums
    return out


@torch.library.custom_op("recops::lengths_to_offsets", mutates_args=())
def _lengths_to_offsets(lengths: Tensor, dtype: torch.dtype) -> Tensor:
    return _lengths_to_offsets_impl(lengths, dtype)


@_lengths_to_offsets.register_fake
def _(lengths, dtype):
    return lengths.new_empty(lengths.shape[0] + 1, dtype=dtype)


def lengths_to_offsets(lengths: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """[B] non-negative integer lengths -> [B+1] offsets (0, cumsum).

    Args:
        lengths: [B] integer tensor (not bool), every entry >= 0.
        dtype: int32 or int64 offsets; defaults to lengths' dtype (int64 if lengths is not int32/int64).

    Returns:
        [B+1] offsets of `dtype` on lengths' device. ValueError for a negative length or when a running sum
        does not fit `dtype` (never a wrapped offset); one device sync on CUDA. Works under
        torch.compile(fullgraph=True), with the same checks.
    """
    op = "lengths_to_offsets"
    if lengths.dim() != 1:
        raise ValueError(f"{op}: lengths must have 1 dimensions, got {lengths.dim()}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"{op}: lengths must be an integer tensor, got {lengths.dtype}")
    if dtype is None:
        dtype = lengths.dtype if lengths.dtype in _OFFSET_DTYPES else torch.int64
    if dtype not in _OFFSET_DTYPES:
        raise TypeError(f"{op}: dtype must be torch.int32 or torch.int64, got {dtype}")
    if eager(lengths):
        return _lengths_to_offsets_impl(lengths, dtype)
    return _lengths_to_offsets(lengths, dtype)


def _offsets_to_lengths_impl(offsets: Tensor) -> Tensor:
    check_offsets_values("offsets_to_lengths: offsets", offsets)
    return offsets[1:] - offsets[:-1]


@torch.library.custom_op("recops::offsets_to_lengths", mutates_args=())
def _offsets_to_lengths(offsets: Tensor) -> Tensor:
    return _offsets_to_lengths_impl(offsets)


@_offsets_to_lengths.register_fake
def _(offsets):
    return offsets.new_empty(offsets.shape[0] - 1)


def offsets_to_lengths(offsets: Tensor) -> Tensor:
    """[B+1] offsets -> [B] lengths (offsets[1:] - offsets[:-1]), same dtype.

    offsets: 1-D int32/int64 (TypeError otherwise) with at least 1 element, starting at 0 and non-decreasing
    (ValueError otherwise; one device sync on CUDA). Works under torch.compile(fullgraph=True), with the same
    checks."""
    _check_offsets_arg("offsets_to_lengths", offsets)
    if eager(offsets):
        return _offsets_to_lengths_impl(offsets)
    return _offsets_to_lengths(offsets)
