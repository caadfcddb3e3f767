# SPDX-License-Identifier: Apache-2.0
"""Embedding bags: table-batched pooled lookups (FBGEMM TBE style) and the backward fused with an optimizer.

Layout (cpp/embedding/embedding_bag.h): the tables of one storage dtype live in one flat buffer; `meta` [F, 7]
int64 describes the table each of the F features reads (element offset, global row offset, rows, dim, row
stride, pooling, output column). Input is key-major jagged: bag f * B + b owns indices[offsets[f*B+b],
offsets[f*B+b+1]). One call serves every feature of every table.

Training with a fused optimizer: embedding_bags_fused_lookup is embedding_bags whose backward is
embedding_bags_fused_update (weights and optimizer state change in place; no gradient is formed).

Storage: float32, float64 (cpu), float16, bfloat16 (accumulated in float32) and uint8 int8-rowwise rows
(D codes + float32 scale and bias, inference only, float32 output). Per-sample weights and their gradient are
float32 (float64 for float64 storage).
"""

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._runtime import core as _C
from .. import _C as _ext
from .._runtime import Launch, check_same_device, eager, num_threads

# The core's codes, by name (cpp/embedding/embedding_params.h, exported by the extension).
POOLING = dict(_ext.EMBEDDING_POOLING)
OPTIMIZERS = dict(_ext.EMBEDDING_OPTIMIZERS)
META_COLUMNS = dict(_ext.EMBEDDING_META_COLUMNS)
META_COLS = int(_ext.EMBEDDING_META_NUM_COLUMNS)


def meta_row(**columns: int) -> list:
    """One row of meta [F, META_COLS] from its columns by name (weight_offset, row_offset, num_rows, dim,
    row_stride, pooling, out_column)."""
    if set(columns) != set(META_COLUMNS):
        raise ValueError(f"meta_row: needs exactly the columns {sorted(META_COLUMNS)}, got {sorted(columns)}")
    row = [0] * META_COLS
    for name, value in columns.items():
        row[META_COLUMNS[name]] = int(value)
    return row
_FLOAT_STORAGE = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def acc_dtype(storage: torch.dtype) -> torch.dtype:
    """Accumulation / per-sample-weight dtype of a storage dtype."""
    return torch.float64 if storage == torch.float64 else torch.float32


def out_dtype(storage: torch.dtype) -> torch.dtype:
    return torch.float32 if storage == torch.uint8 else storage


def _check_weights(op: str, weights: Tensor) -> None:
    if weights.dtype not in _FLOAT_STORAGE + (torch.uint8,):
        raise TypeError(f"{op}: weight must be float32, float64, float16, bfloat16 or uint8 (int8 rowwise), "
                        f"got {weights.dtype}")


def _recheck(op: str, meta: Tensor, indices: Tensor, offsets: Tensor, batch: int, feature_names: str):
    """The core's data checks on host copies (_C.check_embedding_bags), for Launch.raise_errors after a CUDA
    kernel flagged bad offsets or an out-of-range index: the CPU path's ValueError, by construction."""
    return lambda: _C.check_embedding_bags(meta.cpu().flatten(), indices.cpu(), offsets.cpu(), batch,
                                           _names(feature_names), op)


_META_CHECKED: dict = {}


def _check_meta_on_host(op: str, weights: Tensor, meta: Tensor, total_dim: int, has_psw: bool,
                        state_rows: int = -1, state_elems: int = -1) -> bool:
    """CUDA calls: the core's meta checks (_C.check_embedding_meta: bounds of every table, output column and
    optimizer state, overflow-checked) on a host copy, which the CPU core runs on every call. Cached per meta
    buffer version and sizes, so a collection's meta is copied once, not every step. Returns whether some output
    column is written by no feature (out is then allocated zeroed)."""
    key = (meta.data_ptr(), meta._version, str(meta.device), weights.numel(), weights.dtype, total_dim, has_psw,
           state_rows, state_elems)
    gaps = _META_CHECKED.get(key)
    if gaps is None:
        check_same_device(op, weight=weights, meta=meta)
        if meta.dtype != torch.int64 or meta.dim() != 2 or meta.shape[1] != META_COLS:
            raise ValueError(f"{op}: meta must be int64 [F, {META_COLS}], got {meta.dtype} {list(meta.shape)}")
        gaps = _C.check_embedding_meta(meta.cpu().flatten(), weights.numel(), weights.dtype == torch.uint8,
                                       total_dim, has_psw, state_rows, state_elems, op)
        if len(_META_CHECKED) > 1024:
            _META_CHECKED.clear()
        _META_CHECKED[key] = gaps
    return gaps


