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
CTR_MODELS = ("dlrm", "logistic")
TWO_TOWER_MODELS = ("gnolr", "bce-two-tower")


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
    from .distributed.launch import init_from_env

    rank, world = init_from_env()
    model = build_model(split.data.num_items, cfg)
    wrapped = None
    if world > 1:  # same seed on every rank: identical initial weights; DDP averages the gradients
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    budget = args.time_budget * 60 if args.time_budget else None
    res = fit(model, split, cfg, epochs=args.epochs, time_budget_s=budget, patience=args.patience, seed=args.seed,
              progress=not args.no_progress, log=log if rank == 0 else (lambda s: None), optimizer=opt,
              rank=rank, world=world, wrapped=wrapped)
    metrics = {"model": model_name, "best_epoch": res.best_epoch, "valid": res.valid, "test": res.test,
               "train_seconds": res.seconds, "train_sequences_per_second": res.sequences_per_second,
               "history": res.history, "data": {"path": args.data, "format": args.format, "seed": args.seed,
                                                "max_len": args.max_len}}
    metrics["processes"] = world
    if args.out and rank == 0:
        save_checkpoint(os.path.join(args.out, model_name), model, opt, cfg, split.data, metrics)
    return metrics


def cmd_train(args, models: List[str]) -> int:
    from .data.sequences import leave_one_out
    from .distributed.launch import init_from_env
    from .models.train_sequential import popularity_metrics

    rank, world = init_from_env()
    say = print if rank == 0 else (lambda *a, **k: None)
    t0 = time.perf_counter()
    data = _load_data(args.data, args.format, args.seed)
    split = leave_one_out(data, args.max_len)
    say(f"data: {data.num_users} users, {data.num_items} items, {data.items.numel()} interactions "
        f"({time.perf_counter() - t0:.1f}s)" + (f"; {world} processes, batch {args.batch_size} each"
                                                 if world > 1 else ""), flush=True)
    results = {"popularity": popularity_metrics(split)}
    all_metrics = {}
    for name in models:
        m = _train_one(name, split, args, lambda s: print(s, flush=True))
        results[name] = m["test"]
        all_metrics[name] = m
        say(f"{name}: best epoch {m['best_epoch']}, {m['train_seconds']:.0f}s, "
            f"{m['train_sequences_per_second']:.0f} sequences/s", flush=True)
    say("\ntest metrics (leave-one-out, full ranking, history excluded):")
    say(_table(results))
    if rank == 0:
        _write_metrics(args.out, {"test": results, "runs": all_metrics})
    return 0


def _write_metrics(out: Optional[str], payload: dict) -> None:
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(payload, f, indent=2)
        print(f"\nwrote {os.path.join(out, 'metrics.json')}")


def _ctr_data(args):
    from .data.criteo import ctr_data

    if args.data != "synthetic" and args.format not in (None, "criteo"):
        raise SystemExit(f"recops: --model {args.model} reads --format criteo, got {args.format!r}")
    sizes = args.table_size if args.table_size else (2000 if args.data == "synthetic" else 1_000_000)
    return ctr_data(args.data, sizes, seed=args.seed, max_rows=args.max_rows)


def cmd_train_ctr(args) -> int:
    """DLRM (or the logistic baseline) on Criteo-format data; with DLRM the logistic baseline runs too."""
    from .models.dlrm import DLRMConfig
    from .models.train_ctr import CTR_MODELS as BUILD, fit_ctr, save_ctr_checkpoint

    from .distributed.launch import init_from_env

    rank, world = init_from_env()
    say = print if rank == 0 else (lambda *a, **k: None)
    t0 = time.perf_counter()
    data = _ctr_data(args)
    say(f"data: {data.num_train} train / {data.num_test} test samples, tables {data.table_sizes[:3]}... "
        f"({time.perf_counter() - t0:.1f}s)" + (f"; oracle AUC {data.oracle_auc:.4f}" if data.oracle_auc else "")
        + (f"; {world} processes, batch {args.batch_size} each" if world > 1 else ""), flush=True)
    d = args.embedding_dim
    results, runs = {}, {}
    for name in ([args.model, "logistic"] if args.model == "dlrm" and not args.no_baseline else [args.model]):
        torch.manual_seed(args.seed)
        from .nn.embedding import FusedOptimizer
        cfg = DLRMConfig(data.table_sizes, embedding_dim=d, bottom_mlp=(256, 128, d), top_mlp=(256, 128),
                         embedding_optimizer=FusedOptimizer("rowwise_adagrad", lr=args.lr))
        model = BUILD[name](cfg)
        wrapped = None
        if world > 1:
            from .distributed import wrap
            wrapped = wrap(model)  # tables row-sharded over the ranks, MLPs in DistributedDataParallel
        budget = args.time_budget * 60 if args.time_budget else None
        res = fit_ctr(model, data, epochs=args.epochs, batch_size=args.batch_size, dense_lr=args.dense_lr,
                      time_budget_s=budget, progress=not args.no_progress, log=lambda m: say(f"{name} {m}"),
                      rank=rank, world=world, wrapped=wrapped)
        metrics = {"model": name, "test": res.test, "history": res.history, "train_seconds": res.seconds,
                   "train_samples_per_second": res.samples_per_second,
                   "data": {"path": args.data, "format": "criteo", "seed": args.seed,
                            "table_sizes": data.table_sizes, "max_rows": args.max_rows}}
        metrics["processes"] = world
        results[name] = {k: res.test[k] for k in ("AUC", "logloss")}
        runs[name] = metrics
        say(f"{name}: {res.seconds:.0f}s, {res.samples_per_second:.0f} samples/s", flush=True)
        if args.out:
            _save_ctr(os.path.join(args.out, name), model, name, metrics, cfg, rank, world)
    if data.oracle_auc:
        results["oracle"] = {"AUC": data.oracle_auc, "logloss": float("nan")}
    say("\ntest metrics:")
    say(_table(results))
    if rank == 0:
        _write_metrics(args.out, {"test": results, "runs": runs})
    return 0


