# SPDX-License-Identifier: Apache-2.0
"""EmbeddingBagCollection and KeyedJagged: forward vs per-table nn.EmbeddingBag, fused training vs torch's sparse
gradient + optimizer, state_dict and the step counter, low-precision storage, int8 quantisation, error paths,
torch.compile of the fused training step."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import recops
from recops.nn import EmbeddingBagCollection, EmbeddingBagConfig, FusedOptimizer
from recops.ops import embedding_ref as ref

B = 6


def _tables(dtype=torch.float32, pooling=("sum", "mean")):
    return [EmbeddingBagConfig("t0", 40, 8, ["a", "b"], pooling=pooling[0], dtype=dtype),
            EmbeddingBagConfig("t1", 25, 4, pooling=pooling[1], dtype=dtype)]


FEATURES = [("a", "t0"), ("b", "t0"), ("t1", "t1")]


def _batch(tables, gen, max_len=5, weighted=False, device="cpu"):
    rows = {f: t.num_embeddings for t in tables for f in t.feature_names}
    d = {}
    for f, v in rows.items():
        lens = torch.randint(0, max_len, (B,), generator=gen)
        off = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)])
        idx = torch.randint(0, v, (int(off[-1]),), generator=gen)
        item = (idx.to(device), off.to(device))
        d[f] = item + (torch.rand(idx.shape[0], generator=gen).to(device),) if weighted else item
    return d


def _table_of(tables):
    return {f: t for t in tables for f in t.feature_names}


def _reference_forward(ebc, tables, d):
    out = {}
    for f, t in _table_of(tables).items():
        psw = d[f][2] if len(d[f]) > 2 else None
        out[f] = F.embedding_bag(d[f][0], ebc.table(t.name).float(), d[f][1], mode=t.pooling,
                                 per_sample_weights=psw, include_last_offset=True)
    return out


# ---- forward ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pooling", [("sum", "mean"), ("max", "sum")])
def test_forward_matches_embedding_bag(device, dtype, pooling):
    tables = _tables(dtype, pooling)
    ebc = EmbeddingBagCollection(tables, device=device)
    d = _batch(tables, torch.Generator().manual_seed(1), device=device)
    out = ebc(d)
    tol = dict(atol=2e-2, rtol=2e-2) if dtype != torch.float32 else {}
    for f, want in _reference_forward(ebc, tables, d).items():
        torch.testing.assert_close(out[f].float(), want, **tol)
    assert out.concat().shape == (B, 8 + 8 + 4)
    assert out.concat().data_ptr() == out["a"].data_ptr()  # dict entries are views of the one output


def test_keyed_jagged_round_trip_and_weights():
    tables = _tables()
    ebc = EmbeddingBagCollection(tables)
    d = _batch(tables, torch.Generator().manual_seed(2), weighted=True)
    kjt = recops.KeyedJagged.from_dict(d)
    assert kjt.stride() == B and kjt.offsets.shape[0] == 3 * B + 1
    back = kjt.to_dict()
    for k in d:
        for x, y in zip(back[k], d[k]):
            assert torch.equal(x, y)
    tables_w = [EmbeddingBagConfig("t0", 40, 8, ["a", "b"]), EmbeddingBagConfig("t1", 25, 4)]
    ebc = EmbeddingBagCollection(tables_w)
    out = ebc(kjt)
    for f, want in _reference_forward(ebc, tables_w, d).items():
        torch.testing.assert_close(out[f], want)
    # Keys in another order than the config: same result.
    kjt2 = recops.KeyedJagged.from_dict({k: d[k] for k in ["t1", "b", "a"]})
    out2 = ebc(kjt2)
    for f in out:
        torch.testing.assert_close(out2[f], out[f])


def test_mixed_dtypes_concat():
    tables = [EmbeddingBagConfig("x", 10, 4), EmbeddingBagConfig("y", 10, 2, dtype=torch.bfloat16)]
    ebc = EmbeddingBagCollection(tables)
    d = _batch(tables, torch.Generator().manual_seed(3))
    out = ebc(d)
    assert out.concat().shape == (B, 6) and out.concat().dtype == torch.float32
    assert out["y"].dtype == torch.bfloat16


# ---- fused training vs torch ---------------------------------------------------------------------------------

def _torch_opt(kind, params, lr):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if kind == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    return torch.optim.SparseAdam(params, lr=lr)


def _train_reference(ebc, tables, batches, grads, step_fn):
    """Per-table nn.EmbeddingBag(sparse=True) models trained with step_fn(list of weights)."""
    # torch has no sparse gradient for max pooling; its dense gradient gives the same SGD/Adagrad steps.
    refs = {t.name: torch.nn.EmbeddingBag(t.num_embeddings, t.embedding_dim, mode=t.pooling,
                                          sparse=t.pooling != "max", include_last_offset=True) for t in tables}
    for t in tables:
        with torch.no_grad():
            refs[t.name].weight.copy_(ebc.table(t.name).float())
    step = step_fn([m.weight for m in refs.values()])
    for d, g in zip(batches, grads):
        loss = sum((refs[t.name](*d[f][:2], per_sample_weights=d[f][2] if len(d[f]) > 2 else None) * g[f]).sum()
                   for f, t in _table_of(tables).items())
        for m in refs.values():
            m.weight.grad = None
        loss.backward()
        step(refs)
    return refs


def _rowwise_adagrad_step(tables, acc, lr, eps):
    """The small rowwise-Adagrad reference: per touched row, acc += mean(g^2), w -= lr * g / (sqrt(acc) + eps)."""
    def step(refs):
        for t in tables:
            w = refs[t.name].weight
            if w.grad.is_sparse:
                gsum = w.grad.coalesce()
                rows, vals = gsum.indices()[0], gsum.values()
            else:  # max pooling: dense; a touched row with a zero gradient does not move either way
                rows = torch.nonzero(w.grad.abs().sum(dim=1))[:, 0]
                vals = w.grad[rows]
            acc[t.name][rows] += vals.pow(2).mean(dim=1)
            with torch.no_grad():
                w[rows] -= lr * vals / (acc[t.name][rows].sqrt() + eps)[:, None]
    return step


def _step_fn(kind, tables, acc, lr, eps):
    """step_fn for _train_reference: torch's optimizer of that kind, or the rowwise-Adagrad reference on acc."""
    def step_fn(params):
        if kind != "rowwise_adagrad":
            opt = _torch_opt(kind, params, lr)
            return lambda refs: opt.step()
        return _rowwise_adagrad_step(tables, acc, lr, eps)
    return step_fn


