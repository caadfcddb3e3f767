# SPDX-License-Identifier: Apache-2.0
"""`python -m recops.bench [--quick] [--families jagged,...] [--device cpu|cuda] [--out DIR]`

Times every recops op against its named baselines in one process, prints a table with the speed ratio
(baseline time / recops time: > 1 means recops is faster), and writes bench/results/<date>-<machine>.md.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

import recops

from . import CASE_BUILDERS


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


ROUNDS = 5
SWITCH_ROUNDS, MIN_SWITCH_CALLS = 2, 5


def time_impls(impls, device, min_time, rounds=ROUNDS, max_reps=1000, switch_cost=False):
    """Median seconds per call of each implementation (after warm-up). The implementations of one case are timed
    interleaved, in `rounds` rounds of about min_time / rounds seconds each, so a slow phase of a shared machine
    lands on all of them instead of on whichever ran then. Calls slower than 2 s (slow baselines) are warmed up
    once and timed once. switch_cost (see Case): every block starts with an untimed call and times at least
    MIN_SWITCH_CALLS calls, and no call counts as slow (the first one builds)."""
    times, fast = {}, []
    for name, fn in impls.items():
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if time.perf_counter() - t0 > 2.0 and not switch_cost:
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name] = time.perf_counter() - t0
        else:
            if not switch_cost:
                fn()
                _sync(device)
            fast.append(name)
    samples = {name: [] for name in fast}
    min_calls = MIN_SWITCH_CALLS if switch_cost else 1
    for _ in range(rounds):
        for name in fast:
            fn, got = impls[name], samples[name]
            if switch_cost:
                fn()
                _sync(device)
            start, calls = time.perf_counter(), 0
            while calls < min_calls or (time.perf_counter() - start < min_time / rounds and calls < max_reps // rounds):
                t0 = time.perf_counter()
                fn()
                _sync(device)
                got.append(time.perf_counter() - t0)
                calls += 1
    times.update({name: statistics.median(got) for name, got in samples.items()})
    return {name: times[name] for name in impls}


def machine_description(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def machine_tag(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).split()[-1].lower().replace("/", "-")
    return f"cpu{os.cpu_count()}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m recops.bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer shapes and shorter timing (under two minutes)")
    p.add_argument("--families", default=",".join(CASE_BUILDERS), help="comma-separated op families")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() and recops.has_cuda() else "cpu")
    p.add_argument("--out", default=os.path.join("bench", "results"), help="folder for the results file")
    p.add_argument("--min-time", type=float, default=None, help="seconds of timing per implementation")
    p.add_argument("--tag", default="", help="suffix of the results file name (e.g. the families run)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    min_time = args.min_time if args.min_time is not None else (0.15 if args.quick else 1.0)
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in CASE_BUILDERS]
    if unknown:
        p.error(f"unknown families {unknown}; known: {list(CASE_BUILDERS)}")

    header = [
        f"# recops benchmarks, {datetime.date.today().isoformat()}",
        "",
        f"- machine: {machine_description(device)} ({platform.machine()}, {platform.system()})",
        f"- device: {device}, torch threads: {torch.get_num_threads()}",
        f"- versions: recops {recops.__version__} (CUDA build: {recops.has_cuda()}), torch {torch.__version__}, "
        f"python {platform.python_version()}",
        f"- mode: {'quick' if args.quick else 'full'}, min time per impl {min_time}s, median of repeated calls, "
        f"the implementations of a case interleaved in {ROUNDS} rounds ({SWITCH_ROUNDS} rounds of at least "
        f"{MIN_SWITCH_CALLS} calls after an untimed one where switching implementations rebuilds a model)",
        "- ratio = baseline time / recops time (> 1: recops is faster)",
        "",
        "| op | shape | impl | time (ms) | throughput | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    print("\n".join(header), flush=True)
    rows = []
    for fam in families:
        for case in CASE_BUILDERS[fam](device, args.quick):
            if case.switch_cost:
                times = time_impls(case.impls, device, min_time, rounds=SWITCH_ROUNDS, switch_cost=True)
            else:
                times = time_impls(case.impls, device, min_time)
            mine = times.get("recops")
            for name, t in times.items():
                rate = ""
                if case.bytes_moved:
                    rate = f"{case.bytes_moved / t / 1e9:.1f} GB/s"
                elif case.flops:
                    rate = f"{case.flops / t / 1e9:.1f} GFLOP/s"
                elif case.sequences:
                    rate = f"{case.sequences / t:.0f} seq/s"
                elif case.samples:
                    rate = f"{case.samples / t:.0f} samples/s"
                ratio = "-" if mine is None else ("1.00" if name == "recops" else f"{t / mine:.2f}")
                row = f"| {case.op} | {case.shape} | {name} | {t * 1e3:.3f} | {rate} | {ratio} |"
                rows.append(row)
                print(row, flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{datetime.date.today().isoformat()}-{machine_tag(device)}{'-' + args.tag if args.tag else ''}.md")
    with open(path, "w") as f:
        f.write("\n".join(header + rows) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
