# SPDX-License-Identifier: Apache-2.0
"""Ordinal-logistic losses: the proportional-odds loss and GNOLR (KDD 2025), fused forward + backward.

Both are cumulative-link models over ordered levels 0..T with logits z_1..z_T and P(level >= t) = sigmoid(z_t).
log(sigmoid(a) - sigmoid(b)) is computed as logsigmoid(a) + logsigmoid(-b) + log1mexp(max(a - b, min_gap)):
exact whenever a - b >= min_gap, finite (values and gradients) for every finite input, including |z| = 1e4.
The clamp: when a - b < min_gap (levels out of order or nearly tied) the log1mexp term is frozen at
log1mexp(min_gap) and passes no gradient, where the naive log(p1 - p2) gives -inf or NaN.

With reduction "sum" or "mean" and inputs that need grad, the forward kernel also computes the gradient (one
pass over the batch); the backward only scales it. With "none" the backward op recomputes in one pass. Only
first-order gradients are supported (a double backward raises). "mean" divides the weighted sum by B (0 for
B = 0), like torch's binary_cross_entropy with `weight`.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._runtime import core as _C
from .._runtime import Launch, check_same_device, eager, num_threads

_REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}
_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.bfloat16)


def _reduction_code(op: str, reduction: str) -> int:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    return _REDUCTIONS[reduction]


def _check_float(op: str, name: str, t: Tensor, ndim: int, ref: Optional[Tensor] = None,
                 ref_name: str = "") -> None:
    if ref is None:
        allowed = _CUDA_DTYPES if t.device.type == "cuda" else _CPU_DTYPES
        if t.dtype not in allowed:
            names = " or ".join(str(d).replace("torch.", "") for d in allowed)
            raise TypeError(f"{op}: {name} must be {names} on {t.device.type}, got {t.dtype}")
    else:
        check_same_device(op, **{ref_name: ref, name: t})
        if t.dtype != ref.dtype:
            raise TypeError(f"{op}: {name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got {t.dim()}")


def _check_size(op: str, name: str, t: Tensor, dim: int, size: int) -> None:
    if t.shape[dim] != size:
        raise ValueError(f"{op}: {name}.shape[{dim}] must be {size}, got {t.shape[dim]}")


def _check_labels(op: str, name: str, labels: Tensor, ref: Tensor, num_samples: int) -> None:
    check_same_device(op, inputs=ref, **{name: labels})
    if labels.dtype != torch.int64:
        raise TypeError(f"{op}: {name} must be int64, got {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"{op}: {name} must have 1 dimensions, got {labels.dim()}")
    _check_size(op, name, labels, 0, num_samples)


def _check_common(op: str, ref: Tensor, ref_name: str, weights: Optional[Tensor], min_gap: float) -> None:
    if weights is not None:
        _check_float(op, "weights", weights, 1, ref, ref_name)
        _check_size(op, "weights", weights, 0, ref.shape[0])
    if not (min_gap > 0 and min_gap < float("inf")):
        raise ValueError(f"{op}: min_gap must be finite and > 0, got {min_gap}")


def _check_ordinal(scores, thresholds, labels, weights, min_gap) -> None:
    op = "ordinal_logistic_loss"
    _check_float(op, "scores", scores, 1)
    _check_float(op, "thresholds", thresholds, 1, scores, "scores")
    _check_labels(op, "labels", labels, scores, scores.shape[0])
    _check_common(op, scores, "scores", weights, min_gap)


def _check_gnolr(cos, gamma, thresholds, levels, weights, min_gap) -> None:
    op = "gnolr_loss"
    _check_float(op, "cos", cos, 2)
    for name, t in (("gamma", gamma), ("thresholds", thresholds)):
        _check_float(op, name, t, 1, cos, "cos")
        _check_size(op, name, t, 0, cos.shape[1])
    _check_labels(op, "levels", levels, cos, cos.shape[0])
    _check_common(op, cos, "cos", weights, min_gap)


def _loss_out(ref: Tensor, reduction: int) -> Tensor:
    return ref.new_empty(ref.shape[0]) if reduction == 0 else ref.new_empty(())


def _run(op: str, kernel, ref: Tensor, num_partials: int, args: tuple, kwargs: dict, labels: Tensor, hi: int,
         ordered: Optional[Tensor] = None) -> None:
    """Call `kernel` (a _C loss entry point) with the launch context of ref's device."""
    def recheck():  # the core's data checks on host copies (only after a CUDA kernel flagged bad input)
        th = None if ordered is None else ordered.detach().cpu()
        th = th if th is None or th.dtype == torch.float64 else th.float()
        _C.check_ordinal(labels.cpu(), hi, th, "labels" if ordered is not None else "levels", op)

    with Launch(ref, op, recheck) as launch:
        if launch.cuda:
            kwargs["workspace"] = torch.empty(_C.loss_workspace_numel(ref.shape[0], num_partials),
                                              dtype=torch.float32, device=ref.device)
        kernel(*args, **kwargs, num_threads=num_threads(), stream=launch.stream, error_flag=launch.flag)
    launch.raise_errors()


