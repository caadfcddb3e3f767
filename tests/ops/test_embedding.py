# SPDX-License-Identifier: Apache-2.0
"""recops.ops.embedding_bag vs F.embedding_bag and the reference; gradients, opcheck, errors, compile."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import recops
from recops.ops import embedding_ref as ref

MODES = ["sum", "mean", "max"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _bags(lengths, num_rows, device, index_dtype=torch.int64, gen=None):
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    indices = torch.randint(0, max(num_rows, 1), (int(offsets[-1]),), generator=gen)
    return indices.to(device=device, dtype=index_dtype), offsets.to(device=device, dtype=index_dtype)


def _torch(weight, indices, offsets, mode, psw):
    return F.embedding_bag(indices, weight, offsets, mode=mode, per_sample_weights=psw, include_last_offset=True)


def _tol(dtype, lengths=()):
    if dtype in (torch.float16, torch.bfloat16):
        return dict(atol=2e-2, rtol=2e-2)
    # fp32 sums of thousands of rows differ from torch's summation order in the last bits.
    return dict(atol=1e-4, rtol=1e-4) if max(lengths, default=0) > 1000 else {}


# ---- correctness vs torch and the reference ----------------------------------------------------------------

SHAPES = [  # (lengths, V, D)
    ([3, 0, 5, 1], 50, 16),
    ([0], 10, 4),
    ([], 10, 4),
    ([1], 1, 1),
    ([7, 97, 0, 2], 1025, 7),
    ([5000], 100, 33),      # one huge bag, many repeats
    ([4, 4, 4], 3, 64),     # heavy repetition of 3 rows
]


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths,num_rows,dim", SHAPES)
def test_forward_matches_torch(device, lengths, num_rows, dim, mode, dtype, index_dtype):
    w = torch.randn(num_rows, dim, device=device).to(dtype)
    idx, off = _bags(lengths, num_rows, device, index_dtype)
    out = recops.ops.embedding_bag(w, idx, off, mode)
    torch.testing.assert_close(out, _torch(w, idx, off, mode, None), **_tol(dtype, lengths))
    torch.testing.assert_close(out, ref.embedding_bag(w, idx, off, mode), **_tol(dtype, lengths))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths,num_rows,dim", SHAPES)
def test_per_sample_weights(device, lengths, num_rows, dim, dtype):
    w = torch.randn(num_rows, dim, device=device).to(dtype)
    idx, off = _bags(lengths, num_rows, device)
    psw = torch.randn(idx.shape[0], device=device).to(dtype)
    out = recops.ops.embedding_bag(w, idx, off, "sum", psw)
    torch.testing.assert_close(out, _torch(w, idx, off, "sum", psw), **_tol(dtype, lengths))
    torch.testing.assert_close(out, ref.embedding_bag(w, idx, off, "sum", psw), **_tol(dtype, lengths))


@given(lengths=st.lists(st.integers(0, 30), max_size=12), num_rows=st.integers(1, 40), dim=st.integers(0, 20),
       mode=st.sampled_from(MODES))
def test_forward_hypothesis(lengths, num_rows, dim, mode):
    w = torch.randn(num_rows, dim)
    idx, off = _bags(lengths, num_rows, "cpu")
    out = recops.ops.embedding_bag(w, idx, off, mode)
    torch.testing.assert_close(out, ref.embedding_bag(w, idx, off, mode))
    if dim > 0:  # torch's embedding_bag trips an internal assert for some D = 0 inputs
        torch.testing.assert_close(out, _torch(w, idx, off, mode, None))


def test_large_offsets_int64():
    # Realistic totals: offsets up to ~2M indices into a 100k-row table.
    w = torch.randn(100_000, 8)
    idx, off = _bags([1_000_000, 0, 1_000_001], 100_000, "cpu")
    torch.testing.assert_close(recops.ops.embedding_bag(w, idx, off), _torch(w, idx, off, "sum", None),
                               atol=1e-3, rtol=1e-4)


# ---- properties -----------------------------------------------------------------------------------------------

def test_deterministic_across_threads():
    w = torch.randn(200, 32, requires_grad=True)
    idx, off = _bags([40] * 64, 200, "cpu")
    g = torch.randn(64, 32)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            out = recops.ops.embedding_bag(w, idx, off, "mean")
            results.append((out, torch.autograd.grad(out, w, g)[0]))
    finally:
        torch.set_num_threads(old)
    for out, gw in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(gw, results[0][1])


# ---- gradients -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_grad_matches_torch(device, mode, dtype):
    w = torch.randn(40, 12, device=device).to(dtype).requires_grad_()
    idx, off = _bags([5, 0, 9, 30, 1], 40, device)
    psw = torch.randn(idx.shape[0], device=device).to(dtype).requires_grad_() if mode == "sum" else None
    inputs = [w] + ([psw] if psw is not None else [])
    out = recops.ops.embedding_bag(w, idx, off, mode, psw)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, g)
    want = torch.autograd.grad(_torch(w, idx, off, mode, psw), inputs, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **_tol(dtype))


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode):
    w = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([0, 2, 2, 5, 1, 3])
    off = torch.tensor([0, 2, 2, 6])
    psw = torch.randn(6, dtype=torch.float64, requires_grad=True) if mode == "sum" else None
    fn = lambda *a: recops.ops.embedding_bag(a[0], idx, off, mode, a[1] if len(a) > 1 else None)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (w, psw) if psw is not None else (w,))


def _fused_case(kind, mode, weighted):
    """One table [10, 4] read by 3 bags, its optimizer state and the fused ops' arguments after `anchor`."""
    from recops.ops.embedding import OPTIMIZERS, single_table_meta
    w = torch.randn(10, 4)
    idx, off = _bags([2, 0, 3], 10, "cpu")
    psw = torch.rand(5) if weighted else None
    size0 = {"sgd": 0, "adagrad": 40, "rowwise_adagrad": 10, "adam": 40}[kind]
    s0, s1 = torch.rand(size0), torch.rand(40 if kind == "adam" else 0)
    return (w, single_table_meta(w, mode), idx, off, psw, 3, 4, 4, mode == 2, "", s0, s1, OPTIMIZERS[kind], 0.1,
            1e-8, 0.9, 0.999, 3, False, 7)


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "rowwise_adagrad", "adam"])
@pytest.mark.parametrize("mode,weighted", [(0, False), (0, True), (1, False), (2, False)])
def test_fused_lookup_backward_is_the_fused_update(kind, mode, weighted):
    """embedding_bags_fused (eager, no dispatch) and the recops::embedding_bags_fused_lookup op: forward =
    embedding_bags; backward = embedding_bags_fused_update at fused_step_params' step size and seed, no .grad."""
    from recops.ops.embedding import fused_step_params
    case = _fused_case(kind, mode, weighted)
    (w, meta, idx, off, psw, batch, total, max_dim, need_argmax, names, s0, s1, code, lr, eps, b1, b2, step, sr,
     seed) = case
    want_out, argmax = recops.ops.embedding_bags(w, meta, idx, off, psw, batch, total, max_dim, need_argmax, names)
    g = torch.randn_like(want_out)
    want = [w.clone(), s0.clone(), s1.clone()]
    step_size, step_seed = fused_step_params(code, lr, b1, b2, step, seed)
    recops.ops.embedding_bags_fused_update(g, want[0], meta, idx, off, psw, argmax, batch, total, max_dim, code, lr,
                                           eps, b1, b2, step_size, sr, step_seed, want[1], want[2])
    assert not torch.equal(want[0], w)
    for lookup in (recops.ops.embedding_bags_fused, lambda *a: recops.ops.embedding_bags_fused_lookup(*a)[0]):
        anchor = torch.empty(0, requires_grad=True)
        w1, s01, s11 = w.clone(), s0.clone(), s1.clone()
        out = lookup(anchor, w1, meta, idx, off, psw, batch, total, max_dim, need_argmax, names, s01, s11,
                     *case[12:])
        torch.testing.assert_close(out, want_out, atol=0, rtol=0)
        assert torch.equal(w1, w)  # the forward changes nothing
        out.backward(g)
        for got, exp in zip((w1, s01, s11), want):
            torch.testing.assert_close(got, exp, atol=0, rtol=0)
        assert anchor.grad is None and w1.grad is None


