# SPDX-License-Identifier: Apache-2.0
"""Training past one process on torch.distributed (gloo on CPU, NCCL on GPU; launch with torchrun).

- ShardedEmbeddingBagCollection: embedding tables split across ranks by rows or whole tables; ids and pooled
  rows move by all_to_all_single; the fused optimizer runs where the rows live.
- wrap(model): shard every EmbeddingBagCollection in a model, DistributedDataParallel for the rest.
- save(module, path) / load(module, path): one file per rank plus a JSON manifest; load re-shards onto any
  world size.
"""

from .checkpoint import load, save
from .parallel import wrap
from .sharded_embedding import ShardedEmbeddingBagCollection

__all__ = ["ShardedEmbeddingBagCollection", "load", "save", "wrap"]
