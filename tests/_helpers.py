# SPDX-License-Identifier: Apache-2.0
"""Shared test helpers."""

import torch


def random_offsets(lengths, dtype=torch.int64, device="cpu"):
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    return offsets.to(dtype=dtype, device=device)


def random_values(total_len, trailing, dtype=torch.float32, device="cpu"):
    shape = (total_len, *trailing)
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=torch.float64).to(dtype=dtype, device=device)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, device=device).bool()
    return torch.randint(-100, 100, shape, dtype=dtype, device=device)


def assert_close_to_ref(out, ref_lowp, ref_fp32, atol=1e-5):
    """Low-precision rule: error of `out` vs fp32 is at most 2x the error of the low-precision reference."""
    err = (out.float() - ref_fp32.float()).abs().max().item() if out.numel() else 0.0
    ref_err = (ref_lowp.float() - ref_fp32.float()).abs().max().item() if out.numel() else 0.0
    assert err <= 2 * ref_err + atol, f"error {err} > 2 * reference error {ref_err} + {atol}"


def isa_outputs(code: str, isa: str, tag: str):
    """[forced, best]: what `code` (a python -c program whose '{path}' placeholder it torch.saves to) gives with
    RECOPS_CPU_ISA=isa and with the default dispatch, each in a fresh subprocess from the repository root."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = []
    for env_isa in (isa, ""):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"{tag}_isa_{env_isa or 'best'}_{os.getpid()}.pt")
        subprocess.run([sys.executable, "-c", code.format(path=path)], check=True,
                       env=dict(os.environ, RECOPS_CPU_ISA=env_isa), cwd=root)
        outs.append(torch.load(path))
        os.remove(path)
    return outs
