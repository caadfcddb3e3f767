# SPDX-License-Identifier: Apache-2.0
"""recops.metrics: AUC and GAUC against hand-computed values (and scikit-learn when installed), log loss,
top-k with exclusion."""

import math

import pytest
import torch

from recops.metrics import grouped_auc, log_loss, roc_auc, topk_with_exclusion
from recops.ops import topk_inner_product

# AUC = P(score of a random positive > score of a random negative), a tie counting one half.


def test_roc_auc_by_hand():
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: 0.35 > 0.1, 0.35 < 0.4, 0.8 > both -> 3 of 4 pairs
    assert roc_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    # perfect and reversed order
    assert roc_auc(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.0, 1.0, 1.0])) == 1.0
    assert roc_auc(torch.tensor([0.3, 0.2, 0.1]), torch.tensor([0.0, 1.0, 1.0])) == 0.0


def test_roc_auc_ties_by_hand():
    # positives {0.5, 0.9} vs negatives {0.5, 0.5, 0.2}:
    #   0.5: ties with two negatives (1/2 + 1/2) and beats 0.2 (1) -> 2
    #   0.9: beats all three -> 3
    # 5 of 6 pairs
    scores = torch.tensor([0.5, 0.5, 0.5, 0.2, 0.9])
    labels = torch.tensor([1, 0, 0, 0, 1])
    assert roc_auc(scores, labels) == pytest.approx(5 / 6)
    # every score tied: each pair counts one half
    assert roc_auc(torch.full((5,), 0.3), labels) == pytest.approx(0.5)
    # labels as bool or float probabilities-of-one (> 0.5 is positive) give the same
    assert roc_auc(scores, labels.bool()) == pytest.approx(5 / 6)
    assert roc_auc(scores, labels.double()) == pytest.approx(5 / 6)


def test_roc_auc_one_class_is_nan():
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.7]), torch.tensor([1, 1])))
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.7]), torch.tensor([0, 0])))
    assert math.isnan(roc_auc(torch.tensor([]), torch.tensor([])))


def test_grouped_auc_by_hand():
    # group 7: the first example above            -> AUC 3/4, 4 samples
    # group 3: positive {0.2} vs negatives {0.2, 0.6}: tie 1/2 + loss 0 of 2 pairs -> AUC 1/4, 3 samples
    # group 9: positives only                      -> left out
    # GAUC = (4 * 3/4 + 3 * 1/4) / (4 + 3) = 3.75 / 7
    groups = torch.tensor([7, 3, 7, 9, 7, 3, 3, 9, 7])
    scores = torch.tensor([0.1, 0.2, 0.4, 0.3, 0.35, 0.2, 0.6, 0.1, 0.8])
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1, 1])
    assert grouped_auc(scores, labels, groups) == pytest.approx(3.75 / 7)
    # one group with both classes: its AUC
    keep = groups == 7
    assert grouped_auc(scores[keep], labels[keep], groups[keep]) == pytest.approx(0.75)


def test_grouped_auc_no_group_with_both_classes_is_nan():
    groups = torch.tensor([0, 0, 1, 2])
    assert math.isnan(grouped_auc(torch.tensor([0.1, 0.9, 0.5, 0.3]), torch.tensor([1, 1, 0, 1]), groups))


def test_auc_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(3)
    n = 500
    scores = torch.randint(0, 20, (n,), generator=g).double() / 20  # many ties
    labels = (torch.rand(n, generator=g) < 0.3).long()
    groups = torch.randint(0, 25, (n,), generator=g)
    assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)

    total = weight = 0.0
    for u in torch.unique(groups).tolist():
        m = groups == u
        if 0 < int(labels[m].sum()) < int(m.sum()):
            total += int(m.sum()) * metrics.roc_auc_score(labels[m].numpy(), scores[m].numpy())
            weight += int(m.sum())
    assert weight > 0
    assert grouped_auc(scores, labels, groups) == pytest.approx(total / weight, abs=1e-12)


def test_log_loss():
    p = torch.tensor([0.9, 0.2, 0.0, 1.0, 0.5], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    eps = 1e-7
    # -log p for a positive, -log(1 - p) for a negative; 0 and 1 are clipped to eps and 1 - eps
    expected = -(math.log(0.9) + math.log(0.8) + math.log(eps) + math.log(eps) + math.log(0.5)) / 5
    assert log_loss(p, y) == pytest.approx(expected, rel=1e-8)
    assert log_loss(p, y, eps=1e-3) == pytest.approx(
        -(math.log(0.9) + math.log(0.8) + 2 * math.log(1e-3) + math.log(0.5)) / 5, rel=1e-8)
    assert math.isnan(log_loss(torch.tensor([]), torch.tensor([])))


def test_topk_with_exclusion_is_the_fused_op():
    queries, items = torch.randn(6, 8), torch.randn(30, 8)
    ex_off = torch.tensor([0, 2, 2, 5, 6, 6, 9])
    ex_ids = torch.randint(0, 30, (9,))
    scores, ids = topk_with_exclusion(queries, items, 5, ex_ids, ex_off)
    ref_scores, ref_ids = topk_inner_product(queries, items, 5, exclude_offsets=ex_off, exclude_ids=ex_ids)
    assert torch.equal(ids, ref_ids) and torch.equal(scores, ref_scores)
    for q in range(6):
        assert not set(ids[q].tolist()) & set(ex_ids[ex_off[q]:ex_off[q + 1]].tolist())
    # k is capped at the number of items
    assert topk_with_exclusion(queries, items[:3], 5)[1].shape == (6, 3)
