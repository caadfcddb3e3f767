# SPDX-License-Identifier: Apache-2.0
"""EmbeddingBagCollection: many pooled embedding tables served by one kernel launch per storage dtype, with an
optional optimizer fused into the backward (FBGEMM TBE style). This module holds the layout and the parameters;
the lookups and the fused update are ops in recops.ops.embedding."""

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._runtime import core as _C
from .._runtime import eager
from ..data.keyed_jagged import KeyedJagged
from ..ops import embedding as ops
from ..ops.embedding import META_COLS, OPTIMIZERS, POOLING, meta_row
from ..ops.jagged import check_offsets_values
from .dynamic import DynamicState, DynamicTable
from .dynamic_collection import DynamicTablesMixin

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_DEFAULT_EPS = {"sgd": 0.0, "adagrad": 1e-10, "rowwise_adagrad": 1e-8, "adam": 1e-8}


@dataclasses.dataclass
class EmbeddingBagConfig:
    """One table: `num_embeddings` x `embedding_dim` rows in `dtype` storage, read by `feature_names`
    (default [name]) with `pooling` "sum", "mean" or "max".

    dynamic: a DynamicTable makes it a collisionless table of raw int64 ids that get rows during training
    (num_embeddings must equal its capacity; see recops.nn.dynamic)."""

    name: str
    num_embeddings: int
    embedding_dim: int
    feature_names: Optional[List[str]] = None
    pooling: str = "sum"
    dtype: torch.dtype = torch.float32
    dynamic: Optional[DynamicTable] = None

    def __post_init__(self):
        if self.feature_names is None:
            self.feature_names = [self.name]
        if self.num_embeddings < 0 or self.embedding_dim < 0:
            raise ValueError(f"EmbeddingBagConfig {self.name!r}: sizes must be >= 0, got "
                             f"{self.num_embeddings} x {self.embedding_dim}")
        if self.pooling not in POOLING:
            raise ValueError(f"EmbeddingBagConfig {self.name!r}: pooling must be 'sum', 'mean' or 'max', "
                             f"got {self.pooling!r}")
        if self.dtype not in _DTYPES:
            raise TypeError(f"EmbeddingBagConfig {self.name!r}: dtype must be float32, float16 or bfloat16, "
                            f"got {self.dtype}")
        if self.dynamic is not None:
            if not isinstance(self.dynamic, DynamicTable):
                raise TypeError(f"EmbeddingBagConfig {self.name!r}: dynamic must be a DynamicTable, got "
                                f"{type(self.dynamic).__name__}")
            if self.num_embeddings != self.dynamic.capacity:
                raise ValueError(f"EmbeddingBagConfig {self.name!r}: num_embeddings must equal the dynamic "
                                 f"table's capacity {self.dynamic.capacity}, got {self.num_embeddings}")


@dataclasses.dataclass
class FusedOptimizer:
    """Optimizer applied inside the backward of an EmbeddingBagCollection (the weights get no .grad).

    kind: "sgd", "adagrad" (torch.optim.Adagrad), "rowwise_adagrad" (FBGEMM EXACT_ROWWISE_ADAGRAD: one
    accumulator per row, acc += mean(g^2)) or "adam" (lazy, like torch.optim.SparseAdam: only touched rows
    step). eps defaults to the matching optimizer's default. stochastic_rounding: bf16 tables round updated
    weights stochastically (seeded by `seed` and the step)."""

    kind: str
    lr: float = 0.01
    eps: Optional[float] = None
    beta1: float = 0.9
    beta2: float = 0.999
    stochastic_rounding: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.kind not in _DEFAULT_EPS:
            raise ValueError(f"FusedOptimizer: kind must be one of {sorted(_DEFAULT_EPS)}, got {self.kind!r}")
        if self.eps is None:
            self.eps = _DEFAULT_EPS[self.kind]
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ValueError(f"FusedOptimizer: lr must be finite and >= 0, got {self.lr}")


