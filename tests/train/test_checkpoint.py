# SPDX-License-Identifier: Apache-2.0
"""recops.train.checkpoint: every family saves -> loads with its family, model kind, config and weights, and
`recops eval` runs on it; folders in the two layouts written before the format recorded its family (built here
the way that code wrote them) load through the same loader."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch

from recops import cli
from recops.data.criteo import ctr_data, synthetic_criteo, write_criteo
from recops.data.multibehavior import load_feedback, split_feedback, synthetic_feedback
from recops.data.sequences import load_sequences, synthetic_sequences
from recops.models.dlrm import DLRMConfig
from recops.models.sequential import SeqConfig, build_model
from recops.train import checkpoint
from recops.train.ctr import CTR_MODELS, load_ctr_checkpoint, save_ctr_checkpoint, train_step
from recops.train.sequential import load_checkpoint, save_checkpoint
from recops.train.two_tower import build_two_tower, load_two_tower_checkpoint, save_two_tower_checkpoint

CASES = [("sequential", "hstu"), ("sequential", "sasrec"), ("ctr", "dlrm"), ("ctr", "logistic"),
         ("two_tower", "gnolr"), ("two_tower", "bce")]
LOADERS = {"sequential": lambda p: load_checkpoint(p)[0], "ctr": lambda p: load_ctr_checkpoint(p)[0],
           "two_tower": lambda p: load_two_tower_checkpoint(p)[0]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small data files of each family (what the checkpoints' data specs name)."""
    tmp = tmp_path_factory.mktemp("data")
    seqs = synthetic_sequences(num_users=60, num_items=50, mean_len=8, seed=1)
    with open(tmp / "u.data", "w") as f:  # ml-100k: user item rating timestamp
        for u in range(seqs.offsets.numel() - 1):
            for j in range(int(seqs.offsets[u]), int(seqs.offsets[u + 1])):
                f.write(f"{u}\t{int(seqs.items[j])}\t5\t{int(seqs.timestamps[j])}\n")
    s = synthetic_criteo(600, 10, table_sizes=20, seed=1)
    write_criteo(str(tmp / "day_0.tsv"), s.raw_dense_train, s.train.sparse, s.train.labels)
    d = synthetic_feedback(num_users=60, num_items=60, interactions_per_user=6, seed=2)
    with open(tmp / "events.txt", "w") as f:
        for u, i, lvl in zip(d.users.tolist(), d.items.tolist(), d.levels.tolist()):
            for t in range(1, lvl + 1):
                f.write(f"user{u} item{i} {d.behaviours[t - 1]} {1000 + t}\n")
    return {"sequential": str(tmp / "u.data"), "ctr": str(tmp / "day_0.tsv"), "two_tower": str(tmp / "events.txt")}


@dataclasses.dataclass
class Trained:
    model: torch.nn.Module
    config: object
    metrics: dict
    optimizer: object = None
    data: object = None


