# SPDX-License-Identifier: Apache-2.0
"""recops jagged softmax attention vs the padded float64 reference (explicit mask): every mask option, both
causal settings, dropout (the kernels' counter-based mask reproduced bit for bit), gradients, gradcheck,
opcheck, compile, edge lengths, errors; and the bidirectional option of hstu_attention."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import recops
from recops.ops import hstu_attention, jagged_attention
from recops.ops import attention_ref as ref
from recops.ops import hstu_ref
from tests._helpers import isa_outputs, random_offsets
from tests.ops import test_hstu as hstu_tests
from tests.ops.test_hstu import _targets

N = 150


def _batch(lengths, heads=2, dqk=7, dv=5, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q, k = (scale * torch.randn(total, heads, dqk, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(total, heads, dv, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype), random_offsets(lengths)


LENGTHS = [
    [],                          # B = 0
    [0],                         # one empty sequence
    [0, 0, 0],                   # all-empty batch
    [1],                         # one row
    [5, 0, 1, 70, 130, 64, 65],  # mixed, block edges
    [N],                         # full length
]
# the mask options of the HSTU tests (the two ops share the rule): none, targets, context, window, all three
MASKS = hstu_tests.MASKS


def _kwargs(opts, lengths, causal):
    kw = dict(causal=causal)
    if opts.get("targets"):
        kw["num_targets"] = _targets(lengths)
    for key in ("contextual_len", "max_attn_len", "dropout_p", "seed", "scale"):
        if key in opts:
            kw[key] = opts[key]
    return kw


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("opts", MASKS + [dict(dropout_p=0.3, seed=7), dict(targets=True, dropout_p=0.5, seed=-3)])
@pytest.mark.parametrize("causal", [True, False])
def test_forward_and_gradients_match_ref_float64(lengths, opts, causal):
    q, k, v, off = _batch(lengths)
    kw = _kwargs(opts, lengths, causal)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    got = jagged_attention(q, k, v, off, N, **kw)
    want = ref.jagged_attention(q, k, v, off, N, **kw)
    torch.testing.assert_close(got, want)
    if got.numel():
        g = torch.randn(got.shape, dtype=torch.float64)
        for a, b in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(want, leaves, g)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("opts", [dict(), dict(contextual_len=2, targets=True, max_attn_len=20),
                                  dict(dropout_p=0.2, seed=11)])
def test_float32_and_large_scores(causal, opts):
    """float32 against the float64 reference, with scores large enough that an unstabilised softmax overflows."""
    lengths = [5, 0, 1, 70, 130, 64, 65]
    q, k, v, off = _batch(lengths, dqk=16, dv=8, scale=4.0)
    kw = _kwargs(opts, lengths, causal)
    want = ref.jagged_attention(q, k, v, off, N, **kw)
    got = jagged_attention(q.float(), k.float(), v.float(), off, N, **kw)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_mask_matches_documented_examples():
    """The docstring's n=8, c=2, n_t=2 rows, causal and bidirectional (the mask both ops share)."""
    for causal, rows in ((True, "11111100 11111100 11100000 11110000 11111000 11111100 11111110 11111101"),
                         (False, "11111100 11111100 11111100 11111100 11111100 11111100 11111110 11111101")):
        want = torch.tensor([[int(c) for c in r] for r in rows.split()], dtype=torch.bool)
        got = hstu_ref.hstu_mask(torch.tensor([8]), 8, torch.tensor([2]), 2, 0, causal)[0]
        assert torch.equal(got, want)
        # the kernel's mask: v = one-hot of the key row, q = 0 -> out[i, j] > 0 exactly on allowed keys
        v = torch.eye(8, dtype=torch.float64).view(8, 1, 8)
        q = torch.zeros(8, 1, 4, dtype=torch.float64)
        out = jagged_attention(q, q, v, torch.tensor([0, 8]), 8, causal=causal, num_targets=torch.tensor([2]),
                               contextual_len=2)[:, 0]
        assert torch.equal(out > 0, want)
        hs = hstu_attention(q + 1, q + 1, v, torch.tensor([0, 8]), 8, causal=causal, num_targets=torch.tensor([2]),
                            contextual_len=2)[:, 0]
        assert torch.equal(hs != 0, want)


