# SPDX-License-Identifier: Apache-2.0
"""Sharded checkpoints: one file per rank plus a JSON manifest; loading re-shards onto any world size."""

import json
import os
from typing import Dict, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ..nn.dynamic import repack_states
from ..nn.embedding import EmbeddingBagCollection
from .sharded_embedding import ShardedEmbeddingBagCollection

MANIFEST = "manifest.json"
FORMAT = "recops.distributed.checkpoint/1"


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the module itself otherwise)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def embedding_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """Qualified name -> every ShardedEmbeddingBagCollection and (unsharded) EmbeddingBagCollection in `model`,
    not counting the local collection inside a sharded one."""
    found: Dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if _under(name, [p for p, s in found.items() if isinstance(s, ShardedEmbeddingBagCollection)]):
            continue
        if isinstance(m, (ShardedEmbeddingBagCollection, EmbeddingBagCollection)):
            found[name] = m
    return found


def _under(key: str, prefixes) -> bool:
    return any(p == "" or key.startswith(p + ".") for p in prefixes)


def _group_of(mods) -> Tuple[object, int, int]:
    sharded = [m for m in mods.values() if isinstance(m, ShardedEmbeddingBagCollection)]
    if sharded:
        return sharded[0].group, sharded[0].rank, sharded[0].world_size
    if dist.is_available() and dist.is_initialized():
        return None, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def _holding(m: nn.Module, name: str, rank: int, world: int):
    """(shards [[rank, start, end], ...] of table `name` over the whole group, this rank's views or None)."""
    if isinstance(m, ShardedEmbeddingBagCollection):
        b = m.bounds[name]
        shards = [[r, b[r], b[r + 1]] for r in range(world) if b[r + 1] > b[r]]
        return shards, m.table_views(name)
    rows = next(t.num_embeddings for t in m.tables if t.name == name)
    return [[0, 0, rows]], m.table_views(name) if rank == 0 else None  # a replicated module: rank 0 saves it


def _rank_file(rank: int) -> str:
    return f"rank{rank:05d}.pt"


def _barrier(group, world: int) -> None:
    if world > 1 or (dist.is_available() and dist.is_initialized()):
        dist.barrier(group=group)


def save(module: nn.Module, path: str) -> None:
    """Write a sharded checkpoint of `module` into the folder `path` (collective: every rank calls it).

    Each rank writes `rank<r>.pt` with its rows of every table of every (Sharded)EmbeddingBagCollection in the
    model (weights and fused-optimizer state); rank 0's file also holds the rest of the model's state_dict (the
    dense, replicated part). Rank 0 then writes `manifest.json`: world size, and per embedding module its
    optimizer, step and, per table, sizes, dtype and which rank holds which rows. A DistributedDataParallel
    wrapper is looked through. Works without torch.distributed for a plain model (one file)."""
    model = unwrap(module)
    mods = embedding_modules(model)
    group, rank, world = _group_of(mods)
    os.makedirs(path, exist_ok=True)
    data: Dict[str, Dict] = {}
    manifest = {"format": FORMAT, "world_size": world, "modules": {}}
    for name, m in mods.items():
        kind = m.optimizer.kind if m.optimizer is not None else None
        step = int(m.step) if m.optimizer is not None else 0
        entry = {"optimizer": kind, "step": step, "tables": {}}
        mine = {}
        for t in m.tables:
            shards, views = _holding(m, t.name, rank, world)
            entry["tables"][t.name] = {"num_embeddings": t.num_embeddings, "embedding_dim": t.embedding_dim,
                                       "dtype": str(t.dtype).replace("torch.", ""), "shards": shards}
            if t.dynamic is not None:  # live ids and their state; loading routes them to their new owners
                entry["tables"][t.name]["dynamic"] = True
                local = m.local if isinstance(m, ShardedEmbeddingBagCollection) else m
                if views is not None:
                    mine[t.name] = {"dynamic": local.dynamic_state(t.name)}
                continue
            if views is not None:
                mine[t.name] = {k: v.detach().cpu().clone() for k, v in views.items()}  # clone: not the flat buffer
        manifest["modules"][name] = entry
        data[name] = mine
    dense = {}
    if rank == 0:
        dense = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not _under(k, mods)}
    torch.save({"format": FORMAT, "rank": rank, "tables": data, "dense": dense}, os.path.join(path, _rank_file(rank)))
    _barrier(group, world)
    if rank == 0:
        tmp = os.path.join(path, MANIFEST + ".tmp")
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
        os.replace(tmp, os.path.join(path, MANIFEST))
    _barrier(group, world)


