# SPDX-License-Identifier: Apache-2.0
"""Fused sampled softmax vs the plain-PyTorch reference: a shape sweep over every negative mode, gradients,
edge cases, errors, determinism, the generated negatives, opcheck, torch.compile and every CPU ISA path; on a
CUDA device, the CUDA kernels against the CPU op (values, gradients, the drawn ids, errors, determinism)."""

import itertools
import math
import os
import subprocess
import sys

import pytest
import torch

import recops
from recops.ops import sampled_softmax_loss
from recops.ops import sampled_softmax_ref as ref

REDUCTIONS = ["none", "sum", "mean"]
# shared [M]; per-row [L, M]; drawn in the kernel; the other rows' positives alone, or with [M] / drawn ids
MODES = ["shared", "per_row", "generated", "in_batch", "in_batch_shared", "in_batch_generated"]
SEED = 1234
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LS, DS, VS, MS = [0, 1, 7, 300], [1, 8, 50, 64], [1, 2, 50, 3706], [0, 1, 17, 128]
# Every (L, M) pair, with (D, V) = (DS[l + m], VS[l + 2m]) (mod 4): (l, m) -> (l + m, l + 2m) is a bijection
# of Z_4^2, so every (D, V) pair and every pair of any two dimensions also appears exactly once in the 16 shapes.
SHAPES = [(L, DS[(li + mi) % 4], VS[(li + 2 * mi) % 4], M) for li, L in enumerate(LS) for mi, M in enumerate(MS)]
# (log_q, remove_accidental_hits, temperature): all 8 combinations; OPTIONS[k] and OPTIONS[7 - k] differ in
# every option (a complementary pair covers both values of each).
OPTIONS = list(itertools.product((False, True), (False, True), (0.05, 1.0)))


def _tol(dtype, grad):
    """float64: tight. float32 (against the float64 reference): the losses to ~3e-6 of 1 + |loss| here, the
    gradients to ~5e-4 (temperature 0.05 scales every logit by 20, and the item gradient adds up to
    L * C ~ 1e5 float32 terms into one row at L = 300, V = 2): bounds with a margin of ~5-10."""
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-11)
    return dict(rtol=2e-3, atol=2e-3) if grad else dict(rtol=3e-5, atol=3e-5)


