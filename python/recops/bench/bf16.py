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
            grads = {dt: grad.to(dt) for dt in (torch.float32, torch.bfloat16)}  # converted once, not per call

            def step(dt, unit=None, op=op, leaves=leaves, grads=grads, offsets=offsets, max_len=max_len, best=best):
                if unit is not None:
                    force_bf16_unit(unit)
                try:
                    q, k, v = leaves[dt]
                    if op == "hstu_attention":
                        out = hstu_attention(q, k, v, offsets, max_len, alpha=0.125)
                    else:
                        out = jagged_attention(q, k, v, offsets, max_len)
                    return torch.autograd.grad(out, (q, k, v), grads[dt])
                finally:
                    if unit is not None:
                        force_bf16_unit(best)

            def sdpa(dt, leaves=leaves, grads=grads, pad=pad, unpad=unpad):
                q, k, v = leaves[dt]
                out = unpad(F.scaled_dot_product_attention(pad(q), pad(k), pad(v), is_causal=True))
                return torch.autograd.grad(out, (q, k, v), grads[dt])

            impls = {"recops": lambda s=step: s(torch.bfloat16)}
            for unit in units[1:]:
                impls[f"recops_bf16_{unit}"] = lambda s=step, u=unit: s(torch.bfloat16, u)
            impls["recops_fp32"] = lambda s=step: s(torch.float32)
            impls["sdpa_padded_bf16"] = lambda s=sdpa: s(torch.bfloat16)
            impls["sdpa_padded_fp32"] = lambda s=sdpa: s(torch.float32)
            unit_name = units[0] if units else "none (upcast)"
            cases.append(Case(f"{op} bf16 fwd+bwd (recops on {unit_name})", name, impls, flops=3.5 * flops))
    return cases


def bf16_model_cases(device, quick):
    """HSTU training steps in bf16 (autocast: linear layers on oneDNN, attention on the bf16 kernels) against float32,
    same batch; and serving: one new event for a user with a 1,024-event history through HSTU.cached_forward
    against a full forward over the history, and 1,000 users adding one event each (ML-1M-like histories)."""
    from . import Case
    from ..data.sequences import uniform_negatives
    from ..models.sequential import HSTU, SeqConfig, autocast, sampled_softmax_loss
    from .models import ml1m_batch

    if device.type != "cpu":
        return []
    cases = []
    batch, _ = ml1m_batch(device)
    num_seqs = batch["offsets"].numel() - 1
    for name, preset in (("HSTU (ML-1M: 2x1, D=50)", "hstu"), ("HSTU-large (8x2x25)", "hstu-large")):
        if quick and preset == "hstu-large":
            continue
        impls = {}
        for precision in ("bf16", "fp32"):
            cfg = SeqConfig.preset(preset, precision=precision)
            torch.manual_seed(0)
            model = HSTU(3706, cfg).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas)
            negs = uniform_negatives(cfg.num_negatives, 3706, torch.Generator().manual_seed(1)).to(device)

            def step(model=model, opt=opt, cfg=cfg, negs=negs):
                with autocast(cfg, device):
                    out = model(batch["items"], batch["offsets"], batch["timestamps"])
                loss = sampled_softmax_loss(out.float(), batch["targets"], model.item_vectors(), negs,
                                            cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            impls["recops" if precision == "bf16" else "recops_fp32"] = step
        cases.append(Case(f"train step bf16 vs fp32 (attention on {cpu_bf16_unit()})",
                          f"{name}, B={num_seqs}, L={batch['items'].numel()}", impls, sequences=num_seqs))

    # serving (fp32 weights; the incremental path is the same kernels with q_offsets)
    cfg = SeqConfig.preset("hstu", max_len=1100)
    torch.manual_seed(0)
    model = HSTU(3706, cfg).eval()
    g = torch.Generator().manual_seed(3)
    for users, kind, hist_len in ((1, "1,024-event history", 1024), (1000, "ML-1M histories", None)):
        if quick and users > 1:
            continue
        lengths = (torch.full((users,), hist_len) if hist_len else
                   lengths_for("ml1m", users, 200, g))
        off = jops.lengths_to_offsets(lengths)
        L = int(off[-1])
        items = torch.randint(0, 3706, (L,), generator=g)
        ts = torch.sort(torch.randint(0, 10**8, (L,), generator=g)).values
        _, cache = model.cached_forward(items, off, ts, None)
        new = torch.randint(0, 3706, (users,), generator=g)
        new_ts = ts[off[1:] - 1] + 60
        new_off = torch.arange(users + 1)
        # the full forward: every history with its new event appended
        full_off = off + torch.arange(users + 1)
        is_new = torch.zeros(L + users, dtype=torch.bool)
        is_new[full_off[1:] - 1] = True
        full_items = torch.empty(L + users, dtype=torch.int64)
        full_items[is_new], full_items[~is_new] = new, items
        full_ts = torch.empty(L + users, dtype=torch.int64)
        full_ts[is_new], full_ts[~is_new] = new_ts, ts

        def cached(model=model, new=new, new_off=new_off, new_ts=new_ts, cache=cache):
            return model.cached_forward(new, new_off, new_ts, cache)[0]

        def full(model=model, items=full_items, off=full_off, ts=full_ts):
            with torch.no_grad():
                return model(items, off, ts)[off[1:] - 1]
        cases.append(Case("serve one new event per user (HSTU ML-1M config, cached)", f"{users} user(s), {kind}",
                          {"recops": cached, "full_forward": full}, sequences=users))
    return cases
