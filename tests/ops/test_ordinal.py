# SPDX-License-Identifier: Apache-2.0
"""Ordinal losses vs the naive float64 references: sweeps, properties, gradients, opcheck, errors, compile."""

import math

import mpmath
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from recops.ops import feedback_to_levels, gnolr_loss, ordinal_logistic_loss
from recops.ops import ordinal_ref as ref

BATCHES = [0, 1, 7, 97, 1025, 5000]  # 5000 > one 2048-sample reduction block
REDUCTIONS = ["none", "sum", "mean"]


def _dtypes(device):
    return [torch.float32, torch.float64] if device.type == "cpu" else [torch.float32]


def _ordinal_inputs(batch, num_classes, dtype, device, weighted=False):
    scores = (3 * torch.randn(batch, dtype=torch.float64)).to(dtype=dtype, device=device).requires_grad_()
    steps = 0.2 + torch.rand(max(num_classes - 1, 0), dtype=torch.float64)
    thresholds = (torch.cumsum(steps, 0) - steps.sum() / 2).to(dtype=dtype, device=device).requires_grad_()
    labels = torch.randint(0, num_classes, (batch,), device=device)
    weights = torch.rand(batch, dtype=dtype, device=device) if weighted else None
    return scores, thresholds, labels, weights


def _gnolr_inputs(batch, num_levels, dtype, device, weighted=False):
    """Valid inputs: gamma_{t+1} |c| < a_{t+1} - a_t, so the naive reference is finite."""
    cos = (2 * torch.rand(batch, num_levels, dtype=torch.float64) - 1)
    gamma = 1 + torch.rand(num_levels, dtype=torch.float64)
    steps = gamma + 0.3 + torch.rand(num_levels, dtype=torch.float64)
    thresholds = torch.cumsum(steps, 0) - 1.5
    levels = torch.randint(0, num_levels + 1, (batch,))
    levels[: min(batch, num_levels + 1)] = torch.arange(min(batch, num_levels + 1))  # every level present
    weights = torch.rand(batch, dtype=torch.float64) if weighted else None
    out = [t.to(dtype=dtype, device=device).requires_grad_() for t in (cos, gamma, thresholds)]
    return (*out, levels.to(device), None if weights is None else weights.to(dtype=dtype, device=device))


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


def _check_vs_ref(fn, ref_fn, inputs, kwargs, diff_inputs, dtype):
    out = fn(*inputs, **kwargs)
    expected = ref_fn(*inputs, **kwargs)
    torch.testing.assert_close(out, expected, **_tol(dtype))
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, diff_inputs, grad_out)
    grads_ref = torch.autograd.grad(expected, diff_inputs, grad_out)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, **_tol(dtype))


