# SPDX-License-Identifier: Apache-2.0
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recops.data.criteo import ctr_data, synthetic_criteo
from recops.models.dlrm import DLRM, DLRMConfig, LogisticCTR, dot_interaction
from recops.models.train_ctr import evaluate_ctr, fit_ctr, train_step
from recops.nn.embedding import FusedOptimizer


def _config(opt, sizes=(30, 1, 17, 5), d=8):
    return DLRMConfig(list(sizes), embedding_dim=d, num_dense=13, bottom_mlp=(16, d), top_mlp=(12,),
                      embedding_optimizer=opt)


def _batch(sizes, b=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, v, (b,), generator=g) for v in sizes], dim=1)
    sparse[torch.rand(b, len(sizes), generator=g) < 0.2] = -1  # empty bags
    sparse[0, 0] = sizes[0] - 1  # the last row of a table
    return torch.randn(b, 13, generator=g), sparse, (torch.rand(b, generator=g) < 0.4).float()


class RefDLRM(nn.Module):
    """nn.EmbeddingBag per table + the same MLPs + an explicit pairwise dot loop."""

    def __init__(self, model: DLRM):
        super().__init__()
        cfg = model.config
        self.tables = nn.ModuleList()
        for k, v in zip(cfg.sparse_keys, cfg.table_sizes):
            eb = nn.EmbeddingBag(v, cfg.embedding_dim, mode="sum", include_last_offset=True)
            eb.weight.data.copy_(model.embeddings.table(f"t_{k}"))
            self.tables.append(eb)
        self.bottom, self.top = copy.deepcopy(model.bottom), copy.deepcopy(model.top)

    def forward(self, dense, sparse):
        b = dense.shape[0]
        embs = []
        for f, eb in enumerate(self.tables):
            present = sparse[:, f] >= 0
            offsets = torch.zeros(b + 1, dtype=torch.int64)
            offsets[1:] = torch.cumsum(present, 0)
            embs.append(eb(sparse[present, f], offsets))
        x = self.bottom(dense)
        vecs = [x] + embs
        dots = [(vecs[i] * vecs[j]).sum(1) for i in range(len(vecs)) for j in range(i)]
        return self.top(torch.cat([x, torch.stack(dots, 1)], 1)).squeeze(1)


def test_dot_interaction_pairs():
    x, e = torch.randn(3, 4), torch.randn(3, 2, 4)
    out = dot_interaction(x, e)
    assert out.shape == (3, 4 + 3)
    torch.testing.assert_close(out[:, 4], (e[:, 0] * x).sum(1))
    torch.testing.assert_close(out[:, 5], (e[:, 1] * x).sum(1))
    torch.testing.assert_close(out[:, 6], (e[:, 1] * e[:, 0]).sum(1))


def test_forward_matches_embedding_bag_reference():
    torch.manual_seed(0)
    model = DLRM(_config(None))
    ref = RefDLRM(model)
    dense, sparse, _ = _batch(model.config.table_sizes)
    from recops.data.criteo import sparse_to_kjt
    torch.testing.assert_close(model(dense, sparse_to_kjt(sparse, model.config.sparse_keys)), ref(dense, sparse))


