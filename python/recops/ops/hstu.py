# SPDX-License-Identifier: Apache-2.0
"""Jagged HSTU attention (custom ops recops::hstu_attention and recops::hstu_attention_backward)."""

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .._runtime import core as _C
from .._runtime import Launch, check_same_device, num_threads
from .jagged import _check_offsets_arg

_OP = "hstu_attention"
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _opt(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach()


def _cpu_args(q, k, v, offsets, row_scale, num_targets, pos_bias, timestamps, time_bias):
    return [q.detach(), k.detach(), v.detach(), offsets, _opt(row_scale), _opt(num_targets), _opt(pos_bias),
            _opt(timestamps), _opt(time_bias)]


def _launch(op, q, offsets, max_seq_len, num_targets) -> Launch:
    """The launch context; a CUDA error flag reruns the core's checks on host copies (_C.check_hstu)."""
    return Launch(q, op, lambda: _C.check_hstu(offsets.cpu(), q.shape[0], max_seq_len,
                                               None if num_targets is None else num_targets.cpu(), op))


@torch.library.custom_op("recops::hstu_attention", mutates_args=())
def _hstu_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, max_seq_len: int, alpha: float,
                    scale: float, row_scale: Optional[Tensor], num_targets: Optional[Tensor], contextual_len: int,
                    max_attn_len: int, pos_bias: Optional[Tensor], timestamps: Optional[Tensor],
                    time_bias: Optional[Tensor], time_bucket_base: float, causal: bool = True,
                    min_full_attn_seq_len: int = 0) -> Tensor:
    return _forward(q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len, max_attn_len,
                    pos_bias, timestamps, time_bias, time_bucket_base, causal, min_full_attn_seq_len, None)


def _forward(q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len, max_attn_len,
             pos_bias, timestamps, time_bias, time_bucket_base, causal, min_full_attn_seq_len, q_offsets):
    """The forward kernel call of both custom ops (q_offsets: incremental inference, else None)."""
    out = torch.empty((q.shape[0], q.shape[1], v.shape[2]), dtype=q.dtype, device=q.device)
    qd, kd, vd, od, rs, nt, pb, ts, tb = _cpu_args(q, k, v, offsets, row_scale, num_targets, pos_bias, timestamps,
                                                   time_bias)
    with _launch("hstu_attention", q, offsets, max_seq_len, num_targets) as launch:
        _C.hstu_attention_fwd(qd, kd, vd, od, max_seq_len, alpha, scale, rs, nt, contextual_len, max_attn_len, pb,
                              ts, tb, time_bucket_base, out, causal=causal, num_threads=num_threads(),
                              stream=launch.stream, error_flag=launch.flag, min_full_attn_seq_len=min_full_attn_seq_len,
                              q_offsets=q_offsets)
    launch.raise_errors()
    return out


@_hstu_attention.register_fake
def _(q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len, max_attn_len, pos_bias,
      timestamps, time_bias, time_bucket_base, causal=True, min_full_attn_seq_len=0):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


@torch.library.custom_op("recops::hstu_attention_backward", mutates_args=())
def _hstu_attention_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, max_seq_len: int,
                             alpha: float, scale: float, row_scale: Optional[Tensor],
                             num_targets: Optional[Tensor], contextual_len: int, max_attn_len: int,
                             pos_bias: Optional[Tensor], timestamps: Optional[Tensor], time_bias: Optional[Tensor],
                             time_bucket_base: float, causal: bool = True, min_full_attn_seq_len: int = 0
                             ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=q.dtype, device=q.device)
    dv = torch.empty(v.shape, dtype=q.dtype, device=q.device)
    # CUDA accumulates bias gradients with float32 atomics into zeroed buffers
    cuda = q.device.type == "cuda"
    bias_dtype = torch.float32 if cuda else _param_dtype(q)
    alloc = torch.zeros if cuda else torch.empty
    dpos = alloc(pos_bias.shape if pos_bias is not None else (0,), dtype=bias_dtype, device=q.device)
    dtime = alloc(time_bias.shape if time_bias is not None else (0,), dtype=bias_dtype, device=q.device)
    qd, kd, vd, od, rs, nt, pb, ts, tb = _cpu_args(q, k, v, offsets, row_scale, num_targets, pos_bias, timestamps,
                                                   time_bias)
    with _launch("hstu_attention_backward", q, offsets, max_seq_len, num_targets) as launch:
        _C.hstu_attention_bwd(grad_out.detach().contiguous(), qd, kd, vd, od, max_seq_len, alpha, scale, rs, nt,
                              contextual_len, max_attn_len, pb, ts, tb, time_bucket_base, dq, dk, dv,
                              dpos if pos_bias is not None else None, dtime if time_bias is not None else None,
                              causal=causal, num_threads=num_threads(), stream=launch.stream, error_flag=launch.flag,
                              min_full_attn_seq_len=min_full_attn_seq_len)
    launch.raise_errors()
    return dq, dk, dv, dpos.to(_param_dtype(q)), dtime.to(_param_dtype(q))