def _make(family: str, kind: str, files) -> Trained:
    """A small model of `kind` after one training step (so the optimizer states are not all zero)."""
    torch.manual_seed(0)
    path = files[family]
    if family == "sequential":
        data = load_sequences(path, "ml-100k")
        cfg = SeqConfig.preset(kind, dim=8, max_len=10, num_negatives=8)
        model = build_model(data.num_items, cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        model.item_emb.weight.square().sum().backward()
        opt.step()
        spec = {"path": path, "format": "ml-100k", "seed": 0, "max_len": 10}
        return Trained(model, cfg, {"model": kind, "data": spec}, opt, data)
    if family == "ctr":
        sizes = [20] * 26
        cfg = DLRMConfig(sizes, embedding_dim=4, bottom_mlp=(8, 4), top_mlp=(8,))
        model = CTR_MODELS[kind](cfg)
        batch = next(iter(ctr_data(path, sizes).train_batches(64)))
        train_step(model, torch.optim.Adam(model.dense_parameters()), batch)
        spec = {"path": path, "format": "criteo", "seed": 0, "table_sizes": sizes, "max_rows": None}
        return Trained(model, cfg, {"model": kind, "data": spec})
    train, _ = split_feedback(load_feedback(path, "multibehavior"), 0.2, 0)
    model = build_two_tower(kind, train, embedding_dim=4, head_dim=4, hidden=(8,))
    return Trained(model, model.config, {"model": kind, "data": {"path": path, "format": "multibehavior", "seed": 0}})


def _save(family: str, kind: str, t: Trained, path: str) -> None:
    if family == "sequential":
        save_checkpoint(path, t.model, t.optimizer, t.config, t.data, t.metrics)
    elif family == "ctr":
        save_ctr_checkpoint(path, t.model, kind, t.metrics)
    else:
        save_two_tower_checkpoint(path, t.model, kind, t.metrics)


# ---- the layouts written before (copied from the save functions of that code) -------------------------------------

def _save_legacy(family: str, kind: str, t: Trained, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    torch.save(t.model.state_dict(), os.path.join(path, "model.pt"))
    if family == "sequential":  # recops.models.train_sequential.save_checkpoint
        torch.save(t.optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({"config": dataclasses.asdict(t.config), "num_items": t.data.num_items}, f, indent=2)
        np.savez(os.path.join(path, "id_maps.npz"), item_ids=t.data.item_ids.astype(str),
                 user_ids=t.data.user_ids.astype(str))
    else:  # recops.models._checkpoint.save_model (ranking and two-tower)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({"family": family, "model": kind, "config": t.model.config.to_dict()}, f, indent=2)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump(t.metrics, f, indent=2)


def _as_json(config) -> dict:
    return json.loads(json.dumps(checkpoint.config_dict(config)))


def _assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def _check_loaded(family, kind, t: Trained, path, layout, capsys):
    ck = checkpoint.load(path)
    assert (ck.family, ck.kind, ck.spec["layout"]) == (family, kind, layout)
    assert _as_json(ck.config) == _as_json(t.config)
    if family == "sequential":
        assert ck.config == t.config
        assert list(ck.arrays["id_maps"]["item_ids"]) == list(t.data.item_ids.astype(str))
        _assert_same_state(ck.optimizer_state["state"][0], t.optimizer.state_dict()["state"][0])
    assert ck.metrics == t.metrics
    _assert_same_state(ck.model.state_dict(), t.model.state_dict())
    _assert_same_state(LOADERS[family](path).state_dict(), t.model.state_dict())
    capsys.readouterr()
    torch.manual_seed(0)
    assert cli.main(["eval", "--checkpoint", path]) == 0
    out = capsys.readouterr().out
    assert kind in out.splitlines()[0]
    assert {"sequential": "NDCG@10", "ctr": "AUC", "two_tower": "L2/Recall@50"}[family] in out


@pytest.mark.parametrize("family,kind", CASES)
def test_round_trip(family, kind, files, tmp_path, capsys):
    t = _make(family, kind, files)
    path = str(tmp_path / kind)
    _save(family, kind, t, path)
    with open(os.path.join(path, "config.json")) as f:
        meta = json.load(f)
    assert (meta["format_version"], meta["family"], meta["model"]) == (checkpoint.FORMAT_VERSION, family, kind)
    _check_loaded(family, kind, t, path, "current", capsys)


@pytest.mark.parametrize("family,kind", CASES)
def test_legacy_layout_loads(family, kind, files, tmp_path, capsys):
    t = _make(family, kind, files)
    path = str(tmp_path / kind)
    _save_legacy(family, kind, t, path)
    layout = "legacy-sequential" if family == "sequential" else "legacy-family"
    _check_loaded(family, kind, t, path, layout, capsys)
    # and through the run folder (train --out), as `recops eval --checkpoint RUN` does
    assert checkpoint.find(str(tmp_path)) == path


def test_family_functions_refuse_another_family(files, tmp_path):
    t = _make("ctr", "dlrm", files)
    _save("ctr", "dlrm", t, str(tmp_path / "dlrm"))
    with pytest.raises(ValueError, match="ctr checkpoint, not sequential"):
        load_checkpoint(str(tmp_path / "dlrm"))
    with pytest.raises(ValueError, match="not two_tower"):
        load_two_tower_checkpoint(str(tmp_path / "dlrm"))


def test_unknown_layouts_are_refused():
    with pytest.raises(ValueError, match="not a recops checkpoint"):
        checkpoint.normalise_spec({"weights": "x"})
    with pytest.raises(ValueError, match="newer"):
        checkpoint.normalise_spec({"format_version": checkpoint.FORMAT_VERSION + 1, "family": "ctr"})
    with pytest.raises(ValueError, match="family 'mf'"):
        checkpoint.normalise_spec({"format_version": 2, "family": "mf", "model": "x", "config": {}})
    with pytest.raises(ValueError, match="family"):
        checkpoint.save("/nonexistent", torch.nn.Linear(1, 1), "mf", "x", {})


def test_eval_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text(json.dumps({"weights": 1}))
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "--checkpoint", str(tmp_path / "a")])
    assert e.value.code == 2  # the message is str(e.value) and the one line on stderr
    assert "not a recops checkpoint" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "--checkpoint", str(tmp_path / "missing")])
    assert "no checkpoint" in str(e.value)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(json.dumps({"config": {"model": "hstu"}, "num_items": 3}))
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "--checkpoint", str(tmp_path)])
    assert "holds checkpoints ['a', 'b']" in str(e.value)
    assert capsys.readouterr().err.count("recops: error: ") == 3


# ---- damaged checkpoints through `recops eval`: one line naming the file and the problem -------------------------

