# SPDX-License-Identifier: Apache-2.0
"""Softmax transformer layers over jagged sequences (values [L, D] + offsets [B+1]) on recops.ops.jagged_attention:
the blocks of SASRec (causal) and BERT4Rec (bidirectional), with no padding anywhere."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.attention import jagged_attention
from ..ops.dropout import dropout
from ..ops.jagged import jagged_to_padded, padded_to_jagged


class TransformerLayer(nn.Module):
    """One pre-LN transformer block::

        a   = jagged_attention(split(Linear_qkv(LN1(x))), causal, dropout_p = dropout on the probabilities)
        x   = x + Dropout(Linear_proj(a))
        out = x + Dropout(Linear_2(Dropout(GELU(Linear_1(LN2(x))))))

    With decoupled attention embeddings (DARE), forward(x, offsets, x_attn=...) computes q and k from
    LN_attn(x_attn) (its own projection `qk`) and v from LN1(x) (`v`): attention weights come from the attention
    table, values from the representation.

    Args:
        dim: D. num_heads: H (D must divide by it). ffn_dim: the FFN width (SASRec D, BERT4Rec 4D).
        causal: left-to-right (SASRec) or bidirectional (BERT4Rec). dropout: attention, residual and FFN dropout.
        max_seq_len: an upper bound of the lengths (the op's max_seq_len; memory is sized by the batch's longest
            sequence, not by it). decoupled: see above.
    """

    def __init__(self, dim: int, num_heads: int = 1, ffn_dim: Optional[int] = None, causal: bool = True,
                 dropout: float = 0.2, max_seq_len: int = 1 << 20, decoupled: bool = False):
        super().__init__()
        if dim < 1 or num_heads < 1 or dim % num_heads:
            raise ValueError(f"TransformerLayer: dim must be a positive multiple of num_heads, got dim={dim}, "
                             f"num_heads={num_heads}")
        self.dim, self.num_heads, self.causal, self.p = dim, num_heads, causal, dropout
        self.max_seq_len, self.decoupled = max_seq_len, decoupled
        self.ln1 = nn.LayerNorm(dim)
        if decoupled:
            self.ln_attn = nn.LayerNorm(dim)
            self.qk = nn.Linear(dim, 2 * dim)
            self.v = nn.Linear(dim, dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        ffn_dim = ffn_dim or dim
        self.ff1, self.ff2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.drop = Dropout(dropout)
        self.padded_sdpa = False

    def use_padded_sdpa(self, enabled: bool = True) -> "TransformerLayer":
        """Run attention as torch SDPA on the padded batch (the formulation SASRec had before the jagged op; the
        baseline of the benchmarks and the equivalence test). Dropout then uses torch's generator."""
        self.padded_sdpa = enabled
        return self

    def _qkv(self, x: Tensor, x_attn: Optional[Tensor]):
        L, H, d = x.shape[0], self.num_heads, self.dim // self.num_heads
        if self.decoupled:
            if x_attn is None:
                raise ValueError("TransformerLayer: a decoupled layer needs x_attn (the attention embeddings)")
            q, k = self.qk(self.ln_attn(x_attn)).view(L, 2, H, d).unbind(1)
            return q, k, self.v(self.ln1(x)).view(L, H, d)
        q, k, v = self.qkv(self.ln1(x)).view(L, 3, H, d).unbind(1)
        return q, k, v

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, offsets: Tensor) -> Tensor:
        p = self.p if self.training else 0.0
        if not self.padded_sdpa:
            return jagged_attention(q, k, v, offsets, self.max_seq_len, causal=self.causal, dropout_p=p)
        lengths = offsets[1:] - offsets[:-1]
        n = int(lengths.max()) if lengths.numel() else 0
        L, H, d = q.shape
        qp, kp, vp = (jagged_to_padded(t.reshape(L, H * d), offsets, n).view(-1, n, H, d).transpose(1, 2)
                      for t in (q, k, v))
        if self.causal:  # padding rows come last, so the causal mask never lets a real row see one
            a = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, dropout_p=p)
        else:
            keep = torch.arange(n, device=q.device)[None, :] < lengths[:, None]
            a = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=keep[:, None, None, :], dropout_p=p)
        return padded_to_jagged(a.transpose(1, 2).reshape(-1, n, H * d), offsets, L).view(L, H, d)

    def forward(self, x: Tensor, offsets: Tensor, x_attn: Optional[Tensor] = None) -> Tensor:
        L = x.shape[0]
        a = self._attend(*self._qkv(x, x_attn), offsets).reshape(L, self.dim)
        x = x + self.drop(self.proj(a))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(x))))))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, causal={self.causal}, dropout={self.p}, "
                f"decoupled={self.decoupled}")



class Dropout(nn.Dropout):
    """nn.Dropout on recops.ops.dropout (counter-based mask, nothing stored; on the CPU many times faster than
    torch's bernoulli_). `torch_dropout = True` switches back to torch's (the earlier behaviour; benchmarks)."""

    torch_dropout = False

    def forward(self, x: Tensor) -> Tensor:
        if self.torch_dropout:
            return super().forward(x)
        return dropout(x, self.p, self.training)


def use_torch_dropout(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Every recops Dropout inside `module` on torch's dropout (enabled) or on recops.ops.dropout."""
    for m in module.modules():
        if isinstance(m, Dropout):
            m.torch_dropout = enabled
    return module
