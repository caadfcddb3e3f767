# SPDX-License-Identifier: Apache-2.0
"""KeyedJagged: TorchRec's KeyedJaggedTensor layout for sparse features."""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor


class KeyedJagged:
    """Sparse features of one batch, key-major (TorchRec's KeyedJaggedTensor layout).

    For F keys and batch B, offsets has F * B + 1 entries: bag b of key f is
    values[offsets[f * B + b]:offsets[f * B + b + 1]].

    Args:
        keys: F distinct feature names.
        values: [L] int32/int64 ids (row numbers of the feature's table).
        offsets: [F * B + 1] of values' dtype, starting at 0, non-decreasing, ending at L.
        weights: optional [L] per-id weights (float).
    """

    def __init__(self, keys: Sequence[str], values: Tensor, offsets: Tensor, weights: Optional[Tensor] = None):
        keys = list(keys)
        if len(set(keys)) != len(keys):
            raise ValueError(f"KeyedJagged: keys must be distinct, got {keys}")
        if values.dtype not in (torch.int32, torch.int64) or offsets.dtype != values.dtype:
            raise TypeError(f"KeyedJagged: values and offsets must both be int32 or int64, got {values.dtype} "
                            f"and {offsets.dtype}")
        if values.dim() != 1 or offsets.dim() != 1 or offsets.shape[0] < 1:
            raise ValueError("KeyedJagged: values must be 1-D and offsets 1-D with at least 1 element, got shapes "
                             f"{tuple(values.shape)} and {tuple(offsets.shape)}")
        nbags = offsets.shape[0] - 1
        if (keys and nbags % len(keys)) or (not keys and nbags):
            raise ValueError(f"KeyedJagged: offsets must have len(keys) * B + 1 entries, got {offsets.shape[0]} "
                             f"for {len(keys)} keys")
        if weights is not None:
            if not weights.is_floating_point():
                raise TypeError(f"KeyedJagged: weights must be floating point, got {weights.dtype}")
            if weights.shape != values.shape:
                raise ValueError(f"KeyedJagged: weights must have the shape of values {tuple(values.shape)}, "
                                 f"got {tuple(weights.shape)}")
        self.keys, self.values, self.offsets, self.weights = keys, values, offsets, weights

    def stride(self) -> int:
        """Batch size B."""
        return (self.offsets.shape[0] - 1) // len(self.keys) if self.keys else 0

    def __repr__(self) -> str:
        return f"KeyedJagged(keys={self.keys}, B={self.stride()}, L={self.values.shape[0]})"

    @staticmethod
    def from_dict(features: Dict[str, Tuple]) -> "KeyedJagged":
        """name -> (values [L_f], offsets [B + 1]) or (values, offsets, weights); every feature the same B."""
        keys, vals, offs, wts = [], [], [], []
        batch, base = None, 0
        for name, item in features.items():
            values, offsets = item[0], item[1]
            weights = item[2] if len(item) > 2 else None
            if offsets.dim() != 1 or offsets.shape[0] < 1:
                raise ValueError(f"KeyedJagged.from_dict: offsets of {name!r} must be 1-D and non-empty")
            if batch is None:
                batch = offsets.shape[0] - 1
            if offsets.shape[0] - 1 != batch:
                raise ValueError(f"KeyedJagged.from_dict: every feature needs the same batch size {batch}, got "
                                 f"{offsets.shape[0] - 1} for {name!r}")
            keys.append(name)
            vals.append(values)
            offs.append((offsets[1:] if offs else offsets) - offsets[0] + base)
            wts.append(weights)
            base += int(offsets[-1] - offsets[0])
        if any(w is not None for w in wts) and any(w is None for w in wts):
            raise ValueError("KeyedJagged.from_dict: give weights for every feature or for none")
        if not keys:
            return KeyedJagged([], torch.zeros(0, dtype=torch.int64), torch.zeros(1, dtype=torch.int64))
        dtype = torch.int64 if any(v.dtype == torch.int64 for v in vals) else vals[0].dtype
        return KeyedJagged(keys, torch.cat([v.to(dtype) for v in vals]), torch.cat([o.to(dtype) for o in offs]),
                           torch.cat(wts) if wts[0] is not None else None)

    def to_dict(self) -> Dict[str, Tuple]:
        """name -> (values, offsets [B + 1] starting at 0) or (values, offsets, weights) when weighted."""
        batch, out = self.stride(), {}
        for f, key in enumerate(self.keys):
            o = self.offsets[f * batch:(f + 1) * batch + 1]
            lo, hi = int(o[0]), int(o[-1])
            item = (self.values[lo:hi], o - o[0])
            out[key] = item + (self.weights[lo:hi],) if self.weights is not None else item
        return out

    def select(self, keys: List[str]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """(values, offsets, weights) of `keys` in that order, key-major; a slice (no copy of values) when they
        appear contiguously and in order in self.keys."""
        if keys == self.keys:  # every key in order: the tensors themselves (no host reads of offsets)
            return self.values, self.offsets, self.weights
        batch = self.stride()
        pos = [self.keys.index(k) for k in keys]
        if pos and pos == list(range(pos[0], pos[0] + len(pos))):
            o = self.offsets[pos[0] * batch:(pos[-1] + 1) * batch + 1]
            lo, hi = int(o[0]), int(o[-1])
            w = self.weights[lo:hi] if self.weights is not None else None
            return self.values[lo:hi], o - o[0] if lo else o, w
        parts = self.to_dict()
        sub = KeyedJagged.from_dict({k: parts[k] for k in keys})
        return sub.values, sub.offsets, sub.weights