def test_tile_rows_with_no_allowed_key_stay_finite():
    """Every row sees itself (i == j), so a whole sequence row is never empty; but a 64-row key tile can be all
    masked for some rows of a visited query tile (window 1: rows past 64 see only their own tile). Those rows
    keep max -inf and sum 0 through the tile and must not turn into NaN, even with huge scores."""
    q, k, v, off = _batch([3, 64, 100], dqk=4, dv=3)
    q = q * 1e4
    out = jagged_attention(q, k, v, off, N, max_attn_len=1)
    assert torch.isfinite(out).all()
    want = ref.jagged_attention(q, k, v, off, N, max_attn_len=1)
    torch.testing.assert_close(out, want)


@settings(deadline=None, max_examples=25)
@given(lengths=st.lists(st.integers(0, 140), min_size=0, max_size=6), heads=st.integers(1, 3),
       dqk=st.integers(1, 33), dv=st.integers(1, 20), ctx=st.integers(0, 4), window=st.integers(0, 30),
       targets=st.booleans(), causal=st.booleans(), int32=st.booleans())
def test_forward_property(lengths, heads, dqk, dv, ctx, window, targets, causal, int32):
    q, k, v, off = _batch(lengths, heads=heads, dqk=dqk, dv=dv)
    off = off.to(torch.int32) if int32 else off
    kw = dict(causal=causal, contextual_len=ctx, max_attn_len=window,
              num_targets=_targets(lengths) if targets else None)
    torch.testing.assert_close(jagged_attention(q, k, v, off, N, **kw), ref.jagged_attention(q, k, v, off, N, **kw))


