# SPDX-License-Identifier: Apache-2.0
"""HSTU layers over jagged sequences (values [L, D] + offsets [B+1])."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import hstu_ref
from ..ops.hstu import hstu_attention
from .attention import Dropout


class HSTULayer(nn.Module):
    """One HSTU layer.

    variant="research" (the formulation behind the paper's public-data tables)::

        x_hat = LayerNorm(x)                       (no affine, eps 1e-6)
        U, V, Q, K = split(SiLU(x_hat W))          (W: D x (2 H dv + 2 H dqk), no bias, N(0, 0.02))
        O = hstu_attention(Q, K, V; alpha=1, scale=1/max_seq_len, learned pos_bias [2N-1] and
                           time_bias [num_time_buckets + 1], both shared by heads)
        out = x + Linear(Dropout(U * LayerNorm(O)))   (no-affine LayerNorm; Linear with bias, xavier-uniform)

    variant="stu" (the newer production block): affine LayerNorm, projection with bias, SiLU on U only,
    alpha = 1/sqrt(dqk), no bias inside attention, out = x + Dropout([U, O, U * LayerNorm(O)] W_out).

    Args:
        embedding_dim: D. num_heads: H. attention_dim: dqk per head. linear_dim: dv per head.
        max_seq_len: N, the padded length the scale and position bias refer to (the paper's ML-1M setting uses
            max_len + 11 = 211). num_time_buckets: log-time buckets (128 -> a [129] table).
        contextual_len, max_attn_len: mask options of hstu_attention.
    Forward:
        x [L, D], offsets [B+1], timestamps [L] int (optional; without them no time bias),
        num_targets [B] (optional), x_attn [L, D] (optional: decoupled attention embeddings, DARE; Q and K are
        then SiLU(LayerNorm(x_attn) W_qk) while U and V stay SiLU(LayerNorm(x) W_uv)) -> [L, D].
    """

    def __init__(self, embedding_dim: int, num_heads: int = 1, attention_dim: Optional[int] = None,
                 linear_dim: Optional[int] = None, max_seq_len: int = 211, dropout: float = 0.2,
                 num_time_buckets: int = 128, time_bucket_base: float = 0.301, variant: str = "research",
                 contextual_len: int = 0, max_attn_len: int = 0, eps: float = 1e-6):
        super().__init__()
        if variant not in ("research", "stu"):
            raise ValueError(f"HSTULayer: variant must be 'research' or 'stu', got {variant!r}")
        if embedding_dim < 1 or num_heads < 1 or max_seq_len < 1:
            raise ValueError("HSTULayer: embedding_dim, num_heads and max_seq_len must be >= 1, got "
                             f"{embedding_dim}, {num_heads}, {max_seq_len}")
        self.embedding_dim, self.num_heads, self.variant = embedding_dim, num_heads, variant
        self.attention_dim = attention_dim or embedding_dim // num_heads
        self.linear_dim = linear_dim or embedding_dim // num_heads
        self.max_seq_len, self.time_bucket_base, self.eps = max_seq_len, time_bucket_base, eps
        self.contextual_len, self.max_attn_len = contextual_len, max_attn_len
        hv, hq = num_heads * self.linear_dim, num_heads * self.attention_dim
        research = variant == "research"
        self.uvqk = nn.Parameter(torch.empty(embedding_dim, 2 * hv + 2 * hq))
        self.uvqk_bias = None if research else nn.Parameter(torch.zeros(2 * hv + 2 * hq))
        self.input_norm = None if research else nn.LayerNorm(embedding_dim, eps=eps)
        self.pos_bias = nn.Parameter(torch.empty(2 * max_seq_len - 1)) if research else None
        self.time_bias = nn.Parameter(torch.empty(num_time_buckets + 1)) if research else None
        self.dropout = Dropout(dropout)
        self.out = nn.Linear(hv if research else 3 * hv, embedding_dim, bias=research)
        self.attention = hstu_attention
        self.reset_parameters()

    def use_reference_attention(self, enabled: bool = True) -> "HSTULayer":
        """Swap the fused op for the padded pure-PyTorch reference (same math; for tests and baselines)."""
        self.attention = hstu_ref.hstu_attention if enabled else hstu_attention
        return self

    def reset_parameters(self) -> None:
        nn.init.normal_(self.uvqk, std=0.02)
        if self.pos_bias is not None:
            nn.init.normal_(self.pos_bias, std=0.02)
            nn.init.normal_(self.time_bias, std=0.02)
        nn.init.xavier_uniform_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, offsets: Tensor, timestamps: Optional[Tensor] = None,
                num_targets: Optional[Tensor] = None, x_attn: Optional[Tensor] = None) -> Tensor:
        u, q, k, v = self.project(x, x_attn)
        o = self.attend(q, k, v, offsets, timestamps, num_targets)
        return self.finish(x, u, o)

    # The row-wise parts and the attention apart, for HSTU.cached_forward (only the attention mixes rows).
    def project(self, x: Tensor, x_attn: Optional[Tensor] = None):
        """(u [L, H dv], q [L, H, dqk], k [L, H, dqk], v [L, H, dv]) of rows x (row-wise)."""
        L = x.shape[0]
        H, dq, dv = self.num_heads, self.attention_dim, self.linear_dim
        if x_attn is not None and self.variant != "research":
            raise ValueError("HSTULayer: x_attn (decoupled attention embeddings) needs variant='research'")
        if self.variant == "research":
            h = F.layer_norm(x, (self.embedding_dim,), eps=self.eps)
            if x_attn is None:
                u, v, q, k = torch.split(F.silu(h @ self.uvqk), [H * dv, H * dv, H * dq, H * dq], dim=1)
            else:
                ha = F.layer_norm(x_attn, (self.embedding_dim,), eps=self.eps)
                u, v = torch.split(F.silu(h @ self.uvqk[:, :2 * H * dv]), [H * dv, H * dv], dim=1)
                q, k = torch.split(F.silu(ha @ self.uvqk[:, 2 * H * dv:]), [H * dq, H * dq], dim=1)
        else:
            h = self.input_norm(x)
            u, v, q, k = torch.split(F.linear(h, self.uvqk.t(), self.uvqk_bias), [H * dv, H * dv, H * dq, H * dq],
                                     dim=1)
        return u, q.view(L, H, dq), k.view(L, H, dq), v.view(L, H, dv)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, offsets: Tensor, timestamps: Optional[Tensor] = None,
               num_targets: Optional[Tensor] = None, q_offsets: Optional[Tensor] = None) -> Tensor:
        """The layer's attention [Lq, H dv]; with q_offsets, q holds only each sequence's last rows (inference)."""
        inc = {} if q_offsets is None else {"q_offsets": q_offsets}
        if self.variant == "research":
            use_time = timestamps is not None
            o = self.attention(q, k, v, offsets, self.max_seq_len, alpha=1.0, num_targets=num_targets,
                               contextual_len=self.contextual_len, max_attn_len=self.max_attn_len,
                               pos_bias=self.pos_bias, timestamps=timestamps if use_time else None,
                               time_bias=self.time_bias if use_time else None, time_bucket_base=self.time_bucket_base,
                               **inc)
        else:
            o = self.attention(q, k, v, offsets, self.max_seq_len, alpha=1.0 / math.sqrt(self.attention_dim),
                               num_targets=num_targets, contextual_len=self.contextual_len,
                               max_attn_len=self.max_attn_len, **inc)
        return o.reshape(q.shape[0], self.num_heads * self.linear_dim)

    def finish(self, x: Tensor, u: Tensor, o: Tensor) -> Tensor:
        """The layer's output rows from its input rows x, their u and their attention o (row-wise)."""
        hv = self.num_heads * self.linear_dim
        if self.variant == "research":
            y = u * F.layer_norm(o, (hv,), eps=self.eps)
            return x + self.out(self.dropout(y))
        u = F.silu(u)
        y = torch.cat([u, o, u * F.layer_norm(o, (hv,), eps=self.eps)], dim=1)
        return x + self.dropout(self.out(y))

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_heads={self.num_heads}, attention_dim={self.attention_dim}, "
                f"linear_dim={self.linear_dim}, max_seq_len={self.max_seq_len}, variant={self.variant!r}")