# ---------------------------------------------------------------------------------------------------------
# correctness vs reference


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("num_classes", [1, 2, 3, 6])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_ordinal_matches_ref(device, batch, num_classes, reduction, weighted):
    for dtype in _dtypes(device):
        scores, thresholds, labels, weights = _ordinal_inputs(batch, num_classes, dtype, device, weighted)
        _check_vs_ref(ordinal_logistic_loss, ref.ordinal_logistic_loss, (scores, thresholds, labels),
                      dict(reduction=reduction, weights=weights), (scores, thresholds), dtype)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("num_levels", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gnolr_matches_ref(device, batch, num_levels, nested, reduction):
    for dtype in _dtypes(device):
        for weighted in (False, True):
            cos, gamma, thresholds, levels, weights = _gnolr_inputs(batch, num_levels, dtype, device, weighted)
            _check_vs_ref(gnolr_loss, ref.gnolr_loss, (cos, gamma, thresholds, levels),
                          dict(reduction=reduction, weights=weights, nested=nested), (cos, gamma, thresholds), dtype)


@given(batch=st.integers(0, 300), num_levels=st.integers(1, 10), nested=st.booleans(),
       reduction=st.sampled_from(REDUCTIONS))
def test_gnolr_property_vs_ref(batch, num_levels, nested, reduction):
    # T up to 10 also covers the CUDA generic (T > 8) path when run on a GPU build.
    cos, gamma, thresholds, levels, _ = _gnolr_inputs(batch, num_levels, torch.float64, "cpu")
    _check_vs_ref(gnolr_loss, ref.gnolr_loss, (cos, gamma, thresholds, levels),
                  dict(reduction=reduction, nested=nested), (cos, gamma, thresholds), torch.float64)


def _mp_log_sigmoid_diff(a, b):
    # sigmoid(a) - sigmoid(b) = (e^-b - e^-a) / ((1 + e^-a)(1 + e^-b)): no cancellation against 1
    a, b = mpmath.mpf(a), mpmath.mpf(b)
    ea, eb = mpmath.exp(-a), mpmath.exp(-b)
    return mpmath.log((eb - ea) / ((1 + ea) * (1 + eb)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_values_vs_mpmath(dtype):
    mpmath.mp.dps = 60
    # (z_k, z_{k+1}) pairs: far tails, a tiny gap and a gap at ln 2 (the log1mexp switch point).
    pairs = [(1e4, -1e4), (-1e4, -1e4 - 5), (1e4 + 3, 1e4), (30.0, -30.0), (2.0, 2.0 - 1e-3), (0.5, 0.5 - math.log(2)),
             (-60.0, -61.0)]
    for a, b in pairs:
        # ordinal loss, label 1 of 3 classes: z_1 = f - theta_1 = a, z_2 = f - theta_2 = b with f = 0
        scores = torch.zeros(1, dtype=dtype)
        thresholds = torch.tensor([-a, -b], dtype=dtype)
        out = ordinal_logistic_loss(scores, thresholds, torch.tensor([1]), "sum")
        a32, b32 = -float(thresholds[0]), -float(thresholds[1])  # the values the op actually saw
        want = -float(_mp_log_sigmoid_diff(a32, b32))
        assert math.isfinite(out.item())
        assert out.item() == pytest.approx(want, rel=1e-5 if dtype == torch.float32 else 1e-12, abs=1e-30)


# ---------------------------------------------------------------------------------------------------------
# properties


def test_t1_equals_bce(device):
    for dtype in _dtypes(device):
        cos = torch.randn(50, 1, dtype=dtype, device=device)
        gamma = torch.tensor([2.5], dtype=dtype, device=device)
        thresholds = torch.tensor([0.3], dtype=dtype, device=device)
        levels = torch.randint(0, 2, (50,), device=device)
        z = gamma * cos[:, 0] - thresholds
        bce = F.binary_cross_entropy_with_logits(z, levels.to(dtype), reduction="none")
        for nested in (True, False):
            torch.testing.assert_close(gnolr_loss(cos, gamma, thresholds, levels, "none", nested=nested), bce)
        scores = torch.randn(50, dtype=dtype, device=device)
        bce = F.binary_cross_entropy_with_logits(scores - thresholds, levels.to(dtype), reduction="mean")
        torch.testing.assert_close(ordinal_logistic_loss(scores, thresholds, levels), bce)


def test_class_probabilities_sum_to_one(device):
    for dtype in _dtypes(device):
        batch, num_classes = 64, 5
        scores, thresholds, _, _ = _ordinal_inputs(batch, num_classes, dtype, device)
        probs = torch.stack([torch.exp(-ordinal_logistic_loss(scores, thresholds, torch.full((batch,), k, device=device),
                                                              "none")) for k in range(num_classes)], 1)
        torch.testing.assert_close(probs.sum(1), torch.ones(batch, dtype=dtype, device=device))
        cos, gamma, th, _, _ = _gnolr_inputs(batch, num_classes - 1, dtype, device)
        probs = torch.stack([torch.exp(-gnolr_loss(cos, gamma, th, torch.full((batch,), k, device=device), "none",
                                                   nested=False)) for k in range(num_classes)], 1)
        torch.testing.assert_close(probs.sum(1), torch.ones(batch, dtype=dtype, device=device))


def test_nested_is_sum_of_subtask_olr():
    cos, gamma, thresholds, levels, _ = _gnolr_inputs(40, 4, torch.float64, "cpu")
    total = torch.zeros(40, dtype=torch.float64)
    for s in range(1, 5):  # sub-task s: the plain OLR over {0..s} on the first s levels, label min(k, s)
        total += gnolr_loss(cos[:, :s], gamma[:s], thresholds[:s], levels.clamp(max=s), "none", nested=False)
    torch.testing.assert_close(gnolr_loss(cos, gamma, thresholds, levels, "none"), total)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_inputs_stay_finite(device, dtype):
    if dtype not in _dtypes(device):
        pytest.skip("dtype not supported on this device")
    # |z| = 1e4: GNOLR with c = +-1, gamma = 1e4.
    num_levels = 3
    cos = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]] * 2,
                       dtype=dtype, device=device, requires_grad=True)
    gamma = torch.full((num_levels,), 1e4, dtype=dtype, device=device, requires_grad=True)
    thresholds = torch.tensor([0.0, 1.0, 2.0], dtype=dtype, device=device, requires_grad=True)
    levels = torch.tensor([0, 1, 2, 3, 1, 2, 0, 3], device=device)
    for nested in (True, False):
        out = gnolr_loss(cos, gamma, thresholds, levels, "none", nested=nested)
        grads = torch.autograd.grad(out.sum(), (cos, gamma, thresholds))
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
        naive = ref.gnolr_loss(cos.detach(), gamma.detach(), thresholds.detach(), levels, "none", nested=nested)
        assert not torch.isfinite(naive).all()  # the naive formula overflows or takes log(0) here
    # ordinal loss with scores at +-1e4 and the label in the middle
    scores = torch.tensor([1e4, -1e4, 0.0], dtype=dtype, device=device, requires_grad=True)
    th = torch.tensor([-1.0, 1.0], dtype=dtype, device=device, requires_grad=True)
    labels = torch.tensor([1, 1, 1], device=device)
    out = ordinal_logistic_loss(scores, th, labels, "none")
    grads = torch.autograd.grad(out.sum(), (scores, th))
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    # -log(sigmoid(1 - f) - sigmoid(-1 - f)) = f - log(e - 1/e) up to e^-f terms
    # (the same at f = -1e4 by symmetry)
    for b in (0, 1):
        assert out[b].item() == pytest.approx(1e4 - math.log(math.e - 1 / math.e), rel=1e-6)
    assert not torch.isfinite(ref.ordinal_logistic_loss(scores.detach(), th.detach(), labels, "none")).all()


