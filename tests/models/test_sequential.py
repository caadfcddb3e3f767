# SPDX-License-Identifier: Apache-2.0
"""HSTU/SASRec models: fused path equals the padded reference path, training beats popularity, metrics by
hand, checkpoints, and the command line."""

import json
import math

import pytest
import torch

from recops.data import leave_one_out, synthetic_sequences
from recops.metrics import ranking_metrics, ranks_of, topk_with_exclusion
from recops.models import HSTU, SeqConfig, build_model
from recops.models.train_sequential import evaluate, fit, load_checkpoint, popularity_metrics, save_checkpoint


def test_metrics_by_hand():
    ranks = torch.tensor([1.0, 3.0, 11.0, math.inf])
    m = ranking_metrics(ranks, ks=(1, 10))
    assert m["HR@1"] == 0.25 and m["HR@10"] == 0.5
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 4)
    ids = torch.tensor([[5, 2, 9], [1, 2, 3]])
    assert ranks_of(torch.tensor([9, 7]), ids).tolist() == [3.0, math.inf]


def test_topk_excludes_history():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[3.0, 0.0], [2.0, 0.0], [0.0, 5.0], [0.0, 1.0]])
    _, ids = topk_with_exclusion(q, items, 2, torch.tensor([0, 2]), torch.tensor([0, 1, 2]))
    assert ids.tolist() == [[1, 3], [3, 1]] or ids[0, 0] == 1 and ids[1, 0] == 3


def test_hstu_model_fused_equals_reference_path():
    torch.manual_seed(0)
    cfg = SeqConfig.preset("hstu", dim=16, max_len=30, dropout=0.0)
    model = HSTU(50, cfg).double()
    items = torch.randint(0, 50, (40,))
    offsets = torch.tensor([0, 7, 8, 8, 40])
    ts = torch.sort(torch.randint(0, 10**6, (40,))).values
    out = model(items, offsets, ts)
    loss = (out * torch.randn_like(out)).sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    model.use_reference_attention()
    out_ref = model(items, offsets, ts)
    torch.testing.assert_close(out, out_ref)
    loss_ref = (out_ref * torch.randn_like(out_ref)).sum()  # different weights -> compare a fixed projection
    g_ref = torch.autograd.grad((out_ref * out.detach()).sum(), list(model.parameters()))
    model.use_reference_attention(False)
    g = torch.autograd.grad((model(items, offsets, ts) * out.detach()).sum(), list(model.parameters()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)
    assert loss_ref is not None and grads


@pytest.mark.parametrize("name", ["hstu", "sasrec"])
def test_forward_shapes_and_norms(name):
    cfg = SeqConfig.preset(name, dim=8, max_len=10, dropout=0.0)
    model = build_model(20, cfg)
    out = model(torch.randint(0, 20, (13,)), torch.tensor([0, 1, 13]), torch.arange(13))
    assert out.shape == (13, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(13))


def test_short_training_beats_popularity(tmp_path):
    torch.manual_seed(0)
    data = synthetic_sequences(num_users=600, num_items=400, mean_len=30, seed=0)
    split = leave_one_out(data, max_len=50)
    cfg = SeqConfig.preset("hstu", dim=32, max_len=50, batch_size=64, num_negatives=64)
    model = build_model(data.num_items, cfg)
    res = fit(model, split, cfg, epochs=4, progress=False, log=lambda s: None)
    pop = popularity_metrics(split)
    assert res.test["NDCG@10"] > 2 * pop["NDCG@10"] and res.test["HR@50"] > pop["HR@50"]
    # checkpoint round trip gives the same metrics
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(str(tmp_path / "ck"), model, opt, cfg, data, {"test": res.test})
    loaded, cfg2, item_ids, _, opt_state = load_checkpoint(str(tmp_path / "ck"))
    assert cfg2 == cfg and len(item_ids) == data.num_items and opt_state is not None
    assert evaluate(loaded, split.test_input, split.test_target) == pytest.approx(res.test)


def test_cli_train_and_eval(tmp_path, capsys, monkeypatch):
    from recops import cli
    from recops.data import sequences

    small = lambda seed=0: synthetic_sequences(num_users=150, num_items=120, mean_len=12, seed=seed)
    monkeypatch.setattr(sequences, "synthetic_sequences", small)
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "hstu", "--epochs", "2", "--dim", "8", "--max-len", "20",
                     "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"popularity", "hstu"} and "NDCG@10" in metrics["test"]["hstu"]
    assert cli.main(["eval", "--checkpoint", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test metrics" in text and "NDCG@10" in text
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", str(tmp_path / "x.dat")])


# ---- the training objective: per-position / shared sampled softmax, full softmax, logQ ------------------------

def _loss_inputs(seed=0, L=37, V=60, D=8):
    g = torch.Generator().manual_seed(seed)
    out = torch.nn.functional.normalize(torch.randn(L, D, generator=g, dtype=torch.float64), dim=-1)
    items = torch.nn.functional.normalize(torch.randn(V, D, generator=g, dtype=torch.float64), dim=-1)
    return out.requires_grad_(), torch.randint(0, V, (L,), generator=g), items.requires_grad_()


def test_next_item_loss_per_position_draws_per_row_negatives():
    from recops.models.sequential import next_item_loss
    from recops.ops import sampled_softmax_ref as ref
    out, targets, items = _loss_inputs()
    cfg = SeqConfig.preset("hstu", num_negatives=16, temperature=0.1)
    got = next_item_loss(out, targets, items, cfg, torch.Generator().manual_seed(5))
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(5)))
    negs = ref.generated_negatives(out.shape[0], 16, items.shape[0], seed)
    assert negs.shape == (37, 16) and not (negs == negs[0]).all()  # a different set for every position
    want = ref.sampled_softmax_loss(out, targets, items, negs, temperature=0.1)
    torch.testing.assert_close(got, want)
    ga = torch.autograd.grad(got, (out, items))
    gb = torch.autograd.grad(want, (out, items))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


def test_next_item_loss_shared_equals_the_plain_composition():
    from recops.models import sampled_softmax_loss
    from recops.models.sequential import next_item_loss
    out, targets, items = _loss_inputs(1)
    cfg = SeqConfig.preset("hstu", num_negatives=16, temperature=0.1, negatives="shared")
    got = next_item_loss(out, targets, items, cfg, torch.Generator().manual_seed(3))
    negs = torch.randint(0, items.shape[0], (16,), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, sampled_softmax_loss(out, targets, items, negs, 0.1))


def test_next_item_loss_full_softmax_and_logq():
    from recops.models.sequential import next_item_loss
    from recops.ops import sampled_softmax_ref as ref
    out, targets, items = _loss_inputs(2)
    cfg = SeqConfig.preset("hstu", temperature=0.2, loss="full_softmax")
    want = torch.nn.functional.cross_entropy(out @ items.t() / 0.2, targets)
    torch.testing.assert_close(next_item_loss(out, targets, items, cfg), want)
    probs = torch.rand(items.shape[0], generator=torch.Generator().manual_seed(0)).double() ** 4
    probs[:10] = 0  # never sampled
    probs = probs / probs.sum()
    cfg = SeqConfig.preset("hstu", num_negatives=32, temperature=0.2, logq=True)
    got = next_item_loss(out, targets, items, cfg, torch.Generator().manual_seed(4), probs)
    negs = torch.multinomial(probs, 37 * 32, replacement=True, generator=torch.Generator().manual_seed(4))
    assert negs.min() >= 10
    want = ref.sampled_softmax_loss(out, targets, items, negs.view(37, 32), temperature=0.2,
                                    log_q=probs.clamp_min(1e-30).log())
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="needs item_probs"):
        next_item_loss(out, targets, items, cfg)


