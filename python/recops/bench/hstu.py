# SPDX-License-Identifier: Apache-2.0
"""HSTU attention benchmark cases: recops vs the padded PyTorch reference (the same formulation, fp32) and
torch SDPA on padded tensors (what a user would otherwise run), forward and forward+backward, with achieved
GFLOP/s on useful (jagged, causal) FLOPs next to the machine's fp32 matmul GFLOP/s."""

import torch
import torch.nn.functional as F

from ..ops import hstu as ops
from ..ops import hstu_ref as ref
from ..ops import jagged as jops

# (name, B, H, D, N, lengths kind)
SHAPES = [
    ("B=32,H=4,D=64,N=256,uniform", 32, 4, 64, 256, "uniform"),
    ("B=32,H=4,D=64,N=256,longtail", 32, 4, 64, 256, "longtail"),
    ("ML-1M layer B=128,H=1,D=50,N=211", 128, 1, 50, 211, "uniform"),
    ("B=32,H=4,D=64,N=1024,longtail", 32, 4, 64, 1024, "longtail"),
    ("B=32,H=4,D=64,N=1024,uniform", 32, 4, 64, 1024, "uniform"),
]
QUICK = 3


def lengths_for(kind, batch, max_len, generator):
    """uniform in [1, N]; longtail: exponential with mean N/4 clipped to [1, N]; full: all N; ml1m: ML-1M's
    histories (at least 20 ratings, median ~96, about a third capped at N = 200)."""
    if kind == "uniform":
        return torch.randint(1, max_len + 1, (batch,), generator=generator)
    if kind == "full":
        return torch.full((batch,), max_len, dtype=torch.long)
    if kind == "ml1m":
        return torch.exp(torch.randn(batch, generator=generator) * 0.9 + 4.6).long().clamp(20, max_len)
    # long-tailed: exponential with mean ~N/4, clipped to [1, N]
    u = torch.rand(batch, generator=generator).clamp(min=1e-6)
    return (-torch.log(u) * max_len / 4).long().clamp(1, max_len)


def useful_flops(lengths, heads, dqk, dv, causal=True):
    """Forward FLOPs of the masked jagged problem: sum_b 2 H (dqk + dv) n_b^2, halved when causal."""
    return sum(2 * heads * (dqk + dv) * n * n / (2 if causal else 1) for n in lengths.tolist())


def _inputs(batch, heads, dim, max_len, kind, device):
    g = torch.Generator().manual_seed(0)
    lengths = lengths_for(kind, batch, max_len, g)
    offsets = jops.lengths_to_offsets(lengths)
    total = int(offsets[-1])
    q, k, v = (0.1 * torch.randn(total, heads, dim, generator=g) for _ in range(3))
    ts = torch.sort(torch.randint(0, 10**8, (total,), generator=g)).values
    pos_bias = 0.02 * torch.randn(2 * max_len - 1, generator=g)
    time_bias = 0.02 * torch.randn(129, generator=g)
    to = lambda t: t.to(device)
    return lengths, to(offsets), to(q), to(k), to(v), to(ts), to(pos_bias), to(time_bias)


def hstu_cases(device, quick):
    from . import Case

    cases = []
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    cases.append(Case("fp32 matmul (machine reference)", f"{n}x{n}x{n}", {"torch.mm": lambda: a @ b},
                      flops=2 * n**3))
    for name, batch, heads, dim, max_len, kind in SHAPES[:QUICK] if quick else SHAPES:
        lengths, offsets, q, k, v, ts, pb, tb = _inputs(batch, heads, dim, max_len, kind, device)
        flops = useful_flops(lengths, heads, dim, dim)
        kw = dict(pos_bias=pb, timestamps=ts, time_bias=tb)
        mask = torch.arange(max_len, device=device)[None, :] < lengths.to(device)[:, None]

        def sdpa(q, k, v, offsets=offsets, max_len=max_len, heads=heads, dim=dim):
            pad = lambda t: jops.jagged_to_padded(t.reshape(t.shape[0], -1), offsets, max_len).view(
                offsets.numel() - 1, max_len, heads, dim).transpose(1, 2)
            return F.scaled_dot_product_attention(pad(q), pad(k), pad(v), is_causal=True)

        # every closure binds this shape's tensors as defaults (a plain closure would see the last shape's)
        args = (q, k, v, offsets, max_len)
        cases.append(Case("hstu_attention fwd", name, {
            "recops": lambda a=args, kw=kw: ops.hstu_attention(*a, **kw),
            "padded_ref": lambda a=args, kw=kw: ref.hstu_attention(*a, **kw),
            "sdpa_padded": lambda a=args, sdpa=sdpa: sdpa(*a[:3]),
        }, flops=flops))
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        grad = torch.randn_like(v)

        def fwd_bwd(fn, leaves=leaves, grad=grad):
            out = fn(*leaves)
            if out.shape != grad.shape:  # sdpa returns padded [B, H, N, D]
                return torch.autograd.grad(out, leaves, torch.ones_like(out))
            return torch.autograd.grad(out, leaves, grad)

        cases.append(Case("hstu_attention fwd+bwd", name, {
            "recops": lambda f=fwd_bwd, o=offsets, n=max_len, kw=kw: f(
                lambda q, k, v: ops.hstu_attention(q, k, v, o, n, **kw)),
            "padded_ref": lambda f=fwd_bwd, o=offsets, n=max_len, kw=kw: f(
                lambda q, k, v: ref.hstu_attention(q, k, v, o, n, **kw)),
            "sdpa_padded": lambda f=fwd_bwd, sdpa=sdpa: f(sdpa),
        }, flops=3.5 * flops))  # backward = 2.5x forward (5 recomputed/transposed GEMMs vs 2)
    return cases
