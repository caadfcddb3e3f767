# SPDX-License-Identifier: Apache-2.0
"""The epoch loop every trainer runs: progress bar, time budget (agreed across ranks), early stopping on a
validation metric with a copy of the best weights, and one history entry per epoch.

A trainer plugs in what differs between model families:

- `batches(epoch)`: a fresh iterable of this rank's batches for epoch `epoch` (1-based), taken lazily;
- `step(batch) -> (loss, samples)`: one optimisation step, its loss and the samples it covered (all ranks);
- `end_epoch(stats) -> dict`: the epoch's history entry (it evaluates when the trainer wants to);
- `report(entry, improved) -> str`: the line logged for the epoch (None for no line).

With `monitor` (a history key, or a function of the entry; higher is better) the loop copies the model's weights
each time the monitored value improves and, with `patience`, stops `patience` epochs after the best one."""

import copy
import dataclasses
import math
import numbers
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch

Step = Callable[[Any], Tuple[float, int]]


@dataclasses.dataclass
class EpochStats:
    """What one epoch's training pass did."""

    epoch: int
    losses: List[float]
    loss_sum: float
    samples: int
    seconds: float

    @property
    def mean_loss(self) -> float:
        """Sum of the step losses (accumulated in step order) over max(steps, 1)."""
        return self.loss_sum / max(len(self.losses), 1)


@dataclasses.dataclass
class LoopResult:
    history: List[dict]
    epochs: int                       # epochs trained
    stop_reason: str                  # "epochs" | "patience" | "time_budget"
    best_epoch: Optional[int]         # with a monitor: the epoch of the best value (None without one)
    best_entry: Optional[dict]        # its history entry
    best_state: Optional[Dict[str, Any]]  # a deep copy of the model's state_dict at that epoch
    started: float                    # the clock (time.perf_counter()) when the loop began
    train_seconds: float              # time inside the training passes (no evaluation)
    samples: int                      # samples trained on (as the steps counted them)

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.train_seconds, 1e-9)


_AT_LEAST = {"epochs": 1, "batch_size": 1, "num_negatives": 1, "max_len": 1, "patience": 0,
             "in_batch_negatives": 0, "uniform_negatives": 0, "eval_every": 0}
_POSITIVE = ("time_budget_s", "lr", "dense_lr")


def check_settings(op: str, **settings) -> None:
    """ValueError "<op>: <name> must be <rule>, got <value>" for the first setting no run can train with:
    epochs, batch_size, num_negatives and max_len are ints >= 1; patience, in_batch_negatives, uniform_negatives
    and eval_every ints >= 0; time_budget_s, lr and dense_lr finite numbers > 0. None passes (not set)."""
    for name, value in settings.items():
        if value is None:
            continue
        if name in _POSITIVE:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
                and value > 0
            rule = "a finite number > 0"
        else:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= _AT_LEAST[name]
            rule = f"an int >= {_AT_LEAST[name]}"
        if not ok:
            raise ValueError(f"{op}: {name} must be {rule}, got {value!r}")


def world_size(world: Optional[int] = None) -> int:
    """`world` when given, else torch.distributed's world size when a process group is initialised, else 1."""
    if world is not None:
        return world
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def agreed_elapsed(seconds: float, world: int) -> float:
    """The largest of every rank's `seconds` (an all_reduce MAX; the value itself with one process): every rank
    compares the same number with the budget, so all of them stop at the same step."""
    if world == 1:
        return seconds
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _monitor_fn(monitor: Union[None, str, Callable[[dict], float]]) -> Optional[Callable[[dict], float]]:
    if monitor is None or callable(monitor):
        return monitor
    return lambda entry: entry[monitor]


