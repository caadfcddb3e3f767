# SPDX-License-Identifier: Apache-2.0
"""recops.retrieval indexes: recall against the exact reference, add/remove, exclusions, persistence,
threads and every error path. HNSW tests need the optional hnswlib and are skipped without it."""

import concurrent.futures
import json
import os
import struct
import sys
import threading
import time

import numpy as np
import pytest
import torch

import recops.retrieval as rr
from recops.data import clustered_embeddings
from recops.ops.retrieval_ref import exact_topk
from recops.retrieval import _base, _format

D = 32


@pytest.fixture(scope="module")
def data():
    items, queries = clustered_embeddings(20_000, D, 200, num_clusters=50, norm_spread=0.5, seed=1)
    return items, queries


@pytest.fixture(scope="module")
def truth(data):
    items, queries = data
    return exact_topk(torch.from_numpy(queries), torch.from_numpy(items), 10)[1].numpy()


def recall(ids, truth):
    return np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(ids, truth)])


def _hnsw(**kw):
    pytest.importorskip("hnswlib")
    return rr.HNSWIndex(D, **kw)


def _make(kind, metric="ip"):
    if kind == "exact":
        return rr.ExactIndex(D, metric)
    if kind == "hnsw":
        return _hnsw(metric=metric)
    return rr.IVFIndex(D, metric, storage=kind.split("-")[1], nlist=8)


KINDS = ["exact", "ivf-int8", "ivf-fp16", "ivf-fp32", "hnsw"]


# ---- correctness vs reference -------------------------------------------------------------------------------

def test_exact_index_matches_reference(data):
    items, queries = data
    index = rr.ExactIndex(D)
    ids = np.arange(len(items), dtype=np.int64) * 7 + 3  # caller ids, not rows
    index.add(items, ids)
    s, i = index.search(queries[:20], 10)
    rs, ri = exact_topk(torch.from_numpy(queries[:20]), torch.from_numpy(items), 10)
    np.testing.assert_allclose(s, rs.numpy(), rtol=1e-5, atol=1e-4)
    assert recall(i, ids[ri.numpy()]) == 1.0


# Floors measured on this data (20k x 32, 50 clusters, popularity-correlated norms): int8/fp16/fp32 reach
# ~0.99 at nprobe 64; hnswlib M=16 ~0.96.
@pytest.mark.parametrize("storage", ["int8", "fp16", "fp32"])
def test_ivf_recall(data, truth, storage):
    items, queries = data
    index = rr.IVFIndex(D, storage=storage)
    index.add(items)
    assert recall(index.search(queries, 10, nprobe=64)[1], truth) >= 0.95
    assert recall(index.search(queries, 10, nprobe=8)[1], truth) >= 0.6  # fewer lists: lower, still useful
    everything = index.search(queries, 10, nprobe=10**6, rerank=10)[1]
    assert recall(everything, truth) >= 0.999


def test_ivf_norm_buckets_help(data, truth):
    items, queries = data
    plain, bucketed = rr.IVFIndex(D, norm_buckets=1, storage="fp32"), rr.IVFIndex(D, norm_buckets=4, storage="fp32")
    plain.add(items)
    bucketed.add(items)
    # Equal scanned fraction: 4x as many (4x smaller) bucketed lists.
    assert recall(bucketed.search(queries, 10, nprobe=64)[1], truth) > recall(plain.search(queries, 10, nprobe=16)[1],
                                                                             truth)


def test_hnsw_recall(data, truth):
    items, queries = data
    index = _hnsw(M=16, ef_construction=100)
    index.add(items)
    assert recall(index.search(queries, 10, ef=128)[1], truth) >= 0.9


def test_cosine_metric(data):
    items, queries = data
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    truth = exact_topk(torch.from_numpy(queries * 3), torch.from_numpy(unit), 10)[1].numpy()
    for index in (rr.ExactIndex(D, "cosine"), rr.IVFIndex(D, "cosine")):
        index.add(items)
        s, i = index.search(queries * 3, 10)
        assert recall(i, truth) >= 0.95 and s.max() <= 1.0 + 1e-5


