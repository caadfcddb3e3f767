# SPDX-License-Identifier: Apache-2.0
"""LightGCN in the two-tower family: beats popularity on synthetic feedback, round-trips a checkpoint (graph
included), and its propagation equals the dense formula; `recops train --model lightgcn` end to end."""

import json

import pytest
import torch

from recops import cli
from recops.data.multibehavior import split_feedback, synthetic_feedback
from recops.train.two_tower import (build_two_tower, evaluate_two_tower, fit_lightgcn, load_two_tower_checkpoint,
                                    popularity_two_tower_metrics, save_two_tower_checkpoint)


@pytest.fixture(scope="module")
def split():
    data = synthetic_feedback(num_users=800, num_items=500, interactions_per_user=20, seed=3)
    return split_feedback(data, 0.2, 0)


@pytest.mark.parametrize("kind,width", [("lightgcn", 32), ("ngcf", 96)])
def test_graph_models_beat_popularity_and_round_trip(split, tmp_path, kind, width):
    train, test = split
    torch.manual_seed(0)
    model = build_two_tower(kind, train, embedding_dim=32, num_layers=2)
    res = fit_lightgcn(model, train, test, epochs=8, batch_size=2048, lr=5e-3, progress=False, log=lambda m: None)
    pop = popularity_two_tower_metrics(train, test)
    assert res.test["L1/Recall@50"] > pop["L1/Recall@50"] + 0.02, (res.test, pop)
    assert res.test["L1/AUC"] > 0.7
    assert model.final_embeddings().shape[1] == width  # NGCF concatenates E_0 .. E_2
    save_two_tower_checkpoint(str(tmp_path / kind), model, kind, {"test": res.test})
    again, spec = load_two_tower_checkpoint(str(tmp_path / kind))
    assert spec["model"] == kind
    assert evaluate_two_tower(again, train, test)["L1/Recall@50"] == pytest.approx(res.test["L1/Recall@50"])


def test_final_embeddings_follow_the_dense_formula(split):
    train, _ = split
    model = build_two_tower("lightgcn", train, embedding_dim=4, num_layers=2).double()
    a = model.graph().to_dense().double()
    e0 = model.embedding.detach()
    want = (e0 + a @ e0 + a @ (a @ e0)) / 3
    torch.testing.assert_close(model.final_embeddings().detach(), want)


@pytest.mark.parametrize("model", ["lightgcn", "ngcf", "cml"])
def test_cli_graph_and_metric_models(tmp_path, capsys, model):
    out = tmp_path / "run"
    assert cli.main(["train", "--model", model, "--data", "synthetic", "--format", "multibehavior",
                     "--epochs", "1", "--layers", "1", "--dim", "8", "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "L1/NDCG@20" in metrics["test"][model]
    assert cli.main(["eval", "--checkpoint", str(out / model)]) == 0
    assert "Recall@50" in capsys.readouterr().out


def test_cml_beats_popularity_and_serves_by_inner_product(split):
    from recops.train.two_tower import fit_cml

    train, test = split
    torch.manual_seed(0)
    model = build_two_tower("cml", train, embedding_dim=32)
    res = fit_cml(model, train, test, epochs=20, batch_size=2048, progress=False, log=lambda m: None)
    pop = popularity_two_tower_metrics(train, test)
    assert res.test["L1/Recall@50"] > pop["L1/Recall@50"] + 0.05, (res.test, pop)
    assert float(model.user.norm(dim=1).max()) <= 1 + 1e-5 and float(model.item.norm(dim=1).max()) <= 1 + 1e-5
    users, items = torch.arange(5), torch.arange(train.num_items)
    ip = model.user_vectors(users, 1) @ model.item_vectors(items, 1).t()
    dist = -torch.cdist(model.user[users], model.item[items]).square()
    torch.testing.assert_close(ip - ip.max(1, keepdim=True).values, dist - dist.max(1, keepdim=True).values,
                               atol=1e-5, rtol=0)  # same ranking: they differ by a per-user constant