def _train_fused(ebc, batches, grads):
    for d, g in zip(batches, grads):
        out = ebc(d)
        sum((out[f].float() * g[f]).sum() for f in out).backward()


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "adam"])
@pytest.mark.parametrize("pooling", [("sum", "mean"), ("max", "sum")])
def test_fused_training_matches_torch(device, kind, pooling):
    if kind == "adam" and "max" in pooling:
        pytest.skip("torch.optim.SparseAdam needs sparse gradients, which max pooling lacks in torch")
    tables = _tables(pooling=pooling)
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer(kind, lr=0.05), device=device)
    gen = torch.Generator().manual_seed(4)
    batches = [_batch(tables, gen, device=device) for _ in range(4)]
    grads = [{f: torch.randn(B, t.embedding_dim, generator=gen).to(device) for f, t in _table_of(tables).items()}
             for _ in batches]

    def step_fn(params):
        opt = _torch_opt(kind, params, 0.05)
        return lambda refs: opt.step()

    refs = _train_reference(ebc, tables, batches, grads, step_fn)
    _train_fused(ebc, batches, grads)
    for t in tables:
        torch.testing.assert_close(ebc.table(t.name), refs[t.name].weight.detach(), atol=1e-5, rtol=1e-5)
        assert ebc.table(t.name).grad is None


def test_rowwise_adagrad_matches_small_reference():
    tables = _tables(pooling=("sum", "sum"))
    lr, eps = 0.1, 1e-8
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("rowwise_adagrad", lr=lr, eps=eps))
    gen = torch.Generator().manual_seed(5)
    batches = [_batch(tables, gen, weighted=True) for _ in range(3)]
    grads = [{f: torch.randn(B, t.embedding_dim, generator=gen) for f, t in _table_of(tables).items()}
             for _ in batches]
    acc = {t.name: torch.zeros(t.num_embeddings) for t in tables}

    def step_fn(params):
        return _rowwise_adagrad_step(tables, acc, lr, eps)

    refs = _train_reference(ebc, tables, batches, grads, step_fn)
    _train_fused(ebc, batches, grads)
    for t in tables:
        torch.testing.assert_close(ebc.table(t.name), refs[t.name].weight.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ebc.state0_float32, torch.cat([acc["t0"], acc["t1"]]))