def test_violating_and_tied_levels_clamped(device):
    # z_1 <= z_2 (gamma_2 c_2 > a_2 - a_1): p1 - p2 <= 0, so the naive log is NaN / -inf; recops clamps.
    for dtype in _dtypes(device):
        cos = torch.tensor([[0.1, 1.0], [0.5, 0.5]], dtype=dtype, device=device, requires_grad=True)
        gamma = torch.tensor([1.0, 4.0], dtype=dtype, device=device)
        thresholds = torch.tensor([0.0, 0.5], dtype=dtype, device=device)
        levels = torch.tensor([1, 1], device=device)
        min_gap = 1e-6
        out = gnolr_loss(cos, gamma, thresholds, levels, "none", min_gap=min_gap)
        (g,) = torch.autograd.grad(out.sum(), cos)
        assert torch.isfinite(out).all() and torch.isfinite(g).all()
        z = torch.cumsum(gamma * cos.detach(), 1) - thresholds
        l1m = math.log(-math.expm1(-min_gap))
        want = -F.logsigmoid(z[:, 0]) - (F.logsigmoid(z[:, 0]) + F.logsigmoid(-z[:, 1]) + l1m)
        torch.testing.assert_close(out, want.to(dtype))
        assert not torch.isfinite(ref.gnolr_loss(cos.detach(), gamma, thresholds, levels, "none")).all()
    # nearly tied: gap 1e-9 < min_gap, and gap 1e-3 > min_gap (exact there)
    cos = torch.zeros(2, 2, dtype=torch.float64)
    thresholds = torch.tensor([0.0, 1e-9], dtype=torch.float64)
    out = gnolr_loss(cos, torch.ones(2, dtype=torch.float64), thresholds, torch.tensor([1, 1]), "none")
    assert torch.isfinite(out).all()
    thresholds = torch.tensor([0.0, 1e-3], dtype=torch.float64)
    out = gnolr_loss(cos, torch.ones(2, dtype=torch.float64), thresholds, torch.tensor([1, 1]), "none")
    torch.testing.assert_close(out, ref.gnolr_loss(cos, torch.ones(2, dtype=torch.float64), thresholds,
                                                   torch.tensor([1, 1]), "none"))