# ---- API properties -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_add_remove_exclude(kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, D)).astype(np.float32)
    index = _make(kind)
    index.add(x[:200], np.arange(200) + 1000)
    index.add(torch.from_numpy(x[200:]))  # default ids continue after the largest
    assert len(index) == 300
    q = x[:3] * 5
    s, i = index.search(q, 5)
    assert i[:, 0].tolist() == [1000, 1001, 1002] if kind != "hnsw" else (i[:, 0] == [1000, 1001, 1002]).mean() > 0.6
    index.remove([1000, 1201])
    assert len(index) == 298
    _, i = index.search(q, 20, exclude=[[1001], [], [1002, 10**12, -5]])
    assert 1000 not in i and 1201 not in i and 1001 not in i[0] and 1002 not in i[2]
    _, i2 = index.search(q, 20, exclude=np.array([1001, 1002, 10**12, -5]), exclude_offsets=[0, 1, 1, 4])
    np.testing.assert_array_equal(i, i2)
    index.add(x[:1], [1000])  # a removed id can come back
    assert index.search(q[:1], 1)[1][0, 0] == 1000


@pytest.mark.parametrize("kind", KINDS)
def test_k_larger_than_n_and_empty(kind):
    index = _make(kind)
    s, i = index.search(np.zeros((2, D), np.float32), 4)
    assert (i == -1).all() and np.isneginf(s).all()
    index.add(np.eye(D, dtype=np.float32)[:3])
    s, i = index.search(torch.eye(D)[:2], 5)
    assert isinstance(s, torch.Tensor) and i.dtype == torch.int64 and s.shape == (2, 5)
    assert sorted(i[0, :3].tolist()) == [0, 1, 2] and (i[:, 3:] == -1).all() and torch.isneginf(s[:, 3:]).all()
    assert index.search(np.zeros((0, D), np.float32), 3)[0].shape == (0, 3)


def test_numpy_and_torch_results_match(data):
    items, queries = data
    index = rr.IVFIndex(D)
    index.add(torch.from_numpy(items))
    sn, i_n = index.search(queries[:5], 7)
    st, it = index.search(torch.from_numpy(queries[:5]), 7)
    assert isinstance(sn, np.ndarray) and isinstance(st, torch.Tensor)
    np.testing.assert_array_equal(i_n, it.numpy())


def test_ivf_incremental_add_equals_single_batch(data):
    items, queries = data
    one, two = rr.IVFIndex(D, nlist=40), rr.IVFIndex(D, nlist=40)
    one.add(items)
    two.add(items[:10_000])
    two.add(items[10_000:], np.arange(10_000, 20_000))
    # Same training (first batch differs, so compare recall rather than bits).
    truth = exact_topk(torch.from_numpy(queries), torch.from_numpy(items), 10)[1].numpy()
    assert recall(two.search(queries, 10, nprobe=80)[1], truth) >= 0.95


def test_concurrent_searches_match_serial(data):
    items, queries = data
    index = rr.IVFIndex(D)
    index.add(items)
    exact = rr.ExactIndex(D)
    exact.add(items[:5000])
    chunks = [queries[i::8] for i in range(8)]
    serial = [(index.search(c, 10), exact.search(c, 10)) for c in chunks]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda c: (index.search(c, 10), exact.search(c, 10)), chunks * 2))
    for (a, b), (c, d) in zip(serial * 2, parallel):
        np.testing.assert_array_equal(a[1], c[1])
        np.testing.assert_array_equal(b[1], d[1])


def test_add_is_serialised_against_searches():
    rng = np.random.default_rng(1)
    index = rr.ExactIndex(D)
    index.add(rng.standard_normal((100, D)).astype(np.float32))
    q = rng.standard_normal((4, D)).astype(np.float32)

    def writer():
        for b in range(20):
            index.add(rng.standard_normal((50, D)).astype(np.float32))
            index.remove(np.arange(100 + 50 * b, 100 + 50 * b + 25))

    def reader():
        for _ in range(40):
            s, i = index.search(q, 5)
            assert (i >= 0).all() and np.isfinite(s).all()

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for f in [pool.submit(writer), pool.submit(reader), pool.submit(reader)]:
            f.result()
    assert len(index) == 100 + 20 * 25


