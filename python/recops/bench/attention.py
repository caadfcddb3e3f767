# SPDX-License-Identifier: Apache-2.0
"""Jagged softmax attention benchmark cases, forward+backward: recops.ops.jagged_attention against torch SDPA on
the padded batch (its CPU flash kernel: is_causal, no dropout), a Python loop of SDPA over the sequences, torch's
nested-tensor SDPA (bidirectional only: torch 2.13 has no CPU backend for is_causal on jagged nested tensors)
and the padded math reference; achieved GFLOP/s on useful (jagged, masked) FLOPs next to the run's fp32 matmul."""

import torch
import torch.nn.functional as F

from ..ops import attention_ref as ref
from ..ops import jagged as jops
from ..ops.attention import jagged_attention
from .hstu import lengths_for, useful_flops

# (name, B, H, D, N, lengths kind)
SHAPES = [
    ("ML-1M B=128,H=1,D=50,N=200,ml1m", 128, 1, 50, 200, "ml1m"),
    ("B=32,H=4,D=64,N=1024,longtail", 32, 4, 64, 1024, "longtail"),
    ("B=32,H=4,D=64,N=256,full", 32, 4, 64, 256, "full"),
    ("B=8,H=4,D=64,N=1024,full", 8, 4, 64, 1024, "full"),
]
QUICK = 1


def padders(offsets, max_len, heads, dim):
    """pad: jagged [L, H, D] -> padded [B, H, N, D]; unpad: the inverse (this shape's values bound)."""
    total = int(offsets[-1])

    def pad(t):
        return jops.jagged_to_padded(t.reshape(t.shape[0], -1), offsets, max_len).view(
            offsets.numel() - 1, max_len, heads, dim).transpose(1, 2)

    def unpad(o):
        return jops.padded_to_jagged(o.transpose(1, 2).reshape(o.shape[0], o.shape[2], -1), offsets,
                                     total).view(total, heads, dim)
    return pad, unpad


def attention_cases(device, quick):
    from . import Case

    cases = []
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    cases.append(Case("fp32 matmul (machine reference)", f"{n}x{n}x{n}", {"torch.mm": lambda: a @ b},
                      flops=2 * n**3))
    for name, batch, heads, dim, max_len, kind in SHAPES[:QUICK] if quick else SHAPES:
        g = torch.Generator().manual_seed(0)
        lengths = lengths_for(kind, batch, max_len, g)
        offsets = jops.lengths_to_offsets(lengths).to(device)
        total = int(offsets[-1])
        leaves = [(0.3 * torch.randn(total, heads, dim, generator=g)).to(device).requires_grad_() for _ in range(3)]
        grad = torch.randn(total, heads, dim, generator=g).to(device)
        bounds = offsets.tolist()

        pad, unpad = padders(offsets, max_len, heads, dim)

        for causal in (True, False):
            flops = useful_flops(lengths, heads, dim, dim, causal)
            valid = (torch.arange(max_len, device=device)[None, :] < lengths.to(device)[:, None])[:, None, None, :]

            def sdpa_padded(q, k, v, causal=causal, valid=valid, pad=pad, unpad=unpad):
                o = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), is_causal=causal,
                                                   attn_mask=None if causal else valid)
                return unpad(o)

            def sdpa_loop(q, k, v, causal=causal, bounds=bounds):
                outs = [F.scaled_dot_product_attention(*(t[s:e].transpose(0, 1) for t in (q, k, v)),
                                                       is_causal=causal).transpose(0, 1)
                        for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
                return torch.cat(outs)

            def nested(q, k, v, offsets=offsets):
                nt = [torch.nested.nested_tensor_from_jagged(t, offsets).transpose(1, 2) for t in (q, k, v)]
                return F.scaled_dot_product_attention(*nt).transpose(1, 2).values()

            def fwd_bwd(fn, leaves=leaves, grad=grad):
                return torch.autograd.grad(fn(*leaves), leaves, grad)

            o, n_ = offsets, max_len
            impls = {
                "recops": lambda f=fwd_bwd, o=o, n_=n_, c=causal: f(lambda q, k, v: jagged_attention(q, k, v, o, n_,
                                                                                                causal=c)),
                "sdpa_padded": lambda f=fwd_bwd, s=sdpa_padded: f(s),
                "sdpa_loop": lambda f=fwd_bwd, s=sdpa_loop: f(s),
                "padded_ref": lambda f=fwd_bwd, o=o, n_=n_, c=causal: f(
                    lambda q, k, v: ref.jagged_attention(q, k, v, o, n_, causal=c)),
            }
            if not causal:
                impls["sdpa_nested"] = lambda f=fwd_bwd, s=nested: f(s)
            if max_len > 512:  # the [B, H, N, N] math reference takes seconds and GBs here
                impls.pop("padded_ref")
            cases.append(Case(f"jagged_attention fwd+bwd, {'causal' if causal else 'bidirectional'}", name, impls,
                              flops=3.5 * flops))  # backward = 2.5x forward (5 GEMMs vs 2)
    return cases
