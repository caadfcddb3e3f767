# SPDX-License-Identifier: Apache-2.0
"""Dynamic (collisionless, Monolith-style) embedding tables: raw int64 ids get rows during training.

`DynamicTable` is the configuration a table passes as `EmbeddingBagConfig(..., dynamic=DynamicTable(...))`;
`DynamicState` is the runtime side an EmbeddingBagCollection keeps per dynamic table: the C++ id -> row map
(cpp/embedding/dynamic_table.h, where the admission, expiry and eviction rules are spelled) and the
deterministic initialisation of new rows. `IdMap` serves an exported table from a static one.
dynamic_ref.py holds the plain-Python reference the tests compare against."""

import dataclasses
import math
import zlib
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .._runtime import core as _C
from .._runtime import num_threads

EVICTION = {"lru": 0, "lfu": 1}
MAX_ROWS = (1 << 31) - 1  # rows are int32 in the map's slots
SKETCH_DEPTH = 4


def _pow2_at_least(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


@dataclasses.dataclass
class DynamicTable:
    """A table whose rows belong to raw int64 ids admitted during training.

    capacity: rows preallocated. max_capacity: the table doubles up to it when full (default: capacity, never
    grows). admit_after: an id gets a row at its N-th sighting in training (occurrences counted in a count-min
    sketch of `sketch_depth` x `sketch_width` uint8 counters, default width the power of two >= 2 * capacity,
    so 8 bytes per row of capacity at depth 4; no sketch when 1); until then it reads zeros and gets no update.
    ttl: an id not seen for more than ttl training steps (or seconds of the collection's clock once
    `set_time` was called) loses its row; None: never. eviction: "lru" or "lfu" victim when the table is full
    (a new id that still finds no row is treated as not admitted). init_scale: new rows are uniform in
    +-init_scale (default 1/sqrt(capacity), the static tables' rule), drawn from a hash of (seed, table, id), so
    an id's first row does not depend on batch order, threads or ranks."""

    capacity: int
    admit_after: int = 1
    ttl: Optional[float] = None
    eviction: str = "lru"
    max_capacity: Optional[int] = None
    sketch_width: Optional[int] = None
    sketch_depth: int = SKETCH_DEPTH
    init_scale: Optional[float] = None
    seed: int = 0

    def __post_init__(self):
        op = "DynamicTable"
        for arg in ("capacity", "admit_after", "sketch_depth", "seed"):
            v = getattr(self, arg)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{op}: {arg} must be an int, got {type(v).__name__}")
        if not 1 <= self.capacity <= MAX_ROWS:
            raise ValueError(f"{op}: capacity must be in [1, 2^31 - 1], got {self.capacity}")
        if self.max_capacity is None:
            self.max_capacity = self.capacity
        if isinstance(self.max_capacity, bool) or not isinstance(self.max_capacity, int) or not (
                self.capacity <= self.max_capacity <= MAX_ROWS):
            raise ValueError(f"{op}: max_capacity must be an int in [capacity={self.capacity}, 2^31 - 1], got "
                             f"{self.max_capacity!r}")
        if not 1 <= self.admit_after <= 255:
            raise ValueError(f"{op}: admit_after must be in [1, 255], got {self.admit_after}")
        if self.ttl is not None and not (isinstance(self.ttl, (int, float)) and not isinstance(self.ttl, bool)
                                         and math.isfinite(self.ttl) and self.ttl >= 0):
            raise ValueError(f"{op}: ttl must be None or a finite number >= 0, got {self.ttl!r}")
        if self.eviction not in EVICTION:
            raise ValueError(f"{op}: eviction must be 'lru' or 'lfu', got {self.eviction!r}")
        if not 1 <= self.sketch_depth <= 8:
            raise ValueError(f"{op}: sketch_depth must be in [1, 8], got {self.sketch_depth}")
        if self.sketch_width is None:
            self.sketch_width = max(64, _pow2_at_least(2 * self.capacity))
        w = self.sketch_width
        if isinstance(w, bool) or not isinstance(w, int) or w < 64 or w & (w - 1) or w > 1 << 36:
            raise ValueError(f"{op}: sketch_width must be a power of two in [64, 2^36], got {w!r}")
        if self.init_scale is None:
            self.init_scale = 1.0 / math.sqrt(self.capacity)
        if not (math.isfinite(self.init_scale) and self.init_scale >= 0):
            raise ValueError(f"{op}: init_scale must be finite and >= 0, got {self.init_scale}")
        if not 0 <= self.seed < 1 << 63:
            raise ValueError(f"{op}: seed must be in [0, 2^63), got {self.seed}")

    def sketch_bytes(self) -> int:
        """Memory of the admission sketch (0 when admit_after is 1)."""
        return self.sketch_depth * self.sketch_width if self.admit_after > 1 else 0

    def map_bytes(self, capacity: Optional[int] = None) -> int:
        """Memory of the id map at `capacity` rows (default: the configured one) besides the embedding rows and
        their optimizer state: 16-byte slots (the power of two >= 2 * capacity of them: key, row, last use), a
        free-row bitmap, 8 bytes per row of last-seen time with a ttl, 4 of counts for LFU, and the sketch; see
        cpp/embedding/dynamic_table.h."""
        cap = self.capacity if capacity is None else capacity
        per_row = (8 if self.ttl is not None else 0) + (4 if self.eviction == "lfu" else 0)
        return 16 * _pow2_at_least(2 * cap) + (cap + 63) // 64 * 8 + per_row * cap + self.sketch_bytes()


def table_seed(name: str, seed: int) -> int:
    """The init seed of table `name` (stable across processes: crc32 of the name)."""
    return (int(seed) * 0x9E3779B97F4A7C15 + zlib.crc32(name.encode())) % (1 << 64)


class DynamicState:
    """Runtime state of one dynamic table: its id map (C++) and the rules to initialise new rows."""

    def __init__(self, name: str, dim: int, config: DynamicTable, capacity: Optional[int] = None):
        self.name, self.dim, self.config = name, dim, config
        self.seed = table_seed(name, config.seed)
        self.map = self._new_map(capacity or config.capacity)

    def _new_map(self, capacity: int):
        c = self.config
        return _C.DynamicIdMap(capacity, max(capacity, c.max_capacity), c.admit_after,
                               None if c.ttl is None else float(c.ttl), EVICTION[c.eviction], c.sketch_width,
                               c.sketch_depth)

    @property
    def capacity(self) -> int:
        return self.map.capacity

    def device_lookup(self, ids: Tensor, rows: Tensor, now: float) -> None:
        """Eval lookups of CUDA ids into CUDA rows through a device mirror of the map (refreshed when the map
        changed since the last call: one host-to-device copy of the slots per training step at most)."""
        dev = ids.device
        mirror = getattr(self, "_mirror", None)
        if mirror is None or mirror[0] != (self.map.version, str(dev)):
            host = torch.empty(self.map.num_slots * 16, dtype=torch.uint8)
            self.map.copy_slots(host)
            seen = None
            if self.config.ttl is not None:
                seen = torch.empty(self.capacity, dtype=torch.float64)
                self.map.copy_last_seen(seen)
                seen = seen.to(dev)
            mirror = ((self.map.version, str(dev)), host.to(dev), seen)
            self._mirror = mirror
        _C.dynamic_lookup_cuda(mirror[1], self.map.num_slots, ids, rows, self.capacity, mirror[2], float(now),
                               float(self.config.ttl or 0.0), torch.cuda.current_stream(dev).cuda_stream)

    def init_values(self, ids: Tensor) -> Tensor:
        """[len(ids), dim] float32 initial rows of ids (uniform +-init_scale from hash(seed, table, id))."""
        out = torch.empty(ids.shape[0], self.dim)
        _C.dynamic_init_values(ids, self.dim, self.seed, float(self.config.init_scale), out, num_threads())
        return out

    # ---- state ------------------------------------------------------------------------------------------------

    def dump(self) -> dict:
        """Held rows in row order (expired ones not yet reclaimed included) and the counters."""
        n = self.map.num_used
        d = {k: torch.empty(n, dtype=torch.int64) for k in ("ids", "rows", "last_use", "freq")}
        d["last_seen"] = torch.empty(n, dtype=torch.float64)
        self.map.dump(d["ids"], d["rows"], d["last_use"], d["last_seen"], d["freq"])
        sketch = torch.empty(self.map.sketch_size, dtype=torch.uint8)
        self.map.get_sketch(sketch)
        d["sketch"] = sketch
        d["info"] = torch.tensor([self.capacity, self.map.serial], dtype=torch.int64)
        return d

    def load(self, d: dict) -> None:
        """Replace the map by a dump (capacity too: the caller re-lays its buffers out first)."""
        capacity, serial = (int(x) for x in d["info"].tolist())
        m = self._new_map(capacity)
        m.load(*(d[k].to(torch.int64).contiguous() for k in ("ids", "rows", "last_use")),
               d["last_seen"].to(torch.float64).contiguous(), d["freq"].to(torch.int64).contiguous(), serial,
               d["sketch"].to(torch.uint8).contiguous())
        self.map = m

    def live(self, now: float) -> Tuple[Tensor, Tensor]:
        """(ids, rows) of the live (non-expired) ids, ids ascending."""
        d = self.dump()
        keep = torch.ones(d["ids"].shape[0], dtype=torch.bool)
        if self.config.ttl is not None:
            keep = (now - d["last_seen"]) <= float(self.config.ttl)
        ids, rows = d["ids"][keep], d["rows"][keep]
        order = torch.sort(ids).indices
        return ids[order], rows[order]


def route(ids: Tensor, world: int) -> Tensor:
    """The rank owning each raw id among `world` ranks (a hash of the id modulo world; int64 cpu)."""
    ids = ids.to(torch.int64).contiguous()
    if ids.device.type != "cpu":
        return route(ids.cpu(), world).to(ids.device)
    out = torch.empty_like(ids)
    _C.dynamic_route(ids, int(world), out)
    return out


class IdMap:
    """A frozen raw id -> row map for serving an exported dynamic table from a static one.

    `IdMap(ids)` maps ids[i] -> i and every other id -> len(ids) (append a zero row to the static table, as
    `static_table(ids, weights)` does). `remap(kjt, features)` returns the KeyedJagged with those features'
    values replaced by rows; `__call__(values)` maps one tensor."""

    def __init__(self, ids: Tensor):
        ids = torch.as_tensor(ids).to(torch.int64).cpu().contiguous()
        if ids.dim() != 1:
            raise ValueError(f"IdMap: ids must be 1-D, got shape {tuple(ids.shape)}")
        n = ids.shape[0]
        if n and torch.unique(ids).shape[0] != n:
            raise ValueError("IdMap: ids must be distinct")
        self.size = n
        self._map = _C.DynamicIdMap(max(n, 1), max(n, 1), 1, None, 0, 64, 1)
        rows = torch.arange(n, dtype=torch.int64)
        self._map.load(ids, rows, torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.float64),
                       torch.zeros(n, dtype=torch.int64), 0, torch.empty(0, dtype=torch.uint8))

    def __call__(self, values: Tensor) -> Tensor:
        dev = values.device
        v = values.to(torch.int64).cpu().contiguous()
        rows = torch.empty_like(v)
        e = torch.empty(0, dtype=torch.int64)
        self._map.resolve(v, rows, False, 0.0, num_threads(), e, e)
        if self.size == 0:
            rows.zero_()
        else:
            rows[rows == self._map.capacity] = self.size
        return rows.to(dev)

    def remap(self, kjt, features: List[str]):
        """kjt with the values of `features` replaced by their rows (other features unchanged)."""
        from ..data.keyed_jagged import KeyedJagged
        values = kjt.values.to(torch.int64).clone()
        offsets = kjt.offsets.to(torch.int64)
        b = kjt.stride()
        for f in features:
            k = kjt.keys.index(f)
            lo, hi = int(offsets[k * b]), int(offsets[(k + 1) * b])
            values[lo:hi] = self(values[lo:hi])
        return KeyedJagged(list(kjt.keys), values, kjt.offsets, kjt.weights)