def _check_tables(name: str, m: nn.Module, entry: Dict) -> None:
    saved = sorted((k, v["num_embeddings"], v["embedding_dim"]) for k, v in entry["tables"].items())
    mine = sorted((t.name, t.num_embeddings, t.embedding_dim) for t in m.tables)
    if saved != mine:
        raise ValueError(f"load: module {name!r} has tables {mine}, the checkpoint has {saved}")


def _state_loadable(name: str, m: nn.Module, entry: Dict) -> bool:
    mine = m.optimizer.kind if m.optimizer is not None else None
    saved = entry["optimizer"]
    if mine is not None and saved is not None and mine != saved:
        raise ValueError(f"load: module {name!r} uses optimizer {mine!r}, the checkpoint holds {saved!r} state")
    return mine is not None and mine == saved


def _load_dynamic(m, name, t, entry, saved_world: int, shard_file, with_state: bool) -> None:
    """Dynamic table t: every holder's saved ids, re-cut for this rank (rows renumbered; optimizer state only when
    the checkpoint used the same fused optimizer)."""
    states = []
    for r in range(saved_world):  # the holders: every rank of a row-sharded table, else one
        part = shard_file(r)["tables"].get(name, {}).get(t.name)
        if part is not None and "dynamic" in part:
            states.append(part["dynamic"])
    sharded = isinstance(m, ShardedEmbeddingBagCollection)
    if sharded and m.table_views(t.name) is None:
        return
    target = m.local if sharded else m
    d = m._repack(t.name, states) if sharded else repack_states(states, t.dynamic.capacity, t.dynamic.max_capacity)
    if not with_state:
        for k in ("state0", "state1"):
            if k in d:
                d[k] = torch.zeros_like(d[k])
    target.load_dynamic_state(t.name, d)


def load(module: nn.Module, path: str) -> None:
    """Load a checkpoint written by `save` into `module`, at any world size and either sharding (collective
    only in the sense that every rank reads what it needs; no communication).

    Each rank copies the rows it holds (weights, and optimizer state and step when the checkpoint used the same
    fused optimizer) from the files whose shards overlap them; a plain EmbeddingBagCollection reads whole
    tables. The dense state is loaded from rank 0's file with load_state_dict. Raises ValueError when the
    folder has no manifest or the model's tables or optimizer differ from the checkpoint's."""
    model = unwrap(module)
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isfile(mpath):
        raise ValueError(f"load: path must be a folder written by recops.distributed.save, no {mpath}")
    with open(mpath) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"load: unknown checkpoint format {manifest.get('format')!r} in {mpath}")
    mods = embedding_modules(model)
    files: Dict[int, Dict] = {}

    def shard_file(r: int) -> Dict:
        if r not in files:
            files[r] = torch.load(os.path.join(path, _rank_file(r)), map_location="cpu", mmap=True,
                                  weights_only=True)
        return files[r]

    for name, m in mods.items():
        if name not in manifest["modules"]:
            raise ValueError(f"load: the checkpoint has no embedding module {name!r}, only "
                             f"{sorted(manifest['modules'])}")
        entry = manifest["modules"][name]
        _check_tables(name, m, entry)
        with_state = _state_loadable(name, m, entry)
        with torch.no_grad():
            for t in m.tables:
                if t.dynamic is not None:
                    _load_dynamic(m, name, t, entry, manifest["world_size"], shard_file, with_state)
                    continue
                if isinstance(m, ShardedEmbeddingBagCollection):
                    lo, hi = m.shard_rows(t.name)
                    dst = m.table_views(t.name)
                else:
                    lo, hi, dst = 0, t.num_embeddings, m.table_views(t.name)
                if dst is None or hi <= lo:
                    continue
                for r, a, b in entry["tables"][t.name]["shards"]:
                    x, y = max(lo, a), min(hi, b)
                    if x >= y:
                        continue
                    src = shard_file(r)["tables"][name][t.name]
                    for k, d in dst.items():
                        if k == "weight" or with_state:
                            d[x - lo:y - lo].copy_(src[k][x - a:y - a])
            if with_state:
                m.step = entry["step"]
    dense = shard_file(0)["dense"]
    result = model.load_state_dict(dense, strict=False)
    missing = [k for k in result.missing_keys if not _under(k, mods)]
    if missing or result.unexpected_keys:
        raise ValueError(f"load: the model's dense state does not match the checkpoint: missing {missing}, "
                         f"unexpected {result.unexpected_keys}")
