# SPDX-License-Identifier: Apache-2.0
"""Every trainer refuses, before its first step, a setting no run can train with (loop.check_settings) and data
without anything to evaluate on; before, these trained nothing and reported zero or NaN metrics."""

import dataclasses

import pytest
import torch

from recops.data import DataError
from recops.data.criteo import CTRData, synthetic_criteo
from recops.data.multibehavior import split_feedback, synthetic_feedback
from recops.data.sequences import leave_one_out, synthetic_sequences
from recops.models.dlrm import DLRMConfig
from recops.models.sequential import SeqConfig, build_model
from recops.train.ctr import CTR_MODELS, fit_ctr
from recops.train.sequential import fit
from recops.train.two_tower import build_two_tower, fit_two_tower


def _frozen(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs,cfg,message", [
    ({"epochs": 0}, {}, "fit: epochs must be an int >= 1, got 0"),
    ({"epochs": -1}, {}, "fit: epochs must be an int >= 1, got -1"),
    ({"patience": -1}, {}, "fit: patience must be an int >= 0, got -1"),
    ({"time_budget_s": 0}, {}, "fit: time_budget_s must be a finite number > 0, got 0"),
    ({}, {"batch_size": 0}, "fit: batch_size must be an int >= 1, got 0"),
    ({}, {"batch_size": -4}, "fit: batch_size must be an int >= 1, got -4"),
    ({}, {"num_negatives": 0}, "fit: num_negatives must be an int >= 1, got 0"),
    ({}, {"max_len": 0}, "fit: max_len must be an int >= 1, got 0"),
])
def test_sequential_fit_settings(kwargs, cfg, message):
    split = leave_one_out(synthetic_sequences(20, 30, 6, seed=0), 5)
    model = build_model(30, SeqConfig.preset("sasrec", dim=8, max_len=5, num_negatives=4, batch_size=8))
    config = SeqConfig.preset("sasrec", **{"dim": 8, "max_len": 5, "num_negatives": 4, "batch_size": 8, **cfg})
    before = _frozen(model)
    with pytest.raises(ValueError, match=message):
        fit(model, split, config, **{"epochs": 1, "progress": False, **kwargs})
    assert _unchanged(model, before)


def test_sequential_fit_needs_a_user_to_evaluate():
    empty = leave_one_out(_first_two(synthetic_sequences(5, 30, 6, seed=0)), 5)
    assert empty.test_input.num_users == 0
    cfg = SeqConfig.preset("sasrec", dim=8, max_len=5, num_negatives=4)
    with pytest.raises(DataError, match="fit: leave-one-out needs a user with 3 or more interactions, got 5 users"):
        fit(build_model(30, cfg), empty, cfg, epochs=1, progress=False)


def _first_two(data):
    """`data` with every user cut to their first 2 items (nothing left for leave-one-out)."""
    keep = torch.cat([torch.arange(int(s), min(int(s) + 2, int(e))) for s, e in zip(data.offsets[:-1],
                                                                                    data.offsets[1:])])
    lengths = (data.offsets[1:] - data.offsets[:-1]).clamp(max=2)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    return dataclasses.replace(data, items=data.items[keep], offsets=offsets, timestamps=data.timestamps[keep])


@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": 0}, "fit_ctr: epochs must be an int >= 1, got 0"),
    ({"batch_size": 0}, "fit_ctr: batch_size must be an int >= 1, got 0"),
    ({"dense_lr": float("nan")}, "fit_ctr: dense_lr must be a finite number > 0, got nan"),
    ({"time_budget_s": -1.0}, "fit_ctr: time_budget_s must be a finite number > 0, got -1.0"),
])
def test_ctr_fit_settings(kwargs, message):
    s = synthetic_criteo(64, 16, table_sizes=10, seed=0)
    data = CTRData(lambda bs: [s.train], lambda bs: [s.test], s.table_sizes, 64, 16)
    model = CTR_MODELS["logistic"](DLRMConfig(s.table_sizes, embedding_dim=4, bottom_mlp=(4,), top_mlp=(4,)))
    before = _frozen(model)
    with pytest.raises(ValueError, match=message):
        fit_ctr(model, data, **{"epochs": 1, "progress": False, **kwargs})
    assert _unchanged(model, before)


@pytest.mark.parametrize("kwargs,message", [
    ({"epochs": 0}, "fit_two_tower: epochs must be an int >= 1, got 0"),
    ({"batch_size": -1}, "fit_two_tower: batch_size must be an int >= 1, got -1"),
    ({"uniform_negatives": -1}, "fit_two_tower: uniform_negatives must be an int >= 0, got -1"),
    ({"eval_every": -2}, "fit_two_tower: eval_every must be an int >= 0, got -2"),
])
def test_two_tower_fit_settings(kwargs, message):
    train, test = split_feedback(synthetic_feedback(30, 20, interactions_per_user=4, seed=0), 0.2, 0)
    model = build_two_tower("gnolr", train, embedding_dim=4, head_dim=4, hidden=(8,))
    before = _frozen(model)
    with pytest.raises(ValueError, match=message):
        fit_two_tower(model, train, test, **{"epochs": 1, "progress": False, **kwargs})
    assert _unchanged(model, before)
    with pytest.raises(DataError, match="fit_two_tower: the split held out no"):
        fit_two_tower(model, train, test.subset(torch.zeros(len(test), dtype=torch.bool)), epochs=1, progress=False)
