# SPDX-License-Identifier: Apache-2.0
"""recops.ops.dropout (counter-based): the kernel's mask equals the torch-integer reference bit for bit, keep rate,
scaling, gradients (the backward regenerates the mask), seeds, thread counts, ISA paths, dtypes, compile, errors."""

import pytest
import torch

import recops
from tests._helpers import isa_outputs
from recops.nn import Dropout, use_torch_dropout
from recops.ops import dropout
from recops.ops.dropout import dropout_keep



@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 1000, 7), (2, 16385), (64, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_matches_reference_bits(shape, dtype, p):
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    out = dropout(x, p, seed=123)
    keep = dropout_keep(x.numel(), p, 123).view(shape)
    scale = torch.tensor(1 / (1 - p), dtype=dtype)  # the kernel multiplies by 1 / (1 - p) in x's dtype
    assert torch.equal(out, torch.where(keep, x * scale, torch.zeros((), dtype=dtype)))


def test_keep_rate_scale_and_mean():
    x = torch.ones(400_000)
    out = dropout(x, 0.3, seed=1)
    assert abs((out != 0).float().mean().item() - 0.7) < 0.005
    assert abs(out.mean().item() - 1.0) < 0.01
    assert torch.allclose(out[out != 0], torch.full((), 1 / 0.7))


def test_gradients_regenerate_the_mask():
    x = torch.randn(5, 40, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: dropout(x, 0.4, seed=9), (x,))
    out = dropout(x, 0.4, seed=9)
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g != 0, out != 0)


def test_seeds_and_generator():
    x = torch.randn(10_000)
    assert torch.equal(dropout(x, 0.5, seed=3), dropout(x, 0.5, seed=3))
    assert not torch.equal(dropout(x, 0.5, seed=3), dropout(x, 0.5, seed=4))
    assert torch.equal(dropout(x, 0.5, seed=-1), dropout(x, 0.5, seed=(1 << 64) - 1))
    torch.manual_seed(0)
    a = dropout(x, 0.5)
    torch.manual_seed(0)
    b, c = dropout(x, 0.5), dropout(x, 0.5)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_p0_eval_and_non_contiguous():
    x = torch.randn(30, 20)
    assert dropout(x, 0.0) is x and dropout(x, 0.7, training=False) is x
    xt = x.t()
    torch.testing.assert_close(dropout(xt, 0.5, seed=2), dropout(xt.contiguous(), 0.5, seed=2))


def test_thread_count_independent():
    x = torch.randn(300_001)
    threads = torch.get_num_threads()
    try:
        outs = []
        for nt in (1, 2, 3):
            torch.set_num_threads(nt)
            outs.append(dropout(x, 0.25, seed=8))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_isa_paths_agree(isa):
    code = ("import torch, recops; x=torch.arange(70001, dtype=torch.float32);"
            "torch.save([recops._C.cpu_isa(), recops.ops.dropout(x, 0.3, seed=5),"
            " recops.ops.dropout(x.double(), 0.3, seed=5)], '{path}')")
    outs = isa_outputs(code, isa, "dropout")
    assert outs[0][0] in (isa, outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1]) and torch.equal(outs[0][2], outs[1][2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    x = torch.randn(1000).to(dtype)
    out = dropout(x, 0.5, seed=1)
    assert out.dtype == dtype
    assert torch.equal(out != 0, dropout_keep(1000, 0.5, 1) & (x != 0))


def test_module_and_torch_switch():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), Dropout(0.5))
    x = torch.randn(64, 4)
    torch.manual_seed(0)
    a = m(x)
    use_torch_dropout(m)
    torch.manual_seed(0)
    b = m(x)
    use_torch_dropout(m, False)
    torch.manual_seed(0)
    assert torch.equal(m(x), a) and not torch.equal(a, b)  # torch's mask differs; recops' repeats
    m.eval()
    assert torch.equal(m(x), m[0](x))
    assert m[1].state_dict() == {}


def test_compile_and_opcheck():
    x = torch.randn(50, 3, requires_grad=True)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(x):
        return dropout(x, 0.3, seed=2).sum() + dropout(x, 0.2).sum()

    f(x).backward()
    assert torch.isfinite(x.grad).all()
    torch.library.opcheck(torch.ops.recops.dropout.default, (x, 0.3, torch.tensor(4)))


def test_errors():
    x = torch.randn(4)
    with pytest.raises(ValueError, match="dropout: p must be in \\[0, 1\\), got 1.0"):
        dropout(x, 1.0)
    with pytest.raises(ValueError, match="dropout: p must be in \\[0, 1\\), got -0.5"):
        dropout(x, -0.5)
    with pytest.raises(TypeError, match="dropout: x must be a floating tensor, got torch.int64"):
        dropout(torch.arange(3), 0.5)
    with pytest.raises(TypeError, match="dropout: seed must be an int or None, got str"):
        dropout(x, 0.5, seed="1")
    with pytest.raises(ValueError, match="dropout: p must be in \\[0, 1\\)"):
        recops._C.dropout(x, x, 1.5, 0)
    with pytest.raises(ValueError, match="dropout: out must have x's 4 elements, got 3"):
        recops._C.dropout(x, torch.empty(3), 0.5, 0)
    with pytest.raises(TypeError, match="dropout: x must be float32 or float64"):
        recops._C.dropout(x.half(), x.half(), 0.5, 0)