def static_table(ids: Tensor, weights: Tensor) -> Tuple[Tensor, IdMap]:
    """An exported (ids, weights [n, D]) as (table [n + 1, D] with a zero last row, IdMap): load the table into
    a static EmbeddingBagConfig(num_embeddings=n + 1) and remap raw ids with the IdMap."""
    table = torch.cat([weights, weights.new_zeros(1, weights.shape[1])])
    return table, IdMap(ids)


def repack_states(states: List[dict], capacity: int, max_capacity: int, keep: Optional[Tensor] = None,
                  world: int = 1, rank: int = 0) -> dict:
    """One dynamic_state() dict from the states of several holders of a table (the ranks of a sharded table, or
    one plain table), keeping the ids that `rank` of `world` owns (route(id, world) == rank; world 1: all):
    ids ascending on rows 0..n-1, their counters, weights and optimizer state; the sketches summed (saturating,
    an over-estimate like the sketch itself); the serial counter the largest; capacity max(capacity, n)
    (ValueError beyond max_capacity). Used to re-shard checkpoints, copy_from and unshard."""
    keys = [k for k in states[0] if k not in ("sketch", "info")] if states else []
    cat = {k: torch.cat([s[k].cpu() for s in states]) for k in keys}
    ids = cat.get("ids", torch.zeros(0, dtype=torch.int64))
    sel = torch.ones(ids.shape[0], dtype=torch.bool) if world == 1 else route(ids, world) == rank
    order = torch.sort(ids[sel]).indices
    out = {k: v[sel][order] for k, v in cat.items()}
    n = out["ids"].shape[0] if "ids" in out else 0
    if n > max_capacity:
        raise ValueError(f"dynamic table: {n} ids do not fit its max_capacity {max_capacity}")
    out["rows"] = torch.arange(n, dtype=torch.int64)
    sketches = [s["sketch"].to(torch.int32) for s in states if s["sketch"].numel()]
    out["sketch"] = (torch.stack(sketches).sum(0).clamp(max=255).to(torch.uint8) if sketches
                     else torch.zeros(0, dtype=torch.uint8))
    serial = max((int(s["info"][1]) for s in states), default=0)
    out["info"] = torch.tensor([max(capacity, n), serial], dtype=torch.int64)
    return out
