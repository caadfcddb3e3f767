# SPDX-License-Identifier: Apache-2.0
"""Regression tests of the adversarial-use findings on the low-level ops: overflowing embedding meta, output
columns no feature writes, tensors on the meta device mixed with real ones, NaN in max pooling, infinite scores
in the ordinal loss. Each case crashed or returned garbage before its fix."""

import re

import pytest
import torch

import recops
from recops import _C
from recops.ops import embedding as E

BIG = 2**63 - 1


def _meta(**cols):
    row = dict(weight_offset=0, row_offset=0, num_rows=4, dim=4, row_stride=4, pooling=0, out_column=0)
    row.update(cols)
    return torch.tensor([E.meta_row(**row)], dtype=torch.int64)


OVERFLOWS = [  # (meta columns, what the message names)
    (dict(weight_offset=BIG - 5), "weight_offset + rows * row_stride overflows int64"),
    (dict(num_rows=2**62), "weight_offset + rows * row_stride overflows int64"),
    (dict(out_column=BIG - 2), "out_column + dim overflows int64"),
    (dict(row_offset=BIG - 1), "row_offset + rows overflows int64"),
]


def _batch():
    return torch.tensor([0, 1, 3]), torch.tensor([0, 3])


@pytest.mark.parametrize("cols,needle", OVERFLOWS)
def test_forward_meta_overflow_raises(cols, needle):
    w = torch.randn(16)
    idx, off = _batch()
    with pytest.raises(ValueError, match=re.escape(needle)):
        E.embedding_bags(w, _meta(**cols), idx, off, None, 1, 4, 4, False, "")


@pytest.mark.parametrize("cols,needle", OVERFLOWS)
def test_backward_meta_overflow_raises(cols, needle):
    w = torch.randn(16)
    idx, off = _batch()
    with pytest.raises(ValueError, match=re.escape(needle)):
        E.embedding_bags_backward(torch.ones(1, 4), w, _meta(**cols), idx, off, None, torch.empty(0, dtype=torch.int64),
                                  1, 4, 4, True, False)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise_adagrad", "adam"])
@pytest.mark.parametrize("cols,needle", OVERFLOWS)
def test_fused_update_meta_overflow_raises_and_changes_nothing(cols, needle, optimizer):
    w = torch.randn(16)
    before = w.clone()
    code = E.OPTIMIZERS[optimizer]
    state0 = torch.zeros(4 if optimizer == "rowwise_adagrad" else (16 if optimizer != "sgd" else 0))
    state1 = torch.zeros(16 if optimizer == "adam" else 0)
    idx, off = _batch()
    with pytest.raises(ValueError, match=re.escape(needle)):
        E.embedding_bags_fused_update(torch.ones(1, 4), w, _meta(**cols), idx, off, None,
                                      torch.empty(0, dtype=torch.int64), 1, 4, 4, code, 0.1, 1e-8, 0.9, 0.999,
                                      0.1, False, 0, state0, state1)
    assert torch.equal(w, before)
    assert not state0.any() and not state1.any()


def test_int8_stride_overflow_raises():
    q = torch.zeros(24, dtype=torch.uint8)
    idx, off = _batch()
    with pytest.raises(ValueError, match=r"dim \+ 8 \(int8 row stride\) overflows int64"):
        E.embedding_bags(q, _meta(dim=BIG - 4, row_stride=4), idx, off, None, 1, 4, 4, False, "")


def test_binding_size_products_are_checked():
    """batch * total_dim and num_features * batch wrapped in the binding's own size checks."""
    w = torch.randn(16)
    off = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="batch \\* total_dim overflows int64"):
        _C.embedding_bags_forward(w, torch.zeros(0, 7, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), off,
                                  2**40, out=torch.empty(0), total_dim=2**40)
    meta2 = torch.cat([_meta(), _meta()])
    with pytest.raises(ValueError, match="num_features \\* batch overflows int64"):
        _C.embedding_bags_forward(w, meta2, torch.zeros(0, dtype=torch.int64), off, 2**62, out=torch.empty(0),
                                  total_dim=0)


def test_check_embedding_meta_reports_gaps():
    assert _C.check_embedding_meta(_meta(out_column=2).flatten(), 16, False, 8, False, -1, -1, "t")
    assert not _C.check_embedding_meta(_meta().flatten(), 16, False, 4, False, -1, -1, "t")
    with pytest.raises(ValueError, match="t: meta: out_column \\+ dim overflows"):
        _C.check_embedding_meta(_meta(out_column=BIG).flatten(), 16, False, 4, False, -1, -1, "t")


