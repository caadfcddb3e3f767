# SPDX-License-Identifier: Apache-2.0
"""`python -m recops.bench.quality [--quick] [--out DIR]`: model quality on the synthetic data, same run.

GNOLR two-tower vs the per-feedback BCE two-tower vs popularity (Recall@50 / HR@50 / AUC / GAUC per level), and
DLRM vs the logistic baseline vs the oracle AUC. Writes <date>-<machine>-quality.md."""

import argparse
import datetime
import os
import platform
import sys
import time

import torch

import recops

from ..data.criteo import ctr_data
from ..data.multibehavior import split_feedback, synthetic_feedback
from ..models.dlrm import DLRM, DLRMConfig, LogisticCTR
from ..models.train_ctr import fit_ctr
from ..models.train_two_tower import build_two_tower, fit_two_tower, popularity_two_tower_metrics
from ..nn.embedding import FusedOptimizer
from .__main__ import machine_description, machine_tag


def _table(results, keys):
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{results[n].get(k, float('nan')):.4f}" for n in names) + " |")
    return lines


def two_tower_section(quick, seed=0):
    data = synthetic_feedback(num_users=1000 if quick else 3000, num_items=800 if quick else 2000, seed=seed)
    train, test = split_feedback(data, 0.2, seed)
    results, info = {"popularity": popularity_two_tower_metrics(train, test, (50,))}, {}
    for kind in ("gnolr", "bce"):
        torch.manual_seed(seed)
        model = build_two_tower(kind, train)
        res = fit_two_tower(model, train, test, epochs=3 if quick else 8, seed=seed, progress=False,
                            log=lambda s: None)
        results[kind], info[kind] = res.test, f"{res.seconds:.0f}s, {res.pairs_per_second:.0f} pairs/s"
    keys = [f"L{t}/{m}" for t in range(1, data.num_levels + 1) for m in ("Recall@50", "HR@50", "AUC", "GAUC")]
    head = [f"## GNOLR vs per-feedback BCE two-tower (synthetic multi-feedback: {data.num_users} users, "
            f"{data.num_items} items, {len(data)} pairs, level rates {[round(r, 3) for r in data.level_rates()]})",
            "", f"- training: {info}; retrieval excludes training items; AUC/GAUC over held-out pairs + 50 random "
            "unseen items per user", ""]
    return head + _table(results, keys)


def dlrm_section(quick, seed=0):
    data = ctr_data("synthetic", 300, seed=seed, num_train=100_000 if quick else 400_000, num_test=50_000)
    results, info = {}, {}
    for cls in (DLRM, LogisticCTR):
        torch.manual_seed(seed)
        cfg = DLRMConfig(data.table_sizes, embedding_dim=16, bottom_mlp=(256, 128, 16), top_mlp=(256, 128),
                         embedding_optimizer=FusedOptimizer("rowwise_adagrad", lr=0.05))
        res = fit_ctr(cls(cfg), data, epochs=2 if quick else 3, batch_size=2048, progress=False, log=lambda s: None)
        results[cls.__name__], info[cls.__name__] = res.test, f"{res.samples_per_second:.0f} samples/s"
    results["oracle"] = {"AUC": data.oracle_auc}
    head = [f"## DLRM vs logistic regression (synthetic Criteo format: {data.num_train} train / {data.num_test} test, "
            f"26 tables x 300 rows, D=16)", "", f"- training throughput: {info}", ""]
    return head + _table(results, ["AUC", "logloss"])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m recops.bench.quality", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=os.path.join("bench", "results"))
    args = p.parse_args(argv)
    dev = torch.device("cpu")
    t0 = time.perf_counter()
    lines = [f"# recops model quality, {datetime.date.today().isoformat()}", "",
             f"- machine: {machine_description(dev)}, torch threads {torch.get_num_threads()}",
             f"- versions: recops {recops.__version__}, torch {torch.__version__}, python {platform.python_version()}",
             f"- mode: {'quick' if args.quick else 'full'}", ""]
    for section in (two_tower_section, dlrm_section):
        lines += section(args.quick) + [""]
        print("\n".join(lines), flush=True)
    lines.append(f"total {time.perf_counter() - t0:.0f}s")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{datetime.date.today().isoformat()}-{machine_tag(dev)}-quality.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