@pytest.mark.parametrize("bad, match", [(dict(loss="bpr"), "loss must be one of"),
                                        (dict(negatives="global"), "negatives must be one of"),
                                        (dict(dropout=1.0), "dropout must be in"),
                                        (dict(temperature=0.0), "temperature must be finite and > 0")])
def test_seq_config_rejects_unknown_objectives(bad, match):
    with pytest.raises(ValueError, match=match):
        SeqConfig.preset("hstu", **bad)


@pytest.mark.parametrize("flags", [["--loss", "full_softmax"], ["--no-negatives-per-position"],
                                   ["--logq", "--dropout", "0.5", "--temperature", "0.1", "--lr", "0.002"]])
def test_cli_objective_flags_reach_the_config(tmp_path, monkeypatch, flags):
    from recops import cli
    from recops.data import sequences

    small = lambda seed=0: synthetic_sequences(num_users=80, num_items=60, mean_len=10, seed=seed)
    monkeypatch.setattr(sequences, "synthetic_sequences", small)
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "hstu", "--epochs", "1", "--dim", "8", "--max-len", "20",
                     "--no-progress", "--out", str(out)] + flags) == 0
    cfg = json.loads((out / "hstu" / "config.json").read_text())
    cfg = cfg.get("config", cfg)
    want = {"--loss": ("loss", "full_softmax"), "--no-negatives-per-position": ("negatives", "shared"),
            "--logq": ("logq", True), "--dropout": ("dropout", 0.5), "--temperature": ("temperature", 0.1),
            "--lr": ("lr", 0.002)}
    for f in flags:
        if f in want:
            key, value = want[f]
            assert cfg[key] == value, (f, cfg)
    if "--loss" not in flags:
        assert cfg["loss"] == "sampled_softmax"
    if "--no-negatives-per-position" not in flags:
        assert cfg["negatives"] == "per_position"


@pytest.mark.parametrize("flags, match", [(["--dropout", "1"], "dropout"), (["--temperature", "0"], "temperature"),
                                          (["--loss", "bpr"], "loss"), (["--lr", "nan"], "lr")])
def test_cli_objective_flags_validated(flags, match, capsys):
    from recops import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--model", "hstu"] + flags)
    assert e.value.code == 2 and match in capsys.readouterr().err