# ---- output columns no feature writes ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pooling", ["sum", "mean", "max"])
def test_uncovered_output_columns_are_zero(dtype, pooling):
    torch.manual_seed(0)
    table = torch.randn(4, 4).to(dtype)
    w = table.flatten()
    idx, off = _batch()
    meta = _meta(pooling=E.POOLING[pooling], out_column=3)
    for _ in range(3):  # fresh allocations would show stale memory if the columns were left unwritten
        out, argmax = E.embedding_bags(w, meta, idx, off, None, 1, 11, 4, pooling == "max", "")
        assert torch.equal(out[:, :3], torch.zeros(1, 3, dtype=dtype))
        assert torch.equal(out[:, 7:], torch.zeros(1, 4, dtype=dtype))
        want = recops.ops.embedding_bag(table, idx, off, mode=pooling)
        torch.testing.assert_close(out[:, 3:7], want)
        if pooling == "max":
            assert (argmax[:, :3] == -1).all() and (argmax[:, 7:] == -1).all() and (argmax[:, 3:7] >= 0).all()


def test_uncovered_columns_get_no_gradient_and_max_backward_accepts_them():
    table = torch.randn(4, 4, dtype=torch.float64)
    idx, off = _batch()
    w = table.flatten().requires_grad_()
    out, _ = E.embedding_bags(w, _meta(pooling=E.POOLING["max"], out_column=2), idx, off, None, 1, 8, 4, True, "")
    out.sum().backward()
    want = table.clone().requires_grad_()
    recops.ops.embedding_bag(want, idx, off, mode="max").sum().backward()
    torch.testing.assert_close(w.grad.view(4, 4), want.grad)


# ---- one device check: meta-device tensors mixed with real ones ---------------------------------------------

