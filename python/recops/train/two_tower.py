# SPDX-License-Identifier: Apache-2.0
"""Training and evaluation of the multi-feedback two-tower retrievers (GNOLR and the per-level BCE baseline)."""

import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.multibehavior import FeedbackData, check_split
from ..metrics import grouped_auc, roc_auc
from ..models.two_tower import TWO_TOWER_MODELS, TwoTowerConfig
from . import checkpoint
from .loop import EpochStats, check_settings, run_epochs


def _per_user(data: FeedbackData, values: torch.Tensor):
    """(offsets [U + 1], values sorted by user) of a per-pair tensor."""
    order = torch.argsort(data.users, stable=True)
    counts = torch.bincount(data.users, minlength=data.num_users)
    offsets = torch.zeros(data.num_users + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(counts, 0)
    return offsets, values[order]


def _recall_hr(level: int, ids: np.ndarray, test_users: torch.Tensor, test: FeedbackData,
               ks: Sequence[int]) -> Dict[str, float]:
    """Recall@K, HR@K and NDCG@K at one level: row r of ids is the ranking for test_users[r]; relevant = the user's
    test items at level >= `level`; users without any are skipped. NDCG: binary gains, 1 / log2(rank + 2), ideal =
    min(|relevant|, K) hits on top."""
    rel = test.subset(test.levels >= level)
    rel_off, rel_items = _per_user(rel, rel.items)
    recall: Dict[int, List[float]] = {k: [] for k in ks}
    hr: Dict[int, List[float]] = {k: [] for k in ks}
    ndcg: Dict[int, List[float]] = {k: [] for k in ks}
    disc = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    for row, u in enumerate(test_users.tolist()):
        r = set(rel_items[rel_off[u]:rel_off[u + 1]].tolist())
        if not r:
            continue
        hit_row = np.array([x in r for x in ids[row, :max(ks)].tolist()], dtype=np.float64)
        for k in ks:
            hits = int(hit_row[:k].sum())
            recall[k].append(hits / len(r))
            hr[k].append(float(hits > 0))
            ndcg[k].append(float((hit_row[:k] * disc[:k]).sum() / disc[:min(len(r), k)].sum()))
    out = {}
    for k in ks:
        out[f"L{level}/Recall@{k}"] = float(np.mean(recall[k])) if recall[k] else float("nan")
        out[f"L{level}/HR@{k}"] = float(np.mean(hr[k])) if hr[k] else float("nan")
        out[f"L{level}/NDCG@{k}"] = float(np.mean(ndcg[k])) if ndcg[k] else float("nan")
    return out


def pair_rates(train: FeedbackData, negatives_per_positive: int) -> List[float]:
    """P(level >= t) among the training pairs the loss sees (each positive comes with that many negatives)."""
    scale = 1.0 / (1 + negatives_per_positive)
    return [min(max(r * scale, 1e-4), 1 - 1e-4) for r in train.level_rates()]


def make_pairs(users: torch.Tensor, items: torch.Tensor, levels: torch.Tensor, num_items: int, in_batch: int,
               uniform: int, generator: torch.Generator):
    """Training pairs for one batch of positives: (user rows [P], item ids [P], levels [P]) where the positives come
    first, then `in_batch` negatives per positive taken from the other positives' items (rolled batch), then
    `uniform` negatives per positive drawn uniformly from all items (level 0). User rows index `users`."""
    b = users.shape[0]
    rows = [torch.arange(b)]
    its = [items]
    lv = [levels]
    for r in range(1, min(in_batch, b - 1) + 1):
        rows.append(torch.arange(b))
        its.append(torch.roll(items, r))
        lv.append(torch.zeros_like(levels))
    if uniform:
        rows.append(torch.arange(b).repeat_interleave(uniform))
        its.append(torch.randint(0, num_items, (b * uniform,), generator=generator))
        lv.append(torch.zeros(b * uniform, dtype=levels.dtype))
    return torch.cat(rows), torch.cat(its), torch.cat(lv)


def train_step(model, optimizer, users, items, levels, num_items, in_batch, uniform, generator) -> float:
    rows, pair_items, pair_levels = make_pairs(users, items, levels, num_items, in_batch, uniform, generator)
    uniq, inverse = torch.unique(pair_items, return_inverse=True)  # each item through the tower once
    optimizer.zero_grad(set_to_none=True)
    u = model.user_tower(users)
    v = model.item_tower(uniq)
    # index_select, not u[rows]: the backward of advanced indexing (index_put_ with accumulate) sums repeated rows
    # in a run-to-run varying order on CPU, so a seeded fit gave different models; index_select's does not.
    loss = model.pair_loss(torch.index_select(u, 0, rows), torch.index_select(v, 0, inverse), pair_levels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate_two_tower(model, train: FeedbackData, test: FeedbackData, ks: Sequence[int] = (50,),
                       auc_negatives: int = 50, index: str = "exact", seed: int = 0,
                       nprobe: Optional[int] = None, exclude_level: int = 1) -> Dict[str, float]:
    """Per level t: Recall@K and HR@K of full-corpus retrieval (the user's training items excluded; relevant = the
    user's held-out items at level >= t; users with none are skipped), and AUC / GAUC of the level-t scores over
    each test user's held-out pairs plus `auc_negatives` random items the user never interacted with (level 0).
    index: "exact" (recops ExactIndex) or "ivf" (IVFIndex, int8, nprobe = half the k-means lists unless given).
    exclude_level: only training pairs at level >= this are excluded from the rankings (1: all; the MBCGCN
    protocol excludes the target behaviour's training pairs only, since a bought item was often viewed first)."""
    from ..retrieval import ExactIndex, IVFIndex

    was_training = model.training
    model.eval()
    out: Dict[str, float] = {}
    test_users = torch.unique(test.users)
    seen = train.subset(train.levels >= exclude_level)
    train_off, train_items = _per_user(seen, seen.items)
    exclude = [train_items[train_off[u]:train_off[u + 1]].numpy() for u in test_users.tolist()]
    all_items = torch.arange(model.config.num_items)
    kmax = max(ks)
    indices = {}
    for t in range(1, model.config.num_levels + 1):
        key = 0 if model.shared_index else t
        if key not in indices:
            vecs = model.item_vectors(all_items, t).numpy()
            if index == "ivf":
                idx = IVFIndex(vecs.shape[1], "ip", storage="int8")
                idx.add(vecs)
                params = {"nprobe": nprobe or max(1, idx.num_centroids // 2)}
            else:
                idx = ExactIndex(vecs.shape[1], "ip")
                idx.add(vecs)
                params = {}
            indices[key] = (idx, params)
        idx, params = indices[key]
        q = model.user_vectors(test_users, t).numpy()
        _, ids = idx.search(q, kmax, exclude=exclude, **params)
        out.update(_recall_hr(t, np.asarray(ids), test_users, test, ks))
    # AUC / GAUC over held-out pairs plus random never-seen items
    g = torch.Generator().manual_seed(seed)
    neg_users = test_users.repeat_interleave(auc_negatives)
    neg_items = torch.randint(0, model.config.num_items, (neg_users.shape[0],), generator=g)
    seen = set((train.users * model.config.num_items + train.items).tolist()) | set(
        (test.users * model.config.num_items + test.items).tolist())
    keep = torch.tensor([k not in seen for k in (neg_users * model.config.num_items + neg_items).tolist()],
                        dtype=torch.bool)
    users = torch.cat([test.users, neg_users[keep]])
    items = torch.cat([test.items, neg_items[keep]])
    levels = torch.cat([test.levels, torch.zeros(int(keep.sum()), dtype=torch.int64)])
    scores = torch.cat([model.level_scores(model.user_tower(users[s:s + 65536]), model.item_tower(items[s:s + 65536]))
                        for s in range(0, users.shape[0], 65536)])
    for t in range(1, model.config.num_levels + 1):
        y = levels >= t
        out[f"L{t}/AUC"] = roc_auc(scores[:, t - 1], y)
        out[f"L{t}/GAUC"] = grouped_auc(scores[:, t - 1], y, users)
    model.train(was_training)
    return out


def popularity_two_tower_metrics(train: FeedbackData, test: FeedbackData, ks: Sequence[int] = (50,),
                                 exclude_level: int = 1) -> Dict[str, float]:
    """Recall@K / HR@K / NDCG@K per level of the popularity baseline: items ranked by their number of training pairs
    at level >= t, the user's training items at level >= exclude_level excluded (evaluate_two_tower's protocol)."""
    from ..metrics import topk_with_exclusion

    out: Dict[str, float] = {}
    test_users = torch.unique(test.users)
    seen = train.subset(train.levels >= exclude_level)
    train_off, train_items = _per_user(seen, seen.items)
    lengths = train_off[test_users + 1] - train_off[test_users]
    ex_off = torch.zeros(test_users.shape[0] + 1, dtype=torch.int64)
    ex_off[1:] = torch.cumsum(lengths, 0)
    ex = torch.cat([train_items[train_off[u]:train_off[u + 1]] for u in test_users.tolist()]) if len(test_users) \
        else torch.zeros(0, dtype=torch.int64)
    for t in range(1, train.num_levels + 1):
        counts = torch.bincount(train.items[train.levels >= t], minlength=train.num_items).float()
        counts += torch.bincount(train.items, minlength=train.num_items).float() * 1e-6  # ties: overall popularity
        _, ids = topk_with_exclusion(torch.ones(test_users.shape[0], 1), (counts / counts.max()).unsqueeze(1),
                                     max(ks), ex, ex_off)
        out.update(_recall_hr(t, ids.numpy(), test_users, test, ks))
    return out


@dataclasses.dataclass
class TwoTowerFitResult:
    test: Dict[str, float]
    history: list
    seconds: float
    pairs_per_second: float


def fit_two_tower(model, train: FeedbackData, test: FeedbackData, epochs: int = 10, batch_size: int = 1024,
                  in_batch_negatives: int = 4, uniform_negatives: int = 4, dense_lr: float = 3e-3, seed: int = 0,
                  ks: Sequence[int] = (50,), time_budget_s: Optional[float] = None, progress: bool = True,
                  log: Callable[[str], None] = print, eval_every: int = 0,
                  exclude_level: int = 1) -> TwoTowerFitResult:
    """Adam on the tower MLPs and heads, the fused optimizer on the id embeddings; evaluation at the end (and
    every eval_every epochs when > 0). ValueError before any step on a setting no run can train with
    (loop.check_settings) or a test set without pairs."""
    check_settings("fit_two_tower", epochs=epochs, batch_size=batch_size, in_batch_negatives=in_batch_negatives,
                   uniform_negatives=uniform_negatives, dense_lr=dense_lr, time_budget_s=time_budget_s,
                   eval_every=eval_every)
    check_split(train, test, "fit_two_tower")
    opt = torch.optim.Adam(model.dense_parameters(), lr=dense_lr)
    g = torch.Generator().manual_seed(seed)

    def step(sel: torch.Tensor):
        loss = train_step(model, opt, train.users[sel], train.items[sel], train.levels[sel], model.config.num_items,
                          in_batch_negatives, uniform_negatives, g)
        return loss, sel.shape[0]

    return _pair_epochs(model, train, test, step, g, epochs, batch_size, ks, time_budget_s, progress, log, eval_every,
                        exclude_level)


def _pair_epochs(model, train: FeedbackData, test: FeedbackData, step, g: torch.Generator, epochs: int,
                 batch_size: int, ks: Sequence[int], time_budget_s: Optional[float], progress: bool,
                 log: Callable[[str], None], eval_every: int, exclude_level: int = 1) -> TwoTowerFitResult:
    """The epoch loop of the two-tower trainers: shuffled batches of training pairs through `step`, the two-tower
    evaluation every eval_every epochs (when > 0) and at the end."""

    def batches(epoch: int):
        order = torch.randperm(len(train), generator=g)
        return (order[b:b + batch_size] for b in range(0, len(train), batch_size))

    def end_epoch(stats: EpochStats) -> dict:
        entry = {"epoch": stats.epoch, "train_loss": stats.mean_loss}
        if eval_every and stats.epoch % eval_every == 0:
            entry.update(evaluate_two_tower(model, train, test, ks, exclude_level=exclude_level))
            model.train()
        return entry

    res = run_epochs(step, batches, epochs, end_epoch=end_epoch,
                     report=lambda entry, improved: f"epoch {entry['epoch']}: train loss {entry['train_loss']:.4f}",
                     time_budget_s=time_budget_s, progress=progress, unit="pair", total=lambda epoch: len(train),
                     log=log)
    result = evaluate_two_tower(model, train, test, ks, exclude_level=exclude_level)
    return TwoTowerFitResult(result, res.history, time.perf_counter() - res.started, res.samples_per_second)


def fit_graph_cf(model, train: FeedbackData, test: FeedbackData, epochs: int = 20, batch_size: int = 8192,
                 lr: float = 1e-3, reg: float = 1e-4, seed: int = 0, ks: Sequence[int] = (50,),
                 time_budget_s: Optional[float] = None, progress: bool = True, log: Callable[[str], None] = print,
                 eval_every: int = 0, exclude_level: int = 1) -> TwoTowerFitResult:
    """LightGCN or NGCF with BPR: every step propagates the whole graph (recops.nn.graph.propagate), scores a batch of
    training pairs against one uniform negative each, Adam(lr) on the embeddings; the two-tower evaluation at
    the end. The graph is set from `train` here."""
    check_settings("fit_graph_cf", epochs=epochs, batch_size=batch_size, dense_lr=lr, time_budget_s=time_budget_s,
                   eval_every=eval_every)
    check_split(train, test, "fit_graph_cf")
    model.set_graph(train)
    model.train()
    opt = torch.optim.Adam(model.dense_parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)

    def step(sel: torch.Tensor):
        neg = torch.randint(0, model.config.num_items, (sel.shape[0],), generator=g)
        opt.zero_grad(set_to_none=True)
        loss = model.bpr_loss(train.users[sel], train.items[sel], neg, reg)
        loss.backward()
        opt.step()
        return float(loss.detach()), sel.shape[0]

    return _pair_epochs(model, train, test, step, g, epochs, batch_size, ks, time_budget_s, progress, log, eval_every,
                        exclude_level)


def fit_cml(model, train: FeedbackData, test: FeedbackData, epochs: int = 20, batch_size: int = 4096,
            lr: float = 1e-2, negatives: int = 10, cov_weight: float = 1.0, seed: int = 0, ks: Sequence[int] = (50,),
            time_budget_s: Optional[float] = None, progress: bool = True, log: Callable[[str], None] = print,
            eval_every: int = 0, exclude_level: int = 1) -> TwoTowerFitResult:
    """CML: every training pair against `negatives` uniform items, WARP-weighted hinge + covariance
    regulariser, Adam(lr), points clipped to the unit ball after each step; the two-tower evaluation at the end."""
    check_settings("fit_cml", epochs=epochs, batch_size=batch_size, dense_lr=lr, time_budget_s=time_budget_s,
                   eval_every=eval_every, num_negatives=negatives)
    check_split(train, test, "fit_cml")
    opt = torch.optim.Adam(model.dense_parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)

    def step(sel: torch.Tensor):
        neg = torch.randint(0, model.config.num_items, (sel.shape[0], negatives), generator=g)
        opt.zero_grad(set_to_none=True)
        loss = model.loss(train.users[sel], train.items[sel], neg, cov_weight)
        loss.backward()
        opt.step()
        model.clip()
        return float(loss.detach()), sel.shape[0]

    return _pair_epochs(model, train, test, step, g, epochs, batch_size, ks, time_budget_s, progress, log, eval_every,
                        exclude_level)


fit_lightgcn = fit_graph_cf  # the name of the first graph model


def build_two_tower(kind: str, train: FeedbackData, in_batch_negatives: int = 4, uniform_negatives: int = 4,
                    **config) -> torch.nn.Module:
    """A GNOLR ('gnolr') or BCE ('bce') two-tower sized for `train`, thresholds/biases from its level rates, or
    LightGCN ('lightgcn', its graph set from `train`)."""
    if kind not in TWO_TOWER_MODELS:
        raise ValueError(f"build_two_tower: kind must be one of {sorted(TWO_TOWER_MODELS)}, got {kind!r}")
    if kind == "cml":
        return TWO_TOWER_MODELS[kind](TwoTowerConfig(train.num_users, train.num_items, train.num_levels, **config))
    if kind in ("lightgcn", "ngcf"):
        cfg = TwoTowerConfig(train.num_users, train.num_items, train.num_levels, **config)
        model = TWO_TOWER_MODELS[kind](cfg)
        model.set_graph(train)
        return model
    rates = pair_rates(train, in_batch_negatives + uniform_negatives)
    cfg = TwoTowerConfig(train.num_users, train.num_items, train.num_levels, positive_rates=rates, **config)
    return TWO_TOWER_MODELS[kind](cfg)


def save_two_tower_checkpoint(path: str, model, kind: str, metrics: dict) -> None:
    """model.pt (state_dict incl. fused-optimizer state) + config.json + metrics.json."""
    checkpoint.save(path, model, "two_tower", kind, model.config, metrics=metrics)


def load_two_tower_checkpoint(path: str):
    """(model, config.json as a dict: family, model kind, config) of a two-tower checkpoint."""
    ck = checkpoint.load(path, family="two_tower")
    return ck.model, ck.spec