def _truncate(file):
    data = open(file, "rb").read()
    open(file, "wb").write(data[:len(data) // 2])


def _edit_json(file, change):
    with open(file) as f:
        raw = json.load(f)
    change(raw)
    with open(file, "w") as f:
        json.dump(raw, f)


def _other_weights(path, files):
    other = build_model(7, SeqConfig.preset("hstu", dim=8, max_len=10, num_negatives=8))
    torch.save(other.state_dict(), os.path.join(path, "model.pt"))


DAMAGE = {  # name -> (damage(checkpoint folder, files), file named, problem)
    "model.pt missing": (lambda p, f: os.remove(os.path.join(p, "model.pt")), "model.pt", "missing"),
    "model.pt truncated": (lambda p, f: _truncate(os.path.join(p, "model.pt")), "model.pt",
                           "is not a readable torch file"),
    "model.pt empty": (lambda p, f: open(os.path.join(p, "model.pt"), "wb").close(), "model.pt",
                       "is not a readable torch file"),
    "model.pt not a state_dict": (lambda p, f: torch.save(torch.zeros(3), os.path.join(p, "model.pt")), "model.pt",
                                  "must hold a state_dict, got Tensor"),
    "model.pt of another model": (_other_weights, "model.pt", "does not match the model config.json describes"),
    "config.json not JSON": (lambda p, f: open(os.path.join(p, "config.json"), "w").write("{"), "config.json",
                             "is not a JSON file"),
    "config.json a list": (lambda p, f: open(os.path.join(p, "config.json"), "w").write("[1]"), "config.json",
                           "not a recops checkpoint config"),
    "config.json unknown field": (lambda p, f: _edit_json(os.path.join(p, "config.json"),
                                                          lambda c: c["config"].update(bogus=1)),
                                  "config.json", "does not describe a sequential model"),
    "config.json bad version": (lambda p, f: _edit_json(os.path.join(p, "config.json"),
                                                        lambda c: c.update(format_version="2")),
                                "config.json", "format_version must be an int"),
    "optimizer.pt truncated": (lambda p, f: _truncate(os.path.join(p, "optimizer.pt")), "optimizer.pt",
                               "is not a readable torch file"),
    "id_maps.npz truncated": (lambda p, f: _truncate(os.path.join(p, "id_maps.npz")), "id_maps.npz",
                              "is not a readable .npz file"),
    "metrics.json not JSON": (lambda p, f: open(os.path.join(p, "metrics.json"), "w").write("nan?"), "metrics.json",
                              "is not a JSON file"),
    "metrics.json missing": (lambda p, f: os.remove(os.path.join(p, "metrics.json")), "metrics.json",
                             "got no metrics.json"),
    "metrics.json without data": (lambda p, f: _edit_json(os.path.join(p, "metrics.json"), lambda m: m.pop("data")),
                                  "metrics.json", "must hold the data spec"),
    "data spec incomplete": (lambda p, f: _edit_json(os.path.join(p, "metrics.json"),
                                                     lambda m: m["data"].pop("max_len")),
                             "metrics.json", "the data spec must name max_len"),
    "data file gone": (lambda p, f: _edit_json(os.path.join(p, "metrics.json"),
                                               lambda m: m["data"].update(path=p + "/gone.data")),
                       "gone.data", "no such file"),
    "data file changed": (lambda p, f: open(f["sequential"], "a").write("0\t999\t5\t1\n"), "u.data",
                          "was the file changed since training?"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_eval_of_a_damaged_checkpoint_is_one_line(damage, files, tmp_path, capsys):
    """Each of these ended in a traceback (RuntimeError, UnpicklingError, KeyError, TypeError, ...)."""
    files = dict(files, sequential=shutil.copy(files["sequential"], tmp_path))  # "data file changed" appends
    t = _make("sequential", "hstu", files)
    path = str(tmp_path / "hstu")
    _save("sequential", "hstu", t, path)
    hurt, named, problem = DAMAGE[damage]
    hurt(path, files)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "--checkpoint", path])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("recops: error: "), err
    assert named in err and problem in err, err


@pytest.mark.parametrize("family,kind,change,problem", [
    ("ctr", "dlrm", lambda m: m["data"].update(table_sizes=[21] * 26), "the data has table sizes [21, 21"),
    ("two_tower", "gnolr", None, "the data has (users, items, levels) (3, 2, 1), the checkpoint"),
])
def test_eval_refuses_data_that_no_longer_fits(family, kind, change, problem, files, tmp_path, capsys):
    t = _make(family, kind, files)
    path = str(tmp_path / kind)
    _save(family, kind, t, path)
    if change is None:  # another events file in place of the one trained on
        (tmp_path / "events.txt").write_text("u1 i1 view\nu1 i2 view\nu2 i1 view\nu3 i1 view\nu3 i2 view\n")
        change = lambda m: m["data"].update(path=str(tmp_path / "events.txt"))  # noqa: E731
    _edit_json(os.path.join(path, "metrics.json"), change)
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "--checkpoint", path])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and problem in err, err