def test_deterministic_and_thread_count_independent():
    cos, gamma, thresholds, levels, weights = _gnolr_inputs(20_000, 3, torch.float32, "cpu", weighted=True)
    scores, th, labels, _ = _ordinal_inputs(20_000, 4, torch.float32, "cpu")
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, old):
            torch.set_num_threads(threads)
            loss = gnolr_loss(cos, gamma, thresholds, levels, weights=weights)
            g = torch.autograd.grad(loss, (cos, gamma, thresholds))
            loss2 = ordinal_logistic_loss(scores, th, labels, "sum")
            g2 = torch.autograd.grad(loss2, (scores, th))
            results.append((loss, *g, loss2, *g2))
    finally:
        torch.set_num_threads(old)
    for r in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], r))


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_isa_variants_match_ref(isa, tmp_path):
    # float32 with T <= 4 runs the fused 8-lane block kernel, built once per ISA and chosen once per process:
    # force each in a subprocess and compare with the float64 reference.
    import os
    import subprocess
    import sys
    script = (
        "import torch, sys; sys.path.insert(0, %r); from tests.ops.test_ordinal import _gnolr_inputs, _ordinal_inputs;"
        "from recops.ops import gnolr_loss, ordinal_logistic_loss; torch.manual_seed(5); out = []\n"
        "for t in (1, 2, 3, 4):\n"
        "  for nested in (True, False):\n"
        "    c, g, a, lv, w = _gnolr_inputs(2053, t, torch.float32, 'cpu', weighted=True)\n"
        "    loss = gnolr_loss(c, g, a, lv, weights=w, nested=nested)\n"
        "    out.append((loss, *torch.autograd.grad(loss, (c, g, a))))\n"
        "  s, th, lab, w = _ordinal_inputs(2053, t + 1, torch.float32, 'cpu', weighted=True)\n"
        "  loss = ordinal_logistic_loss(s, th, lab, 'sum', weights=w)\n"
        "  out.append((loss, *torch.autograd.grad(loss, (s, th))))\n"
        "torch.save(out, %r)" % (os.getcwd(), str(tmp_path / "out.pt")))
    env = dict(os.environ, RECOPS_CPU_ISA=isa)
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    got = iter(torch.load(tmp_path / "out.pt"))
    torch.manual_seed(5)
    for t in (1, 2, 3, 4):
        for nested in (True, False):
            c, g, a, lv, w = _gnolr_inputs(2053, t, torch.float64, "cpu", weighted=True)
            loss = ref.gnolr_loss(c, g, a, lv, weights=w, nested=nested)
            for x, y in zip(next(got), (loss, *torch.autograd.grad(loss, (c, g, a)))):
                torch.testing.assert_close(x.double(), y, rtol=1e-4, atol=1e-5)
        s, th, lab, w = _ordinal_inputs(2053, t + 1, torch.float32, "cpu", weighted=True)  # same draws as above
        s, th, w = (x.detach().double().requires_grad_() for x in (s, th, w))
        loss = ref.ordinal_logistic_loss(s, th, lab, "sum", weights=w)
        for x, y in zip(next(got), (loss, *torch.autograd.grad(loss, (s, th)))):
            torch.testing.assert_close(x.double(), y, rtol=1e-4, atol=1e-5)


