# SPDX-License-Identifier: Apache-2.0
"""Generative sequential recommenders over jagged histories: HSTU (the paper's research formulation) and
SASRec (causal softmax transformer), sharing the input embedding and the L2-normalised output space."""

import dataclasses
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.hstu import HSTULayer
from ..ops.jagged import jagged_to_padded, padded_to_jagged


@dataclasses.dataclass
class SeqConfig:
    """Model and training settings. The presets reproduce the HSTU paper's ML-1M setup."""

    model: str = "hstu"
    dim: int = 50
    num_layers: int = 2
    num_heads: int = 1
    head_dim: Optional[int] = None   # attention/linear dim per head (default dim // num_heads)
    max_len: int = 200
    max_seq_len: Optional[int] = None  # HSTU's N (scale 1/N, bias tables): default max_len + 11
    dropout: float = 0.2
    num_negatives: int = 128
    temperature: float = 0.05
    lr: float = 1e-3
    betas: tuple = (0.9, 0.98)
    weight_decay: float = 0.0
    batch_size: int = 128

    @staticmethod
    def preset(name: str, **overrides) -> "SeqConfig":
        presets = {
            "hstu": dict(model="hstu", num_layers=2, num_heads=1),
            "hstu-large": dict(model="hstu", num_layers=8, num_heads=2, head_dim=25),
            "sasrec": dict(model="sasrec", num_layers=2, num_heads=1),
        }
        if name not in presets:
            raise ValueError(f"SeqConfig.preset: model must be one of {sorted(presets)}, got {name!r}")
        return SeqConfig(**{**presets[name], **overrides})


class _SeqModel(nn.Module):
    def __init__(self, num_items: int, cfg: SeqConfig):
        super().__init__()
        if num_items < 1:
            raise ValueError(f"{type(self).__name__}: num_items must be >= 1, got {num_items}")
        self.cfg, self.num_items = cfg, num_items
        self.item_emb = nn.Embedding(num_items, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.max_len + 1, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def embed(self, items: Tensor, offsets: Tensor) -> Tensor:
        lengths = offsets[1:] - offsets[:-1]
        seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=items.device), lengths,
                                      output_size=items.numel())
        pos = (torch.arange(items.numel(), device=items.device) - offsets[:-1][seq]).clamp(max=self.cfg.max_len)
        return self.drop(self.item_emb(items) * math.sqrt(self.cfg.dim) + self.pos_emb(pos))

    def item_vectors(self) -> Tensor:
        """[num_items, D] L2-normalised item embeddings (the retrieval space)."""
        return F.normalize(self.item_emb.weight, dim=-1, eps=1e-6)


class HSTU(_SeqModel):
    """item_emb * sqrt(D) + position embedding, dropout, `num_layers` HSTULayers (research formulation,
    relative position + log-time bias, scale 1/max_seq_len), L2-normalised output [L, D]."""

    def __init__(self, num_items: int, cfg: SeqConfig):
        super().__init__(num_items, cfg)
        n = cfg.max_seq_len or cfg.max_len + 11
        hd = cfg.head_dim or cfg.dim // cfg.num_heads
        self.layers = nn.ModuleList(HSTULayer(cfg.dim, cfg.num_heads, hd, hd, max_seq_len=n, dropout=cfg.dropout)
                                    for _ in range(cfg.num_layers))

    def forward(self, items: Tensor, offsets: Tensor, timestamps: Optional[Tensor] = None) -> Tensor:
        x = self.embed(items, offsets)
        for layer in self.layers:
            x = layer(x, offsets, timestamps)
        return F.normalize(x, dim=-1, eps=1e-6)

    def use_reference_attention(self, enabled: bool = True) -> "HSTU":
        for layer in self.layers:
            layer.use_reference_attention(enabled)
        return self


class SASRec(_SeqModel):
    """The same input and output as HSTU with causal softmax transformer blocks (pre-LN, torch SDPA on the
    padded batch, FFN of width D)."""

    def __init__(self, num_items: int, cfg: SeqConfig):
        super().__init__(num_items, cfg)
        d = cfg.dim
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            ln1=nn.LayerNorm(d), qkv=nn.Linear(d, 3 * d), proj=nn.Linear(d, d), ln2=nn.LayerNorm(d),
            ff1=nn.Linear(d, d), ff2=nn.Linear(d, d))) for _ in range(cfg.num_layers))
        self.final_ln = nn.LayerNorm(d)

    def forward(self, items: Tensor, offsets: Tensor, timestamps: Optional[Tensor] = None) -> Tensor:
        cfg = self.cfg
        lengths = offsets[1:] - offsets[:-1]
        n = int(lengths.max()) if lengths.numel() else 0
        x = jagged_to_padded(self.embed(items, offsets), offsets, n)  # [B, n, D]; padding rows come last
        batch, h = x.shape[0], cfg.num_heads
        for blk in self.blocks:
            qkv = blk["qkv"](blk["ln1"](x)).view(batch, n, 3, h, cfg.dim // h).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True,
                                               dropout_p=cfg.dropout if self.training else 0.0)
            x = x + self.drop(blk["proj"](a.transpose(1, 2).reshape(batch, n, cfg.dim)))
            x = x + self.drop(blk["ff2"](self.drop(F.gelu(blk["ff1"](blk["ln2"](x))))))
        out = padded_to_jagged(self.final_ln(x), offsets, items.numel())
        return F.normalize(out, dim=-1, eps=1e-6)


def build_model(num_items: int, cfg: SeqConfig) -> nn.Module:
    if cfg.model == "hstu":
        return HSTU(num_items, cfg)
    if cfg.model == "sasrec":
        return SASRec(num_items, cfg)
    raise ValueError(f"build_model: model must be 'hstu' or 'sasrec', got {cfg.model!r}")


def sampled_softmax_loss(out: Tensor, targets: Tensor, item_vectors: Tensor, negatives: Tensor,
                         temperature: float) -> Tensor:
    """Mean over rows of -log softmax over [positive, negatives] of cosine / temperature; a negative equal
    to the row's positive is masked out. out [L, D], targets [L], item_vectors [V, D], negatives [M]."""
    pos = (out * item_vectors[targets]).sum(-1, keepdim=True)
    neg = out @ item_vectors[negatives].t()
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(out.shape[0], dtype=torch.long, device=out.device))
