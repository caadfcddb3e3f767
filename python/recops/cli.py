# SPDX-License-Identifier: Apache-2.0
"""The `recops` command line: train / eval / demo / bench.

`recops train --model NAME` is built from MODELS, a registry of ModelSpec (name -> family): each Family brings
its argument group, its defaults, its train function and the eval function `recops eval` runs on its checkpoints
(the checkpoint records its family). `recops train --model NAME --help` lists the flags of NAME's family only.
Flags are never abbreviated.

Errors: a user error (a bad flag value, a missing or malformed data file, an unusable --out, a broken checkpoint)
is one line `recops: error: <what>` on stderr (`<file>:<line>: <what>` for a bad data line) and exit status 2, found
before any training where it can be; every such error goes through UserError and main. Anything else is an
internal error and keeps its traceback."""

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .data import DataError


from ._cli_common import (_COUNT, _NON_NEGATIVE, _OPEN_RATE, _PATH, _POSITIVE, _RATE, _SEED, UserError, _Help, _Parser,
                          _check_train, _ranks, _table, _user_input, _write_metrics)


# ---- sequential: hstu, hstu-large, sasrec, bert4rec -------------------------------------------------------------------

def _sequential_data(data: str, fmt: Optional[str], seed: int, max_len: int):
    """(SequenceData, its leave-one-out split) of 'synthetic' or a file; a UserError when unreadable or when no
    user can be evaluated."""
    from .data.sequences import check_split, leave_one_out, load_sequences, synthetic_sequences

    with _user_input():
        seqs = synthetic_sequences(seed=seed) if data == "synthetic" else load_sequences(data, fmt)
        split = leave_one_out(seqs, max_len)
        check_split(split, data)
    return seqs, split


def _train_one(model_name: str, split, args, log) -> dict:
    from .models.sequential import SeqConfig, build_model
    from .train.sequential import fit, save_checkpoint

    torch.manual_seed(args.seed)
    cfg = SeqConfig.preset(model_name, max_len=args.max_len, batch_size=args.batch_size, dim=args.dim,
                           num_negatives=args.negatives, loss=args.loss, logq=args.logq, dropout=args.dropout,
                           negatives="per_position" if args.negatives_per_position else "shared",
                           temperature=args.temperature, lr=args.lr, mask_prob=args.mask_prob,
                           decoupled_embeddings=args.decoupled_embeddings, precision=args.precision)
    rank, world, _ = _ranks()
    model = build_model(split.data.num_items, cfg)
    wrapped = None
    if world > 1:  # same seed on every rank: identical initial weights; DDP averages the gradients
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    budget = args.time_budget * 60 if args.time_budget else None
    res = fit(model, split, cfg, epochs=args.epochs, time_budget_s=budget, patience=args.patience, seed=args.seed,
              progress=not args.no_progress, log=log if rank == 0 else (lambda s: None), optimizer=opt,
              rank=rank, world=world, wrapped=wrapped)
    best = [e for e in res.history if e.get("epoch") == res.best_epoch]
    metrics = {"model": model_name, "best_epoch": res.best_epoch, "valid": res.valid, "test": res.test,
               "seconds_to_best_epoch": best[0].get("seconds") if best else None,
               "train_seconds": res.seconds, "train_sequences_per_second": res.sequences_per_second,
               "history": res.history, "data": {"path": args.data, "format": args.format, "seed": args.seed,
                                                "max_len": args.max_len}}
    metrics["processes"] = world
    if args.out and rank == 0:
        with _user_input(OSError):
            save_checkpoint(os.path.join(args.out, model_name), model, opt, cfg, split.data, metrics)
    return metrics


