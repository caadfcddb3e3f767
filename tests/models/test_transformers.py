# SPDX-License-Identifier: Apache-2.0
"""SASRec and BERT4Rec on jagged softmax attention, and decoupled attention embeddings: SASRec's jagged
formulation equals the padded SDPA one, BERT4Rec's Cloze masking and evaluation token, seeded repeatability,
training beats popularity, checkpoints and the command line."""

import json

import pytest
import torch

from recops.data import leave_one_out, synthetic_sequences
from recops.models import SeqConfig, build_model
from recops.models.sequential import BERT4Rec, SASRec, _append_last
from recops.models.train_sequential import evaluate, fit, load_checkpoint, popularity_metrics, save_checkpoint


def _batch(num_items=50, lengths=(7, 1, 0, 32, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    L = sum(lengths)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lengths).cumsum(0)
    return torch.randint(0, num_items, (L,), generator=g), offsets


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("decoupled", [False, True])
def test_jagged_equals_padded_sdpa_in_eval_mode(name, decoupled):
    """The model on recops.ops.jagged_attention and on torch SDPA over the padded batch: same outputs and
    gradients (eval mode: no dropout)."""
    torch.manual_seed(0)
    cfg = SeqConfig.preset(name, dim=16, max_len=40, decoupled_embeddings=decoupled)
    model = build_model(50, cfg).double().eval()
    items, off = _batch()
    out = model(items, off)
    g = torch.autograd.grad((out * out.detach().flip(0)).sum(), list(model.parameters()))
    model.use_padded_sdpa()
    out_ref = model(items, off)
    g_ref = torch.autograd.grad((out_ref * out.detach().flip(0)).sum(), list(model.parameters()))
    torch.testing.assert_close(out, out_ref)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def test_sasrec_is_causal_and_bert4rec_is_not():
    torch.manual_seed(0)
    items, off = _batch(lengths=(10,))
    changed = items.clone()
    changed[-1] = (items[-1] + 1) % 50
    for name, sees_future in (("sasrec", False), ("bert4rec", True)):
        model = build_model(50, SeqConfig.preset(name, dim=8, max_len=20)).eval()
        a, b = model(items, off), model(changed, off)
        assert torch.equal(a[:-1], b[:-1]) != sees_future


def test_sasrec_training_mode_uses_attention_dropout():
    torch.manual_seed(0)
    model = build_model(50, SeqConfig.preset("sasrec", dim=8, max_len=20, dropout=0.3))
    items, off = _batch()
    torch.manual_seed(1)
    a = model(items, off)
    torch.manual_seed(1)
    b = model(items, off)
    c = model(items, off)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_bert4rec_cloze_masks_history_positions_only():
    torch.manual_seed(0)
    model = BERT4Rec(50, SeqConfig.preset("bert4rec", dim=8, max_len=40, mask_prob=0.3))
    items, off = _batch(lengths=(7, 1, 0, 32, 12, 3))
    masked, where = model.cloze(items, off, torch.Generator().manual_seed(3))
    assert masked.shape == items.shape and where.dtype == torch.bool
    assert torch.equal(masked[~where], items[~where]) and (masked[where] == model.mask_token).all()
    lengths = off[1:] - off[:-1]
    seq = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    per_seq = torch.zeros(lengths.numel(), dtype=torch.long).index_add_(0, seq, where.long())
    assert ((per_seq >= 1) == (lengths >= 1)).all()  # every non-empty sequence has a masked position
    assert abs(where.float().mean().item() - 0.3) < 0.2
    again = model.cloze(items, off, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], masked) and torch.equal(again[1], where)


def test_bert4rec_training_targets_are_real_items_and_eval_appends_mask():
    torch.manual_seed(0)
    model = BERT4Rec(50, SeqConfig.preset("bert4rec", dim=8, max_len=40))
    items, off = _batch(lengths=(7, 1, 32))
    targets = torch.roll(items, -1)
    out, tgt = model.training_outputs({"items": items, "offsets": off, "targets": targets}, "cpu",
                                      torch.Generator().manual_seed(0))
    assert out.shape[0] == tgt.shape[0] >= 3 and (tgt < model.num_items).all()
    full, full_off = _append_last(items, off, targets[off[1:] - 1])
    assert full.numel() == items.numel() + 3 and torch.equal(full[full_off[1:] - 1], targets[off[1:] - 1])
    # evaluation: the output at an appended [MASK] after the history
    model.eval()
    last = model.last_outputs(items, off)
    seq_with_mask, moff = _append_last(items, off, torch.full((3,), model.mask_token))
    torch.testing.assert_close(last, model(seq_with_mask, moff)[moff[1:] - 1])
    assert model.item_vectors().shape == (50, 8)  # [MASK] is never scored


