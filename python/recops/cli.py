# SPDX-License-Identifier: Apache-2.0
"""The `recops` command line: train / eval / demo / bench."""

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

import torch

SEQ_MODELS = ("hstu", "hstu-large", "sasrec")


def _load_data(data: str, fmt: Optional[str], seed: int):
    from .data.sequences import load_sequences, synthetic_sequences

    if data == "synthetic":
        return synthetic_sequences(seed=seed)
    if fmt is None:
        raise SystemExit("recops: --format is required with a data file (ml-1m, ml-100k, ml-csv, recbole, sasrec)")
    return load_sequences(data, fmt)


def _table(results: Dict[str, Dict[str, float]]) -> str:
    names = list(results)
    keys = list(next(iter(results.values())).keys()) if results else []
    width = max([len(k) for k in keys] + [6])
    lines = [" " * width + "".join(f"{n:>14}" for n in names)]
    for k in keys:
        lines.append(f"{k:<{width}}" + "".join(f"{results[n][k]:>14.4f}" for n in names))
    return "\n".join(lines)


def _train_one(model_name: str, split, args, log) -> dict:
    from .models.sequential import SeqConfig, build_model
    from .models.train_sequential import fit, save_checkpoint

    torch.manual_seed(args.seed)
    cfg = SeqConfig.preset(model_name, max_len=args.max_len, batch_size=args.batch_size, dim=args.dim,
                           num_negatives=args.negatives)
    model = build_model(split.data.num_items, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    budget = args.time_budget * 60 if args.time_budget else None
    res = fit(model, split, cfg, epochs=args.epochs, time_budget_s=budget, patience=args.patience, seed=args.seed,
              progress=not args.no_progress, log=log, optimizer=opt)
    metrics = {"model": model_name, "best_epoch": res.best_epoch, "valid": res.valid, "test": res.test,
               "train_seconds": res.seconds, "train_sequences_per_second": res.sequences_per_second,
               "history": res.history, "data": {"path": args.data, "format": args.format, "seed": args.seed,
                                                "max_len": args.max_len}}
    if args.out:
        save_checkpoint(os.path.join(args.out, model_name), model, opt, cfg, split.data, metrics)
    return metrics


def cmd_train(args, models: List[str]) -> int:
    from .data.sequences import leave_one_out
    from .models.train_sequential import popularity_metrics

    t0 = time.perf_counter()
    data = _load_data(args.data, args.format, args.seed)
    split = leave_one_out(data, args.max_len)
    print(f"data: {data.num_users} users, {data.num_items} items, {data.items.numel()} interactions "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)
    results = {"popularity": popularity_metrics(split)}
    all_metrics = {}
    for name in models:
        m = _train_one(name, split, args, lambda s: print(s, flush=True))
        results[name] = m["test"]
        all_metrics[name] = m
        print(f"{name}: best epoch {m['best_epoch']}, {m['train_seconds']:.0f}s, "
              f"{m['train_sequences_per_second']:.0f} sequences/s", flush=True)
    print("\ntest metrics (leave-one-out, full ranking, history excluded):")
    print(_table(results))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump({"test": results, "runs": all_metrics}, f, indent=2)
        print(f"\nwrote {os.path.join(args.out, 'metrics.json')}")
    return 0


def cmd_eval(args) -> int:
    from .data.sequences import leave_one_out
    from .models.train_sequential import evaluate, load_checkpoint

    path = args.checkpoint
    if not os.path.isfile(os.path.join(path, "config.json")):  # a run folder: one checkpoint per model
        subs = sorted(d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, "config.json")))
        if len(subs) != 1:
            raise SystemExit(f"recops eval: {path} holds checkpoints {subs}; pass one of them")
        path = os.path.join(path, subs[0])
    model, cfg, _, _, _ = load_checkpoint(path)
    with open(os.path.join(path, "metrics.json")) as f:
        spec = json.load(f)["data"]
    data = _load_data(spec["path"], spec["format"], spec["seed"])
    split = leave_one_out(data, spec["max_len"])
    if data.num_items != model.num_items:
        raise SystemExit(f"recops eval: the data has {data.num_items} items, the checkpoint {model.num_items}")
    res = evaluate(model, split.test_input, split.test_target)
    print(_table({cfg.model: res}))
    return 0


def _add_train_args(p):
    p.add_argument("--data", default="synthetic", help="'synthetic' (default) or a local file")
    p.add_argument("--format", default=None, help="ml-1m | ml-100k | ml-csv | recbole | sasrec")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--time-budget", type=float, default=None, help="minutes per model")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--negatives", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for checkpoints and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="recops", description="recops: fast recommendation kernels and models")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train a sequential model (leave-one-out, full-ranking evaluation)")
    p.add_argument("--model", default="hstu", choices=SEQ_MODELS)
    _add_train_args(p)
    p = sub.add_parser("eval", help="evaluate a checkpoint written by train --out (the run or model folder)")
    p.add_argument("--checkpoint", required=True)
    p = sub.add_parser("demo", help="train HSTU and SASRec on the synthetic data and compare them")
    _add_train_args(p)
    p.set_defaults(time_budget=1.0, epochs=30)
    p = sub.add_parser("bench", help="the benchmark runner (python -m recops.bench)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "train":
        return cmd_train(args, [args.model])
    if args.cmd == "demo":
        return cmd_train(args, ["hstu", "sasrec"])
    if args.cmd == "eval":
        return cmd_eval(args)
    from .bench.__main__ import main as bench_main
    return bench_main(args.rest)


if __name__ == "__main__":
    sys.exit(main())
