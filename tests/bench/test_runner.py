# SPDX-License-Identifier: Apache-2.0
"""The bench runner's timing loop: a case whose implementations rebuild state when they take turns (switch_cost)
must not count the rebuilding call."""

import time

import torch

from recops.bench.__main__ import MIN_SWITCH_CALLS, time_impls


def _impls(log):
    """Two implementations sharing one slot: a call after the other one ran "rebuilds" (sleeps 30 ms)."""
    live = {"name": None}

    def impl(name):
        def run():
            if live["name"] != name:
                live["name"] = name
                time.sleep(0.03)
            log.append(name)
        return run

    return {"a": impl("a"), "b": impl("b")}


def test_switch_cost_blocks_start_untimed():
    log = []
    times = time_impls(_impls(log), torch.device("cpu"), min_time=0.0, rounds=2, switch_cost=True)
    assert all(t < 0.01 for t in times.values()), times
    # warm-up a, warm-up b, then per round and impl: one untimed call + MIN_SWITCH_CALLS timed ones
    assert log == ["a", "b"] + (["a"] * (1 + MIN_SWITCH_CALLS) + ["b"] * (1 + MIN_SWITCH_CALLS)) * 2


def test_without_switch_cost_the_rebuild_lands_in_the_median():
    log = []
    times = time_impls(_impls(log), torch.device("cpu"), min_time=0.0, rounds=2)
    assert all(t > 0.02 for t in times.values()), times  # one timed call per round, each right after a switch