def cmd_train(args, models: List[str]) -> int:
    """Train the sequential `models` on one leave-one-out split, next to the popularity baseline."""
    from .train.sequential import popularity_metrics

    rank, world, say = _ranks()
    t0 = time.perf_counter()
    data, split = _sequential_data(args.data, args.format, args.seed, args.max_len)
    say(f"data: {data.num_users} users, {data.num_items} items, {data.items.numel()} interactions "
        f"({time.perf_counter() - t0:.1f}s)" + (f"; {world} processes, batch {args.batch_size} each"
                                                 if world > 1 else ""), flush=True)
    results = {"popularity": popularity_metrics(split)}
    all_metrics = {}
    if len(models) > 1 and args.time_budget:
        say(f"{', '.join(models)}: the same time budget each ({args.time_budget:g} min of training, at most "
            f"{args.epochs} epochs), so the comparison is at equal wall-clock time", flush=True)
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


def _eval_sequential(ck, spec: dict) -> Dict[str, float]:
    from .train.sequential import evaluate

    data, split = _sequential_data(spec["path"], spec["format"], spec["seed"], spec["max_len"])
    _same(spec["path"], "items", data.num_items, ck.model.num_items)
    return evaluate(ck.model, split.test_input, split.test_target)


def _same(data: str, what: str, in_data, in_checkpoint) -> None:
    """UserError unless the data `recops eval` re-reads still has the checkpoint's sizes."""
    if in_data != in_checkpoint:
        raise UserError(f"{data}: the data has {what} {in_data}, the checkpoint {in_checkpoint} (was the file "
                        f"changed since training?)")


def _sequential_arguments(g) -> List[argparse.Action]:
    return [g.add_argument("--max-len", type=_COUNT, default=200, help="most recent items kept per user"),
            g.add_argument("--negatives", type=_COUNT, default=128,
                           help="sampled-softmax negatives per supervised position (or per batch with "
                                "--no-negatives-per-position)"),
            g.add_argument("--negatives-per-position", action=argparse.BooleanOptionalAction, default=True,
                           help="draw the negatives for every position (the reference recipe; default) or one "
                                "set shared by the batch"),
            g.add_argument("--loss", choices=["sampled_softmax", "full_softmax"], default="sampled_softmax",
                           help="sampled softmax (fused op) or softmax over all items"),
            g.add_argument("--logq", action="store_true",
                           help="draw negatives by training popularity and correct the logits by log q"),
            g.add_argument("--dropout", type=_RATE, default=0.2, help="embedding and layer dropout"),
            g.add_argument("--temperature", type=_POSITIVE, default=0.05, help="softmax temperature"),
            g.add_argument("--lr", type=_POSITIVE, default=1e-3, help="AdamW learning rate"),
            g.add_argument("--patience", type=_NON_NEGATIVE, default=30,
                           help="epochs without a better validation NDCG@10 before stopping"),
            g.add_argument("--decoupled-embeddings", action="store_true",
                           help="attention (queries, keys) reads its own item table, values and scoring the "
                                "other (DARE)"),
            g.add_argument("--mask-prob", type=_OPEN_RATE, default=0.2,
                           help="bert4rec: probability that a training position is replaced by [MASK]"),
            g.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                           help="bf16: training forwards under bfloat16 autocast (linear layers and attention on "
                                "the CPU's bf16 units; loss, normalisation and weights float32)")]


# ---- CTR ranking: dlrm, logistic --------------------------------------------------------------------------------

def _ctr_data(data: str, sizes, seed: int, max_rows: Optional[int], raw_ids: bool = False, vocab_size=None):
    from .data.criteo import ctr_data

    with _user_input():
        return ctr_data(data, sizes, seed=seed, max_rows=max_rows, raw_ids=raw_ids, vocab_size=vocab_size)


