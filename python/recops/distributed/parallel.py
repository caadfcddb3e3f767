# SPDX-License-Identifier: Apache-2.0
"""wrap(model): model-parallel embedding tables, data-parallel everything else."""

import itertools

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..nn.embedding import EmbeddingBagCollection
from ._comm import _wire, global_rank
from .checkpoint import embedding_modules
from .sharded_embedding import ShardedEmbeddingBagCollection


@torch.no_grad()
def _broadcast_state(ebc: EmbeddingBagCollection, group) -> None:
    state = ebc.state_dict()
    for t in state.values():
        dist.broadcast(_wire(t), src=global_rank(group, 0), group=group)
    if ebc.optimizer is not None:  # the step counter is a number; its state_dict entry is a copy
        ebc.step = state["step"]


def wrap(model: nn.Module, process_group=None, sharding: str = "row", grad_reduction: str = "mean",
         **ddp_kwargs) -> nn.Module:
    """Shard every EmbeddingBagCollection in `model` and wrap the rest in DistributedDataParallel (collective).

    Each EmbeddingBagCollection is replaced in place by a ShardedEmbeddingBagCollection (same tables,
    optimizer and attribute name) holding this rank's rows of rank 0's weights and optimizer state (rank 0's
    whole tables are broadcast first, as DDP does for dense parameters; build a ShardedEmbeddingBagCollection
    directly when a table does not fit one process). The sharded modules' parameters and buffers are excluded
    from DDP, which then averages the dense gradients; grad_reduction="mean" divides the embedding gradients by
    the world size to match, so training on W ranks with per-rank mean losses equals one process on the
    concatenated batch when every rank has the same batch size.

    Args:
        model: an nn.Module (not yet wrapped); modified in place.
        process_group: torch.distributed group of the tables and of DDP (default: the world).
        sharding: "row" or "table" (see ShardedEmbeddingBagCollection).
        grad_reduction: "mean" (default) or "sum" for the embedding gradients.
        ddp_kwargs: passed to DistributedDataParallel (e.g. device_ids for CUDA).

    Returns:
        DistributedDataParallel(model), or `model` itself when nothing outside the tables has a trainable
        parameter (e.g. the model is an EmbeddingBagCollection, which comes back sharded).
    """
    if isinstance(model, DistributedDataParallel):
        raise TypeError("wrap: model must not already be a DistributedDataParallel")
    if not isinstance(model, nn.Module):
        raise TypeError(f"wrap: model must be an nn.Module, got {type(model)}")
    if isinstance(model, EmbeddingBagCollection):
        return _shard(model, process_group, sharding, grad_reduction)
    for name, m in list(embedding_modules(model).items()):
        if isinstance(m, EmbeddingBagCollection):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _shard(m, process_group, sharding, grad_reduction))
    ignore = [f"{name}.{n}" for name, m in embedding_modules(model).items()
              for n, _ in itertools.chain(m.named_parameters(), m.named_buffers())]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    if not any(p.requires_grad for n, p in model.named_parameters() if n not in ignore):
        return model
    return DistributedDataParallel(model, process_group=process_group, **ddp_kwargs)


def _shard(ebc: EmbeddingBagCollection, group, sharding: str, grad_reduction: str) -> ShardedEmbeddingBagCollection:
    _broadcast_state(ebc, group)
    device = next(itertools.chain(ebc.parameters(), ebc.buffers()), torch.empty(0)).device
    sharded = ShardedEmbeddingBagCollection(ebc.tables, optimizer=ebc.optimizer, process_group=group,
                                            sharding=sharding, device=device, grad_reduction=grad_reduction)
    return sharded.copy_from(ebc).train(ebc.training)