def _d(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach().contiguous()


# ---------------------------------------------------------------------------------------------------------
# ordinal_logistic_loss


def _ordinal_call(scores, thresholds, labels, weights, reduction, min_gap, grad_loss, loss, grad_scores,
                  grad_thresholds) -> None:
    _run("ordinal_logistic_loss", _C.ordinal_logistic_loss, scores, thresholds.shape[0],
         (_d(scores), _d(thresholds), _d(labels), _d(weights)),
         dict(reduction=reduction, min_gap=min_gap, grad_loss=_d(grad_loss), loss=loss, grad_scores=grad_scores,
              grad_thresholds=grad_thresholds),
         labels, thresholds.shape[0], thresholds)


def _ordinal_forward_impl(scores, thresholds, labels, weights, reduction, min_gap, with_grad):
    _check_ordinal(scores, thresholds, labels, weights, min_gap)
    loss = _loss_out(scores, reduction)
    fused = with_grad and reduction != 0
    gs = torch.empty_like(scores) if fused else scores.new_empty(0)
    gt = torch.empty_like(thresholds) if fused else thresholds.new_empty(0)
    _ordinal_call(scores, thresholds, labels, weights, reduction, min_gap, None, loss, gs if fused else None,
                  gt if fused else None)
    return loss, gs, gt


@torch.library.custom_op("recops::ordinal_logistic_loss", mutates_args=())
def _ordinal_logistic_loss(scores: Tensor, thresholds: Tensor, labels: Tensor, weights: Optional[Tensor],
                           reduction: int, min_gap: float, with_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return _ordinal_forward_impl(scores, thresholds, labels, weights, reduction, min_gap, with_grad)


@_ordinal_logistic_loss.register_fake
def _(scores, thresholds, labels, weights, reduction, min_gap, with_grad):
    _check_ordinal(scores, thresholds, labels, weights, min_gap)
    fused = with_grad and reduction != 0
    return (_loss_out(scores, reduction), torch.empty_like(scores) if fused else scores.new_empty(0),
            torch.empty_like(thresholds) if fused else thresholds.new_empty(0))


@torch.library.custom_op("recops::ordinal_logistic_loss_backward", mutates_args=())
def ordinal_logistic_loss_backward(grad_loss: Tensor, scores: Tensor, thresholds: Tensor, labels: Tensor,
                                   weights: Optional[Tensor], reduction: int, min_gap: float, fused: bool,
                                   fused_grad_scores: Tensor,
                                   fused_grad_thresholds: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradient of ordinal_logistic_loss for upstream grad_loss ([B] for reduction none, else a scalar).
    fused: the forward already computed the gradient for grad_loss = 1 (fused_grad_*), which is scaled."""
    return _ordinal_backward_impl(grad_loss, scores, thresholds, labels, weights, reduction, min_gap, fused,
                                  fused_grad_scores, fused_grad_thresholds)


def _ordinal_backward_impl(grad_loss, scores, thresholds, labels, weights, reduction, min_gap, fused,
                           fused_grad_scores, fused_grad_thresholds):
    if fused:
        return grad_loss * fused_grad_scores, grad_loss * fused_grad_thresholds
    gs, gt = torch.empty_like(scores), torch.empty_like(thresholds)
    _ordinal_call(scores, thresholds, labels, weights, reduction, min_gap, grad_loss.contiguous(),
                  _loss_out(scores, reduction), gs, gt)
    return gs, gt


@ordinal_logistic_loss_backward.register_fake
def _(grad_loss, scores, thresholds, labels, weights, reduction, min_gap, fused, fused_grad_scores,
      fused_grad_thresholds):
    return torch.empty_like(scores), torch.empty_like(thresholds)


def _ordinal_setup(ctx, inputs, output):
    scores, thresholds, labels, weights, reduction, min_gap, with_grad = inputs
    ctx.reduction, ctx.min_gap = reduction, min_gap
    ctx.fused = with_grad and reduction != 0
    ctx.save_for_backward(scores, thresholds, labels, weights, output[1], output[2])


def _ordinal_backward(ctx, grad_loss, *_):
    scores, thresholds, labels, weights, gs, gt = ctx.saved_tensors
    # Plain scaling: no second custom-op dispatch (it costs as much as the kernel at B ~ 64k). Under create_graph
    # the custom op runs instead, so a double backward raises rather than treating the saved gradient as constant.
    if ctx.fused and not torch.is_grad_enabled():
        return grad_loss * gs, grad_loss * gt, None, None, None, None, None
    grads = ordinal_logistic_loss_backward(grad_loss, scores, thresholds, labels, weights, ctx.reduction,
                                           ctx.min_gap, ctx.fused, gs, gt)
    return grads[0], grads[1], None, None, None, None, None


_ordinal_logistic_loss.register_autograd(_ordinal_backward, setup_context=_ordinal_setup)


# Eager calls skip the custom-op machinery: at B ~ 64k its Python dispatch costs about as much as the kernel.
# The custom ops above stay the path under torch.compile / export and for tensor subclasses (fake, functorch).


class _OrdinalEager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, thresholds, labels, weights, reduction, min_gap, with_grad):
        loss, gs, gt = _ordinal_forward_impl(scores, thresholds, labels, weights, reduction, min_gap, with_grad)
        ctx.reduction, ctx.min_gap, ctx.fused = reduction, min_gap, with_grad and reduction != 0
        ctx.save_for_backward(scores, thresholds, labels, weights, gs, gt)
        return loss

    @staticmethod
    @once_differentiable  # a double backward raises, as through the custom op
    def backward(ctx, grad_loss):
        scores, thresholds, labels, weights, gs, gt = ctx.saved_tensors
        grads = _ordinal_backward_impl(grad_loss, scores, thresholds, labels, weights, ctx.reduction, ctx.min_gap,
                                       ctx.fused, gs, gt)
        return grads[0], grads[1], None, None, None, None, None


class _GnolrEager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, with_grad):
        loss, gc, gg, gt = _gnolr_forward_impl(cos, gamma, thresholds, levels, weights, reduction, min_gap, nested,
                                               with_grad)
        ctx.reduction, ctx.min_gap, ctx.nested = reduction, min_gap, nested
        ctx.fused = with_grad and reduction != 0
        ctx.save_for_backward(cos, gamma, thresholds, levels, weights, gc, gg, gt)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        cos, gamma, thresholds, levels, weights, gc, gg, gt = ctx.saved_tensors
        grads = _gnolr_backward_impl(grad_loss, cos, gamma, thresholds, levels, weights, ctx.reduction, ctx.min_gap,
                                     ctx.nested, ctx.fused, gc, gg, gt)
        return grads[0], grads[1], grads[2], None, None, None, None, None, None


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    total = loss.sum()
    return total / loss.shape[0] if reduction == "mean" and loss.shape[0] > 0 else total


def ordinal_logistic_loss(scores: Tensor, thresholds: Tensor, labels: Tensor, reduction: str = "mean",
                          weights: Optional[Tensor] = None, min_gap: float = 1e-6) -> Tensor:
    """Proportional-odds (cumulative link) negative log-likelihood; op `recops::ordinal_logistic_loss`.

    P(y <= k) = sigmoid(theta_{k+1} - f), P(y = k) = sigmoid(theta_{k+1} - f) - sigmoid(theta_k - f)
    (theta_0 = -inf, theta_K = +inf), loss_b = -log P(y_b = labels[b]) * weights[b].

    Args:
        scores: f [B], float32/float64 (cpu) or float32/bfloat16 (cuda).
        thresholds: theta [K-1], strictly increasing (ValueError otherwise), dtype of scores.
        labels: [B] int64 in [0, K) (ValueError naming the first bad index otherwise).
        reduction: "none" ([B]), "sum" or "mean" (weighted sum / B) -> scalar.
        weights: optional [B] per-sample weights, dtype of scores.
        min_gap: clamp of theta_{k+1} - theta_k inside the stable log-difference (module docstring).

    Returns:
        [B] or scalar loss in scores' dtype. Differentiable w.r.t. scores, thresholds and weights.
    """
    op = "ordinal_logistic_loss"
    code = _reduction_code(op, reduction)
    if weights is not None and _needs_grad(weights):
        loss = (_OrdinalEager.apply(scores, thresholds, labels, None, 0, float(min_gap), False)
                if eager(scores, thresholds, labels) else
                _ordinal_logistic_loss(scores, thresholds, labels, None, 0, float(min_gap), False)[0])
        _check_common(op, scores, "scores", weights, min_gap)
        return _reduce(loss * weights, reduction)
    with_grad = code != 0 and _needs_grad(scores, thresholds)
    if eager(scores, thresholds, labels, weights):
        return _OrdinalEager.apply(scores, thresholds, labels, weights, code, float(min_gap), with_grad)
    return _ordinal_logistic_loss(scores, thresholds, labels, weights, code, float(min_gap), with_grad)[0]


# ---------------------------------------------------------------------------------------------------------
# gnolr_loss


def _gnolr_call(cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, grad_loss, loss, grads) -> None:
    gc, gg, gt = grads
    _run("gnolr_loss", _C.gnolr_loss, cos, 2 * cos.shape[1],
         (_d(cos), _d(gamma), _d(thresholds), _d(levels), _d(weights)),
         dict(reduction=reduction, min_gap=min_gap, nested=nested, grad_loss=_d(grad_loss), loss=loss,
              grad_cos=gc, grad_gamma=gg, grad_thresholds=gt),
         levels, cos.shape[1])


def _gnolr_grads(cos, gamma, thresholds, fused: bool):
    if fused:
        return torch.empty_like(cos), torch.empty_like(gamma), torch.empty_like(thresholds)
    return cos.new_empty(0), gamma.new_empty(0), thresholds.new_empty(0)


def _gnolr_forward_impl(cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, with_grad):
    _check_gnolr(cos, gamma, thresholds, levels, weights, min_gap)
    loss = _loss_out(cos, reduction)
    fused = with_grad and reduction != 0
    grads = _gnolr_grads(cos, gamma, thresholds, fused)
    _gnolr_call(cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, None, loss,
                grads if fused else (None, None, None))
    return (loss, *grads)


@torch.library.custom_op("recops::gnolr_loss", mutates_args=())
def _gnolr_loss(cos: Tensor, gamma: Tensor, thresholds: Tensor, levels: Tensor, weights: Optional[Tensor],
                reduction: int, min_gap: float, nested: bool,
                with_grad: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _gnolr_forward_impl(cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, with_grad)


@_gnolr_loss.register_fake
def _(cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, with_grad):
    _check_gnolr(cos, gamma, thresholds, levels, weights, min_gap)
    return (_loss_out(cos, reduction), *_gnolr_grads(cos, gamma, thresholds, with_grad and reduction != 0))


@torch.library.custom_op("recops::gnolr_loss_backward", mutates_args=())
def gnolr_loss_backward(grad_loss: Tensor, cos: Tensor, gamma: Tensor, thresholds: Tensor, levels: Tensor,
                        weights: Optional[Tensor], reduction: int, min_gap: float, nested: bool, fused: bool,
                        fused_grad_cos: Tensor, fused_grad_gamma: Tensor,
                        fused_grad_thresholds: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradient of gnolr_loss for upstream grad_loss ([B] for reduction none, else a scalar).
    fused: the forward already computed the gradient for grad_loss = 1 (fused_grad_*), which is scaled."""
    return _gnolr_backward_impl(grad_loss, cos, gamma, thresholds, levels, weights, reduction, min_gap, nested,
                                fused, fused_grad_cos, fused_grad_gamma, fused_grad_thresholds)


def _gnolr_backward_impl(grad_loss, cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, fused,
                         fused_grad_cos, fused_grad_gamma, fused_grad_thresholds):
    if fused:
        return grad_loss * fused_grad_cos, grad_loss * fused_grad_gamma, grad_loss * fused_grad_thresholds
    grads = _gnolr_grads(cos, gamma, thresholds, True)
    _gnolr_call(cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, grad_loss.contiguous(),
                _loss_out(cos, reduction), grads)
    return grads


@gnolr_loss_backward.register_fake
def _(grad_loss, cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, fused, fused_grad_cos,
      fused_grad_gamma, fused_grad_thresholds):
    return _gnolr_grads(cos, gamma, thresholds, True)


def _gnolr_setup(ctx, inputs, output):
    cos, gamma, thresholds, levels, weights, reduction, min_gap, nested, with_grad = inputs
    ctx.reduction, ctx.min_gap, ctx.nested = reduction, min_gap, nested
    ctx.fused = with_grad and reduction != 0
    ctx.save_for_backward(cos, gamma, thresholds, levels, weights, *output[1:])


def _gnolr_backward(ctx, grad_loss, *_):
    cos, gamma, thresholds, levels, weights, gc, gg, gt = ctx.saved_tensors
    if ctx.fused and not torch.is_grad_enabled():  # plain scaling, as in _ordinal_backward
        return grad_loss * gc, grad_loss * gg, grad_loss * gt, None, None, None, None, None, None
    grads = gnolr_loss_backward(grad_loss, cos, gamma, thresholds, levels, weights, ctx.reduction, ctx.min_gap,
                                ctx.nested, ctx.fused, gc, gg, gt)
    return grads[0], grads[1], grads[2], None, None, None, None, None, None


_gnolr_loss.register_autograd(_gnolr_backward, setup_context=_gnolr_setup)


def gnolr_loss(cos: Tensor, gamma: Tensor, thresholds: Tensor, levels: Tensor, reduction: str = "mean",
               weights: Optional[Tensor] = None, min_gap: float = 1e-6, nested: bool = True) -> Tensor:
    """GNOLR loss (KDD 2025, arXiv 2505.20900); op `recops::gnolr_loss`.

    z_t = sum_{j<=t} gamma_j c_j - a_t, P(k >= t) = sigmoid(z_t). nested=True: the sum over sub-tasks
    s = 1..T of -log P_s(min(k, s)), sub-task s an OLR over {0..s}; per sample -T logsigmoid(-z_1) for k = 0 and
    -sum_{s<=k} logsigmoid(z_s) - (T-k) log(sigmoid(z_k) - sigmoid(z_{k+1})) for k >= 1. nested=False: the
    plain OLR likelihood -log P(k) over the T+1 levels (GNOLR-V1). Thresholds need not be ordered.

    Args:
        cos: [B, T] per-level similarities c_t, float32/float64 (cpu) or float32/bfloat16 (cuda).
        gamma: [T] per-level scales, dtype of cos.
        thresholds: a [T], dtype of cos.
        levels: [B] int64 in [0, T]: 0 = no positive feedback, k = the highest positive level.
        reduction: "none" ([B]), "sum" or "mean" (weighted sum / B) -> scalar.
        weights: optional [B] per-sample weights, dtype of cos.
        min_gap: clamp of z_k - z_{k+1} inside the stable log-difference (module docstring).
        nested: the nested multi-task loss (default) or the plain OLR likelihood.

    Returns:
        [B] or scalar loss in cos' dtype. Differentiable w.r.t. cos, gamma, thresholds and weights.
    """
    op = "gnolr_loss"
    code = _reduction_code(op, reduction)
    if weights is not None and _needs_grad(weights):
        args = (cos, gamma, thresholds, levels, None, 0, float(min_gap), bool(nested), False)
        loss = (_GnolrEager.apply(*args) if eager(cos, gamma, thresholds, levels) else _gnolr_loss(*args)[0])
        _check_common(op, cos, "cos", weights, min_gap)
        return _reduce(loss * weights, reduction)
    with_grad = code != 0 and _needs_grad(cos, gamma, thresholds)
    args = (cos, gamma, thresholds, levels, weights, code, float(min_gap), bool(nested), with_grad)
    return _GnolrEager.apply(*args) if eager(cos, gamma, thresholds, levels, weights) else _gnolr_loss(*args)[0]


# ---------------------------------------------------------------------------------------------------------
# helpers


def feedback_to_levels(labels: Tensor) -> Tensor:
    """Multi-hot feedback [B, T] (any dtype; nonzero = positive, columns ordered from the most frequent to
    the rarest feedback) -> levels [B] int64: the highest positive column (1-based), 0 when none is positive
    ("highest positive wins")."""
    if labels.dim() != 2:
        raise ValueError(f"feedback_to_levels: labels must have 2 dimensions, got {labels.dim()}")
    batch, num_levels = labels.shape
    if num_levels == 0:
        return torch.zeros(batch, dtype=torch.int64, device=labels.device)
    ranks = torch.arange(1, num_levels + 1, dtype=torch.int64, device=labels.device)
    return torch.where(labels != 0, ranks, 0).amax(dim=1)