def test_fused_lookup_rejects_unknown_optimizer():
    case = list(_fused_case("sgd", 0, False))
    case[12] = 0  # "dense" is no fused optimizer
    for lookup in (recops.ops.embedding_bags_fused, recops.ops.embedding_bags_fused_lookup):
        with pytest.raises(ValueError, match="optimizer must be in \\[1, 4\\], got 0"):
            lookup(torch.empty(0, requires_grad=True), *case)


# ---- opcheck ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0, 2])
def test_opcheck(mode):
    from recops.ops.embedding import single_table_meta
    w = torch.randn(10, 4, requires_grad=True)
    idx, off = _bags([2, 0, 3], 10, "cpu")
    psw = torch.randn(5, requires_grad=True) if mode == 0 else None
    torch.library.opcheck(torch.ops.recops.embedding_bags.default,
                          (w, single_table_meta(w, mode), idx, off, psw, 3, 4, 4, mode == 2, ""))


@pytest.mark.parametrize("kind", ["sgd", "rowwise_adagrad", "adam"])
@pytest.mark.parametrize("mode,weighted", [(0, True), (2, False)])
def test_opcheck_fused(kind, mode, weighted):
    """The fused training lookup (its registered backward mutates weights and state) and the update op."""
    case = _fused_case(kind, mode, weighted)
    torch.library.opcheck(torch.ops.recops.embedding_bags_fused_lookup.default,
                          (torch.empty(0, requires_grad=True),) + case)
    w, meta, idx, off, psw, batch, total, max_dim, need_argmax, names, s0, s1 = case[:12]
    _, argmax = recops.ops.embedding_bags(w, meta, idx, off, psw, batch, total, max_dim, need_argmax, names)
    torch.library.opcheck(torch.ops.recops.embedding_bags_fused_update.default,
                          (torch.randn(batch, total), w, meta, idx, off, psw, argmax, batch, total, max_dim,
                           case[12], 0.1, 1e-8, 0.9, 0.999, 0.05, False, 7, s0, s1))


