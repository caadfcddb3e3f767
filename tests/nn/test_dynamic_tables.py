# SPDX-License-Identifier: Apache-2.0
"""Dynamic (collisionless) tables against the plain-Python reference (recops.nn.dynamic_ref): the id map's rows,
admission, ttl, eviction and growth; pooled outputs and fused optimizer steps; threads; save/load; the
rejected-batch rule; export for serving."""

import random

import pytest
import torch

from recops import _C
from recops.data.keyed_jagged import KeyedJagged
from recops.nn import EmbeddingBagCollection, EmbeddingBagConfig, FusedOptimizer
from recops.nn.dynamic import DynamicTable, IdMap, static_table, table_seed
from recops.nn.dynamic_ref import RefDynamicMap, RefDynamicTable, init_values

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def _stream(rng, vocab, n):
    """n ids from a vocabulary of random 64-bit ids (int64 min/max and negatives included), Zipf-like repeats."""
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    return rng.choices(vocab, weights=weights, k=n)


def _vocab(rng, size):
    v = {I64_MIN, I64_MAX, -1, 0}
    while len(v) < size:
        v.add(rng.randrange(I64_MIN, I64_MAX))
    out = sorted(v)
    rng.shuffle(out)
    return out


def _map_pair(capacity, max_capacity, admit_after, ttl, eviction, width=64):
    m = _C.DynamicIdMap(capacity, max_capacity, admit_after, ttl, {"lru": 0, "lfu": 1}[eviction], width, 4)
    return m, RefDynamicMap(capacity, max_capacity, admit_after, ttl, eviction, width, 4)


def _resolve(m, ids, training, now):
    t = torch.tensor(ids, dtype=torch.int64)
    rows, nr, ni = torch.empty_like(t), torch.empty_like(t), torch.empty_like(t)
    while True:
        grow, k = m.resolve(t, rows, training, float(now), torch.get_num_threads(), nr, ni)
        if not grow:
            return rows.tolist(), sorted(zip(nr[:k].tolist(), ni[:k].tolist()))
        m.grow(grow)


def _held(m):
    n = m.num_used
    ids, rows, lu, fr = (torch.empty(n, dtype=torch.int64) for _ in range(4))
    ls = torch.empty(n, dtype=torch.float64)
    m.dump(ids, rows, lu, ls, fr)
    return dict(zip(ids.tolist(), rows.tolist()))


@pytest.mark.parametrize("admit_after", [1, 3])
@pytest.mark.parametrize("ttl", [None, 2.0])
@pytest.mark.parametrize("eviction", ["lru", "lfu"])
@pytest.mark.parametrize("grow", [False, True])
def test_map_matches_reference(admit_after, ttl, eviction, grow):
    rng = random.Random(hash((admit_after, ttl, eviction, grow)) & 0xFFFF)
    vocab = _vocab(rng, 120)
    m, ref = _map_pair(8, 64 if grow else 8, admit_after, ttl, eviction)
    for step in range(1, 40):
        ids = _stream(rng, vocab, rng.randrange(0, 30))
        training = step % 7 != 0
        now = float(step)
        got, new = _resolve(m, ids, training, now)
        want, want_new = ref.resolve(ids, training, now)
        assert got == want, f"step {step}"
        assert new == sorted(want_new)
        assert _held(m) == ref.row_of
        assert m.capacity == ref.cap
        assert m.num_live(now) == len(ref.live(now))
    if grow:
        assert m.capacity > 8


def test_admission_counts_sightings_and_unadmitted_read_zero_row():
    m, ref = _map_pair(16, 16, 3, None, "lru")
    assert _resolve(m, [5, 5], True, 1)[0] == [16, 16]  # 2 sightings
    rows, new = _resolve(m, [5, 7], True, 2)  # third sighting of 5
    assert rows == [0, 16] and new == [(0, 5)]
    assert _resolve(m, [7, 7, 7], True, 3)[0] == [1, 1, 1]  # 4 sightings in all: admitted for the whole batch