def cmd_train_ctr(args) -> int:
    """DLRM (or the logistic baseline) on Criteo-format data; with DLRM the logistic baseline runs too."""
    from .models.dlrm import DLRMConfig
    from .nn.embedding import FusedOptimizer
    from .train.ctr import CTR_MODELS, fit_ctr

    rank, world, say = _ranks()
    t0 = time.perf_counter()
    sizes = args.table_size if args.table_size is not None else (
        (args.vocab_size or 2000) if args.data == "synthetic" else 1_000_000)
    if args.vocab_size is not None and args.data != "synthetic":
        raise UserError("--vocab-size: only synthetic data has a vocabulary to choose")
    dynamic = None
    if args.dynamic_tables:
        dynamic = {"admit_after": args.admit_after, "ttl": args.ttl, "max_growth": args.max_growth}
    elif (args.admit_after, args.ttl, args.max_growth) != (1, None, 1):
        raise UserError("--admit-after, --ttl and --max-growth need --dynamic-tables")
    data = _ctr_data(args.data, sizes, args.seed, args.max_rows, raw_ids=args.dynamic_tables,
                     vocab_size=args.vocab_size)
    say(f"data: {data.num_train} train / {data.num_test} test samples, tables {data.table_sizes[:3]}... "
        f"({time.perf_counter() - t0:.1f}s)" + (f"; oracle AUC {data.oracle_auc:.4f}" if data.oracle_auc else "")
        + (f"; {world} processes, batch {args.batch_size} each" if world > 1 else ""), flush=True)
    d = args.dim
    results, runs = {}, {}
    for name in CTR.runs(args):
        torch.manual_seed(args.seed)
        with _user_input():
            cfg = DLRMConfig(data.table_sizes, embedding_dim=d, bottom_mlp=(256, 128, d), top_mlp=(256, 128),
                             embedding_optimizer=FusedOptimizer("rowwise_adagrad", lr=args.lr), dynamic=dynamic)
        model = CTR_MODELS[name](cfg)
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
                   "embedding_bytes": model.embeddings.memory_bytes(),  # this process's share
                   "data": {"path": args.data, "format": "criteo", "seed": args.seed,
                            "table_sizes": data.table_sizes, "max_rows": args.max_rows,
                            "raw_ids": bool(args.dynamic_tables), "vocab_size": args.vocab_size}}
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
    from .train.ctr import CTR_MODELS, save_ctr_checkpoint

    if world == 1:
        with _user_input(OSError):
            save_ctr_checkpoint(path, model, name, metrics)
        return
    from . import distributed as rd

    shards = os.path.join(path, "shards")
    with _user_input(OSError):
        rd.save(model, shards)
    if rank == 0:
        plain = CTR_MODELS[name](cfg)
        rd.load(plain, shards)
        with _user_input(OSError):
            save_ctr_checkpoint(path, plain, name, metrics)


def _eval_ctr(ck, spec: dict) -> Dict[str, float]:
    from .train.ctr import evaluate_ctr

    data = _ctr_data(spec["path"], spec["table_sizes"], spec["seed"], spec["max_rows"], spec.get("raw_ids", False),
                     spec.get("vocab_size"))
    _same(spec["path"], "table sizes", data.table_sizes, list(ck.config.table_sizes))
    return evaluate_ctr(ck.model, data.test_batches(8192))


def _ctr_arguments(g) -> List[argparse.Action]:
    return [g.add_argument("--table-size", type=_COUNT, default=None,
                           help="rows per hashed table (None: 2000 with synthetic data, else 1000000)"),
            g.add_argument("--max-rows", type=_COUNT, default=None, help="read at most this many lines of the file"),
            g.add_argument("--lr", type=_POSITIVE, default=0.05,
                           help="fused rowwise-Adagrad learning rate (embeddings)"),
            g.add_argument("--dense-lr", type=_POSITIVE, default=1e-3, help="Adam learning rate of the MLPs"),
            g.add_argument("--no-baseline", action="store_true", help="dlrm: skip the logistic baseline"),
            g.add_argument("--dynamic-tables", action="store_true",
                           help="collisionless tables over the raw 64-bit ids (no modulo); --table-size is then "
                                "their capacity"),
            g.add_argument("--admit-after", type=_COUNT, default=1,
                           help="--dynamic-tables: an id gets a row at its N-th sighting"),
            g.add_argument("--ttl", type=_POSITIVE, default=None,
                           help="--dynamic-tables: ids unseen for more than this many steps lose their row"),
            g.add_argument("--max-growth", type=_COUNT, default=1,
                           help="--dynamic-tables: tables double up to this factor of their capacity when full"),
            g.add_argument("--vocab-size", type=_COUNT, default=None,
                           help="synthetic data: ids per table, as raw 64-bit ids (hashed modulo --table-size "
                                "unless --dynamic-tables)")]


