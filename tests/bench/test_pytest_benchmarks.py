# SPDX-License-Identifier: Apache-2.0
"""The pytest-benchmark files under bench/ run as smoke tests (--benchmark-disable: each case once, untimed) and,
timed, record the cases' rates."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HSTU_SMALL = "bench/bench_hstu.py::test_hstu[cpu-hstu_attention fwd-recops-B=32,H=4,D=64,N=256,uniform]"


def _pytest(*args):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_benchmarks_run_disabled():
    # cases that count bytes (jagged) and FLOPs (hstu): no timing stats to divide by when disabled
    run = _pytest("--benchmark-disable", HSTU_SMALL, "bench/bench_hstu.py::test_matmul_reference",
                  "bench/bench_jagged.py::test_jagged[cpu-jagged_to_padded-recops-B=512,N=200,D=64,fp32]")
    assert run.returncode == 0 and "3 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]


def test_timed_benchmark_records_gflops(tmp_path):
    out = tmp_path / "bench.json"
    run = _pytest("--benchmark-only", f"--benchmark-json={out}", "--benchmark-min-rounds=1", HSTU_SMALL)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    (bench,) = json.loads(out.read_text())["benchmarks"]
    assert bench["group"] == "hstu_attention fwd B=32,H=4,D=64,N=256,uniform cpu"
    assert bench["extra_info"]["flops"] > 0 and bench["extra_info"]["GFLOP/s"] > 0