class EmbeddingBagOutput(dict):
    """feature name -> [B, D] pooled embeddings (views into one [B, sum D] tensor per storage dtype).

    `groups`: those [B, total_dim] tensors, in the collection's group order (EmbeddingBagCollection.groups);
    `dtypes`: the dtype of each group's tables (TableGroup.dtype; None when the producer did not record them);
    `keys`: each group's TableGroup.suffix (None when not recorded)."""

    def __init__(self, items, groups: List[Tensor], dtypes: Optional[Sequence[torch.dtype]] = None,
                 keys: Optional[Sequence[str]] = None):
        super().__init__(items)
        self._groups = groups
        self.dtypes = dtypes
        self.keys_ = keys

    @property
    def groups(self) -> List[Tensor]:
        """The [B, total_dim] output of each storage group (its features' columns in config order)."""
        return self._groups

    def by_dtype(self) -> Dict[torch.dtype, Tensor]:
        """tables' dtype -> the [B, total_dim] output of their group."""
        if self.dtypes is None:
            raise ValueError("EmbeddingBagOutput.by_dtype: this output does not record its groups' dtypes")
        if len(set(self.dtypes)) != len(self.dtypes):
            raise ValueError("EmbeddingBagOutput.by_dtype: static and dynamic tables share a dtype here; use "
                             "by_group()")
        return dict(zip(self.dtypes, self._groups))

    def by_group(self) -> Dict[str, Tensor]:
        """TableGroup.suffix -> the [B, total_dim] output of that group."""
        if self.keys_ is None:
            raise ValueError("EmbeddingBagOutput.by_group: this output does not record its groups")
        return dict(zip(self.keys_, self._groups))

    def concat(self) -> Tensor:
        """[B, sum D] of every feature (config order within each dtype group, groups in order of first use); a
        view of the kernel output when all tables share one dtype, else a float32 concatenation."""
        if len(self._groups) == 1:
            return self._groups[0]
        return torch.cat([g.float() for g in self._groups], dim=1)


class TableGroup:
    """Tables sharing one storage dtype: layout of the flat buffer and of the features reading it.

    Read-only attributes: `dtype`; `tables` (configs, in config order); `features`: (feature name, table config,
    first output column) of every feature reading them; `feature_names`; `total_dim` (output columns, sum of the
    features' dims); `max_dim`; `has_max` (some feature max-pools); `numel` / `num_rows` of the flat buffer and
    `table_elem` / `table_row`: table name -> its first element / global row there; `table_rows`: table name ->
    its rows in the buffer; `suffix` (the dtype's name, `dyn_` before it for dynamic tables, in the buffer
    names `weights_<suffix>`, `state0_<suffix>`, `state1_<suffix>`); `int8` (quantize_() packed the group into
    int8 rows); `dynamic` (the group holds the dynamic tables of its dtype: each has its current capacity plus
    one zero row, the row of ids without one, given by `capacities`)."""

    def __init__(self, dtype: torch.dtype, tables: List[EmbeddingBagConfig], dynamic: bool = False,
                 capacities: Optional[Dict[str, int]] = None):
        self.dtype, self.tables, self.dynamic = dtype, tables, dynamic
        self.table_elem, self.table_row, self.table_rows = {}, {}, {}
        elem = row = 0
        for t in tables:
            rows = (capacities or {}).get(t.name, t.num_embeddings) + 1 if dynamic else t.num_embeddings
            self.table_elem[t.name], self.table_row[t.name], self.table_rows[t.name] = elem, row, rows
            elem += rows * t.embedding_dim
            row += rows
        self.numel, self.num_rows = elem, row
        self.features: List[Tuple[str, EmbeddingBagConfig, int]] = []  # (feature, table, output column)
        col = 0
        for t in tables:
            for f in t.feature_names:
                self.features.append((f, t, col))
                col += t.embedding_dim
        self.total_dim = col
        self.max_dim = max((t.embedding_dim for t in tables), default=0)
        self.int8 = False
        self.feature_names = [f for f, _, _ in self.features]
        self.has_max = any(t.pooling == "max" for _, t, _ in self.features)
        self.weights_name, self.meta_name = f"weights_{self.suffix}", f"meta_{self.suffix}"
        self.state_names = (f"state0_{self.suffix}", f"state1_{self.suffix}")

    def meta(self, device) -> Tensor:
        rows, int8_elem, pos = [], {}, 0
        for t in self.tables:  # int8 rows carry 8 bytes of scale and bias
            int8_elem[t.name] = pos
            pos += self.table_rows[t.name] * (t.embedding_dim + 8)
        for _, t, col in self.features:
            d = t.embedding_dim
            stride = d + 8 if self.int8 else d
            elem = int8_elem[t.name] if self.int8 else self.table_elem[t.name]
            rows.append(meta_row(weight_offset=elem, row_offset=self.table_row[t.name], num_rows=self.table_rows[t.name],
                                 dim=d, row_stride=stride, pooling=POOLING[t.pooling], out_column=col))
        return torch.tensor(rows, dtype=torch.int64, device=device).reshape(-1, META_COLS)

    @property
    def suffix(self) -> str:
        return ("dyn_" if self.dynamic else "") + str(self.dtype).replace("torch.", "")