def test_waiting_writer_blocks_new_readers():
    lock = _base.RWLock()
    order = []

    def writer():
        with lock.write():
            order.append("writer")

    def late_reader():
        with lock.read():
            order.append("late reader")

    w, r = threading.Thread(target=writer), threading.Thread(target=late_reader)
    with lock.read():  # a search is running
        w.start()
        for _ in range(200):  # until the writer waits (at most 1 s)
            if lock._writers_waiting:
                break
            time.sleep(0.005)
        assert lock._writers_waiting == 1
        r.start()
        time.sleep(0.05)
        assert order == []  # the late reader waits behind the writer, which waits for the running search
    w.join(2)
    r.join(2)
    assert order == ["writer", "late reader"]


def test_writer_not_starved_by_a_stream_of_readers():
    # 4 readers hold the lock 20 ms at a time, staggered, re-entering at once: there is always a read running,
    # so without writer preference the writer would wait until all their loops end (~2 s). Bounded loops: the
    # test ends in well under 3 s either way.
    lock = _base.RWLock()
    stop = threading.Event()
    count_lock = threading.Lock()
    active, most = [0], [0]

    def reader(i):
        time.sleep(0.005 * i)
        for _ in range(100):
            if stop.is_set():
                return
            with lock.read():
                with count_lock:
                    active[0] += 1
                    most[0] = max(most[0], active[0])
                time.sleep(0.02)
                with count_lock:
                    active[0] -= 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.1)  # reads keep arriving now
        t0 = time.monotonic()
        with lock.write():
            waited = time.monotonic() - t0
            assert active[0] == 0
    finally:
        stop.set()
        for t in threads:
            t.join(3)
    assert most[0] >= 2  # readers still share the lock
    assert waited < 0.5, f"writer waited {waited:.2f} s behind arriving readers"


# ---- persistence --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, data, tmp_path):
    items, queries = data
    index = _make(kind)
    index.add(items[:3000], np.arange(3000) * 2)
    index.remove([0, 2])
    before = index.search(queries[:10], 10, exclude=[[4]] * 10)
    path = str(tmp_path / "index.rx")
    index.save(path)
    index.save(path)  # overwriting an existing file is atomic too
    assert sorted(os.listdir(tmp_path)) == ["index.rx"]
    loaded = rr.load(path)
    assert type(loaded) is type(index) and len(loaded) == len(index) == 2998
    after = loaded.search(queries[:10], 10, exclude=[[4]] * 10)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0])
    loaded.add(items[3000:3001], [1])  # still a working index
    with pytest.raises(ValueError, match="already in the index"):
        loaded.add(items[:1], [6])


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_load_restores_constructor_arguments(kind, tmp_path):
    args = {"exact": dict(metric="cosine"),
            "ivf": dict(metric="cosine", nlist=3, storage="fp16", rerank=2, nprobe=5, kmeans_iters=4, seed=9,
                        norm_buckets=2),
            "hnsw": dict(metric="cosine", M=8, ef_construction=50, ef_search=20, seed=3)}[kind]
    if kind == "hnsw":
        pytest.importorskip("hnswlib")
    cls = {"exact": rr.ExactIndex, "ivf": rr.IVFIndex, "hnsw": rr.HNSWIndex}[kind]
    index = cls(D, **args)
    index.add(np.random.default_rng(0).standard_normal((50, D)).astype(np.float32))
    path = str(tmp_path / "index.rx")
    index.save(path)
    loaded = rr.load(path)
    assert {name: getattr(loaded, name) for name in args} == args

    header, arrays = _format.read_index(path)
    params = dict(header["params"])
    with pytest.raises(TypeError):  # keyword-only: a positional call cannot mix up dim, params and arrays
        cls._from_state(D, params, arrays)
    assert type(cls._from_state(dim=D, params=params, arrays=arrays)) is cls


@pytest.fixture
def saved(tmp_path):
    index = rr.IVFIndex(D, nlist=4)
    index.add(np.random.default_rng(0).standard_normal((100, D)).astype(np.float32))
    path = str(tmp_path / "ivf.rx")
    index.save(path)
    with open(path, "rb") as f:
        return path, f.read()


def _rewrite(path, raw):
    with open(path, "wb") as f:
        f.write(raw)


@pytest.mark.parametrize("cut", [0, 5, 20, 200, -1])
def test_load_truncated(saved, cut):
    path, raw = saved
    _rewrite(path, raw[:cut])
    with pytest.raises(ValueError, match="truncated|checksum"):
        rr.load(path)