def _save_ctr(path, model, name, metrics, cfg, rank, world) -> None:
    """One plain checkpoint (what `recops eval` reads); with several processes the row shards are written by
    every rank with recops.distributed.save and rank 0 gathers them into an unsharded model first."""
    from .models.train_ctr import CTR_MODELS as BUILD, save_ctr_checkpoint

    if world == 1:
        save_ctr_checkpoint(path, model, name, metrics)
        return
    from . import distributed as rd

    shards = os.path.join(path, "shards")
    rd.save(model, shards)
    if rank == 0:
        plain = BUILD[name](cfg)
        rd.load(plain, shards)
        save_ctr_checkpoint(path, plain, name, metrics)


def cmd_train_two_tower(args) -> int:
    """GNOLR two-tower (and, unless --no-baseline, the per-feedback BCE two-tower) on multi-level feedback."""
    from .data.multibehavior import load_feedback, split_feedback
    from .models.train_two_tower import build_two_tower, fit_two_tower, save_two_tower_checkpoint

    if args.data != "synthetic" and args.format not in (None, "multibehavior"):
        raise SystemExit(f"recops: --model {args.model} reads --format multibehavior, got {args.format!r}")
    data = load_feedback(args.data, args.format, args.seed)
    train, test = split_feedback(data, 0.2, args.seed)
    print(f"data: {data.num_users} users, {data.num_items} items, {len(data)} pairs, levels {data.behaviours} "
          f"with rates {[round(r, 3) for r in data.level_rates()]}", flush=True)
    kinds = {"gnolr": "gnolr", "bce-two-tower": "bce"}
    names = [args.model] + (["bce-two-tower"] if args.model == "gnolr" and not args.no_baseline else [])
    results, runs = {}, {}
    for name in names:
        torch.manual_seed(args.seed)
        model = build_two_tower(kinds[name], train, embedding_dim=args.embedding_dim)
        budget = args.time_budget * 60 if args.time_budget else None
        res = fit_two_tower(model, train, test, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                            time_budget_s=budget, progress=not args.no_progress,
                            log=lambda m: print(f"{name} {m}", flush=True))
        metrics = {"model": name, "test": res.test, "history": res.history, "train_seconds": res.seconds,
                   "train_pairs_per_second": res.pairs_per_second,
                   "data": {"path": args.data, "format": "multibehavior", "seed": args.seed}}
        results[name], runs[name] = res.test, metrics
        if args.out:
            save_two_tower_checkpoint(os.path.join(args.out, name), model, kinds[name], metrics)
    print("\ntest metrics (per level; retrieval excludes training items):")
    print(_table(results))
    _write_metrics(args.out, {"test": results, "runs": runs})
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
    with open(os.path.join(path, "config.json")) as f:
        family = json.load(f).get("family", "sequential")
    with open(os.path.join(path, "metrics.json")) as f:
        spec = json.load(f)["data"]
    if family == "ctr":
        from .data.criteo import ctr_data
        from .models.train_ctr import evaluate_ctr, load_ctr_checkpoint

        model, info = load_ctr_checkpoint(path)
        data = ctr_data(spec["path"], spec["table_sizes"], seed=spec["seed"], max_rows=spec["max_rows"])
        print(_table({info["model"]: evaluate_ctr(model, data.test_batches(8192))}))
        return 0
    if family == "two_tower":
        from .data.multibehavior import load_feedback, split_feedback
        from .models.train_two_tower import evaluate_two_tower, load_two_tower_checkpoint

        model, info = load_two_tower_checkpoint(path)
        train, test = split_feedback(load_feedback(spec["path"], spec["format"], spec["seed"]), 0.2, spec["seed"])
        print(_table({info["model"]: evaluate_two_tower(model, train, test)}))
        return 0
    model, cfg, _, _, _ = load_checkpoint(path)
    data = _load_data(spec["path"], spec["format"], spec["seed"])
    split = leave_one_out(data, spec["max_len"])
    if data.num_items != model.num_items:
        raise SystemExit(f"recops eval: the data has {data.num_items} items, the checkpoint {model.num_items}")
    res = evaluate(model, split.test_input, split.test_target)
    print(_table({cfg.model: res}))
    return 0