def test_full_table_evicts_lru_and_never_collides():
    m, _ = _map_pair(2, 2, 1, None, "lru")
    _resolve(m, [1, 2], True, 1)
    _resolve(m, [1], True, 2)
    rows, new = _resolve(m, [3], True, 3)  # 2 is the least recently used
    assert rows == [1] and new == [(1, 3)]
    rows, new = _resolve(m, [4, 5, 6], True, 4)  # 2 rows, 3 new ids: the third is not admitted
    assert rows == [0, 1, 2] and _held(m) == {4: 0, 5: 1}


def test_lfu_evicts_least_frequent():
    m, _ = _map_pair(2, 2, 1, None, "lfu")
    _resolve(m, [1, 1, 1, 2], True, 1)
    _resolve(m, [2], True, 2)  # freq: 1 -> 3, 2 -> 2
    rows, _ = _resolve(m, [9], True, 3)
    assert _held(m) == {1: 0, 9: 1} and rows == [1]


def test_ttl_expires_after_that_many_steps():
    m, _ = _map_pair(4, 4, 1, 2.0, "lru")
    _resolve(m, [10], True, 1)
    assert m.num_live(3.0) == 1 and m.num_live(4.0) == 0  # seen at 1: alive through step 3
    assert _resolve(m, [10], False, 4)[0] == [4]  # eval: expired reads the zero row, nothing changes
    assert m.num_used == 1
    rows, new = _resolve(m, [10], True, 4)
    assert new == [(0, 10)]  # re-admitted with a fresh row


def test_eval_never_mutates():
    m, _ = _map_pair(4, 4, 2, 1.0, "lru")
    _resolve(m, [1, 1, 2], True, 1)
    before = (_held(m), m.serial, _sketch(m))
    assert _resolve(m, [1, 3, 2, I64_MIN], False, 5) == ([4, 4, 4, 4], [])
    assert (_held(m), m.serial, _sketch(m)) == before


def _sketch(m):
    out = torch.empty(m.sketch_size, dtype=torch.uint8)
    m.get_sketch(out)
    return out.tolist()


def test_threads_do_not_change_rows():
    rng = random.Random(3)
    vocab = _vocab(rng, 5000)
    batches = [_stream(rng, vocab, 20000) for _ in range(6)]
    results = []
    old = torch.get_num_threads()
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            m, _ = _map_pair(1024, 1024, 2, 3.0, "lfu", width=4096)
            results.append([_resolve(m, b, True, s) for s, b in enumerate(batches)] + [_held(m)])
    finally:
        torch.set_num_threads(old)
    assert results[0] == results[1]


def test_init_values_match_reference():
    ids = torch.tensor([0, -1, I64_MIN, I64_MAX, 12345], dtype=torch.int64)
    out = torch.empty(5, 7)
    _C.dynamic_init_values(ids, 7, 99, 0.25, out, 1)
    want = torch.tensor([init_values(int(x), 7, 99, 0.25) for x in ids])
    assert torch.equal(out, want)
    assert float(out.abs().max()) <= 0.25


def test_map_config_errors():
    for bad, msg in [(dict(capacity=0), "capacity"), (dict(max_capacity=2), "max_capacity"),
                     (dict(admit_after=0), "admit_after"), (dict(admit_after=256), "admit_after"),
                     (dict(ttl=-1.0), "ttl"), (dict(eviction="fifo"), "eviction"),
                     (dict(admit_after=2, sketch_width=100), "sketch_width")]:
        kw = dict(capacity=4, max_capacity=None)
        kw.update(bad)
        with pytest.raises(ValueError, match=msg):
            DynamicTable(**kw)
    with pytest.raises(ValueError, match="num_embeddings must equal"):
        EmbeddingBagConfig("t", 5, 4, dynamic=DynamicTable(4))
    with pytest.raises(ValueError, match="need a FusedOptimizer"):
        EmbeddingBagCollection([EmbeddingBagConfig("t", 4, 4, dynamic=DynamicTable(4))])