@_hstu_attention_backward.register_fake
def _(grad_out, q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len, max_attn_len,
      pos_bias, timestamps, time_bias, time_bucket_base, causal=True, min_full_attn_seq_len=0):
    return (q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape),
            q.new_empty(pos_bias.shape if pos_bias is not None else (0,), dtype=_param_dtype(q)),
            q.new_empty(time_bias.shape if time_bias is not None else (0,), dtype=_param_dtype(q)))


_SAVED = ("q", "k", "v", "offsets", "row_scale", "num_targets", "pos_bias", "timestamps", "time_bias")


def _setup(ctx, inputs, output):
    (q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len, max_attn_len, pos_bias,
     timestamps, time_bias, time_bucket_base, causal, min_full_attn_seq_len) = inputs
    ctx.save_for_backward(q, k, v, offsets, row_scale, num_targets, pos_bias, timestamps, time_bias)
    ctx.config = (max_seq_len, alpha, scale, contextual_len, max_attn_len, time_bucket_base, causal,
                  min_full_attn_seq_len)


def _backward(ctx, grad):
    q, k, v, offsets, row_scale, num_targets, pos_bias, timestamps, time_bias = ctx.saved_tensors
    max_seq_len, alpha, scale, contextual_len, max_attn_len, time_bucket_base, causal, min_full = ctx.config
    dq, dk, dv, dpos, dtime = _hstu_attention_backward(
        grad, q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len, max_attn_len,
        pos_bias, timestamps, time_bias, time_bucket_base, causal, min_full)
    return (dq, dk, dv, None, None, None, None, None, None, None, None,
            dpos if pos_bias is not None else None, None, dtime if time_bias is not None else None, None, None,
            None)


_hstu_attention.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("recops::hstu_attention_incremental", mutates_args=())
def _hstu_attention_incremental(q: Tensor, k: Tensor, v: Tensor, q_offsets: Tensor, offsets: Tensor,
                                max_seq_len: int, alpha: float, scale: float, row_scale: Optional[Tensor],
                                num_targets: Optional[Tensor], contextual_len: int, max_attn_len: int,
                                pos_bias: Optional[Tensor], timestamps: Optional[Tensor], time_bias: Optional[Tensor],
                                time_bucket_base: float, causal: bool, min_full_attn_seq_len: int) -> Tensor:
    """Forward only: q holds the last rows of each sequence (q_offsets), k/v the whole sequences (offsets)."""
    return _forward(q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len, max_attn_len,
                    pos_bias, timestamps, time_bias, time_bucket_base, causal, min_full_attn_seq_len, q_offsets)


def _forward_incremental(q, k, v, q_offsets, offsets, *args):
    return _forward(q, k, v, offsets, *args, q_offsets)


@_hstu_attention_incremental.register_fake
def _(q, k, v, q_offsets, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len, max_attn_len,
      pos_bias, timestamps, time_bias, time_bucket_base, causal, min_full_attn_seq_len):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


