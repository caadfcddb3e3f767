# SPDX-License-Identifier: Apache-2.0
"""Sequential recommenders over jagged histories: HSTU (the paper's research formulation), SASRec (causal softmax
transformer) and BERT4Rec (bidirectional, Cloze-trained), sharing the input embedding, the L2-normalised output
space and the training objective; each optionally with decoupled attention embeddings (DARE)."""

import dataclasses
import math
from typing import List, Optional, Tuple

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

    def embed(self, items: Tensor, offsets: Tensor, table: Optional[nn.Embedding] = None,
              positions: Optional[Tensor] = None) -> Tensor:
        """Input rows; `positions` (each row's index in its sequence) default to the rows' places in `offsets`."""
        table = self.item_emb if table is None else table
        pos = self._positions(items, offsets) if positions is None else positions.clamp(max=self.cfg.max_len)
        return self.drop(table(items) * math.sqrt(self.cfg.dim) + self.pos_emb(pos))

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

    @torch.no_grad()
    def cached_forward(self, new_items: Tensor, new_offsets: Tensor, new_timestamps: Optional[Tensor] = None,
                       cache: Optional["HSTUCache"] = None) -> Tuple[Tensor, "HSTUCache"]:
        """Incremental inference: the outputs [new events, D] of B users' new events (a jagged batch: new_items,
        new_offsets [B+1], new_timestamps with the model's time bias) given `cache` (their histories' per-layer keys
        and values; None starts empty), and the cache with the new events appended. Equal, to float tolerance, to
        the rows of a full forward over each whole history (eval mode; dropout off).

        Only the attention mixes rows, so each layer recomputes just the new rows and each user's last cached row:
        query i's time bias uses the timestamp of event i + 1, unknown until the next event arrives, so the last
        row of every history is provisional and is redone (its output, and the keys and values of the layers
        above, change) when new events come. Attention runs with q_offsets (the rows recomputed) over the cached
        plus new keys and values (recops.ops.hstu_attention, CPU). A user with no new event keeps its cache."""
        if self.training:
            raise ValueError("HSTU.cached_forward: call model.eval() first (dropout would make outputs random)")
        if new_offsets.dim() != 1 or new_offsets.numel() < 1:
            raise ValueError(f"HSTU.cached_forward: new_offsets must be [B+1], got shape {list(new_offsets.shape)}")
        device = new_items.device
        new_offsets = new_offsets.to(device=device, dtype=torch.int64)
        B, Ln = new_offsets.numel() - 1, new_items.numel()
        if int(new_offsets[-1]) != Ln:
            raise ValueError(f"HSTU.cached_forward: new_offsets end at {int(new_offsets[-1])}, new_items has {Ln}")
        if cache is None:
            cache = HSTUCache.empty(self, B, device, new_timestamps is not None)
        if cache.offsets.numel() != B + 1:
            raise ValueError(f"HSTU.cached_forward: the cache holds {cache.offsets.numel() - 1} users, the batch {B}")
        if (new_timestamps is None) != (cache.timestamps is None):
            raise ValueError("HSTU.cached_forward: pass new_timestamps on every call or on none")
        old_len, new_len = cache.offsets.diff(), new_offsets.diff()
        redo = ((old_len > 0) & (new_len > 0)).long()  # the provisional last row, recomputed
        q_len, kv_len = new_len + redo, old_len + new_len
        zero = torch.zeros(1, dtype=torch.int64, device=device)
        kv_off, q_off = torch.cat([zero, kv_len.cumsum(0)]), torch.cat([zero, q_len.cumsum(0)])
        Lo, Lkv, Lq = int(cache.offsets[-1]), int(kv_off[-1]), int(q_off[-1])
        # kv rows: per user its cached rows then its new ones; q rows: the last q_len[b] of them
        seg_o, seg_n, seg_q = (_segment_ids(cache.offsets, Lo), _segment_ids(new_offsets, Ln),
                               _segment_ids(q_off, Lq))
        old_dst = kv_off[seg_o] + torch.arange(Lo, device=device) - cache.offsets[seg_o]
        new_dst = kv_off[seg_n] + old_len[seg_n] + torch.arange(Ln, device=device) - new_offsets[seg_n]
        r_q = torch.arange(Lq, device=device) - q_off[seg_q]
        q_kv = kv_off[seg_q] + kv_len[seg_q] - q_len[seg_q] + r_q
        is_new = r_q >= redo[seg_q]  # q rows that are new events (the others: redone last rows)
        q_items = torch.empty(Lq, dtype=torch.int64, device=device)
        q_items[is_new] = new_items.long()
        q_items[~is_new] = cache.items[cache.offsets[1:][seg_q[~is_new]] - 1]
        positions = q_kv - kv_off[seg_q]
        hist = torch.empty(Lkv, dtype=torch.int64, device=device)
        hist[old_dst], hist[new_dst] = cache.items, new_items.long()
        ts = None
        if new_timestamps is not None:
            ts = torch.empty(Lkv, dtype=torch.int64, device=device)
            ts[old_dst] = cache.timestamps
            ts[new_dst] = new_timestamps.to(device=device, dtype=torch.int64)
        x = self.embed(q_items, q_off, positions=positions)
        x_attn = None if self.attn_emb is None else self.embed(q_items, q_off, self.attn_emb, positions)
        keys, values = [], []
        for layer, k_old, v_old in zip(self.layers, cache.keys, cache.values):
            u, q, k, v = layer.project(x, x_attn)
            K = k.new_empty((Lkv,) + tuple(k.shape[1:]))
            V = v.new_empty((Lkv,) + tuple(v.shape[1:]))
            K[old_dst], V[old_dst] = k_old.to(K.dtype), v_old.to(V.dtype)
            K[q_kv], V[q_kv] = k, v  # the redone rows overwrite their provisional keys and values
            x = layer.finish(x, u, layer.attend(q, K, V, kv_off, ts, q_offsets=q_off))
            keys.append(K)
            values.append(V)
        out = F.normalize(x[is_new].float(), dim=-1, eps=1e-6)
        return out, HSTUCache(kv_off, hist, ts, keys, values)

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