Features = Union[KeyedJagged, Dict[str, Tuple[Tensor, Tensor]]]


def _prefix(op: Optional[str]) -> str:
    return f"{op}: " if op else ""


def _is_integer(t: Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _check_dict_feature(prefix: str, name: str, item) -> None:
    """One feature of a dict input: integer 1-D values (ids are never truncated) and offsets [B + 1] that start
    at 0, never decrease and end at len(values), so no id can move to a neighbouring feature (one host copy of
    three numbers a feature)."""
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 3) or not all(
            isinstance(t, Tensor) for t in item[:2]):
        got = (f"a {type(item).__name__} of {len(item)}" if isinstance(item, (tuple, list)) else type(item))
        raise TypeError(f"{prefix}feature {name!r} must be (values, offsets) or (values, offsets, weights) "
                        f"tensors, got {got}")
    values, offsets = item[0], item[1]
    for arg, t in (("values", values), ("offsets", offsets)):
        if not _is_integer(t):
            raise TypeError(f"{prefix}feature {name!r} {arg} must be an integer tensor, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"{prefix}feature {name!r} {arg} must be 1-D, got shape {tuple(t.shape)}")
    if offsets.shape[0] < 1:
        raise ValueError(f"{prefix}feature {name!r} offsets must have at least 1 element, got 0")
    check_offsets_values(f"{prefix}feature {name!r} offsets", offsets, values.shape[0])


def _huge(buffer: Tensor) -> Tensor:
    """Large CPU tables get transparent huge pages before their first touch (Linux, THP in madvise mode): random
    row reads and updates then stop missing the TLB on every row (-25% time for a random row update sweep over
    a 2 GB table on the 2-core VM). No effect elsewhere."""
    if buffer.device.type == "cpu" and buffer.nbytes >= (8 << 20):
        _C.advise_huge_pages(buffer)
    return buffer


class EmbeddingBagCollection(DynamicTablesMixin, nn.Module):
    """Pooled embedding tables, all tables of one dtype in one flat buffer and one kernel launch for every feature.

    Args:
        tables: EmbeddingBagConfig list (distinct table and feature names).
        optimizer: optional FusedOptimizer. With it the weights are buffers updated inside the backward (no
            .grad); optimizer state and the step counter are in state_dict(). Without it each flat buffer is an
            nn.Parameter with a dense gradient for any torch optimizer.
        device: where the tables live.

    forward(features) takes a KeyedJagged (keys = feature names; per-id weights, sum pooling only) or a dict
    name -> (indices, offsets [B + 1]) and returns an EmbeddingBagOutput: name -> [B, D] and `.concat()`.

    Dynamic tables (EmbeddingBagConfig(dynamic=DynamicTable(...)), recops.nn.dynamic) read raw int64 ids: a
    training forward with grad (the one that steps the fused optimizer, which they need) admits, evicts and
    expires ids and re-initialises reassigned rows (weights and optimizer state); any other forward never
    changes the map, and ids without a row read zeros. Their state_dict entries hold only the live rows
    (`dynamic.<table>.*`); num_live / live_ids / export / set_time serve them. The id map is CPU-only: a CUDA
    collection resolves ids on the host and copies rows over.
    """

    def __init__(self, tables: Sequence[EmbeddingBagConfig], optimizer: Optional[FusedOptimizer] = None,
                 device=None):
        super().__init__()
        tables = list(tables)
        names = [t.name for t in tables]
        feats = [f for t in tables for f in t.feature_names]
        if len(set(names)) != len(names) or len(set(feats)) != len(feats):
            raise ValueError(f"EmbeddingBagCollection: table and feature names must be distinct, got {names} "
                             f"and {feats}")
        self.tables = tables
        self.optimizer = optimizer
        dyn = [t for t in tables if t.dynamic is not None]
        if dyn and optimizer is None:
            raise ValueError(f"EmbeddingBagCollection: dynamic tables {[t.name for t in dyn]} need a FusedOptimizer "
                             "(their rows change owners, so their optimizer state must live with them)")
        self._dyn: Dict[str, DynamicState] = {t.name: DynamicState(t.name, t.embedding_dim, t.dynamic) for t in dyn}
        self._clock: Optional[float] = None  # None: ttl counts steps
        self._groups = self.layout(tables)
        self._zero_dirty = [g.dynamic for g in self._groups]
        self._names = ["\n".join(g.feature_names) for g in self._groups]
        self._weights_need_check = any(t.pooling != "sum" for t in tables)  # per-id weights are then rejected
        self._table_group = {t.name: gi for gi, g in enumerate(self._groups) for t in g.tables}
        self._dtypes = tuple(g.dtype for g in self._groups)
        self._order = [gi for gi, g in enumerate(self._groups) if not g.dynamic] + [
            gi for gi, g in enumerate(self._groups) if g.dynamic]
        for gi, g in enumerate(self._groups):
            flat = _huge(torch.empty(g.numel, dtype=g.dtype, device=device))
            if optimizer is None:
                self.register_parameter(g.weights_name, nn.Parameter(flat))
            else:  # dynamic groups save their live rows only (_save_to_state_dict)
                self.register_buffer(g.weights_name, flat, persistent=not g.dynamic)
                s0, s1 = self._state_sizes(g)
                self.register_buffer(g.state_names[0], _huge(torch.empty(s0, device=device)).zero_(),
                                     persistent=not g.dynamic)
                self.register_buffer(g.state_names[1], _huge(torch.empty(s1, device=device)).zero_(),
                                     persistent=not g.dynamic)
            self.register_buffer(g.meta_name, g.meta(device), persistent=False)
        # CPU int64 0-d (never moved by .to()): the fused ops read it without a device sync, and a compiled graph
        # takes it as an input, so neither specialises on its value.
        self._step_counter = torch.zeros((), dtype=torch.int64)
        self._anchor = torch.empty(0, requires_grad=True)
        self._checked_keys: Optional[List[str]] = None
        self.reset_parameters()

    def _state_sizes(self, g: TableGroup) -> Tuple[int, int]:
        kind = self.optimizer.kind
        return {"sgd": (0, 0), "adagrad": (g.numel, 0), "rowwise_adagrad": (g.num_rows, 0),
                "adam": (g.numel, g.numel)}[kind]

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(V), 1/sqrt(V)) per table (TorchRec's default); optimizer state and step to zero.
        Dynamic tables become empty (no id holds a row; rows are initialised when assigned)."""
        self.clear_dynamic()
        with torch.no_grad():
            for t in self.tables:
                if t.num_embeddings and t.dynamic is None:
                    bound = 1.0 / math.sqrt(t.num_embeddings)
                    self.table(t.name).copy_(torch.empty(t.num_embeddings, t.embedding_dim).uniform_(-bound, bound))
        self.reset_optimizer_state()

    @torch.no_grad()
    def reset_optimizer_state(self) -> None:
        """Fused-optimizer state (accumulators, moments) and the step counter to zero; weights unchanged."""
        for g in self._groups:
            for name in g.state_names:
                buf = self._buffers.get(name)
                if buf is not None:
                    buf.zero_()
        self.step = 0

    def extra_repr(self) -> str:
        opt = f", optimizer={self.optimizer.kind}" if self.optimizer else ""
        return f"tables={[(t.name, t.num_embeddings, t.embedding_dim, t.pooling) for t in self.tables]}{opt}"

    # ---- step counter ------------------------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """Fused-optimizer steps taken: training-mode forwards with grad enabled (each one's backward applies the
        update of step `step` after it). Adam's bias correction and the stochastic-rounding seed read it. A plain
        Python int, kept in a CPU int64 0-d tensor that forward advances with a tensor op (torch.compile then
        neither guards nor recompiles on it); state_dict() holds it as the 0-d int64 tensor "step" (the buffer of
        earlier versions)."""
        return int(self._step_counter)

    @step.setter
    def step(self, value) -> None:
        self._step_counter.fill_(int(value))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.optimizer is not None:
            device = self._weights(0).device if self._groups else None
            destination[prefix + "step"] = self._step_counter.to(device, copy=True)
        for name in self._dyn:
            for k, v in self.dynamic_state(name).items():
                destination[f"{prefix}dynamic.{name}.{k}"] = v
        if self._dyn:
            destination[prefix + "dynamic_clock"] = torch.tensor(
                [0.0 if self._clock is None else 1.0, self._clock or 0.0], dtype=torch.float64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._load_dynamic(state_dict, prefix, strict, missing_keys, unexpected_keys, error_msgs)
        key = prefix + "step"
        if self.optimizer is None:  # a "step" entry stays unexpected, as for any other unknown key
            return
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        if key not in state_dict:
            if strict:
                missing_keys.append(key)
            return
        value = state_dict[key]
        if isinstance(value, Tensor) and value.numel() != 1:
            error_msgs.append(f'size mismatch for {key}: the step counter is one number, got shape '
                              f'{tuple(value.shape)}')
            return
        self.step = value

    # ---- layout and tables -------------------------------------------------------------------------------------

    @staticmethod
    def layout(tables: Sequence[EmbeddingBagConfig], capacities: Optional[Dict[str, int]] = None) -> List[TableGroup]:
        """The storage groups an EmbeddingBagCollection over `tables` builds: one TableGroup per storage dtype for
        the static tables and one per dtype for the dynamic ones, in order of first use (the order of
        EmbeddingBagOutput.groups and of `.concat()`). capacities: current rows of dynamic tables (default
        their configured capacity)."""
        tables = list(tables)
        keys = dict.fromkeys((t.dtype, t.dynamic is not None) for t in tables)
        return [TableGroup(dt, [t for t in tables if t.dtype == dt and (t.dynamic is not None) == dyn], dyn,
                           capacities) for dt, dyn in keys]

    @property
    def groups(self) -> List[TableGroup]:
        """This collection's storage groups (see layout)."""
        return list(self._groups)

    @property
    def feature_names(self) -> List[str]:
        """Every feature of every table, in config order."""
        return [f for t in self.tables for f in t.feature_names]

    def _weights(self, gi: int) -> Tensor:
        name = self._groups[gi].weights_name
        w = self._parameters.get(name)
        return self._buffers[name] if w is None else w

    def _float_group(self, name: str, what: str) -> Tuple[TableGroup, EmbeddingBagConfig]:
        if name not in self._table_group:
            raise KeyError(f"EmbeddingBagCollection: no table {name!r}")
        g = self._groups[self._table_group[name]]
        if g.int8:
            raise TypeError(f"EmbeddingBagCollection: table {name!r} is int8-quantised; {what} needs float storage")
        return g, next(t for t in g.tables if t.name == name)

    def table(self, name: str) -> Tensor:
        """Writable [num_embeddings, embedding_dim] view of one table's weights (float tables only; a dynamic
        table: [capacity, D], row r the row of the id the map gives r)."""
        g, t = self._float_group(name, "table()")
        return self._views(g, t, self._rows_of(g, t), "table()")["weight"]

    def table_views(self, name: str) -> Dict[str, Tensor]:
        """Writable per-row views of one table (float tables only), detached from autograd: "weight" [V, D] and,
        with a fused optimizer, "state0" ([V, D] for adagrad and adam, [V] for rowwise_adagrad) and "state1"
        [V, D] (adam). Row r of every view belongs to row r of the table (V: the capacity of a dynamic table)."""
        g, t = self._float_group(name, "table_views()")
        views = self._views(g, t, self._rows_of(g, t), "table_views()")
        views["weight"] = views["weight"].detach()
        return views

    @staticmethod
    def _rows_of(g: TableGroup, t: EmbeddingBagConfig) -> int:
        """Rows a user sees (the zero row of a dynamic table excluded)."""
        return g.table_rows[t.name] - 1 if g.dynamic else t.num_embeddings

    def _views(self, g: TableGroup, t: EmbeddingBagConfig, v: int, what: str) -> Dict[str, Tensor]:
        d, name = t.embedding_dim, t.name
        e, r = g.table_elem[name], g.table_row[name]
        flat = self._weights(self._table_group[name])
        views = {"weight": flat[e:e + v * d].view(v, d)}
        kind = self.optimizer.kind if self.optimizer is not None else None
        if kind in ("adagrad", "adam"):
            views["state0"] = self._buffers[g.state_names[0]][e:e + v * d].view(v, d)
        if kind == "rowwise_adagrad":
            views["state0"] = self._buffers[g.state_names[0]][r:r + v]
        if kind == "adam":
            views["state1"] = self._buffers[g.state_names[1]][e:e + v * d].view(v, d)
        return views

    def memory_bytes(self) -> int:
        """Bytes held by the tables: weight and optimizer-state buffers plus the dynamic tables' id maps."""
        bufs = sum(b.nbytes for b in self.buffers()) + sum(p.nbytes for p in self.parameters())
        return int(bufs + sum(st.config.map_bytes(st.capacity) for st in self._dyn.values()))

    # ---- input ---------------------------------------------------------------------------------------------------

    @staticmethod
    def to_keyed_jagged(features: Features, op: Optional[str] = "EmbeddingBagCollection") -> KeyedJagged:
        """The KeyedJagged of a forward's input: a KeyedJagged itself, or a dict name -> (indices, offsets[,
        weights]) through KeyedJagged.from_dict. TypeError for anything else; `op` (None: nothing) leads the
        message."""
        if isinstance(features, KeyedJagged):
            return features
        if isinstance(features, dict):
            for name, item in features.items():
                _check_dict_feature(_prefix(op), name, item)
            return KeyedJagged.from_dict(features)
        raise TypeError(f"{_prefix(op)}features must be a KeyedJagged or a dict, got {type(features)}")

    @staticmethod
    def check_features(features: KeyedJagged, tables: Sequence[EmbeddingBagConfig],
                       op: Optional[str] = "EmbeddingBagCollection") -> None:
        """ValueError unless the keys of `features` are exactly the features of `tables` (any order) and, when it
        has per-id weights, every table sum-pools. `op` (None: nothing) leads the messages."""
        names = [f for t in tables for f in t.feature_names]
        known, keys = set(names), set(features.keys)
        unknown = [k for k in features.keys if k not in known]
        missing = [f for f in names if f not in keys]
        if unknown or missing:
            got = ([f"unknown {unknown} (not features of any table)"] if unknown else []) + (
                [f"missing {missing}"] if missing else [])
            raise ValueError(f"{_prefix(op)}the input's keys must be exactly the tables' features {names}, got "
                             f"{' and '.join(got)}")
        if features.weights is not None:
            bad = [t.name for t in tables if t.pooling != "sum"]
            if bad:
                raise ValueError(f"{_prefix(op)}per-id weights need sum pooling, tables {bad} are not")

    # ---- forward -------------------------------------------------------------------------------------------------

    def forward(self, features: Features) -> EmbeddingBagOutput:
        kjt = features if type(features) is KeyedJagged else self.to_keyed_jagged(features)
        # keys are validated once per distinct key list, not per batch
        if kjt.keys != self._checked_keys or (kjt.weights is not None and self._weights_need_check):
            self.check_features(kjt, self.tables)
            self._checked_keys = list(kjt.keys)
        batch = kjt.stride()
        grad_mode = torch.is_grad_enabled()
        opt = self.optimizer
        fused = opt is not None and grad_mode and self.training
        step = self._step_counter + 1 if fused else None
        items, outs = {}, [None] * len(self._groups)
        if self._dyn:  # raw ids are sliced on the host by these offsets before any kernel sees them
            check_offsets_values("EmbeddingBagCollection: offsets", kjt.offsets, kjt.values.shape[0])
        # Static groups first: their kernels validate every id before a dynamic table changes anything.
        for gi in self._order:
            g = self._groups[gi]
            values, offsets, weights = kjt.select(g.feature_names)
            if fused and g.int8:
                raise ValueError("EmbeddingBagCollection: int8-quantised tables are inference-only; call eval()")
            if g.dynamic:
                if self._zero_dirty[gi]:
                    self._reset_zero_rows(gi)
                values = self._resolve(gi, values, offsets, batch, fused)
                g = self._groups[gi]
                self._zero_dirty[gi] = fused
            psw = None if weights is None else weights.to(ops.acc_dtype(g.dtype))
            w, meta = self._weights(gi), self._buffers[g.meta_name]
            if fused:
                out = ops.embedding_bags_fused(
                    self._anchor, w, meta, values, offsets, psw, batch, g.total_dim, g.max_dim, g.has_max,
                    self._names[gi], self._buffers[g.state_names[0]], self._buffers[g.state_names[1]],
                    OPTIMIZERS[opt.kind], opt.lr, opt.eps, opt.beta1, opt.beta2, 0,
                    opt.stochastic_rounding and g.dtype == torch.bfloat16, opt.seed, step)
            else:
                need_argmax = w.requires_grad and grad_mode and g.has_max
                # Without autograd (inference, frozen tables) and outside compile: the op body directly.
                direct = not (w.requires_grad and grad_mode) and eager(w, values, offsets, psw)
                lookup = ops.embedding_bags_impl if direct else ops.embedding_bags
                out, _ = lookup(w, meta, values, offsets, psw, batch, g.total_dim, g.max_dim, need_argmax,
                                self._names[gi])
            outs[gi] = out
            for f, t, col in g.features:
                items[f] = out[:, col:col + t.embedding_dim]
        if fused:  # after every group's lookup succeeded: a rejected batch changes nothing
            self._step_counter.copy_(step)
        return EmbeddingBagOutput({f: items[f] for g in self._groups for f in g.feature_names}, outs, self._dtypes,
                                  [g.suffix for g in self._groups])

    @torch.no_grad()
    def quantize_(self, dtype: torch.dtype = torch.int8) -> "EmbeddingBagCollection":
        """Inference-only int8 rowwise quantisation in place (FBGEMM layout: per row D uint8 codes, then float32
        scale = (max - min) / 255 and bias = min). Forward then returns float32; training raises."""
        if dtype != torch.int8:
            raise TypeError(f"EmbeddingBagCollection.quantize_: dtype must be torch.int8, got {dtype}")
        for gi, g in enumerate(self._groups):
            if g.int8:
                continue
            if g.dynamic and self._zero_dirty[gi]:
                self._reset_zero_rows(gi)
            rows = []
            for t in g.tables:
                w = self._views(g, t, g.table_rows[t.name], "quantize_")["weight"].float()
                lo = w.amin(dim=1, keepdim=True) if t.embedding_dim else w.new_zeros(w.shape[0], 1)
                hi = w.amax(dim=1, keepdim=True) if t.embedding_dim else w.new_zeros(w.shape[0], 1)
                scale = (hi - lo) / 255.0
                codes = torch.where(scale > 0, ((w - lo) / torch.where(scale > 0, scale, 1)).round(), 0)
                sb = torch.cat([scale, lo], dim=1).contiguous().view(torch.uint8)
                rows.append(torch.cat([codes.to(torch.uint8), sb], dim=1).reshape(-1))
            name = g.weights_name
            packed = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.uint8)
            if name in self._parameters:
                del self._parameters[name]
            elif name in self._buffers:
                del self._buffers[name]
            self.register_buffer(name, packed)
            g.int8 = True
            setattr(self, g.meta_name, g.meta(packed.device))
        return self