def _check_incremental(op: str, q_offsets, offsets, q, k, v, *params) -> Tensor:
    """q_offsets of incremental inference: a CPU int32/int64 [B+1] tensor like offsets, inputs needing no grad;
    returns it as int64."""
    if not isinstance(q_offsets, Tensor):
        raise TypeError(f"{op}: q_offsets must be a tensor, got {type(q_offsets).__name__}")
    _check_offsets_arg(op, q_offsets, q, "q")
    if q_offsets.shape != offsets.shape:
        raise ValueError(f"{op}: q_offsets must have offsets' shape {list(offsets.shape)}, got {list(q_offsets.shape)}")
    if q.device.type != "cpu":
        raise ValueError(f"{op}: q_offsets (incremental inference) runs on the CPU only, got {q.device}")
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in (q, k, v) + params):
        raise ValueError(f"{op}: q_offsets (incremental inference) has no backward: call it under torch.no_grad() "
                         "or with inputs that need no gradient")
    return q_offsets.to(torch.int64).contiguous()


def _tensor(t):
    return t if isinstance(t, Tensor) else None


def _as_index(name: str, t: Tensor, length: int, device, op: str = _OP) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{op}: {name} must be an integer tensor, got {t.dtype}")
    if t.dim() != 1 or t.shape[0] != length:
        raise ValueError(f"{op}: {name} must have shape [{length}], got {list(t.shape)}")
    return t.to(torch.int64).contiguous()