def test_non_contiguous_inputs():
    cos, gamma, thresholds, levels, _ = _gnolr_inputs(30, 3, torch.float64, "cpu")
    wide = torch.randn(30, 6, dtype=torch.float64)
    wide[:, ::2] = cos.detach()
    out = gnolr_loss(wide[:, ::2], gamma, thresholds, levels[None].expand(2, -1)[1], "none")
    torch.testing.assert_close(out, ref.gnolr_loss(cos, gamma, thresholds, levels, "none"))


def test_feedback_to_levels(device):
    labels = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]], device=device)
    assert feedback_to_levels(labels).tolist() == [0, 1, 2, 3, 3, 2]
    multi_hot = torch.rand(100, 4, device=device) > 0.6
    assert torch.equal(feedback_to_levels(multi_hot), ref.feedback_to_levels(multi_hot))
    assert feedback_to_levels(torch.zeros(3, 0, device=device)).tolist() == [0, 0, 0]
    assert feedback_to_levels(torch.zeros(0, 2, device=device)).shape == (0,)


# ---------------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(reduction):
    scores, thresholds, labels, weights = _ordinal_inputs(9, 4, torch.float64, "cpu", weighted=True)
    torch.autograd.gradcheck(lambda s, t: ordinal_logistic_loss(s, t, labels, reduction, weights),
                             (scores, thresholds))
    cos, gamma, th, levels, weights = _gnolr_inputs(9, 3, torch.float64, "cpu", weighted=True)
    for nested in (True, False):
        torch.autograd.gradcheck(lambda c, g, a: gnolr_loss(c, g, a, levels, reduction, weights, nested=nested),
                                 (cos, gamma, th))


def test_weights_gradient():
    scores, thresholds, labels, _ = _ordinal_inputs(9, 4, torch.float64, "cpu")
    weights = torch.rand(9, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda s, w: ordinal_logistic_loss(s, thresholds, labels, "mean", w), (scores, weights))
    cos, gamma, th, levels, _ = _gnolr_inputs(9, 3, torch.float64, "cpu")
    torch.autograd.gradcheck(lambda c, w: gnolr_loss(c, gamma, th, levels, "sum", w), (cos, weights))


def test_no_grad_inputs_and_partial_grads():
    cos, gamma, th, levels, _ = _gnolr_inputs(20, 3, torch.float64, "cpu")
    with torch.no_grad():
        torch.testing.assert_close(gnolr_loss(cos, gamma, th, levels), ref.gnolr_loss(cos, gamma, th, levels))
    (g,) = torch.autograd.grad(gnolr_loss(cos, gamma.detach(), th.detach(), levels), cos)
    (g_ref,) = torch.autograd.grad(ref.gnolr_loss(cos, gamma.detach(), th.detach(), levels), cos)
    torch.testing.assert_close(g, g_ref)


def test_double_backward_raises():
    scores, thresholds, labels, _ = _ordinal_inputs(5, 3, torch.float64, "cpu")
    for reduction in ("none", "mean"):
        out = ordinal_logistic_loss(scores, thresholds, labels, reduction).sum()
        (g,) = torch.autograd.grad(out, scores, create_graph=True)
        with pytest.raises(RuntimeError):
            g.sum().backward()
    cos, gamma, th, levels, _ = _gnolr_inputs(5, 2, torch.float64, "cpu")
    for reduction in ("none", "mean"):
        out = gnolr_loss(cos, gamma, th, levels, reduction).sum()
        (g,) = torch.autograd.grad(out, cos, create_graph=True)
        with pytest.raises(RuntimeError):
            g.sum().backward()


