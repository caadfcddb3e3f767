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
