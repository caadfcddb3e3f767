# SPDX-License-Identifier: Apache-2.0
"""ShardedEmbeddingBagCollection: an EmbeddingBagCollection whose tables are split across the ranks of a
torch.distributed process group (TorchRec's model-parallel design on plain all_to_all_single)."""

import copy
import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..data.keyed_jagged import KeyedJagged
from ..nn.dynamic import repack_states
from ..nn.dynamic import route as route_ids
from ..nn.embedding import EmbeddingBagCollection, EmbeddingBagConfig, EmbeddingBagOutput, FusedOptimizer
from ._comm import OP, AllToAll, CommStats, agree_on_errors, all_to_all, broadcast_rows, gather_rows, global_rank

_INIT_CHUNK = 1 << 14  # rows per initialisation block: the init of a row does not depend on the world size


def even_bounds(num_rows: int, world: int) -> List[int]:
    """Row boundaries [W + 1] of contiguous blocks whose sizes differ by at most one (larger blocks first)."""
    base, extra = divmod(num_rows, world)
    bounds = [0]
    for r in range(world):
        bounds.append(bounds[-1] + base + (r < extra))
    return bounds


def table_owners(tables: Sequence[EmbeddingBagConfig], world: int) -> Dict[str, int]:
    """Whole-table placement: largest tables (in bytes) first, each to the least loaded rank (lowest on ties)."""
    load = [0] * world
    owners = {}
    for t in sorted(tables, key=lambda t: -t.num_embeddings * t.embedding_dim * t.dtype.itemsize):
        r = min(range(world), key=lambda i: (load[i], i))
        owners[t.name] = r
        load[r] += t.num_embeddings * t.embedding_dim * t.dtype.itemsize
    return owners


def _regroup(seg: Tensor) -> Tensor:
    """Gather index turning segments laid out source-major ([W, F] sizes) into feature-major order."""
    total = int(seg.sum())
    src_start = (seg.flatten().cumsum(0) - seg.flatten()).view_as(seg)
    seg_t, start_t = seg.t().flatten(), src_start.t().flatten()
    tgt_start = seg_t.cumsum(0) - seg_t
    return torch.arange(total, device=seg.device) + torch.repeat_interleave(start_t - tgt_start, seg_t)


@dataclasses.dataclass
class _Route:
    """One forward's routing on this rank: what it sends (ids grouped by owner, each group led by the bag
    lengths of the features that owner serves) and, after the header exchange, what it receives."""

    batch: int  # B, this rank's samples
    lengths: Tensor  # [F * B] bag lengths (global feature order)
    counts: Tensor  # [W, F * B] ids of each bag held by each rank
    send: Tensor  # int64 payload, rank after rank
    send_sizes: List[int]  # payload elements per destination rank
    per_owner: List[int]  # ids per destination rank
    weights: Optional[Tensor]  # per-id weights in send order
    src_batch: List[int] = dataclasses.field(default_factory=list)  # every rank's B
    recv_sizes: List[int] = dataclasses.field(default_factory=list)  # payload elements from each rank
    weighted: bool = False  # some rank sends per-id weights


