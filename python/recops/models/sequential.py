# SPDX-License-Identifier: Apache-2.0
"""Sequential recommenders over jagged histories: HSTU (the paper's research formulation), SASRec (causal softmax
transformer) and BERT4Rec (bidirectional, Cloze-trained), sharing the input embedding, the L2-normalised output
space and the training objective; each optionally with decoupled attention embeddings (DARE)."""

import dataclasses
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.attention import Dropout, TransformerLayer
from ..nn.hstu import HSTULayer
from ..ops.full_softmax import full_softmax_loss
from ..ops.sampled_softmax import sampled_softmax_loss as sampled_softmax_loss_fused


LOSSES = ("sampled_softmax", "full_softmax")
PRECISIONS = ("fp32", "bf16")


def autocast(cfg: "SeqConfig", device) -> "torch.autocast":
    """The training forward's precision context: bf16 autocast on the device's type with precision "bf16", else a
    disabled one (float32)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
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
    # BERT4Rec's Cloze task: each training position is replaced by [MASK] with this probability (the paper's
    # ML-1M value; a sequence with no masked position gets its last one masked).
    mask_prob: float = 0.2
    # DARE: attention (queries and keys) reads its own item embedding table; values and scoring use the other.
    decoupled_embeddings: bool = False
    # "bf16": training forwards run under CPU/CUDA autocast to bfloat16 (linear layers on oneDNN's AMX/bf16 paths,
    # attention on the bf16 kernels: recops.ops.cpu_bf16_unit()); the loss, the output and item normalisation and
    # the weights (and evaluation) stay float32.
    precision: str = "fp32"

    def __post_init__(self):
        for name, allowed in (("loss", LOSSES), ("negatives", NEGATIVES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SeqConfig: {name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"SeqConfig: precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SeqConfig: dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"SeqConfig: mask_prob must be in (0, 1), got {self.mask_prob}")
        if not (self.temperature > 0 and self.temperature < float("inf")):
            raise ValueError(f"SeqConfig: temperature must be finite and > 0, got {self.temperature}")

    @staticmethod
    def preset(name: str, **overrides) -> "SeqConfig":
        presets = {
            "hstu": dict(model="hstu", num_layers=2, num_heads=1),
            "hstu-large": dict(model="hstu", num_layers=8, num_heads=2, head_dim=25),
            "sasrec": dict(model="sasrec", num_layers=2, num_heads=1),
            "bert4rec": dict(model="bert4rec", num_layers=2, num_heads=2),
        }
        if name not in presets:
            raise ValueError(f"SeqConfig.preset: model must be one of {sorted(presets)}, got {name!r}")
        return SeqConfig(**{**presets[name], **overrides})


class _SeqModel(nn.Module):
    """Shared input (item embedding * sqrt(D) + position embedding, dropout) and output (L2-normalised rows).
    `extra_tokens` rows follow the items in the tables (BERT4Rec's [MASK]); they are never scored."""

    extra_tokens = 0

    def __init__(self, num_items: int, cfg: SeqConfig):
        super().__init__()
        if num_items < 1:
            raise ValueError(f"{type(self).__name__}: num_items must be >= 1, got {num_items}")
        self.cfg, self.num_items = cfg, num_items
        rows = num_items + self.extra_tokens
        self.item_emb = nn.Embedding(rows, cfg.dim)
        self.pos_emb = nn.Embedding(cfg.max_len + 1, cfg.dim)
        self.attn_emb = nn.Embedding(rows, cfg.dim) if cfg.decoupled_embeddings else None
        self.drop = Dropout(cfg.dropout)
        # The reference's effective init: truncated normal (at 2 std) with std 0.02 for both tables (its position
        # preprocessor draws std sqrt(1/D), but the model's reset_params then redraws every parameter outside the
        # HSTU blocks and the item-embedding module with std 0.02).
        for table in (self.item_emb, self.pos_emb, self.attn_emb):
            if table is not None:
                nn.init.trunc_normal_(table.weight, std=0.02, a=-0.04, b=0.04)

    def _positions(self, items: Tensor, offsets: Tensor) -> Tensor:
        seq = _segment_ids(offsets, items.numel())
        return (torch.arange(items.numel(), device=items.device) - offsets[:-1][seq]).clamp(max=self.cfg.max_len)

    def embed(self, items: Tensor, offsets: Tensor, table: Optional[nn.Embedding] = None) -> Tensor:
        table = self.item_emb if table is None else table
        return self.drop(table(items) * math.sqrt(self.cfg.dim) + self.pos_emb(self._positions(items, offsets)))

    def embed_attention(self, items: Tensor, offsets: Tensor) -> Optional[Tensor]:
        """The attention stream's input with decoupled embeddings (same positions), else None."""
        return None if self.attn_emb is None else self.embed(items, offsets, self.attn_emb)

    def item_vectors(self) -> Tensor:
        """[num_items, D] L2-normalised item embeddings (the retrieval space)."""
        return F.normalize(self.item_emb.weight[:self.num_items], dim=-1, eps=1e-6)

    def training_outputs(self, batch: dict, device, generator: Optional[torch.Generator] = None, forward=None):
        """(outputs [M, D], targets [M]) of a next_item_batches batch: every position predicts the next item.
        `forward` runs the model (default self; the DistributedDataParallel wrapper in distributed training)."""
        off = batch["offsets"].to(device)
        ts = batch["timestamps"].to(device) if "timestamps" in batch else None
        return (forward or self)(batch["items"].to(device), off, ts), batch["targets"].to(device)

    def last_outputs(self, items: Tensor, offsets: Tensor, timestamps: Optional[Tensor] = None) -> Tensor:
        """[B, D]: the output that predicts each sequence's next item (its last position)."""
        return self(items, offsets, timestamps)[offsets[1:] - 1]


class HSTU(_SeqModel):
    """item_emb * sqrt(D) + position embedding, dropout, `num_layers` HSTULayers (research formulation,
    relative position + log-time bias, scale 1/max_seq_len), L2-normalised output [L, D]. With decoupled
    embeddings, q and k of every layer come from the attention embeddings (HSTULayer's x_attn)."""

    def __init__(self, num_items: int, cfg: SeqConfig):
        super().__init__(num_items, cfg)
        n = cfg.max_seq_len or cfg.max_len + 11
        hd = cfg.head_dim or cfg.dim // cfg.num_heads
        self.layers = nn.ModuleList(HSTULayer(cfg.dim, cfg.num_heads, hd, hd, max_seq_len=n, dropout=cfg.dropout)
                                    for _ in range(cfg.num_layers))

    def forward(self, items: Tensor, offsets: Tensor, timestamps: Optional[Tensor] = None) -> Tensor:
        x = self.embed(items, offsets)
        x_attn = self.embed_attention(items, offsets)
        for layer in self.layers:
            x = layer(x, offsets, timestamps, x_attn=x_attn)
        return F.normalize(x.float(), dim=-1, eps=1e-6)  # float32 even under bf16 autocast

    def use_reference_attention(self, enabled: bool = True) -> "HSTU":
        for layer in self.layers:
            layer.use_reference_attention(enabled)
        return self


class _Transformer(_SeqModel):
    """The shared input, `num_layers` TransformerLayers (jagged softmax attention, no padding) and a final
    LayerNorm, L2-normalised output [L, D]."""

    causal = True

    def __init__(self, num_items: int, cfg: SeqConfig, ffn_dim: int):
        super().__init__(num_items, cfg)
        self.blocks = nn.ModuleList(
            TransformerLayer(cfg.dim, cfg.num_heads, ffn_dim, causal=self.causal, dropout=cfg.dropout,
                             max_seq_len=1 << 20, decoupled=cfg.decoupled_embeddings)
            for _ in range(cfg.num_layers))
        self.final_ln = nn.LayerNorm(cfg.dim)

    def forward(self, items: Tensor, offsets: Tensor, timestamps: Optional[Tensor] = None) -> Tensor:
        x = self.embed(items, offsets)
        x_attn = self.embed_attention(items, offsets)
        for blk in self.blocks:
            x = blk(x, offsets, x_attn)
        return F.normalize(self.final_ln(x).float(), dim=-1, eps=1e-6)  # float32 even under bf16 autocast

    def use_padded_sdpa(self, enabled: bool = True) -> "_Transformer":
        """Attention as torch SDPA on the padded batch (the earlier formulation; a baseline and a test oracle)."""
        for blk in self.blocks:
            blk.use_padded_sdpa(enabled)
        return self


class SASRec(_Transformer):
    """The same input and output as HSTU with causal softmax transformer blocks (pre-LN, FFN of width D, GELU),
    on recops.ops.jagged_attention: no padding anywhere in the forward."""

    def __init__(self, num_items: int, cfg: SeqConfig):
        super().__init__(num_items, cfg, ffn_dim=cfg.dim)


class BERT4Rec(_Transformer):
    """BERT4Rec (Sun et al., CIKM 2019): bidirectional transformer blocks (FFN 4D, GELU) over the history, trained
    on the Cloze task: each position is replaced by the [MASK] token (row num_items of the tables) with
    probability cfg.mask_prob and the loss (cfg.loss: full or sampled softmax) is taken on the masked positions
    only. At evaluation [MASK] is appended after the history and its output predicts the next item. The output
    space is the other models' (L2-normalised, temperature-scaled cosine), not the paper's dot product + bias."""

    causal = False
    extra_tokens = 1

    def __init__(self, num_items: int, cfg: SeqConfig):
        super().__init__(num_items, cfg, ffn_dim=4 * cfg.dim)

    @property
    def mask_token(self) -> int:
        return self.num_items

    def cloze(self, items: Tensor, offsets: Tensor, generator: Optional[torch.Generator] = None):
        """(masked items, masked positions [bool, like items]): each position masked with probability mask_prob,
        and the last position of a non-empty sequence that drew none. Only real (history) positions are
        touched; the random draw uses `generator` (CPU), so a seeded run repeats bit for bit."""
        draw = torch.rand(items.shape[0], generator=generator).to(items.device) < self.cfg.mask_prob
        lengths = offsets[1:] - offsets[:-1]
        seq = _segment_ids(offsets, items.numel())
        hits = torch.zeros(lengths.numel(), dtype=torch.long, device=items.device).index_add_(0, seq, draw.long())
        last = offsets[1:][(hits == 0) & (lengths > 0)] - 1
        draw[last] = True
        return torch.where(draw, torch.full_like(items, self.mask_token), items), draw

    def training_outputs(self, batch: dict, device, generator: Optional[torch.Generator] = None, forward=None):
        """The Cloze task on each whole training sequence (the batch's inputs plus its last target)."""
        items, off, targets = batch["items"].to(device), batch["offsets"].to(device), batch["targets"].to(device)
        full, full_off = _append_last(items, off, targets[off[1:] - 1])
        masked, where = self.cloze(full, full_off, generator)
        return (forward or self)(masked, full_off)[where], full[where]

    def last_outputs(self, items: Tensor, offsets: Tensor, timestamps: Optional[Tensor] = None) -> Tensor:
        extra = torch.full((offsets.numel() - 1,), self.mask_token, dtype=items.dtype, device=items.device)
        full, full_off = _append_last(items, offsets, extra)
        return self(full, full_off)[full_off[1:] - 1]


def _segment_ids(offsets: Tensor, total: int) -> Tensor:
    """[total]: the sequence of every row of a jagged batch (no host sync: the row count is given)."""
    lengths = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device), lengths, output_size=total)


def _append_last(items: Tensor, offsets: Tensor, extra: Tensor):
    """(items with extra[b] appended to sequence b, the new offsets)."""
    B = offsets.numel() - 1
    new_off = offsets + torch.arange(B + 1, device=offsets.device, dtype=offsets.dtype)
    seq = _segment_ids(offsets, items.numel())
    out = torch.empty(items.numel() + B, dtype=items.dtype, device=items.device)
    out[torch.arange(items.numel(), device=items.device) + seq] = items
    out[new_off[1:] - 1] = extra
    return out, new_off


MODELS = {"hstu": HSTU, "sasrec": SASRec, "bert4rec": BERT4Rec}


def build_model(num_items: int, cfg: SeqConfig) -> nn.Module:
    if cfg.model not in MODELS:
        raise ValueError(f"build_model: model must be one of {sorted(MODELS)}, got {cfg.model!r}")
    return MODELS[cfg.model](num_items, cfg)


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