def test_strided_views_of_fused_projection():
    lengths = [5, 70, 0, 9]
    L, H, D = sum(lengths), 2, 8
    x = torch.randn(L, 3 * H * D, dtype=torch.float64, requires_grad=True)
    off = random_offsets(lengths)
    q, k, v = (t.view(L, H, D) for t in x.split(H * D, dim=1))
    assert q.stride(0) == 3 * H * D
    got = jagged_attention(q, k, v, off, N, dropout_p=0.1, seed=3)
    want = ref.jagged_attention(q.contiguous(), k.contiguous(), v.contiguous(), off, N, dropout_p=0.1, seed=3)
    torch.testing.assert_close(got, want)
    (gx,) = torch.autograd.grad(got.sum(), x)
    (wx,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(gx, wx)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_cpu_computes_in_float32(dtype):
    q, k, v, off = _batch([5, 70, 3], dtype=torch.float32)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    out = jagged_attention(q, k, v, off, N)
    assert out.dtype == dtype
    want = jagged_attention(q.float(), k.float(), v.float(), off, N)
    torch.testing.assert_close(out.float(), want, rtol=0, atol=0.02)


def test_matches_torch_sdpa_on_full_length_batch():
    """Uniform full-length sequences: equal to torch's SDPA on the padded batch (causal and not)."""
    B, n, H, D = 3, 77, 2, 16
    q, k, v = (torch.randn(B * n, H, D, dtype=torch.float64) for _ in range(3))
    off = random_offsets([n] * B)
    for causal in (True, False):
        got = jagged_attention(q, k, v, off, n, causal=causal)
        qp, kp, vp = (t.view(B, n, H, D).transpose(1, 2) for t in (q, k, v))
        want = F.scaled_dot_product_attention(qp, kp, vp, is_causal=causal).transpose(1, 2).reshape(B * n, H, D)
        torch.testing.assert_close(got, want)


def test_default_scale_and_explicit_scale():
    q, k, v, off = _batch([9, 4], dqk=9)
    torch.testing.assert_close(jagged_attention(q, k, v, off, N), jagged_attention(q, k, v, off, N, scale=1 / 3))
    torch.testing.assert_close(jagged_attention(q, k, v, off, N, scale=0.7),
                               ref.jagged_attention(q, k, v, off, N, scale=0.7))


def test_deterministic_and_thread_count_independent():
    q, k, v, off = _batch([130, 5, 64, 200 - 60, 1], dtype=torch.float32)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    threads = torch.get_num_threads()
    results = []
    try:
        for nt in (1, 2, 3):
            torch.set_num_threads(nt)
            o = jagged_attention(q, k, v, off, N, dropout_p=0.25, seed=99, causal=nt != 2)
            o2 = jagged_attention(q, k, v, off, N, dropout_p=0.25, seed=99, causal=True)
            results.append([o2] + list(torch.autograd.grad(o2.sum(), leaves)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("opts", MASKS)
def test_hstu_bidirectional_matches_ref(opts):
    """hstu_attention(causal=False): forward and q/k/v/bias gradients against the padded reference."""
    lengths = [5, 0, 1, 70, 130, 64]
    q, k, v, off, ts, pb, tb = hstu_tests._batch(lengths)
    leaves = [t.requires_grad_() for t in (q, k, v, pb, tb)]
    kw = dict(hstu_tests._kwargs(opts, lengths, "cpu", "both", pb, ts, tb, alpha=0.5), causal=False)
    got = hstu_attention(q, k, v, off, N, **kw)
    want = hstu_ref.hstu_attention(q, k, v, off, N, **kw)
    torch.testing.assert_close(got, want)
    g = torch.randn(got.shape, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(want, leaves, g)):
        torch.testing.assert_close(a, b)
    if not opts:  # bidirectional differs from causal wherever a row sees a later key
        assert not torch.allclose(got, hstu_attention(q, k, v, off, N, **dict(kw, causal=True)))


def test_long_sequences_split_backward():
    """Sequences longer than 8 key blocks (512 rows) run their backward in parts whose dq partials are added in
    part order: same gradients as the reference, for both ops (HSTU with its bias gradients), and bitwise equal
    for any thread count."""
    lengths = [1100, 3, 600, 513, 0]
    g = torch.Generator().manual_seed(1)
    L = sum(lengths)
    q, k, v = (torch.randn(L, 1, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3))
    off = random_offsets(lengths)
    ts = torch.sort(torch.randint(0, 10**7, (L,), generator=g)).values
    pb = torch.randn(2 * 1200 - 1, generator=g, dtype=torch.float64, requires_grad=True)
    tb = torch.randn(40, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(L, 1, 4, generator=g, dtype=torch.float64)
    import recops.ops as ops
    cases = [((q, k, v), ref, lambda m, c: m.jagged_attention(q, k, v, off, 1200, causal=c, dropout_p=0.2, seed=5)),
             ((q, k, v, pb, tb), hstu_ref, lambda m, c: m.hstu_attention(q, k, v, off, 1200, causal=c, pos_bias=pb,
                                                                         timestamps=ts, time_bias=tb))]
    for leaves, reference, call in cases:
        for causal in (True, False):
            got = torch.autograd.grad(call(ops, causal), leaves, grad)
            want = torch.autograd.grad(call(reference, causal), leaves, grad)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b)
            threads = torch.get_num_threads()
            try:
                torch.set_num_threads(1)
                one = torch.autograd.grad(call(ops, causal), leaves, grad)
            finally:
                torch.set_num_threads(threads)
            assert all(torch.equal(a, b) for a, b in zip(one, got))


# ---------------------------------------------------------------------------------------------------------
# dropout


def test_dropout_p0_is_the_plain_op():
    q, k, v, off = _batch([5, 70, 3])
    assert torch.equal(jagged_attention(q, k, v, off, N, dropout_p=0.0, seed=1), jagged_attention(q, k, v, off, N))


def test_dropout_seeds():
    q, k, v, off = _batch([5, 70, 30], dtype=torch.float32)
    leaves = [t.requires_grad_() for t in (q, k, v)]

    def run(**kw):
        o = jagged_attention(q, k, v, off, N, dropout_p=0.3, **kw)
        return [o] + list(torch.autograd.grad(o.square().sum(), leaves))

    a, b, c = run(seed=5), run(seed=5), run(seed=6)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])
    # seed=None draws from torch's generator: repeatable under torch.manual_seed, different otherwise
    torch.manual_seed(123)
    d = run()
    torch.manual_seed(123)
    e = run()
    f = run()
    assert torch.equal(d[0], e[0]) and not torch.equal(e[0], f[0])


def test_dropout_keep_rate_and_mean_over_seeds():
    """About 1 - p of the probabilities are kept, and the mean output over many seeds approaches p=0's."""
    keep = ref.dropout_keep(42, torch.tensor([300, 300]), 2, 300, 0.3)
    assert abs(keep.double().mean().item() - 0.7) < 0.005
    q, k, v, off = _batch([20, 7], dqk=4, dv=3)
    plain = jagged_attention(q, k, v, off, N)
    mean = torch.stack([jagged_attention(q, k, v, off, N, dropout_p=0.3, seed=s) for s in range(800)]).mean(0)
    err = (mean - plain).abs().max().item()
    assert err < 0.1, err
    one = jagged_attention(q, k, v, off, N, dropout_p=0.3, seed=0)
    assert (one - plain).abs().max().item() > 5 * err  # a single draw is far off: the average did the work


def test_dropout_backward_consistent_with_forward_mask():
    """Finite differences of a fixed-seed call: the backward regenerates the forward's mask."""
    q, k, v, off = _batch([4, 0, 6, 1], heads=2, dqk=3, dv=2)
    inputs = tuple(t.requires_grad_() for t in (q, k, v))
    for causal in (True, False):
        assert torch.autograd.gradcheck(
            lambda q, k, v: jagged_attention(q, k, v, off, 8, causal=causal, dropout_p=0.4, seed=2024), inputs)


# ---------------------------------------------------------------------------------------------------------
# gradcheck, ISA paths, opcheck, compile


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_float64(causal):
    q, k, v, off = _batch([3, 0, 1, 5], heads=2, dqk=3, dv=2)
    inputs = tuple(t.requires_grad_() for t in (q, k, v))

    def f(q, k, v):
        return jagged_attention(q, k, v, off, 6, causal=causal, scale=0.8, num_targets=torch.tensor([1, 0, 0, 2]),
                                contextual_len=1, max_attn_len=3)

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_isa_paths_agree(isa):
    """The portable and AVX2 paths (forced in a subprocess) give the numbers of the default path, dropout
    included (the keep mask is the same integer hash on every path)."""
    code = (
        "import torch, recops; from tests.ops.test_jagged_attention import _batch, N;"
        "q,k,v,off=_batch([70,5,130],dtype=torch.float32);"
        "q,k,v=(t.requires_grad_() for t in (q,k,v));"
        "o=recops.ops.jagged_attention(q,k,v,off,N,dropout_p=0.2,seed=4,num_targets=torch.tensor([2,1,3]));"
        "o2=recops.ops.jagged_attention(q,k,v,off,N,causal=False,max_attn_len=9);"
        "gs=torch.autograd.grad((o.sum()+o2.square().sum()),(q,k,v));"
        "torch.save([recops._C.hstu_cpu_isa(), o.detach(), o2.detach()]+list(gs), '{path}')"
    )
    outs = isa_outputs(code, isa, "attn")
    forced, best = outs
    assert forced[0] in (isa, best[0])
    for a, b in zip(forced[1:], best[1:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_opcheck():
    q, k, v, off = _batch([5, 0, 9], dtype=torch.float32)
    for t in (q, k, v):
        t.requires_grad_()
    seed = torch.tensor(5)
    for args in ((q, k, v, off, N, 0.3, torch.tensor([1, 0, 2]), 1, 0, True, 0.0, None),
                 (q, k, v, off, N, 0.3, None, 0, 4, False, 0.25, seed)):
        torch.library.opcheck(torch.ops.recops.jagged_attention.default, args)
        out, lse = torch.ops.recops.jagged_attention.default(*args)
        plain = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        grad = torch.randn(out.shape)
        bargs = (grad, plain[0], plain[1], plain[2], out.detach(), lse) + plain[3:]
        torch.library.opcheck(torch.ops.recops.jagged_attention_backward.default, bargs)


def test_compile_fullgraph():
    q, k, v, off = _batch([5, 0, 9, 70], dtype=torch.float32)
    leaves = [t.requires_grad_() for t in (q, k, v)]

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(q, k, v, off):
        return (jagged_attention(q, k, v, off, N, dropout_p=0.1, seed=9).sum()
                + jagged_attention(q, k, v, off, N, causal=False, dropout_p=0.2).sum())

    f(q, k, v, off).backward()
    assert all(torch.isfinite(t.grad).all() for t in leaves)
    grads = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    want = ref.jagged_attention(q, k, v, off, N, dropout_p=0.1, seed=9).sum()
    got = jagged_attention(q, k, v, off, N, dropout_p=0.1, seed=9).sum()
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-4, atol=1e-4)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def g(q, k, v, off):
        return jagged_attention(q, k, v, off, N, dropout_p=0.1, seed=9).sum()

    g(q, k, v, off).backward()
    w = torch.autograd.grad(ref.jagged_attention(q, k, v, off, N, dropout_p=0.1, seed=9).sum(), leaves)
    for t, b in zip(leaves, w):
        torch.testing.assert_close(t.grad, b, rtol=1e-4, atol=1e-5)
    assert grads[0].shape == q.shape


# ---------------------------------------------------------------------------------------------------------
# errors


def test_errors():
    q, k, v, off = _batch([5, 3])

    def call(**over):
        args = dict(q=q, k=k, v=v, offsets=off, max_seq_len=N)
        args.update(over)
        return jagged_attention(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("offsets"),
                                args.pop("max_seq_len"), **args)

    cases = [
        (ValueError, "jagged_attention: dropout_p must be in \\[0, 1\\), got 1.0", dict(dropout_p=1.0)),
        (ValueError, "jagged_attention: dropout_p must be in \\[0, 1\\), got -0.1", dict(dropout_p=-0.1)),
        (ValueError, "jagged_attention: max_seq_len must be an int >= 1, got 0", dict(max_seq_len=0)),
        (ValueError, "sequence lengths must be <= max_seq_len=4, got length 5", dict(max_seq_len=4)),
        (ValueError, "jagged_attention: contextual_len must be an int >= 0, got -1", dict(contextual_len=-1)),
        (ValueError, "jagged_attention: max_attn_len must be an int >= 0, got -2", dict(max_attn_len=-2)),
        (ValueError, "offsets must be non-decreasing", dict(offsets=torch.tensor([0, 6, 5]))),
        (ValueError, "jagged_attention: offsets\\[-1\\] must equal the number of values rows L=8, got 7",
         dict(offsets=torch.tensor([0, 5, 7]))),
        (TypeError, "jagged_attention: offsets must be int32 or int64", dict(offsets=off.float())),
        (ValueError, "jagged_attention: k must have q's shape", dict(k=k[:, :1])),
        (ValueError, "jagged_attention: v must have shape", dict(v=v[:4])),
        (ValueError, "jagged_attention: q must have 3 dimensions", dict(q=q[0])),
        (TypeError, "jagged_attention: q, k and v must share a dtype", dict(k=k.float())),
        (TypeError, "jagged_attention: q must be a floating tensor", dict(q=q.long())),
        (ValueError, "num_targets\\[1\\] must be in \\[0, length=3\\], got 4", dict(num_targets=torch.tensor([0, 4]))),
        (ValueError, "jagged_attention: num_targets must have shape \\[2\\]", dict(num_targets=torch.tensor([0]))),
        (TypeError, "jagged_attention: num_targets must be an integer tensor", dict(num_targets=torch.zeros(2))),
        (ValueError, "jagged_attention: scale must be a finite float", dict(scale=float("nan"))),
        (TypeError, "jagged_attention: seed must be an int or None", dict(dropout_p=0.1, seed=1.5)),
        (TypeError, "jagged_attention: offsets must be on the same device as q", dict(offsets=off.to("meta"))),
    ]
    for exc, msg, over in cases:
        with pytest.raises(exc, match=msg):
            call(**over)


# ---------------------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU and a CUDA build)

CUDA_OK = recops.has_cuda() and torch.cuda.is_available()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and a CUDA build of recops")
@pytest.mark.parametrize("opts", MASKS + [dict(dropout_p=0.3, seed=7)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dims", [(7, 5), (64, 64), (50, 25), (128, 128)])
def test_cuda_forward_backward(opts, causal, dtype, dims):
    from tests._helpers import assert_close_to_ref
    lengths = [5, 0, 1, 70, 130, 64, 65]
    q, k, v, off = _batch(lengths, heads=2, dqk=dims[0], dv=dims[1])
    kw = _kwargs(opts, lengths, causal)
    g = torch.randn(v.shape, dtype=torch.float64)

    def run(dev, dt, impl):
        cast = [t.detach().to(device=dev, dtype=dt).requires_grad_() for t in (q, k, v)]
        kwd = {key: (val.to(dev) if isinstance(val, torch.Tensor) else val) for key, val in kw.items()}
        out = impl(cast[0], cast[1], cast[2], off.to(dev), N, **kwd)
        grads = torch.autograd.grad(out, cast, g.to(device=dev, dtype=dt))
        return [out.detach().double().cpu()] + [x.double().cpu() for x in grads]

    exact = run("cpu", torch.float64, ref.jagged_attention)
    got = run("cuda", dtype, jagged_attention)
    if dtype == torch.float32:
        for a, b in zip(got, exact):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    else:
        low = run("cpu", dtype, ref.jagged_attention)
        for a, lo, b in zip(got, low, exact):
            assert_close_to_ref(a, lo, b, atol=1e-2)
