# SPDX-License-Identifier: Apache-2.0
"""Jagged softmax attention (custom ops recops::jagged_attention and recops::jagged_attention_backward): the
softmax half of the library's jagged attention, on the HSTU kernel's tiles, mask rule and plan."""

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._runtime import core as _C
from .._runtime import num_threads
from .attention_ref import check_seed, seed_bits, seed_tensor
from .hstu import _as_index, _check_incremental, _check_qkv, _compute_qkv, _launch, _param_dtype

_OP = "jagged_attention"


def _lse_dtype(q: Tensor):
    return torch.float32 if q.device.type == "cuda" else _param_dtype(q)


@torch.library.custom_op("recops::jagged_attention", mutates_args=())
def _jagged_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, max_seq_len: int, scale: float,
                      num_targets: Optional[Tensor], contextual_len: int, max_attn_len: int, causal: bool,
                      dropout_p: float, seed: Optional[Tensor], min_full_attn_seq_len: int = 0) -> Tuple[Tensor, Tensor]:
    out = torch.empty((q.shape[0], q.shape[1], v.shape[2]), dtype=q.dtype, device=q.device)
    lse = torch.empty((q.shape[0], q.shape[1]), dtype=_lse_dtype(q), device=q.device)
    nt = None if num_targets is None else num_targets.detach()
    with _launch(_OP, q, offsets, max_seq_len, num_targets) as launch:
        _C.jagged_attention_fwd(q.detach(), k.detach(), v.detach(), offsets, max_seq_len, scale, nt, contextual_len,
                                max_attn_len, causal, dropout_p, seed_bits(seed), out, lse,
                                num_threads=num_threads(), stream=launch.stream, error_flag=launch.flag,
                                min_full_attn_seq_len=min_full_attn_seq_len)
    launch.raise_errors()
    return out, lse


@_jagged_attention.register_fake
def _(q, k, v, offsets, max_seq_len, scale, num_targets, contextual_len, max_attn_len, causal, dropout_p, seed,
      min_full_attn_seq_len=0):
    return (q.new_empty((q.shape[0], q.shape[1], v.shape[2])),
            q.new_empty((q.shape[0], q.shape[1]), dtype=_lse_dtype(q)))


@torch.library.custom_op("recops::jagged_attention_backward", mutates_args=())
def _jagged_attention_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                               offsets: Tensor, max_seq_len: int, scale: float, num_targets: Optional[Tensor],
                               contextual_len: int, max_attn_len: int, causal: bool, dropout_p: float,
                               seed: Optional[Tensor], min_full_attn_seq_len: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=q.dtype, device=q.device)
    dv = torch.empty(v.shape, dtype=q.dtype, device=q.device)
    nt = None if num_targets is None else num_targets.detach()
    with _launch("jagged_attention_backward", q, offsets, max_seq_len, num_targets) as launch:
        _C.jagged_attention_bwd(grad_out.detach().contiguous(), q.detach(), k.detach(), v.detach(), out.detach(),
                                lse.detach(), offsets, max_seq_len, scale, nt, contextual_len, max_attn_len, causal,
                                dropout_p, seed_bits(seed), dq, dk, dv, num_threads=num_threads(),
                                stream=launch.stream, error_flag=launch.flag,
                                min_full_attn_seq_len=min_full_attn_seq_len)
    launch.raise_errors()
    return dq, dk, dv


@_jagged_attention_backward.register_fake
def _(grad_out, q, k, v, out, lse, offsets, max_seq_len, scale, num_targets, contextual_len, max_attn_len, causal,
      dropout_p, seed, min_full_attn_seq_len=0):
    return q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape)


def _setup(ctx, inputs, output):
    (q, k, v, offsets, max_seq_len, scale, num_targets, contextual_len, max_attn_len, causal, dropout_p,
     seed, min_full_attn_seq_len) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, offsets, num_targets, seed)
    ctx.config = (max_seq_len, scale, contextual_len, max_attn_len, causal, dropout_p, min_full_attn_seq_len)
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, offsets, num_targets, seed = ctx.saved_tensors
    max_seq_len, scale, contextual_len, max_attn_len, causal, dropout_p, min_full = ctx.config
    dq, dk, dv = _jagged_attention_backward(grad_out, q, k, v, out, lse, offsets, max_seq_len, scale, num_targets,
                                            contextual_len, max_attn_len, causal, dropout_p, seed, min_full)
    return dq, dk, dv, None, None, None, None, None, None, None, None, None, None