def run_epochs(step: Step, batches: Callable[[int], Iterable[Any]], epochs: int, *,
               end_epoch: Optional[Callable[[EpochStats], dict]] = None,
               report: Optional[Callable[[dict, bool], Optional[str]]] = None,
               monitor: Union[None, str, Callable[[dict], float]] = None, patience: Optional[int] = None,
               model: Optional[torch.nn.Module] = None, restore_best: bool = False,
               time_budget_s: Optional[float] = None, budget_every_step: bool = False,
               budget_message: Optional[Callable[[int], str]] = None, world: Optional[int] = None,
               progress: bool = True, desc: str = "epoch", unit: str = "it",
               total: Optional[Callable[[int], Optional[int]]] = None,
               log: Callable[[str], None] = print, clock: Callable[[], float] = time.perf_counter) -> LoopResult:
    """Train for up to `epochs` epochs (numbered from 1) and return the history.

    After each epoch: the entry from `end_epoch` (default {"epoch", "train_loss"}) joins the history, the monitored
    value is compared with the best one (strictly greater is better; the first epoch is always the best so far),
    `report`'s line is logged, then the loop stops when `patience` epochs passed without improvement or when more
    than `time_budget_s` seconds passed since it began (the largest elapsed time of all ranks, so every rank stops
    after the same epoch). With `budget_every_step` the budget is also checked after each step: the epoch ends
    early but is still evaluated and recorded. With `restore_best` the model gets its best weights back at the end.

    `model` is needed for the best-state copy (with a monitor). The progress bar counts samples (`total(epoch)`
    of them when given) and shows the last loss and the rate; callers pass progress=False on ranks other than 0.
    `clock` (seconds) times the budget and the training passes. ValueError (before any step) unless epochs is an
    int >= 0, patience None or an int >= 0 and time_budget_s None or a finite number > 0."""
    from tqdm.auto import tqdm

    check_settings("run_epochs", patience=patience, time_budget_s=time_budget_s)
    if not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"run_epochs: epochs must be an int >= 0, got {epochs!r}")
    better = _monitor_fn(monitor)
    if better is not None and model is None:
        raise ValueError("run_epochs: a monitor needs the model (for the copy of the best weights)")
    world = world_size(world)
    history: List[dict] = []
    best: Optional[Tuple[int, float, dict, Dict[str, Any]]] = None
    samples, train_s = 0, 0.0
    reason, epoch = "epochs", 0
    started = clock()

    def over_budget() -> bool:
        return time_budget_s is not None and agreed_elapsed(clock() - started, world) > time_budget_s

    for epoch in range(1, epochs + 1):
        t0 = clock()
        bar = tqdm(total=total(epoch) if total else None, unit=unit, desc=f"{desc} {epoch}", disable=not progress,
                   leave=False)
        losses: List[float] = []
        loss_sum, epoch_samples, stop = 0.0, 0, False
        for batch in batches(epoch):
            loss, n = step(batch)
            losses.append(loss)
            loss_sum += loss
            epoch_samples += n
            bar.update(n)
            if progress:
                rate = (samples + epoch_samples) / max(train_s + clock() - t0, 1e-9)
                bar.set_postfix({"loss": f"{loss:.3f}", f"{unit}/s": f"{rate:.0f}"}, refresh=False)
            if budget_every_step and over_budget():
                stop = True
                break
        bar.close()
        seconds = clock() - t0
        train_s += seconds
        samples += epoch_samples
        stats = EpochStats(epoch, losses, loss_sum, epoch_samples, seconds)
        entry = end_epoch(stats) if end_epoch else {"epoch": epoch, "train_loss": stats.mean_loss}
        history.append(entry)
        improved = False
        if better is not None:
            value = better(entry)
            improved = best is None or value > best[1]
            if improved:
                best = (epoch, value, entry, copy.deepcopy(model.state_dict()))
        line = report(entry, improved) if report else None
        if line is not None:
            log(line)
        if best is not None and patience is not None and epoch - best[0] >= patience:
            reason = "patience"
            break
        if stop or over_budget():
            reason = "time_budget"
            if budget_message is not None:
                log(budget_message(epoch))
            break
    if restore_best and best is not None:
        model.load_state_dict(best[3])
    return LoopResult(history, epoch, reason, best[0] if best else None, best[2] if best else None,
                      best[3] if best else None, started, train_s, samples)