# ---- the collection ------------------------------------------------------------------------------------------


def _dyn_tables(pooling=("sum", "mean"), admit_after=1, ttl=None, eviction="lru", cap=16, max_cap=64, dim=(4, 8)):
    return [EmbeddingBagConfig("static", 20, 4, ["s"]),
            EmbeddingBagConfig("d0", cap, dim[0], ["a", "b"], pooling=pooling[0],
                               dynamic=DynamicTable(cap, admit_after, ttl, eviction, max_cap, seed=1)),
            EmbeddingBagConfig("d1", cap, dim[1], ["c"], pooling=pooling[1],
                               dynamic=DynamicTable(cap, admit_after, ttl, eviction, max_cap, seed=2))]


def _batch(rng, vocab, batch=6, max_len=4):
    keys = ["s", "a", "b", "c"]
    values, offsets = [], [0]
    for k in keys:
        for _ in range(batch):
            n = rng.randrange(0, max_len + 1)
            values += [rng.randrange(20) for _ in range(n)] if k == "s" else _stream(rng, vocab, n)
            offsets.append(len(values))
    return KeyedJagged(keys, torch.tensor(values, dtype=torch.int64), torch.tensor(offsets, dtype=torch.int64))


def _segments(kjt, features):
    off, b = kjt.offsets.tolist(), kjt.stride()
    ids, offs = [], [0]
    for f in features:
        k = kjt.keys.index(f)
        for i in range(b):
            ids += kjt.values[off[k * b + i]:off[k * b + i + 1]].tolist()
            offs.append(len(ids))
    return ids, offs


def _refs(tables, opt):
    out = {}
    for t in tables:
        if t.dynamic is None:
            continue
        c = t.dynamic
        m = RefDynamicMap(c.capacity, c.max_capacity, c.admit_after, c.ttl, c.eviction, c.sketch_width,
                          c.sketch_depth)
        out[t.name] = RefDynamicTable(t.embedding_dim, t.pooling, m, table_seed(t.name, c.seed), c.init_scale,
                                      opt.kind, opt.lr, opt.eps, opt.beta1, opt.beta2)
    return out


def _ref_step(refs, tables, kjt, grads, training, now, step):
    pooled = {}
    for t in tables:
        if t.name not in refs:
            continue
        ids, offs = _segments(kjt, t.feature_names)
        out, saved = refs[t.name].forward(ids, offs, training, now)
        b = kjt.stride()
        for j, f in enumerate(t.feature_names):
            pooled[f] = out[j * b:(j + 1) * b]
        if training:
            g = torch.cat([grads[f] for f in t.feature_names])
            refs[t.name].backward(saved, g, step)
    return pooled


@pytest.mark.parametrize("kind", ["sgd", "rowwise_adagrad", "adam"])
@pytest.mark.parametrize("pooling,admit_after,ttl,eviction", [
    (("sum", "mean"), 1, None, "lru"), (("max", "sum"), 3, 3.0, "lfu"), (("mean", "max"), 2, None, "lru")])