_jagged_attention.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("recops::jagged_attention_incremental", mutates_args=())
def _jagged_attention_incremental(q: Tensor, k: Tensor, v: Tensor, q_offsets: Tensor, offsets: Tensor,
                                  max_seq_len: int, scale: float, num_targets: Optional[Tensor], contextual_len: int,
                                  max_attn_len: int, causal: bool, min_full_attn_seq_len: int) -> Tensor:
    return _forward_incremental(q, k, v, q_offsets, offsets, max_seq_len, scale, num_targets, contextual_len,
                                max_attn_len, causal, min_full_attn_seq_len)


def _forward_incremental(q, k, v, q_offsets, offsets, max_seq_len, scale, num_targets, contextual_len, max_attn_len,
                         causal, min_full_attn_seq_len):
    """Forward only, no dropout: q holds the last rows of each sequence (q_offsets), k/v the whole sequences."""
    out = torch.empty((q.shape[0], q.shape[1], v.shape[2]), dtype=q.dtype, device=q.device)
    lse = torch.empty((q.shape[0], q.shape[1]), dtype=_lse_dtype(q), device=q.device)
    nt = None if num_targets is None else num_targets.detach()
    with _launch(_OP, q, offsets, max_seq_len, num_targets) as launch:
        _C.jagged_attention_fwd(q.detach(), k.detach(), v.detach(), offsets, max_seq_len, scale, nt, contextual_len,
                                max_attn_len, causal, 0.0, 0, out, lse, num_threads=num_threads(),
                                stream=launch.stream, error_flag=launch.flag,
                                min_full_attn_seq_len=min_full_attn_seq_len, q_offsets=q_offsets)
    launch.raise_errors()
    return out


@_jagged_attention_incremental.register_fake
def _(q, k, v, q_offsets, offsets, max_seq_len, scale, num_targets, contextual_len, max_attn_len, causal,
      min_full_attn_seq_len):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


