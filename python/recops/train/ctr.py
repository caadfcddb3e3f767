# SPDX-License-Identifier: Apache-2.0
"""Training and evaluation of CTR rankers (DLRM and its logistic baseline) on Criteo-format data."""

import dataclasses
import time
from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn.functional as F

from ..data.criteo import CTRBatch, CTRData
from ..metrics import log_loss, roc_auc
from ..models.dlrm import DLRM, LogisticCTR
from . import checkpoint
from .loop import EpochStats, check_settings, run_epochs

CTR_MODELS = {"dlrm": DLRM, "logistic": LogisticCTR}


@torch.no_grad()
def evaluate_ctr(model, batches: Iterable[CTRBatch]) -> Dict[str, float]:
    """AUC, log-loss and the mean predicted CTR vs the observed CTR over the batches."""
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for b in batches:
        probs.append(torch.sigmoid(model(b.dense, b.features())).float())
        labels.append(b.labels)
    model.train(was_training)
    p = torch.cat(probs) if probs else torch.zeros(0)
    y = torch.cat(labels) if labels else torch.zeros(0)
    return {"AUC": roc_auc(p, y), "logloss": log_loss(p, y), "mean_prediction": float(p.mean()) if p.numel() else
            float("nan"), "ctr": float(y.mean()) if y.numel() else float("nan"), "samples": int(y.numel())}


def train_step(model, optimizer: torch.optim.Optimizer, batch: CTRBatch) -> float:
    """One BCE step: the dense optimizer steps the MLPs, the embedding update is fused into backward."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.binary_cross_entropy_with_logits(model(batch.dense, batch.features()), batch.labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@dataclasses.dataclass
class CTRFitResult:
    test: Dict[str, float]
    history: list
    seconds: float
    samples_per_second: float


def fit_ctr(model, data: CTRData, epochs: int = 1, batch_size: int = 2048, dense_lr: float = 1e-3,
            time_budget_s: Optional[float] = None, progress: bool = True,
            log: Callable[[str], None] = print, rank: int = 0, world: int = 1, wrapped=None) -> CTRFitResult:
    """Train for `epochs` passes (or until time_budget_s), evaluating on the test stream after each epoch.
    Dense parameters use torch.optim.Adam(dense_lr); the embeddings use the model's fused optimizer.

    Distributed (world > 1, `wrapped` = recops.distributed.wrap(model)): rank r trains on batch r of every group
    of `world` consecutive batches (batch_size per process), every rank evaluates the whole test stream (the
    sharded tables need every rank in each forward), and the time budget is agreed on collectively.
    ValueError before any step on a setting no run can train with (loop.check_settings)."""
    from ..distributed.launch import rank_share

    check_settings("fit_ctr", epochs=epochs, batch_size=batch_size, dense_lr=dense_lr, time_budget_s=time_budget_s)
    net = wrapped if wrapped is not None else model
    opt = torch.optim.Adam(model.dense_parameters(), lr=dense_lr)

    def step(batch: CTRBatch):
        return train_step(net, opt, batch), len(batch) * world

    def end_epoch(stats: EpochStats) -> dict:
        metrics = evaluate_ctr(net, data.test_batches(8192))
        metrics["train_loss"] = stats.mean_loss
        return {"epoch": stats.epoch, **metrics}

    def report(entry: dict, improved: bool) -> str:
        return (f"epoch {entry['epoch']}: train loss {entry['train_loss']:.4f}, test AUC {entry['AUC']:.4f}, "
                f"logloss {entry['logloss']:.4f}")

    res = run_epochs(step, lambda epoch: rank_share(data.train_batches(batch_size), rank, world), epochs,
                     end_epoch=end_epoch, report=report, time_budget_s=time_budget_s, budget_every_step=True,
                     world=world, progress=progress and rank == 0, unit="sample",
                     total=lambda epoch: data.num_train, log=log)
    return CTRFitResult(res.history[-1] if res.history else {}, res.history, time.perf_counter() - res.started,
                        res.samples_per_second)


def save_ctr_checkpoint(path: str, model, kind: str, metrics: dict) -> None:
    """model.pt (state_dict incl. fused-optimizer state) + config.json + metrics.json."""
    checkpoint.save(path, model, "ctr", kind, model.config, metrics=metrics)


def load_ctr_checkpoint(path: str):
    """(model, config.json as a dict: family, model kind, config) of a CTR checkpoint."""
    ck = checkpoint.load(path, family="ctr")
    return ck.model, ck.spec