@pytest.mark.parametrize("kind", ["sgd", "rowwise_adagrad", "adagrad"])
@pytest.mark.parametrize("dim", [8, 16, 24, 32, 64, 128])
def test_fused_update_widths(kind, dim):
    """Row widths 8..128 take the in-register update (24: the general loop); heavy repetition, mean pooling."""
    tables = [EmbeddingBagConfig("w", 30, dim, pooling="mean"), EmbeddingBagConfig("v", 7, dim)]
    lr, eps = 0.05, 1e-8
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer(kind, lr=lr, eps=eps))
    gen = torch.Generator().manual_seed(dim)
    batches = [_batch(tables, gen, max_len=12) for _ in range(3)]
    grads = [{f: torch.randn(B, dim, generator=gen) for f in ("w", "v")} for _ in batches]
    acc = {t.name: torch.zeros(t.num_embeddings) for t in tables}
    refs = _train_reference(ebc, tables, batches, grads, _step_fn(kind, tables, acc, lr, eps))
    _train_fused(ebc, batches, grads)
    for t in tables:
        torch.testing.assert_close(ebc.table(t.name), refs[t.name].weight.detach(), atol=1e-5, rtol=1e-5)
    if kind == "rowwise_adagrad":
        torch.testing.assert_close(ebc.state0_float32, torch.cat([acc["w"], acc["v"]]))


def _wide_batch(tables, gen, batch, max_len, weighted):
    """Long bags over wide tables: 30% of the big table's lookups on 64 hot rows (runs of ~100 keys); the small
    table's all within its first 200 rows (buckets whose upper row bits agree); the sparse table's a few short bags
    over 20 pairs of adjacent rows far apart (buckets of a few keys, each row repeated and interleaved with its
    neighbour)."""
    d = {}
    for f, t in _table_of(tables).items():
        lens = torch.randint(0, 8 if t.name == "sparse" else max_len, (batch,), generator=gen)
        off = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)])
        n = int(off[-1])
        if t.name == "small":
            idx = torch.randint(0, 200, (n,), generator=gen)
        elif t.name == "sparse":
            idx = torch.randint(0, 20, (n,), generator=gen) * 2500 + torch.randint(0, 2, (n,), generator=gen)
        else:
            idx = torch.randint(0, t.num_embeddings, (n,), generator=gen)
            hot = torch.rand(n, generator=gen) < 0.3
            idx[hot] = torch.randint(0, 64, (int(hot.sum()),), generator=gen) * (t.num_embeddings // 64)
        d[f] = (idx, off) + ((torch.rand(n, generator=gen),) if weighted else ())
    return d


@pytest.mark.parametrize("kind", ["sgd", "rowwise_adagrad"])
@pytest.mark.parametrize("variant", ["sum_mean", "weighted", "max"])
def test_fused_training_wide_tables_many_lookups(kind, variant):
    """Tens of thousands of keys over 2^17 rows: the backward's partitioned row sort (buckets sorted in cache,
    small ones by std::sort, digits shared by a whole bucket skipped), with keys per bag (sum/mean) or per position
    (per-sample weights, max pooling); also identical for 1 and 2 threads. Tolerance 1e-4: a hot row sums ~100
    gradient rows in float32, in an order other than torch's. (Elementwise Adagrad is left to the smaller tests: its
    first steps divide by |g|, which turns that rounding into sign flips where a sum lands near 0; max pooling takes
    one step, since a rounding difference in the first could change which row wins a bag's max in the second.)"""
    pooling = {"sum_mean": ("sum", "mean"), "weighted": ("sum", "sum"), "max": ("max", "mean")}[variant]
    tables = [EmbeddingBagConfig("big", 70_000, 16, ["a", "b"], pooling=pooling[0]),
              EmbeddingBagConfig("small", 5_000, 8, pooling=pooling[1]),
              EmbeddingBagConfig("sparse", 50_000, 8, pooling=pooling[1])]
    lr, eps, batch = 0.05, 1e-8, 48
    gen = torch.Generator().manual_seed(11)
    batches = [_wide_batch(tables, gen, batch, 400, variant == "weighted") for _ in range(1 if variant == "max" else 2)]
    assert sum(d[0].numel() for d in batches[0].values()) > 20_000
    grads = [{f: torch.randn(batch, t.embedding_dim, generator=gen) for f, t in _table_of(tables).items()}
             for _ in batches]
    acc = {t.name: torch.zeros(t.num_embeddings) for t in tables}
    torch.manual_seed(0)
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer(kind, lr=lr, eps=eps))
    initial = copy.deepcopy(ebc)
    refs = _train_reference(ebc, tables, batches, grads, _step_fn(kind, tables, acc, lr, eps))
    _train_fused(ebc, batches, grads)
    for t in tables:
        torch.testing.assert_close(ebc.table(t.name), refs[t.name].weight.detach(), atol=1e-4, rtol=1e-4)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if old > 1 else 2)
        _train_fused(initial, batches, grads)
    finally:
        torch.set_num_threads(old)
    for t in tables:
        assert torch.equal(initial.table(t.name), ebc.table(t.name))


