# SPDX-License-Identifier: Apache-2.0
"""recops HSTU attention vs the padded float64 reference: masks, biases, strides, gradients, opcheck, errors."""

import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import recops
from recops.ops import hstu_attention
from recops.ops import hstu_ref as ref
from tests._helpers import random_offsets

N = 150


def _batch(lengths, heads=2, dqk=7, dv=5, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q, k = (torch.randn(total, heads, dqk, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(total, heads, dv, generator=g, dtype=torch.float64)
    ts = torch.sort(torch.randint(0, 10**8, (total,), generator=g)).values
    pos_bias = torch.randn(2 * N - 1, generator=g, dtype=torch.float64)
    time_bias = torch.randn(129, generator=g, dtype=torch.float64)
    cast = dict(dtype=dtype, device=device)
    return (q.to(**cast), k.to(**cast), v.to(**cast), random_offsets(lengths, device=device), ts.to(device),
            pos_bias.to(**cast), time_bias.to(**cast))


def _targets(lengths, device="cpu"):
    return torch.tensor([min(n, (3 * b) % 5) for b, n in enumerate(lengths)], dtype=torch.int64, device=device)


LENGTHS = [
    [],                         # B = 0
    [0],                        # one empty sequence
    [1],                        # one row
    [5, 0, 1, 70, 130, 64, 65],  # mixed, block edges
    [N],                        # full length
]
MASKS = [
    dict(),
    dict(targets=True),
    dict(contextual_len=3),
    dict(max_attn_len=10),
    dict(contextual_len=2, targets=True, max_attn_len=20),
]


def _kwargs(opts, lengths, device, bias, pb, ts, tb, alpha=1.0):
    kw = dict(alpha=alpha)
    if opts.get("targets"):
        kw["num_targets"] = _targets(lengths, device)
    for key in ("contextual_len", "max_attn_len"):
        if key in opts:
            kw[key] = opts[key]
    if bias in ("pos", "both"):
        kw["pos_bias"] = pb
    if bias in ("time", "both"):
        kw["timestamps"], kw["time_bias"] = ts, tb
    return kw


# ---------------------------------------------------------------------------------------------------------
# correctness vs reference


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("opts", MASKS)
@pytest.mark.parametrize("bias", ["none", "pos", "time", "both"])
def test_forward_matches_ref_float64(lengths, opts, bias):
    q, k, v, off, ts, pb, tb = _batch(lengths)
    kw = _kwargs(opts, lengths, "cpu", bias, pb, ts, tb, alpha=0.7)
    torch.testing.assert_close(hstu_attention(q, k, v, off, N, **kw), ref.hstu_attention(q, k, v, off, N, **kw))


@pytest.mark.parametrize("opts", MASKS)
def test_forward_float32(device, opts):
    lengths = [5, 0, 1, 70, 130, 64, 65]
    q, k, v, off, ts, pb, tb = _batch(lengths, heads=3, dqk=50, dv=25)
    kw = _kwargs(opts, lengths, "cpu", "both", pb, ts, tb)
    expected = ref.hstu_attention(q, k, v, off, N, **kw)
    cast = lambda t: t.to(device=device, dtype=torch.float32) if t.is_floating_point() else t.to(device)
    kw32 = {key: cast(val) if isinstance(val, torch.Tensor) else val for key, val in kw.items()}
    out = hstu_attention(cast(q), cast(k), cast(v), off.to(device), N, **kw32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double().cpu(), expected, rtol=1e-4, atol=1e-5)


def test_mask_matches_documented_examples():
    lengths = torch.tensor([8])
    m = ref.hstu_mask(lengths, 8, torch.tensor([2]), contextual_len=2)[0]
    rows = ["".join(str(int(x)) for x in row) for row in m]
    assert rows == ["11111100", "11111100", "11100000", "11110000", "11111000", "11111100", "11111110",
                    "11111101"]
    m = ref.hstu_mask(torch.tensor([9]), 9, torch.tensor([2]), contextual_len=2, max_attn_len=2)[0]
    rows = ["".join(str(int(x)) for x in row) for row in m]
    assert rows == ["111111100", "111111100", "111000000", "111100000", "001110000", "000111000",
                    "000011100", "000001110", "000001101"]


def test_kernel_mask_matches_documented_example():
    # with v = one-hot of the key row and s = 0 (SiLU(0) = 0 would hide it) use a constant bias: out = mask row
    n = 9
    q = torch.zeros(n, 1, 1, dtype=torch.float64)
    v = torch.eye(n, dtype=torch.float64).unsqueeze(1)
    pos_bias = torch.full((2 * n - 1,), 10.0, dtype=torch.float64)
    out = hstu_attention(q, q, v, torch.tensor([0, n]), n, attn_scale=1.0, pos_bias=pos_bias,
                         num_targets=torch.tensor([2]), contextual_len=2, max_attn_len=2)
    mask = (out[:, 0, :] > 1).int()
    rows = ["".join(str(int(x)) for x in row) for row in mask]
    assert rows == ["111111100", "111111100", "111000000", "111100000", "001110000", "000111000",
                    "000011100", "000001110", "000001101"]


@given(lengths=st.lists(st.integers(0, 70), min_size=1, max_size=5), heads=st.integers(1, 3),
       dqk=st.integers(1, 20), dv=st.integers(1, 20), ctx=st.integers(0, 4), window=st.integers(0, 30),
       targets=st.booleans(), int32=st.booleans())
def test_forward_property(lengths, heads, dqk, dv, ctx, window, targets, int32):
    global N
    q, k, v, off, ts, pb, tb = _batch(lengths, heads, dqk, dv)
    if int32:
        off = off.int()
    kw = dict(contextual_len=ctx, max_attn_len=window, pos_bias=pb, timestamps=ts, time_bias=tb)
    if targets:
        kw["num_targets"] = _targets(lengths)
    torch.testing.assert_close(hstu_attention(q, k, v, off, N, **kw), ref.hstu_attention(q, k, v, off, N, **kw))


def test_strided_views_of_fused_projection():
    lengths = [40, 3, 0, 77]
    total, heads, dqk, dv = sum(lengths), 2, 8, 6
    fused = torch.randn(total, heads * (2 * dqk + dv) + 3, dtype=torch.float64)
    q = fused[:, : heads * dqk].view(total, heads, dqk)
    k = fused[:, heads * dqk: 2 * heads * dqk].view(total, heads, dqk)
    v = fused[:, 2 * heads * dqk: 2 * heads * dqk + heads * dv].view(total, heads, dv)
    assert not q.is_contiguous()
    off = random_offsets(lengths)
    torch.testing.assert_close(hstu_attention(q, k, v, off, 80), ref.hstu_attention(q.contiguous(),
                               k.contiguous(), v.contiguous(), off, 80))
    # last dimension strided too: the op copies
    qt = torch.randn(total, dqk, heads, dtype=torch.float64).transpose(1, 2)
    torch.testing.assert_close(hstu_attention(qt, k, v, off, 80), ref.hstu_attention(qt.contiguous(), k, v, off,
                               80))


def test_attn_scale_float_and_per_row():
    lengths = [9, 4]
    q, k, v, off, ts, pb, tb = _batch(lengths)
    for scale in (0.25, torch.rand(13, dtype=torch.float64)):
        torch.testing.assert_close(hstu_attention(q, k, v, off, N, attn_scale=scale),
                                   ref.hstu_attention(q, k, v, off, N, attn_scale=scale))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_cpu_computes_in_float32(dtype):
    from tests._helpers import assert_close_to_ref
    lengths = [33, 7]
    q, k, v, off, ts, pb, tb = _batch(lengths, dqk=16, dv=16)
    out = hstu_attention(q.to(dtype), k.to(dtype), v.to(dtype), off, N, attn_scale=0.1)
    assert out.dtype == dtype
    ref_low = ref.hstu_attention(q.to(dtype), k.to(dtype), v.to(dtype), off, N, attn_scale=0.1)
    assert_close_to_ref(out, ref_low, ref.hstu_attention(q, k, v, off, N, attn_scale=0.1), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# properties


def test_deterministic_and_thread_count_independent():
    lengths = [130, 5, 64, 1, 99, 150]
    q, k, v, off, ts, pb, tb = _batch(lengths, dtype=torch.float32)
    pb, tb = pb.requires_grad_(), tb.requires_grad_()
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    g = torch.randn(v.shape)
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = hstu_attention(q, k, v, off, N, pos_bias=pb, timestamps=ts, time_bias=tb)
            results.append([out] + list(torch.autograd.grad(out, (q, k, v, pb, tb), g)))
    finally:
        torch.set_num_threads(old)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_sequences_are_independent():
    # a sequence's output does not depend on its neighbours in the batch
    q, k, v, off, ts, pb, tb = _batch([30, 50, 20])
    full = hstu_attention(q, k, v, off, N, pos_bias=pb, timestamps=ts, time_bias=tb)
    alone = hstu_attention(q[30:80], k[30:80], v[30:80], torch.tensor([0, 50]), N, pos_bias=pb,
                           timestamps=ts[30:80], time_bias=tb)
    torch.testing.assert_close(full[30:80], alone)


def _bucket_edges(base, num_buckets):
    """Time differences at, just below and just above every bucket threshold of the formula, and beyond 9e15."""
    xs = [0, 1, 2, 3]
    for k in range(1, num_buckets):
        x = math.ceil(math.exp(k * base))
        if x > 8e15:
            break
        while x > 1 and math.floor(math.log(x - 1) / base) >= k:
            x -= 1
        while math.floor(math.log(x) / base) < k:
            x += 1
        xs += [x - 1, x, x + 1]
    return xs + [9 * 10**15 - 1, 9 * 10**15 + 7, 2 * 10**16, 2**62]


def _check_bucket_edges(base):
    """Row 0 has t = 0 and row m + 1 has t = x_m, so query m compares x_m with key 0: every edge value is bucketed
    by the kernel's float-log fast path (or its exact fallback) and must land where the float64 formula puts it;
    a miss moves gradient between time_bias entries."""
    ts = torch.tensor([0] + _bucket_edges(base, 129), dtype=torch.int64)
    n = ts.numel()
    off = torch.tensor([0, n])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(n, 1, 4, generator=g, dtype=torch.float64) for _ in range(3))
    tb = torch.randn(129, generator=g, dtype=torch.float64)
    ref_tb = tb.clone().requires_grad_()
    r = ref.hstu_attention(q, k, v, off, n, timestamps=ts, time_bias=ref_tb, time_bucket_base=base)
    ref_grad, = torch.autograd.grad(r.sum(), ref_tb)
    for dt, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        t = tb.to(dt).requires_grad_()
        o = hstu_attention(q.to(dt), k.to(dt), v.to(dt), off, n, timestamps=ts, time_bias=t, time_bucket_base=base)
        grad, = torch.autograd.grad(o.sum(), t)
        torch.testing.assert_close(o.double(), r, rtol=tol, atol=tol)
        torch.testing.assert_close(grad.double(), ref_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("isa", ["", "generic"])
@pytest.mark.parametrize("base", [0.301, 0.05])
def test_time_buckets_at_edges(isa, base):
    if not isa:
        _check_bucket_edges(base)
        return
    code = f"from tests.ops.test_hstu import _check_bucket_edges; _check_bucket_edges({base})"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, RECOPS_CPU_ISA=isa),
                   cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_isa_paths_agree(isa):
    """The portable and AVX2 paths (forced in a subprocess) give the same numbers as the default path."""
    code = (
        "import torch, recops; from tests.ops.test_hstu import _batch, N;"
        "q,k,v,off,ts,pb,tb=_batch([70,5,130],dtype=torch.float32);"
        "q,k,v,pb,tb=(t.requires_grad_() for t in (q,k,v,pb,tb));"
        "o=recops.ops.hstu_attention(q,k,v,off,N,pos_bias=pb,timestamps=ts,time_bias=tb,num_targets=torch.tensor([2,1,3]));"
        "gs=torch.autograd.grad(o.sum(),(q,k,v,pb,tb));"
        "torch.save([recops._C.hstu_cpu_isa(), o.detach()]+list(gs), '{path}')"
    )
    outs = []
    for env_isa in (isa, ""):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"hstu_isa_{env_isa or 'best'}_{os.getpid()}.pt")
        env = dict(os.environ, RECOPS_CPU_ISA=env_isa)
        subprocess.run([sys.executable, "-c", code.format(path=path)], check=True, env=env,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        outs.append(torch.load(path))
        os.remove(path)
    forced, best = outs
    assert forced[0] in (isa, best[0])  # a CPU without AVX2 runs its best path instead
    for a, b in zip(forced[1:], best[1:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("opts", MASKS)
@pytest.mark.parametrize("bias", ["none", "both"])
def test_gradients_vs_ref(opts, bias):
    lengths = [5, 0, 1, 70, 130, 64]
    q, k, v, off, ts, pb, tb = _batch(lengths)
    leaves = [q, k, v] + ([pb, tb] if bias == "both" else [])
    for t in leaves:
        t.requires_grad_()
    kw = _kwargs(opts, lengths, "cpu", bias, pb, ts, tb, alpha=0.5)
    g = torch.randn(v.shape, dtype=torch.float64)
    got = torch.autograd.grad(hstu_attention(q, k, v, off, N, **kw), leaves, g)
    want = torch.autograd.grad(ref.hstu_attention(q, k, v, off, N, **kw), leaves, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_gradcheck_float64():
    lengths = [3, 0, 1, 4]
    q, k, v, off, ts, _, _ = _batch(lengths, heads=2, dqk=3, dv=2)
    pb = torch.randn(2 * 5 - 1, dtype=torch.float64, requires_grad=True)
    tb = torch.randn(40, dtype=torch.float64, requires_grad=True)
    ts = torch.tensor([0, 5, 100, 7, 0, 20, 5000, 10**6])
    inputs = tuple(t.requires_grad_() for t in (q, k, v)) + (pb, tb)

    def f(q, k, v, pb, tb):
        return hstu_attention(q, k, v, off, 5, pos_bias=pb, timestamps=ts, time_bias=tb, alpha=0.9,
                              num_targets=torch.tensor([1, 0, 0, 2]), contextual_len=1)

    assert torch.autograd.gradcheck(f, inputs)


# ---------------------------------------------------------------------------------------------------------
# opcheck


def test_opcheck():
    q, k, v, off, ts, pb, tb = _batch([5, 0, 9], dtype=torch.float32)
    for t in (q, k, v, pb, tb):
        t.requires_grad_()
    args = (q, k, v, off, N, 1.0, 1.0 / N, None, torch.tensor([1, 0, 2]), 1, 0, pb, ts, tb, 0.301)
    torch.library.opcheck(torch.ops.recops.hstu_attention.default, args)
    grad = torch.randn(v.shape)
    plain = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)  # backward op: no double grad
    torch.library.opcheck(torch.ops.recops.hstu_attention_backward.default, (grad,) + plain)


# ---------------------------------------------------------------------------------------------------------
# errors


def test_errors():
    q, k, v, off, ts, pb, tb = _batch([5, 3])

    def call(**over):
        args = dict(q=q, k=k, v=v, offsets=off, max_seq_len=N)
        args.update(over)
        return hstu_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("offsets"),
                              args.pop("max_seq_len"), **args)

    cases = [
        (ValueError, "k must have q's shape", dict(k=k[:, :1])),
        (ValueError, "v must have shape \\[L=8, H=2, Dv\\]", dict(v=v[:7])),
        (ValueError, "q must have 3 dimensions", dict(q=q[0])),
        (TypeError, "q, k and v must share a dtype", dict(k=k.float())),
        (TypeError, "q must be a floating tensor", dict(q=q.long())),
        (ValueError, "offsets must be non-decreasing", dict(offsets=torch.tensor([0, 6, 5]))),
        (ValueError, "offsets\\[-1\\] must equal .* L=8, got 9", dict(offsets=torch.tensor([0, 5, 9]))),
        (TypeError, "offsets must be int32 or int64", dict(offsets=off.float())),
        (ValueError, "sequence lengths must be <= max_seq_len=4, got length 5 for sequence 0", dict(max_seq_len=4)),
        (ValueError, "max_seq_len must be >= 1", dict(max_seq_len=0)),
        (ValueError, "num_targets\\[1\\] must be in \\[0, length=3\\], got 4", dict(num_targets=torch.tensor([0, 4]))),
        (ValueError, "num_targets\\[0\\] must be in", dict(num_targets=torch.tensor([-1, 0]))),
        (ValueError, "num_targets must have shape \\[2\\]", dict(num_targets=torch.tensor([0]))),
        (ValueError, "pos_bias must have shape \\[299\\]", dict(pos_bias=pb[:-1])),
        (ValueError, "timestamps must have shape \\[8\\]", dict(timestamps=ts[:-1], time_bias=tb)),
        (ValueError, "time_bias needs timestamps", dict(time_bias=tb)),
        (ValueError, "time_bias must have shape", dict(timestamps=ts, time_bias=tb[:0])),
        (TypeError, "timestamps must be an integer tensor", dict(timestamps=ts.double(), time_bias=tb)),
        (ValueError, "contextual_len must be >= 0", dict(contextual_len=-1)),
        (ValueError, "max_attn_len must be >= 0", dict(max_attn_len=-2)),
        (ValueError, "time_bucket_base must be > 0", dict(timestamps=ts, time_bias=tb, time_bucket_base=0.0)),
        (ValueError, "attn_scale must have shape \\[8\\]", dict(attn_scale=torch.ones(3, dtype=torch.float64))),
        (TypeError, "offsets must be on the same device as q", dict(offsets=off.to("meta"))),
    ]
    for exc, match, over in cases:
        with pytest.raises(exc, match=match):
            call(**over)


# ---------------------------------------------------------------------------------------------------------
# torch.compile


def test_compile_fullgraph():
    q, k, v, off, ts, pb, tb = _batch([5, 0, 9], dtype=torch.float32)
    for t in (q, k, v, pb, tb):
        t.requires_grad_()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(q, k, v, off, pb, ts, tb):
        return hstu_attention(q, k, v, off, N, pos_bias=pb, timestamps=ts, time_bias=tb).sum()

    f(q, k, v, off, pb, ts, tb).backward()
    want = torch.autograd.grad(ref.hstu_attention(q, k, v, off, N, pos_bias=pb, timestamps=ts, time_bias=tb).sum(),
                               (q, k, v, pb, tb))
    for got, w in zip((q.grad, k.grad, v.grad, pb.grad, tb.grad), want):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU and a CUDA build)

CUDA_OK = recops.has_cuda() and torch.cuda.is_available()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and a CUDA build of recops")
@pytest.mark.parametrize("opts", MASKS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dims", [(7, 5), (64, 64), (50, 25), (128, 128), (200, 130)])
def test_cuda_forward_backward(opts, dtype, dims):
    from tests._helpers import assert_close_to_ref
    lengths = [5, 0, 1, 70, 130, 64, 65]
    q, k, v, off, ts, pb, tb = _batch(lengths, heads=2, dqk=dims[0], dv=dims[1])
    kw = _kwargs(opts, lengths, "cpu", "both", pb, ts, tb, alpha=0.3)
    leaves64 = [t.clone().requires_grad_() for t in (q, k, v, pb, tb)]
    g = torch.randn(v.shape, dtype=torch.float64)

    def run(leaves, dev, dt, impl):
        cast = [t.detach().to(device=dev, dtype=dt).requires_grad_() for t in leaves]
        kwd = {key: (val.to(dev) if isinstance(val, torch.Tensor) else val) for key, val in kw.items()}
        kwd.update(pos_bias=cast[3], time_bias=cast[4], timestamps=ts.to(dev))
        out = impl(cast[0], cast[1], cast[2], off.to(dev), N, **kwd)
        grads = torch.autograd.grad(out, cast, g.to(device=dev, dtype=dt))
        return [out.detach().double().cpu()] + [x.double().cpu() for x in grads]

    exact = run(leaves64, "cpu", torch.float64, ref.hstu_attention)
    got = run(leaves64, "cuda", dtype, hstu_attention)
    if dtype == torch.float32:
        for a, b in zip(got, exact):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    else:
        low = run(leaves64, "cpu", dtype, ref.hstu_attention)
        for a, lo, b in zip(got, low, exact):
            assert_close_to_ref(a, lo, b, atol=1e-2)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and a CUDA build of recops")
def test_cuda_bad_offsets_raise_like_cpu():
    q, k, v, off, ts, pb, tb = _batch([5, 3], device="cuda", dtype=torch.float32)
    with pytest.raises(ValueError, match="offsets must be non-decreasing"):
        hstu_attention(q, k, v, torch.tensor([0, 6, 5], device="cuda"), N)
    with pytest.raises(ValueError, match="sequence lengths must be <= max_seq_len=4"):
        hstu_attention(q, k, v, off, 4)
    with pytest.raises(ValueError, match="num_targets\\[1\\] must be in"):
        hstu_attention(q, k, v, off, N, num_targets=torch.tensor([0, 4], device="cuda"))