@pytest.mark.parametrize("kind", ["sgd", "rowwise_adagrad"])
def test_fused_training_step_matches_reference(kind):
    torch.manual_seed(1)
    lr, eps = 0.3, 1e-8
    model = DLRM(_config(FusedOptimizer(kind, lr=lr, eps=eps)))
    ref = RefDLRM(model)
    opt = torch.optim.SGD(model.dense_parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(list(ref.bottom.parameters()) + list(ref.top.parameters()), lr=0.1)
    acc = [torch.zeros(v) for v in model.config.table_sizes]
    from recops.data.criteo import CTRBatch
    for step in range(3):
        dense, sparse, labels = _batch(model.config.table_sizes, seed=step)
        train_step(model, opt, CTRBatch(dense, sparse, labels))
        ref_opt.zero_grad()
        for eb in ref.tables:
            eb.weight.grad = None
        F.binary_cross_entropy_with_logits(ref(dense, sparse), labels).backward()
        ref_opt.step()
        with torch.no_grad():
            for f, eb in enumerate(ref.tables):
                rows = torch.unique(sparse[:, f][sparse[:, f] >= 0])
                g = eb.weight.grad[rows]
                if kind == "sgd":
                    eb.weight[rows] -= lr * g
                else:
                    acc[f][rows] += g.pow(2).mean(1)
                    eb.weight[rows] -= lr * g / (acc[f][rows].sqrt() + eps)[:, None]
    for f, (k, eb) in enumerate(zip(model.config.sparse_keys, ref.tables)):
        torch.testing.assert_close(model.embeddings.table(f"t_{k}"), eb.weight.detach(), atol=1e-5, rtol=1e-4)
    for p, q in zip(model.dense_parameters(), list(ref.bottom.parameters()) + list(ref.top.parameters())):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_bad_inputs():
    model = DLRM(_config(None))
    dense, sparse, _ = _batch(model.config.table_sizes)
    from recops.data.criteo import sparse_to_kjt
    kjt = sparse_to_kjt(sparse, model.config.sparse_keys)
    with pytest.raises(ValueError, match="dense must be"):
        model(dense[:, :5], kjt)
    with pytest.raises(ValueError, match="batch"):
        model(dense[:4], kjt)
    bad = sparse.clone()
    bad[1, 2] = 17  # table C3 has 17 rows
    with pytest.raises((ValueError, IndexError), match="17"):
        model(dense, sparse_to_kjt(bad, model.config.sparse_keys))
    with pytest.raises(ValueError, match="bottom_mlp must end"):
        DLRMConfig([3], embedding_dim=8, bottom_mlp=(16, 4))


def test_dlrm_beats_logistic_baseline_on_synthetic_data():
    data = ctr_data("synthetic", 300, seed=0, num_train=60_000, num_test=20_000)
    aucs = {}
    for cls in (DLRM, LogisticCTR):
        torch.manual_seed(0)
        cfg = DLRMConfig(data.table_sizes, embedding_dim=16, bottom_mlp=(64, 16), top_mlp=(64,),
                         embedding_optimizer=FusedOptimizer("rowwise_adagrad", lr=0.05))
        res = fit_ctr(cls(cfg), data, epochs=2, batch_size=1024, dense_lr=1e-3, progress=False, log=lambda s: None)
        aucs[cls.__name__] = res.test["AUC"]
    assert aucs["LogisticCTR"] > 0.6
    assert aucs["DLRM"] > aucs["LogisticCTR"] + 0.01, aucs
    assert aucs["DLRM"] < data.oracle_auc


def test_evaluate_ctr_metrics():
    s = synthetic_criteo(500, 400, table_sizes=20, seed=2)
    model = LogisticCTR(_config(None, sizes=[20] * 26))
    out = evaluate_ctr(model, [s.test])
    assert out["samples"] == 400 and 0 <= out["AUC"] <= 1 and out["logloss"] > 0


def test_dlrm_with_dynamic_tables_trains_on_raw_ids_and_round_trips():
    data = ctr_data("synthetic", 64, num_train=3000, num_test=500, vocab_size=64, raw_ids=True)
    cfg = DLRMConfig([32] * 26, embedding_dim=8, bottom_mlp=(16, 8), top_mlp=(16,),
                     embedding_optimizer=FusedOptimizer("rowwise_adagrad", lr=0.05),
                     dynamic={"admit_after": 1, "max_growth": 4})
    torch.manual_seed(0)
    model = DLRM(cfg)
    res = fit_ctr(model, data, epochs=2, batch_size=256, progress=False, log=lambda m: None)
    assert res.test["AUC"] > 0.6
    assert model.embeddings.capacity("t_C1") == 64 and model.embeddings.num_live("t_C1") <= 64
    again = DLRM(DLRMConfig.from_dict(cfg.to_dict()))
    again.load_state_dict(model.state_dict())
    assert evaluate_ctr(again, data.test_batches(500))["AUC"] == pytest.approx(res.test["AUC"])
    with pytest.raises(ValueError, match="dynamic"):
        DLRMConfig([4] * 26, embedding_dim=8, bottom_mlp=(8,), dynamic={"capacity": 3})