# ---- errors --------------------------------------------------------------------------------------------------

def test_bad_index_raises(device):
    w = torch.randn(10, 4, device=device)
    for bad in (10, -1):
        idx = torch.tensor([1, 2, bad, 3], device=device)
        with pytest.raises(ValueError, match=rf"embedding_bag: indices\[2\] must be in \[0, 10\), got {bad}"):
            recops.ops.embedding_bag(w, idx, torch.tensor([0, 2, 4], device=device))


@pytest.mark.parametrize("offsets,match", [([1, 2, 4], "must start at 0"), ([0, 3, 2, 4], "non-decreasing"),
                                           ([0, 2, 3], "offsets\\[-1\\] must equal")])
def test_bad_offsets_raise(offsets, match):
    with pytest.raises(ValueError, match=match):
        recops.ops.embedding_bag(torch.randn(10, 4), torch.tensor([1, 2, 3, 4]), torch.tensor(offsets))


def test_bad_arguments():
    w, idx, off = torch.randn(10, 4), torch.tensor([1, 2]), torch.tensor([0, 2])
    with pytest.raises(ValueError, match="mode"):
        recops.ops.embedding_bag(w, idx, off, "median")
    with pytest.raises(TypeError, match="weight must be"):
        recops.ops.embedding_bag(w.int(), idx, off)
    # int32 indices with int64 offsets are accepted now (as by F.embedding_bag); other index dtypes are not
    torch.testing.assert_close(recops.ops.embedding_bag(w, idx.int(), off), recops.ops.embedding_bag(w, idx, off))
    with pytest.raises(TypeError, match="int32 or int64"):
        recops.ops.embedding_bag(w, idx.to(torch.int16), off)
    with pytest.raises(ValueError, match="per_sample_weights are only supported"):
        recops.ops.embedding_bag(w, idx, off, "max", torch.ones(2))
    with pytest.raises(ValueError, match="per_sample_weights must have the shape"):
        recops.ops.embedding_bag(w, idx, off, "sum", torch.ones(3))


# ---- torch.compile ------------------------------------------------------------------------------------------

def test_compile_forward():
    w = torch.randn(20, 8)
    idx, off = _bags([3, 0, 4], 20, "cpu")
    fn = torch.compile(lambda w, i, o: recops.ops.embedding_bag(w, i, o, "mean") * 2, fullgraph=True)
    torch.testing.assert_close(fn(w, idx, off), 2 * _torch(w, idx, off, "mean", None))


# ---- the portable path (forced with RECOPS_CPU_ISA=generic) -------------------------------------------------

