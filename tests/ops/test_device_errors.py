# SPDX-License-Identifier: Apache-2.0
"""The one device-error path: after a CUDA kernel flags bad input, Launch.raise_errors reruns the family's C++
validator (_C.check_<family>) on host copies. These tests pin that each validator raises exactly the message
the CPU op raises for the same input, so the two devices agree by construction, and that Launch calls it."""

import re

import pytest
import torch

import recops
from recops import _C
from recops._runtime import Launch


def _message(fn) -> str:
    with pytest.raises(ValueError) as e:
        fn()
    return str(e.value)


def _same(cpu_call, check_call):
    cpu, check = _message(cpu_call), _message(check_call)
    assert cpu == check
    return cpu


def test_jagged_offsets_and_lengths():
    v = torch.randn(6, 3)
    bad = torch.tensor([0, 4, 2, 6])
    msg = _same(lambda: recops.ops.jagged_to_padded(v, bad, 4), lambda: _C.check_jagged(bad, 6, -1, "jagged_to_padded"))
    assert "non-decreasing" in msg
    padded = torch.randn(2, 3, 4)
    long = torch.tensor([0, 5, 6])
    msg = _same(lambda: recops.ops.padded_to_jagged(padded, long),
                lambda: _C.check_jagged(long, 6, 3, "padded_to_jagged"))
    assert "sequence lengths must be <= padded.shape[1]=3" in msg
    _C.check_jagged(torch.tensor([0, 2, 6], dtype=torch.int32), 6, 4, "x")  # valid: no exception


def test_hstu_lengths_and_targets():
    q = torch.randn(7, 1, 4)
    off = torch.tensor([0, 3, 7])
    nt = torch.tensor([1, 5])
    msg = _same(lambda: recops.ops.hstu_attention(q, q, q, off, 8, num_targets=nt),
                lambda: _C.check_hstu(off, 7, 8, nt, "hstu_attention"))
    assert "num_targets[1]" in msg
    msg = _same(lambda: recops.ops.hstu_attention(q, q, q, off, 3),
                lambda: _C.check_hstu(off, 7, 3, None, "hstu_attention"))
    assert "max_seq_len=3" in msg


def test_ordinal_labels_and_thresholds():
    scores = torch.randn(5)
    th = torch.tensor([-1.0, 0.5, 0.2])
    labels = torch.tensor([0, 1, 2, 3, 1])
    msg = _same(lambda: recops.ops.ordinal_logistic_loss(scores, th, labels),
                lambda: _C.check_ordinal(labels, 3, th, "labels", "ordinal_logistic_loss"))
    assert "strictly increasing" in msg
    th = torch.tensor([-1.0, 0.0, 1.0])
    labels = torch.tensor([0, 4, 2, 3, 1])
    msg = _same(lambda: recops.ops.ordinal_logistic_loss(scores, th, labels),
                lambda: _C.check_ordinal(labels, 3, th, "labels", "ordinal_logistic_loss"))
    assert "labels[1]" in msg
    cos = torch.randn(5, 2)
    levels = torch.tensor([0, 1, 2, -1, 1])
    msg = _same(lambda: recops.ops.gnolr_loss(cos, torch.ones(2), torch.zeros(2), levels),
                lambda: _C.check_ordinal(levels, 2, None, "levels", "gnolr_loss"))
    assert "levels[3]" in msg


def test_topk_exclusions():
    qs, items = torch.randn(2, 4), torch.randn(10, 4)
    off, ids = torch.tensor([0, 2, 3]), torch.tensor([1, 10, 3])
    msg = _same(lambda: recops.ops.topk_inner_product(qs, items, 3, exclude_offsets=off, exclude_ids=ids),
                lambda: _C.check_topk(off, ids, 2, 10))
    assert "exclude_ids[1]" in msg
    off = torch.tensor([0, 3, 2])
    msg = _same(lambda: recops.ops.topk_inner_product(qs, items, 3, exclude_offsets=off, exclude_ids=ids[:2]),
                lambda: _C.check_topk(off, ids[:2], 2, 10))
    assert "exclude_offsets" in msg


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_embedding_offsets_and_indices(index_dtype):
    w = torch.randn(20, 4)
    meta = torch.tensor([[0, 0, 20, 4, 4, 0, 0]])
    idx = torch.tensor([1, 2, 25, 3], dtype=index_dtype)
    off = torch.tensor([0, 2, 4], dtype=index_dtype)
    msg = _same(lambda: recops.ops.embedding_bag(w, idx, off),
                lambda: _C.check_embedding_bags(meta.flatten(), idx, off, 2, None, "embedding_bag"))
    assert "indices[2]" in msg and "[0, 20)" in msg
    bad = torch.tensor([0, 3, 2], dtype=index_dtype)
    msg = _same(lambda: recops.ops.embedding_bag(w, idx, bad),
                lambda: _C.check_embedding_bags(meta.flatten(), idx, bad, 2, None, "embedding_bag"))
    assert "non-decreasing" in msg
    two = torch.tensor([[0, 0, 20, 4, 4, 0, 0], [0, 0, 20, 4, 4, 0, 4]]).flatten()
    off2 = torch.tensor([0, 1, 2, 3, 4], dtype=index_dtype)
    msg = _message(lambda: _C.check_embedding_bags(two, idx, off2, 2, ["a", "b"], "EmbeddingBagCollection"))
    assert re.search(r"feature 'b' indices\[0\] must be in \[0, 20\), got 25", msg)