def _state_sizes(optimizer: int, state0: Optional[Tensor]) -> Tuple[int, int]:
    """(state_rows, state_elems) the core checks meta against: rowwise Adagrad keeps one float per row, Adagrad
    and Adam one per element."""
    n = -1 if state0 is None else state0.numel()
    if optimizer == OPTIMIZERS["rowwise_adagrad"]:
        return n, -1
    if optimizer in (OPTIMIZERS["adagrad"], OPTIMIZERS["adam"]):
        return -1, n
    return -1, -1


def _check_devices(op: str, weights: Tensor, meta: Tensor, indices: Tensor, offsets: Tensor,
                   per_sample_weights: Optional[Tensor]) -> None:
    check_same_device(op, weight=weights, meta=meta, indices=indices, offsets=offsets,
                      per_sample_weights=per_sample_weights)


def _names(feature_names: str) -> Optional[list]:
    return feature_names.split("\n") if feature_names else None


# ---------------------------------------------------------------------------------------------------------
# forward


def _alloc_forward(weights: Tensor, batch: int, total_dim: int, need_argmax: bool) -> Tuple[Tensor, Tensor]:
    out = weights.new_empty(batch, total_dim, dtype=out_dtype(weights.dtype))
    argmax = weights.new_empty((batch, total_dim) if need_argmax else (0,), dtype=torch.int64)
    return out, argmax


@torch.library.custom_op("recops::embedding_bags", mutates_args=())
def embedding_bags(weights: Tensor, meta: Tensor, indices: Tensor, offsets: Tensor,
                   per_sample_weights: Optional[Tensor], batch: int, total_dim: int, max_dim: int,
                   need_argmax: bool, feature_names: str) -> Tuple[Tensor, Tensor]:
    """Pooled lookups of F features into out [B, total_dim] (+ argmax [B, total_dim] int64 of max features when
    need_argmax, else an empty tensor). feature_names: newline-separated names for error messages, or ""."""
    return embedding_bags_impl(weights, meta, indices, offsets, per_sample_weights, batch, total_dim, max_dim,
                               need_argmax, feature_names)


def embedding_bags_impl(weights: Tensor, meta: Tensor, indices: Tensor, offsets: Tensor,
                        per_sample_weights: Optional[Tensor], batch: int, total_dim: int, max_dim: int,
                        need_argmax: bool, feature_names: str) -> Tuple[Tensor, Tensor]:
    """The body of the embedding_bags op: no autograd, no dispatch (eager callers without autograd use it)."""
    op = "EmbeddingBagCollection" if feature_names else "embedding_bag"
    _check_weights(op, weights)
    _check_devices(op, weights, meta, indices, offsets, per_sample_weights)
    out, argmax = _alloc_forward(weights, batch, total_dim, need_argmax)
    if weights.is_cuda and _check_meta_on_host(op, weights, meta, total_dim, per_sample_weights is not None):
        out.zero_()
        argmax.fill_(-1)
    with Launch(weights, op, _recheck(op, meta, indices, offsets, batch, feature_names)) as launch:
        _C.embedding_bags_forward(weights.detach(), meta, indices, offsets, batch,
                                  per_sample_weights=None if per_sample_weights is None else per_sample_weights.detach(),
                                  out=out, total_dim=total_dim, argmax=argmax if need_argmax else None,
                                  max_dim=max_dim, num_threads=num_threads(),
                                  feature_names=_names(feature_names), op=op, stream=launch.stream,
                                  error_flag=launch.flag)
    launch.raise_errors()
    return out, argmax