CASES = {
    "embedding_bag weight": lambda m: recops.ops.embedding_bag(torch.randn(10, 4).to(m), torch.tensor([1, 2]),
                                                               torch.tensor([0, 2])),
    "embedding_bag indices": lambda m: recops.ops.embedding_bag(torch.randn(10, 4), torch.tensor([1, 2]).to(m),
                                                                torch.tensor([0, 2])),
    "embedding_bag offsets": lambda m: recops.ops.embedding_bag(torch.randn(10, 4), torch.tensor([1, 2]),
                                                                torch.tensor([0, 2]).to(m)),
    "embedding_bag psw": lambda m: recops.ops.embedding_bag(torch.randn(10, 4), torch.tensor([1, 2]),
                                                            torch.tensor([0, 2]),
                                                            per_sample_weights=torch.ones(2).to(m)),
    "embedding_bags meta": lambda m: E.embedding_bags(torch.randn(16), _meta().to(m), *_batch(), None, 1, 4, 4,
                                                      False, ""),
    "embedding_bags_backward grad_out": lambda m: E.embedding_bags_backward(
        torch.ones(1, 4).to(m), torch.randn(16), _meta(), *_batch(), None, torch.empty(0, dtype=torch.int64), 1, 4,
        4, True, False),
    "embedding_bags_fused_update state": lambda m: E.embedding_bags_fused_update(
        torch.ones(1, 4), torch.randn(16), _meta(), *_batch(), None, torch.empty(0, dtype=torch.int64), 1, 4, 4,
        E.OPTIMIZERS["adagrad"], 0.1, 1e-8, 0.9, 0.999, 0.0, False, 0, torch.zeros(16).to(m), torch.empty(0)),
    "embedding_bags_fused_lookup state (op)": lambda m: E.embedding_bags_fused_lookup(
        torch.empty(0, requires_grad=True), torch.randn(16), _meta(), *_batch(), None, 1, 4, 4, False, "f",
        torch.zeros(16).to(m), torch.empty(0), E.OPTIMIZERS["adagrad"], 0.1, 1e-8, 0.9, 0.999, 1, False, 0),
    "topk items": lambda m: recops.ops.topk_inner_product(torch.randn(2, 4), torch.randn(10, 4).to(m), 3),
    "topk queries": lambda m: recops.ops.topk_inner_product(torch.randn(2, 4).to(m), torch.randn(10, 4), 3),
    "topk item_bias": lambda m: recops.ops.topk_inner_product(torch.randn(2, 4), torch.randn(10, 4), 3,
                                                              item_bias=torch.randn(10).to(m)),
    "topk exclusions": lambda m: recops.ops.topk_inner_product(torch.randn(2, 4), torch.randn(10, 4), 3,
                                                               exclude_offsets=torch.tensor([0, 1, 1]).to(m),
                                                               exclude_ids=torch.tensor([3])),
    "jagged_to_padded": lambda m: recops.ops.jagged_to_padded(torch.randn(3, 2).to(m), torch.tensor([0, 3]), 4),
    "hstu k": lambda m: recops.ops.hstu_attention(torch.randn(3, 1, 4), torch.randn(3, 1, 4).to(m),
                                                  torch.randn(3, 1, 4), torch.tensor([0, 3]), 4),
    "hstu num_targets": lambda m: recops.ops.hstu_attention(torch.randn(3, 1, 4), torch.randn(3, 1, 4),
                                                            torch.randn(3, 1, 4), torch.tensor([0, 3]), 4,
                                                            num_targets=torch.tensor([1]).to(m)),
    "ordinal labels": lambda m: recops.ops.ordinal_logistic_loss(torch.randn(3), torch.tensor([0.0, 1.0]),
                                                                 torch.tensor([0, 1, 2]).to(m)),
    "ordinal thresholds": lambda m: recops.ops.ordinal_logistic_loss(torch.randn(3), torch.tensor([0.0, 1.0]).to(m),
                                                                     torch.tensor([0, 1, 2])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_meta_device_mixed_with_cpu_raises(case):
    with pytest.raises(TypeError, match="must be on the same device as .*got (meta|cpu)"):
        CASES[case]("meta")
    CASES[case]("cpu")  # the same call on one device runs


def test_all_meta_tensors_still_infer_shapes():
    m = "meta"
    out = recops.ops.embedding_bag(torch.randn(10, 4, device=m), torch.tensor([1, 2], device=m),
                                   torch.tensor([0, 2], device=m))
    assert out.device.type == m and out.shape == (1, 4)
    s, i = recops.ops.topk_inner_product(torch.randn(2, 4, device=m), torch.randn(10, 4, device=m), 3)
    assert s.shape == (2, 3) and i.shape == (2, 3)


# ---- max pooling with NaN rows (documented difference from F.embedding_bag) --------------------------------

def test_max_pooling_propagates_nan_at_any_position():
    """recops: a NaN in any row of a bag makes that column NaN (torch.amax semantics; gradient to the first NaN
    row). F.embedding_bag keeps a NaN only when it is the bag's first row, so its result depends on the order."""
    torch.manual_seed(0)
    w = torch.randn(5, 3, dtype=torch.float64)
    w[1, 0] = float("nan")
    w[2, 1] = float("nan")
    idx = torch.tensor([0, 1, 2, 1, 3, 1, 4])
    off = torch.tensor([0, 3, 4, 6, 7])
    want = torch.stack([w[idx[a:b]].amax(0) for a, b in zip(off[:-1].tolist(), off[1:].tolist())])
    wr = w.clone().requires_grad_()
    got = recops.ops.embedding_bag(wr, idx, off, mode="max")
    torch.testing.assert_close(got, want, equal_nan=True)
    got.sum().backward()
    # bag 0 column 0: rows 0, 1(NaN), 2 -> the gradient goes to row 1; column 1: row 2 (NaN)
    assert wr.grad[1, 0] == 3 and wr.grad[2, 1] == 1 and wr.grad[0, 0] == 0


# ---- ordinal loss at infinite scores -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_thresholds", [1, 2, 5, 40])
def test_ordinal_loss_limits_at_infinite_scores(dtype, num_thresholds):
    th = torch.linspace(-1, 1, num_thresholds, dtype=dtype)
    for label in range(num_thresholds + 1):
        s = torch.tensor([float("inf"), -float("inf")], dtype=dtype, requires_grad=True)
        loss = recops.ops.ordinal_logistic_loss(s, th, torch.tensor([label, label]), reduction="none")
        # P(y = label) -> 1 only for the top label at +inf and the bottom label at -inf, else -> 0
        want = [0.0 if label == num_thresholds else float("inf"), 0.0 if label == 0 else float("inf")]
        assert loss.tolist() == want, (label, loss)
        loss.sum().backward()
        assert torch.isfinite(s.grad).all(), (label, s.grad)
    nan = recops.ops.ordinal_logistic_loss(torch.tensor([float("nan")], dtype=dtype), th, torch.tensor([1]),
                                           reduction="none")
    assert torch.isnan(nan).all()
