# SPDX-License-Identifier: Apache-2.0
"""Runtime glue shared by every op: thread count, CUDA device/stream, device error flags."""

import functools

import torch
from torch.utils.dlpack import to_dlpack as _to_dlpack

from . import _C

_CHECKS = True


def checks_enabled() -> bool:
    """Whether CUDA ops read their device error flag after each call (one sync) to raise ValueError."""
    return _CHECKS


def set_checks(enabled: bool) -> None:
    """Turn the per-call read of CUDA error flags on or off. Kernels still bounds-check every index."""
    global _CHECKS
    _CHECKS = bool(enabled)


def _tensors_as_capsules(fn):
    """fn with every tensor argument handed to nanobind as a DLPack capsule (torch.utils.dlpack.to_dlpack, ~0.4 us)
    instead of through Tensor.__dlpack__ (~3 us a tensor on the 2-core VM: a 5-tensor call cost 15.5 us, 2.4 us
    with capsules). The bindings take untyped single-overload ndarrays, so nothing else changes: same memory, no
    conversion, no stream synchronisation (the kernels run on the stream passed to them)."""
    tensor, capsule = torch.Tensor, _to_dlpack

    @functools.wraps(fn)
    def call(*args, **kwargs):
        args = [capsule(a) if isinstance(a, tensor) else a for a in args]
        for k, v in kwargs.items():
            if isinstance(v, tensor):
                kwargs[k] = capsule(v)
        return fn(*args, **kwargs)

    return call


class _Core:
    """The compiled core `_C` as the Python ops call it: each function wrapped by _tensors_as_capsules."""

    def __init__(self, module):
        for name in dir(module):
            f = getattr(module, name)
            if callable(f) and not name.startswith("_"):
                setattr(self, name, _tensors_as_capsules(f))


core = _Core(_C)


def num_threads() -> int:
    return torch.get_num_threads()


def check_same_device(op: str, **tensors) -> None:
    """The one device check of every op: TypeError unless all given tensors (None skipped) are on one device.

    Runs in each op's body and in its fake kernel, so a tensor on the meta device mixed with real ones is
    rejected (otherwise the dispatcher would pick the fake kernel and return uninitialised memory); tensors
    all on the meta device still go through the fake kernel, for shape inference."""
    ref_name, ref = None, None
    for name, t in tensors.items():
        if t is None:
            continue
        if ref is None:
            ref_name, ref = name, t.device
        elif t.device != ref:
            raise TypeError(f"{op}: {name} must be on the same device as {ref_name} ({ref}), got {t.device}")


def eager(*tensors) -> bool:
    """True outside torch.compile when every tensor is a plain Tensor (or None): the op may then call its
    implementation directly and skip the torch.library dispatch (~60 us a call on the 2-core VM); the custom op
    stays the path for compile, export and tensor subclasses."""
    return not torch.compiler.is_compiling() and all(t is None or type(t) is torch.Tensor for t in tensors)


class Launch:
    """Context for one kernel call on `t`'s device, and the one device-error path of every op.

    Inside, `stream` is torch's current CUDA stream (as an int) and `flag` a zeroed int32 [1] device tensor the
    kernels OR error bits into; on CPU both are 0/None. After the block, `error_bits()` returns the flag's value
    (0 when nothing went wrong, when checks are off, or during CUDA-graph capture) and `raise_errors()` turns a
    set flag into the CPU path's ValueError: it calls `recheck`, which reruns the family's C++ validator
    (`_C.check_<family>`) on host copies of the inputs, so both devices raise the same message by construction.
    """

    def __init__(self, t: torch.Tensor, op: str = "recops", recheck=None):
        self.op = op
        self.recheck = recheck
        self.cuda = t.is_cuda
        self.stream = 0
        self.flag = None
        if self.cuda:
            if not _C.has_cuda():
                raise TypeError(f"recops was built without CUDA; got a tensor on {t.device}")
            self.device = t.device
            self._guard = torch.cuda.device(t.device)

    def __enter__(self):
        if self.cuda:
            self._guard.__enter__()
            self.stream = torch.cuda.current_stream(self.device).cuda_stream
            self.flag = torch.zeros(1, dtype=torch.int32, device=self.device)
        return self

    def __exit__(self, *exc):
        return self._guard.__exit__(*exc) if self.cuda else None

    def error_bits(self) -> int:
        if self.flag is None or not _CHECKS or (self.cuda and torch.cuda.is_current_stream_capturing()):
            return 0
        return int(self.flag.item())

    def raise_errors(self) -> None:
        """After the block: ValueError if the device flagged bad input (no-op on CPU, whose core raised already)."""
        bits = self.error_bits()
        if not bits:
            return
        if self.recheck is not None:
            self.recheck()  # raises the CPU core's ValueError for the same input
        names = [name for name, bit in _C.ERROR_BITS.items() if bits & bit]
        raise ValueError(f"{self.op}: the device reported invalid input ({', '.join(names) or bits})")

