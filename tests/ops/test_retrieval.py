# SPDX-License-Identifier: Apache-2.0
"""recops.ops.topk_inner_product (fused matmul + top-k) against the pure-torch reference and torch.topk."""

import pytest
import torch
from hypothesis import given, strategies as st

from recops.ops import retrieval_ref as ref
from recops.ops import topk_inner_product

from .._helpers import random_offsets


def _jagged_exclusions(num_queries, num_items, lengths=None, gen=None):
    if lengths is None:
        lengths = torch.randint(0, min(num_items, 9) + 1, (num_queries,), generator=gen)
    ids = [torch.randperm(num_items, generator=gen)[:int(n)] for n in lengths] if num_items else [
        torch.zeros(0, dtype=torch.int64) for _ in lengths]
    offsets = random_offsets(lengths)
    flat = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.int64)
    return flat.to(torch.int64), offsets


def _check_same(out, expected, atol=1e-4):
    (s, i), (rs, ri) = out, expected
    assert s.shape == rs.shape and i.dtype == torch.int64
    torch.testing.assert_close(s, rs, atol=atol, rtol=1e-5)
    # Near-ties may legitimately swap under different summation orders; ids must match elsewhere.
    gaps = torch.cat([rs[:, :-1] - rs[:, 1:], torch.ones_like(rs[:, :1])], 1).abs()
    stable = (gaps > 1e-3) & torch.cat([torch.ones_like(gaps[:, :1]), gaps[:, :-1]], 1).gt(1e-3)
    assert torch.equal(i[stable], ri[stable])


# ---- correctness vs reference -------------------------------------------------------------------------------