@pytest.mark.parametrize("where", [12, 40, 1000, -40, -1])
def test_load_corrupted(saved, where):
    path, raw = saved
    b = bytearray(raw)
    b[where] ^= 0x5A
    _rewrite(path, bytes(b))
    with pytest.raises(ValueError, match="checksum|version|magic"):
        rr.load(path)


def test_load_wrong_magic_and_version(saved):
    path, raw = saved
    _rewrite(path, b"NOTANIDX" + raw[8:])
    with pytest.raises(ValueError, match="not a recops index"):
        rr.load(path)
    _rewrite(path, raw[:8] + struct.pack("<I", 99) + raw[12:])
    with pytest.raises(ValueError, match="unsupported format version 99"):
        rr.load(path)


def _forge(path, header_edit=None, arrays=None, kind="ivf"):
    """A file with a valid checksum but a hostile header."""
    _, raw = _format.MAGIC, open(path, "rb").read()
    hlen = struct.unpack_from("<I", raw, 12)[0]
    header = json.loads(raw[16:16 + hlen])
    header_edit(header)
    data = raw[16 + hlen:-32]
    hb = json.dumps(header).encode()
    body = struct.pack("<8sII", _format.MAGIC, _format.FORMAT_VERSION, len(hb)) + hb + data
    import hashlib
    _rewrite(path, body + hashlib.sha256(body).digest())


@pytest.mark.parametrize("edit, match", [
    (lambda h: h["arrays"][0].update(nbytes=10**12), "do not match|past the end"),
    (lambda h: h["arrays"][0].update(offset=10**9), "past the end"),
    (lambda h: h["arrays"][0].update(shape=[10**6, 10**6], nbytes=4 * 10**12), "past the end"),
    (lambda h: h["arrays"][0].update(dtype="object"), "malformed array entry"),
    (lambda h: h["arrays"][0].update(shape=[-1]), "malformed array entry"),
    (lambda h: h.update(kind="faiss"), "unknown index kind"),
    (lambda h: h.pop("arrays"), "malformed header"),
    (lambda h: h.update(count=5), "ids must have shape"),
    (lambda h: h.update(dim=7), "must be float32"),
    (lambda h: h["params"].update(norm_buckets=2), "norm_edges|lists must be in"),
    (lambda h: h["params"].pop("storage"), "inconsistent index"),
])
def test_load_hostile_header(saved, edit, match):
    path, _ = saved
    _forge(path, edit)
    with pytest.raises(ValueError, match=match):
        rr.load(path)


# ---- errors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_errors(kind):
    index = _make(kind)
    x = np.random.default_rng(0).standard_normal((10, D)).astype(np.float32)
    index.add(x)
    with pytest.raises(ValueError, match=r"shape\[1\] must be the index dim 32, got 5"):
        index.add(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"queries.shape\[1\] must be the index dim"):
        index.search(np.zeros((2, 5), np.float32), 3)
    with pytest.raises(ValueError, match="2 dimensions"):
        index.search(np.zeros(D, np.float32), 3)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be an integer >= 1"):
            index.search(x, k)
    bad = x[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="must be finite, got NaN or inf in row 1"):
        index.add(bad)
    bad[1, 3] = np.inf
    with pytest.raises(ValueError, match="finite"):
        index.search(bad, 3)
    with pytest.raises(ValueError, match="already in the index"):
        index.add(x[:1], [3])
    with pytest.raises(ValueError, match="duplicate id 50"):
        index.add(x[:2], [50, 50])
    with pytest.raises(ValueError, match="one id per vector"):
        index.add(x[:2], [50])
    with pytest.raises(TypeError, match="ids must be integers"):
        index.add(x[:1], [0.5])
    with pytest.raises(TypeError, match="float"):
        index.add(np.zeros((1, D), np.int64))
    with pytest.raises(KeyError, match="id 77 is not in the index"):
        index.remove([3, 77])
    assert len(index) == 10  # the failed remove removed nothing
    with pytest.raises(ValueError, match="one id list per query"):
        index.search(x[:2], 3, exclude=[[1]])
    with pytest.raises(ValueError, match="exclude_offsets must have Q \\+ 1"):
        index.search(x[:2], 3, exclude=[1], exclude_offsets=[0, 1])
    with pytest.raises(ValueError, match="exclude_offsets must start at 0"):
        index.search(x[:2], 3, exclude=[1], exclude_offsets=[0, 2, 1])
    with pytest.raises(ValueError, match="exclude_offsets given without exclude"):
        index.search(x[:2], 3, exclude_offsets=[0, 0, 0])
    with pytest.raises(TypeError, match="unknown parameters"):
        index.search(x[:2], 3, bogus=1)


