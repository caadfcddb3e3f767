# SPDX-License-Identifier: Apache-2.0
"""StreamingFrequencyEstimator against a per-bucket Python loop of Yi et al.'s update, its estimate on a stream
with known rates, exact counts, and gBCE against its formula."""

import math

import pytest
import torch

from recops.nn.dynamic import route
from recops.nn.frequency import StreamingFrequencyEstimator, log_q_from_counts
from recops.ops import gbce_beta, gbce_loss, sampled_softmax_loss


def test_update_matches_the_paper_loop():
    est = StreamingFrequencyEstimator(16, alpha=0.1)
    a, b = [0.0] * 16, [0.0] * 16
    g = torch.Generator().manual_seed(0)
    for t in range(1, 30):
        ids = torch.randint(-(1 << 62), 1 << 62, (7,), generator=g) if t % 3 else torch.tensor([5, 5, 5])
        est.update(ids)
        for h in sorted(set(route(ids, 16).tolist())):
            b[h] = t - a[h] if b[h] == 0 else 0.9 * b[h] + 0.1 * (t - a[h])
            a[h] = float(t)
    assert est.delta.tolist() == pytest.approx(b)
    assert est.last_step.tolist() == a and int(est.step) == 29
    ids = torch.tensor([5, 6, -(1 << 63)])
    want = [-math.log(max(1.0, b[h] if b[h] else 29.0)) for h in route(ids, 16).tolist()]
    assert est.log_q(ids).tolist() == pytest.approx(want, rel=1e-6)


def test_estimate_recovers_the_rates_of_a_stream():
    est = StreamingFrequencyEstimator(1 << 12, alpha=0.02)
    g = torch.Generator().manual_seed(1)
    rates = {10: 0.5, 20: 0.1, 30: 0.02}  # probability of appearing in a step
    draws = torch.rand(12000, len(rates), generator=g) < torch.tensor(list(rates.values()))
    keys = torch.tensor(list(rates))
    for row in draws:  # 240 sightings of the rarest id: the EMA (window ~100) has forgotten its start
        est.update(torch.cat([keys[row], torch.tensor([99])]))
    got = est.log_q(torch.tensor(list(rates))).exp()
    for (k, p), q in zip(rates.items(), got.tolist()):
        assert q == pytest.approx(p, rel=0.35), k
    assert float(est.log_q(torch.tensor([99])).exp()) == pytest.approx(1.0, rel=0.05)


def test_forward_updates_only_in_training_and_state_round_trips():
    est = StreamingFrequencyEstimator(8)
    est(torch.tensor([1, 2]))
    est.eval()
    est(torch.tensor([1, 2]))
    assert int(est.step) == 1
    other = StreamingFrequencyEstimator(8)
    other.load_state_dict(est.state_dict())
    assert torch.equal(other.log_q(torch.tensor([1, 3])), est.log_q(torch.tensor([1, 3])))


def test_log_q_feeds_the_fused_softmax():
    est = StreamingFrequencyEstimator(64)
    items = torch.randn(50, 8)
    pos = torch.randint(0, 50, (32,))
    est.update(pos)
    loss = sampled_softmax_loss(torch.randn(32, 8), pos, items, in_batch=True, log_q=est.log_q(torch.arange(50)))
    assert torch.isfinite(loss)


def test_exact_counts():
    lq = log_q_from_counts(torch.tensor([3, 0, 1]), smoothing=1.0)
    torch.testing.assert_close(lq, torch.log(torch.tensor([4 / 7, 1 / 7, 2 / 7])))
    with pytest.raises(ValueError, match="counts"):
        log_q_from_counts(torch.tensor([-1, 2]))


def test_bad_config():
    with pytest.raises(ValueError, match="num_buckets"):
        StreamingFrequencyEstimator(0)
    with pytest.raises(ValueError, match="alpha"):
        StreamingFrequencyEstimator(4, alpha=0.0)
    with pytest.raises(TypeError, match="integer"):
        StreamingFrequencyEstimator(4).update(torch.tensor([1.5]))


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_gbce_matches_its_formula(t):
    g = torch.Generator().manual_seed(2)
    pos = torch.randn(6, dtype=torch.float64, generator=g) * 5
    neg = torch.randn(6, 4, dtype=torch.float64, generator=g) * 5
    alpha = 4 / 99
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    want = -(beta * torch.log(torch.sigmoid(pos)) + torch.log(1 - torch.sigmoid(neg)).sum(1))
    torch.testing.assert_close(gbce_loss(pos, neg, 100, t, "none"), want)
    assert gbce_beta(4, 100, 0.0) == pytest.approx(1.0) and gbce_beta(4, 100, 1.0) == pytest.approx(alpha)
    big = gbce_loss(torch.tensor([-1e4]), torch.tensor([[1e4]]), 100, t)
    assert torch.isfinite(big)
    x = pos.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: gbce_loss(p, neg, 100, t), (x,))


def test_gbce_bad_input():
    with pytest.raises(ValueError, match="t must be"):
        gbce_loss(torch.zeros(2), torch.zeros(2, 3), 10, t=2.0)
    with pytest.raises(ValueError, match="num_negatives"):
        gbce_loss(torch.zeros(2), torch.zeros(2, 12), 10)
    with pytest.raises(ValueError, match=r"\[L\]"):
        gbce_loss(torch.zeros(2, 1), torch.zeros(2, 3), 10)
