# SPDX-License-Identifier: Apache-2.0
"""recops.train.loop.run_epochs with fake steps, evaluations and clocks: the exact epoch it stops at (patience,
time budget per epoch and per step, agreed across two gloo processes), the best-state copy, the history."""

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recops.train.loop import EpochStats, check_settings, run_epochs, world_size


class FakeClock:
    """Seconds that pass only when a step says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _fixed_batches(n):
    return lambda epoch: [(epoch, i) for i in range(n)]


def _run(values, steps_per_epoch=2, seconds_per_step=0.0, model=None, **kwargs):
    """run_epochs over `values` (the monitored value of epoch e is values[e - 1]); each step's loss is
    epoch + i / 10 and it covers 3 samples."""
    clock = kwargs.pop("clock", FakeClock())
    log = kwargs.pop("log", lambda s: None)
    seen = []

    def step(batch):
        epoch, i = batch
        seen.append(batch)
        clock.now += seconds_per_step
        if model is not None:
            with torch.no_grad():
                model.weight.fill_(float(epoch))
        return epoch + i / 10, 3

    def end_epoch(stats: EpochStats):
        return {"epoch": stats.epoch, "train_loss": stats.mean_loss, "steps": len(stats.losses),
                "valid": values[stats.epoch - 1]}

    progress = kwargs.pop("progress", False)
    res = run_epochs(step, _fixed_batches(steps_per_epoch), len(values), end_epoch=end_epoch, progress=progress,
                     log=log, clock=clock, model=model, **kwargs)
    return res, seen


def test_no_monitor_runs_every_epoch_and_records_history():
    res, seen = _run([0.0] * 4, steps_per_epoch=3)
    assert res.epochs == 4 and res.stop_reason == "epochs" and len(seen) == 12
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert res.history[1]["train_loss"] == pytest.approx((2.0 + 2.1 + 2.2) / 3)
    assert res.samples == 36 and res.best_epoch is None and res.best_state is None


def test_default_entry_is_epoch_and_mean_loss():
    res = run_epochs(lambda b: (b, 1), lambda epoch: [1.0, 2.0, 4.5], 2, progress=False, log=lambda s: None)
    assert res.history == [{"epoch": 1, "train_loss": 2.5}, {"epoch": 2, "train_loss": 2.5}]


def test_early_stopping_stops_patience_epochs_after_the_best():
    # best at epoch 2 (0.3); epochs 3, 4, 5 do not beat it (0.3 again is not better): stop after epoch 5
    values = [0.1, 0.3, 0.2, 0.3, 0.29, 0.9, 1.0]
    res, seen = _run(values, monitor="valid", patience=3, model=torch.nn.Linear(2, 1))
    assert res.stop_reason == "patience" and res.epochs == 5 and len(res.history) == 5
    assert res.best_epoch == 2 and res.best_entry["valid"] == 0.3
    assert seen[-1] == (5, 1)  # epoch 6 never started


def test_patience_counts_from_the_latest_improvement():
    values = [0.1, 0.2, 0.15, 0.3, 0.1, 0.1, 0.5]
    res, _ = _run(values, monitor=lambda entry: entry["valid"], patience=2, model=torch.nn.Linear(2, 1))
    assert (res.epochs, res.best_epoch) == (6, 4)


def test_reports_mark_improvements():
    lines = []
    run_epochs(lambda b: (0.0, 1), _fixed_batches(1), 3,
               end_epoch=lambda s: {"epoch": s.epoch, "v": [1, 0, 2][s.epoch - 1]},
               report=lambda entry, improved: f"{entry['epoch']}{'*' if improved else ''}", monitor="v",
               model=torch.nn.Linear(1, 1), progress=False, log=lines.append)
    assert lines == ["1*", "2", "3*"]


def test_best_state_is_a_deep_copy_and_is_restored():
    model = torch.nn.Linear(2, 1)
    res, _ = _run([0.1, 0.5, 0.2, 0.4], monitor="valid", model=model, restore_best=True)
    assert res.epochs == 4 and res.best_epoch == 2
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))  # the weights the step wrote in epoch 2
    assert torch.equal(res.best_state["weight"], torch.full((1, 2), 2.0))
    with torch.no_grad():
        model.weight.fill_(7.0)
    assert torch.equal(res.best_state["weight"], torch.full((1, 2), 2.0))  # not a view of the live weights


def test_without_restore_the_model_keeps_its_last_weights():
    model = torch.nn.Linear(2, 1)
    res, _ = _run([0.1, 0.5, 0.2], monitor="valid", model=model)
    assert res.best_epoch == 2 and torch.equal(model.weight, torch.full((1, 2), 3.0))


def test_monitor_needs_a_model():
    with pytest.raises(ValueError, match="model"):
        _run([0.1], monitor="valid")


def test_time_budget_is_checked_after_each_epoch():
    # 2 steps x 1 s per epoch: 2, 4, 6 s after epochs 1-3; a 5 s budget is passed after epoch 3
    messages = []
    res, seen = _run([0.0] * 10, seconds_per_step=1.0, time_budget_s=5.0, budget_message=lambda e: f"budget {e}",
                     log=messages.append)
    assert res.stop_reason == "time_budget" and res.epochs == 3 and len(res.history) == 3 and len(seen) == 6
    assert messages == ["budget 3"]
    assert res.train_seconds == pytest.approx(6.0) and res.samples_per_second == pytest.approx(18 / 6.0)


def test_time_budget_per_step_ends_the_epoch_early_and_still_records_it():
    # 3 steps x 1 s per epoch; a 4.5 s budget is passed after the 5th step (epoch 2, step 2)
    res, seen = _run([0.0] * 10, steps_per_epoch=3, seconds_per_step=1.0, time_budget_s=4.5,
                     budget_every_step=True)
    assert res.stop_reason == "time_budget" and res.epochs == 2 and seen[-1] == (2, 1)
    assert [h["steps"] for h in res.history] == [3, 2]


def test_patience_wins_over_the_budget_in_the_same_epoch():
    res, _ = _run([0.5, 0.1, 0.1], seconds_per_step=1.0, time_budget_s=3.5, monitor="valid", patience=1,
                  model=torch.nn.Linear(1, 1))
    assert (res.epochs, res.stop_reason) == (2, "patience")


def test_zero_epochs():
    res, seen = _run([], monitor="valid", model=torch.nn.Linear(1, 1), restore_best=True)
    assert res.epochs == 0 and res.history == [] and res.best_epoch is None and not seen


@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": -1}, "run_epochs: epochs must be an int >= 0, got -1"),
    ({"epochs": 1.5}, "run_epochs: epochs must be an int >= 0, got 1.5"),
    ({"patience": -1}, "run_epochs: patience must be an int >= 0, got -1"),
    ({"time_budget_s": 0.0}, r"run_epochs: time_budget_s must be a finite number > 0, got 0.0"),
    ({"time_budget_s": float("nan")}, "time_budget_s must be a finite number > 0, got nan"),
])
def test_bad_settings_are_refused_before_any_step(kwargs, message):
    """A negative patience or a zero budget used to be accepted (and ignored or stop at once)."""
    seen = []
    args = {"epochs": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        run_epochs(lambda b: seen.append(b) or (0.0, 1), _fixed_batches(2), args.pop("epochs"), progress=False,
                   **args)
    assert seen == []


def test_check_settings_rules():
    check_settings("op", epochs=1, batch_size=3, patience=0, time_budget_s=0.5, lr=1e-3, max_len=None)
    for name, value, rule in [("epochs", 0, "an int >= 1"), ("batch_size", -2, "an int >= 1"),
                              ("num_negatives", 0, "an int >= 1"), ("max_len", 0, "an int >= 1"),
                              ("batch_size", True, "an int >= 1"), ("uniform_negatives", -1, "an int >= 0"),
                              ("dense_lr", float("inf"), "a finite number > 0"), ("lr", 0, "a finite number > 0")]:
        with pytest.raises(ValueError, match=rf"^op: {name} must be {rule}, got {value!r}$"):
            check_settings("op", **{name: value})


def test_world_size_without_a_process_group():
    assert not dist.is_initialized()
    assert world_size() == 1 and world_size(3) == 3


# ---- two gloo processes whose clocks disagree stop after the same epoch ------------------------------------------

def _budget_worker(rank, world, tmp):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'store')}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    clock = FakeClock()

    def step(batch):
        clock.now += 1.0 + rank  # rank 1's clock runs twice as fast: alone it would stop after epoch 3, rank 0 after 6
        return 0.0, 1

    out = {}
    res = run_epochs(step, _fixed_batches(1), 10, time_budget_s=5.5, progress=False, log=lambda s: None,
                     clock=clock)  # world from the process group
    out["epoch"] = res.epochs
    clock.now = 100.0
    res = run_epochs(step, _fixed_batches(2), 10, time_budget_s=5.5, budget_every_step=True, progress=False,
                     log=lambda s: None, clock=clock, world=world)
    out["step"] = (res.epochs, res.samples)
    torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_time_budget_is_agreed_across_ranks(tmp_path):
    mp.start_processes(_budget_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert got[0] == got[1], got
    # per epoch: rank 1 is past 5.5 s after epoch 3 (6 s); per step: after its 3rd step (epoch 2, 6 s)
    assert got[0] == {"epoch": 3, "step": (2, 3)}, got


def test_progress_bar_runs(capsys):
    res, _ = _run([0.0, 0.0], seconds_per_step=1.0, progress=True, desc="fake epoch", unit="pair",
                  total=lambda epoch: 6)
    assert res.epochs == 2
