# SPDX-License-Identifier: Apache-2.0
"""HSTULayer: matches a padded plain-torch composition of the research formulation; trains; STU variant."""

import pytest
import torch
import torch.nn.functional as F

import recops
from recops.ops import hstu_ref
from tests._helpers import random_offsets


def _layer_ref(layer, x, offsets, timestamps):
    """The research formulation written with the padded reference attention."""
    L, H, dq, dv = x.shape[0], layer.num_heads, layer.attention_dim, layer.linear_dim
    h = F.layer_norm(x, (x.shape[1],), eps=1e-6)
    u, v, q, k = torch.split(F.silu(h @ layer.uvqk), [H * dv, H * dv, H * dq, H * dq], dim=1)
    o = hstu_ref.hstu_attention(q.reshape(L, H, dq), k.reshape(L, H, dq), v.reshape(L, H, dv), offsets,
                                layer.max_seq_len, pos_bias=layer.pos_bias, timestamps=timestamps,
                                time_bias=layer.time_bias)
    y = u * F.layer_norm(o.reshape(L, H * dv), (H * dv,), eps=1e-6)
    return x + layer.out(y)


@pytest.mark.parametrize("heads,dq,dv", [(1, 50, 50), (2, 25, 25), (2, 8, 12)])
def test_research_layer_matches_reference(heads, dq, dv):
    torch.manual_seed(0)
    lengths = [7, 0, 1, 40]
    offsets = random_offsets(lengths)
    layer = recops.nn.HSTULayer(50, heads, dq, dv, max_seq_len=51, dropout=0.0).double()
    with torch.no_grad():
        layer.pos_bias.normal_(0, 0.5)
        layer.time_bias.normal_(0, 0.5)
    x = torch.randn(sum(lengths), 50, dtype=torch.float64, requires_grad=True)
    ts = torch.sort(torch.randint(0, 10**7, (sum(lengths),))).values
    out = layer(x, offsets, ts)
    expected = _layer_ref(layer, x, offsets, ts)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    params = [x, layer.uvqk, layer.pos_bias, layer.time_bias, layer.out.weight]
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(expected, params, g)):
        torch.testing.assert_close(a, b)


def test_layer_trains_on_a_copy_task():
    # next-step regression: the layer must learn to pull information from earlier rows (needs attention)
    torch.manual_seed(0)
    layer = recops.nn.HSTULayer(16, 2, 8, 8, max_seq_len=20, dropout=0.0)
    opt = torch.optim.Adam(layer.parameters(), lr=3e-3)
    lengths = [12] * 16
    offsets = random_offsets(lengths)
    losses = []
    for _ in range(150):
        x = torch.randn(sum(lengths), 16)
        target = torch.roll(x, 1, 0)  # row i should reproduce row i - 1
        first = offsets[:-1]
        mask = torch.ones(x.shape[0], dtype=torch.bool)
        mask[first] = False
        loss = F.mse_loss(layer(x, offsets)[mask], target[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_stu_variant_runs_and_differentiates():
    torch.manual_seed(0)
    layer = recops.nn.HSTULayer(32, 4, 8, 8, max_seq_len=30, variant="stu", dropout=0.0)
    offsets = random_offsets([5, 0, 29])
    x = torch.randn(34, 32, requires_grad=True)
    out = layer(x, offsets, num_targets=torch.tensor([1, 0, 3]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and layer.uvqk.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="variant"):
        recops.nn.HSTULayer(8, variant="nope")