def test_constructor_errors():
    with pytest.raises(ValueError, match="metric must be 'ip' or 'cosine'"):
        rr.ExactIndex(D, "l2")
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        rr.ExactIndex(0)
    with pytest.raises(ValueError, match="storage must be"):
        rr.IVFIndex(D, storage="pq")
    for kw in (dict(nlist=0), dict(rerank=-1), dict(nprobe=0), dict(norm_buckets=0)):
        with pytest.raises(ValueError, match="must be an integer"):
            rr.IVFIndex(D, **kw)
    index = rr.IVFIndex(D)
    index.add(np.ones((3, D), np.float32))
    with pytest.raises(ValueError, match="nprobe must be an integer >= 1"):
        index.search(np.ones((1, D), np.float32), 2, nprobe=0)


def test_hnsw_negative_ids():
    index = _hnsw()
    with pytest.raises(ValueError, match="ids must be >= 0"):
        index.add(np.ones((1, D), np.float32), [-4])


def test_hnsw_without_hnswlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "hnswlib", None)
    with pytest.raises(ImportError, match=r"recops\[hnsw\]"):
        rr.HNSWIndex(D)


def test_core_errors_reach_python():
    import recops._C as C
    q = np.zeros((1, 2), np.float32)
    with pytest.raises(ValueError, match="ivf_search: list_offsets"):
        C.ivf_search(q, np.zeros((2, 2), np.float32), np.ones(2, np.float32), np.array([0, 3, 1]), 0,
                     np.zeros((1, 2), np.float32), None, None, np.zeros((1, 2), np.float32), np.zeros(1, np.int64),
                     1, 1, 0, None, None, np.zeros((1, 1), np.float32), np.zeros((1, 1), np.int64))
    with pytest.raises(ValueError, match=r"kmeans: nlist must be in \[1, n=3\], got 4"):
        C.kmeans(np.zeros((3, 2), np.float32), 4, 1, 0, True, np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="codes must be uint8"):
        C.ivf_search(q, np.zeros((1, 2), np.float32), np.ones(1, np.float32), np.array([0, 1]), 2,
                     np.zeros((1, 2), np.float32), None, None, np.zeros((1, 2), np.float32), np.zeros(1, np.int64),
                     1, 1, 0, None, None, np.zeros((1, 1), np.float32), np.zeros((1, 1), np.int64))


# ---- hostile ids, forged arrays, saves that were killed ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["exact", "ivf-int8", "hnsw"])
def test_exclusion_ids_must_be_integers(kind):
    index = _make(kind)
    x = np.random.default_rng(0).standard_normal((20, D)).astype(np.float32)
    index.add(x)
    q = x[:2]
    for exclude, offsets in (([[1.0], [2.7]], None), ([np.array([1.5])] * 2, None),
                             ([torch.tensor([1.0])] * 2, None), (np.array([1.0, 2.0]), [0, 1, 2]),
                             (torch.tensor([1.0, 2.0]), torch.tensor([0, 1, 2])), ([1, 2], [0.0, 1.0, 2.0])):
        with pytest.raises(TypeError, match="must be integers"):
            index.search(q, 3, exclude=exclude, exclude_offsets=offsets)
    with pytest.raises(ValueError, match="must fit int64"):
        index.search(q, 3, exclude=np.array([2**64 - 1, 3], np.uint64), exclude_offsets=[0, 1, 2])
    # integer exclusions of every kind still work; ids not in the index (negative ones too) exclude nothing
    _, want = index.search(q, 3, exclude=[[0], [1]])
    for exclude, offsets in (([np.array([0], np.int32), np.array([1], np.uint8)], None),
                             (np.array([0, -1, 1]), [0, 2, 3])):
        _, got = index.search(q, 3, exclude=exclude, exclude_offsets=offsets)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", KINDS)