def test_fused_backward_deterministic():
    tables = [EmbeddingBagConfig("z", 50, 16)]
    d = {"z": (torch.randint(0, 50, (600,)), torch.arange(0, 601, 100))}
    g = torch.randn(6, 16)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("rowwise_adagrad", lr=0.1))
            (ebc(d)["z"] * g).sum().backward()
            results.append(ebc.table("z").clone())
    finally:
        torch.set_num_threads(old)
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("stochastic", [False, True])
def test_low_precision_training_close_to_fp32(dtype, stochastic):
    if stochastic and dtype == torch.float16:
        pytest.skip("stochastic rounding is for bf16")
    opt = FusedOptimizer("rowwise_adagrad", lr=0.05, stochastic_rounding=stochastic)
    lp = EmbeddingBagCollection(_tables(dtype), optimizer=opt)
    fp = EmbeddingBagCollection(_tables(), optimizer=copy.copy(opt))
    for t in _tables():
        with torch.no_grad():
            fp.table(t.name).copy_(lp.table(t.name).float())
    gen = torch.Generator().manual_seed(6)
    batches = [_batch(_tables(), gen) for _ in range(3)]
    grads = [{f: torch.randn(B, t.embedding_dim, generator=gen) for f, t in _table_of(_tables()).items()}
             for _ in batches]
    _train_fused(lp, batches, grads)
    _train_fused(fp, batches, grads)
    for t in _tables():
        torch.testing.assert_close(lp.table(t.name).float(), fp.table(t.name), atol=3e-2, rtol=3e-2)


def test_no_optimizer_dense_grad():
    tables = _tables()
    ebc = EmbeddingBagCollection(tables)
    d = _batch(tables, torch.Generator().manual_seed(7))
    out = ebc(d)
    out.concat().sum().backward()
    g = ebc.weights_float32.grad
    assert g is not None and g.shape == ebc.weights_float32.shape
    w = ebc.weights_float32.detach().clone().requires_grad_()
    views = {"t0": w[:320].view(40, 8), "t1": w[320:].view(25, 4)}
    total = sum(F.embedding_bag(d[f][0], views[t.name], d[f][1], mode=t.pooling, include_last_offset=True).sum()
                for f, t in _table_of(tables).items())
    total.backward()
    torch.testing.assert_close(g, w.grad)


# ---- state_dict, int8 -----------------------------------------------------------------------------------------

