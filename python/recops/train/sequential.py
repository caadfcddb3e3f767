# SPDX-License-Identifier: Apache-2.0
"""Training and full-ranking evaluation of the sequential models (HSTU paper protocol)."""

import dataclasses
import time
from typing import Callable, Dict, Optional

import numpy as np
import torch

from ..data.sequences import SequenceData, SplitData, check_split, next_item_batches, sequence_batch
from ..metrics import ranking_metrics, ranks_of, topk_with_exclusion
from ..models.sequential import SeqConfig, autocast, next_item_loss
from . import checkpoint
from .loop import EpochStats, check_settings, run_epochs

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
        last = model.last_outputs(batch["items"].to(device), off, ts)
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
    """Next-item training (cfg.loss: per-position or shared sampled softmax, or full softmax; see
    models.sequential.next_item_loss); validation each epoch; test metrics at the best validation
    NDCG@10 (early stopping after `patience` epochs without improvement or when the time budget runs out).
    The model is left with its best weights.

    Distributed (world > 1, `wrapped` = DistributedDataParallel(model)): rank r trains on batch r of every group
    of `world` batches (batch_size per process, same shuffle on every rank), every rank validates on the whole
    set with identical weights (so early stopping agrees without messages), the time budget is agreed on.
    ValueError before any step on a setting no run can train with (loop.check_settings) or a split without users."""
    from ..distributed.launch import rank_share

    check_settings("fit", epochs=epochs, patience=patience, time_budget_s=time_budget_s, batch_size=cfg.batch_size,
                   num_negatives=cfg.num_negatives, max_len=cfg.max_len, lr=cfg.lr)
    check_split(split, "fit")
    net = wrapped if wrapped is not None else model
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                         weight_decay=cfg.weight_decay)
    num_train = int((split.train.lengths() >= 2).sum())
    item_probs = None
    if cfg.logq:  # popularity of the supervised targets in training
        counts = torch.bincount(split.train.items, minlength=model.num_items).double()
        item_probs = (counts / counts.sum()).float()

    def batches(epoch: int):
        model.train()
        return rank_share(next_item_batches(split.train, cfg.batch_size, generator=gen), rank, world)

    def step(batch):
        with autocast(cfg, device):  # bf16: the forward only; the loss and the item vectors in float32
            out, targets = model.training_outputs(batch, device, gen, forward=net)
        loss = next_item_loss(out.float(), targets, model.item_vectors(), cfg, gen, item_probs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item(), (batch["offsets"].numel() - 1) * world

    started = time.perf_counter()

    def end_epoch(stats: EpochStats) -> dict:
        valid = evaluate(model, split.valid_input, split.valid_target)
        return {"epoch": stats.epoch, "loss": float(np.mean(stats.losses)) if stats.losses else float("nan"),
                **{f"valid_{k}": v for k, v in valid.items()},
                "seconds": round(time.perf_counter() - started, 1)}  # wall clock since the start, validation included

    def report(entry: dict, improved: bool) -> str:
        return (f"{cfg.model} epoch {entry['epoch']}: loss {entry['loss']:.4f} valid HR@10 {entry['valid_HR@10']:.4f} "
                f"NDCG@10 {entry['valid_NDCG@10']:.4f}{' *' if improved else ''}")

    res = run_epochs(step, batches, epochs, end_epoch=end_epoch, report=report, monitor="valid_NDCG@10",
                     patience=patience, model=model, restore_best=True, time_budget_s=time_budget_s,
                     budget_message=lambda epoch: f"{cfg.model}: time budget reached after epoch {epoch}",
                     world=world, progress=progress and rank == 0, desc=f"{cfg.model} epoch", unit="seq",
                     total=lambda epoch: num_train, log=log)
    valid = {k[len("valid_"):]: v for k, v in (res.best_entry or {}).items() if k.startswith("valid_")}
    test = evaluate(model, split.test_input, split.test_target)
    return FitResult(res.best_epoch or 0, valid, test, res.history, time.perf_counter() - res.started,
                     res.samples_per_second)


def save_checkpoint(path: str, model, optimizer, cfg: SeqConfig, data: SequenceData,
                    metrics: Optional[dict] = None) -> None:
    """model.pt + optimizer.pt (state dicts), config.json, id_maps.npz (raw ids of dense ids), metrics.json."""
    checkpoint.save(path, model, "sequential", cfg.model, cfg, metrics=metrics, optimizer=optimizer,
                    extra={"num_items": data.num_items},
                    arrays={"id_maps": {"item_ids": data.item_ids.astype(str), "user_ids": data.user_ids.astype(str)}})


def load_checkpoint(path: str, device="cpu"):
    """(model, cfg, item_ids, user_ids, optimizer_state or None) from save_checkpoint's folder (or one in the
    layout written before the checkpoint format recorded its family); tensors only (weights_only=True), no
    pickled code."""
    ck = checkpoint.load(path, device, family="sequential")
    maps = ck.arrays["id_maps"]
    return ck.model, ck.config, maps["item_ids"], maps["user_ids"], ck.optimizer_state
