# SPDX-License-Identifier: Apache-2.0
"""Jagged benchmark cases: recops vs torch.nested, pad_sequence / boolean masks, and the FBGEMM-style index
scatter/gather written in plain torch (our reference)."""

import torch

from ..ops import jagged as ops
from ..ops import jagged_ref as ref

# (name, B, N, trailing dim, dtype): HSTU-like history batches and a long-sequence batch.
SHAPES = [
    ("B=512,N=200,D=64,fp32", 512, 200, 64, torch.float32),
    ("B=2048,N=50,D=128,fp32", 2048, 50, 128, torch.float32),
    ("B=256,N=1024,D=32,bf16", 256, 1024, 32, torch.bfloat16),
]


def _inputs(batch, max_len, dim, dtype, device):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=g)
    offsets = ops.lengths_to_offsets(lengths).to(device)
    values = torch.randn(int(lengths.sum()), dim, generator=g).to(dtype=dtype, device=device)
    return values, offsets, lengths.to(device)


def jagged_cases(device, quick):
    from . import Case

    cases = []
    for name, batch, max_len, dim, dtype in SHAPES[:2] if quick else SHAPES:
        values, offsets, lengths = _inputs(batch, max_len, dim, dtype, device)
        total = values.shape[0]
        split_sizes = lengths.tolist()
        padded = ops.jagged_to_padded(values, offsets, max_len)
        mask = torch.arange(max_len, device=device)[None, :] < lengths[:, None]
        elem = values.element_size()
        cases.append(Case("jagged_to_padded", name, {
            "recops": lambda v=values, o=offsets, n=max_len: ops.jagged_to_padded(v, o, n),
            "torch.nested": lambda v=values, o=offsets, b=batch, n=max_len, d=dim:
                torch.nested.nested_tensor_from_jagged(v, o).to_padded_tensor(0.0, output_size=(b, n, d)),
            "pad_sequence": lambda v=values, s=split_sizes:
                torch.nn.utils.rnn.pad_sequence(torch.split(v, s), batch_first=True),
            "index_scatter(ref)": lambda v=values, o=offsets, n=max_len: ref.jagged_to_padded(v, o, n),
        }, bytes_moved=(total + batch * max_len) * dim * elem))
        cases.append(Case("padded_to_jagged", name, {
            "recops": lambda p=padded, o=offsets, t=total: ops.padded_to_jagged(p, o, t),
            "torch.nested": lambda p=padded, lens=lengths:
                torch.nested.narrow(p, 1, torch.zeros_like(lens), lens, layout=torch.jagged).contiguous().values(),
            "bool_mask": lambda p=padded, m=mask: p[m],
            "index_gather(ref)": lambda p=padded, o=offsets, t=total: ref.padded_to_jagged(p, o, t),
        }, bytes_moved=2 * total * dim * elem))
        grad = torch.randn(batch, max_len, dim, device=device).to(dtype)
        leaf = values.detach().requires_grad_()

        def fwd_bwd(fn, v=leaf, o=offsets, n=max_len, g=grad):
            v.grad = None
            return torch.autograd.grad(fn(v, o, n), v, g)

        cases.append(Case("jagged_to_padded fwd+bwd", name, {
            "recops": lambda f=fwd_bwd: f(ops.jagged_to_padded),
            "index_scatter(ref)": lambda f=fwd_bwd: f(ref.jagged_to_padded),
        }))
    return cases