def test_state_dict_round_trip():
    tables = _tables()
    a = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adam", lr=0.05))
    gen = torch.Generator().manual_seed(8)
    batches = [_batch(tables, gen) for _ in range(3)]
    grads = [{f: torch.randn(B, t.embedding_dim, generator=gen) for f, t in _table_of(tables).items()}
             for _ in batches]
    _train_fused(a, batches[:2], grads[:2])
    sd = a.state_dict()
    assert {"weights_float32", "state0_float32", "state1_float32", "step"} <= set(sd)
    b = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adam", lr=0.05))
    _train_fused(b, batches[:1], grads[:1])  # b's host copy of its step now says 1; the load must replace it
    b.load_state_dict(sd)
    _train_fused(a, batches[2:], grads[2:])
    _train_fused(b, batches[2:], grads[2:])
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_step_counter_follows_writes_to_the_buffer():
    """Adam's bias correction reads the step: after reset_parameters() (step 0) and after a direct write to the
    counter, training must match a module that took the same path from scratch."""
    tables = _tables()
    gen = torch.Generator().manual_seed(11)
    batches = [_batch(tables, gen) for _ in range(2)]
    grads = [{f: torch.randn(B, t.embedding_dim, generator=gen) for f, t in _table_of(tables).items()}
             for _ in batches]
    a = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adam", lr=0.05))
    _train_fused(a, batches, grads)
    a.reset_parameters()
    a.step = 5
    b = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adam", lr=0.05))
    with torch.no_grad():
        b.weights_float32.copy_(a.weights_float32)
    b.step = 5
    _train_fused(a, batches[:1], grads[:1])
    _train_fused(b, batches[:1], grads[:1])
    assert int(a.step) == int(b.step) == 6
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_step_is_an_int_saved_as_the_step_buffer():
    """The counter is a Python int; state_dict() keeps the 0-d int64 "step" entry of the former buffer (same key,
    same place), so checkpoints of either version load; strict loading wants it, modules without a fused
    optimizer have none."""
    tables = _tables()
    gen = torch.Generator().manual_seed(12)
    a = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adagrad", lr=0.05))
    _train_fused(a, [_batch(tables, gen) for _ in range(2)], [{f: torch.randn(B, t.embedding_dim, generator=gen)
                                                               for f, t in _table_of(tables).items()}] * 2)
    assert type(a.step) is int and a.step == 2
    sd = a.state_dict()
    assert list(sd) == ["weights_float32", "state0_float32", "state1_float32", "step"]
    assert sd["step"].dtype == torch.int64 and sd["step"].shape == () and int(sd["step"]) == 2
    d = _batch(tables, gen)
    with torch.no_grad():  # no-grad and eval-mode forwards take no step
        a(d)
    a.eval()(d)["a"].sum()
    assert a.train().step == 2
    b = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adagrad", lr=0.05))
    b.load_state_dict({**sd, "step": torch.tensor(7)})
    assert b.step == 7 and torch.equal(b.weights_float32, a.weights_float32)
    with pytest.raises(RuntimeError, match="Missing key.*\"step\""):
        b.load_state_dict({k: v for k, v in sd.items() if k != "step"})
    b.load_state_dict({k: v for k, v in sd.items() if k != "step"}, strict=False)
    assert b.step == 7
    with pytest.raises(RuntimeError, match="size mismatch for step"):
        b.load_state_dict({**sd, "step": torch.zeros(2)})
    nested = torch.nn.ModuleDict({"emb": b})
    assert int(nested.state_dict()["emb.step"]) == 7
    nested.load_state_dict({f"emb.{k}": v for k, v in sd.items()})
    assert b.step == 2
    plain = EmbeddingBagCollection(tables)
    assert "step" not in plain.state_dict()
    with pytest.raises(RuntimeError, match="Unexpected key.*\"step\""):
        plain.load_state_dict({"weights_float32": plain.weights_float32.detach(), "step": torch.tensor(1)})


def test_layout_table_views_and_output_groups():
    tables = _tables() + [EmbeddingBagConfig("h", 9, 4, dtype=torch.bfloat16)]
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adam", lr=0.05))
    groups = ebc.groups
    assert [g.dtype for g in groups] == [torch.float32, torch.bfloat16]
    assert [g.feature_names for g in groups] == [["a", "b", "t1"], ["h"]]
    assert [(f, t.name, col) for f, t, col in groups[0].features] == [("a", "t0", 0), ("b", "t0", 8), ("t1", "t1", 16)]
    assert [(g.dtype, g.total_dim) for g in EmbeddingBagCollection.layout(tables)] == [(torch.float32, 20),
                                                                                      (torch.bfloat16, 4)]
    assert ebc.feature_names == ["a", "b", "t1", "h"]
    gen = torch.Generator().manual_seed(13)
    d = _batch(tables, gen)
    _train_fused(ebc, [d], [{f: torch.randn(B, t.embedding_dim, generator=gen) for f, t in _table_of(tables).items()}])
    views = ebc.table_views("t1")
    assert sorted(views) == ["state0", "state1", "weight"] and not views["weight"].requires_grad
    assert torch.equal(views["weight"], ebc.table("t1"))
    assert torch.equal(views["state0"], ebc.state0_float32[320:].view(25, 4))
    views["state1"][3] = 1.0  # views write through
    assert torch.equal(ebc.state1_float32[320 + 12:320 + 16], torch.ones(4))
    rowwise = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("rowwise_adagrad"))
    assert rowwise.table_views("t1")["state0"].shape == (25,)
    assert sorted(EmbeddingBagCollection(tables).table_views("h")) == ["weight"]
    with pytest.raises(KeyError, match="no table 'zz'"):
        ebc.table_views("zz")
    with torch.no_grad():
        out = ebc(d)
    assert [o.shape for o in out.groups] == [(B, 20), (B, 4)]
    assert out.by_dtype()[torch.bfloat16] is out.groups[1] and out.by_dtype()[torch.float32] is out.groups[0]
    weights = ebc.weights_float32.clone()
    ebc.reset_optimizer_state()
    assert ebc.step == 0 and torch.equal(ebc.weights_float32, weights)
    assert all(torch.count_nonzero(b) == 0 for k, b in ebc.named_buffers() if k.startswith("state"))