@embedding_bags.register_fake
def _(weights, meta, indices, offsets, per_sample_weights, batch, total_dim, max_dim, need_argmax, feature_names):
    _check_devices("EmbeddingBagCollection" if feature_names else "embedding_bag", weights, meta, indices, offsets,
                   per_sample_weights)
    return _alloc_forward(weights, batch, total_dim, need_argmax)


# ---------------------------------------------------------------------------------------------------------
# dense backward (autograd of embedding_bags) and the fused optimizer update


@torch.library.custom_op("recops::embedding_bags_backward", mutates_args=())
def embedding_bags_backward(grad_out: Tensor, weights: Tensor, meta: Tensor, indices: Tensor, offsets: Tensor,
                            per_sample_weights: Optional[Tensor], argmax: Tensor, batch: int, total_dim: int,
                            max_dim: int, weights_grad: bool, psw_grad: bool) -> Tuple[Tensor, Tensor]:
    """Dense gradient of embedding_bags w.r.t. weights (layout of weights; zeros when not weights_grad) and
    per_sample_weights ([L], empty when not psw_grad)."""
    _check_devices("embedding_bags_backward", weights, meta, indices, offsets, per_sample_weights)
    check_same_device("embedding_bags_backward", weight=weights, grad_out=grad_out, argmax=argmax)
    gw = torch.zeros_like(weights) if weights_grad else weights.new_empty(0)
    gp = (torch.empty(indices.shape[0], dtype=acc_dtype(weights.dtype), device=weights.device) if psw_grad
          else weights.new_empty(0, dtype=acc_dtype(weights.dtype)))
    if indices.shape[0]:
        if weights.is_cuda:
            _check_meta_on_host("embedding_bag", weights, meta, total_dim, per_sample_weights is not None)
        with Launch(weights) as launch:
            _C.embedding_bags_backward(weights.detach(), meta, indices, offsets, batch,
                                       per_sample_weights=None if per_sample_weights is None
                                       else per_sample_weights.detach(),
                                       argmax=argmax if argmax.numel() else None,
                                       grad_out=grad_out.contiguous(), total_dim=total_dim, optimizer=0,
                                       grad_weights=gw if weights_grad else torch.zeros_like(weights),
                                       grad_per_sample_weights=gp if psw_grad else None, max_dim=max_dim,
                                       num_threads=num_threads(), stream=launch.stream, error_flag=launch.flag)
    elif psw_grad:
        gp.zero_()
    return gw, gp


@embedding_bags_backward.register_fake
def _(grad_out, weights, meta, indices, offsets, per_sample_weights, argmax, batch, total_dim, max_dim,
      weights_grad, psw_grad):
    _check_devices("embedding_bags_backward", weights, meta, indices, offsets, per_sample_weights)
    check_same_device("embedding_bags_backward", weight=weights, grad_out=grad_out, argmax=argmax)
    gw = torch.empty_like(weights) if weights_grad else weights.new_empty(0)
    gp = weights.new_empty(indices.shape[0] if psw_grad else 0, dtype=acc_dtype(weights.dtype))
    return gw, gp


def _setup(ctx, inputs, output):
    weights, meta, indices, offsets, psw, batch, total_dim, max_dim, need_argmax, _ = inputs
    ctx.sizes = (batch, total_dim, max_dim)
    ctx.save_for_backward(weights, meta, indices, offsets, psw, output[1])


def _backward(ctx, grad_out, _grad_argmax):
    weights, meta, indices, offsets, psw, argmax = ctx.saved_tensors
    need_w = ctx.needs_input_grad[0]
    need_p = psw is not None and ctx.needs_input_grad[4]
    if not (need_w or need_p):
        return None, None, None, None, None, None, None, None, None, None
    gw, gp = embedding_bags_backward(grad_out, weights, meta, indices, offsets, psw, argmax, *ctx.sizes, need_w,
                                     need_p)
    return (gw if need_w else None), None, None, None, (gp if need_p else None), None, None, None, None, None