def _check_qkv(op: str, q, k, v, offsets, incremental: bool = False, **others) -> None:
    """The q/k/v/offsets checks both jagged attention ops share (3-D floating tensors of one dtype and device, k
    shaped like q, v [L, H, Dv], offsets [B+1] int32/int64); `others` join the device check. incremental: q holds
    only some rows (q_offsets), so k is [L, H, Dqk] with q's H and Dqk."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 3:
            raise ValueError(f"{op}: {name} must have 3 dimensions [L, H, D], got {getattr(t, 'shape', t)}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating tensor, got {t.dtype}")
    check_same_device(op, q=q, k=k, v=v, offsets=offsets, **others)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"{op}: q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if (k.shape[1:] if incremental else k.shape) != (q.shape[1:] if incremental else q.shape):
        want = f"shape [L, H={q.shape[1]}, Dqk={q.shape[2]}]" if incremental else f"q's shape {list(q.shape)}"
        raise ValueError(f"{op}: k must have {want}, got {list(k.shape)}")
    if v.shape[:2] != k.shape[:2]:
        raise ValueError(f"{op}: v must have shape [L={k.shape[0]}, H={q.shape[1]}, Dv], got {list(v.shape)}")
    _check_offsets_arg(op, offsets, q, "q")


_BF16_UNIT = []  # the unit in use, read once (torch.compile traces the wrappers without calling into _C)


def cpu_bf16_unit() -> str:
    """The unit the CPU attention kernels run bfloat16 inputs on: "amx" (AMX tiles), "avx512_bf16" (VDPBF16PS) or
    "none" (bfloat16 is upcast to the float32 kernels). RECOPS_CPU_ISA=avx512_bf16 / avx512 force it down."""
    if not _BF16_UNIT:
        _BF16_UNIT.append(_C.hstu_bf16_unit())
    return _BF16_UNIT[0]


def force_bf16_unit(unit: str) -> None:
    """Benchmarks and tests: run later bf16 attention calls on `unit` ("amx", "avx512_bf16", or "none" for the
    upcast path); ValueError for a unit this CPU lacks."""
    _C.hstu_force_bf16_unit(unit)
    _BF16_UNIT[:] = [_C.hstu_bf16_unit()]


def _cpu_bf16(q: Tensor) -> bool:
    """bfloat16 q on a CPU with a bf16 unit: the kernels read bf16 directly (their other arrays float32)."""
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and cpu_bf16_unit() != "none"


def _param_dtype(q: Tensor):
    """The dtype of row scales, biases, their gradients and lse beside compute-dtype q."""
    return torch.float32 if _cpu_bf16(q) else q.dtype


def _compute_qkv(q: Tensor, k: Tensor, v: Tensor):
    """q, k, v in the dtype the kernels compute in (float16, and bfloat16 without a bf16 unit, upcast on the CPU),
    last dim contiguous."""
    dtype = torch.float32 if (q.device.type == "cpu" and q.dtype in _LOW_PRECISION and not _cpu_bf16(q)) else q.dtype
    return tuple(t.to(dtype) if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.to(dtype).contiguous()
                 for t in (q, k, v))


def _as_param(name: str, t: Tensor, length: Optional[int], dtype, device) -> Tensor:
    if not t.is_floating_point():
        raise TypeError(f"{_OP}: {name} must be a floating tensor, got {t.dtype}")
    if t.dim() != 1 or (length is not None and t.shape[0] != length) or t.shape[0] == 0:
        want = f"[{length}]" if length is not None else "[num_buckets] with num_buckets >= 1"
        raise ValueError(f"{_OP}: {name} must have shape {want}, got {list(t.shape)}")
    return t.to(dtype)


def hstu_attention(q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, max_seq_len: int, *, alpha: float = 1.0,
                   attn_scale: Union[None, float, Tensor] = None, num_targets: Optional[Tensor] = None,
                   contextual_len: int = 0, max_attn_len: int = 0, pos_bias: Optional[Tensor] = None,
                   timestamps: Optional[Tensor] = None, time_bias: Optional[Tensor] = None,
                   time_bucket_base: float = 0.301, causal: bool = True, min_full_attn_seq_len: int = 0,
                   q_offsets: Optional[Tensor] = None) -> Tensor:
    """Jagged HSTU attention: causal (or bidirectional) pointwise-SiLU attention with relative position/time bias.

    For sequence b (rows offsets[b] .. offsets[b+1]) with n rows and local rows i, j in [0, n)::

        s_ij  = alpha * <q_i, k_j> + pos_bias[(max_seq_len - 1) + (j - i)] + time_bias[bucket_ij]
        out_i = scale_i * sum_j valid(i, j) * SiLU(s_ij) * v_j
        bucket_ij = clamp(floor(ln(max(|t_{i+1} - t_j|, 1)) / time_bucket_base), 0, len(time_bias) - 1)

    with t_n := t_{n-1} (query i predicts item i+1; ln in float64) and scale_i = attn_scale (float, or [L] per
    row) or 1 / max_seq_len. The mask, with c = contextual_len, n_t = num_targets[b], W = max_attn_len::

        m = (n - c + 1 if c > 0 else n) - n_t;   p(i) = min(max(i - c + 1, 0) if c > 0 else i, m)
        valid(i, j) = i == j  or  0 < p(i) - p(j) <= W (W = 0: no upper bound)
                      or  (c > 0 and p(i) == 0 and p(j) < m)

    History rows are causal; the last n_t rows (targets) see the history and themselves but not each other
    (all targets sit at position m, so the window treats them as the first target); the first c rows (context)
    see all context and history rows and are seen by every row while in its window (as one token at c - 1).
    Example n=8, c=2, n_t=2, W=0 (row i = query, 1 = valid)::

        11111100 / 11111100 / 11100000 / 11110000 / 11111000 / 11111100 / 11111110 / 11111101

    causal=False is the bidirectional rule (BERT4Rec-style; the window two-sided)::

        valid(i, j) = i == j  or  (p(j) < m and (W = 0 or |p(i) - p(j)| <= W))
                      or  (c > 0 and p(i) == 0 and p(j) < m)

    so history rows see every history row in the window, targets see the history and themselves and no row
    sees another target. The same example with causal=False::

        11111100 / 11111100 / 11111100 / 11111100 / 11111100 / 11111100 / 11111110 / 11111101

    Semi-local attention (F = min_full_attn_seq_len > 0 together with a window W > 0; the reference HSTU
    kernels' rule): the rows with p(i) >= m - F, the last F history rows and the targets, ignore the window, so
    "W = 0" in the rules above reads "W = 0 or (F > 0 and p(i) >= m - F)". Example n=8, c=0, n_t=1, W=2, F=2
    (m = 7; rows 5, 6 (history) and 7 (the target) see their whole history; with F=0 they would read
    00011100 / 00001110 / 00000111)::

        10000000 / 11000000 / 11100000 / 01110000 / 00111000 / 11111100 / 11111110 / 11111111

    Args:
        q, k: [L, H, Dqk]; v: [L, H, Dv]. float32/float64 on CPU; bfloat16 on the CPU's bf16 unit where it has
            one (AMX tiles or AVX512-BF16: inputs read as bf16, fp32 accumulation and pointwise math, P and dS
            rounded to bf16 once before their GEMM; `cpu_bf16_unit()`), else computed in float32 like float16;
            rows may be strided (views of a fused projection); the last dimension is made contiguous if needed.
        offsets: [B+1] int32/int64. Every length must be <= max_seq_len.
        max_seq_len: N, the padded length the biases and the default scale refer to.
        alpha: multiplies q.k. attn_scale: float or [L] tensor (no gradient), default 1 / max_seq_len.
        num_targets: [B] integers in [0, length]. contextual_len, max_attn_len, min_full_attn_seq_len: ints >= 0.
        pos_bias: [2N-1]. timestamps: [L] integer seconds (required with time_bias). time_bias: [num_buckets].
        causal: False for the bidirectional mask above (forward and backward).
        q_offsets: incremental (KV-cached) inference, CPU, forward only: q (and attn_scale, the output) hold only
            the last q_offsets[b+1] - q_offsets[b] rows of each sequence (its new events), k, v and timestamps the
            whole sequences given by offsets; the mask and biases use absolute positions, so the result equals
            the matching rows of the full call. ValueError when gradients are needed.

    Returns:
        [L, H, Dv] in q's dtype. Differentiable w.r.t. q, k, v, pos_bias and time_bias (not timestamps,
        offsets, num_targets or attn_scale); the backward recomputes scores and stores nothing of size N^2.
    """
    _check_qkv(_OP, q, k, v, offsets, q_offsets is not None, num_targets=_tensor(num_targets),
               attn_scale=_tensor(attn_scale), pos_bias=_tensor(pos_bias), timestamps=_tensor(timestamps),
               time_bias=_tensor(time_bias))
    if q_offsets is not None:
        q_offsets = _check_incremental(_OP, q_offsets, offsets, q, k, v, pos_bias, time_bias)
    if max_seq_len < 1:
        raise ValueError(f"{_OP}: max_seq_len must be >= 1, got {max_seq_len}")
    if contextual_len < 0:
        raise ValueError(f"{_OP}: contextual_len must be >= 0, got {contextual_len}")
    if max_attn_len < 0:
        raise ValueError(f"{_OP}: max_attn_len must be >= 0, got {max_attn_len}")
    if isinstance(min_full_attn_seq_len, bool) or not isinstance(min_full_attn_seq_len, int) \
            or min_full_attn_seq_len < 0:
        raise ValueError(f"{_OP}: min_full_attn_seq_len must be an int >= 0, got {min_full_attn_seq_len!r}")
    if time_bias is not None and timestamps is None:
        raise ValueError(f"{_OP}: time_bias needs timestamps")
    if not time_bucket_base > 0:
        raise ValueError(f"{_OP}: time_bucket_base must be > 0, got {time_bucket_base}")
    L, batch = q.shape[0], offsets.shape[0] - 1
    out_dtype = q.dtype
    q, k, v = _compute_qkv(q, k, v)
    dtype = _param_dtype(q)
    offsets = offsets.to(torch.int64).contiguous()
    row_scale, scale = None, 1.0 / max_seq_len
    if isinstance(attn_scale, Tensor):
        row_scale = _as_param("attn_scale", attn_scale, L, dtype, q.device).detach().contiguous()
    elif attn_scale is not None:
        scale = float(attn_scale)
    if num_targets is not None:
        num_targets = _as_index("num_targets", num_targets, batch, q.device)
    if pos_bias is not None:
        pos_bias = _as_param("pos_bias", pos_bias, 2 * max_seq_len - 1, dtype, q.device).contiguous()
    if timestamps is not None:
        timestamps = _as_index("timestamps", timestamps, k.shape[0], q.device)
    if time_bias is not None:
        time_bias = _as_param("time_bias", time_bias, None, dtype, q.device).contiguous()
    args = (int(max_seq_len), float(alpha), float(scale), row_scale, num_targets, int(contextual_len),
            int(max_attn_len), pos_bias, timestamps if time_bias is not None else None, time_bias,
            float(time_bucket_base), bool(causal), int(min_full_attn_seq_len))
    if q_offsets is not None:
        # eager serving calls the kernel directly (the custom-op dispatch costs more than a one-event step);
        # torch.compile traces the custom op
        op = _hstu_attention_incremental if torch.compiler.is_compiling() else _forward_incremental
        return op(q, k, v, q_offsets, offsets, *args).to(out_dtype)
    out = _hstu_attention(q, k, v, offsets, *args)
    return out.to(out_dtype)
