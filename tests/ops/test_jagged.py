# SPDX-License-Identifier: Apache-2.0
"""recops jagged ops vs the pure-torch references: sweeps, properties, gradients, opcheck, errors, compile."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import recops
from recops.ops import jagged_ref as ref
from recops.ops import jagged_to_padded, jagged_to_padded_backward, padded_to_jagged
from tests._helpers import random_offsets, random_values

LENGTH_SETS = [
    [],                 # B = 0
    [0],                # one empty sequence
    [1],                # one row
    [0, 0, 0],          # all empty (L = 0)
    [3, 0, 1, 7],       # mixed with an empty sequence
    [1] * 97,           # many length-1
    [1025, 2, 0, 5],    # one very long sequence
]
TRAILING = [(), (1,), (7,), (3, 5)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int8,
          torch.bool]

# ---------------------------------------------------------------------------------------------------------
# correctness vs reference


@pytest.mark.parametrize("lengths", LENGTH_SETS)
@pytest.mark.parametrize("trailing", TRAILING)
@pytest.mark.parametrize("offsets_dtype", [torch.int32, torch.int64])
def test_jagged_to_padded_matches_ref(device, lengths, trailing, offsets_dtype):
    offsets = random_offsets(lengths, offsets_dtype, device)
    values = random_values(sum(lengths), trailing, device=device)
    for max_len in (0, 1, 5, max(lengths, default=0) + 2):
        out = jagged_to_padded(values, offsets, max_len, -3.5)
        torch.testing.assert_close(out, ref.jagged_to_padded(values, offsets, max_len, -3.5), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jagged_to_padded_dtypes(device, dtype):
    lengths = [4, 0, 9, 1]
    offsets = random_offsets(lengths, device=device)
    values = random_values(sum(lengths), (3,), dtype, device)
    pad = 1.0 if dtype == torch.bool else -7.0
    out = jagged_to_padded(values, offsets, 6, pad)
    assert out.dtype == dtype
    assert torch.equal(out, ref.jagged_to_padded(values, offsets, 6, pad))


@pytest.mark.parametrize("lengths", LENGTH_SETS)
@pytest.mark.parametrize("trailing", TRAILING)
@pytest.mark.parametrize("offsets_dtype", [torch.int32, torch.int64])
def test_padded_to_jagged_matches_ref(device, lengths, trailing, offsets_dtype):
    offsets = random_offsets(lengths, offsets_dtype, device)
    max_len = max(lengths, default=0) + 1
    padded = random_values(len(lengths) * max_len, trailing, device=device).view(len(lengths), max_len, *trailing)
    out = padded_to_jagged(padded, offsets)
    assert torch.equal(out, ref.padded_to_jagged(padded, offsets))


@pytest.mark.parametrize("dtype", DTYPES)
def test_padded_to_jagged_dtypes(device, dtype):
    offsets = random_offsets([2, 0, 5], device=device)
    padded = random_values(3 * 5, (2,), dtype, device).view(3, 5, 2)
    assert torch.equal(padded_to_jagged(padded, offsets), ref.padded_to_jagged(padded, offsets))


def test_jagged_to_padded_backward_truncates(device):
    lengths = [6, 2, 0]
    offsets = random_offsets(lengths, device=device)
    grad = torch.randn(3, 4, 2, device=device)
    out = jagged_to_padded_backward(grad, offsets, 8)
    assert torch.equal(out, ref.jagged_to_padded_backward(grad, offsets, 8))
    assert torch.equal(out[4:6], torch.zeros(2, 2, device=device))  # rows past max_len of sequence 0


@given(
    lengths=st.lists(st.integers(0, 40), min_size=0, max_size=12),
    dim=st.integers(0, 9),
    max_len=st.integers(0, 45),
    int32=st.booleans(),
)
def test_round_trip_property(lengths, dim, max_len, int32):
    offsets = random_offsets(lengths, torch.int32 if int32 else torch.int64)
    values = torch.randn(sum(lengths), dim)
    padded = jagged_to_padded(values, offsets, max_len, float("nan"))
    assert torch.equal(padded.nan_to_num(123.0), ref.jagged_to_padded(values, offsets, max_len, 123.0))
    if max_len >= max(lengths, default=0):
        assert torch.equal(padded_to_jagged(padded, offsets), values)


# ---------------------------------------------------------------------------------------------------------
# properties


def test_non_contiguous_values_and_offsets():
    base = torch.randn(10, 4)
    values = base[:, ::2]  # non-contiguous view
    offsets = torch.tensor([0, 0, 3, 3, 6, 6, 10, 10])[::2]  # [0, 3, 6, 10], strided
    out = jagged_to_padded(values, offsets, 5)
    assert torch.equal(out, ref.jagged_to_padded(values.contiguous(), offsets.contiguous(), 5))


def test_deterministic_and_thread_count_independent():
    lengths = torch.randint(0, 300, (257,)).tolist()
    offsets = random_offsets(lengths)
    values = torch.randn(sum(lengths), 33)
    old = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, old):
            torch.set_num_threads(threads)
            outs.append(jagged_to_padded(values, offsets, 200))
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_large_int64_offsets():
    # offsets near realistic totals: 3 sequences of 1M rows each, int64
    lengths = [1_000_000, 0, 1_000_003]
    offsets = random_offsets(lengths)
    values = torch.arange(sum(lengths), dtype=torch.int32).unsqueeze(1)
    out = jagged_to_padded(values, offsets, 1_000_001)
    assert out[0, -1, 0] == 0 and out[0, 999_999, 0] == 999_999
    assert out[2, 1_000_000, 0] == 2_000_000
    assert torch.equal(out[1], torch.zeros(1_000_001, 1, dtype=torch.int32))


def test_lengths_offsets_helpers(device):
    lengths = torch.tensor([3, 0, 2], device=device)
    offsets = recops.ops.lengths_to_offsets(lengths)
    assert offsets.tolist() == [0, 3, 3, 5]
    assert torch.equal(offsets, ref.lengths_to_offsets(lengths))
    assert recops.ops.lengths_to_offsets(lengths.int()).dtype == torch.int32
    assert torch.equal(recops.ops.offsets_to_lengths(offsets), lengths)
    assert recops.ops.lengths_to_offsets(torch.zeros(0, dtype=torch.int64, device=device)).tolist() == [0]


def test_jagged_container(device):
    seqs = [torch.randn(n, 2, device=device) for n in (3, 0, 5)]
    j = recops.Jagged.from_list(seqs)
    assert len(j) == 3 and j.max_len() == 5
    assert j.lengths().tolist() == [3, 0, 5]
    assert torch.equal(j[2], seqs[2]) and torch.equal(j[-3], seqs[0])
    padded = j.to_padded()
    assert padded.shape == (3, 5, 2)
    assert torch.equal(recops.Jagged.from_padded(padded, [3, 0, 5]).values, j.values)
    assert [t.shape[0] for t in j.unbind()] == [3, 0, 5]
    j64 = j.to(torch.float64)
    assert j64.values.dtype == torch.float64 and j64.offsets.dtype == torch.int64
    assert j.to_padded(2).shape == (3, 2, 2)
    with pytest.raises(IndexError, match="sequence index"):
        j[3]
    with pytest.raises(TypeError, match="offsets must be int32 or int64"):
        recops.Jagged(torch.randn(3), torch.tensor([0.0, 3.0]))


# ---------------------------------------------------------------------------------------------------------
# gradients


def test_gradients_vs_ref(device):
    lengths = [5, 0, 1, 9]
    offsets = random_offsets(lengths, device=device)
    values = torch.randn(sum(lengths), 3, device=device, requires_grad=True)
    grad_out = torch.randn(4, 6, 3, device=device)
    (g,) = torch.autograd.grad(jagged_to_padded(values, offsets, 6), values, grad_out)
    (g_ref,) = torch.autograd.grad(ref.jagged_to_padded(values, offsets, 6), values, grad_out)
    assert torch.equal(g, g_ref)

    padded = torch.randn(4, 9, 3, device=device, requires_grad=True)
    grad_out = torch.randn(sum(lengths), 3, device=device)
    (g,) = torch.autograd.grad(padded_to_jagged(padded, offsets), padded, grad_out)
    (g_ref,) = torch.autograd.grad(ref.padded_to_jagged(padded, offsets), padded, grad_out)
    assert torch.equal(g, g_ref)


@pytest.mark.parametrize("int32", [False, True])
def test_gradcheck_float64(int32):
    offsets = random_offsets([3, 0, 1, 4], torch.int32 if int32 else torch.int64)
    values = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda v: jagged_to_padded(v, offsets, 3), (values,))
    torch.autograd.gradgradcheck(lambda v: jagged_to_padded(v, offsets, 3), (values,))
    padded = torch.randn(4, 5, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda p: padded_to_jagged(p, offsets, 8), (padded,))
    torch.autograd.gradgradcheck(lambda p: padded_to_jagged(p, offsets, 8), (padded,))
    grad = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda g: jagged_to_padded_backward(g, offsets, 8), (grad,))


# ---------------------------------------------------------------------------------------------------------
# opcheck


def test_opcheck(device):
    offsets = random_offsets([3, 0, 1, 4], device=device)
    values = torch.randn(8, 2, device=device, requires_grad=True)
    padded = torch.randn(4, 5, 2, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.recops.jagged_to_padded.default, (values, offsets, 3, 1.5))
    torch.library.opcheck(torch.ops.recops.padded_to_jagged.default, (padded, offsets, 8))
    torch.library.opcheck(torch.ops.recops.jagged_to_padded_backward.default, (padded, offsets, 8))
    lengths = torch.tensor([3, 0, 1, 4], device=device)
    torch.library.opcheck(torch.ops.recops.lengths_to_offsets.default, (lengths, torch.int32))
    torch.library.opcheck(torch.ops.recops.offsets_to_lengths.default, (offsets,))


def test_op_schemas():
    # the op names and schemas are a stable interface (FX graphs and exported programs name them)
    schemas = {name: str(getattr(torch.ops.recops, name).default._schema) for name in
               ("jagged_to_padded", "jagged_to_padded_backward", "padded_to_jagged")}
    assert schemas == {
        "jagged_to_padded":
            "recops::jagged_to_padded(Tensor values, Tensor offsets, SymInt max_len, float padding_value=0.) -> Tensor",
        "jagged_to_padded_backward":
            "recops::jagged_to_padded_backward(Tensor grad_padded, Tensor offsets, SymInt total_len) -> Tensor",
        "padded_to_jagged": "recops::padded_to_jagged(Tensor padded, Tensor offsets, SymInt total_len) -> Tensor",
    }


def test_lengths_offsets_op_schemas():
    # the ops lengths_to_offsets and offsets_to_lengths run as under torch.compile
    assert str(torch.ops.recops.lengths_to_offsets.default._schema) == (
        "recops::lengths_to_offsets(Tensor lengths, ScalarType dtype) -> Tensor")
    assert str(torch.ops.recops.offsets_to_lengths.default._schema) == (
        "recops::offsets_to_lengths(Tensor offsets) -> Tensor")


# ---------------------------------------------------------------------------------------------------------
# errors


def _expect(exc, match, fn, *args):
    with pytest.raises(exc, match=match):
        fn(*args)


def test_bad_offsets_raise(device):
    values = torch.randn(10, 2, device=device)
    padded = torch.randn(3, 10, 2, device=device)
    cases = [
        ([1, 3, 6, 10], "offsets must start at 0"),
        ([0, 4, 3, 10], "offsets must be non-decreasing, got offsets\\[1\\]=4 > offsets\\[2\\]=3"),
        ([0, 3, 6, 9], "offsets\\[-1\\] must equal .* L=10, got 9"),
        ([0, 3, 6, 11], "offsets\\[-1\\] must equal .* L=10, got 11"),
        ([0, -2, 6, 10], "non-decreasing"),
        ([-1, 3, 6, 10], "start at 0"),
    ]
    for bad, msg in cases:
        for dt in (torch.int32, torch.int64):
            offsets = torch.tensor(bad, dtype=dt, device=device)
            _expect(ValueError, msg, jagged_to_padded, values, offsets, 4)
            _expect(ValueError, msg, padded_to_jagged, padded, offsets, 10)
            _expect(ValueError, msg, jagged_to_padded_backward, padded, offsets, 10)


def test_bad_arguments_raise(device):
    values = torch.randn(10, 2, device=device)
    offsets = torch.tensor([0, 3, 6, 10], device=device)
    _expect(TypeError, "offsets must be int32 or int64, got torch.float32", jagged_to_padded, values,
            offsets.float(), 4)
    _expect(TypeError, "offsets must be int32 or int64", jagged_to_padded, values, offsets.short(), 4)
    _expect(ValueError, "offsets must have 1 dimensions, got 2", jagged_to_padded, values, offsets[None], 4)
    _expect(ValueError, "offsets must have at least 1 element", jagged_to_padded, values, offsets[:0], 4)
    _expect(ValueError, "max_len must be >= 0, got -1", jagged_to_padded, values, offsets, -1)
    _expect(ValueError, "values must have at least 1 dimensions", jagged_to_padded, torch.tensor(1.0), offsets, 4)
    _expect(TypeError, "values dtype must have 1, 2, 4 or 8 bytes", jagged_to_padded,
            values.to(torch.complex128), offsets, 4)
    _expect(ValueError, "padding_value 0.5 cannot be represented", jagged_to_padded, values.long(), offsets, 4,
            0.5)
    padded = torch.randn(3, 3, 2, device=device)
    _expect(ValueError, "sequence lengths must be <= padded.shape\\[1\\]=3, got length 4 for sequence 2",
            padded_to_jagged, padded, offsets, 10)
    _expect(ValueError, "offsets must have padded.shape\\[0\\] \\+ 1 = 4 elements, got 3", padded_to_jagged,
            padded, offsets[:3], 6)
    _expect(ValueError, "padded must have at least 2 dimensions", padded_to_jagged, torch.randn(3), offsets, 10)
    _expect(ValueError, "total_len must be >= 0", padded_to_jagged, padded, offsets, -1)
    _expect(ValueError, "lengths must be >= 0, got lengths\\[1\\]=-2", recops.ops.lengths_to_offsets,
            torch.tensor([1, -2], device=device))
    _expect(TypeError, "lengths must be an integer tensor", recops.ops.lengths_to_offsets, torch.ones(2))


I32_MAX, I64_MAX = 2**31 - 1, 2**63 - 1


def test_lengths_to_offsets_overflow_raises(device):
    """A running sum that does not fit the offsets dtype raises (it wrapped before), with its exact value."""
    l2o = recops.ops.lengths_to_offsets

    def lengths(*v, dtype=torch.int64):
        return torch.tensor(v, dtype=dtype, device=device)

    msg = "^lengths_to_offsets: lengths must sum to at most {} \\(the largest torch.{} offset\\), got "
    _expect(ValueError, msg.format(I32_MAX, "int32") + "sum\\(lengths\\[:3\\]\\)=2147483648$", l2o,
            lengths(0, I32_MAX, 1, 5, dtype=torch.int32))
    _expect(ValueError, msg.format(I32_MAX, "int32") + "sum\\(lengths\\[:1\\]\\)=4294967296$", l2o,
            lengths(2**32, 0), torch.int32)  # int64 lengths, int32 offsets: not truncated per length either
    _expect(ValueError, msg.format(I64_MAX, "int64") + f"sum\\(lengths\\[:2\\]\\)={2**63}$", l2o,
            lengths(2**62, 2**62, 1))
    # wraps past 2**64 back to a small positive total: still caught, at the first sum that does not fit
    _expect(ValueError, msg.format(I64_MAX, "int64") + f"sum\\(lengths\\[:2\\]\\)={2 * I64_MAX}$", l2o,
            lengths(I64_MAX, I64_MAX, I64_MAX, 3))
    assert l2o(lengths(I32_MAX - 1, 1, 0, dtype=torch.int32)).tolist() == [0, I32_MAX - 1, I32_MAX, I32_MAX]
    assert l2o(lengths(I64_MAX, 0)).tolist() == [0, I64_MAX, I64_MAX]
    assert l2o(lengths(7, 2**31, dtype=torch.int64)).tolist() == [0, 7, 2**31 + 7]
    _expect(TypeError, "^lengths_to_offsets: dtype must be torch.int32 or torch.int64, got torch.float32$", l2o,
            lengths(1, 2), torch.float32)


def test_offsets_to_lengths_validates_offsets(device):
    o2l = recops.ops.offsets_to_lengths

    def offsets(*v, dtype=torch.int64):
        return torch.tensor(v, dtype=dtype, device=device)

    _expect(ValueError, "^offsets_to_lengths: offsets must start at 0, got offsets\\[0\\]=2$", o2l, offsets(2, 3, 5))
    _expect(ValueError, "^offsets_to_lengths: offsets must be non-decreasing, got offsets\\[1\\]=4 > "
            "offsets\\[2\\]=3$", o2l, offsets(0, 4, 3, 6))
    # a decrease whose difference wraps int32 to a positive length
    _expect(ValueError, f"^offsets_to_lengths: offsets must be non-decreasing, got offsets\\[1\\]={I32_MAX} > "
            "offsets\\[2\\]=-2147483648$", o2l, offsets(0, I32_MAX, -2**31, dtype=torch.int32))
    _expect(TypeError, "^offsets_to_lengths: offsets must be int32 or int64, got torch.float32$", o2l,
            offsets(0, 1).float())
    _expect(TypeError, "offsets must be int32 or int64, got torch.int16", o2l, offsets(0, 1, dtype=torch.int16))
    _expect(ValueError, "^offsets_to_lengths: offsets must have 1 dimensions, got 2$", o2l, offsets(0, 1)[None])
    _expect(ValueError, "^offsets_to_lengths: offsets must have at least 1 element", o2l, offsets(0)[:0])
    assert o2l(offsets(0)).tolist() == []
    assert o2l(offsets(0, 0, I32_MAX, dtype=torch.int32)).tolist() == [0, I32_MAX]


def test_offsets_on_other_device_raise():
    values = torch.randn(10, 2)
    offsets = torch.tensor([0, 3, 6, 10], device="meta")
    _expect(TypeError, "offsets must be on the same device as values \\(cpu\\), got meta", jagged_to_padded,
            values, offsets, 4)
    _expect(TypeError, "offsets must be on the same device as padded", padded_to_jagged, values[None], offsets, 10)


@pytest.mark.cuda
@pytest.mark.skipif(not (recops.has_cuda() and torch.cuda.is_available()), reason="needs CUDA")
def test_mixed_devices_raise():
    values = torch.randn(10, 2, device="cuda")
    offsets = torch.tensor([0, 3, 6, 10])
    _expect(TypeError, "offsets must be on the same device as values", jagged_to_padded, values, offsets, 4)


def test_binding_checks_out():
    # the binding's own checks on `out` (reachable only from _C directly: the ops allocate out themselves)
    values = torch.randn(4, 1)
    offsets = torch.tensor([0, 4])
    out = torch.empty(1, 4, 1, dtype=torch.float64)
    _expect(TypeError, "out must have the dtype of values", recops._C.jagged_to_padded, values, offsets, 4, 0,
            out)
    out = torch.empty(1, 2, 1)
    _expect(ValueError, "out.shape\\[1\\] must be 4, got 2", recops._C.jagged_to_padded, values, offsets, 4, 0,
            out)
    out = torch.empty(1, 8, 1)[:, ::2]
    _expect(TypeError, "out must be contiguous", recops._C.jagged_to_padded, values, offsets, 4, 0, out)


def test_huge_max_len_overflow_raises():
    values = torch.randn(4, 1 << 20)
    offsets = torch.tensor([0, 4])
    with pytest.raises((ValueError, RuntimeError)):
        # torch refuses to allocate first, or our checked_mul catches the product: never a crash
        jagged_to_padded(values, offsets, 1 << 62)


# ---------------------------------------------------------------------------------------------------------
# torch.compile


def test_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(values, offsets, total_len: int):
        padded = jagged_to_padded(values, offsets, 6, 0.0)
        return padded_to_jagged(padded * 2, offsets, total_len)

    offsets = random_offsets([3, 0, 6])
    values = torch.randn(9, 4, requires_grad=True)
    out = f(values, offsets, 9)
    assert torch.equal(out, values * 2)
    out.sum().backward()
    assert torch.equal(values.grad, torch.full_like(values, 2.0))


def test_compile_inductor():
    f = torch.compile(lambda v, o: jagged_to_padded(v, o, 5).sum(1), fullgraph=True)
    offsets = random_offsets([3, 0, 5])
    values = torch.randn(8, 4)
    torch.testing.assert_close(f(values, offsets), ref.jagged_to_padded(values, offsets, 5).sum(1))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_lengths_offsets_fullgraph(backend):
    """lengths_to_offsets / offsets_to_lengths trace with fullgraph (their checks run inside ops) and still
    raise the eager ValueError on bad data, without recompiling for it."""
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend=backend)
    def f(lengths):
        offsets = recops.ops.lengths_to_offsets(lengths, torch.int32)
        return offsets, recops.ops.offsets_to_lengths(offsets * 2)

    lengths = torch.tensor([3, 0, 2, 7])
    offsets, doubled = f(lengths)
    assert offsets.dtype == torch.int32 and offsets.tolist() == [0, 3, 3, 5, 12]
    assert doubled.tolist() == [6, 0, 4, 14]
    with torch._dynamo.config.patch(error_on_recompile=True):
        _expect(ValueError, "^lengths_to_offsets: lengths must be >= 0, got lengths\\[1\\]=-1$", f,
                torch.tensor([3, -1, 2, 7]))
        _expect(ValueError, "^lengths_to_offsets: lengths must sum to at most 2147483647", f,
                torch.tensor([3, I32_MAX, 2, 7]))
    g = torch.compile(recops.ops.offsets_to_lengths, fullgraph=True, backend=backend)
    _expect(ValueError, "^offsets_to_lengths: offsets must start at 0, got offsets\\[0\\]=1$", g,
            torch.tensor([1, 3, 4]))
    _expect(ValueError, "^offsets_to_lengths: offsets must be non-decreasing", g, torch.tensor([0, 3, 1]))