embedding_bags.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("recops::embedding_bags_fused_update", mutates_args=("weights", "state0", "state1"))
def embedding_bags_fused_update(grad_out: Tensor, weights: Tensor, meta: Tensor, indices: Tensor, offsets: Tensor,
                                per_sample_weights: Optional[Tensor], argmax: Tensor, batch: int, total_dim: int,
                                max_dim: int, optimizer: int, lr: float, eps: float, beta1: float, beta2: float,
                                step_size: float, stochastic_rounding: bool, seed: int, state0: Tensor,
                                state1: Tensor, step: Optional[Tensor] = None) -> None:
    """Backward of embedding_bags fused with an optimizer (OPTIMIZERS code >= 1): each unique row's gradient is
    summed (deterministically on CPU) and weights and state0/state1 (float32; empty when unused) are updated in
    place. See cpp/embedding/embedding_bag.h for the update rules.

    step: optional 1-based step as a one-element integer tensor (a CPU int64 0-d tensor: read without a sync).
    When given, step_size and seed are replaced by fused_step_params(optimizer, lr, beta1, beta2, step, seed),
    so `seed` is then the run's seed; a compiled graph passes its step counter this way instead of
    specialising on a Python number."""
    embedding_bags_fused_update_impl(grad_out, weights, meta, indices, offsets, per_sample_weights, argmax, batch,
                                     total_dim, max_dim, optimizer, lr, eps, beta1, beta2, step_size,
                                     stochastic_rounding, seed, state0, state1, step)


def _check_optimizer(op: str, optimizer: int) -> None:
    if optimizer < 1 or optimizer > 4:
        raise ValueError(f"{op}: optimizer must be in [1, 4], got {optimizer}")


def _check_update_devices(grad_out, weights, meta, indices, offsets, per_sample_weights, argmax, state0,
                          state1) -> None:
    op = "embedding_bags_fused_update"
    _check_devices(op, weights, meta, indices, offsets, per_sample_weights)
    check_same_device(op, weight=weights, grad_out=grad_out, argmax=argmax, state0=state0, state1=state1)


def _step_value(op: str, step: Tensor) -> int:
    """The value of a step tensor (one integer element)."""
    if step.numel() != 1:
        raise ValueError(f"{op}: step must have one element, got shape {tuple(step.shape)}")
    if step.is_floating_point() or step.is_complex() or step.dtype == torch.bool:
        raise TypeError(f"{op}: step must be an integer tensor, got {step.dtype}")
    return int(step)


def embedding_bags_fused_update_impl(grad_out: Tensor, weights: Tensor, meta: Tensor, indices: Tensor,
                                     offsets: Tensor, per_sample_weights: Optional[Tensor], argmax: Tensor,
                                     batch: int, total_dim: int, max_dim: int, optimizer: int, lr: float,
                                     eps: float, beta1: float, beta2: float, step_size: float,
                                     stochastic_rounding: bool, seed: int, state0: Tensor, state1: Tensor,
                                     step: Optional[Tensor] = None) -> None:
    """The body of the embedding_bags_fused_update op (direct eager calls)."""
    op = "embedding_bags_fused_update"
    _check_optimizer(op, optimizer)
    _check_update_devices(grad_out, weights, meta, indices, offsets, per_sample_weights, argmax, state0, state1)
    if step is not None:
        step_size, seed = fused_step_params(optimizer, lr, beta1, beta2, _step_value(op, step), seed)
    if weights.is_cuda:
        _check_meta_on_host("EmbeddingBagCollection", weights, meta, total_dim, per_sample_weights is not None,
                            *_state_sizes(optimizer, state0))
    with Launch(weights) as launch:
        _C.embedding_bags_backward(weights, meta, indices, offsets, batch, per_sample_weights=per_sample_weights,
                                   argmax=argmax if argmax.numel() else None, grad_out=grad_out.contiguous(),
                                   total_dim=total_dim, optimizer=optimizer, lr=lr, eps=eps, beta1=beta1,
                                   beta2=beta2, step_size=step_size, stochastic_rounding=stochastic_rounding,
                                   seed=seed, state0=state0 if state0.numel() else None,
                                   state1=state1 if state1.numel() else None, max_dim=max_dim,
                                   num_threads=num_threads(), op="EmbeddingBagCollection", stream=launch.stream,
                                   error_flag=launch.flag)


