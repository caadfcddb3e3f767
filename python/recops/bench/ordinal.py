# SPDX-License-Identifier: Apache-2.0
"""Ordinal-loss benchmark cases, forward + backward: recops vs the eager PyTorch composition of the same stable
loss, vs torch.compile of that composition, and a plain copy of the same bytes (the memory-bandwidth reference:
its GB/s is what this machine can stream)."""

import math

import torch
import torch.nn.functional as F

from ..ops import ordinal as ops

# (B, T): recsys batch sizes, two and three feedback levels (click, cart, purchase).
SHAPES = [(65_536, 2), (65_536, 3), (1_048_576, 2), (1_048_576, 3)]
_LN2 = math.log(2.0)


def _log_sigmoid_diff(a, b, min_gap):
    """log(sigmoid(a) - sigmoid(b)), stable, with a - b clamped to >= min_gap (the recops definition)."""
    d = (a - b).clamp(min=min_gap)
    log1mexp = torch.where(d < _LN2, torch.log(-torch.expm1(-d)), torch.log1p(-torch.exp(-d)))
    return F.logsigmoid(a) + F.logsigmoid(-b) + log1mexp


def gnolr_torch(cos, gamma, thresholds, levels, min_gap: float = 1e-6):
    """Nested GNOLR loss (mean) as a composition of torch ops: the baseline recops replaces."""
    num_levels = cos.shape[1]
    z = torch.cumsum(gamma * cos, 1) - thresholds
    k = levels[:, None]
    below = torch.arange(1, num_levels + 1, device=cos.device) <= k
    pos = -(F.logsigmoid(z) * below).sum(1)
    zk = z.gather(1, (k - 1).clamp(min=0))[:, 0]
    zk1 = z.gather(1, k.clamp(max=num_levels - 1))[:, 0]
    pair = _log_sigmoid_diff(zk, zk1, min_gap)
    loss = torch.where(levels == 0, -num_levels * F.logsigmoid(-z[:, 0]), pos - (num_levels - levels) * pair)
    return loss.mean()


def ordinal_torch(scores, thresholds, labels, min_gap: float = 1e-6):
    """Proportional-odds loss (mean) as a composition of torch ops."""
    num_th = thresholds.shape[0]
    z_lo = scores - thresholds[(labels - 1).clamp(min=0)]  # z_k = f - theta_k (k >= 1)
    z_hi = scores - thresholds[labels.clamp(max=num_th - 1)]  # z_{k+1} (k < K - 1)
    loss = torch.where(labels == 0, -F.logsigmoid(-z_hi),
                       torch.where(labels == num_th, -F.logsigmoid(z_lo), -_log_sigmoid_diff(z_lo, z_hi, min_gap)))
    return loss.mean()


def _gnolr_inputs(batch, num_levels, device):
    g = torch.Generator().manual_seed(0)
    cos = (2 * torch.rand(batch, num_levels, generator=g) - 1).to(device).requires_grad_()
    gamma = torch.linspace(1.0, 2.0, num_levels).to(device).requires_grad_()
    thresholds = torch.linspace(3.4, 8.0, num_levels).to(device).requires_grad_()  # Ali-CCP-like rates
    levels = torch.multinomial(torch.tensor([0.9, 0.07, 0.03, 0.01][: num_levels + 1]), batch, True,
                               generator=g).to(device)
    return cos, gamma, thresholds, levels


def _copy_case(bytes_moved, device):
    src = torch.randn(max(bytes_moved // 8, 1), device=device)  # a copy reads and writes: 8 bytes per float
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def ordinal_cases(device, quick):
    from . import Case

    compiled_gnolr = torch.compile(gnolr_torch, dynamic=False)
    compiled_ordinal = torch.compile(ordinal_torch, dynamic=False)
    cases = []
    for batch, num_levels in [s for s in SHAPES if not quick or s[0] == 65_536]:
        name = f"B={batch},T={num_levels},fp32"
        cos, gamma, thresholds, levels = _gnolr_inputs(batch, num_levels, device)
        params = (cos, gamma, thresholds)

        def fwd_bwd(fn, args=(cos, gamma, thresholds, levels), params=params):
            return torch.autograd.grad(fn(*args), params)

        # read cos and levels, write grad_cos: the least traffic any implementation needs
        nbytes = batch * (8 * num_levels + 8)
        cases.append(Case("gnolr_loss fwd+bwd", name, {
            "recops": lambda f=fwd_bwd: f(ops.gnolr_loss),
            "torch eager": lambda f=fwd_bwd: f(gnolr_torch),
            "torch.compile": lambda f=fwd_bwd: f(compiled_gnolr),
            "copy (bandwidth)": _copy_case(nbytes, device),
        }, bytes_moved=nbytes))

        scores = cos.detach()[:, 0].clone().mul_(3).requires_grad_()
        th = thresholds.detach().clone().requires_grad_()

        def fwd_bwd_olr(fn, args=(scores, th, levels), params=(scores, th)):
            return torch.autograd.grad(fn(*args), params)

        nbytes = batch * (4 + 8 + 4)
        cases.append(Case(f"ordinal_logistic_loss fwd+bwd (K={num_levels + 1})", name, {
            "recops": lambda f=fwd_bwd_olr: f(ops.ordinal_logistic_loss),
            "torch eager": lambda f=fwd_bwd_olr: f(ordinal_torch),
            "torch.compile": lambda f=fwd_bwd_olr: f(compiled_ordinal),
            "copy (bandwidth)": _copy_case(nbytes, device),
        }, bytes_moved=nbytes))
    return cases
