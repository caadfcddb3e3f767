# SPDX-License-Identifier: Apache-2.0
"""`python -m recops.bench.distributed [--quick] [--out DIR]`

DLRM-like training throughput on torch.distributed (gloo, spawned processes on this machine): one process
without torch.distributed, then 1 and 2 ranks through recops.distributed.wrap (row and table sharding), with
the bytes each rank sends per step (all_to_all payloads of the embedding exchange, forward and backward, and
the DDP all_reduce buckets). Then a paper estimate of the exchange time at 8 and 64 GPUs from those volumes
and published NCCL bandwidths. Writes bench/results/<date>-<machine>-distributed.md.

The model is self-contained (not recops.models): bottom MLP over 13 dense features, an EmbeddingBagCollection
of T tables (fused rowwise_adagrad), concatenation, top MLP, BCE loss, SGD on the dense part.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import recops
from recops.distributed import wrap
from recops.nn import EmbeddingBagCollection, EmbeddingBagConfig, FusedOptimizer

from .__main__ import machine_description, machine_tag


@dataclasses.dataclass
class Config:
    tables: int = 8
    rows: int = 100_000
    dim: int = 32
    pooling: int = 8  # ids per bag
    batch: int = 512  # per rank
    dense_in: int = 13
    steps: int = 20
    warmup: int = 3


class DLRMish(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        tables = [EmbeddingBagConfig(f"t{i}", cfg.rows, cfg.dim) for i in range(cfg.tables)]
        self.bottom = nn.Sequential(nn.Linear(cfg.dense_in, 64), nn.ReLU(), nn.Linear(64, cfg.dim), nn.ReLU())
        self.emb = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("rowwise_adagrad", lr=0.05))
        self.top = nn.Sequential(nn.Linear(cfg.dim * (cfg.tables + 1), 128), nn.ReLU(), nn.Linear(128, 1))

    def forward(self, dense, sparse):
        return self.top(torch.cat([self.bottom(dense), self.emb(sparse).concat()], dim=1)).squeeze(-1)


def _batches(cfg: Config, n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lens = torch.randint(1, 2 * cfg.pooling, (cfg.tables * cfg.batch,), generator=gen)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)])
        ids = torch.randint(0, cfg.rows, (int(offsets[-1]),), generator=gen)
        kjt = recops.KeyedJagged([f"t{i}" for i in range(cfg.tables)], ids, offsets)
        out.append((torch.randn(cfg.batch, cfg.dense_in, generator=gen), kjt,
                    torch.randint(0, 2, (cfg.batch,), generator=gen).float()))
    return out


def _train(model, cfg: Config, batches, on_timed_start=None, sync=None):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for i, (dense, sparse, y) in enumerate(batches):
        if i == cfg.warmup:
            if sync:
                sync()
            if on_timed_start:
                on_timed_start()
            t0 = time.perf_counter()
        loss = nn.functional.binary_cross_entropy_with_logits(model(dense, sparse), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if sync:
        sync()
    return time.perf_counter() - t0


def _counting_allreduce(state, bucket):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    buf = bucket.buffer()
    state["bytes"] += buf.numel() * buf.element_size()
    return default_hooks.allreduce_hook(None, bucket)


def _worker(rank, world, cfg, sharding, threads, tmp):
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store-{world}-{threads}-{sharding}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(0)
    model = wrap(DLRMish(cfg), sharding=sharding)
    emb = model.module.emb
    ddp_state = {"bytes": 0}
    model.register_comm_hook(ddp_state, _counting_allreduce)

    def reset():
        emb.comm.reset()
        ddp_state["bytes"] = 0

    elapsed = _train(model, cfg, _batches(cfg, cfg.warmup + cfg.steps, seed=rank + 1), reset, dist.barrier)
    stats = torch.tensor([elapsed, emb.comm.bytes_sent, ddp_state["bytes"], emb.comm.collectives], dtype=torch.float64)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # slowest rank; largest volume
    if rank == 0:
        with open(os.path.join(tmp, f"result-{world}-{threads}-{sharding}.json"), "w") as f:
            json.dump(stats.tolist(), f)
    dist.destroy_process_group()


def _run(world, cfg, sharding, threads, tmp):
    from recops.bench import distributed as this  # by its import name: spawned children cannot see __main__

    mp.start_processes(this._worker, args=(world, cfg, sharding, threads, tmp), nprocs=world, start_method="spawn")
    with open(os.path.join(tmp, f"result-{world}-{threads}-{sharding}.json")) as f:
        elapsed, a2a, ddp, collectives = json.load(f)
    steps = cfg.steps
    return {"samples_s": world * cfg.batch * steps / elapsed, "ms_step": 1e3 * elapsed / steps,
            "a2a_bytes": a2a / steps, "ddp_bytes": ddp / steps, "collectives": collectives / steps}


def _dense_params(cfg: Config) -> int:
    with torch.random.fork_rng(devices=[]):
        m = DLRMish(Config(tables=cfg.tables, rows=1, dim=cfg.dim, dense_in=cfg.dense_in))
    return sum(p.numel() for n, p in m.named_parameters() if not n.startswith("emb."))


def exchange_bytes(world: int, tables: int, dim: int, batch: int, pooling: float, sharding: str) -> float:
    """Bytes one rank sends to other ranks per training step in the embedding exchange (our wire format: int64
    lengths and ids, float32 pooled rows; uniform ids, equal batches, balanced tables), forward + backward."""
    remote = (world - 1) / world
    ids = tables * batch * pooling * 8 * remote
    if sharding == "row":  # lengths of every bag to every other rank; partial pooled rows of every bag both ways
        return ids + tables * batch * 8 * (world - 1) + 2 * tables * batch * dim * 4 * (world - 1)
    return ids + tables * batch * 8 * remote + 2 * tables * batch * dim * 4 * remote


# (world size, torch threads per process, sharding) of the distributed runs
RUNS = [(1, 1, "row"), (1, 1, "table"), (1, 2, "row"), (2, 1, "row"), (2, 1, "table")]

# Published bandwidths (GB/s per GPU, one direction) used for the paper estimate.
BANDWIDTHS = [
    ("8 GPUs, one node (NVLink 4 / NVSwitch, H100)", 8, 450.0, 225.0,
     "450 GB/s per direction is NVLink 4's nominal per-GPU rate (18 links x 25 GB/s); an all_reduce reaches "
     "about that bus bandwidth (460-480 GB/s reported for 8x H100 by nccl-tests users); no published all-to-all "
     "figure at hand, so half of it is the pessimistic end"),
    ("64 GPUs, 8 nodes (NDR InfiniBand 400 Gb/s per GPU)", 64, 48.0 * 8 / 7, 40.0,
     "a ConnectX-7 NIC at NDR reaches 48-49 GB/s in nccl-tests (NVIDIA/nccl-tests#267); all-to-all cannot "
     "aggregate NICs and runs at N/(N-1) x the per-GPU network bandwidth on N nodes (NVIDIA/nccl-tests#130); "
     "40 GB/s is the pessimistic end"),
]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m recops.bench.distributed", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps, smaller tables")
    p.add_argument("--out", default=os.path.join("bench", "results"))
    args = p.parse_args(argv)
    cfg = Config(rows=20_000, steps=8) if args.quick else Config()

    header = [
        f"# recops distributed training benchmark, {datetime.date.today().isoformat()}",
        "",
        f"- machine: {machine_description(torch.device('cpu'))} ({platform.machine()}, {platform.system()})",
        f"- 1-minute load average at the start: {os.getloadavg()[0]:.2f} (a shared VM: other jobs distort timings)",
        f"- versions: recops {recops.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
        "backend gloo (CPU), processes spawned on this one machine",
        f"- model: bottom MLP 13-64-{cfg.dim}, {cfg.tables} tables x {cfg.rows} rows x D={cfg.dim} (fused "
        f"rowwise_adagrad), ~{cfg.pooling} ids per bag (1..{2 * cfg.pooling - 1}), top MLP "
        f"{cfg.dim * (cfg.tables + 1)}-128-1; {_dense_params(cfg)} dense parameters",
        f"- {cfg.batch} samples per rank per step (weak scaling), {cfg.warmup} warm-up + {cfg.steps} timed steps; "
        "samples/s = all ranks' samples / slowest rank's time",
        "- bytes/step = what one rank sends to other ranks (max over ranks): all_to_all payloads (header, ids, "
        "pooled rows, their gradients) and DDP all_reduce bucket payloads (a ring all_reduce puts about "
        "2 (W-1)/W of that on the wire)",
        "",
        "| run | torch threads / process | samples/s | ms/step | all_to_all bytes/step | collectives/step | "
        "DDP all_reduce bytes/step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(header), flush=True)
    rows = []
    for threads in (2, 1):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        plain = DLRMish(cfg)
        elapsed = _train(plain, cfg, _batches(cfg, cfg.warmup + cfg.steps, seed=1))
        rows.append(f"| 1 process, EmbeddingBagCollection (no torch.distributed) | {threads} | "
                    f"{cfg.batch * cfg.steps / elapsed:.0f} | {1e3 * elapsed / cfg.steps:.1f} | - | - | - |")
        print(rows[-1], flush=True)
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world, threads, sharding in RUNS:
            r = _run(world, cfg, sharding, threads, tmp)
            measured[(world, sharding)] = r
            rows.append(f"| {world} rank{'s' if world > 1 else ''}, wrap(sharding={sharding!r}) | {threads} | "
                        f"{r['samples_s']:.0f} | {r['ms_step']:.1f} | {r['a2a_bytes']:.0f} | "
                        f"{r['collectives']:.0f} | {r['ddp_bytes']:.0f} |")
            print(rows[-1], flush=True)

    est = ["", "## Paper estimate for 8 and 64 GPUs (not measured)", "",
           "Embedding exchange volume per GPU per step from the formula in `exchange_bytes` (checked against the "
           "measurement at 2 ranks below), divided by a published bandwidth; ignores per-collective latency "
           "(tens of microseconds each; 4 all_to_alls per step: header, ids, pooled rows, their gradients, a 5th "
           "with per-id weights), compute, and overlap. DDP all_reduce of the "
           f"{_dense_params(cfg) * 4 / 1e3:.0f} kB of dense gradients is negligible at these sizes.", ""]
    for sharding in ("row", "table"):
        f2 = exchange_bytes(2, cfg.tables, cfg.dim, cfg.batch, cfg.pooling, sharding)
        m2 = measured[(2, sharding)]["a2a_bytes"]
        est.append(f"- {sharding} sharding at 2 ranks: formula {f2:.0f} B/step, measured {m2:.0f} B/step "
                   "(the busiest rank: its random id counts differ from the mean; plus 32-byte headers)")
    est += ["", "| shape | GPUs | sharding | bytes/GPU/step | bandwidth GB/s (optimistic / pessimistic) | "
            "exchange ms/step |", "|---|---:|---|---:|---|---|"]
    shapes = [(f"this benchmark ({cfg.tables} tables, D={cfg.dim}, B={cfg.batch}/GPU, {cfg.pooling} ids/bag)",
               cfg.tables, cfg.dim, cfg.batch, cfg.pooling),
              ("Criteo-like DLRM (26 tables, D=128, B=2048/GPU, 1 id/bag)", 26, 128, 2048, 1)]
    for name, t, d, b, pf in shapes:
        for label, gpus, hi, lo, _ in BANDWIDTHS:
            for sharding in ("row", "table"):
                v = exchange_bytes(gpus, t, d, b, pf, sharding)
                est.append(f"| {name} | {gpus} | {sharding} | {v / 1e6:.2f} MB | {hi:.0f} / {lo:.0f} | "
                           f"{v / hi / 1e6:.3f} - {v / lo / 1e6:.3f} |")
    est += ["", "Bandwidth sources and assumptions:"] + [f"- {label}: {note}" for label, _, _, _, note in BANDWIDTHS]
    est += ["", "Row sharding sends every bag's partial pooled row to its rank from every rank, so its volume per "
            "GPU grows with the number of GPUs; table sharding's stays flat. Use row sharding for the few tables "
            "too large for one GPU."]
    print("\n".join(est), flush=True)
    os.makedirs(args.out, exist_ok=True)
    name = f"{datetime.date.today().isoformat()}-{machine_tag(torch.device('cpu'))}-distributed.md"
    path = os.path.join(args.out, name)
    with open(path, "w") as f:
        f.write("\n".join(header + rows + est) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
