# SPDX-License-Identifier: Apache-2.0
"""The dynamic-table side of EmbeddingBagCollection (a mixin of it, kept apart from the static layout and the
forward): resolving raw ids to rows, growth and re-layout, the zero rows, the ttl clock, the live-id API and the
compact state of each dynamic table. The rules themselves live in cpp/embedding/dynamic_table.h."""

import math
from typing import TYPE_CHECKING, Dict, List, Tuple

import torch
from torch import Tensor

from .._runtime import core as _C
from .._runtime import num_threads
from .dynamic import DynamicState

if TYPE_CHECKING:  # embedding.py imports this module
    from .embedding import EmbeddingBagConfig, TableGroup


class DynamicTablesMixin:
    """Needs the collection's _dyn, _groups, _table_group, _zero_dirty, _clock, _buffers, step, optimizer,
    _weights() and _views() (EmbeddingBagCollection)."""

    _DYN_KEYS = ("ids", "rows", "last_use", "last_seen", "freq", "sketch", "info", "weight")

    @torch.no_grad()
    def dynamic_state(self, name: str) -> Dict[str, Tensor]:
        """The state of dynamic table `name` as its state_dict entries `dynamic.<name>.*` hold it: the held ids
        (expired ones not yet reclaimed included) with their rows, counters (last_use, last_seen, freq), weights
        and optimizer state (those rows only), the sketch and info = [capacity, serial]."""
        st, g, t = self._dyn_table(name, "dynamic_state")
        d = st.dump()
        views = self._views(g, t, g.table_rows[name], "state_dict")
        rows = d["rows"].to(views["weight"].device)
        for k, v in views.items():  # weight, state0, state1: the held rows only
            d[k] = v[rows].detach().clone()
        return d

    @torch.no_grad()
    def load_dynamic_state(self, name: str, d: Dict[str, Tensor]) -> None:
        """Replace dynamic table `name` by a dynamic_state() dict (capacity included). ValueError naming the entry
        for bad shapes or contents; the table is unchanged then."""
        st, g, t = self._dyn_table(name, "load_dynamic_state")
        want = list(self._DYN_KEYS) + [k for k in ("state0", "state1") if k in self._views(g, t, 1, "load")]
        missing = [k for k in want if k not in d]
        if missing:
            raise ValueError(f"dynamic table {name!r}: missing entries {missing}")
        n, dim = d["ids"].shape[0], t.embedding_dim
        shapes = {"weight": (n, dim), "state0": (n,) if self.optimizer.kind == "rowwise_adagrad" else (n, dim),
                  "state1": (n, dim), "info": (2,)}
        bad = [f"{k}: expected shape {shp}, got {tuple(d[k].shape)}" for k, shp in shapes.items()
               if k in d and tuple(d[k].shape) != shp]
        bad += [f"{k}: expected {n} entries, got {d[k].shape[0]}" for k in ("rows", "last_use", "last_seen", "freq")
                if d[k].shape[0] != n]
        if bad:
            raise ValueError(f"dynamic table {name!r}: " + "; ".join(bad))
        old_map = st.map
        try:
            st.load(d)
        except ValueError:
            st.map = old_map
            raise
        self._relayout(self._table_group[name])
        g = self._groups[self._table_group[name]]
        views = self._views(g, t, g.table_rows[name], "load_dynamic_state")
        rows = d["rows"].to(torch.int64).to(views["weight"].device)
        for k, v in views.items():
            v.zero_()
            v[rows] = d[k].to(v)

    @torch.no_grad()
    def _load_dynamic(self, state_dict, prefix, strict, missing_keys, unexpected_keys, error_msgs) -> None:
        """The dynamic tables' entries: each table's map, capacity and held rows (weights, optimizer state); the
        other rows start at zero. A table with a bad entry is left as it was and the problem is reported."""
        for name, st in self._dyn.items():
            _, g, t = self._dyn_table(name, "load_state_dict")
            want = list(self._DYN_KEYS) + [k for k in ("state0", "state1")
                                           if k in self._views(g, t, 1, "load_state_dict")]
            keys = {k: f"{prefix}dynamic.{name}.{k}" for k in want}
            for full in keys.values():
                if full in unexpected_keys:
                    unexpected_keys.remove(full)
            absent = [full for full in keys.values() if full not in state_dict]
            if absent:
                if strict:
                    missing_keys.extend(absent)
                continue
            d = {k: state_dict[full] for k, full in keys.items()}
            try:
                self.load_dynamic_state(name, d)
            except ValueError as e:
                error_msgs.append(f"{prefix}dynamic.{name}: {e}")
        key = prefix + "dynamic_clock"
        if self._dyn and key in state_dict:
            if key in unexpected_keys:
                unexpected_keys.remove(key)
            mode, clock = state_dict[key].tolist()
            self._clock = float(clock) if mode else None
        elif self._dyn and strict:
            missing_keys.append(key)


    def _dyn_table(self, name: str, what: str) -> Tuple[DynamicState, "TableGroup", "EmbeddingBagConfig"]:
        st = self._dyn.get(name)
        if st is None:
            kind = "a static table" if name in self._table_group else "no table"
            raise KeyError(f"EmbeddingBagCollection.{what}: {name!r} is {kind}; dynamic tables: {sorted(self._dyn)}")
        g = self._groups[self._table_group[name]]
        return st, g, next(t for t in g.tables if t.name == name)

    def _now(self, training: bool) -> float:
        """The ttl clock: the collection's time once set_time() was called, else the step (the step being taken
        in a training forward)."""
        if self._clock is not None:
            return self._clock
        return float(self.step + (1 if training else 0))

    def set_time(self, seconds: float) -> None:
        """Advance the clock that dynamic tables' ttl counts in seconds from now on (it never goes back). The
        first call switches ttl from steps to this clock: every held id counts as seen at `seconds`."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ValueError(f"EmbeddingBagCollection.set_time: seconds must be a finite number, got {seconds!r}")
        if self._clock is None:
            for st in self._dyn.values():
                st.map.restamp(float(seconds))
        elif seconds < self._clock:
            raise ValueError(f"EmbeddingBagCollection.set_time: the clock cannot go back, got {seconds} after "
                             f"{self._clock}")
        self._clock = float(seconds)

    def num_live(self, name: str) -> int:
        """Ids holding a row of dynamic table `name` (expired ones excluded)."""
        st, _, _ = self._dyn_table(name, "num_live")
        return int(st.map.num_live(self._now(False)))

    def live_ids(self, name: str) -> Tensor:
        """The ids holding a row of dynamic table `name`, ascending (int64, cpu)."""
        st, _, _ = self._dyn_table(name, "live_ids")
        return st.live(self._now(False))[0]

    def capacity(self, name: str) -> int:
        """Rows of dynamic table `name` now (it grows by doubling up to max_capacity)."""
        return self._dyn_table(name, "capacity")[0].capacity

    @torch.no_grad()
    def export(self, name: str) -> Tuple[Tensor, Tensor]:
        """(ids ascending [n] int64 cpu, weights [n, D]) of the live ids of dynamic table `name`, for serving
        (recops.nn.dynamic.static_table turns them into a static table plus an IdMap)."""
        st, g, t = self._dyn_table(name, "export")
        if g.int8:
            raise TypeError(f"EmbeddingBagCollection.export: table {name!r} is int8-quantised")
        ids, rows = st.live(self._now(False))
        w = self._views(g, t, g.table_rows[name], "export")["weight"]
        return ids, w[rows.to(w.device)].clone()

    @torch.no_grad()
    def clear_dynamic(self) -> None:
        """Every dynamic table empty again (no id holds a row; weights, state and counters to zero)."""
        for st in self._dyn.values():
            st.map.clear()
        for gi, g in enumerate(self._groups):
            if g.dynamic:
                self._weights(gi).zero_()
                for sname in g.state_names:
                    self._buffers[sname].zero_()

    def _grow(self, st: DynamicState, capacity: int) -> None:
        st.map.grow(capacity)
        self._relayout(self._table_group[st.name])

    @torch.no_grad()
    def _relayout(self, gi: int) -> None:
        """Lay dynamic group gi out again for its tables' current capacities, keeping every row of each table
        (the zero rows start at zero)."""
        from .embedding import TableGroup, _huge

        old = self._groups[gi]
        caps = {t.name: self._dyn[t.name].capacity for t in old.tables}
        new = TableGroup(old.dtype, old.tables, True, caps)
        device = self._weights(gi).device
        sizes = dict(zip(("weights",) + old.state_names, (new.numel,) + self._state_sizes(new)))
        # advised before the first touch (zero_), so large buffers get huge pages
        bufs = {"weights": _huge(torch.empty(new.numel, dtype=old.dtype, device=device)).zero_()}
        for sname in old.state_names:
            bufs[sname] = _huge(torch.empty(sizes[sname], device=device)).zero_()
        keep = {t.name: min(old.table_rows[t.name], new.table_rows[t.name]) - 1 for t in old.tables}
        olds = {t.name: self._views(old, t, keep[t.name], "relayout") for t in old.tables}
        self._buffers[new.weights_name] = bufs["weights"]
        for sname in old.state_names:
            self._buffers[sname] = bufs[sname]
        self._groups[gi] = new
        for t in old.tables:
            for k, v in self._views(new, t, keep[t.name], "relayout").items():
                v.copy_(olds[t.name][k])
        self._buffers[new.meta_name] = new.meta(device)

    @torch.no_grad()
    def _reset_zero_rows(self, gi: int) -> None:
        """The zero row of every table of dynamic group gi back to zero (weights and state): the fused backward
        updates it like any row; ids without a row must keep reading zeros."""
        g = self._groups[gi]
        views = []
        for t in g.tables:
            views += [v[-1] for v in self._views(g, t, g.table_rows[t.name], "zero rows").values()]
        torch._foreach_zero_(views)
        self._zero_dirty[gi] = False

    def _resolve_on_device(self, g: "TableGroup", values: Tensor, offsets: Tensor, batch: int) -> Tensor:
        ids = values.to(torch.int64).contiguous()
        rows = torch.empty_like(ids)
        bounds, now = self._table_bounds(g, offsets, batch), self._now(False)
        for t, lo, hi in zip(g.tables, bounds, bounds[1:]):
            self._dyn[t.name].device_lookup(ids[lo:hi], rows[lo:hi], now)
        return rows

    @staticmethod
    def _table_bounds(g: "TableGroup", offsets: Tensor, batch: int) -> List[int]:
        """Where each table's ids start in the group's values, then len(values) (a table's features are
        adjacent in the group): one host read of len(tables) + 1 offsets."""
        first = [0]
        for t in g.tables:
            first.append(first[-1] + len(t.feature_names))
        return offsets[torch.tensor(first, device=offsets.device) * batch].tolist()

    @torch.no_grad()
    def _resolve(self, gi: int, values: Tensor, offsets: Tensor, batch: int, training: bool) -> Tensor:
        """Rows (int64, the device of values) of group gi's raw ids, table by table; training admits and
        initialises the rows it assigns."""
        g = self._groups[gi]
        if values.is_cuda and not training and _C.has_cuda():  # eval on the GPU: a device mirror of each map
            return self._resolve_on_device(g, values, offsets, batch)
        host = values.to("cpu", torch.int64).contiguous()  # no copy for contiguous int64 cpu values
        rows = torch.empty_like(host)
        now = self._now(training)
        tb = torch.tensor(self._table_bounds(g, offsets, batch), dtype=torch.int64)
        states = [self._dyn[t.name] for t in g.tables]
        n = host.shape[0]
        new_rows = torch.empty(n, dtype=torch.int64)
        new_ids = torch.empty(n, dtype=torch.int64)
        counts = torch.zeros(len(states), dtype=torch.int64)
        start = 0
        while True:  # resumes at the table that had to grow
            lo = int(tb[start])
            part = counts[start:]
            t, grow_to = _C.dynamic_resolve_many(
                [st.map for st in states[start:]], host[lo:], tb[start:] - lo, rows[lo:], training, now,
                num_threads(), new_rows[lo:], new_ids[lo:], part)
            if t < 0:
                break
            start += t
            self._grow(states[start], grow_to)
        assigned = []
        for k, (t, st) in enumerate(zip(g.tables, states)):
            c = int(counts[k])
            if c:
                lo = int(tb[k])
                assigned.append((t, st, new_rows[lo:lo + c], new_ids[lo:lo + c]))
        g = self._groups[gi]  # growth may have laid the group out again
        for t, st, new_rows, new_ids in assigned:
            views = self._views(g, t, g.table_rows[t.name], "init")
            r = new_rows.to(views["weight"].device)
            views["weight"][r] = st.init_values(new_ids).to(views["weight"])
            for k in ("state0", "state1"):
                if k in views:
                    views[k][r] = 0
        return rows.to(values.device)

