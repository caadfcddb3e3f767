# SPDX-License-Identifier: Apache-2.0
"""Training and full-ranking evaluation of the sequential models (HSTU paper protocol)."""

import copy
import dataclasses
import json
import os
import time
from typing import Callable, Dict, Optional

import numpy as np
import torch

from ..data.sequences import (SequenceData, SplitData, next_item_batches, sequence_batch, uniform_negatives)
from ..metrics import ranking_metrics, ranks_of, topk_with_exclusion
from .sequential import SeqConfig, build_model, sampled_softmax_loss

KS = (10, 50, 200)


@torch.no_grad()
def evaluate(model, inputs: SequenceData, targets: torch.Tensor, batch_size: int = 256,
             ks=KS) -> Dict[str, float]:
    """Full-corpus ranking of each user's target from the last position of its input sequence, with the
    user's input history excluded; HR/NDCG@ks and MRR (within the top max(ks))."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    items = model.item_vectors()
    ranks = []
    for b in range(0, inputs.num_users, batch_size):
        users = torch.arange(b, min(b + batch_size, inputs.num_users))
        batch = sequence_batch(inputs, users, drop_last_item=False)
        off = batch["offsets"].to(device)
        ts = batch["timestamps"].to(device) if "timestamps" in batch else None
        out = model(batch["items"].to(device), off, ts)
        last = out[off[1:] - 1]
        _, ids = topk_with_exclusion(last, items, max(ks), batch["items"].to(device), off)
        ranks.append(ranks_of(targets[users].to(device), ids).cpu())
    model.train(was_training)
    return ranking_metrics(torch.cat(ranks) if ranks else torch.zeros(0), ks)


def popularity_metrics(split: SplitData, ks=KS) -> Dict[str, float]:
    """The popularity baseline under the same protocol (training counts, history excluded)."""
    counts = torch.bincount(split.train.items, minlength=split.data.num_items).float()
    vec = (counts / counts.max()).unsqueeze(1)
    q = torch.ones(split.test_input.num_users, 1)
    _, ids = topk_with_exclusion(q, vec, max(ks), split.test_input.items, split.test_input.offsets)
    return ranking_metrics(ranks_of(split.test_target, ids), ks)


@dataclasses.dataclass
class FitResult:
    best_epoch: int
    valid: Dict[str, float]
    test: Dict[str, float]
    history: list
    seconds: float
    sequences_per_second: float


def fit(model, split: SplitData, cfg: SeqConfig, epochs: int = 20, time_budget_s: Optional[float] = None,
        patience: int = 5, seed: int = 0, progress: bool = True, log: Callable[[str], None] = print,
        optimizer: Optional[torch.optim.Optimizer] = None, rank: int = 0, world: int = 1,
        wrapped=None) -> FitResult:
    """Next-item training with sampled softmax; validation each epoch; test metrics at the best validation
    NDCG@10 (early stopping after `patience` epochs without improvement or when the time budget runs out).
    The model is left with its best weights.

    Distributed (world > 1, `wrapped` = DistributedDataParallel(model)): rank r trains on batch r of every group
    of `world` batches (batch_size per process, same shuffle on every rank), every rank validates on the whole
    set with identical weights (so early stopping agrees without messages), the time budget is agreed on."""
    from tqdm.auto import tqdm

    from ..distributed.launch import agree, rank_share

    net = wrapped if wrapped is not None else model
    progress = progress and rank == 0
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                         weight_decay=cfg.weight_decay)
    start = time.perf_counter()
    best = None
    history = []
    seqs_done, train_time = 0, 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        n_batches = (int((split.train.lengths() >= 2).sum()) + cfg.batch_size - 1) // cfg.batch_size // world
        bar = tqdm(rank_share(next_item_batches(split.train, cfg.batch_size, generator=gen), rank, world),
                   total=n_batches,
                   desc=f"{cfg.model} epoch {epoch}", disable=not progress, leave=False)
        losses = []
        for batch in bar:
            off = batch["offsets"].to(device)
            ts = batch["timestamps"].to(device) if "timestamps" in batch else None
            out = net(batch["items"].to(device), off, ts)
            negs = uniform_negatives(cfg.num_negatives, model.num_items, gen).to(device)
            loss = sampled_softmax_loss(out, batch["targets"].to(device), model.item_vectors(), negs,
                                        cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            seqs_done += (off.numel() - 1) * world
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{losses[-1]:.3f}", seq_s=f"{seqs_done / max(train_time + elapsed, 1e-9):.0f}")
        train_time += time.perf_counter() - t0
        valid = evaluate(model, split.valid_input, split.valid_target)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), **{
            f"valid_{k}": v for k, v in valid.items()}})
        improved = best is None or valid["NDCG@10"] > best[1]["NDCG@10"]
        if improved:
            best = (epoch, valid, copy.deepcopy(model.state_dict()))
        log(f"{cfg.model} epoch {epoch}: loss {history[-1]['loss']:.4f} valid HR@10 {valid['HR@10']:.4f} "
            f"NDCG@10 {valid['NDCG@10']:.4f}{' *' if improved else ''}")
        if epoch - best[0] >= patience:
            break
        if time_budget_s is not None and agree(time.perf_counter() - start > time_budget_s, world):
            log(f"{cfg.model}: time budget reached after epoch {epoch}")
            break
    model.load_state_dict(best[2])
    test = evaluate(model, split.test_input, split.test_target)
    return FitResult(best[0], best[1], test, history, time.perf_counter() - start,
                     seqs_done / max(train_time, 1e-9))


def save_checkpoint(path: str, model, optimizer, cfg: SeqConfig, data: SequenceData,
                    metrics: Optional[dict] = None) -> None:
    """model.pt + optimizer.pt (state dicts), config.json, id_maps.npz (raw ids of dense ids)."""
    os.makedirs(path, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(path, "model.pt"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"config": dataclasses.asdict(cfg), "num_items": data.num_items}, f, indent=2)
    np.savez(os.path.join(path, "id_maps.npz"), item_ids=data.item_ids.astype(str), user_ids=data.user_ids.astype(str))
    if metrics is not None:
        with open(os.path.join(path, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)


def load_checkpoint(path: str, device="cpu"):
    """(model, cfg, item_ids, user_ids, optimizer_state or None) from save_checkpoint's folder; tensors only
    (weights_only=True), no pickled code."""
    with open(os.path.join(path, "config.json")) as f:
        meta = json.load(f)
    raw = meta["config"]
    raw["betas"] = tuple(raw["betas"])
    cfg = SeqConfig(**raw)
    model = build_model(int(meta["num_items"]), cfg).to(device)
    model.load_state_dict(torch.load(os.path.join(path, "model.pt"), map_location=device, weights_only=True))
    maps = np.load(os.path.join(path, "id_maps.npz"))
    opt_path = os.path.join(path, "optimizer.pt")
    opt_state = torch.load(opt_path, map_location=device, weights_only=True) if os.path.exists(opt_path) else None
    return model, cfg, maps["item_ids"], maps["user_ids"], opt_state
