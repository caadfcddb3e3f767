# SPDX-License-Identifier: Apache-2.0
"""`recops train --model dlrm|gnolr` and `recops eval` on small files written here."""

import json

import pytest
import torch

from recops import cli
from recops.data.criteo import synthetic_criteo, write_criteo
from recops.data.multibehavior import synthetic_feedback


def test_cli_dlrm_on_a_criteo_file(tmp_path, capsys):
    s = synthetic_criteo(2000, 10, table_sizes=40, seed=1)
    path = tmp_path / "day_0.tsv"
    write_criteo(str(path), s.raw_dense_train, s.train.sparse, s.train.labels)
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "dlrm", "--data", str(path), "--format", "criteo", "--table-size", "40",
                     "--embedding-dim", "8", "--epochs", "1", "--batch-size", "256", "--no-progress",
                     "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"dlrm", "logistic"}
    assert 0 <= metrics["test"]["dlrm"]["AUC"] <= 1
    assert metrics["runs"]["dlrm"]["data"]["table_sizes"] == [40] * 26
    assert cli.main(["eval", "--checkpoint", str(out / "dlrm")]) == 0
    assert "AUC" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="criteo"):
        cli.main(["train", "--model", "dlrm", "--data", str(path), "--format", "ml-1m"])


def test_cli_gnolr_on_a_multibehavior_file(tmp_path, capsys):
    d = synthetic_feedback(num_users=80, num_items=60, interactions_per_user=8, seed=2)
    path = tmp_path / "events.txt"
    with open(path, "w") as f:
        for u, i, lvl in zip(d.users.tolist(), d.items.tolist(), d.levels.tolist()):
            for t in range(1, lvl + 1):  # every behaviour up to the deepest, as logs record them
                f.write(f"user{u} item{i} {d.behaviours[t - 1]} {1000 + t}\n")
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "gnolr", "--data", str(path), "--format", "multibehavior",
                     "--embedding-dim", "8", "--epochs", "1", "--batch-size", "128", "--no-progress",
                     "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"gnolr", "bce-two-tower"}
    assert "L3/Recall@50" in metrics["test"]["gnolr"] and "L1/GAUC" in metrics["test"]["gnolr"]
    torch.manual_seed(0)
    assert cli.main(["eval", "--checkpoint", str(out / "gnolr")]) == 0
    assert "L2/AUC" in capsys.readouterr().out


def test_cli_dlrm_meets_a_bad_line_while_streaming(tmp_path, capsys):
    """Criteo files are streamed, so a bad line deep in the file is met during training: it is still one line
    naming the file and line (a DataError is a user error wherever it surfaces), not a traceback."""
    s = synthetic_criteo(400, 10, table_sizes=20, seed=3)
    path = tmp_path / "day_0.tsv"
    write_criteo(str(path), s.raw_dense_train, s.train.sparse, s.train.labels)
    lines = path.read_text().splitlines(keepends=True)
    lines[299] = "1\t" + "9" * 30 + "\n"  # line 300: an I1 beyond int64 (an OverflowError before)
    path.write_text("".join(lines))
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--model", "dlrm", "--data", str(path), "--table-size", "20", "--embedding-dim", "4",
                  "--epochs", "1", "--batch-size", "64", "--no-progress", "--no-baseline"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == f"recops: error: {path}:300: integer feature I1 must fit in int64 [-2^63, 2^63), got '{'9' * 30}'\n"


def test_cli_ranking_data_with_a_byte_order_mark(tmp_path, capsys):
    """A BOM made the first Criteo line a bad label; it is dropped."""
    s = synthetic_criteo(300, 10, table_sizes=20, seed=4)
    path = tmp_path / "day_0.tsv"
    write_criteo(str(path), s.raw_dense_train, s.train.sparse, s.train.labels)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert cli.main(["train", "--model", "logistic", "--data", str(path), "--table-size", "20", "--epochs", "1",
                     "--batch-size", "128", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "data: 270 train / 30 test samples" in out


def test_cli_dlrm_dynamic_tables(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "dlrm", "--data", "synthetic", "--vocab-size", "30", "--table-size", "16",
                     "--dynamic-tables", "--max-growth", "2", "--admit-after", "2", "--embedding-dim", "4",
                     "--epochs", "1", "--batch-size", "512", "--no-progress", "--no-baseline",
                     "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    run = metrics["runs"]["dlrm"]
    assert run["data"]["raw_ids"] is True and run["embedding_bytes"] > 0
    assert cli.main(["eval", "--checkpoint", str(out / "dlrm")]) == 0
    assert "AUC" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--model", "dlrm", "--data", "synthetic", "--ttl", "3", "--epochs", "1"])
    assert e.value.code == 2 and "--dynamic-tables" in capsys.readouterr().err