# ---- two-tower retrieval: gnolr, bce-two-tower ------------------------------------------------------------------

_TWO_TOWER_KINDS = {"gnolr": "gnolr", "bce-two-tower": "bce", "lightgcn": "lightgcn", "ngcf": "ngcf", "cml": "cml"}


_TWO_TOWER_KS = (20, 50)


def _feedback_data(data: str, fmt: Optional[str], seed: int):
    """(FeedbackData, train, test, exclude_level) of 'synthetic', a multibehavior file (random 80/20 split of the
    pairs; every training item excluded from the rankings) or an MBCGCN folder (its own buy test split; only the
    user's bought training items excluded); a UserError when unreadable or nothing is held out."""
    from .data.multibehavior import check_split, load_feedback, read_mbcgcn, split_feedback

    with _user_input():
        if fmt == "mbcgcn":
            train, test = read_mbcgcn(data)
            check_split(train, test, data)
            return train, train, test, train.num_levels
        pairs = load_feedback(data, fmt, seed)
        train, test = split_feedback(pairs, 0.2, seed)
        check_split(train, test, data)
    return pairs, train, test, 1


def cmd_train_two_tower(args) -> int:
    """GNOLR two-tower (and, unless --no-baseline, the per-feedback BCE two-tower) on multi-level feedback."""
    from .train.two_tower import build_two_tower, fit_cml, fit_graph_cf, fit_two_tower, save_two_tower_checkpoint

    data, train, test, exclude_level = _feedback_data(args.data, args.format, args.seed)
    print(f"data: {data.num_users} users, {data.num_items} items, {len(data)} pairs, levels {data.behaviours} "
          f"with rates {[round(r, 3) for r in data.level_rates()]}", flush=True)
    results, runs = {}, {}
    for name in TWO_TOWER.runs(args):
        torch.manual_seed(args.seed)
        budget = args.time_budget * 60 if args.time_budget else None
        log = lambda m: print(f"{name} {m}", flush=True)  # noqa: E731
        if name in ("lightgcn", "ngcf"):
            model = build_two_tower(name, train, embedding_dim=args.dim, num_layers=args.layers)
            res = fit_graph_cf(model, train, test, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                               lr=args.gcn_lr or 1e-3, time_budget_s=budget, progress=not args.no_progress, log=log,
                               ks=_TWO_TOWER_KS, exclude_level=exclude_level)
        elif name == "cml":
            model = build_two_tower("cml", train, embedding_dim=args.dim)
            res = fit_cml(model, train, test, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                          lr=args.gcn_lr or 1e-2, time_budget_s=budget, progress=not args.no_progress, log=log,
                          ks=_TWO_TOWER_KS, exclude_level=exclude_level)
        else:
            model = build_two_tower(_TWO_TOWER_KINDS[name], train, embedding_dim=args.dim)
            res = fit_two_tower(model, train, test, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                time_budget_s=budget, progress=not args.no_progress, log=log, ks=_TWO_TOWER_KS,
                                exclude_level=exclude_level)
        metrics = {"model": name, "test": res.test, "history": res.history, "train_seconds": res.seconds,
                   "train_pairs_per_second": res.pairs_per_second,
                   "data": {"path": args.data, "format": args.format or "multibehavior", "seed": args.seed}}
        results[name], runs[name] = res.test, metrics
        if args.out:
            with _user_input(OSError):
                save_two_tower_checkpoint(os.path.join(args.out, name), model, _TWO_TOWER_KINDS[name], metrics)
    print("\ntest metrics (per level; retrieval excludes training items):")
    print(_table(results))
    _write_metrics(args.out, {"test": results, "runs": runs})
    return 0