@pytest.mark.parametrize("pooling", [("sum", "mean"), ("max", "sum")])
def test_quantize_int8_matches_dequantized(pooling):
    tables = _tables(pooling=pooling)
    ebc = EmbeddingBagCollection(tables).eval()
    d = _batch(tables, torch.Generator().manual_seed(9))
    before = ebc(d)
    ebc.quantize_()
    out = ebc(d)
    packed = ebc.weights_float32
    assert packed.dtype == torch.uint8
    deq = {"t0": ref.dequantize_int8_rowwise(packed[:40 * 16].view(40, 16), 8),
           "t1": ref.dequantize_int8_rowwise(packed[40 * 16:].view(25, 12), 4)}
    for f, t in _table_of(tables).items():
        want = F.embedding_bag(d[f][0], deq[t.name], d[f][1], mode=t.pooling, include_last_offset=True)
        torch.testing.assert_close(out[f], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[f], before[f].detach(), atol=2e-2, rtol=0)


# ---- errors: weights unchanged after a rejected call ---------------------------------------------------------

def _snapshot(ebc):
    return {k: v.clone() for k, v in ebc.state_dict().items()}


def _assert_unchanged(ebc, snap):
    for k, v in ebc.state_dict().items():
        assert torch.equal(v, snap[k]), k


@pytest.mark.parametrize("bad", [25, -1])
def test_bad_index_names_feature(device, bad):
    tables = _tables()
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adagrad", lr=0.1), device=device)
    d = _batch(tables, torch.Generator().manual_seed(10), device=device)
    d["t1"] = (torch.tensor([0, 1, bad], device=device), torch.tensor([0, 1, 1, 3, 3, 3, 3], device=device))
    snap = _snapshot(ebc)
    with pytest.raises(ValueError, match=rf"feature 't1' indices\[2\] must be in \[0, 25\), got {bad}"):
        ebc(d)["a"].sum().backward()
    _assert_unchanged(ebc, snap)


