# SPDX-License-Identifier: Apache-2.0
"""torch.compile(fullgraph=True) of training with fused embedding optimizers: an EmbeddingBagCollection step and a
DLRM step (forward and loss compiled; the backward, which runs the fused update, is the compiled backward graph)
match eager for many steps, for every optimizer and the aot_eager and inductor backends, without recompiling
once the batch size of the ids has gone dynamic; the step counter as a tensor (ops, state_dict)."""

import copy

import pytest
import torch
import torch.nn.functional as F

import recops
from recops.data.criteo import sparse_to_kjt
from recops.models.dlrm import DLRM, DLRMConfig
from recops.nn import EmbeddingBagCollection, EmbeddingBagConfig, FusedOptimizer
from recops.ops.embedding import OPTIMIZERS, single_table_meta

KINDS = ["sgd", "adagrad", "rowwise_adagrad", "adam"]
BACKENDS = ["aot_eager", "inductor"]
STEPS = 12
WARMUP = 2  # step 1 compiles with static sizes, step 2 once more with a dynamic number of ids; no more after
B = 6


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def _run_steps(step, steps=STEPS):
    """step(i) for i < steps; every compile after the warm-up raises (error_on_recompile)."""
    for i in range(steps):
        if i < WARMUP:
            step(i)
        else:
            with torch._dynamo.config.patch(error_on_recompile=True):
                step(i)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= WARMUP


def _kjt(tables, gen):
    """A batch of B bags per feature, 1..4 ids a bag (never 0 or 1 ids in all: those sizes specialise)."""
    d = {}
    for t in tables:
        for f in t.feature_names:
            lens = torch.randint(1, 5, (B,), generator=gen)
            off = recops.ops.lengths_to_offsets(lens)
            d[f] = (torch.randint(0, t.num_embeddings, (int(off[-1]),), generator=gen), off)
    return recops.KeyedJagged.from_dict(d)


def _assert_same_state(got: torch.nn.Module, want: torch.nn.Module, **tol):
    sd = want.state_dict()
    assert list(got.state_dict()) == list(sd)
    for k, v in got.state_dict().items():
        torch.testing.assert_close(v, sd[k], **tol, msg=k)


# ---- EmbeddingBagCollection ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_ebc_training_matches_eager_without_recompiles(kind, backend):
    """12 compiled fused steps (max, mean and sum pooling) equal eager's bit for bit: outputs, weights, optimizer
    state and step, also after the counter is set between compiled calls (Adam's bias correction and the
    rounding seed read it inside the update op)."""
    tables = [EmbeddingBagConfig("t0", 40, 8, ["a", "b"], pooling="max"),
              EmbeddingBagConfig("t1", 25, 4, pooling="mean"), EmbeddingBagConfig("t2", 30, 4)]
    ref = EmbeddingBagCollection(tables, optimizer=FusedOptimizer(kind, lr=0.05))
    ebc = copy.deepcopy(ref)
    initial = ref.weights_float32.clone()
    compiled = torch.compile(ebc, fullgraph=True, backend=backend)
    gen = torch.Generator().manual_seed(1)
    exact = dict(atol=0, rtol=0)

    def step(i):
        if i == STEPS - 3:
            ref.step = ebc.step = 1000
        kjt = _kjt(tables, gen)
        g = torch.randn(B, 24, generator=gen)
        want, got = ref(kjt).concat(), compiled(kjt).concat()
        torch.testing.assert_close(got, want, **exact)
        (want * g).sum().backward()
        (got * g).sum().backward()

    _run_steps(step)
    assert ebc.step == ref.step == 1003
    _assert_same_state(ebc, ref, **exact)
    assert not torch.equal(ebc.weights_float32, initial)


def test_compiled_bf16_stochastic_rounding_follows_the_step():
    """bf16 tables round stochastically with a seed drawn from the step: compiled steps use eager's seeds."""
    tables = [EmbeddingBagConfig("t0", 40, 8, ["a", "b"], dtype=torch.bfloat16)]
    ref = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adam", lr=0.05, stochastic_rounding=True,
                                                                  seed=3))
    ebc = copy.deepcopy(ref)
    compiled = torch.compile(ebc, fullgraph=True, backend="aot_eager")
    gen = torch.Generator().manual_seed(2)

    def step(i):
        kjt = _kjt(tables, gen)
        g = torch.randn(B, 16, generator=gen).bfloat16()
        (ref(kjt).concat() * g).sum().backward()
        (compiled(kjt).concat() * g).sum().backward()

    _run_steps(step)
    _assert_same_state(ebc, ref, atol=0, rtol=0)


def test_step_counter_state_dict_entry_is_a_copy():
    """state_dict()["step"] is a 0-d int64 snapshot: writing to it or loading it back leaves the live counter
    alone until load_state_dict; old checkpoints (any 0-d integer step) load."""
    tables = [EmbeddingBagConfig("t", 10, 4)]
    ebc = EmbeddingBagCollection(tables, optimizer=FusedOptimizer("adam", lr=0.1))
    ebc({"t": (torch.tensor([1, 2]), torch.tensor([0, 1, 2]))})["t"].sum().backward()
    sd = ebc.state_dict()
    assert sd["step"].dtype == torch.int64 and sd["step"].shape == () and int(sd["step"]) == 1
    sd["step"].fill_(50)
    assert ebc.step == 1
    ebc.load_state_dict(sd)
    assert ebc.step == 50 and int(sd["step"]) == 50
    ebc.load_state_dict({**sd, "step": torch.tensor(7, dtype=torch.int32)})
    assert ebc.step == 7 and type(ebc.step) is int


