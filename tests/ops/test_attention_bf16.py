# SPDX-License-Identifier: Apache-2.0
"""bfloat16 inputs to hstu_attention and jagged_attention on the CPU: the bf16 unit (AMX tiles, AVX512-BF16) or,
without one, the float32 kernels on upcast inputs, against the float64 PyTorch references.

Tolerance, from the error analysis of the bf16 path: the reference gets the same bf16-rounded inputs, so input
rounding is not an error here. What is left: P (forward, and for dV) and dS (for dq, dk) are each rounded to bf16
once (relative 2^-9 per element) before a GEMM that accumulates exact bf16 products in fp32 (error ~ n 2^-24, far
below), and every output is rounded to bf16 once (2^-9). An output element is a sum of terms each off by at most
2^-9 of itself plus its own 2^-9 rounding, so |err| <= 2^-8 sum_j |term_j|; with sums of terms that cancel up to a
few times the largest output, 2^-6 of the largest reference magnitude bounds every element (observed: 2^-8.3 at
worst). A wrong tile, mask or scale errs by O(1) of that magnitude.
"""
import os
import subprocess
import sys

import pytest
import torch

from recops import _C
from recops.ops import attention_ref, cpu_bf16_unit, hstu_attention, hstu_ref, jagged_attention

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
TOL = 2.0 ** -6


def _offsets(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int64)


def _rounded(*shape, gen):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).bfloat16().double()


def _compare(got, ref, what):
    assert got.shape == ref.shape, what
    if ref.numel() == 0:
        return
    scale = max(ref.abs().max().item(), 1e-6)
    err = (got.double() - ref).abs().max().item()
    assert err <= TOL * scale + 1e-5, f"{what}: max error {err:.3g} > {TOL:.3g} * {scale:.3g} + 1e-5"


def _case(kind, lengths, H=2, D=64, Dv=None, seed=0, strided=False, **kw):
    """Forward and backward of the op in bf16 (biases float32) against the float64 reference on the same rounded
    inputs: out, dq, dk, dv and the bias gradients."""
    g = torch.Generator().manual_seed(seed)
    off = _offsets(lengths)
    L, N = int(off[-1]), max(max(lengths), 1)
    Dv = D if Dv is None else Dv
    if strided:  # q, k, v as views of one fused projection
        fused = _rounded(L, H, 2 * D + Dv, gen=g)
        base = [fused[..., :D], fused[..., D:2 * D], fused[..., 2 * D:]]
    else:
        base = [_rounded(L, H, D, gen=g), _rounded(L, H, D, gen=g), _rounded(L, H, Dv, gen=g)]
    grad = _rounded(L, H, Dv, gen=g)
    extra = {}
    if kind == "hstu" and kw.pop("biases", False):
        extra["pos_bias"] = 0.1 * torch.randn(2 * N - 1, generator=g, dtype=torch.float64)
        extra["timestamps"] = torch.randint(0, 5000, (L,), generator=g).cumsum(0)
        extra["time_bias"] = 0.1 * torch.randn(16, generator=g, dtype=torch.float64)
    results = []
    for low in (True, False):
        ins = [(b.bfloat16() if low else b.clone()).requires_grad_() for b in base]
        params = {k: (v.float() if low else v.clone()).requires_grad_() if v.is_floating_point() else v
                  for k, v in extra.items()}
        if kind == "hstu":
            fn = hstu_attention if low else hstu_ref.hstu_attention
            out = fn(*ins, off, N, alpha=0.3, **kw, **params)
        else:
            fn = jagged_attention if low else attention_ref.jagged_attention
            out = fn(*ins, off, N, **kw)
        wrt = ins + [params[k] for k in ("pos_bias", "time_bias") if k in params]
        if L:
            grads = torch.autograd.grad(out, wrt, grad.bfloat16() if low else grad)
        else:  # nothing to differentiate: the empty batch only has to run
            assert out.shape == (0, H, Dv)
            grads = [torch.zeros_like(w) for w in wrt]
        if low:
            assert out.dtype == torch.bfloat16
            assert all(gr.dtype == w.dtype for gr, w in zip(grads, wrt))
        results.append([out.detach()] + list(grads))
    for name, got, ref in zip(["out", "dq", "dk", "dv", "d_pos_bias", "d_time_bias"], *results):
        _compare(got, ref, f"{kind} {kw} {name}")


LENGTHS = [[5, 64, 130, 1, 0, 200], [1], [0, 0], [63, 65, 129, 17]]


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("causal", [True, False])
def test_hstu_bf16_against_reference(lengths, causal):
    _case("hstu", lengths, causal=causal)


@pytest.mark.parametrize("opts", [
    dict(biases=True, num_targets="t"), dict(contextual_len=3, max_attn_len=20), dict(biases=True, causal=False,
                                                                                      max_attn_len=7),
    dict(attn_scale=0.01), dict(strided=True), dict(D=40, Dv=24), dict(H=3, D=16),
    dict(max_attn_len=5, min_full_attn_seq_len=20, num_targets="t"), dict(D=1, Dv=1), dict(D=200, Dv=72),
    dict(D=8, Dv=0),
])
def test_hstu_bf16_options(opts):
    opts = dict(opts)
    lengths = [70, 5, 130, 1]
    if opts.pop("num_targets", None):
        opts["num_targets"] = torch.tensor([2, 1, 3, 0])
    _case("hstu", lengths, **opts)


@pytest.mark.parametrize("lengths", LENGTHS + [[600, 3]])
@pytest.mark.parametrize("causal", [True, False])
def test_jagged_attention_bf16_against_reference(lengths, causal):
    _case("softmax", lengths, causal=causal)