def test_input_errors_leave_weights_unchanged():
    tables = _tables()
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("sgd", lr=0.1))
    d = _batch(tables, torch.Generator().manual_seed(11))
    snap = _snapshot(ebc)
    with pytest.raises(ValueError, match="not features of any table"):
        ebc({**d, "zzz": d["a"]})
    with pytest.raises(ValueError, match="missing"):
        ebc({"a": d["a"], "b": d["b"]})
    with pytest.raises(ValueError, match="same batch size"):
        ebc({**d, "a": (torch.tensor([1]), torch.tensor([0, 1]))})
    bad_offsets = recops.KeyedJagged(["a", "b", "t1"], torch.tensor([1, 2, 3]), torch.tensor([0, 2, 1, 3]))
    with pytest.raises(ValueError, match="non-decreasing"):
        ebc(bad_offsets)
    with pytest.raises(ValueError, match="weights must have the shape"):
        recops.KeyedJagged(["a"], torch.tensor([1, 2]), torch.tensor([0, 2]), torch.ones(3))
    with pytest.raises(TypeError, match="int32 or int64"):
        recops.KeyedJagged(["a"], torch.tensor([1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="len\\(keys\\)"):
        recops.KeyedJagged(["a", "b"], torch.tensor([1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="per-id weights need sum pooling"):
        ebc(recops.KeyedJagged.from_dict({k: v + (torch.ones(v[0].shape[0]),) for k, v in d.items()}))
    with pytest.raises(TypeError, match="KeyedJagged or a dict"):
        ebc([1, 2])
    _assert_unchanged(ebc, snap)


def test_dict_input_offsets_checked_per_feature(device):
    """Each feature's offsets start at 0, never decrease and end at len(its values): two errors that cancel in the
    concatenated batch (one feature's offsets one short, the next one's one long) no longer move an id from
    feature 'a' to feature 'b'; nothing changes on a rejected batch."""
    tables = _tables()
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("sgd", lr=0.1), device=device)
    d = _batch(tables, torch.Generator().manual_seed(16), device=device)

    def t(*v, dtype=torch.int64):
        return torch.tensor(v, dtype=dtype, device=device)

    snap = _snapshot(ebc)
    cases = [
        ({"a": (t(1, 2, 3), t(0, 1, 1, 2, 2, 2, 2)), "b": (t(4), t(0, 0, 0, 1, 1, 1, 2))},
         "feature 'a' offsets\\[-1\\] must equal len\\(values\\)=3, got 2$"),
        ({"b": (t(1, 2), t(2, 2, 3, 3, 3, 4, 4))}, "feature 'b' offsets must start at 0, got offsets\\[0\\]=2$"),
        ({"t1": (t(1, 2, 3), t(0, 2, 1, 3, 3, 3, 3))},
         "feature 't1' offsets must be non-decreasing, got offsets\\[1\\]=2 > offsets\\[2\\]=1$"),
        ({"a": (t(1, 2), t(0, 1, 1, 2, 2, 2, 2)[None])}, "feature 'a' offsets must be 1-D, got shape \\(1, 7\\)$"),
    ]
    for change, needle in cases:
        with pytest.raises(ValueError, match="^EmbeddingBagCollection: " + needle):
            ebc({**d, **change})
    _assert_unchanged(ebc, snap)
    assert ebc.step == 0


def test_dict_input_float_ids_raise(device):
    """Float ids (or offsets) raise TypeError naming the feature instead of being truncated to int64."""
    tables = _tables()
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("sgd", lr=0.1), device=device)
    d = _batch(tables, torch.Generator().manual_seed(17), device=device)
    snap = _snapshot(ebc)
    ids, off = d["b"][0], d["b"][1]
    with pytest.raises(TypeError, match="^EmbeddingBagCollection: feature 'b' values must be an integer tensor, "
                                        "got torch.float32$"):
        ebc({**d, "b": (ids.float() + 0.7, off)})
    with pytest.raises(TypeError, match="^EmbeddingBagCollection: feature 'b' offsets must be an integer tensor, "
                                        "got torch.float64$"):
        ebc({**d, "b": (ids, off.double())})
    with pytest.raises(TypeError, match="^EmbeddingBagCollection: feature 'b' must be \\(values, offsets\\)"):
        ebc({**d, "b": (ids,)})
    _assert_unchanged(ebc, snap)
    # integer ids of any width are still taken (int32 with int64 elsewhere, as before)
    mixed = {**d, "b": (ids.int(), off.int())}
    torch.testing.assert_close(ebc.eval()(mixed)["b"], ebc(d)["b"])


def test_feature_checks_and_conversion():
    """The checks forward runs, callable on their own (recops.distributed checks the whole tables' features)."""
    tables = _tables()
    d = _batch(tables, torch.Generator().manual_seed(14))
    kjt = EmbeddingBagCollection.to_keyed_jagged(d)
    assert isinstance(kjt, recops.KeyedJagged) and kjt.keys == ["a", "b", "t1"]
    assert EmbeddingBagCollection.to_keyed_jagged(kjt) is kjt
    with pytest.raises(TypeError, match="^EmbeddingBagCollection: features must be a KeyedJagged or a dict"):
        EmbeddingBagCollection.to_keyed_jagged([1])
    with pytest.raises(TypeError, match="^features must be a KeyedJagged or a dict"):
        EmbeddingBagCollection.to_keyed_jagged([1], op=None)
    EmbeddingBagCollection.check_features(kjt, tables)
    EmbeddingBagCollection.check_features(recops.KeyedJagged.from_dict({k: d[k] for k in ("t1", "b", "a")}), tables)
    with pytest.raises(ValueError, match="^X: .*unknown \\['zzz'\\] \\(not features of any table\\)$"):
        EmbeddingBagCollection.check_features(recops.KeyedJagged.from_dict({**d, "zzz": d["a"]}), tables, op="X")
    with pytest.raises(ValueError, match="missing \\['t1'\\]"):
        EmbeddingBagCollection.check_features(recops.KeyedJagged.from_dict({"a": d["a"], "b": d["b"]}), tables)
    weighted = recops.KeyedJagged.from_dict({k: v + (torch.ones(v[0].shape[0]),) for k, v in d.items()})
    with pytest.raises(ValueError, match="^per-id weights need sum pooling, tables \\['t1'\\] are not"):
        EmbeddingBagCollection.check_features(weighted, tables, op=None)
    EmbeddingBagCollection.check_features(weighted, _tables(pooling=("sum", "sum")))


def test_config_errors():
    with pytest.raises(ValueError, match="pooling"):
        EmbeddingBagConfig("x", 10, 4, pooling="median")
    with pytest.raises(TypeError, match="dtype"):
        EmbeddingBagConfig("x", 10, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match="kind"):
        FusedOptimizer("lamb")
    with pytest.raises(ValueError, match="distinct"):
        EmbeddingBagCollection([EmbeddingBagConfig("x", 10, 4), EmbeddingBagConfig("x", 5, 4)])
    ebc = EmbeddingBagCollection([EmbeddingBagConfig("x", 10, 4)], optimizer=FusedOptimizer("sgd")).quantize_()
    with pytest.raises(ValueError, match="inference-only"):
        ebc({"x": (torch.tensor([1]), torch.tensor([0, 1]))})
    assert math.isfinite(float(ebc.eval()({"x": (torch.tensor([1]), torch.tensor([0, 1]))})["x"].sum()))


def test_large_tables_advised_huge_pages():
    # The advice covers the 2 MiB-aligned interior of a buffer (0 where the OS refuses or lacks it), never more;
    # tables and optimizer state allocated that way still start initialised (state zero, weights in the bound).
    from recops import _C
    buf = torch.empty(16 << 18)  # 16 MiB
    n = _C.advise_huge_pages(buf)
    assert 0 <= n <= buf.nbytes and n % (2 << 20) == 0
    assert _C.advise_huge_pages(torch.empty(100)) == 0  # no aligned 2 MiB inside
    ebc = EmbeddingBagCollection([EmbeddingBagConfig("t", 100_000, 64)], optimizer=FusedOptimizer("adagrad", lr=0.1))
    states = [b for k, b in ebc.named_buffers() if k.startswith("state")]
    assert states and all(torch.count_nonzero(b) == 0 for b in states)
    assert ebc.table("t").abs().max() <= 1 / math.sqrt(100_000)


# ---- torch.compile ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compile_fused_training_step_matches_eager(device, dtype):
    """torch.compile(fullgraph=True) traces the fused training step (recops::embedding_bags_fused_lookup, whose
    backward is the mutating recops::embedding_bags_fused_update): outputs, weights, optimizer state and step
    equal eager's, with max and mean pooling, Adam's step-dependent bias correction and (bf16) stochastic
    rounding seeded by the step. One storage dtype: KeyedJagged.select of a subset of the keys, which a
    collection of several dtypes needs, reads offsets on the host."""
    tables = _tables(dtype, pooling=("max", "mean"))
    torch.manual_seed(0)
    ref = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adam", lr=0.05, stochastic_rounding=True, seed=3),
                                 device=device)
    ebc = copy.deepcopy(ref)
    initial = ref.table("t0").clone(), ref.table("t1").clone()
    compiled = torch.compile(ebc, fullgraph=True)
    gen = torch.Generator().manual_seed(15)
    tol = dict(atol=0, rtol=0) if device.type == "cpu" else {}
    for _ in range(2):
        kjt = recops.KeyedJagged.from_dict(_batch(tables, gen, device=device))
        g = torch.randn(B, 20, generator=gen).to(device, dtype)
        want, got = ref(kjt).concat(), compiled(kjt).concat()
        torch.testing.assert_close(got, want, **tol)
        (want * g).sum().backward()
        (got * g).sum().backward()
    assert ebc.step == ref.step == 2
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ebc.state_dict()[k], v, **tol, msg=k)
    assert not torch.equal(ebc.table("t0"), initial[0]) and not torch.equal(ebc.table("t1"), initial[1])