def test_ids_cannot_collide_with_the_result_padding(kind):
    index = _make(kind)
    x = np.random.default_rng(0).standard_normal((4, D)).astype(np.float32)
    for ids in ([-1], [-5], np.array([2**64 - 1], np.uint64), np.array([2**63], np.uint64)):
        with pytest.raises(ValueError, match=">= 0|fit int64"):
            index.add(x[:1], ids)
    assert len(index) == 0
    index.add(x[:2], np.array([0, 2**63 - 1], np.uint64))  # the largest id is fine
    _, ids = index.search(x[:1], 4)
    assert sorted(ids[0, :2].tolist()) == [0, 2**63 - 1] and (ids[0, 2:] == -1).all()
    with pytest.raises(ValueError, match="default ids .* do not fit int64"):
        index.add(x[2:3])
    assert len(index) == 2


def _forge_arrays(path, edit):
    """Rewrite a saved index with edited arrays and a valid checksum (a crafted file)."""
    header, arrays = _format.read_index(path)
    edit(arrays)
    _format.write_index(path, header["kind"], header["dim"], header["count"], header["params"], arrays)


def _nan_row(name):
    def edit(arrays):
        arrays[name] = arrays[name].copy()
        arrays[name].reshape(-1)[0] = np.nan
    return edit


@pytest.mark.parametrize("kind, edit, match", [
    ("exact", _nan_row("vectors"), "vectors must be finite"),
    ("ivf-int8", _nan_row("vectors"), "must be finite"),
    ("ivf-int8", _nan_row("centroids"), "must be finite"),
    ("ivf-int8", _nan_row("vscale"), "vscale finite"),
    ("ivf-int8", _nan_row("vmin"), "vmin must be finite"),
    ("ivf-int8", lambda a: a.update(vscale=np.zeros_like(a["vscale"])), "vscale finite and > 0"),
    ("ivf-int8", lambda a: a.update(norm_edges=a["norm_edges"][::-1].copy()), "norm_edges"),
    ("exact", lambda a: a.update(ids=np.arange(-1, a["ids"].shape[0] - 1)), "ids must be >= 0"),
    ("hnsw", lambda a: a.update(ids=a["ids"] + 1000), "does not hold every id"),
])
def test_load_rejects_what_add_rejects(kind, edit, match, tmp_path):
    index = _make(kind)
    if kind.startswith("ivf"):
        index = rr.IVFIndex(D, storage="int8", nlist=4, norm_buckets=4)
    index.add(np.random.default_rng(0).standard_normal((100, D)).astype(np.float32))
    path = str(tmp_path / "index.rx")
    index.save(path)
    rr.load(path)  # the untouched file loads
    _forge_arrays(path, edit)
    with pytest.raises(ValueError, match=match):
        rr.load(path)


def test_hnsw_graph_with_nan_vectors_is_rejected(tmp_path):
    index = _hnsw()
    index.add(np.ones((3, D), np.float32))
    index._graph.add_items(np.full((1, D), np.nan, np.float32), [1], replace_deleted=False)  # overwrite id 1
    path = str(tmp_path / "index.rx")
    index.save(path)
    with pytest.raises(ValueError, match="vectors must be finite"):
        rr.load(path)


def test_save_removes_stale_temporaries_only(tmp_path):
    index = rr.ExactIndex(D)
    index.add(np.ones((2, D), np.float32))
    old, fresh, locked = (tmp_path / f".recops-index-{n}" for n in ("killed", "fresh", "writing"))
    for p in (old, fresh, locked):
        p.write_bytes(b"\0" * 1000)
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(locked, (past, past))
    import fcntl
    with open(locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a save still running in another process
        index.save(str(tmp_path / "index.rx"))
    assert not old.exists() and fresh.exists() and locked.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".recops-index-fresh", ".recops-index-writing",
                                                          "index.rx"]
    assert len(rr.load(str(tmp_path / "index.rx"))) == 2


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_file_mode_follows_the_umask(umask, tmp_path):
    index = rr.ExactIndex(D)
    index.add(np.ones((2, D), np.float32))
    previous = os.umask(umask)
    try:
        index.save(str(tmp_path / "index.rx"))
        assert _format._umask() == umask
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "index.rx").st_mode & 0o777 == 0o666 & ~umask
