# SPDX-License-Identifier: Apache-2.0
"""recops.nn ordinal heads: thresholds kept ordered, probabilities, losses equal the ops, serving vectors."""

import math

import pytest
import torch
import torch.nn.functional as F

import recops
from recops.nn import GNOLRHead, OrdinalHead, thresholds_from_positive_rates
from recops.ops import gnolr_loss, ordinal_logistic_loss


def test_ordinal_head_learned_thresholds_stay_ordered():
    head = OrdinalHead(5)
    th = head.thresholds()
    assert th.shape == (4,)
    torch.testing.assert_close(th, torch.tensor([-1.5, -0.5, 0.5, 1.5]))
    with torch.no_grad():
        head.raw_increments.copy_(torch.tensor([-30.0, 5.0, 0.0]))
    th = head.thresholds()
    assert bool((th[1:] > th[:-1]).all())
    assert OrdinalHead(1).thresholds().shape == (0,)
    assert "learned" in repr(head)


def test_ordinal_head_loss_probabilities_and_training():
    torch.manual_seed(0)
    head = OrdinalHead(4, gamma=2.0)
    scores = torch.randn(64, requires_grad=True)
    labels = torch.randint(0, 4, (64,))
    loss = head(scores, labels)
    torch.testing.assert_close(loss, ordinal_logistic_loss(2.0 * scores, head.thresholds(), labels))
    probs = head.probabilities(scores)
    torch.testing.assert_close(probs.sum(1), torch.ones(64))
    nll = -torch.log(probs.gather(1, labels[:, None])[:, 0]).mean()
    torch.testing.assert_close(loss, nll)
    # a few optimiser steps on thresholds and scores lower the loss
    opt = torch.optim.SGD([scores, *head.parameters()], lr=0.5)
    first = loss.item()
    for _ in range(20):
        opt.zero_grad()
        head(scores, labels).backward()
        opt.step()
    assert head(scores, labels).item() < first
    assert bool((head.thresholds()[1:] > head.thresholds()[:-1]).all())


def test_ordinal_head_fixed_thresholds():
    head = OrdinalHead(3, thresholds=torch.tensor([-1.0, 1.0]))
    assert list(head.parameters()) == []
    torch.testing.assert_close(head.thresholds(), torch.tensor([-1.0, 1.0]))
    with pytest.raises(ValueError, match="strictly increasing"):
        OrdinalHead(3, thresholds=[1.0, 1.0])
    with pytest.raises(ValueError, match="num_levels - 1 = 2 elements, got 3"):
        OrdinalHead(3, thresholds=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="'learned' or a tensor"):
        OrdinalHead(3, thresholds="fixed")


def test_thresholds_from_positive_rates():
    a = thresholds_from_positive_rates([0.1, 0.02])
    torch.testing.assert_close(a, torch.tensor([math.log(9.0), math.log(49.0)]))
    torch.testing.assert_close(torch.sigmoid(-a), torch.tensor([0.1, 0.02]))
    with pytest.raises(ValueError, match="positive_rates must be in"):
        thresholds_from_positive_rates([0.5, 1.0])


def _embeddings(batch=32, levels=2, dim=8):
    user = torch.randn(batch, levels, dim, requires_grad=True)
    item = torch.randn(batch, levels, dim, requires_grad=True)
    return user, item


def test_gnolr_head_loss_equals_op():
    torch.manual_seed(0)
    head = GNOLRHead(2, gamma=[2.0, 3.0], positive_rates=[0.0323, 0.0857 * 0.0323])
    user, item = _embeddings()
    levels = torch.randint(0, 3, (32,))
    cos = F.cosine_similarity(user, item, dim=-1)
    want = gnolr_loss(cos, head.gamma, head.thresholds(), levels)
    torch.testing.assert_close(head(user, item, levels), want)
    loss = head(user, item, levels, reduction="none", weights=torch.rand(32))
    assert loss.shape == (32,)
    head(user, item, levels).backward()
    assert user.grad is not None and torch.isfinite(user.grad).all() and torch.isfinite(item.grad).all()
    assert list(head.parameters()) == []  # fixed thresholds by default
    z = head.logits(user, item)
    torch.testing.assert_close(z, torch.cumsum(head.gamma * cos, 1) - head.thresholds())


def test_gnolr_head_serving_vectors_rank_by_top_level():
    head = GNOLRHead(3, gamma=[1.0, 2.0, 4.0], thresholds=[1.0, 3.0, 6.0])
    user, item = _embeddings(16, 3, 5)
    u, v = head.user_vectors(user), head.item_vectors(item)
    assert u.shape == v.shape == (16, 15)
    dot = (u * v).sum(1)
    z = head.logits(user, item)
    torch.testing.assert_close(dot, z[:, -1] + 6.0)  # the dot product is z_T + a_T
    # one user against many items: ranking by the dot equals ranking by P(k >= T)
    items = torch.randn(50, 3, 5)
    scores = head.item_vectors(items) @ u[0]
    p_top = torch.sigmoid(head.logits(user[:1].expand(50, -1, -1), items)[:, -1])
    assert torch.equal(torch.argsort(scores), torch.argsort(p_top))


def test_gnolr_head_learned_thresholds_and_prior_pull():
    head = GNOLRHead(2, gamma=1.0, positive_rates=[0.2, 0.05], learn_thresholds=True, prior_weight=0.5)
    torch.testing.assert_close(head.thresholds(), thresholds_from_positive_rates([0.2, 0.05]))
    user, item = _embeddings(8)
    levels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    base = head(user, item, levels)
    with torch.no_grad():
        head.rho.add_(0.3)
    a = head.thresholds()
    cos = F.cosine_similarity(user, item, dim=-1)
    want = gnolr_loss(cos, head.gamma, a, levels) + 0.5 * (a - head.prior_thresholds).square().sum()
    torch.testing.assert_close(head(user, item, levels), want)
    head(user, item, levels).backward()
    assert head.rho.grad is not None and torch.isfinite(head.rho.grad).all()
    assert base.ndim == 0
    head.reset_parameters()
    torch.testing.assert_close(head.thresholds(), head.prior_thresholds)


def test_gnolr_head_errors():
    with pytest.raises(ValueError, match="give thresholds or positive_rates"):
        GNOLRHead(2, gamma=1.0)
    with pytest.raises(ValueError, match="gamma must have 2 elements, got 3"):
        GNOLRHead(2, gamma=[1.0, 2.0, 3.0], thresholds=[1.0, 2.0])
    with pytest.raises(ValueError, match="learned thresholds start positive"):
        GNOLRHead(2, gamma=1.0, thresholds=[-1.0, 2.0], learn_thresholds=True)
    head = GNOLRHead(2, gamma=1.0, thresholds=[1.0, 2.0])
    user, item = _embeddings(4)
    with pytest.raises(ValueError, match=r"levels\[1\] must be in \[0, 3\), got 3"):
        head(user, item, torch.tensor([0, 3, 1, 2]))


def test_heads_compile():
    head = GNOLRHead(2, gamma=[1.0, 2.0], positive_rates=[0.2, 0.05])
    user, item = _embeddings(8)
    levels = torch.randint(0, 3, (8,))
    f = torch.compile(head, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(user, item, levels), head(user, item, levels))
    assert isinstance(recops.nn.OrdinalHead(3), torch.nn.Module)
