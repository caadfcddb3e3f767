# SPDX-License-Identifier: Apache-2.0
"""Incremental (KV-cached) inference: hstu_attention / jagged_attention with q_offsets against the matching rows of
the full call (every mask option), HSTU.cached_forward against a full forward over each history so far (random
splits into increments: one event, five events, the whole history at once), and HSTUServer's top-k."""
import pytest
import torch

from recops.metrics import topk_with_exclusion
from recops.models import HSTU, HSTUServer, SeqConfig
from recops.ops import hstu_attention, jagged_attention


def _off(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("opts", [dict(), dict(num_targets=True), dict(contextual_len=2, max_attn_len=9),
                                  dict(max_attn_len=20, min_full_attn_seq_len=5, num_targets=True),
                                  dict(causal=False)])
def test_q_offsets_equal_the_full_call(dtype, opts):
    opts = dict(opts)
    lens, nq = [70, 5, 130, 1, 0, 200], [3, 5, 64, 1, 0, 70]
    off, qoff = _off(lens), _off(nq)
    g = torch.Generator().manual_seed(0)
    L, H, D = int(off[-1]), 2, 32
    q, k, v = (torch.randn(L, H, D, generator=g).to(dtype) for _ in range(3))
    if opts.pop("num_targets", False):
        opts["num_targets"] = torch.tensor([1, 0, 2, 0, 0, 3])
    rows = torch.cat([torch.arange(int(off[b + 1]) - nq[b], int(off[b + 1])) for b in range(len(lens))])
    bias = dict(pos_bias=0.1 * torch.randn(399, generator=g), timestamps=torch.randint(0, 999, (L,), generator=g)
                .cumsum(0), time_bias=0.1 * torch.randn(12, generator=g))
    with torch.no_grad():
        full = hstu_attention(q, k, v, off, 200, alpha=0.3, **bias, **opts)
        inc = hstu_attention(q[rows], k, v, off, 200, alpha=0.3, q_offsets=qoff, **bias, **opts)
        torch.testing.assert_close(inc, full[rows], rtol=0, atol=0)
        full = jagged_attention(q, k, v, off, 200, **opts)
        inc = jagged_attention(q[rows], k, v, off, 200, q_offsets=qoff, **opts)
        torch.testing.assert_close(inc, full[rows], rtol=0, atol=0)


def test_q_offsets_errors_and_compile():
    off, qoff = _off([4, 3]), _off([1, 1])
    q, k = torch.randn(2, 1, 8), torch.randn(7, 1, 8)
    with pytest.raises(ValueError, match="no backward"):
        hstu_attention(q.requires_grad_(), k, k, off, 4, q_offsets=qoff)
    q = q.detach()
    with torch.no_grad():
        with pytest.raises(ValueError, match="3 query rows, more than its 2"):
            hstu_attention(torch.randn(4, 1, 8), k[:6], k[:6], _off([4, 2]), 4, q_offsets=_off([1, 3]))
        with pytest.raises(ValueError, match="q_offsets must have offsets' shape"):
            hstu_attention(q, k, k, off, 4, q_offsets=_off([1, 0, 1]))
        with pytest.raises(ValueError, match="k must have shape"):
            hstu_attention(q, torch.randn(7, 2, 8), torch.randn(7, 2, 8), off, 4, q_offsets=qoff)
        with pytest.raises(ValueError, match="takes no dropout"):
            jagged_attention(q, k, k, off, 4, q_offsets=qoff, dropout_p=0.1)

        @torch.compile(fullgraph=True, backend="aot_eager")
        def f(q, k, v):
            return hstu_attention(q, k, v, off, 4, q_offsets=qoff) + jagged_attention(q, k, v, off, 4, q_offsets=qoff)

        want = hstu_attention(q, k, k, off, 4, q_offsets=qoff) + jagged_attention(q, k, k, off, 4, q_offsets=qoff)
        torch.testing.assert_close(f(q, k, k), want)


def _model(decoupled=False, seed=0):
    torch.manual_seed(seed)
    cfg = SeqConfig.preset("hstu", max_len=300, decoupled_embeddings=decoupled)
    return HSTU(500, cfg).eval()


@pytest.mark.parametrize("split", ["one", "five", "whole", "random"])
@pytest.mark.parametrize("timestamps", [True, False])
@pytest.mark.parametrize("decoupled", [False, True])
def test_cached_forward_equals_full_forward(split, timestamps, decoupled):
    m = _model(decoupled)
    lens = [50, 1, 7, 120, 0, 33]
    B = len(lens)
    g = torch.Generator().manual_seed(1)
    items = [torch.randint(0, 500, (n,), generator=g) for n in lens]
    ts = [torch.randint(0, 5000, (n,), generator=g).cumsum(0) for n in lens]
    cache, done, steps = None, [0] * B, 0
    while any(d < n for d, n in zip(done, lens)):
        size = {"one": lambda: 1, "five": lambda: 5, "whole": lambda: 10**9,
                "random": lambda: int(torch.randint(0, 6, (1,), generator=g))}[split]
        chunk = [min(n - d, size()) for d, n in zip(done, lens)]
        new = torch.cat([items[b][done[b]:done[b] + chunk[b]] for b in range(B)])
        new_ts = torch.cat([ts[b][done[b]:done[b] + chunk[b]] for b in range(B)]) if timestamps else None
        out, cache = m.cached_forward(new, _off(chunk), new_ts, cache)
        now = [d + c for d, c in zip(done, chunk)]
        off = _off(now)
        with torch.no_grad():
            full = m(torch.cat([items[b][:now[b]] for b in range(B)]), off,
                     torch.cat([ts[b][:now[b]] for b in range(B)]) if timestamps else None)
        rows = torch.cat([torch.arange(int(off[b]) + done[b], int(off[b + 1])) for b in range(B)])
        assert out.shape == (len(rows), m.cfg.dim)
        torch.testing.assert_close(out, full[rows], rtol=1e-5, atol=1e-6)
        done, steps = now, steps + 1
    assert torch.equal(cache.offsets, _off(lens))
    assert torch.equal(cache.items, torch.cat(items))
    assert steps >= (1 if split == "whole" else 2)


def test_cached_forward_errors():
    m = _model()
    with pytest.raises(ValueError, match="model.eval"):
        m.train().cached_forward(torch.tensor([1]), _off([1]))
    m.eval()
    _, cache = m.cached_forward(torch.tensor([1, 2]), _off([1, 1]))
    with pytest.raises(ValueError, match="holds 2 users, the batch 1"):
        m.cached_forward(torch.tensor([1]), _off([1]), cache=cache)
    with pytest.raises(ValueError, match="new_timestamps on every call"):
        m.cached_forward(torch.tensor([1]), _off([1, 0]), torch.tensor([5]), cache)
    with pytest.raises(ValueError, match="new_offsets end at"):
        m.cached_forward(torch.tensor([1, 2, 3]), _off([1, 1]), cache=cache)


def test_server_top_k_excludes_history():
    m = _model()
    server = HSTUServer(m, num_users=3, k=5, timestamps=True)
    g = torch.Generator().manual_seed(2)
    hist = [[], [], []]
    for step in range(4):
        counts = [int(c) for c in torch.randint(0, 3, (3,), generator=g)]
        new = [torch.randint(0, 500, (c,), generator=g) for c in counts]
        ts = torch.arange(sum(counts)) + 100 * step
        users, scores, ids = server.add(torch.cat(new), _off(counts), ts)
        for b in range(3):
            hist[b] += new[b].tolist()
        assert users.tolist() == [b for b in range(3) if counts[b] > 0]
        for row, u in enumerate(users.tolist()):
            assert not set(ids[row].tolist()) & set(hist[u])
        # the scores are the model's outputs for each user's latest event against the item vectors
        if users.numel():
            last = []
            for u in users.tolist():
                out, _ = m.cached_forward(torch.tensor(hist[u]), _off([len(hist[u])]),
                                          torch.tensor(_times(server, u)))
                last.append(out[-1])
            want, want_ids = topk_with_exclusion(torch.stack(last), m.item_vectors().detach(), 5,
                                                 torch.tensor(sum((hist[u] for u in users.tolist()), [])),
                                                 _off([len(hist[u]) for u in users.tolist()]))
            torch.testing.assert_close(scores, want, rtol=1e-5, atol=1e-6)


def _times(server, u):
    off = server.cache.offsets
    return server.cache.timestamps[int(off[u]):int(off[u + 1])].tolist()