class ShardedEmbeddingBagCollection(nn.Module):
    """EmbeddingBagCollection split across the ranks of a process group; every rank calls it on its own batch.

    Row sharding (default) gives rank r a contiguous block of rows of every table (sizes differ by at most one
    row; a table with fewer rows than ranks leaves some ranks an empty block). Table sharding gives every table
    to one rank (largest tables first, to the least loaded rank); a rank may own none.

    forward(features) takes this rank's batch (a KeyedJagged or a dict name -> (indices, offsets[, weights]),
    every feature of every table, ids global row numbers) and returns what EmbeddingBagCollection returns for it:
    an EmbeddingBagOutput name -> [B_local, D] with `.concat()`. Batch sizes may differ between ranks. Steps:
      1. every rank checks its input; one all_to_all of a small header carries an error flag, the batch size
         and the payload sizes, so a bad input raises the same exception on every rank before any id moves;
      2. ids (and per-id weights) go to the ranks holding their rows (all_to_all_single);
      3. each rank runs one recops kernel over the bags of all ranks (its local EmbeddingBagCollection);
      4. pooled rows come back by a second all_to_all. Row sharding returns partial results that are reduced
         on the requesting rank: sum; mean = sum of partial sums / global bag length; max = max over the
         partial maxima of the ranks that had ids of the bag (empty bags give 0).
    Backward sends the output gradient back the same way; each rank then applies the fused optimizer once to
    its rows, with the duplicate rows of all ranks' bags summed first, so the result equals the
    single-process EmbeddingBagCollection trained on the concatenated batch (rank order), up to float
    summation order. Every rank must call forward, and backward through the output, the same number of times
    (like DistributedDataParallel).

    Args:
        tables: EmbeddingBagConfig list of the whole (unsharded) collection.
        optimizer: FusedOptimizer, or None: each rank's shard is then an nn.Parameter receiving the dense
            gradient of its rows (step it with any torch optimizer; keep it out of DistributedDataParallel).
        process_group: torch.distributed group (default: the world).
        sharding: "row" or "table".
        device: where the shards live (cuda for NCCL, cpu for gloo).
        grad_reduction: "sum" applies the sum of the ranks' gradients (the gradient of the sum of their
            losses); "mean" divides it by the world size, matching DistributedDataParallel's averaging of
            dense gradients (wrap() uses "mean").

    The module's state_dict() holds this rank's shard only; recops.distributed.save / load write and re-shard
    checkpoints, unshard() returns the full collection. Initialisation: uniform(+-1/sqrt(V)) per table (as
    EmbeddingBagCollection) from a seed broadcast by rank 0, identical for any world size.
    """

    def __init__(self, tables: Sequence[EmbeddingBagConfig], optimizer: Optional[FusedOptimizer] = None,
                 process_group=None, sharding: str = "row", device=None, grad_reduction: str = "sum"):
        super().__init__()
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(f"{OP}: process_group needs torch.distributed to be initialized "
                             "(torch.distributed.init_process_group, or launch with torchrun)")
        if sharding not in ("row", "table"):
            raise ValueError(f"{OP}: sharding must be 'row' or 'table', got {sharding!r}")
        if grad_reduction not in ("sum", "mean"):
            raise ValueError(f"{OP}: grad_reduction must be 'sum' or 'mean', got {grad_reduction!r}")
        if optimizer is not None and not isinstance(optimizer, FusedOptimizer):
            raise TypeError(f"{OP}: optimizer must be a FusedOptimizer or None, got {type(optimizer)}")
        tables = [copy.deepcopy(t) for t in tables]
        names = [t.name for t in tables]
        feats = [f for t in tables for f in t.feature_names]
        if len(set(names)) != len(names) or len(set(feats)) != len(feats):
            raise ValueError(f"{OP}: table and feature names must be distinct, got {names} and {feats}")
        self.group = process_group
        self.rank, self.world_size = dist.get_rank(process_group), dist.get_world_size(process_group)
        if self.rank < 0:
            raise ValueError(f"{OP}: process_group does not contain this process")
        self.tables, self.optimizer, self.sharding, self.grad_reduction = tables, optimizer, sharding, grad_reduction
        self.comm = CommStats()
        w = self.world_size
        self._owners = table_owners(tables, w) if sharding == "table" else {}
        self.bounds = {t.name: (even_bounds(t.num_embeddings, w) if sharding == "row" else
                                [0] * (self._owners[t.name] + 1) + [t.num_embeddings] * (w - self._owners[t.name]))
                       for t in tables}
        # features served by each rank, in config order (row sharding: all of them)
        self._features = [(f, t) for t in tables for f in t.feature_names]
        self._served = [[i for i, (_, t) in enumerate(self._features)
                         if sharding == "row" or self._owners[t.name] == r] for r in range(w)]
        with torch.random.fork_rng(devices=[]):  # the local module's throw-away init must not move the RNG
            self.local = EmbeddingBagCollection(self._local_tables(), optimizer=copy.copy(optimizer), device=device)
        self._layout = EmbeddingBagCollection.layout(tables)
        self._register_routing(device)
        self._anchor = torch.empty(0, requires_grad=True)
        self.reset_parameters()

    # ---- layout ------------------------------------------------------------------------------------------------

    def _local_tables(self) -> List[EmbeddingBagConfig]:
        if self.sharding == "table":
            return [copy.deepcopy(t) for t in self.tables if self._owners[t.name] == self.rank]
        out = []
        w = self.world_size
        for t in self.tables:
            if t.dynamic is not None:  # ids go to the rank of hash(id) % world; capacity is split evenly
                cap, top = -(-t.dynamic.capacity // w), -(-t.dynamic.max_capacity // w)
                dyn = dataclasses.replace(t.dynamic, capacity=cap, max_capacity=top)
                out.append(dataclasses.replace(t, num_embeddings=cap, feature_names=list(t.feature_names),
                                               pooling="sum" if t.pooling == "mean" else t.pooling, dynamic=dyn))
                continue
            lo, hi = self.bounds[t.name][self.rank], self.bounds[t.name][self.rank + 1]
            # partial mean bags are summed here and divided by the global bag length on the requesting rank
            out.append(dataclasses.replace(t, num_embeddings=hi - lo, feature_names=list(t.feature_names),
                                           pooling="sum" if t.pooling == "mean" else t.pooling))
        return out

    def _register_routing(self, device) -> None:
        w = self.world_size
        num_rows = [t.num_embeddings for _, t in self._features]
        self.register_buffer("_route_dynamic", torch.tensor([t.dynamic is not None for _, t in self._features],
                                                            dtype=torch.bool, device=device), persistent=False)
        self._any_dynamic = any(t.dynamic is not None for t in self.tables)
        base = [v // w for v in num_rows]
        owner = [self._owners.get(t.name, 0) for _, t in self._features]
        extra = [v % w if self.sharding == "row" else 0 for v in num_rows]
        for name, vals in (("num_rows", num_rows), ("base", base), ("extra", extra), ("owner", owner)):
            self.register_buffer(f"_route_{name}", torch.tensor(vals, dtype=torch.int64, device=device),
                                 persistent=False)
        fidx = {f: i for i, (f, _) in enumerate(self._features)}
        for gi, g in enumerate(self._layout):
            col_feature = [fidx[f] for f, t, _ in g.features for _ in range(t.embedding_dim)]
            pooling = [t.pooling for _, t, _ in g.features for _ in range(t.embedding_dim)]
            self.register_buffer(f"_col_feature{gi}", torch.tensor(col_feature, dtype=torch.int64, device=device),
                                 persistent=False)
            self.register_buffer(f"_col_mean{gi}", torch.tensor([p == "mean" for p in pooling], dtype=torch.bool,
                                                                device=device), persistent=False)
            self.register_buffer(f"_col_max{gi}", torch.tensor([p == "max" for p in pooling], dtype=torch.bool,
                                                               device=device), persistent=False)
            # table sharding: owners' blocks concatenated in rank order, then this permutation of columns
            src_cols = [c for r in range(w) for f, t, col in g.features
                        if self._owners.get(t.name) == r for c in range(col, col + t.embedding_dim)]
            perm = torch.argsort(torch.tensor(src_cols, dtype=torch.int64)) if src_cols else torch.zeros(0)
            self.register_buffer(f"_col_perm{gi}", perm.to(device=device, dtype=torch.int64), persistent=False)
        self._owner_dims = [[sum(t.embedding_dim for f, t, _ in g.features
                                 if self.sharding == "row" or self._owners[t.name] == r) for r in range(w)]
                            for g in self._layout]

    @property
    def device(self) -> torch.device:
        return self._route_num_rows.device

    def shard_rows(self, name: str) -> Tuple[int, int]:
        """Global row range [start, end) of table `name` held by this rank (start == end: none)."""
        if name not in self.bounds:
            raise KeyError(f"{OP}: no table {name!r}")
        b = self.bounds[name]
        return b[self.rank], b[self.rank + 1]

    def table(self, name: str) -> Tensor:
        """Writable [end - start, D] view of this rank's rows of table `name` (see shard_rows; [0, D] when it
        holds none). unshard() gathers whole tables."""
        views = self.table_views(name)
        if views is None:
            t = next(t for t in self.tables if t.name == name)
            return torch.empty(0, t.embedding_dim, dtype=t.dtype, device=self.device)
        return views["weight"]

    def table_views(self, name: str) -> Optional[Dict[str, Tensor]]:
        """Views of this rank's rows of table `name` (row r of a view is global row start + r, see shard_rows):
        "weight" and the fused-optimizer state, as EmbeddingBagCollection.table_views; None where table sharding
        gave the table to another rank."""
        self.shard_rows(name)  # KeyError for an unknown table
        if self.sharding == "table" and self._owners[name] != self.rank:
            return None
        return self.local.table_views(name)

    def memory_bytes(self) -> int:
        """Bytes this rank's shard holds (EmbeddingBagCollection.memory_bytes of the local collection)."""
        return self.local.memory_bytes()

    @property
    def step(self) -> int:
        """Fused-optimizer step counter (identical on every rank; EmbeddingBagCollection.step)."""
        return self.local.step

    @step.setter
    def step(self, value) -> None:
        self.local.step = value

    def extra_repr(self) -> str:
        opt = f", optimizer={self.optimizer.kind}" if self.optimizer else ""
        return (f"sharding={self.sharding}, rank={self.rank}/{self.world_size}, "
                f"tables={[(t.name, t.num_embeddings, t.embedding_dim, t.pooling) for t in self.tables]}{opt}")

    # ---- initialisation, copies ------------------------------------------------------------------------------

    def _shared_seed(self) -> int:
        seed = torch.randint(0, 1 << 62, (1,)).to(self.device)
        dist.broadcast(seed, src=global_rank(self.group, 0), group=self.group)
        return int(seed)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(V), 1/sqrt(V)) per table from a seed broadcast by rank 0 (collective); a row's value
        depends on the seed, its table and its row number only. Optimizer state and step to zero."""
        seed = self._shared_seed()
        for ti, t in enumerate(self.tables):
            lo, hi = self.shard_rows(t.name)
            if hi <= lo or t.dynamic is not None:  # dynamic tables start empty (local.reset_parameters)
                continue
            dst, bound = self.table(t.name), 1.0 / math.sqrt(t.num_embeddings)
            for c in range(lo // _INIT_CHUNK, (hi - 1) // _INIT_CHUNK + 1):
                c0, c1 = c * _INIT_CHUNK, min((c + 1) * _INIT_CHUNK, t.num_embeddings)
                gen = torch.Generator().manual_seed(((seed * 1_000_003 + ti) * 1_000_033 + c) % (1 << 63))
                block = torch.empty(c1 - c0, t.embedding_dim).uniform_(-bound, bound, generator=gen)
                a, b = max(lo, c0), min(hi, c1)
                dst[a - lo:b - lo].copy_(block[a - c0:b - c0])
        if self._any_dynamic:
            self.local.clear_dynamic()
        self.local.reset_optimizer_state()

    def _check_same_tables(self, other_tables, what: str) -> None:
        mine = [(t.name, t.num_embeddings, t.embedding_dim) for t in self.tables]
        theirs = [(t.name, t.num_embeddings, t.embedding_dim) for t in other_tables]
        if sorted(mine) != sorted(theirs):
            raise ValueError(f"{OP}: {what} must have the same tables (name, rows, dim), got {theirs} for {mine}")

    @torch.no_grad()
    def copy_from(self, ebc: EmbeddingBagCollection) -> "ShardedEmbeddingBagCollection":
        """Take this rank's rows of weights (and optimizer state and step, when both use the same fused
        optimizer) from an EmbeddingBagCollection holding whole tables. No communication."""
        if not isinstance(ebc, EmbeddingBagCollection):
            raise TypeError(f"{OP}.copy_from: ebc must be an EmbeddingBagCollection, got {type(ebc)}")
        self._check_same_tables(ebc.tables, "copy_from: ebc")
        kinds = (ebc.optimizer.kind if ebc.optimizer else None, self.optimizer.kind if self.optimizer else None)
        if None not in kinds and kinds[0] != kinds[1]:
            raise ValueError(f"{OP}.copy_from: ebc's optimizer {kinds[0]!r} differs from this module's {kinds[1]!r}")
        for t in self.tables:
            dst = self.table_views(t.name)
            if dst is None:
                continue
            if t.dynamic is not None:  # the ids this rank owns, on fresh rows
                self.local.load_dynamic_state(t.name, self._repack(t.name, [ebc.dynamic_state(t.name)]))
                continue
            lo, hi = self.shard_rows(t.name)
            src = ebc.table_views(t.name)
            for k, d in dst.items():
                if k in src:
                    d.copy_(src[k][lo:hi])
        if kinds[0] == kinds[1] and kinds[0] is not None:
            self.local.step = ebc.step
        return self

    def _repack(self, name: str, states: List[dict]) -> dict:
        """The states of table `name`'s holders re-cut for this rank's local table."""
        local = next(t for t in self.local.tables if t.name == name)
        row = self.sharding == "row"
        return repack_states(states, local.dynamic.capacity, local.dynamic.max_capacity,
                             world=self.world_size if row else 1, rank=self.rank if row else 0)

    @torch.no_grad()
    def unshard(self) -> EmbeddingBagCollection:
        """The whole collection (weights, optimizer state, step) as an EmbeddingBagCollection on every rank
        (collective: every rank must call it; each rank then holds every table in memory)."""
        with torch.random.fork_rng(devices=[]):
            full = EmbeddingBagCollection(self.tables, optimizer=copy.copy(self.optimizer), device=self.device)
        for t in self.tables:
            if t.dynamic is not None:  # every rank's ids, gathered
                mine = [self.local.dynamic_state(t.name)] if self.table_views(t.name) is not None else []
                every = [None] * self.world_size
                dist.all_gather_object(every, mine, group=self.group)
                full.load_dynamic_state(t.name, repack_states([d for part in every for d in part],
                                                              t.dynamic.capacity, t.dynamic.max_capacity))
                continue
            src, dst = self.table_views(t.name), full.table_views(t.name)
            for k, d in dst.items():
                if self.sharding == "row":
                    b = self.bounds[t.name]
                    d.copy_(gather_rows(src[k], [b[r + 1] - b[r] for r in range(self.world_size)], self.group))
                else:
                    d.copy_(broadcast_rows(src[k] if src is not None else d, d.shape, self._owners[t.name],
                                           self.group))
        if self.optimizer is not None:
            full.step = self.local.step
        return full.train(self.training)

    # ---- forward -----------------------------------------------------------------------------------------------

    def _to_kjt(self, features) -> KeyedJagged:
        # no message prefix: agree_on_errors names the module and the rank
        kjt = EmbeddingBagCollection.to_keyed_jagged(features, op=None)
        EmbeddingBagCollection.check_features(kjt, self.tables, op=None)
        if kjt.values.device != self.device:
            raise TypeError(f"features must be on {self.device}, got {kjt.values.device}")
        return kjt

    def _route(self, kjt: KeyedJagged) -> _Route:
        """Validate this rank's input and compute where each id goes."""
        nf, w = len(self._features), self.world_size
        offsets, num = kjt.offsets.long(), kjt.values.shape[0]
        if int(offsets[0]) != 0 or int(offsets[-1]) != num:
            raise ValueError(f"offsets must start at 0 and end at L={num}, got {int(offsets[0])} and "
                             f"{int(offsets[-1])}")
        steps = offsets.diff()
        if steps.numel() and int(steps.min()) < 0:
            i = int(torch.nonzero(steps < 0)[0, 0])
            raise ValueError(f"offsets must be non-decreasing, got offsets[{i}]={int(offsets[i])} > "
                             f"offsets[{i + 1}]={int(offsets[i + 1])}")
        values, offsets, weights = kjt.select([f for f, _ in self._features]) if nf else (
            kjt.values, kjt.offsets, kjt.weights)
        values, offsets = values.long(), offsets.long()
        batch = kjt.stride() if nf else 0
        lengths = offsets.diff()
        bag = torch.repeat_interleave(torch.arange(nf * batch, device=values.device), lengths)
        fid = bag // max(batch, 1)
        rows = self._route_num_rows[fid]
        bad = (values < 0) | (values >= rows)
        if self._any_dynamic:  # raw ids: every int64 is valid
            bad &= ~self._route_dynamic[fid]
        if bool(bad.any()):
            p = int(torch.nonzero(bad)[0, 0])
            f = int(fid[p])
            raise ValueError(f"feature '{self._features[f][0]}' indices[{p - int(offsets[f * batch])}] must be in "
                             f"[0, {int(rows[p])}), got {int(values[p])}")
        psw = None if weights is None else weights.float()
        if w == 1:  # nothing to route, sort or count
            counts, per_owner, ids = lengths.view(1, -1), [values.shape[0]], [values]
        else:
            owner, local = self._owners_of(values, fid)
            order = torch.sort(owner.to(torch.int32), stable=True).indices  # int32 keys: twice as fast as int64
            counts = torch.bincount(owner * (nf * batch) + bag, minlength=w * nf * batch).view(w, nf * batch)
            per_owner = torch.bincount(owner, minlength=w).tolist()
            ids = local[order].split(per_owner)
            psw = None if psw is None else psw[order]
        pieces, sizes = [], []
        for r in range(w):
            lens = counts[r] if self.sharding == "row" else counts[r].view(nf, batch)[self._served[r]].flatten()
            pieces += [lens, ids[r]]
            sizes.append(lens.numel() + per_owner[r])
        return _Route(batch, lengths, counts, torch.cat(pieces), sizes, per_owner, psw)

    def _owners_of(self, values: Tensor, fid: Tensor) -> Tuple[Tensor, Tensor]:
        """(rank holding each id, its row number within that rank's shard) for ids of features `fid`."""
        if self.sharding == "table":
            return self._route_owner[fid], values
        if self._any_dynamic:
            dyn = self._route_dynamic[fid]
            owner, local = self._row_owners(values.clamp(0, None), fid)
            return torch.where(dyn, route_ids(values, self.world_size), owner), torch.where(dyn, values, local)
        return self._row_owners(values, fid)

    def _row_owners(self, values: Tensor, fid: Tensor) -> Tuple[Tensor, Tensor]:
        base, extra = self._route_base[fid], self._route_extra[fid]
        cut = extra * (base + 1)  # the first `extra` ranks hold base + 1 rows, the others base
        low = values < cut
        owner = torch.where(low, values // (base + 1), extra + (values - cut) // base.clamp(min=1))
        return owner, values - torch.where(low, owner * (base + 1), cut + (owner - extra) * base)

    def forward(self, features) -> EmbeddingBagOutput:
        route = self._agree(features)
        local_out = self.local(self._exchange_ids(route))
        return self._gather_pooled(local_out.by_group(), route)

    def _agree(self, features) -> _Route:
        """Route this rank's input and exchange the headers; raises on every rank when any rank's input is bad."""
        w = self.world_size
        error, route = None, None
        try:
            route = self._route(self._to_kjt(features))
        except Exception as e:  # any local failure must reach the other ranks before they block in a collective
            error = e
        header = torch.zeros(w, 4, dtype=torch.int64, device=self.device)  # [bad, B, payload size, weighted]
        if route is None:
            header[:, 0] = 1
        else:
            header[:, 1] = route.batch
            header[:, 2] = torch.tensor(route.send_sizes, device=self.device)
            header[:, 3] = int(route.weights is not None)
        header = all_to_all(header, [1] * w, [1] * w, self.group, self.comm)
        agree_on_errors(error, header[:, 0], self.group)
        route.src_batch, route.recv_sizes = header[:, 1].tolist(), header[:, 2].tolist()
        route.weighted = bool(header[:, 3].any())
        return route

    def _exchange_ids(self, route: _Route) -> KeyedJagged:
        """Send ids (and per-id weights) to their owners; the KeyedJagged of every rank's bags that this rank
        serves, batch = all ranks' samples in rank order."""
        w, dev = self.world_size, self.device
        recv = all_to_all(route.send, route.send_sizes, route.recv_sizes, self.group, self.comm)
        nf_local = len(self._served[self.rank])
        lens, ids = [], []
        for piece, b in zip(recv.split(route.recv_sizes), route.src_batch):
            lens.append(piece[:nf_local * b].view(nf_local, b))
            ids.append(piece[nf_local * b:])
        weights = None
        perm = _regroup(torch.stack([x.sum(1) for x in lens]) if nf_local else
                        torch.zeros(w, 0, dtype=torch.int64, device=dev))
        if route.weighted:
            sent = route.weights if route.weights is not None else torch.ones(sum(route.per_owner), device=dev)
            weights = all_to_all(sent, route.per_owner, [x.numel() for x in ids], self.group, self.comm)[perm]
        lengths = torch.cat(lens, dim=1)
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=dev)
        offsets[1:] = lengths.flatten().cumsum(0)
        return KeyedJagged([self._features[i][0] for i in self._served[self.rank]], torch.cat(ids)[perm], offsets,
                           weights)

    def _gather_pooled(self, by_group: Dict[str, Tensor], route: _Route) -> EmbeddingBagOutput:
        w, grad, batch = self.world_size, torch.is_grad_enabled(), route.batch
        scale = 1.0 / w if self.grad_reduction == "mean" else 1.0
        items, outs = {}, []
        for gi, g in enumerate(self._layout):
            mine = self._owner_dims[gi][self.rank]
            x = by_group.get(g.suffix)
            if x is None:
                x = torch.empty(0, dtype=g.dtype, device=self.device)
            send = [b * mine for b in route.src_batch]
            recv = [batch * d for d in self._owner_dims[gi]]
            if grad:
                y = AllToAll.apply(x.reshape(-1), self._anchor, send, recv, self.group, self.comm, scale)
            else:
                y = all_to_all(x.reshape(-1), send, recv, self.group, self.comm)
            if self.sharding == "row":
                out = self._reduce_partials(gi, y.view(w, batch, g.total_dim), route.lengths, route.counts, batch)
            else:
                blocks = [p.view(batch, d) for p, d in zip(y.split(recv), self._owner_dims[gi])]
                out = torch.cat(blocks, dim=1).index_select(1, getattr(self, f"_col_perm{gi}"))
            outs.append(out)
            for f, t, col in g.features:
                items[f] = out[:, col:col + t.embedding_dim]
        return EmbeddingBagOutput(items, outs, [g.dtype for g in self._layout], [g.suffix for g in self._layout])

    def _reduce_partials(self, gi: int, parts: Tensor, lengths: Tensor, counts: Tensor, batch: int) -> Tensor:
        """parts [W, B, D] partial pools of this rank's bags -> [B, D] (sum / mean / max rules)."""
        w, nf = self.world_size, len(self._features)
        dtype = parts.dtype
        acc = parts.float() if dtype in (torch.float16, torch.bfloat16) else parts
        out = acc.sum(0)
        col_feature = getattr(self, f"_col_feature{gi}")
        col_mean, col_max = getattr(self, f"_col_mean{gi}"), getattr(self, f"_col_max{gi}")
        if bool(col_mean.any()):
            bag_len = lengths.view(nf, batch)[col_feature].t().to(acc.dtype).clamp(min=1)
            out = out / torch.where(col_mean, bag_len, torch.ones_like(bag_len))
        if bool(col_max.any()):
            has = counts.view(w, nf, batch)[:, col_feature].transpose(1, 2) > 0  # [W, B, D]
            masked = torch.where(has, acc, torch.full_like(acc, -math.inf))
            best = masked.max(dim=0).values
            best = torch.where(has.any(0), best, torch.zeros_like(best))
            out = torch.where(col_max, best, out)
        return out.to(dtype)