def _inputs(L, D, V, M, dtype=torch.float64, seed=0):
    """queries [L, D] (dot products ~ N(0, 1)), positives [L] with a repeat, items [V, D], log_q [V], and
    shared [M] / per-row [L, M] negatives that contain accidental hits. The floats are float32 values in either
    dtype, so the float32 and float64 inputs of one seed are the same numbers (one float64 reference for both)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).float().to(dtype)

    q = randn(L, D, scale=1 / math.sqrt(D))
    items = randn(V, D)
    log_q = torch.log_softmax(randn(V).double(), 0).float().to(dtype)
    pos = torch.randint(0, V, (L,), generator=g)
    shared = torch.randint(0, V, (M,), generator=g)
    per_row = torch.randint(0, V, (L, M), generator=g)
    if L > 1:
        pos[1] = pos[0]  # an accidental hit among the in-batch negatives
    if L and M:
        shared[0] = pos[0]
        per_row[::2, -1] = pos[::2]
    return q, pos, items, log_q, shared, per_row


def _mode(mode, L, M, V, shared, per_row, seed=SEED):
    """(negatives, kwargs) for the fused op and the same candidates as explicit ids for the reference."""
    in_batch = dict(in_batch=True) if mode.startswith("in_batch") else {}
    if mode.endswith("shared"):
        return (shared, dict(in_batch)), (shared, in_batch)
    if mode == "per_row":
        return (per_row, {}), (per_row, {})
    if mode.endswith("generated"):
        gen = ref.generated_negatives(L, M, V, seed)
        return (None, dict(num_negatives=M, seed=seed, **in_batch)), (gen, in_batch)
    return (None, in_batch), (None, in_batch)


def _run(fn, q, pos, items, neg, kw, grad_seed=0, dtype=None):
    """(loss, grad_queries, grad_items) of fn in `dtype` (default: the inputs') for a fixed random grad_out."""
    q, items = (t.detach().to(dtype or t.dtype).requires_grad_() for t in (q, items))
    kw = {k: (v.to(q.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}
    out = fn(q, pos, items, neg, **kw)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    gq, gi = torch.autograd.grad(out, (q, items), g.to(device=out.device, dtype=out.dtype))
    return out.detach(), gq, gi


def _assert_all_close(got, want, dtype):
    """(loss, grad_queries, grad_items) against the reference's."""
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == dtype and a.shape == b.shape
        a, b, tol = a.double(), b.double(), _tol(dtype, grad=k > 0)
        # assert_close's test, several times faster on the dense [V, D] gradients; it reports (or allows NaNs)
        if not bool(((a - b).abs() <= tol["atol"] + tol["rtol"] * b.abs()).all()):
            torch.testing.assert_close(a, b, equal_nan=True, **tol)


# ---------------------------------------------------------------------------------------------------------
# correctness vs reference


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L%d-D%d-V%d-M%d" % s)
def test_matches_ref(shape):
    """Loss and both gradients (items: dense [V, D]) for every mode against the reference: float64 tight, and
    float32 on the same values against the same float64 reference. L <= 7: every option combination; L = 300
    (a slow reference): a complementary pair per mode, OPTIONS[k] and OPTIONS[7 - k] with k = mode % 4, so
    each shape still meets all 8. The reduction rotates with shape, mode and options."""
    L, D, V, M = shape
    si = SHAPES.index(shape)
    q, pos, items, log_q, shared, per_row = _inputs(L, D, V, M, seed=si)
    for mi, mode in enumerate(MODES):
        (neg, kw), (ref_neg, ref_kw) = _mode(mode, L, M, V, shared, per_row)
        for oi in range(8) if L <= 7 else (mi % 4, 7 - mi % 4):
            use_log_q, hits, temperature = OPTIONS[oi]
            opts = dict(temperature=temperature, log_q=log_q if use_log_q else None, remove_accidental_hits=hits,
                        reduction=REDUCTIONS[(si + mi + oi) % 3])
            want = _run(ref.sampled_softmax_loss, q, pos, items, ref_neg, dict(ref_kw, **opts), grad_seed=oi)
            for dtype in (torch.float64, torch.float32):
                got = _run(sampled_softmax_loss, q, pos, items, neg, dict(kw, **opts), grad_seed=oi, dtype=dtype)
                _assert_all_close(got, want, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reductions_and_log_q_shift(reduction):
    """sum / mean are the sum / mean of the "none" losses; a constant log_q shifts every logit alike (no change)."""
    q, pos, items, log_q, shared, _ = _inputs(9, 8, 30, 5)
    per_row = sampled_softmax_loss(q, pos, items, shared, reduction="none")
    out = sampled_softmax_loss(q, pos, items, shared, reduction=reduction)
    want = {"none": per_row, "sum": per_row.sum(), "mean": per_row.mean()}[reduction]
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    shifted = sampled_softmax_loss(q, pos, items, shared, log_q=torch.full_like(log_q, -3.5), reduction=reduction)
    torch.testing.assert_close(shifted, want, rtol=1e-12, atol=1e-12)
    assert (per_row > 0).all()  # a softmax over more than one live candidate


def test_non_contiguous_inputs():
    q, pos, items, log_q, _, per_row = _inputs(11, 6, 40, 4)
    want = ref.sampled_softmax_loss(q, pos, items, per_row, log_q=log_q, in_batch=True, reduction="none")
    qt = q.t().contiguous().t()
    items_s = torch.stack([items, items], 2)[..., 1]
    pos_s = torch.stack([pos, pos], 1)[:, 0]
    neg_t = per_row.t().contiguous().t()
    lq_s = torch.stack([log_q, log_q], 1)[:, 1]
    assert not any(t.is_contiguous() for t in (qt, items_s, pos_s, neg_t, lq_s))
    out = sampled_softmax_loss(qt, pos_s, items_s, neg_t, log_q=lq_s, in_batch=True, reduction="none")
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(mode):
    L, D, V, M = 5, 3, 7, 3
    q, pos, items, log_q, shared, per_row = _inputs(L, D, V, M)
    (neg, kw), _ = _mode(mode, L, M, V, shared, per_row)
    for reduction, temperature, lq in (("none", 0.5, log_q), ("mean", 1.0, None)):
        def f(q_, items_):
            return sampled_softmax_loss(q_, pos, items_, neg, temperature=temperature, log_q=lq,
                                        reduction=reduction, **kw)

        assert torch.autograd.gradcheck(f, (q.clone().requires_grad_(), items.clone().requires_grad_()))


@pytest.mark.parametrize("mode", MODES)
def test_gradient_only_to_items_used(mode):
    L, D, V, M = 6, 4, 200, 3
    q, pos, items, log_q, shared, per_row = _inputs(L, D, V, M)
    pos = torch.arange(L) * 2  # even ids, the given negatives odd ids, all below 20; drawn ones anywhere
    shared, per_row = 2 * torch.randint(0, 10, (M,)) + 1, 2 * torch.randint(0, 10, (L, M)) + 1
    (neg, kw), (ref_neg, ref_kw) = _mode(mode, L, M, V, shared, per_row)
    loss, gq, gi = _run(sampled_softmax_loss, q, pos, items, neg, dict(kw, log_q=log_q, reduction="sum"))
    ids = ref.candidates(pos, ref_neg, ref_kw.get("in_batch", False)).unique()
    unused = torch.ones(V, dtype=torch.bool)
    unused[ids] = False
    assert unused.sum() >= V - L * (M + 1) and torch.equal(gi[unused], torch.zeros_like(gi[unused]))  # exactly zero
    assert (gi[ids].abs().sum(1) > 0).all()  # every used row gets a gradient
    assert gq.shape == q.shape and torch.isfinite(loss)


def test_log_q_gets_no_gradient_and_partial_grads():
    q, pos, items, log_q, shared, _ = _inputs(6, 4, 20, 3)
    lq = log_q.clone().requires_grad_()
    q_ = q.clone().requires_grad_()
    g_q, g_lq = torch.autograd.grad(sampled_softmax_loss(q_, pos, items, shared, log_q=lq), (q_, lq),
                                    allow_unused=True)
    assert g_lq is None  # documented: log_q is a constant correction
    (g_ref,) = torch.autograd.grad(ref.sampled_softmax_loss(q_, pos, items, shared, log_q=log_q), q_)
    torch.testing.assert_close(g_q, g_ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        out = sampled_softmax_loss(q_, pos, items, shared)
    assert not out.requires_grad


# ---------------------------------------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("mode", MODES)
def test_empty_batch(mode):
    """L = 0: "none" is [0], "sum" 0 and "mean" NaN (torch's mean of an empty tensor, as the reference);
    the item gradient is the dense zero [V, D]."""
    q, pos, items, _, shared, per_row = _inputs(0, 4, 9, 3)
    (neg, kw), (ref_neg, ref_kw) = _mode(mode, 0, 3, 9, shared, per_row)
    for reduction in REDUCTIONS:
        loss, gq, gi = _run(sampled_softmax_loss, q, pos, items, neg, dict(kw, reduction=reduction))
        want = ref.sampled_softmax_loss(q, pos, items, ref_neg, reduction=reduction, **ref_kw)
        assert loss.shape == want.shape and gq.shape == (0, 4)
        assert torch.equal(gi, torch.zeros(9, 4, dtype=torch.float64))
        if reduction == "mean":
            assert torch.isnan(loss) and torch.isnan(want) and torch.isnan(torch.empty(0).mean())
        elif reduction == "sum":
            assert loss.item() == 0.0 == want.item()
    q0, p0, v0 = torch.empty(0, 3), torch.empty(0, dtype=torch.int64), torch.empty(0, 3)
    assert sampled_softmax_loss(q0, p0, v0, num_negatives=4, seed=1, reduction="sum").item() == 0.0  # V = 0 too


@pytest.mark.parametrize("mode", MODES)
def test_single_item(mode):
    """V = 1: every candidate is item 0, the positive. Hits removed: only the positive is left, loss and
    gradients exactly 0. Kept: C equal logits, loss log C."""
    L, M = 5, 4
    q, pos, items, _, shared, per_row = _inputs(L, 3, 1, M)
    (neg, kw), _ = _mode(mode, L, M, 1, shared, per_row)
    loss, gq, gi = _run(sampled_softmax_loss, q, pos, items, neg, dict(kw, reduction="none"))
    assert torch.equal(loss, torch.zeros(L, dtype=torch.float64))
    assert torch.equal(gq, torch.zeros_like(gq)) and torch.equal(gi, torch.zeros_like(gi))
    loss = sampled_softmax_loss(q, pos, items, neg, remove_accidental_hits=False, reduction="none", **kw)
    count = 1 + (0 if mode == "in_batch" else M) + (L - 1 if kw.get("in_batch") else 0)
    torch.testing.assert_close(loss, torch.full((L,), math.log(count), dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_negative_is_the_positive(dtype):
    L, M = 7, 5
    q, pos, items, log_q, _, _ = _inputs(L, 8, 50, M, dtype)
    negs = pos[:, None].expand(L, M)
    loss, gq, gi = _run(sampled_softmax_loss, q, pos, items, negs, dict(log_q=log_q, reduction="none"))
    assert torch.equal(loss, torch.zeros(L, dtype=dtype))  # all masked: the positive alone, loss 0
    assert torch.equal(gq, torch.zeros_like(gq)) and torch.equal(gi, torch.zeros_like(gi))
    kept = sampled_softmax_loss(q, pos, items, negs, log_q=log_q, remove_accidental_hits=False, reduction="none")
    torch.testing.assert_close(kept, torch.full((L,), math.log(M + 1), dtype=dtype))


def test_duplicate_negatives_count_once_each():
    """A negative listed k times weighs k times: logsumexp(z_pos, z3, z3, z3, z5) = logsumexp(z_pos, z3 + log 3, z5)."""
    q, pos, items, _, _, _ = _inputs(4, 6, 10, 0)
    pos = torch.tensor([0, 1, 2, 0])
    negs = torch.tensor([3, 3, 3, 5])
    out = sampled_softmax_loss(q, pos, items, negs, reduction="none")
    z = q @ items.t()
    zp = z.gather(1, pos[:, None])[:, 0]
    want = torch.logsumexp(torch.stack([zp, z[:, 3] + math.log(3), z[:, 5]], 1), 1) - zp
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref.sampled_softmax_loss(q, pos, items, negs, reduction="none"))


@pytest.mark.parametrize("mode", MODES)
def test_int32_ids_equal_int64(mode):
    L, M, V = 9, 4, 30
    q, pos, items, log_q, shared, per_row = _inputs(L, 5, V, M)
    (neg, kw), _ = _mode(mode, L, M, V, shared, per_row)
    a = _run(sampled_softmax_loss, q, pos, items, neg, dict(kw, log_q=log_q))
    b = _run(sampled_softmax_loss, q, pos.int(), items, None if neg is None else neg.int(), dict(kw, log_q=log_q))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_all_meta_tensors_infer_shapes():
    """Off the CPU the op is the reference composition: on the meta device it infers shapes."""
    q, pos, items, log_q, shared, _ = (t.to("meta") for t in _inputs(6, 4, 20, 3))
    assert sampled_softmax_loss(q, pos, items, shared, log_q=log_q, reduction="none").shape == (6,)
    out = sampled_softmax_loss(q, pos, items, num_negatives=3, seed=5, in_batch=True)
    assert out.device.type == "meta" and out.shape == ()


# ---------------------------------------------------------------------------------------------------------
# errors


def _error_cases():
    """(exception, message regex, args, kwargs) of sampled_softmax_loss calls that must raise."""
    q, pos, items, log_q, shared, per_row = _inputs(5, 4, 10, 3)
    f32 = q.float()
    return [
        # ids out of range
        (ValueError, r"sampled_softmax_loss: positives\[4\] must be in \[0, 10\), got 10",
         (q, torch.tensor([0, 1, 2, 3, 10]), items, shared), {}),
        (ValueError, r"positives\[2\] must be in \[0, 10\), got -1", (q, torch.tensor([0, 1, -1, 3, 1]), items), {}),
        (ValueError, r"positives\[1\] must be in \[0, 10\), got 1099511627776",
         (q, torch.tensor([0, 2**40, 2, 3, 1]), items), {}),
        (ValueError, r"positives\[0\] must be in \[0, 10\), got -2147483648",
         (q, torch.tensor([-2**31, 0, 0, 0, 0], dtype=torch.int32), items), {}),
        (ValueError, r"negatives\[1\] must be in \[0, 10\), got -3", (q, pos, items, torch.tensor([0, -3, 1])), {}),
        (ValueError, r"negatives\[2\] must be in \[0, 10\), got 10", (q, pos, items, torch.tensor([0, 1, 10])), {}),
        (ValueError, r"negatives\[0\] must be in \[0, 10\), got 1099511627776",
         (q, pos, items, torch.tensor([2**40, 1, 1])), {}),
        (ValueError, r"negatives\[14\] must be in \[0, 10\), got 10",
         (q, pos, items, per_row.index_put((torch.tensor(4), torch.tensor(2)), torch.tensor(10))), {}),
        (ValueError, r"items must have at least 1 row, got 0", (q, pos, items[:0]), {}),
        # temperature
        *[(ValueError, r"temperature must be finite and > 0, got " + s, (q, pos, items, shared), dict(temperature=t))
          for t, s in ((0.0, "0.0"), (-1.0, "-1.0"), (float("nan"), "nan"), (float("inf"), "inf"))],
        (ValueError, r"1/temperature overflows torch.float64, got temperature=5e-324", (q, pos, items, shared),
         dict(temperature=5e-324)),
        (ValueError, r"1/temperature overflows torch.float32, got temperature=1e-39",
         (f32, pos, items.float(), shared), dict(temperature=1e-39)),
        (TypeError, r"temperature must be a real number, got 'hot'", (q, pos, items, shared), dict(temperature="hot")),
        # shapes
        (ValueError, r"items.shape\[1\] must be 4 \(queries.shape\[1\]\), got 3", (q, pos, items[:, :3]), {}),
        (ValueError, r"queries and items must have 2 dimensions, got 1 and 2", (q[0], pos[:1], items), {}),
        (ValueError, r"queries and items must have 2 dimensions, got 2 and 3", (q, pos, items[None]), {}),
        (ValueError, r"positives must have shape \[5\], got \[4\]", (q, pos[:4], items), {}),
        (ValueError, r"positives must have shape \[5\], got \[5, 1\]", (q, pos[:, None], items), {}),
        (ValueError, r"negatives must be \[M\] or \[L=5, M\], got \[4, 3\]", (q, pos, items, per_row[:4]), {}),
        (ValueError, r"negatives must be \[M\] or \[L=5, M\], got \[1, 5, 3\]", (q, pos, items, per_row[None]), {}),
        (ValueError, r"negatives must be \[M\] or \[L=5, M\], got \[\]", (q, pos, items, torch.tensor(1)), {}),
        (ValueError, r"log_q must have shape \[10\], got \[9\]", (q, pos, items, shared), dict(log_q=log_q[:9])),
        (ValueError, r"log_q\[3\] must be finite, got nan", (q, pos, items, shared),
         dict(log_q=log_q.index_fill(0, torch.tensor([3]), float("nan")))),
        # dtypes
        (TypeError, r"positives must be int32 or int64, got torch.float64", (q, pos.double(), items), {}),
        (TypeError, r"negatives must be int32 or int64, got torch.float32", (q, pos, items, shared.float()), {}),
        (TypeError, r"positives must be int32 or int64, got torch.int16", (q, pos.short(), items), {}),
        (TypeError, r"items must have the dtype of queries \(torch.float64\), got torch.int64",
         (q, pos, items.long()), {}),
        (TypeError, r"queries must be float32 or float64, got torch.int64", (q.long(), pos, items.long()), {}),
        (TypeError, r"queries must be float32 or float64, got torch.float16", (q.half(), pos, items.half()), {}),
        (TypeError, r"items must have the dtype of queries \(torch.float32\), got torch.float64",
         (f32, pos, items), {}),
        (TypeError, r"log_q must have the dtype of queries \(torch.float64\), got torch.float32",
         (q, pos, items, shared), dict(log_q=log_q.float())),
        # num_negatives, reduction, seed
        (ValueError, r"num_negatives must match negatives.shape\[-1\]=3, got 2", (q, pos, items, shared),
         dict(num_negatives=2)),
        (ValueError, r"num_negatives must be in \[0, 2\^63\), got -1", (q, pos, items), dict(num_negatives=-1)),
        (ValueError, r"num_negatives must be in \[0, 2\^63\), got 9223372036854775808", (q, pos, items),
         dict(num_negatives=2**63, seed=1)),
        (TypeError, r"num_negatives must be an integer, got float 2.5", (q, pos, items), dict(num_negatives=2.5)),
        # M near 2^62 drawn in the kernel: its per-row scratch size is checked (was a cryptic vector error)
        (ValueError, r"scratch bytes overflows int64", (q, pos, items), dict(num_negatives=2**62, seed=1)),
        (ValueError, r"number of candidates overflows int64", (q, pos, items),
         dict(num_negatives=2**63 - 1, seed=1)),
        (ValueError, r"reduction must be 'none', 'sum' or 'mean', got 'avg'", (q, pos, items, shared),
         dict(reduction="avg")),
        *[(ValueError, r"seed must be in \[0, 2\^63\), got %d" % s, (q, pos, items), dict(num_negatives=2, seed=s))
          for s in (-1, 2**63, 2**64)],
        (TypeError, r"seed must be an integer, got float 1.5", (q, pos, items), dict(num_negatives=2, seed=1.5)),
        # devices
        (TypeError, r"items must be on the same device as queries \(cpu\), got meta", (q, pos, items.to("meta")), {}),
        (TypeError, r"positives must be on the same device as queries \(cpu\), got meta",
         (q, pos.to("meta"), items), {}),
        (TypeError, r"negatives must be on the same device as queries \(cpu\), got meta",
         (q, pos, items, shared.to("meta")), {}),
        (TypeError, r"log_q must be on the same device as queries \(cpu\), got meta", (q, pos, items),
         dict(log_q=log_q.to("meta"))),
        (TypeError, r"positives must be on the same device as queries \(meta\), got cpu",
         (q.to("meta"), pos, items.to("meta")), {}),
    ]


@pytest.mark.parametrize("exc, match, args, kwargs",
                         [pytest.param(*c, id=c[1].replace("\\", "")) for c in _error_cases()])
def test_errors(exc, match, args, kwargs):
    with pytest.raises(exc, match=match):
        sampled_softmax_loss(*args, **kwargs)


def test_direct_op_calls_are_checked():
    """torch.ops.recops.sampled_softmax(_backward) called directly: the same checks in the bodies and the fake
    kernels. Before, a meta tensor mixed with CPU ones returned uninitialised memory (the fake kernel ran),
    float positives were truncated to ids, num_negatives was ignored and temperature 0 divided by zero."""
    q, pos, items, _, shared, _ = _inputs(5, 4, 10, 3)
    op, bwd = torch.ops.recops.sampled_softmax.default, torch.ops.recops.sampled_softmax_backward.default

    def fwd(**over):
        a = dict(queries=q, items=items, positives=pos, negatives=shared, log_q=None, num_negatives=3, seed=0,
                 temperature=1.0, in_batch=False, remove_accidental_hits=True)
        a.update(over)
        return op(*a.values())

    loss, lse = fwd()
    torch.testing.assert_close(loss, ref.sampled_softmax_loss(q, pos, items, shared, reduction="none"))
    for exc, match, over in [
        (TypeError, "items must be on the same device as queries", dict(items=items.to("meta"))),
        (TypeError, "positives must be int32 or int64, got torch.float64", dict(positives=pos.double())),
        (ValueError, r"num_negatives must match negatives.shape\[-1\]=3, got 8", dict(num_negatives=8)),
        (ValueError, "temperature must be finite and > 0, got 0.0", dict(temperature=0.0)),
        (ValueError, r"seed must be in \[0, 2\^63\), got -1", dict(negatives=None, seed=-1)),
        (ValueError, r"positives\[0\] must be in \[0, 10\), got %d" % (pos[0] + 100), dict(positives=pos + 100)),
    ]:
        with pytest.raises(exc, match=match):
            fwd(**over)
    grad = torch.ones(5, dtype=torch.float64)
    args = [grad, q, items, pos, shared, None, lse, 3, 0, 1.0, False, True]
    gq, gi = bwd(*args)
    assert gq.shape == q.shape and gi.shape == items.shape
    for i, bad, exc, match in [(6, lse.to("meta"), TypeError, "lse must be on the same device as queries"),
                               (0, grad.to("meta"), TypeError, "grad_loss must be on the same device"),
                               (6, lse[:3], ValueError, "lse must have 5 elements, got 3"),
                               (0, grad.float(), TypeError, "grad_loss"),
                               (2, items.to("meta"), TypeError, "items must be on the same device")]:
        with pytest.raises(exc, match=match):
            bwd(*args[:i], bad, *args[i + 1:])


def test_generated_negatives_errors():
    with pytest.raises(ValueError, match="drawing negatives needs at least 1 item, got 0"):
        ref.generated_negatives(2, 3, 0, 1)
    with pytest.raises(ValueError, match="sizes must be non-negative"):
        recops._C.sampled_softmax_negatives(-1, 3, 5, 1, torch.empty(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="out must have rows \\* m elements"):
        recops._C.sampled_softmax_negatives(2, 3, 5, 1, torch.empty(5, dtype=torch.int64))
    assert ref.generated_negatives(0, 3, 0, 1).shape == (0, 3)  # nothing drawn: no item needed


# ---------------------------------------------------------------------------------------------------------
# determinism


def _generated_run(threads, seed, L=300):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        q, pos, items, log_q, _, _ = _inputs(L, 16, 500, 0, torch.float32, seed=3)
        return _run(sampled_softmax_loss, q, pos, items, None,
                    dict(num_negatives=20, seed=seed, log_q=log_q, in_batch=True, reduction="sum"))
    finally:
        torch.set_num_threads(old)


def test_deterministic_across_calls_and_threads():
    """Same seed: bitwise the same loss and gradients from call to call at a thread count. Across thread counts
    (1 vs 2: one task vs two, L = 300 rows) the loss and the query gradient are bitwise the same (computed per
    row); the item gradient adds the per-task buffers in task order, so it is bitwise deterministic for a fixed
    thread count and equal to rounding across thread counts."""
    one_a, one_b = _generated_run(1, 7), _generated_run(1, 7)
    two_a, two_b = _generated_run(2, 7), _generated_run(2, 7)
    for a, b in ((one_a, one_b), (two_a, two_b)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(one_a[0], two_a[0]) and torch.equal(one_a[1], two_a[1])
    torch.testing.assert_close(one_a[2], two_a[2], rtol=1e-5, atol=1e-6)
    assert not torch.equal(_generated_run(1, 8)[0], one_a[0])  # another seed, other negatives


def test_seed_from_torch_generator():
    q, pos, items, _, _, _ = _inputs(20, 4, 100, 0)

    def draw(**kw):
        return sampled_softmax_loss(q, pos, items, num_negatives=6, reduction="none", **kw)

    torch.manual_seed(11)
    a = draw()
    torch.manual_seed(11)
    b = draw()
    assert torch.equal(a, b)
    assert not torch.equal(draw(), b)  # the default generator moved on: a new seed
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(draw(generator=g1), draw(generator=g2))
    # the drawn seed is the first torch.randint(0, 2^62) of the generator: the op equals the explicit seed
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(5)))
    assert torch.equal(draw(generator=torch.Generator().manual_seed(5)), draw(seed=seed))
    assert not torch.equal(draw(seed=1), draw(seed=2))
    assert torch.equal(draw(seed=2**63 - 1), draw(seed=2**63 - 1))


# ---------------------------------------------------------------------------------------------------------
# generated negatives


def test_generated_negatives_in_range_and_uniform():
    rows, m, v = 2000, 100, 50  # 200k draws
    ids = ref.generated_negatives(rows, m, v, 99)
    assert ids.shape == (rows, m) and ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < v
    expected = rows * m / v
    chi2 = float(((torch.bincount(ids.flatten(), minlength=v) - expected) ** 2 / expected).sum())
    assert chi2 < 150  # 49 degrees of freedom: mean 49, sd ~9.9; one bucket 10% off alone adds 40
    # neither the rows nor the columns repeat each other, and a new seed gives new ids
    assert (ids[1:] != ids[:-1]).float().mean() > 0.9 and (ids[:, 1:] != ids[:, :-1]).float().mean() > 0.9
    assert (ref.generated_negatives(rows, m, v, 100) != ids).float().mean() > 0.9
    huge = ref.generated_negatives(50, 40, 2**40, 3)
    assert int(huge.min()) >= 0 and int(huge.max()) < 2**40 and huge.max() > 2**39  # spans a wide V too
    assert torch.equal(ref.generated_negatives(4, 3, 7, 2**63 - 1), ref.generated_negatives(4, 3, 7, 2**63 - 1))


@pytest.mark.parametrize("in_batch", [False, True])
def test_generated_equals_explicit_per_row(in_batch):
    L, M, V = 40, 9, 60
    q, pos, items, log_q, _, _ = _inputs(L, 8, V, M)
    kw = dict(log_q=log_q, in_batch=in_batch, temperature=0.3)
    gen = _run(sampled_softmax_loss, q, pos, items, None, dict(kw, num_negatives=M, seed=77))
    explicit = _run(sampled_softmax_loss, q, pos, items, ref.generated_negatives(L, M, V, 77), kw)
    assert all(torch.equal(a, b) for a, b in zip(gen, explicit))  # the same candidates in the same order


# ---------------------------------------------------------------------------------------------------------
# opcheck and torch.compile


def test_opcheck():
    q, pos, items, log_q, shared, per_row = _inputs(20, 8, 30, 4, torch.float32)
    qg, ig = q.requires_grad_(), items.requires_grad_()
    samples = [(qg, ig, pos, shared, log_q, 4, 0, 0.5, False, True),
               (qg, ig, pos.int(), None, None, 5, 123, 1.0, True, False),
               (qg, ig, pos, per_row, log_q, 4, 0, 2.0, True, True)]
    for args in samples:
        torch.library.opcheck(torch.ops.recops.sampled_softmax.default, args)
        _, lse = torch.ops.recops.sampled_softmax(*args)
        plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        torch.library.opcheck(torch.ops.recops.sampled_softmax_backward.default,
                              (torch.randn(20), *plain[:5], lse.detach(), *plain[5:]))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(backend):
    q, pos, items, log_q, shared, _ = _inputs(24, 8, 40, 5)
    w = torch.randn(8, 8, dtype=torch.float64) / 3

    def f(x, items, pos, shared, log_q):
        h = torch.tanh(x @ w)
        a = sampled_softmax_loss(h, pos, items, shared, log_q=log_q, temperature=0.2)
        b = sampled_softmax_loss(h, pos, items * 2, num_negatives=6, seed=9, in_batch=True, reduction="sum")
        return a + 0.1 * b

    x = q.clone().requires_grad_()
    it = items.clone().requires_grad_()
    out = torch.compile(f, fullgraph=True, backend=backend)(x, it, pos, shared, log_q)
    want = f(x, it, pos, shared, log_q)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
    for g, g_want in zip(torch.autograd.grad(out, (x, it)), torch.autograd.grad(want, (x, it))):
        torch.testing.assert_close(g, g_want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# every CPU ISA path (RECOPS_CPU_ISA is read once per process: one subprocess each)

ISA_CASES = [(37, 50, 60, 7), (40, 64, 9, 16), (3, 5, 4, 2)]  # L=37/40 with 2 threads: two tasks; D=50/5: tails


def _isa_results(out_path):
    """Run in the subprocess: every mode in float32 and float64; saves the ISA that ran and the results."""
    torch.set_num_threads(2)
    results = []
    for dtype in (torch.float32, torch.float64):
        for L, D, V, M in ISA_CASES:
            q, pos, items, log_q, shared, per_row = _inputs(L, D, V, M, dtype, seed=L)
            for mode in MODES:
                (neg, kw), _ = _mode(mode, L, M, V, shared, per_row)
                results.append(_run(sampled_softmax_loss, q, pos, items, neg,
                                    dict(kw, log_q=log_q, temperature=0.5, reduction="none")))
    torch.save([recops._C.cpu_isa(), results], out_path)


ISAS = ["generic", "avx2", "avx512"]


@pytest.fixture(scope="module")
def isa_runs(tmp_path_factory):
    """Start one subprocess per ISA at once (each mostly imports torch), then wait for all: {isa: results}."""
    out = tmp_path_factory.mktemp("isa")
    procs = {}
    for isa in ISAS:
        code = f"from tests.ops.test_sampled_softmax import _isa_results; _isa_results({str(out / isa)!r})"
        procs[isa] = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                                      env=dict(os.environ, RECOPS_CPU_ISA=isa, OMP_NUM_THREADS="2"))
    codes = {isa: p.wait(timeout=300) for isa, p in procs.items()}
    return {isa: torch.load(out / isa) if rc == 0 else rc for isa, rc in codes.items()}


@pytest.mark.parametrize("isa", ISAS)
def test_isa_path_matches_ref(isa, isa_runs):
    # generic: the portable kernels; avx2: the AVX2+FMA kernels; avx512: the AVX-512 kernels. The core knows
    # the values generic|avx2 and otherwise runs the best ISA of the CPU, so "avx512" is the default path,
    # which is AVX-512 on a CPU that has it (the subprocess reports recops._C.cpu_isa(), asserted below).
    assert not isinstance(isa_runs[isa], int), f"the {isa} subprocess failed with exit code {isa_runs[isa]}"
    ran, results = isa_runs[isa]
    got = iter(results)
    for dtype in (torch.float32, torch.float64):
        for L, D, V, M in ISA_CASES:
            q, pos, items, log_q, shared, per_row = _inputs(L, D, V, M, dtype, seed=L)
            for mode in MODES:
                _, (ref_neg, ref_kw) = _mode(mode, L, M, V, shared, per_row)
                want = _run(ref.sampled_softmax_loss, q, pos, items, ref_neg,
                            dict(ref_kw, log_q=log_q, temperature=0.5, reduction="none"), dtype=torch.float64)
                _assert_all_close(next(got), want, dtype)
    # a CPU without the requested ISA runs a narrower one (checked against the reference above all the same)
    if ran != isa:
        assert isa != "generic" and ran in ("generic", "avx2")
        pytest.skip(f"this CPU has no {isa}: the {ran} path ran (and matched the reference)")


# ---------------------------------------------------------------------------------------------------------
# CUDA kernels against the CPU op (float32; skipped without a CUDA device and a CUDA build of recops)

CUDA_OK = recops.has_cuda() and torch.cuda.is_available()
cuda_only = pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and a CUDA build of recops")

# L = 0 / 1 / 7 / 300 (C up to 428 with in_batch); D = 1 and 50 (scalar dot), 64 (float4), 2000 (forward query
# in shared memory, backward from global memory) and 4000 (both from global memory); V = 1 .. 3706
CUDA_SHAPES = [(0, 8, 50, 3), (1, 1, 1, 0), (7, 50, 3706, 17), (300, 64, 2, 128), (40, 2000, 60, 9),
               (33, 4000, 100, 5)]


def _on(device, q, pos, items, neg, kw, grad_seed=0):
    """_run of the fused op in float32 with every tensor on `device`; the results on the CPU."""
    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    out = _run(sampled_softmax_loss, q.to(device), pos.to(device), items.to(device),
               None if neg is None else neg.to(device), kw, grad_seed=grad_seed, dtype=torch.float32)
    return tuple(t.cpu() for t in out)


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: "L%d-D%d-V%d-M%d" % s)
def test_cuda_matches_cpu(shape):
    """Loss and both gradients of the CUDA kernels against the CPU op on the same float32 inputs, every mode,
    a complementary pair of option sets per mode (so every shape meets all 8), the reduction rotating."""
    L, D, V, M = shape
    si = CUDA_SHAPES.index(shape)
    q, pos, items, log_q, shared, per_row = _inputs(L, D, V, M, torch.float32, seed=si)
    for mi, mode in enumerate(MODES):
        (neg, kw), _ = _mode(mode, L, M, V, shared, per_row)
        for oi in (mi % 4, 7 - mi % 4):
            use_log_q, hits, temperature = OPTIONS[oi]
            opts = dict(kw, temperature=temperature, log_q=log_q if use_log_q else None, remove_accidental_hits=hits,
                        reduction=REDUCTIONS[(si + mi + oi) % 3])
            want = _on("cpu", q, pos, items, neg, opts, grad_seed=oi)
            got = _on("cuda", q, pos, items, neg, opts, grad_seed=oi)
            _assert_all_close(got, want, torch.float32)
            if L == 0:
                assert torch.equal(got[2], torch.zeros(V, D))


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("V", [60, 3_000_017])
@pytest.mark.parametrize("in_batch", [False, True])
def test_cuda_generated_equals_explicit_per_row(V, in_batch):
    """The ids drawn on the device are the CPU's negative_id bit for bit: drawing them in the kernel gives the
    same loss and query gradient, bitwise, as passing the host-drawn ids as per-row negatives (a differing id
    would score another random item)."""
    L, M, D = 40, 9, 2 if V > 1000 else 8
    q, pos, items, log_q, _, _ = _inputs(L, D, V, M, torch.float32)
    kw = dict(log_q=log_q, in_batch=in_batch, temperature=0.3)
    gen = _on("cuda", q, pos, items, None, dict(kw, num_negatives=M, seed=77))
    explicit = _on("cuda", q, pos, items, ref.generated_negatives(L, M, V, 77), kw)
    assert torch.equal(gen[0], explicit[0]) and torch.equal(gen[1], explicit[1])
    torch.testing.assert_close(gen[2], explicit[2], rtol=1e-5, atol=1e-6)  # float atomics: order-dependent


@cuda_only
@pytest.mark.cuda
def test_cuda_deterministic_loss_and_query_gradient():
    """Same seed: the loss and the query gradient are bitwise the same from call to call (fixed per-lane order and
    shuffle tree); the item gradient is accumulated with float atomics (documented: equal to rounding only)."""
    q, pos, items, log_q, _, _ = _inputs(300, 16, 500, 0, torch.float32, seed=3)
    kw = dict(num_negatives=20, seed=7, log_q=log_q, in_batch=True, reduction="sum")
    a, b = _on("cuda", q, pos, items, None, kw), _on("cuda", q, pos, items, None, kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.testing.assert_close(a[2], b[2], rtol=1e-5, atol=1e-6)


def _cuda_error_cases():
    """(args, kwargs) of float32 calls the CPU op rejects after reading ids or log_q (the device flags them), and
    one rejected by the size checks the binding runs on the host."""
    q, pos, items, log_q, shared, per_row = _inputs(5, 4, 10, 3, torch.float32)
    nan_at_3 = log_q.index_fill(0, torch.tensor([3]), float("nan"))
    return [
        ((q, torch.tensor([0, 1, 2, 3, 10]), items, shared), {}),
        ((q, torch.tensor([0, 1, -1, 3, 1]), items), dict(in_batch=True)),
        ((q, torch.tensor([0, 2**40, 2, 3, 1]), items), dict(num_negatives=2, seed=3)),
        ((q, torch.tensor([-2**31, 0, 0, 0, 0], dtype=torch.int32), items), {}),
        ((q, pos, items, torch.tensor([0, -3, 1])), {}),
        ((q, pos, items, torch.tensor([2**40, 1, 1])), dict(in_batch=True)),
        ((q, pos, items, per_row.index_put((torch.tensor(4), torch.tensor(2)), torch.tensor(10))), {}),
        ((q, pos, items, shared), dict(log_q=nan_at_3)),
        ((q, pos, items, shared), dict(log_q=log_q.index_fill(0, torch.tensor([9]), float("inf")))),
        ((q[:0], pos[:0], items, torch.tensor([0, 10, 1])), {}),  # L = 0: the shared ids are still checked
        ((q[:0], pos[:0], items), dict(log_q=nan_at_3)),
        ((q, pos, items[:0]), dict(num_negatives=2, seed=1)),  # V = 0: checked on the host before the launch
    ]


def _value_error(fn) -> str:
    with pytest.raises(ValueError) as e:
        fn()
    return str(e.value)


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("case", range(len(_cuda_error_cases())))
def test_cuda_bad_input_raises_the_cpu_error(case):
    """The device flags the bad id / log_q value, Launch reruns the core's checks on host copies: the CUDA op
    raises the CPU op's ValueError word for word, from the forward and from a direct backward call."""
    args, kwargs = _cuda_error_cases()[case]
    cuda_args = [t.cuda() if isinstance(t, torch.Tensor) else t for t in args]
    cuda_kwargs = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    cpu = _value_error(lambda: sampled_softmax_loss(*args, **kwargs))
    assert cpu == _value_error(lambda: sampled_softmax_loss(*cuda_args, **cuda_kwargs))
    q, pos, items = cuda_args[:3]
    neg = cuda_args[3] if len(cuda_args) > 3 else None
    m = kwargs.get("num_negatives", 0 if neg is None else neg.shape[-1])
    rows = q.shape[0]
    bwd = torch.ops.recops.sampled_softmax_backward.default
    assert cpu == _value_error(lambda: bwd(torch.ones(rows, device="cuda"), q, items, pos, neg,
                                           cuda_kwargs.get("log_q"), torch.zeros(rows, device="cuda"), m,
                                           kwargs.get("seed", 0), 1.0, kwargs.get("in_batch", False), True))


@cuda_only
@pytest.mark.cuda
def test_cuda_bad_ids_are_never_read():
    """With the checks off nothing raises and no kernel reads out of bounds (a bad id is masked): the call, its
    backward and a synchronisation complete, and the rows that never meet a bad id match the CPU op."""
    q, pos, items, _, _, _ = _inputs(6, 8, 20, 3, torch.float32)
    bad_pos = pos.clone()
    bad_pos[5] = 2**40
    neg = torch.tensor([[1, 2, 3]] * 5 + [[-7, 2**50, 4]])
    recops.set_checks(False)
    try:
        loss, gq, _ = _on("cuda", q, bad_pos, items, neg, dict(reduction="none"))
        torch.cuda.synchronize()
    finally:
        recops.set_checks(True)
    want, want_gq, _ = _on("cpu", q[:5], pos[:5], items, neg[:5], dict(reduction="none"))
    torch.testing.assert_close(loss[:5], want, rtol=3e-5, atol=3e-5)
    torch.testing.assert_close(gq[:5], want_gq, rtol=2e-3, atol=2e-3)


@cuda_only
@pytest.mark.cuda
def test_cuda_float64_runs_the_reference():
    """float64 on CUDA has no fused kernel: the plain-PyTorch composition runs (the CPU op's values)."""
    q, pos, items, log_q, shared, _ = _inputs(9, 8, 30, 5)
    kw = dict(in_batch=True, temperature=0.5, reduction="none")
    got = _run(sampled_softmax_loss, q.cuda(), pos.cuda(), items.cuda(), shared.cuda(), dict(kw, log_q=log_q.cuda()))
    want = _run(sampled_softmax_loss, q, pos, items, shared, dict(kw, log_q=log_q))
    _assert_all_close(tuple(t.cpu() for t in got), want, torch.float64)


@cuda_only
@pytest.mark.cuda
def test_cuda_opcheck():
    _opcheck_both_ops("cuda")
