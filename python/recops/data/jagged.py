# SPDX-License-Identifier: Apache-2.0
"""`Jagged`: a batch of variable-length sequences as values [L, *] + offsets [B+1]."""

from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor

from ..ops import jagged as _ops


class Jagged:
    """Packed variable-length sequences: sequence b is ``values[offsets[b]:offsets[b+1]]``.

    Construction checks shapes and dtypes only (no device sync); the kernels validate offsets' contents.

    Args:
        values: [L, *] rows of all sequences back to back.
        offsets: [B+1] int32 or int64, starting at 0, non-decreasing, ending at L, on values' device.
    """

    __slots__ = ("values", "offsets")

    def __init__(self, values: Tensor, offsets: Tensor):
        _ops._check_offsets_arg("Jagged", offsets)
        if values.dim() < 1:
            raise ValueError(f"Jagged: values must have at least 1 dimensions, got {values.dim()}")
        if values.device != offsets.device:
            raise TypeError(f"Jagged: offsets must be on values' device ({values.device}), got {offsets.device}")
        self.values = values
        self.offsets = offsets

    @classmethod
    def from_lengths(cls, values: Tensor, lengths: Union[Tensor, Sequence[int]]) -> "Jagged":
        """Jagged from values [L, *] and per-sequence lengths [B] (int64 offsets)."""
        lengths = torch.as_tensor(lengths, dtype=torch.int64, device=values.device)
        offsets = _ops.lengths_to_offsets(lengths, torch.int64)
        return cls(values, offsets)

    @classmethod
    def from_list(cls, seqs: Sequence[Tensor]) -> "Jagged":
        """Jagged from a list of [len_b, *] tensors with equal trailing shapes (at least one tensor)."""
        if len(seqs) == 0:
            raise ValueError("Jagged.from_list: seqs must hold at least one tensor (the dtype comes from it)")
        return cls.from_lengths(torch.cat(list(seqs)), [s.shape[0] for s in seqs])

    @classmethod
    def from_padded(cls, padded: Tensor, lengths: Union[Tensor, Sequence[int]]) -> "Jagged":
        """Jagged from padded [B, N, *] keeping the first lengths[b] rows of each sequence."""
        lengths = torch.as_tensor(lengths, dtype=torch.int64, device=padded.device)
        offsets = _ops.lengths_to_offsets(lengths, torch.int64)
        return cls(_ops.padded_to_jagged(padded, offsets), offsets)

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    @property
    def num_seqs(self) -> int:
        return len(self)

    @property
    def device(self) -> torch.device:
        return self.values.device

    def lengths(self) -> Tensor:
        """[B] lengths in offsets' dtype."""
        return _ops.offsets_to_lengths(self.offsets)

    def max_len(self) -> int:
        """Longest sequence (0 for an empty batch); a device sync on CUDA."""
        return int(self.lengths().max()) if len(self) else 0

    def to_padded(self, max_len: Optional[int] = None, padding_value: float = 0.0) -> Tensor:
        """[B, max_len, *]; max_len defaults to the longest sequence; longer sequences are truncated."""
        return _ops.jagged_to_padded(self.values, self.offsets, self.max_len() if max_len is None else max_len,
                                     padding_value)

    def to(self, *args, **kwargs) -> "Jagged":
        """Move/cast like Tensor.to; dtype changes apply to values only, offsets keep their integer dtype."""
        values = self.values.to(*args, **kwargs)
        return Jagged(values, self.offsets.to(values.device))

    def unbind(self) -> List[Tensor]:
        """The B sequences as views of values."""
        return list(torch.split(self.values, self.lengths().tolist()))

    def __getitem__(self, b: int) -> Tensor:
        if not -len(self) <= b < len(self):
            raise IndexError(f"Jagged: sequence index must be in [-{len(self)}, {len(self)}), got {b}")
        b %= len(self)
        return self.values[int(self.offsets[b]):int(self.offsets[b + 1])]

    def __repr__(self) -> str:
        return (f"Jagged(num_seqs={len(self)}, values={tuple(self.values.shape)} {self.values.dtype}, "
                f"offsets={self.offsets.dtype}, device={self.device})")