def test_sampled_softmax_ids_and_log_q():
    q, items, log_q = torch.randn(3, 4), torch.randn(10, 4), torch.zeros(10)
    kw = dict(dim=4, num_items=10, num_negatives=2, generate=False, inv_temperature=1.0, in_batch=False)
    pos, shared = torch.tensor([0, 11, 2]), torch.tensor([1, 2])
    msg = _same(lambda: recops.ops.sampled_softmax_loss(q, pos, items, shared),
                lambda: _C.check_sampled_softmax(pos, shared, None, **kw))
    assert "positives[1]" in msg
    pos, per_row = torch.tensor([0, 1, 2]), torch.tensor([[1, 2], [3, 4], [5, -1]])
    msg = _same(lambda: recops.ops.sampled_softmax_loss(q, pos, items, per_row),
                lambda: _C.check_sampled_softmax(pos, per_row, None, **kw))
    assert "negatives[5] must be in [0, 10), got -1" in msg
    bad_q = log_q.index_fill(0, torch.tensor([7]), float("inf"))
    msg = _same(lambda: recops.ops.sampled_softmax_loss(q, pos, items, shared, log_q=bad_q),
                lambda: _C.check_sampled_softmax(pos, shared, bad_q, **kw))
    assert "log_q[7] must be finite, got inf" in msg
    msg = _same(lambda: recops.ops.sampled_softmax_loss(q[:0], pos[:0], items, torch.tensor([3, 10])),
                lambda: _C.check_sampled_softmax(pos[:0], torch.tensor([3, 10]), None, **kw))
    assert "negatives[1]" in msg  # no rows: the shared ids are checked all the same
    gen = dict(kw, num_items=0, generate=True)
    msg = _same(lambda: recops.ops.sampled_softmax_loss(q, pos, items[:0], num_negatives=2, seed=1),
                lambda: _C.check_sampled_softmax(pos, None, None, **gen))
    assert "items must have at least 1 row" in msg
    _C.check_sampled_softmax(pos, shared, log_q.double(), **kw)  # valid: no exception
    _C.check_sampled_softmax(pos, None, None, **dict(kw, generate=True))


def test_launch_raise_errors_reruns_the_validator():
    calls = []

    def recheck():
        calls.append(1)
        _C.check_jagged(torch.tensor([0, 2, 1]), 1, -1, "my_op")

    launch = Launch(torch.empty(0), "my_op", recheck)
    launch.raise_errors()  # CPU: no flag, nothing to do
    assert calls == []
    launch.flag = torch.tensor([_C.ERROR_BITS["bad_offsets"]], dtype=torch.int32)  # as a CUDA kernel leaves it
    with pytest.raises(ValueError, match="my_op: offsets must be non-decreasing"):
        launch.raise_errors()
    assert calls == [1]
    quiet = Launch(torch.empty(0), "my_op", lambda: None)  # validator finds nothing: the bits are named
    quiet.flag = torch.tensor([_C.ERROR_BITS["bad_index"] | _C.ERROR_BITS["too_long"]], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"my_op: the device reported invalid input \(too_long, bad_index\)"):
        quiet.raise_errors()
    recops.set_checks(False)
    try:
        quiet.raise_errors()  # checks off: the flag is not read
    finally:
        recops.set_checks(True)


def test_error_bits_and_codes_exported_by_name():
    assert set(_C.ERROR_BITS) == {"bad_offsets", "too_long", "bad_index", "bad_order", "non_finite"}
    assert len(set(_C.ERROR_BITS.values())) == 5
    assert all(v & (v - 1) == 0 for v in _C.ERROR_BITS.values())  # one bit each
    cols = _C.EMBEDDING_META_COLUMNS
    assert sorted(cols.values()) == list(range(_C.EMBEDDING_META_NUM_COLUMNS))
    assert set(_C.EMBEDDING_OPTIMIZERS) == {"dense", "sgd", "adagrad", "rowwise_adagrad", "adam"}
    assert _C.EMBEDDING_POOLING == {"sum": 0, "mean": 1, "max": 2}
