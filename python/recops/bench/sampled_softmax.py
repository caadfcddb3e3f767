# SPDX-License-Identifier: Apache-2.0
"""Sampled-softmax benchmark cases, forward + backward: recops' fused op vs the eager per-position composition
(gather [L, M, D] + batched dot + masked cross-entropy, what a PyTorch user writes) and vs torch.compile of it.
Shapes: the HSTU ML-1M training step (L ~ 25,000 supervised positions, D = 50, V = 3,706) with 128 negatives per
position, the same with one shared set, and a larger catalogue (1M x 64 items, B = 4,096 rows, in-batch + 127
per-row negatives, logQ); and the chunked full softmax at the Amazon Beauty HSTU step."""

import torch

from ..ops import sampled_softmax_ref as ref
from ..ops.full_softmax import full_softmax_loss
from ..ops.sampled_softmax import sampled_softmax_loss

# (name, L, D, V, M, per_row, in_batch, log_q)
SHAPES = [
    ("ml1m per-position", 25_000, 50, 3_706, 128, True, False, False),
    ("ml1m shared", 25_000, 50, 3_706, 128, False, False, False),
    ("1M items in-batch+logQ", 4_096, 64, 1_000_000, 127, True, True, True),
]
QUICK = {"ml1m per-position"}


def _eager(q, pos, items, negs, log_q, in_batch, temperature):
    return ref.sampled_softmax_loss(q, pos, items, negs, temperature=temperature, log_q=log_q, in_batch=in_batch)


def _case(name, L, D, V, M, per_row, in_batch, use_logq):
    """One shape's implementations, every closure bound to this shape's tensors (built in a function of its own:
    closures made in a loop would all see the loop's last values)."""
    from . import Case

    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(L, D, generator=g), dim=-1).requires_grad_()
    items = torch.nn.functional.normalize(torch.randn(V, D, generator=g), dim=-1).requires_grad_()
    pos = torch.randint(0, V, (L,), generator=g)
    log_q = torch.log(torch.rand(V, generator=g) / V + 1e-9) if use_logq else None
    seed = 1234
    negs = ref.generated_negatives(L, M, V, seed) if per_row else torch.randint(0, V, (M,), generator=g)
    temperature = 0.05
    compiled = torch.compile(_eager, dynamic=False)

    def run_recops():
        if per_row:  # drawn inside the kernel: the same ids as negs
            loss = sampled_softmax_loss(q, pos, items, num_negatives=M, seed=seed, temperature=temperature,
                                        log_q=log_q, in_batch=in_batch)
        else:
            loss = sampled_softmax_loss(q, pos, items, negs, temperature=temperature, log_q=log_q,
                                        in_batch=in_batch)
        torch.autograd.grad(loss, (q, items))

    def run(fn):
        def call():
            loss = fn(q, pos, items, negs, log_q, in_batch, temperature)
            torch.autograd.grad(loss, (q, items))
        return call

    impls = {"recops": run_recops, "eager composition": run(_eager)}
    if not in_batch:  # compile of the [L, L] in-batch mask at L = 4,096 takes minutes to build
        impls["torch.compile composition"] = run(compiled)
    return Case("sampled_softmax fwd+bwd", f"{name} L={L} D={D} V={V} M={M}", impls,
                flops=4.0 * L * (M + 1 + (L - 1 if in_batch else 0)) * D)


def _full_softmax_case(L, D, V):
    """Full softmax at the Amazon Beauty HSTU step: recops' chunked op vs the cross-entropy composition."""
    from . import Case

    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(L, D, generator=g), dim=-1).requires_grad_()
    items = torch.nn.functional.normalize(torch.randn(V, D, generator=g), dim=-1).requires_grad_()
    pos = torch.randint(0, V, (L,), generator=g)

    def composition(q, pos, items):
        return torch.nn.functional.cross_entropy(q @ items.t() / 0.05, pos)

    compiled = torch.compile(composition, dynamic=False)

    def run(fn):
        def call():
            torch.autograd.grad(fn(q, pos, items), (q, items))
        return call

    return Case("full_softmax fwd+bwd", f"beauty step L={L} D={D} V={V}", {
        "recops": run(lambda q, pos, items: full_softmax_loss(q, pos, items, temperature=0.05)),
        "eager composition": run(composition),
        "torch.compile composition": run(compiled),
    }, flops=6.0 * L * V * D)


def sampled_softmax_cases(device, quick):
    if device.type != "cpu":
        return []  # the fused kernel is CPU-only for now
    cases = [_case(*shape) for shape in SHAPES if not quick or shape[0] in QUICK]
    return cases if quick else cases + [_full_softmax_case(1_500, 50, 12_101)]