_ISA_SCRIPT = r"""
import sys, torch, recops
import torch.nn.functional as F
torch.manual_seed(0)
outs = [recops._C.cpu_isa()]
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for mode in ("sum", "mean", "max"):
        w = torch.randn(300, 37).to(dtype).requires_grad_()
        lengths = torch.tensor([3, 0, 17, 1, 60, 5])
        off = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        idx = torch.randint(0, 300, (int(off[-1]),))
        psw = torch.rand(idx.shape[0]).to(dtype) if mode == "sum" else None
        out = recops.ops.embedding_bag(w, idx, off, mode=mode, per_sample_weights=psw)
        g = torch.randn(out.shape).to(dtype)
        (gw,) = torch.autograd.grad(out, (w,), g)
        outs += [out.detach().float(), gw.float()]
tables = [recops.nn.EmbeddingBagConfig("t0", 500, 24, ["f0"]), recops.nn.EmbeddingBagConfig("t1", 80, 9, ["f1"])]
ebc = recops.nn.EmbeddingBagCollection(tables, optimizer=recops.nn.FusedOptimizer("rowwise_adagrad", lr=0.1))
torch.manual_seed(1)
for step in range(3):
    batch = {"f0": (torch.randint(0, 500, (40,)), torch.arange(0, 41, 5)),
             "f1": (torch.randint(0, 80, (16,)), torch.arange(0, 17, 2))}
    out = ebc(batch)
    sum((o * (i + 1)).sum() for i, o in enumerate(out.values())).backward()
outs += [ebc.table("t0").detach().clone(), ebc.table("t1").detach().clone()]
torch.save(outs, sys.argv[1])
"""


@pytest.mark.parametrize("isa", ["generic"])
def test_isa_forced_generic_path_agrees(isa, tmp_path):
    """RECOPS_CPU_ISA=generic reaches the embedding kernels (it used to run AVX2 regardless) and its forward,
    backward and fused-update numbers agree with the default path's."""
    import os
    import subprocess
    import sys

    outs = []
    for env_isa in (isa, ""):
        path = tmp_path / f"emb_{env_isa or 'best'}.pt"
        subprocess.run([sys.executable, "-c", _ISA_SCRIPT, str(path)], check=True,
                       env=dict(os.environ, RECOPS_CPU_ISA=env_isa))
        outs.append(torch.load(path))
    forced, best = outs
    assert forced[0] == "generic"
    assert len(forced) == len(best) == 1 + 18 + 2
    for a, b in zip(forced[1:], best[1:]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


# ---- int32 indices with int64 offsets and the reverse (as F.embedding_bag takes them) ----------------------

@pytest.mark.parametrize("index_dtype,offset_dtype", [(torch.int32, torch.int64), (torch.int64, torch.int32)])
@pytest.mark.parametrize("mode", MODES)
def test_mixed_index_and_offset_dtypes(index_dtype, offset_dtype, mode):
    torch.manual_seed(0)
    w = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    idx, off = _bags([3, 0, 5, 1], 40, "cpu")
    idx, off = idx.to(index_dtype), off.to(offset_dtype)
    out = recops.ops.embedding_bag(w, idx, off, mode=mode)
    want = F.embedding_bag(idx, w, off, mode=mode, include_last_offset=True)
    torch.testing.assert_close(out, want)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, w, g)[0], torch.autograd.grad(want, w, g)[0])
    bad = off.clone()
    bad[-1] = 2**32 + int(off[-1]) if offset_dtype == torch.int64 else int(off[-1]) + 1  # must never wrap
    with pytest.raises(ValueError, match="offsets"):
        recops.ops.embedding_bag(w, idx, bad, mode=mode)
    with pytest.raises(TypeError, match="int32 or int64"):
        recops.ops.embedding_bag(w, idx, off.to(torch.int16), mode=mode)


# ---- bad offsets on every device: checked on the device too, the CPU's message ------------------------------

@pytest.mark.parametrize("bad", [[0, 5, 3, 6], [0, 2, 4, 9], [1, 2, 4, 6], [0, -3, 4, 6]])
def test_bad_offsets_raise_the_cpu_message_on_every_device(device, bad):
    """CUDA kernels used to trust offsets (an out-of-bounds read); now the launcher checks them on the device,
    every kernel treats a bad bag as empty, and the flag becomes the CPU path's ValueError."""
    w = torch.randn(20, 8, device=device, requires_grad=True)
    idx = torch.randint(0, 20, (6,), device=device)
    off = torch.tensor(bad, device=device)
    with pytest.raises(ValueError) as cpu_err:
        recops.ops.embedding_bag(w.detach().cpu(), idx.cpu(), off.cpu())
    with pytest.raises(ValueError) as dev_err:
        recops.ops.embedding_bag(w, idx, off)
    assert str(dev_err.value) == str(cpu_err.value)
    assert "offsets" in str(dev_err.value)
    assert w.grad is None