def test_training_matches_reference(kind, pooling, admit_after, ttl, eviction):
    rng = random.Random(11)
    vocab = _vocab(rng, 60)
    tables = _dyn_tables(pooling, admit_after, ttl, eviction, cap=8, max_cap=16)
    opt = FusedOptimizer(kind, lr=0.05)
    ebc = EmbeddingBagCollection(tables, opt)
    refs = _refs(tables, opt)
    for step in range(1, 16):
        kjt = _batch(rng, vocab)
        training = step % 5 != 0
        ebc.train(training)
        now, step_no = float(ebc.step + (1 if training else 0)), ebc.step + 1
        out = ebc(kjt)
        grads = {f: torch.randn(kjt.stride(), out[f].shape[1]) for f in "abc"}
        want = _ref_step(refs, tables, kjt, grads, training, now, step_no)
        for f in "abc":
            torch.testing.assert_close(out[f].double(), want[f], atol=1e-5, rtol=1e-5, msg=f"step {step} {f}")
        if training:
            sum((out[f] * grads[f]).sum() for f in "abc").backward()
    for name, ref in refs.items():
        ids, w = ebc.export(name)
        assert ids.tolist() == ref.map.live(ebc._now(False))
        want = torch.stack([ref.w[int(x)] for x in ids]) if len(ids) else w.double()
        torch.testing.assert_close(w.double(), want, atol=1e-5, rtol=1e-5)
        assert ebc.num_live(name) == len(ids)


def test_unknown_ids_read_zeros_in_eval_and_get_no_update():
    tables = _dyn_tables(admit_after=2)
    ebc = EmbeddingBagCollection(tables, FusedOptimizer("sgd", lr=1.0))
    kjt = KeyedJagged(["s", "a", "b", "c"], torch.tensor([1, 7, 8, 9]), torch.tensor([0, 1, 2, 3, 4]))
    out = ebc(kjt)  # first sighting of 7, 8, 9: zeros, and the zero row gets the gradient
    assert float(out["a"].detach().abs().sum() + out["c"].detach().abs().sum()) == 0
    (out.concat().sum() * 10).backward()
    out = ebc(kjt)  # second sighting: admitted, fresh rows
    assert ebc.num_live("d0") == 2 and float(out["a"].detach().abs().sum()) > 0
    ebc.eval()
    out = ebc(KeyedJagged(["s", "a", "b", "c"], torch.tensor([1, 123, 124, 125]), torch.tensor([0, 1, 2, 3, 4])))
    assert float(out["a"].abs().sum() + out["b"].abs().sum() + out["c"].abs().sum()) == 0
    assert ebc.num_live("d0") == 2


def _state(ebc):
    sd = ebc.state_dict()
    return {k: v.clone() for k, v in sd.items()}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_save_load_continue_equals_straight_through():
    rng = random.Random(5)
    vocab = _vocab(rng, 80)
    batches = [_batch(rng, vocab) for _ in range(12)]
    grads = [torch.randn(6, 20) for _ in batches]
    tables = _dyn_tables(admit_after=2, ttl=4.0, eviction="lfu", cap=8, max_cap=32)
    opt = FusedOptimizer("adam", lr=0.02)

    def run(ebc, bs, gs):
        for kjt, g in zip(bs, gs):
            (ebc(kjt).concat() * g).sum().backward()

    torch.manual_seed(0)
    straight = EmbeddingBagCollection(tables, opt)
    run(straight, batches, grads)
    torch.manual_seed(0)
    first = EmbeddingBagCollection(tables, opt)
    run(first, batches[:6], grads[:6])
    resumed = EmbeddingBagCollection(tables, opt)
    resumed.load_state_dict(first.state_dict())
    assert resumed.capacity("d0") == first.capacity("d0")
    run(resumed, batches[6:], grads[6:])
    _same(_state(straight), _state(resumed))


def test_threads_do_not_change_training():
    rng = random.Random(9)
    vocab = _vocab(rng, 3000)
    batches = [_batch(rng, vocab, batch=200, max_len=30) for _ in range(4)]
    states = []
    old = torch.get_num_threads()
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            torch.manual_seed(0)
            ebc = EmbeddingBagCollection(_dyn_tables(admit_after=2, cap=256, max_cap=1024),
                                         FusedOptimizer("rowwise_adagrad", lr=0.1))
            for kjt in batches:
                ebc(kjt).concat().square().sum().backward()
            states.append(_state(ebc))
    finally:
        torch.set_num_threads(old)
    _same(*states)


