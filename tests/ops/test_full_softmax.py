# SPDX-License-Identifier: Apache-2.0
"""recops.ops.full_softmax_loss (chunked, nothing [L, V] kept) against the plain F.cross_entropy composition:
shapes and chunk sizes, logQ, reductions, gradcheck, empty input, errors, torch.compile."""

import pytest
import torch

from recops.ops import full_softmax_loss
from recops.ops.full_softmax import full_softmax_loss_ref


def _inputs(L, V, D, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(L, D, generator=g, dtype=dtype).requires_grad_()
    items = torch.randn(V, D, generator=g, dtype=dtype).requires_grad_()
    return q, torch.randint(0, V, (L,), generator=g), items


@pytest.mark.parametrize("L, V, D, chunk", [(1, 1, 1, 256), (7, 5, 3, 2), (37, 1000, 8, 100), (64, 300, 50, 256),
                                            (5, 513, 4, 512), (3, 40, 16, 1)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_logq", [False, True])
def test_matches_reference(L, V, D, chunk, reduction, use_logq):
    q, pos, items = _inputs(L, V, D)
    log_q = torch.randn(V, dtype=torch.float64) if use_logq else None
    got = full_softmax_loss(q, pos, items, temperature=0.07, log_q=log_q, reduction=reduction, chunk=chunk)
    want = full_softmax_loss_ref(q, pos, items, temperature=0.07, log_q=log_q, reduction=reduction)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(want)
    ga = torch.autograd.grad((got * w).sum(), (q, items))
    for a, b in zip(ga, torch.autograd.grad((want * w).sum(), (q, items))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_float32_and_int32_ids():
    q, pos, items = _inputs(200, 3000, 50, torch.float32)
    got = full_softmax_loss(q, pos.int(), items, temperature=0.05)
    want = full_softmax_loss_ref(q.double(), pos, items.double(), temperature=0.05)
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-5)


def test_gradcheck():
    q, pos, items = _inputs(4, 9, 3)
    log_q = torch.randn(9, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: full_softmax_loss(a, pos, b, temperature=0.5, log_q=log_q,
                                                                  reduction="none", chunk=4), (q, items))


def test_empty_rows():
    q, pos, items = _inputs(0, 6, 3)
    assert full_softmax_loss(q, pos, items, reduction="sum").item() == 0.0
    assert full_softmax_loss(q, pos, items, reduction="none").shape == (0,)
    assert torch.isnan(full_softmax_loss(q, pos, items))  # mean of nothing, as torch


def test_only_queries_need_grad():
    q, pos, items = _inputs(5, 7, 3)
    items = items.detach()
    (g,) = torch.autograd.grad(full_softmax_loss(q, pos, items), (q,))
    (want,) = torch.autograd.grad(full_softmax_loss_ref(q, pos, items), (q,))
    torch.testing.assert_close(g, want)


@pytest.mark.parametrize("change, err, match", [
    (dict(positives=torch.tensor([0, 9])), IndexError, r"positives must be in \[0, 9\), got 9"),
    (dict(positives=torch.tensor([-1, 0])), IndexError, "got -1"),
    (dict(positives=torch.tensor([0.0, 1.0])), TypeError, "positives must be int32 or int64"),
    (dict(positives=torch.tensor([0])), ValueError, "positives must have shape"),
    (dict(temperature=0.0), ValueError, "temperature must be finite and > 0"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(reduction="avg"), ValueError, "reduction must be"),
    (dict(chunk=0), ValueError, "chunk must be an integer >= 1"),
    (dict(items=torch.zeros(9, 4, dtype=torch.float64)), ValueError, "must agree"),
    (dict(items=torch.zeros(9, 3)), TypeError, "dtype of queries"),
    (dict(log_q=torch.zeros(8, dtype=torch.float64)), ValueError, "log_q must have shape"),
    (dict(items=torch.zeros(0, 3, dtype=torch.float64), positives=torch.tensor([0, 0])), ValueError,
     "at least 1 row"),
    (dict(log_q=torch.zeros(9, dtype=torch.float64, device="meta")), TypeError, "one device"),
])
def test_errors(change, err, match):
    args = dict(queries=torch.zeros(2, 3, dtype=torch.float64), positives=torch.tensor([0, 1]),
                items=torch.zeros(9, 3, dtype=torch.float64))
    kw = {k: change.pop(k) for k in list(change) if k in args}
    args.update(kw)
    with pytest.raises(err, match=match):
        full_softmax_loss(args["queries"], args["positives"], args["items"], **change)


def test_compile_matches_eager():
    q, pos, items = _inputs(16, 50, 8, torch.float32)

    def f(a, b):
        return full_softmax_loss(a, pos, b, temperature=0.1, chunk=16)

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(q, items)
    want = f(q, items)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, (q, items)), torch.autograd.grad(want, (q, items))):
        torch.testing.assert_close(a, b)
