# SPDX-License-Identifier: Apache-2.0
"""`recops train --nproc 2` (torchrun under the hood) for DLRM and HSTU on small files written here."""

import json

from recops import cli
from recops.data.criteo import synthetic_criteo, write_criteo
from recops.data.sequences import synthetic_sequences


def test_dlrm_and_hstu_train_in_two_processes(tmp_path, capsys):
    s = synthetic_criteo(1500, 10, table_sizes=30, seed=3)
    criteo = tmp_path / "day_0.tsv"
    write_criteo(str(criteo), s.raw_dense_train, s.train.sparse, s.train.labels)
    out = tmp_path / "dlrm"
    assert cli.main(["train", "--model", "dlrm", "--nproc", "2", "--data", str(criteo), "--format", "criteo",
                     "--table-size", "30", "--embedding-dim", "4", "--epochs", "1", "--batch-size", "128",
                     "--no-progress", "--no-baseline", "--out", str(out)]) == 0
    run = json.loads((out / "metrics.json").read_text())["runs"]["dlrm"]
    assert run["processes"] == 2 and 0 <= run["test"]["AUC"] <= 1
    # the row shards were gathered into one plain checkpoint: evaluating it reproduces the run's AUC
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(out / "dlrm")]) == 0
    assert f"{run['test']['AUC']:.4f}" in capsys.readouterr().out

    seqs = synthetic_sequences(num_users=120, num_items=80, mean_len=10, seed=1)
    udata = tmp_path / "u.data"
    with open(udata, "w") as f:
        for u in range(seqs.offsets.numel() - 1):
            for j in range(int(seqs.offsets[u]), int(seqs.offsets[u + 1])):
                f.write(f"{u}\t{int(seqs.items[j])}\t5\t{int(seqs.timestamps[j])}\n")
    out = tmp_path / "hstu"
    assert cli.main(["train", "--model", "hstu", "--nproc", "2", "--data", str(udata), "--format", "ml-100k",
                     "--epochs", "2", "--dim", "8", "--max-len", "20", "--batch-size", "16", "--no-progress",
                     "--out", str(out)]) == 0
    run = json.loads((out / "metrics.json").read_text())["runs"]["hstu"]
    assert run["processes"] == 2 and "NDCG@10" in run["test"]