def test_rejected_batch_changes_nothing():
    rng = random.Random(2)
    vocab = _vocab(rng, 40)
    ebc = EmbeddingBagCollection(_dyn_tables(admit_after=2), FusedOptimizer("rowwise_adagrad", lr=0.1))
    for _ in range(3):
        ebc(_batch(rng, vocab)).concat().sum().backward()
    before = _state(ebc)
    good = _batch(rng, vocab)
    # feature s (static, 20 rows) leads the batch: an out-of-range id first, dynamic ids after it
    bad_index = KeyedJagged(good.keys, torch.cat([torch.tensor([99]), good.values]),
                            torch.cat([good.offsets[:1], good.offsets[1:] + 1]))
    with pytest.raises(ValueError, match="must be in"):
        ebc(bad_index)
    bad_offsets = KeyedJagged(good.keys, good.values, good.offsets.flip(0))
    with pytest.raises(ValueError, match="offsets"):
        ebc(bad_offsets)
    _same(before, _state(ebc))


def test_growth_keeps_rows_and_doubles():
    tables = [EmbeddingBagConfig("d", 4, 3, dynamic=DynamicTable(4, max_capacity=20))]
    ebc = EmbeddingBagCollection(tables, FusedOptimizer("sgd", lr=0.0))
    kjt = KeyedJagged(["d"], torch.arange(3), torch.tensor([0, 3]))
    first = ebc(kjt)["d"].detach().clone()
    ebc(KeyedJagged(["d"], torch.arange(3, 13), torch.tensor([0, 10])))
    assert ebc.capacity("d") == 16 and ebc.num_live("d") == 13
    ebc(KeyedJagged(["d"], torch.arange(13, 30), torch.tensor([0, 17])))
    assert ebc.capacity("d") == 20 and ebc.num_live("d") == 20  # capped; LRU evicted the rest
    ebc.eval()
    torch.testing.assert_close(ebc(kjt)["d"], torch.zeros(1, 3))  # ids 0-2 were evicted (least recent)
    ebc.train()
    assert torch.equal(ebc(kjt)["d"].detach(), first)  # re-admitted: the same hash-seeded initial rows


def test_clock_ttl():
    tables = [EmbeddingBagConfig("d", 8, 2, dynamic=DynamicTable(8, ttl=10.0))]
    ebc = EmbeddingBagCollection(tables, FusedOptimizer("sgd", lr=0.1))
    ebc.set_time(100.0)
    ebc(KeyedJagged(["d"], torch.tensor([1, 2]), torch.tensor([0, 2])))
    ebc.set_time(105.0)
    ebc(KeyedJagged(["d"], torch.tensor([2]), torch.tensor([0, 1])))
    ebc.set_time(111.0)
    assert ebc.live_ids("d").tolist() == [2]
    ebc.set_time(116.0)
    assert ebc.num_live("d") == 0
    with pytest.raises(ValueError, match="cannot go back"):
        ebc.set_time(50.0)
    sd = ebc.state_dict()
    again = EmbeddingBagCollection(tables, FusedOptimizer("sgd", lr=0.1))
    again.load_state_dict(sd)
    assert again._clock == 116.0


def test_export_serves_from_a_static_table():
    rng = random.Random(4)
    vocab = _vocab(rng, 50)
    tables = _dyn_tables(pooling=("sum", "max"))
    ebc = EmbeddingBagCollection(tables, FusedOptimizer("rowwise_adagrad", lr=0.1))
    for _ in range(5):
        ebc(_batch(rng, vocab)).concat().sum().backward()
    ebc.eval()
    kjt = _batch(rng, vocab + [777, -777])
    want = ebc(kjt)
    static_cfg, maps = [], {}
    tabs = {}
    for t in tables:
        if t.dynamic is None:
            static_cfg.append(t)
            continue
        table, idmap = static_table(*ebc.export(t.name))
        tabs[t.name], maps[t.name] = table, idmap
        static_cfg.append(EmbeddingBagConfig(t.name, table.shape[0], t.embedding_dim, t.feature_names, t.pooling))
    serve = EmbeddingBagCollection(static_cfg)
    with torch.no_grad():
        serve.table("static").copy_(ebc.table("static"))
        for name, table in tabs.items():
            serve.table(name).copy_(table)
    for name, idmap in maps.items():
        kjt = idmap.remap(kjt, next(t.feature_names for t in tables if t.name == name))
    got = serve(kjt)
    for f in "sabc":
        torch.testing.assert_close(got[f], want[f])