@embedding_bags_fused_update.register_fake
def _(grad_out, weights, meta, indices, offsets, per_sample_weights, argmax, batch, total_dim, max_dim, optimizer,
      lr, eps, beta1, beta2, step_size, stochastic_rounding, seed, state0, state1, step=None):
    _check_update_devices(grad_out, weights, meta, indices, offsets, per_sample_weights, argmax, state0, state1)
    return None


# ---------------------------------------------------------------------------------------------------------
# training lookup: forward = embedding_bags, backward = embedding_bags_fused_update


def fused_step_params(optimizer: int, lr: float, beta1: float, beta2: float, step: int, seed: int) -> Tuple[float, int]:
    """(step_size, seed) of embedding_bags_fused_update at 1-based `step`: Adam's bias-corrected step size
    lr * sqrt(1 - beta2^step) / (1 - beta1^step) (0 for the other optimizers) and the stochastic-rounding seed of
    that step, drawn from the run's `seed`. ValueError for step < 1."""
    if step < 1:
        raise ValueError(f"embedding_bags_fused_update: step must be >= 1 (1-based), got {step}")
    step_size = 0.0
    if optimizer == OPTIMIZERS["adam"]:
        step_size = lr * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
    return step_size, (seed * 1_000_003 + step) & ((1 << 63) - 1)


