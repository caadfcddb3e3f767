# SPDX-License-Identifier: Apache-2.0
"""bfloat16 attention on the CPU's matrix units, forward+backward: recops.ops.hstu_attention and jagged_attention
with bf16 inputs on each bf16 unit the CPU has (AMX tiles, AVX512-BF16) against the same ops' float32 kernels and
torch's SDPA on the padded batch in bf16 (its CPU flash kernel) and float32, next to the run's bf16 and fp32
matmul GFLOP/s. The unit of each implementation is in its name (recops = the best unit)."""

import torch
import torch.nn.functional as F

from ..ops import jagged as jops
from ..ops.attention import jagged_attention
from ..ops.hstu import cpu_bf16_unit, force_bf16_unit, hstu_attention
from .attention import padders
from .hstu import lengths_for, useful_flops

# (name, B, H, D, N, lengths kind)
SHAPES = [
    ("B=32,H=4,D=64,N=1024,longtail", 32, 4, 64, 1024, "longtail"),
    ("ML-1M layer B=128,H=1,D=50,N=200,ml1m", 128, 1, 50, 200, "ml1m"),
]
QUICK = 1


def _units():
    best = cpu_bf16_unit()
    return {"amx": ["amx", "avx512_bf16"], "avx512_bf16": ["avx512_bf16"]}.get(best, [])


def bf16_cases(device, quick):
    from . import Case

    if device.type != "cpu":
        return []
    cases = []
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    ab, bb = a.bfloat16(), b.bfloat16()
    cases.append(Case("fp32 matmul (machine reference)", f"{n}x{n}x{n}", {"torch.mm": lambda: a @ b},
                      flops=2 * n**3))
    cases.append(Case("bf16 matmul (machine reference)", f"{n}x{n}x{n}", {"torch.mm": lambda: ab @ bb},
                      flops=2 * n**3))
    units = _units()
    best = cpu_bf16_unit()
    for name, batch, heads, dim, max_len, kind in SHAPES[:QUICK] if quick else SHAPES:
        g = torch.Generator().manual_seed(0)
        lengths = lengths_for(kind, batch, max_len, g)
        offsets = jops.lengths_to_offsets(lengths)
        total = int(offsets[-1])
        base = [0.3 * torch.randn(total, heads, dim, generator=g) for _ in range(3)]
        grad = torch.randn(total, heads, dim, generator=g)
        flops = useful_flops(lengths, heads, dim, dim, True)

        pad, unpad = padders(offsets, max_len, heads, dim)

        for op in ("hstu_attention", "jagged_attention"):
            leaves = {dt: [t.to(dt).requires_grad_() for t in base] for dt in (torch.float32, torch.bfloat16)}

            def step(dt, unit=None, op=op, leaves=leaves, grad=grad, offsets=offsets, max_len=max_len, best=best):
                if unit is not None:
                    force_bf16_unit(unit)
                try:
                    q, k, v = leaves[dt]
                    if op == "hstu_attention":
                        out = hstu_attention(q, k, v, offsets, max_len, alpha=0.125)
                    else:
                        out = jagged_attention(q, k, v, offsets, max_len)
                    return torch.autograd.grad(out, (q, k, v), grad.to(dt))
                finally:
                    if unit is not None:
                        force_bf16_unit(best)

            def sdpa(dt, leaves=leaves, grad=grad, pad=pad, unpad=unpad):
                q, k, v = leaves[dt]
                out = unpad(F.scaled_dot_product_attention(pad(q), pad(k), pad(v), is_causal=True))
                return torch.autograd.grad(out, (q, k, v), grad.to(dt))

            impls = {"recops": lambda s=step: s(torch.bfloat16)}
            for unit in units[1:]:
                impls[f"recops_bf16_{unit}"] = lambda s=step, u=unit: s(torch.bfloat16, u)
            impls["recops_fp32"] = lambda s=step: s(torch.float32)
            impls["sdpa_padded_bf16"] = lambda s=sdpa: s(torch.bfloat16)
            impls["sdpa_padded_fp32"] = lambda s=sdpa: s(torch.float32)
            unit_name = units[0] if units else "none (upcast)"
            cases.append(Case(f"{op} bf16 fwd+bwd (recops on {unit_name})", name, impls, flops=3.5 * flops))
    return cases