def test_idmap_unknown_and_extremes():
    m = IdMap(torch.tensor([I64_MIN, I64_MAX, 0]))
    assert m(torch.tensor([I64_MAX, 5, I64_MIN, 0])).tolist() == [1, 3, 0, 2]
    assert IdMap(torch.tensor([], dtype=torch.int64))(torch.tensor([3])).tolist() == [0]
    with pytest.raises(ValueError, match="distinct"):
        IdMap(torch.tensor([1, 1]))


def test_api_errors_name_the_table():
    ebc = EmbeddingBagCollection(_dyn_tables(), FusedOptimizer("sgd"))
    with pytest.raises(KeyError, match="static table"):
        ebc.num_live("static")
    with pytest.raises(KeyError, match="no table"):
        ebc.export("nope")
    with pytest.raises(ValueError, match="finite"):
        ebc.set_time(float("nan"))


def test_load_rejects_bad_dynamic_entries():
    tables = _dyn_tables()
    ebc = EmbeddingBagCollection(tables, FusedOptimizer("sgd"))
    ebc(_batch(random.Random(0), list(range(30)))).concat().sum().backward()
    sd = ebc.state_dict()
    bad = dict(sd)
    bad["dynamic.d0.rows"] = torch.zeros_like(sd["dynamic.d0.rows"])  # two ids on one row
    other = EmbeddingBagCollection(tables, FusedOptimizer("sgd"))
    if sd["dynamic.d0.rows"].numel() > 1:
        with pytest.raises(RuntimeError, match="held by two ids"):
            other.load_state_dict(bad)
    bad = dict(sd)
    bad["dynamic.d0.weight"] = sd["dynamic.d0.weight"][:, :2]
    with pytest.raises(RuntimeError, match="expected shape"):
        other.load_state_dict(bad)
    del bad["dynamic.d0.weight"]
    with pytest.raises(RuntimeError, match="Missing"):
        other.load_state_dict(bad)


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and _C.has_cuda()), reason="needs a CUDA device and build")
def test_cuda_eval_lookup_matches_the_cpu_map():
    tables = [EmbeddingBagConfig("d", 64, 8, ["a"], dynamic=DynamicTable(64, ttl=3.0, max_capacity=128))]
    ebc = EmbeddingBagCollection(tables, FusedOptimizer("rowwise_adagrad", lr=0.1), device="cuda")
    rng = random.Random(0)
    vocab = _vocab(rng, 100)
    for _ in range(5):  # training resolves on the host, rows copied to the GPU
        ids = torch.tensor(_stream(rng, vocab, 50))
        kjt = KeyedJagged(["a"], ids.cuda(), torch.arange(0, 51, 5).cuda())
        ebc(kjt).concat().sum().backward()
    ebc.eval()
    ids = torch.tensor(vocab + [12345, -12345])
    kjt = KeyedJagged(["a"], ids.cuda(), torch.arange(ids.shape[0] + 1).cuda())
    got = ebc(kjt)["a"].cpu()
    cpu = EmbeddingBagCollection(tables, FusedOptimizer("rowwise_adagrad", lr=0.1))
    cpu.load_state_dict({k: v.cpu() for k, v in ebc.state_dict().items()})
    cpu.eval()
    want = cpu(KeyedJagged(["a"], ids, torch.arange(ids.shape[0] + 1)))["a"]
    torch.testing.assert_close(got, want)