def _add_train_args(p):
    p.add_argument("--data", default="synthetic", help="'synthetic' (default) or a local file")
    p.add_argument("--format", default=None,
                   help="sequential models: ml-1m | ml-100k | ml-csv | recbole | sasrec; dlrm: criteo; "
                        "gnolr: multibehavior")
    p.add_argument("--epochs", type=int, default=None, help="default: 150 sequential, 3 dlrm, 8 gnolr")
    p.add_argument("--time-budget", type=float, default=None, help="minutes per model")
    p.add_argument("--patience", type=int, default=15, help="epochs without a better validation NDCG@10")
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=None, help="default: 128 sequential, 2048 dlrm, 1024 gnolr")
    p.add_argument("--negatives", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="folder for checkpoints and metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--table-size", type=int, default=None, help="dlrm: rows per hashed table")
    p.add_argument("--embedding-dim", type=int, default=64, help="dlrm / gnolr: embedding width")
    p.add_argument("--max-rows", type=int, default=None, help="dlrm: read at most this many lines of the file")
    p.add_argument("--lr", type=float, default=0.05, help="dlrm: fused rowwise-Adagrad learning rate (embeddings)")
    p.add_argument("--dense-lr", type=float, default=1e-3, help="dlrm: Adam learning rate of the MLPs")
    p.add_argument("--nproc", type=int, default=1,
                   help="dlrm / logistic / hstu / sasrec: train in N processes on this host (re-runs itself under "
                        "torchrun; same as `torchrun --nproc-per-node N -m recops train ...`)")
    p.add_argument("--no-baseline", action="store_true",
                   help="dlrm / gnolr: skip the logistic / per-feedback BCE baseline")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="recops", description="recops: fast recommendation kernels and models")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train a model: sequential (hstu, sasrec: leave-one-out, full ranking), "
                                      "CTR (dlrm) or multi-feedback two-tower retrieval (gnolr)")
    p.add_argument("--model", default="hstu", choices=SEQ_MODELS + CTR_MODELS + TWO_TOWER_MODELS)
    _add_train_args(p)
    p = sub.add_parser("eval", help="evaluate a checkpoint written by train --out (the run or model folder)")
    p.add_argument("--checkpoint", required=True)
    p = sub.add_parser("demo", help="train HSTU and SASRec on the synthetic data and compare them")
    _add_train_args(p)
    p.set_defaults(time_budget=1.0, epochs=30)
    p = sub.add_parser("bench", help="the benchmark runner (python -m recops.bench)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if getattr(args, "nproc", 1) > 1:
        from .distributed.launch import launched_by_torchrun, relaunch

        if args.cmd != "train" or args.model in TWO_TOWER_MODELS:
            raise SystemExit("recops: --nproc is for `train --model dlrm|logistic|hstu|hstu-large|sasrec`")
        if not launched_by_torchrun():
            raw = list(sys.argv[1:] if argv is None else argv)
            i = next(j for j, a in enumerate(raw) if a == "--nproc" or a.startswith("--nproc="))
            rest = raw[:i] + raw[i + (1 if "=" in raw[i] else 2):]
            return relaunch(args.nproc, rest)
    if args.cmd in ("train", "demo"):
        model = getattr(args, "model", "hstu")
        family = "ctr" if model in CTR_MODELS else "tt" if model in TWO_TOWER_MODELS else "seq"
        defaults = {"seq": (150, 128), "ctr": (3, 2048), "tt": (8, 1024)}[family]
        args.epochs = defaults[0] if args.epochs is None else args.epochs
        args.batch_size = defaults[1] if args.batch_size is None else args.batch_size
    if args.cmd == "train":
        if args.model in CTR_MODELS:
            return cmd_train_ctr(args)
        if args.model in TWO_TOWER_MODELS:
            return cmd_train_two_tower(args)
        return cmd_train(args, [args.model])
    if args.cmd == "demo":
        return cmd_train(args, ["hstu", "sasrec"])
    if args.cmd == "eval":
        return cmd_eval(args)
    from .bench.__main__ import main as bench_main
    return bench_main(args.rest)


if __name__ == "__main__":
    sys.exit(main())