@pytest.mark.parametrize("opts", [
    dict(num_targets="t", max_attn_len=9), dict(contextual_len=2), dict(strided=True), dict(D=24, Dv=40),
    dict(max_attn_len=5, min_full_attn_seq_len=20), dict(D=1, Dv=1), dict(D=200, Dv=72), dict(D=8, Dv=0),
])
def test_jagged_attention_bf16_options(opts):
    opts = dict(opts)
    if opts.pop("num_targets", None):
        opts["num_targets"] = torch.tensor([2, 1, 3, 0])
    _case("softmax", [70, 5, 130, 1], **opts)


def test_bf16_dropout_matches_float32_masks():
    """Dropout keeps the same counter-based mask in bf16: out equals the float32 op on the same inputs within the
    bf16 tolerance (a different mask would differ by O(1))."""
    g = torch.Generator().manual_seed(3)
    off = _offsets([90, 40])
    q, k, v = (torch.randn(130, 2, 32, generator=g).bfloat16() for _ in range(3))
    a = jagged_attention(q, k, v, off, 90, dropout_p=0.3, seed=11)
    b = jagged_attention(q.float(), k.float(), v.float(), off, 90, dropout_p=0.3, seed=11)
    _compare(a, b.double(), "dropout out")


def test_bf16_deterministic_across_threads():
    g = torch.Generator().manual_seed(4)
    off = _offsets([700, 30, 300])
    q, k, v = (torch.randn(1030, 2, 64, generator=g).bfloat16().requires_grad_() for _ in range(3))
    outs = []
    old = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            o = hstu_attention(q, k, v, off, 700)
            outs.append([o] + list(torch.autograd.grad(o.float().square().sum(), (q, k, v))))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_bf16_bias_dtype_and_errors():
    off = _offsets([3])
    q = torch.randn(3, 1, 8).bfloat16()
    if cpu_bf16_unit() == "none":
        with pytest.raises(TypeError, match="bf16 unit"):
            _C.hstu_attention_fwd(q, q, q, off, 3, 1.0, 1.0, None, None, 0, 0, None, None, None, 0.301,
                                  torch.empty_like(q))
        return
    with pytest.raises(TypeError, match="pos_bias must be float32"):  # biases beside bf16 q are float32
        _C.hstu_attention_fwd(q, q, q, off, 3, 1.0, 1.0, None, None, 0, 0, torch.zeros(5).bfloat16(), None, None,
                              0.301, torch.empty_like(q))
    with pytest.raises(TypeError, match="lse must be float32"):
        _C.jagged_attention_fwd(q, q, q, off, 3, 1.0, None, 0, 0, True, 0.0, 0, torch.empty_like(q),
                                torch.empty(3, 1).bfloat16())


def test_force_bf16_unit():
    """force_bf16_unit switches later calls (benchmarks use it) and refuses a unit the CPU lacks or a bad name;
    "none" is the upcast path: the float32 kernels' result rounded once."""
    from recops.ops.hstu import force_bf16_unit
    best = cpu_bf16_unit()
    with pytest.raises(ValueError, match="unit must be"):
        force_bf16_unit("tpu")
    if best == "none":
        with pytest.raises(ValueError, match="no amx unit"):
            force_bf16_unit("amx")
    g = torch.Generator().manual_seed(5)
    off = _offsets([50, 9])
    q, k, v = (torch.randn(59, 2, 32, generator=g).bfloat16() for _ in range(3))
    try:
        force_bf16_unit("none")
        assert cpu_bf16_unit() == "none"
        up = hstu_attention(q, k, v, off, 50)
    finally:
        force_bf16_unit(best)
    assert cpu_bf16_unit() == best
    assert torch.equal(up, hstu_attention(q.float(), k.float(), v.float(), off, 50).bfloat16())


def _levels():
    """The bf16 levels this CPU has, best first, plus the upcast path (always)."""
    best = cpu_bf16_unit()
    return {"amx": ["amx", "avx512_bf16"], "avx512_bf16": ["avx512_bf16"]}.get(best, []) + ["avx512"]


@pytest.mark.parametrize("level", ["amx", "avx512_bf16", "avx512"])
def test_every_bf16_level(level):
    """Each bf16 level the CPU has, forced in a subprocess (RECOPS_CPU_ISA is read once), against the float64
    reference; a level the CPU lacks falls back to a lower one, which must say so."""
    code = ("import torch; from recops.ops import cpu_bf16_unit; from tests.ops.test_attention_bf16 import _case;"
            "print(cpu_bf16_unit());"
            "_case('hstu', [70, 5, 130, 1], biases=True, num_targets=torch.tensor([2, 1, 3, 0]));"
            "_case('hstu', [200, 3], causal=False, contextual_len=2);"
            "_case('softmax', [70, 5, 130, 1], causal=True); _case('softmax', [200, 3], causal=False)")
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, RECOPS_CPU_ISA=level))
    unit = res.stdout.strip().splitlines()[0]
    want = {"amx": _levels()[0] if _levels()[0] != "avx512" else "none",
            "avx512_bf16": "avx512_bf16" if "avx512_bf16" in _levels() else "none", "avx512": "none"}[level]
    assert unit == want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_softmax_backward_with_empty_values(dtype):
    """Dv = 0: out is empty, so dq = dk = 0 (this used to raise 'needs the forward's out and lse')."""
    off = _offsets([3, 2])
    q = torch.randn(5, 1, 8, dtype=dtype, requires_grad=True)
    v = torch.randn(5, 1, 0, dtype=dtype, requires_grad=True)
    out = jagged_attention(q, q, v, off, 3)
    assert out.shape == (5, 1, 0)
    dq, dv = torch.autograd.grad(out, (q, v), torch.zeros_like(out))
    assert torch.equal(dq, torch.zeros_like(q)) and dv.shape == v.shape