# ---- the fused ops' step tensor ----------------------------------------------------------------------------------

def _fused_case(kind):
    w = torch.randn(10, 4)
    idx, off = torch.tensor([1, 2, 2, 7, 9]), torch.tensor([0, 2, 2, 5])
    size0 = {"sgd": 0, "adagrad": 40, "rowwise_adagrad": 10, "adam": 40}[kind]
    s0, s1 = torch.rand(size0), torch.rand(40 if kind == "adam" else 0)
    return (w, single_table_meta(w, 0), idx, off, None, 3, 4, 4, False, "", s0, s1, OPTIMIZERS[kind], 0.1, 1e-8,
            0.9, 0.999)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_step_tensor_equals_the_int_step(kind):
    """The lookup with step_tensor (step then ignored) updates exactly as with the int step, through the eager
    path and the op; opcheck of both ops with the tensor."""
    case = _fused_case(kind)
    results = []
    for lookup in (recops.ops.embedding_bags_fused, lambda *a: recops.ops.embedding_bags_fused_lookup(*a)[0]):
        for step, step_tensor in ((3, None), (0, torch.tensor(3))):
            w, s0, s1 = case[0].clone(), case[10].clone(), case[11].clone()
            args = (torch.empty(0, requires_grad=True), w) + case[1:10] + (s0, s1) + case[12:]
            lookup(*args, step, False, 7, step_tensor).sum().backward()
            results.append((w, s0, s1))
    assert not torch.equal(results[0][0], case[0])
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.library.opcheck(torch.ops.recops.embedding_bags_fused_lookup.default,
                          (torch.empty(0, requires_grad=True),) + case + (0, False, 7, torch.tensor(3)))
    w, meta, idx, off, psw, batch, total, max_dim, need_argmax, names, s0, s1 = case[:12]
    _, argmax = recops.ops.embedding_bags(w, meta, idx, off, psw, batch, total, max_dim, need_argmax, names)
    torch.library.opcheck(torch.ops.recops.embedding_bags_fused_update.default,
                          (torch.randn(batch, total), w, meta, idx, off, psw, argmax, batch, total, max_dim) +
                          case[12:] + (0.0, False, 7, s0, s1, torch.tensor(3)))


def test_bad_step_raises():
    case = _fused_case("adam")
    w, meta, idx, off, psw, batch, total, max_dim, need_argmax, names, s0, s1 = case[:12]
    _, argmax = recops.ops.embedding_bags(w, meta, idx, off, psw, batch, total, max_dim, need_argmax, names)
    before = w.clone()
    for step, err, needle in ((torch.tensor(0), ValueError, "step must be >= 1 \\(1-based\\), got 0"),
                              (torch.tensor(2.0), TypeError, "step must be an integer tensor, got torch.float32"),
                              (torch.tensor([1, 2]), ValueError, "step must have one element, got shape \\(2,\\)")):
        with pytest.raises(err, match="^embedding_bags_fused_update: " + needle):
            recops.ops.embedding_bags_fused_update(torch.randn(batch, total), w, meta, idx, off, psw, argmax, batch,
                                                   total, max_dim, *case[12:], 0.0, False, 7, s0, s1, step)
    assert torch.equal(w, before)


# ---- DLRM --------------------------------------------------------------------------------------------------------

SIZES = (30, 7, 17, 5)


def _dlrm_batch(gen, b=9):
    sparse = torch.stack([torch.randint(0, v, (b,), generator=gen) for v in SIZES], 1)
    sparse[torch.rand(b, len(SIZES), generator=gen) < 0.2] = -1  # empty bags
    sparse[0] = 0  # at least one id per table
    return torch.randn(b, 13, generator=gen), sparse, (torch.rand(b, generator=gen) < 0.4).float()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_dlrm_training_step_matches_eager(kind, backend):
    """DLRM with fused tables: the compiled loss (fullgraph) and its backward, then torch.optim.Adam on the MLPs,
    for 12 steps: losses, MLP weights, tables, optimizer state and step match eager; no recompile after warm-up."""
    cfg = DLRMConfig(list(SIZES), embedding_dim=8, num_dense=13, bottom_mlp=(16, 8), top_mlp=(12,),
                     embedding_optimizer=FusedOptimizer(kind, lr=0.05))
    ref = DLRM(cfg)
    model = copy.deepcopy(ref)
    initial = ref.embeddings.weights_float32.clone()

    def loss_of(m):
        return lambda dense, kjt, labels: F.binary_cross_entropy_with_logits(m(dense, kjt), labels)

    losses = (loss_of(ref), torch.compile(loss_of(model), fullgraph=True, backend=backend))
    opts = [torch.optim.Adam(m.dense_parameters(), lr=1e-2) for m in (ref, model)]
    gen = torch.Generator().manual_seed(3)

    def step(i):
        dense, sparse, labels = _dlrm_batch(gen)
        kjt = sparse_to_kjt(sparse, cfg.sparse_keys)
        values = []
        for loss_fn, opt in zip(losses, opts):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(dense, kjt, labels)
            loss.backward()
            opt.step()
            values.append(loss.detach())
        torch.testing.assert_close(values[1], values[0])

    _run_steps(step)
    assert model.embeddings.step == ref.embeddings.step == STEPS
    _assert_same_state(model, ref)
    assert not torch.allclose(model.embeddings.weights_float32, initial)