def jagged_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, max_seq_len: int, *, causal: bool = True,
                     scale: Optional[float] = None, num_targets: Optional[Tensor] = None, contextual_len: int = 0,
                     max_attn_len: int = 0, dropout_p: float = 0.0, seed: Optional[int] = None,
                     min_full_attn_seq_len: int = 0, q_offsets: Optional[Tensor] = None) -> Tensor:
    """Jagged softmax attention over packed variable-length sequences, with HSTU's masks and attention dropout.

    For sequence b (rows offsets[b] .. offsets[b+1]) with n rows, every head and local rows i, j in [0, n)::

        out_i = sum_j valid(i, j) * softmax_j(scale * <q_i, k_j>) * keep_ij / (1 - dropout_p) * v_j

    (the softmax taken over the allowed keys; a row with no allowed key gives 0, never NaN). `valid` is exactly
    hstu_attention's mask rule, so the two ops are interchangeable in a model. With c = contextual_len,
    n_t = num_targets[b], W = max_attn_len::

        m = (n - c + 1 if c > 0 else n) - n_t;   p(i) = min(max(i - c + 1, 0) if c > 0 else i, m)
        causal:        valid(i, j) = i == j  or  0 < p(i) - p(j) <= W (W = 0: no upper bound)
                                     or  (c > 0 and p(i) == 0 and p(j) < m)
        bidirectional: valid(i, j) = i == j  or  (p(j) < m and (W = 0 or |p(i) - p(j)| <= W))
                                     or  (c > 0 and p(i) == 0 and p(j) < m)

    Example n=8, c=2, n_t=2, W=0 (row i = query, 1 = valid), causal then bidirectional::

        11111100 / 11111100 / 11100000 / 11110000 / 11111000 / 11111100 / 11111110 / 11111101
        11111100 / 11111100 / 11111100 / 11111100 / 11111100 / 11111100 / 11111110 / 11111101

    Dropout acts on the attention probabilities with a counter-based mask keyed by (seed, sequence, head, row,
    column) (cpp/hstu/attention_dropout.h; recops.ops.attention_ref.dropout_keep computes the same bits), so the
    backward regenerates it and nothing of size N^2 is stored; only the per-row log-sum-exp [L, H] is saved.

    Args:
        q, k: [L, H, Dqk]; v: [L, H, Dv]; rows may be strided (views of one fused projection), the last dimension
            is made contiguous if needed. float32/float64 on CPU; bfloat16 on the CPU's bf16 unit (AMX or AVX512-BF16,
            as in hstu_attention; lse float32), else computed in float32 like float16;
            float32/float16/bfloat16 on CUDA (float32 accumulation).
        offsets: [B+1] int32/int64; every length must be <= max_seq_len.
        max_seq_len: N, an upper bound of the lengths.
        causal: False for the bidirectional mask (BERT4Rec). scale: default 1 / sqrt(Dqk).
        num_targets: [B] integers in [0, length]. contextual_len, max_attn_len: ints >= 0.
        min_full_attn_seq_len: semi-local attention, hstu_attention's rule (the last F history rows and the
            targets ignore the max_attn_len window); 0 = off.
        q_offsets: incremental (KV-cached) inference as in hstu_attention (CPU, forward only, no dropout).
        dropout_p: in [0, 1); 0 is exactly the plain op. seed: int; None draws one from torch's default
            generator (so torch.manual_seed makes runs repeatable); ignored when dropout_p = 0.

    Returns:
        [L, H, Dv] in q's dtype, differentiable w.r.t. q, k and v.
    """
    _check_qkv(_OP, q, k, v, offsets, q_offsets is not None,
               num_targets=num_targets if isinstance(num_targets, Tensor) else None)
    if q_offsets is not None:
        q_offsets = _check_incremental(_OP, q_offsets, offsets, q, k, v)
        if dropout_p > 0:
            raise ValueError(f"{_OP}: q_offsets (incremental inference) takes no dropout, got dropout_p={dropout_p}")
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise ValueError(f"{_OP}: max_seq_len must be an int >= 1, got {max_seq_len!r}")
    for name, val in (("contextual_len", contextual_len), ("max_attn_len", max_attn_len),
                      ("min_full_attn_seq_len", min_full_attn_seq_len)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 0:
            raise ValueError(f"{_OP}: {name} must be an int >= 0, got {val!r}")
    if not isinstance(dropout_p, (int, float)) or isinstance(dropout_p, bool) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{_OP}: dropout_p must be in [0, 1), got {dropout_p!r}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[2]) if q.shape[2] > 0 else 1.0
    elif not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise ValueError(f"{_OP}: scale must be a finite float, got {scale!r}")
    check_seed(_OP, seed)
    batch = offsets.shape[0] - 1
    out_dtype = q.dtype
    q, k, v = _compute_qkv(q, k, v)
    offsets = offsets.to(torch.int64).contiguous()
    if num_targets is not None:
        num_targets = _as_index("num_targets", num_targets, batch, q.device, _OP)
    if q_offsets is not None:
        # eager calls skip the custom-op dispatch (hstu_attention's reason); torch.compile traces the op
        op = _jagged_attention_incremental if torch.compiler.is_compiling() else _forward_incremental
        return op(q, k, v, q_offsets, offsets, int(max_seq_len), float(scale), num_targets, int(contextual_len),
                  int(max_attn_len), bool(causal), int(min_full_attn_seq_len)).to(out_dtype)
    seed_t = seed_tensor(_OP, seed) if dropout_p > 0 else None
    out, _ = _jagged_attention(q, k, v, offsets, int(max_seq_len), float(scale), num_targets, int(contextual_len),
                               int(max_attn_len), bool(causal), float(dropout_p), seed_t, int(min_full_attn_seq_len))
    return out.to(out_dtype)