@dataclasses.dataclass
class HSTUCache:
    """The per-user state of HSTU.cached_forward for B users, jagged by `offsets` [B+1] (each user's history so
    far): `items` [L] (the history; a user's last row is redone with its next events), `timestamps` [L] (or None:
    a model used without time bias), and per layer `keys` [L, H, dqk] and `values` [L, H, dv]."""

    offsets: Tensor
    items: Tensor
    timestamps: Optional[Tensor]
    keys: List[Tensor]
    values: List[Tensor]

    @staticmethod
    def empty(model: "HSTU", num_users: int, device, with_timestamps: bool) -> "HSTUCache":
        layers = list(model.layers)
        return HSTUCache(torch.zeros(num_users + 1, dtype=torch.int64, device=device),
                         torch.zeros(0, dtype=torch.int64, device=device),
                         torch.zeros(0, dtype=torch.int64, device=device) if with_timestamps else None,
                         [torch.zeros(0, l.num_heads, l.attention_dim, device=device) for l in layers],
                         [torch.zeros(0, l.num_heads, l.linear_dim, device=device) for l in layers])

    def nbytes(self) -> int:
        """Bytes of the cached keys and values."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


class HSTUServer:
    """Serving helper over HSTU.cached_forward: holds the cache of `num_users` users and, for each batch of new
    events (a jagged batch over all users, most of them with none), returns for every user that had one the top-k
    catalogue items scored against its latest output (model.item_vectors(), inner product), its history excluded
    (recops.metrics.topk_with_exclusion)."""

    def __init__(self, model: "HSTU", num_users: int, k: int = 10, exclude_history: bool = True,
                 timestamps: bool = False):
        if not isinstance(model, HSTU):
            raise TypeError(f"HSTUServer: model must be an HSTU, got {type(model).__name__}")
        if num_users < 1 or k < 1:
            raise ValueError(f"HSTUServer: num_users and k must be >= 1, got {num_users}, {k}")
        self.model, self.k, self.exclude = model.eval(), k, exclude_history
        device = next(model.parameters()).device
        self.cache = HSTUCache.empty(model, num_users, device, timestamps)
        with torch.no_grad():
            self.item_vectors = model.item_vectors()

    def add(self, new_items: Tensor, new_offsets: Tensor, new_timestamps: Optional[Tensor] = None):
        """(users [U], scores [U, k], items [U, k]) for the U users with new events, in user order."""
        from ..metrics import topk_with_exclusion

        out, self.cache = self.model.cached_forward(new_items, new_offsets, new_timestamps, self.cache)
        counts = new_offsets.diff()
        users = torch.nonzero(counts > 0).flatten()
        last = out[(torch.cumsum(counts, 0) - 1)[users]]  # each user's latest event
        if self.exclude:
            off = self.cache.offsets
            lengths = off[users + 1] - off[users]
            ex_off = torch.cat([torch.zeros(1, dtype=torch.int64, device=off.device), lengths.cumsum(0)])
            total = int(ex_off[-1])
            seg = _segment_ids(ex_off, total)
            rows = off[users][seg] + torch.arange(total, device=off.device) - ex_off[seg]  # the users' histories
            scores, ids = topk_with_exclusion(last, self.item_vectors, self.k, self.cache.items[rows], ex_off)
        else:
            scores, ids = torch.topk(last @ self.item_vectors.t(), min(self.k, self.item_vectors.shape[0]), dim=1)
        return users, scores, ids


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