# ---------------------------------------------------------------------------------------------------------
# opcheck


def test_opcheck(device):
    dtype = torch.float32
    scores, thresholds, labels, weights = _ordinal_inputs(11, 4, dtype, device, weighted=True)
    cos, gamma, th, levels, _ = _gnolr_inputs(11, 3, dtype, device)
    for code in (0, 2):
        for with_grad in (False, True):
            torch.library.opcheck(torch.ops.recops.ordinal_logistic_loss.default,
                                  (scores, thresholds, labels, weights, code, 1e-6, with_grad))
            torch.library.opcheck(torch.ops.recops.gnolr_loss.default,
                                  (cos, gamma, th, levels, weights, code, 1e-6, True, with_grad))
    det = [t.detach() for t in (scores, thresholds, cos, gamma, th)]
    grad = torch.randn(11, dtype=dtype, device=device)
    empty = torch.empty(0, dtype=dtype, device=device)
    torch.library.opcheck(torch.ops.recops.ordinal_logistic_loss_backward.default,
                          (grad, det[0], det[1], labels, weights, 0, 1e-6, False, empty, empty))
    torch.library.opcheck(torch.ops.recops.gnolr_loss_backward.default,
                          (grad, det[2], det[3], det[4], levels, None, 0, 1e-6, False, False, empty, empty, empty))


# ---------------------------------------------------------------------------------------------------------
# errors