def test_bert4rec_seeded_run_repeats_bit_for_bit():
    data = synthetic_sequences(num_users=80, num_items=60, mean_len=10, seed=0)
    split = leave_one_out(data, max_len=20)

    def run():
        torch.manual_seed(0)
        cfg = SeqConfig.preset("bert4rec", dim=8, max_len=20, batch_size=16, loss="full_softmax")
        model = build_model(data.num_items, cfg)
        fit(model, split, cfg, epochs=2, progress=False, log=lambda s: None, seed=5)
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name,decoupled", [("sasrec", False), ("bert4rec", False), ("hstu", True)])
def test_short_training_beats_popularity(tmp_path, name, decoupled):
    torch.manual_seed(0)
    data = synthetic_sequences(num_users=600, num_items=400, mean_len=30, seed=0)
    split = leave_one_out(data, max_len=50)
    cfg = SeqConfig.preset(name, dim=32, max_len=50, batch_size=64, num_negatives=64,
                           decoupled_embeddings=decoupled)
    model = build_model(data.num_items, cfg)
    res = fit(model, split, cfg, epochs=4 if name != "bert4rec" else 8, progress=False, log=lambda s: None)
    pop = popularity_metrics(split)
    assert res.test["NDCG@10"] > 2 * pop["NDCG@10"] and res.test["HR@50"] > pop["HR@50"], (res.test, pop)
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(str(tmp_path / "ck"), model, opt, cfg, data, {"test": res.test})
    loaded, cfg2, _, _, _ = load_checkpoint(str(tmp_path / "ck"))
    assert cfg2 == cfg and type(loaded) is type(model)
    assert evaluate(loaded, split.test_input, split.test_target) == pytest.approx(res.test)


def test_decoupled_embeddings_separate_attention_from_representation():
    """With decoupled tables the attention weights depend on attn_emb only: changing item_emb moves the output
    through the values, changing attn_emb moves it through the attention; item_vectors use item_emb."""
    torch.manual_seed(0)
    for name in ("sasrec", "bert4rec", "hstu"):
        model = build_model(50, SeqConfig.preset(name, dim=8, max_len=40, decoupled_embeddings=True,
                                                 dropout=0.0))
        assert model.attn_emb is not None and model.attn_emb.weight.shape == model.item_emb.weight.shape
        items, off = _batch()
        out = model(items, off)
        (g_attn,) = torch.autograd.grad(out.square().sum() + out.sum(), [model.attn_emb.weight])
        assert g_attn.abs().sum() > 0
        plain = build_model(50, SeqConfig.preset(name, dim=8, max_len=40, dropout=0.0))
        assert plain.attn_emb is None
        n_dec = sum(p.numel() for p in model.parameters())
        n_plain = sum(p.numel() for p in plain.parameters())
        assert n_dec > n_plain


def test_cli_train_eval_bert4rec_and_demo(tmp_path, capsys, monkeypatch):
    from recops import cli
    from recops.data import sequences

    small = lambda seed=0: synthetic_sequences(num_users=120, num_items=100, mean_len=12, seed=seed)
    monkeypatch.setattr(sequences, "synthetic_sequences", small)
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "bert4rec", "--epochs", "2", "--dim", "8", "--max-len", "20",
                     "--mask-prob", "0.3", "--decoupled-embeddings", "--loss", "full_softmax", "--no-progress",
                     "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"popularity", "bert4rec"}
    cfg = json.loads((out / "bert4rec" / "config.json").read_text())
    assert cfg["config"]["mask_prob"] == 0.3 and cfg["config"]["decoupled_embeddings"] is True
    assert cli.main(["eval", "--checkpoint", str(out)]) == 0
    assert "NDCG@10" in capsys.readouterr().out
    assert cli.main(["demo", "--time-budget", "0.02", "--epochs", "1", "--dim", "8", "--max-len", "20",
                     "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "the same time budget each" in text and "bert4rec" in text and "sasrec" in text
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "bert4rec", "--mask-prob", "1.5"])
    assert "--mask-prob" in capsys.readouterr().err
