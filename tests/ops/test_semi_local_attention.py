# SPDX-License-Identifier: Apache-2.0
"""Semi-local attention (min_full_attn_seq_len): the last F history rows and the targets ignore the max_attn_len
window. Both jagged attention ops against the float64 references, forward and backward, and the mask rule against
the worked example of hstu_attention's docstring."""
import pytest
import torch

from recops.ops import attention_ref, hstu_attention, hstu_ref, jagged_attention


def _offsets(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int64)


def test_mask_rule_example():
    """The docstring's n=8, n_t=1, W=2, F=2 example, and the same with F=0."""
    mask = hstu_ref.hstu_mask(torch.tensor([8]), 8, torch.tensor([1]), 0, 2, True, 2)[0]
    rows = ["10000000", "11000000", "11100000", "01110000", "00111000", "11111100", "11111110", "11111111"]
    assert ["".join(str(int(x)) for x in r) for r in mask] == rows
    local = hstu_ref.hstu_mask(torch.tensor([8]), 8, torch.tensor([1]), 0, 2, True, 0)[0]
    assert ["".join(str(int(x)) for x in r) for r in local[5:]] == ["00011100", "00001110", "00000111"]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("opts", [dict(max_attn_len=3, full=2), dict(max_attn_len=5, full=70, targets=True),
                                  dict(max_attn_len=4, full=9, contextual_len=2, targets=True),
                                  dict(max_attn_len=0, full=5), dict(max_attn_len=2, full=1)])
@pytest.mark.parametrize("op", ["hstu", "softmax"])
def test_semi_local_against_reference(op, causal, opts):
    opts = dict(opts)
    full = opts.pop("full")
    lengths = [70, 5, 130, 1, 0, 66]
    off = _offsets(lengths)
    g = torch.Generator().manual_seed(1)
    L, H, D = int(off[-1]), 2, 16
    kw = dict(causal=causal, min_full_attn_seq_len=full, contextual_len=opts.get("contextual_len", 0),
              max_attn_len=opts["max_attn_len"])
    if opts.get("targets"):
        kw["num_targets"] = torch.tensor([3, 1, 4, 0, 0, 2])
    ins = [torch.randn(L, H, D, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    grad = torch.randn(L, H, D, generator=g, dtype=torch.float64)
    if op == "hstu":
        out = hstu_attention(*ins, off, 130, alpha=0.3, **kw)
        ref = hstu_ref.hstu_attention(*ins, off, 130, alpha=0.3, **kw)
    else:
        out = jagged_attention(*ins, off, 130, **kw)
        ref = attention_ref.jagged_attention(*ins, off, 130, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
    for a, b in zip(torch.autograd.grad(out, ins, grad), torch.autograd.grad(ref, ins, grad)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    # the option matters here (else the test could not fail): without it the output differs
    if opts["max_attn_len"] > 0 and full < 130:
        fn = hstu_attention if op == "hstu" else jagged_attention
        extra = dict(alpha=0.3) if op == "hstu" else {}
        local = fn(*ins, off, 130, **extra, **dict(kw, min_full_attn_seq_len=0))
        assert not torch.allclose(local, out)


def test_semi_local_float32_and_gradcheck():
    off = _offsets([9, 4])
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(13, 1, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    kw = dict(max_attn_len=2, min_full_attn_seq_len=3, num_targets=torch.tensor([1, 1]))
    assert torch.autograd.gradcheck(lambda a, b, c: hstu_attention(a, b, c, off, 9, **kw), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: jagged_attention(a, b, c, off, 9, **kw), (q, k, v))
    o32 = hstu_attention(q.float(), k.float(), v.float(), off, 9, **kw)
    torch.testing.assert_close(o32.double(), hstu_ref.hstu_attention(q, k, v, off, 9, **kw), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_semi_local_errors(bad):
    off = _offsets([3])
    q = torch.randn(3, 1, 4)
    for fn in (hstu_attention, jagged_attention):
        with pytest.raises(ValueError, match="min_full_attn_seq_len must be an int >= 0"):
            fn(q, q, q, off, 3, min_full_attn_seq_len=bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_semi_local_and_bf16_compile_fullgraph(dtype):
    """The new arguments trace through torch.compile (fake kernels) and give the eager result, with gradients."""
    off = _offsets([9, 4])
    g = torch.Generator().manual_seed(3)
    base = [torch.randn(13, 2, 8, generator=g).to(dtype) for _ in range(3)]
    kw = dict(max_attn_len=2, min_full_attn_seq_len=3)

    def f(q, k, v):
        return hstu_attention(q, k, v, off, 9, **kw).float().sum() + jagged_attention(q, k, v, off, 9, **kw).float().sum()

    grads = []
    for fn in (f, torch.compile(f, fullgraph=True, backend="aot_eager")):
        ins = [t.clone().requires_grad_() for t in base]
        grads.append(torch.autograd.grad(fn(*ins), ins))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