SHAPES = [(0, 5, 4, 3), (3, 0, 4, 3), (1, 1, 1, 1), (2, 10, 0, 4), (7, 97, 7, 5), (7, 97, 7, 97), (7, 97, 7, 200),
          (130, 1025, 33, 10), (5, 3000, 64, 100), (1, 5000, 16, 7), (3, 300, 300, 9), (131, 260, 513, 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("exclude", [False, True])
def test_matches_reference(shape, bias, exclude):
    q, n, d, k = shape
    queries, items = torch.randn(q, d), torch.randn(n, d)
    kw = {}
    if bias:
        kw["item_bias"] = torch.randn(n)
    if exclude:
        kw["exclude_ids"], kw["exclude_offsets"] = _jagged_exclusions(q, n)
    _check_same(topk_inner_product(queries, items, k, **kw), ref.exact_topk(queries, items, k, **kw))


def test_matches_torch_topk():
    queries, items = torch.randn(33, 48), torch.randn(2000, 48)
    s, i = topk_inner_product(queries, items, 50)
    ts, ti = torch.topk(queries @ items.T, 50)
    torch.testing.assert_close(s, ts, atol=1e-4, rtol=1e-5)
    assert (i == ti).float().mean() > 0.99


def test_ties_broken_by_lower_id():
    # Integer data: exact float sums, many equal scores.
    queries = torch.randint(-2, 3, (9, 5)).float()
    items = torch.randint(-2, 3, (300, 5)).float()
    s, i = topk_inner_product(queries, items, 40)
    rs, ri = ref.exact_topk(queries, items, 40)
    assert torch.equal(s, rs) and torch.equal(i, ri)
    same = torch.ones(1, 3), torch.ones(20, 3)
    assert topk_inner_product(*same, 5)[1].tolist() == [[0, 1, 2, 3, 4]]


def test_duplicate_exclusions_and_int32_offsets():
    queries, items = torch.randn(3, 8), torch.randn(50, 8)
    ids = torch.tensor([4, 4, 4, 7, 49, 0], dtype=torch.int32)
    offsets = torch.tensor([0, 3, 3, 6], dtype=torch.int32)
    out = topk_inner_product(queries, items, 50, exclude_ids=ids, exclude_offsets=offsets)
    _check_same(out, ref.exact_topk(queries, items, 50, exclude_ids=ids.long(), exclude_offsets=offsets.long()))
    assert (out[1][0] == -1).sum() == 1 and (out[1][1] == -1).sum() == 0 and (out[1][2] == -1).sum() == 3


def test_long_exclusion_list_empties_query():
    queries, items = torch.randn(2, 4), torch.randn(64, 4)
    ids = torch.cat([torch.arange(64), torch.tensor([5])])
    s, i = topk_inner_product(queries, items, 3, exclude_ids=ids, exclude_offsets=torch.tensor([0, 64, 65]))
    assert (i[0] == -1).all() and torch.isinf(s[0]).all() and (s[0] < 0).all()
    assert 5 not in i[1].tolist() and (i[1] >= 0).all()


def test_nan_scores_are_never_returned():
    queries, items = torch.randn(2, 4), torch.randn(10, 4)
    items[3, 0] = float("nan")
    bias = torch.zeros(10)
    bias[7] = float("-inf")
    s, i = topk_inner_product(queries, items, 10, item_bias=bias)
    rs, ri = ref.exact_topk(queries, items, 10, item_bias=bias)
    assert torch.equal(i, ri) and (i[:, -1] == -1).all() and 3 not in i.tolist()[0]
    assert (i[:, -2] == 7).all()  # a -inf score is still a candidate


@given(q=st.integers(0, 9), n=st.integers(0, 700), d=st.integers(0, 20), k=st.integers(1, 40),
       seed=st.integers(0, 2**31 - 1))
def test_hypothesis_vs_reference(q, n, d, k, seed):
    gen = torch.Generator().manual_seed(seed)
    queries, items = torch.randn(q, d, generator=gen), torch.randn(n, d, generator=gen)
    ids, offsets = _jagged_exclusions(q, n, gen=gen)
    bias = torch.randn(n, generator=gen)
    kw = dict(exclude_ids=ids, exclude_offsets=offsets, item_bias=bias)
    _check_same(topk_inner_product(queries, items, k, **kw), ref.exact_topk(queries, items, k, **kw))


# ---- properties ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 6000, 24, 20), (300, 3000, 40, 30)], ids=str)
def test_deterministic_across_threads(shape):
    q, n, d, k = shape
    queries, items = torch.randn(q, d), torch.randn(n, d)
    old = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 2, 3):
            torch.set_num_threads(threads)
            outs.append(topk_inner_product(queries, items, k))
    finally:
        torch.set_num_threads(old)
    for s, i in outs[1:]:
        assert torch.equal(s, outs[0][0]) and torch.equal(i, outs[0][1])


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_isa_variants_agree(isa, tmp_path):
    # The ISA is chosen once per process: compare a forced narrower ISA in a subprocess.
    import subprocess
    import sys
    script = ("import torch, recops; torch.manual_seed(3); q=torch.randn(37,29); e=torch.randn(1500,29);"
              "s,i=recops.ops.topk_inner_product(q,e,25); torch.save((s,i), %r)" % str(tmp_path / "out.pt"))
    env = dict(__import__("os").environ, RECOPS_CPU_ISA=isa)
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    s, i = torch.load(tmp_path / "out.pt")
    torch.manual_seed(3)
    q, e = torch.randn(37, 29), torch.randn(1500, 29)
    _check_same((s, i), ref.exact_topk(q, e, 25))


def test_no_gradient_documented():
    queries = torch.randn(2, 3, requires_grad=True)
    s, _ = topk_inner_product(queries, torch.randn(5, 3), 2)
    with pytest.raises(RuntimeError):
        s.sum().backward()


def test_cpu_cuda_agree(device):
    if device.type != "cuda":
        pytest.skip("CPU/CUDA agreement needs a CUDA device")
    queries, items = torch.randn(40, 64), torch.randn(5000, 64)
    ids, offsets = _jagged_exclusions(40, 5000)
    bias = torch.randn(5000)
    cpu = topk_inner_product(queries, items, 100, exclude_ids=ids, exclude_offsets=offsets, item_bias=bias)
    gpu = topk_inner_product(queries.to(device), items.to(device), 100, exclude_ids=ids.to(device),
                             exclude_offsets=offsets.to(device), item_bias=bias.to(device))
    _check_same(tuple(t.cpu() for t in gpu), cpu)


def test_cuda_bad_exclusion_raises(device):
    if device.type != "cuda":
        pytest.skip("device error path needs a CUDA device")
    queries, items = torch.randn(2, 4, device=device), torch.randn(5, 4, device=device)
    with pytest.raises(ValueError, match=r"exclude_ids\[1\] must be in \[0, 5\), got 9"):
        topk_inner_product(queries, items, 2, exclude_ids=torch.tensor([1, 9], device=device),
                           exclude_offsets=torch.tensor([0, 1, 2], device=device))


# ---- opcheck ------------------------------------------------------------------------------------------------

def test_opcheck():
    ids, offsets = _jagged_exclusions(4, 30)
    torch.library.opcheck(topk_inner_product, (torch.randn(4, 6), torch.randn(30, 6), 7, offsets, ids,
                                               torch.randn(30)))
    torch.library.opcheck(topk_inner_product, (torch.randn(0, 6), torch.randn(30, 6), 7))


# ---- errors -------------------------------------------------------------------------------------------------

def _call(**over):
    args = dict(queries=torch.randn(2, 4), items=torch.randn(5, 4), k=3)
    args.update(over)
    return topk_inner_product(**args)


@pytest.mark.parametrize("over, exc, match", [
    (dict(k=0), ValueError, "k must be >= 1, got 0"),
    (dict(k=-3), ValueError, "k must be >= 1"),
    (dict(k=2**62), ValueError, "overflows int64"),
    (dict(items=torch.randn(5, 3)), ValueError, r"items.shape\[1\] must be 4"),
    (dict(items=torch.randn(5)), ValueError, "2 dimensions"),
    (dict(queries=torch.randn(2, 4, dtype=torch.float64)), TypeError, "queries must be float32"),
    (dict(item_bias=torch.randn(4)), ValueError, r"item_bias must have shape \[5\]"),
    (dict(exclude_ids=torch.tensor([1])), ValueError, "must be given together"),
    (dict(exclude_ids=torch.tensor([1.0]), exclude_offsets=torch.tensor([0, 1, 1])), TypeError, "exclude_ids"),
    (dict(exclude_ids=torch.tensor([1, 2]), exclude_offsets=torch.tensor([0, 1])), ValueError, "exclude_offsets"),
    (dict(exclude_ids=torch.tensor([1, 2**62]), exclude_offsets=torch.tensor([0, 1, 2])), ValueError,
     r"exclude_ids\[1\] must be in \[0, 5\), got 4611686018427387904"),
    (dict(exclude_ids=torch.tensor([-1]), exclude_offsets=torch.tensor([0, 1, 1])), ValueError,
     r"exclude_ids\[0\] must be in \[0, 5\), got -1"),
    (dict(exclude_ids=torch.tensor([1, 2]), exclude_offsets=torch.tensor([1, 1, 2])), ValueError, "offsets"),
    (dict(exclude_ids=torch.tensor([1, 2]), exclude_offsets=torch.tensor([0, 2, 1])), ValueError, "offsets"),
    (dict(exclude_ids=torch.tensor([1, 2]), exclude_offsets=torch.tensor([0, 1, 3])), ValueError, "offsets"),
    (dict(exclude_ids=torch.tensor([1, 2]), exclude_offsets=torch.tensor([0, 1, 2**60])), ValueError, "offsets"),
])
def test_errors(over, exc, match):
    with pytest.raises(exc, match=match):
        _call(**over)


def test_reference_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"exclude_ids\[0\] must be in \[0, 5\)"):
        ref.exact_topk(torch.randn(1, 2), torch.randn(5, 2), 2, torch.tensor([0, 1]), torch.tensor([5]))


def test_mixed_devices_rejected():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    with pytest.raises(TypeError):
        topk_inner_product(torch.randn(2, 4), torch.randn(5, 4, device="cuda"), 3)


# ---- torch.compile ------------------------------------------------------------------------------------------

def test_compile_fullgraph():
    def f(q, e, bias):
        s, i = topk_inner_product(q, e, 4, item_bias=bias)
        return s * 2, i

    queries, items, bias = torch.randn(3, 8), torch.randn(20, 8), torch.randn(20)
    s, i = torch.compile(f, fullgraph=True)(queries, items, bias)
    rs, ri = topk_inner_product(queries, items, 4, item_bias=bias)
    assert torch.equal(i, ri) and torch.allclose(s, rs * 2)