def _expect(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_ordinal_errors(device):
    scores = torch.randn(6, device=device)
    th = torch.tensor([-1.0, 0.0, 2.0], device=device)
    labels = torch.tensor([0, 1, 2, 3, 3, 0], device=device)
    bad = labels.clone()
    bad[4] = 4
    _expect(ValueError, r"ordinal_logistic_loss: labels\[4\] must be in \[0, 4\), got 4", ordinal_logistic_loss,
            scores, th, bad)
    bad[4], bad[2] = 0, -1
    _expect(ValueError, r"labels\[2\] must be in \[0, 4\), got -1", ordinal_logistic_loss, scores, th, bad)
    _expect(ValueError, r"thresholds must be strictly increasing, got thresholds\[1\]=0 >= thresholds\[2\]=0",
            ordinal_logistic_loss, scores, torch.tensor([-1.0, 0.0, 0.0], device=device), labels)
    _expect(ValueError, "strictly increasing", ordinal_logistic_loss, scores,
            torch.tensor([1.0, float("nan"), 2.0], device=device), labels)
    _expect(ValueError, r"labels.shape\[0\] must be 6, got 5", ordinal_logistic_loss, scores, th, labels[:5])
    _expect(ValueError, "scores must have 1 dimensions, got 2", ordinal_logistic_loss, scores[None], th, labels)
    _expect(ValueError, "thresholds must have 1 dimensions", ordinal_logistic_loss, scores, th[None], labels)
    _expect(ValueError, r"weights.shape\[0\] must be 6, got 2", ordinal_logistic_loss, scores, th, labels,
            weights=torch.ones(2, device=device))
    _expect(TypeError, "labels must be int64, got torch.int32", ordinal_logistic_loss, scores, th, labels.int())
    _expect(TypeError, "thresholds must have the dtype of scores", ordinal_logistic_loss, scores, th.double(),
            labels)
    _expect(TypeError, "scores must be float32 or float64 on cpu, got torch.float16", ordinal_logistic_loss,
            scores.cpu().half(), th.cpu().half(), labels.cpu())
    _expect(ValueError, "reduction must be 'none', 'sum' or 'mean', got 'avg'", ordinal_logistic_loss, scores, th,
            labels, "avg")
    _expect(ValueError, "min_gap must be finite and > 0, got 0", ordinal_logistic_loss, scores, th, labels,
            min_gap=0.0)


def test_gnolr_errors(device):
    cos = torch.rand(5, 3, device=device)
    gamma = torch.ones(3, device=device)
    th = torch.tensor([1.0, 2.0, 3.0], device=device)
    levels = torch.tensor([0, 1, 2, 3, 0], device=device)
    bad = levels.clone()
    bad[3] = 4
    _expect(ValueError, r"gnolr_loss: levels\[3\] must be in \[0, 4\), got 4", gnolr_loss, cos, gamma, th, bad)
    _expect(ValueError, r"gamma.shape\[0\] must be 3, got 2", gnolr_loss, cos, gamma[:2], th, levels)
    _expect(ValueError, r"thresholds.shape\[0\] must be 3, got 4", gnolr_loss, cos, gamma,
            torch.ones(4, device=device), levels)
    _expect(ValueError, "cos must have 2 dimensions, got 1", gnolr_loss, cos[:, 0], gamma, th, levels)
    _expect(ValueError, r"levels.shape\[0\] must be 5, got 4", gnolr_loss, cos, gamma, th, levels[:4])
    _expect(TypeError, "gamma must have the dtype of cos", gnolr_loss, cos, gamma.double(), th, levels)
    _expect(ValueError, "min_gap must be finite and > 0", gnolr_loss, cos, gamma, th, levels, min_gap=-1.0)
    _expect(ValueError, "feedback_to_levels: labels must have 2 dimensions", feedback_to_levels, levels)


def test_binding_checks():
    import recops

    scores = torch.randn(4)
    th = torch.tensor([0.0, 1.0])
    labels = torch.zeros(4, dtype=torch.int64)
    _expect(ValueError, "loss must have 4 elements, got 1", recops._C.ordinal_logistic_loss, scores, th, labels,
            reduction=0, min_gap=1e-6, loss=torch.empty(1))
    _expect(ValueError, "reduction must be 0", recops._C.ordinal_logistic_loss, scores, th, labels, reduction=5,
            min_gap=1e-6, loss=torch.empty(1))
    _expect(ValueError, "given together", recops._C.ordinal_logistic_loss, scores, th, labels, reduction=2,
            min_gap=1e-6, loss=torch.empty(()), grad_scores=torch.empty(4))
    _expect(TypeError, "grad_scores must be contiguous", recops._C.ordinal_logistic_loss, scores, th, labels,
            reduction=2, min_gap=1e-6, loss=torch.empty(()), grad_scores=torch.empty(8)[::2],
            grad_thresholds=torch.empty(2))


# ---------------------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(backend):
    head_w = torch.randn(3, dtype=torch.float64)

    @torch.compile(fullgraph=True, backend=backend)
    def f(x, gamma, th, levels, scores, th2, labels):
        cos = torch.tanh(x * head_w)
        return gnolr_loss(cos, gamma, th, levels) + ordinal_logistic_loss(scores * 2, th2, labels, "sum")

    cos, gamma, th, levels, _ = _gnolr_inputs(16, 3, torch.float64, "cpu")
    x = torch.randn(16, 3, dtype=torch.float64, requires_grad=True)
    scores, th2, labels, _ = _ordinal_inputs(16, 4, torch.float64, "cpu")
    out = f(x, gamma, th, levels, scores, th2, labels)
    want = (ref.gnolr_loss(torch.tanh(x * head_w), gamma, th, levels)
            + ref.ordinal_logistic_loss(scores * 2, th2, labels, "sum"))
    torch.testing.assert_close(out, want)
    grads = torch.autograd.grad(out, (x, gamma, th, scores, th2))
    grads_ref = torch.autograd.grad(want, (x, gamma, th, scores, th2))
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)