def _eval_two_tower(ck, spec: dict) -> Dict[str, float]:
    from .train.two_tower import evaluate_two_tower

    data, train, test, exclude_level = _feedback_data(spec["path"], spec["format"], spec["seed"])
    _same(spec["path"], "(users, items, levels)", (data.num_users, data.num_items, data.num_levels),
          (ck.config.num_users, ck.config.num_items, ck.config.num_levels))
    return evaluate_two_tower(ck.model, train, test, _TWO_TOWER_KS, exclude_level=exclude_level)


def _two_tower_arguments(g) -> List[argparse.Action]:
    return [g.add_argument("--no-baseline", action="store_true", help="gnolr: skip the per-feedback BCE baseline"),
            g.add_argument("--layers", type=_COUNT, default=3, help="lightgcn, ngcf: propagation layers"),
            g.add_argument("--gcn-lr", type=_POSITIVE, default=None,
                           help="lightgcn, ngcf, cml: Adam learning rate (default 1e-3, cml 1e-2)")]


# ---- the registry -----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Family:
    """What the models of one family share on the command line. `name` is the family a checkpoint records."""

    name: str
    title: str
    formats: Tuple[str, ...]                            # --format's choices
    defaults: Dict[str, Any]                            # epochs, batch_size, dim
    add_arguments: Callable[[Any], List[argparse.Action]]  # adds the family's own flags to its argument group
    train: Callable[[argparse.Namespace], int]          # `recops train --model NAME` (args.model = NAME)
    evaluate: Callable[[Any, dict], Dict[str, float]]   # (loaded Checkpoint, metrics.json's data spec) -> metrics
    nproc: bool                                         # trains in several processes (--nproc)
    runs: Callable[[argparse.Namespace], List[str]]     # the models a train command runs (their --out folders)
    spec_keys: Tuple[str, ...]                          # what `recops eval` reads from metrics.json's data spec


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    family: Family
    help: str


def _with_baseline(model: str, baseline: str) -> Callable[[argparse.Namespace], List[str]]:
    return lambda args: [args.model] + ([baseline] if args.model == model and not args.no_baseline else [])


SEQUENTIAL = Family(
    "sequential", "sequential (leave-one-out, full ranking)",
    ("ml-1m", "ml-100k", "ml-csv", "recbole", "sasrec", "user-items"),
    {"epochs": 150, "batch_size": 128, "dim": 50}, _sequential_arguments, lambda args: cmd_train(args, [args.model]),
    _eval_sequential, nproc=True, runs=lambda args: [args.model], spec_keys=("path", "format", "seed", "max_len"))
CTR = Family(
    "ctr", "CTR ranking", ("criteo",), {"epochs": 3, "batch_size": 2048, "dim": 64}, _ctr_arguments, cmd_train_ctr,
    _eval_ctr, nproc=True, runs=_with_baseline("dlrm", "logistic"),
    spec_keys=("path", "seed", "table_sizes", "max_rows"))
TWO_TOWER = Family(
    "two_tower", "multi-feedback two-tower retrieval", ("multibehavior", "mbcgcn"),
    {"epochs": 8, "batch_size": 1024, "dim": 64}, _two_tower_arguments, cmd_train_two_tower, _eval_two_tower,
    nproc=False, runs=_with_baseline("gnolr", "bce-two-tower"), spec_keys=("path", "format", "seed"))
FAMILIES: Dict[str, Family] = {f.name: f for f in (SEQUENTIAL, CTR, TWO_TOWER)}

