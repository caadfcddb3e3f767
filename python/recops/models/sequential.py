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
from ..ops.full_softmax import full_softmax_loss
from ..ops.sampled_softmax import sampled_softmax_loss as sampled_softmax_loss_fused


LOSSES = ("sampled_softmax", "full_softmax")
NEGATIVES = ("per_position", "shared")


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
    # Training objective (next_item_loss): "sampled_softmax" over num_negatives uniform negatives drawn for every
    # supervised position (the reference recipe; negatives="shared": one set per batch, the earlier recops
    # default), or "full_softmax" over every item. logq: negatives drawn by training popularity, with the logQ
    # correction (log q subtracted from every candidate's logit, the positive included).
    loss: str = "sampled_softmax"
    negatives: str = "per_position"
    logq: bool = False

    def __post_init__(self):
        for name, allowed in (("loss", LOSSES), ("negatives", NEGATIVES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SeqConfig: {name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SeqConfig: dropout must be in [0, 1), got {self.dropout}")
        if not (self.temperature > 0 and self.temperature < float("inf")):
            raise ValueError(f"SeqConfig: temperature must be finite and > 0, got {self.temperature}")

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
        # The reference's effective init: truncated normal (at 2 std) with std 0.02 for both tables (its position
        # preprocessor draws std sqrt(1/D), but the model's reset_params then redraws every parameter outside the
        # HSTU blocks and the item-embedding module with std 0.02).
        for table in (self.item_emb.weight, self.pos_emb.weight):
            nn.init.trunc_normal_(table, std=0.02, a=-0.04, b=0.04)

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


def next_item_loss(out: Tensor, targets: Tensor, item_vectors: Tensor, cfg: SeqConfig,
                   generator: Optional[torch.Generator] = None, item_probs: Optional[Tensor] = None) -> Tensor:
    """The training loss of cfg (mean over the supervised positions): out [L, D] model outputs, targets [L] next
    items, item_vectors [V, D] (normalised). sampled_softmax runs the fused recops.ops.sampled_softmax_loss:
    per-position uniform negatives are drawn inside the kernel (nothing [L, M] is stored); shared negatives are
    one [M] draw; with cfg.logq, negatives come from item_probs [V] (training popularity) and log q corrects
    every logit. full_softmax: cross-entropy over all V items (recops.ops.full_softmax_loss, chunked).
    Negatives equal to the positive are masked."""
    t, m, num_items = cfg.temperature, cfg.num_negatives, item_vectors.shape[0]
    if cfg.loss == "full_softmax":
        return full_softmax_loss(out, targets, item_vectors, temperature=t)
    log_q = negatives = None
    if cfg.logq:
        if item_probs is None:
            raise ValueError("next_item_loss: cfg.logq needs item_probs (the sampling distribution)")
        rows = out.shape[0] if cfg.negatives == "per_position" else 1
        negatives = torch.multinomial(item_probs, rows * m, replacement=True, generator=generator)
        negatives = negatives.view(rows, m) if cfg.negatives == "per_position" else negatives
        log_q = item_probs.clamp_min(1e-30).log().to(out.dtype)
        negatives, log_q = negatives.to(out.device), log_q.to(out.device)
    elif cfg.negatives == "shared":
        negatives = torch.randint(0, num_items, (m,), generator=generator).to(out.device)
    return sampled_softmax_loss_fused(out, targets, item_vectors, negatives, num_negatives=m, temperature=t,
                                      log_q=log_q, generator=generator)


def sampled_softmax_loss(out: Tensor, targets: Tensor, item_vectors: Tensor, negatives: Tensor,
                         temperature: float) -> Tensor:
    """Mean over rows of -log softmax over [positive, negatives] of cosine / temperature; a negative equal
    to the row's positive is masked out. out [L, D], targets [L], item_vectors [V, D], negatives [M].
    The plain-PyTorch composition with shared negatives (kept as a reference; training uses next_item_loss)."""
    pos = (out * item_vectors[targets]).sum(-1, keepdim=True)
    neg = out @ item_vectors[negatives].t()
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(out.shape[0], dtype=torch.long, device=out.device))