@torch.library.custom_op("recops::embedding_bags_fused_lookup", mutates_args=())
def embedding_bags_fused_lookup(anchor: Tensor, weights: Tensor, meta: Tensor, indices: Tensor, offsets: Tensor,
                                per_sample_weights: Optional[Tensor], batch: int, total_dim: int, max_dim: int,
                                need_argmax: bool, feature_names: str, state0: Tensor, state1: Tensor,
                                optimizer: int, lr: float, eps: float, beta1: float, beta2: float, step: int,
                                stochastic_rounding: bool, seed: int,
                                step_tensor: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Training lookup with the optimizer fused into its backward (FBGEMM TBE style).

    Forward: embedding_bags (out [B, total_dim], argmax when need_argmax, i.e. when a feature max-pools). Its
    registered backward runs embedding_bags_fused_update with optimizer (OPTIMIZERS code >= 1), lr, eps, beta1,
    beta2 and the step_size / seed that fused_step_params gives for the 1-based `step`: weights, state0 and state1
    change in place and no gradient is returned for any input (weights get no .grad). `anchor` is an empty
    tensor with requires_grad=True so that autograd records the op although no real input requires grad.
    step_tensor: optional one-element integer tensor (CPU int64 0-d) holding the 1-based step, which then
    replaces `step`; it is read only in the backward (the update op's `step`), so a compiled graph takes the
    counter as a tensor input and neither specialises nor recompiles on its value.
    Use embedding_bags_fused, which skips the dispatch for eager calls."""
    _check_optimizer("EmbeddingBagCollection", optimizer)
    return embedding_bags_impl(weights, meta, indices, offsets, per_sample_weights, batch, total_dim, max_dim,
                               need_argmax, feature_names)


@embedding_bags_fused_lookup.register_fake
def _(anchor, weights, meta, indices, offsets, per_sample_weights, batch, total_dim, max_dim, need_argmax,
      feature_names, state0, state1, optimizer, lr, eps, beta1, beta2, step, stochastic_rounding, seed,
      step_tensor=None):
    _check_devices("EmbeddingBagCollection", weights, meta, indices, offsets, per_sample_weights)
    check_same_device("EmbeddingBagCollection", weight=weights, state0=state0, state1=state1)
    return _alloc_forward(weights, batch, total_dim, need_argmax)


def _fused_setup(ctx, inputs, output):
    (_, weights, meta, indices, offsets, psw, batch, total_dim, max_dim, _, _, state0, state1, optimizer, lr, eps,
     beta1, beta2, step, stochastic_rounding, seed) = inputs[:21]
    ctx.num_inputs = len(inputs)
    ctx.update = (batch, total_dim, max_dim, optimizer, lr, eps, beta1, beta2, step, stochastic_rounding, seed)
    step_tensor = inputs[21] if len(inputs) > 21 else None
    ctx.save_for_backward(weights, meta, indices, offsets, psw, output[1], state0, state1, step_tensor)


def _fused_backward(ctx, grad_out, *_):
    weights, meta, indices, offsets, psw, argmax, state0, state1, step_tensor = ctx.saved_tensors
    batch, total_dim, max_dim, optimizer, lr, eps, beta1, beta2, step, stochastic_rounding, seed = ctx.update
    direct = eager(grad_out, weights, indices, offsets, psw, state0, state1, step_tensor)
    if step_tensor is None:
        step_size, seed = fused_step_params(optimizer, lr, beta1, beta2, step, seed)
    else:  # the update op derives step size and seed from the tensor (no host read while tracing)
        step_size = 0.0
    update = embedding_bags_fused_update_impl if direct else embedding_bags_fused_update
    update(grad_out, weights, meta, indices, offsets, psw, argmax, batch, total_dim, max_dim, optimizer, lr, eps,
           beta1, beta2, step_size, stochastic_rounding, seed, state0, state1, step_tensor)
    return (None,) * ctx.num_inputs


embedding_bags_fused_lookup.register_autograd(_fused_backward, setup_context=_fused_setup)


class _FusedLookup(torch.autograd.Function):
    """embedding_bags_fused_lookup without the torch.library dispatch: the op body and the same backward."""

    @staticmethod
    def forward(ctx, *inputs):
        _check_optimizer("EmbeddingBagCollection", inputs[13])
        output = embedding_bags_impl(*inputs[1:11])
        _fused_setup(ctx, inputs, output)
        return output[0]

    backward = staticmethod(_fused_backward)


def embedding_bags_fused(anchor: Tensor, weights: Tensor, meta: Tensor, indices: Tensor, offsets: Tensor,
                         per_sample_weights: Optional[Tensor], batch: int, total_dim: int, max_dim: int,
                         need_argmax: bool, feature_names: str, state0: Tensor, state1: Tensor, optimizer: int,
                         lr: float, eps: float, beta1: float, beta2: float, step: int, stochastic_rounding: bool,
                         seed: int, step_tensor: Optional[Tensor] = None) -> Tensor:
    """out [B, total_dim] of embedding_bags_fused_lookup (same arguments), whose backward updates weights and
    optimizer state in place. Outside torch.compile on plain tensors the op body and its backward run without
    the torch.library dispatch; otherwise (compile, export, tensor subclasses) the op itself."""
    args = (anchor, weights, meta, indices, offsets, per_sample_weights, batch, total_dim, max_dim, need_argmax,
            feature_names, state0, state1, optimizer, lr, eps, beta1, beta2, step, stochastic_rounding, seed,
            step_tensor)
    if eager(weights, indices, offsets, per_sample_weights, state0, state1, step_tensor):
        return _FusedLookup.apply(*args)
    return embedding_bags_fused_lookup(*args)[0]


# ---------------------------------------------------------------------------------------------------------
# functional drop-in for F.embedding_bag


def single_table_meta(weight: Tensor, mode: int) -> Tensor:
    """meta [1, 7] of one [V, D] table read by one feature."""
    rows, dim = weight.shape
    row = meta_row(weight_offset=0, row_offset=0, num_rows=rows, dim=dim, row_stride=dim, pooling=mode,
                   out_column=0)
    return torch.tensor([row], dtype=torch.int64, device=weight.device)


def _common_index_dtype(op: str, indices: Tensor, offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """indices and offsets in one dtype, as F.embedding_bag accepts int32 with int64 either way round: int64
    offsets of int32 indices become int32 when every value fits (checked on CPU; on CUDA, where that check
    would sync, the indices become int64), int32 offsets of int64 indices become int64."""
    if indices.dtype == offsets.dtype:
        return indices, offsets
    ok = (torch.int32, torch.int64)
    if indices.dtype not in ok or offsets.dtype not in ok:
        raise TypeError(f"{op}: indices and offsets must be int32 or int64, got {indices.dtype} and {offsets.dtype}")
    if offsets.dtype == torch.int32:
        return indices, offsets.to(torch.int64)
    if offsets.device.type == "cpu" and indices.numel() < 2**31 and (
            offsets.numel() == 0 or (int(offsets.min()) >= 0 and int(offsets.max()) < 2**31)):
        return indices, offsets.to(torch.int32)
    return indices.to(torch.int64), offsets


def embedding_bag(weight: Tensor, indices: Tensor, offsets: Tensor, mode: str = "sum",
                  per_sample_weights: Optional[Tensor] = None) -> Tensor:
    """Pooled embedding lookup; drop-in for `F.embedding_bag(indices, weight, offsets, mode=mode,
    per_sample_weights=..., include_last_offset=True)`. Op `recops::embedding_bags`.

    Args:
        weight: [V, D] float32/float64/float16/bfloat16.
        indices: [L] int32 or int64 in [0, V) (ValueError naming the first bad position otherwise).
        offsets: [B + 1] int32 or int64 (either with either indices dtype, as in torch): bag b is
            indices[offsets[b]:offsets[b+1]]; starts at 0, never decreases, ends at L (ValueError otherwise).
        mode: "sum", "mean" or "max"; empty bags give zeros. Max pooling propagates NaN like torch.amax: a NaN
            in any row of a bag gives NaN in that column (gradient to the first NaN row), where
            F.embedding_bag keeps a NaN only when it is the bag's first row (order-dependent).
        per_sample_weights: optional [L] weights of each index (sum mode only), weight's dtype.

    Returns:
        [B, D] in weight's dtype; differentiable w.r.t. weight (dense gradient) and per_sample_weights.
    """
    op = "embedding_bag"
    if mode not in POOLING:
        raise ValueError(f"{op}: mode must be 'sum', 'mean' or 'max', got {mode!r}")
    if weight.dtype not in _FLOAT_STORAGE:
        raise TypeError(f"{op}: weight must be float32, float64, float16 or bfloat16, got {weight.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"{op}: weight must have 2 dimensions, got {weight.dim()}")
    if offsets.dim() != 1 or offsets.shape[0] < 1:
        raise ValueError(f"{op}: offsets must be 1-D with at least 1 element, got shape {tuple(offsets.shape)}")
    psw = None
    if per_sample_weights is not None:
        if mode != "sum":
            raise ValueError(f"{op}: per_sample_weights are only supported with mode 'sum', got {mode!r}")
        if per_sample_weights.shape != indices.shape:
            raise ValueError(f"{op}: per_sample_weights must have the shape of indices {tuple(indices.shape)}, "
                             f"got {tuple(per_sample_weights.shape)}")
        psw = per_sample_weights.to(acc_dtype(weight.dtype)).contiguous()
    indices, offsets = _common_index_dtype(op, indices, offsets)
    batch = offsets.shape[0] - 1
    dim = weight.shape[1]
    need_argmax = mode == "max" and torch.is_grad_enabled() and weight.requires_grad
    out, _ = embedding_bags(weight.contiguous(), single_table_meta(weight, POOLING[mode]), indices.contiguous(),
                            offsets.contiguous(), psw, batch, dim, dim, need_argmax, "")
    return out