MODELS: Dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("hstu", SEQUENTIAL, "HSTU, 2 layers x 1 head (the paper's ML-1M settings)"),
    ModelSpec("hstu-large", SEQUENTIAL, "HSTU, 8 layers x 2 heads"),
    ModelSpec("sasrec", SEQUENTIAL, "SASRec, 2 layers x 1 head"),
    ModelSpec("bert4rec", SEQUENTIAL, "BERT4Rec, 2 layers x 2 heads, Cloze training"),
    ModelSpec("dlrm", CTR, "DLRM (and the logistic baseline unless --no-baseline)"),
    ModelSpec("logistic", CTR, "first-order logistic CTR baseline"),
    ModelSpec("gnolr", TWO_TOWER, "GNOLR two-tower (and the per-feedback BCE baseline unless --no-baseline)"),
    ModelSpec("bce-two-tower", TWO_TOWER, "per-feedback BCE two-tower"),
    ModelSpec("lightgcn", TWO_TOWER, "LightGCN over the user-item graph of every feedback level (BPR)"),
    ModelSpec("ngcf", TWO_TOWER, "NGCF over the same graph (feature transforms, bi-interaction, layer concat; BPR)"),
    ModelSpec("cml", TWO_TOWER, "collaborative metric learning (WARP hinge, covariance regulariser, unit ball)"),
)}
DEFAULT_MODEL = "hstu"
DEMO_MODELS = ("hstu", "sasrec", "bert4rec")


def _train_arguments(p: argparse.ArgumentParser, family: Family, nproc: bool = True) -> List[argparse.Action]:
    """The flags of `family`'s training runs, in argument groups; returns their actions."""
    d = family.defaults
    data, run = p.add_argument_group("data"), p.add_argument_group("training")
    model = p.add_argument_group(f"{family.title} model")
    actions = [
        data.add_argument("--data", type=_PATH, default="synthetic", help="'synthetic' or a local file"),
        data.add_argument("--format", default=None, choices=family.formats, metavar="FORMAT",
                          help=f"format of a data file: {' | '.join(family.formats)}"),
        data.add_argument("--seed", type=_SEED, default=0, help="seed of the data, the weights and the batches"),
        run.add_argument("--epochs", type=_COUNT, default=d["epochs"], help="training epochs"),
        run.add_argument("--batch-size", type=_COUNT, default=d["batch_size"], help="per process"),
        run.add_argument("--time-budget", type=_POSITIVE, default=None, help="minutes per model"),
        run.add_argument("--out", type=_PATH, default=None,
                         help="folder for checkpoints and metrics.json (checked before training)"),
        run.add_argument("--no-progress", action="store_true", help="no progress bars"),
        model.add_argument("--dim", "--embedding-dim", dest="dim", type=_COUNT, default=d["dim"],
                           help="embedding width (the two spellings are one flag)"),
    ]
    if family.nproc and nproc:
        actions.append(run.add_argument(
            "--nproc", type=_COUNT, default=1, help="train in N processes on this host (re-runs itself under "
                                                 "torchrun, like `torchrun --nproc-per-node N -m recops train ...`)"))
    return actions + family.add_arguments(model)


def build_parser(model: Optional[str] = None) -> argparse.ArgumentParser:
    """The `recops` parser; its `train` command takes the flags of `model`'s family (hstu's when None or not a
    model name: parsing --model then reports the bad name)."""
    spec = MODELS.get(model or DEFAULT_MODEL, MODELS[DEFAULT_MODEL])
    fmt = _Help
    parser = _Parser(prog="recops", description="recops: fast recommendation kernels and models")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", formatter_class=fmt,
                       help="train a model: sequential (hstu, sasrec, bert4rec: leave-one-out, full ranking), CTR (dlrm) or "
                            "multi-feedback two-tower retrieval (gnolr)",
                       description=f"Train {spec.name}: {spec.help}. These are the flags of the {spec.family.title} "
                                   f"family; `recops train --model NAME --help` lists those of NAME's.")
    p.add_argument("--model", default=DEFAULT_MODEL, choices=list(MODELS), metavar="NAME",
                   help="one of " + ", ".join(f"{n} ({m.family.name})" for n, m in MODELS.items()))
    _train_arguments(p, spec.family)
    p = sub.add_parser("eval", help="evaluate a checkpoint written by train --out (the run or model folder)")
    p.add_argument("--checkpoint", type=_PATH, required=True)
    p = sub.add_parser("demo", formatter_class=fmt, help="train HSTU, SASRec and BERT4Rec on the synthetic data, "
                                                         "each with the same time budget, and compare them")
    _train_arguments(p, SEQUENTIAL, nproc=False)
    p.set_defaults(time_budget=1.0, epochs=30)
    p = sub.add_parser("bench", help="the benchmark runner (python -m recops.bench); flags go to it")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _chosen_model(argv: List[str]) -> Optional[str]:
    """The --model of a `train` command line, read ahead of the full parse (which needs the family's flags)."""
    if not argv or argv[0] != "train":
        return None
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--model")
    try:
        return pre.parse_known_args(argv[1:])[0].model
    except argparse.ArgumentError:
        return None  # the full parse reports it


def train_argv(args: argparse.Namespace) -> List[str]:
    """A `train` command line that parses back to `args`, without --nproc: what each torchrun process runs."""
    argv = ["train", f"--model={args.model}"]
    for action in _train_arguments(_Parser(add_help=False), MODELS[args.model].family):
        if action.dest == "nproc":
            continue
        value = getattr(args, action.dest)
        if action.nargs == 0:  # a switch
            if value:
                argv.append(action.option_strings[0])
        elif value is not None:
            argv.append(f"{action.option_strings[0]}={value}")
    return argv


def _data_spec(ck) -> dict:
    """metrics.json's data spec, with what the checkpoint's family needs to re-read its data."""
    where = os.path.join(ck.path, "metrics.json")
    spec = ck.metrics.get("data") if isinstance(ck.metrics, dict) else None
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: must hold the data spec (\"data\": {{...}}) to evaluate on"
                         + ("" if ck.metrics is not None else ", got no metrics.json"))
    missing = [k for k in FAMILIES[ck.family].spec_keys if k not in spec]
    if missing:
        raise ValueError(f"{where}: the data spec must name {', '.join(missing)}, got {sorted(spec)}")
    return spec


def cmd_eval(args) -> int:
    """Evaluate a checkpoint with its family's eval function on the data its metrics.json names."""
    from .train import checkpoint

    with _user_input():
        ck = checkpoint.load(checkpoint.find(args.checkpoint))
        spec = _data_spec(ck)
    print(_table({ck.kind: FAMILIES[ck.family].evaluate(ck, spec)}))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run one `recops` command line. A user error prints `<prog>: error: <what>` (one line) on stderr and raises
    UserError (SystemExit with status 2); a malformed data line is one wherever a reader meets it (DataError)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except DataError as e:
        error = UserError(str(e))
    except UserError as e:
        error = e
    print(f"{error.prog}: error: {error.message}", file=sys.stderr)
    raise error


def _main(argv: List[str]) -> int:
    if argv[:1] == ["bench"]:  # everything after `bench` is the runner's (argparse.REMAINDER drops leading flags)
        from .bench.__main__ import main as bench_main
        return bench_main(argv[1:])
    parser = build_parser(_chosen_model(argv))
    args, extra = parser.parse_known_args(argv)
    if extra:  # flags of another family (or misspelt): say where this command's flags are listed
        where = f"recops {args.cmd}" + (f" --model {args.model}" if args.cmd == "train" else "")
        raise UserError(f"unrecognized arguments: {' '.join(extra)} (see {where} --help)", where)
    if args.cmd == "eval":
        return cmd_eval(args)
    family = SEQUENTIAL if args.cmd == "demo" else MODELS[args.model].family
    runs = list(DEMO_MODELS) if args.cmd == "demo" else family.runs(args)
    with _user_input():
        _check_train(args, family, runs)
    if args.cmd == "demo":
        return cmd_train(args, runs)
    if getattr(args, "nproc", 1) > 1:
        from .distributed import launch

        if not launch.launched_by_torchrun():
            return launch.relaunch(args.nproc, train_argv(args))
    return family.train(args)


if __name__ == "__main__":
    sys.exit(main())
