# SPDX-License-Identifier: Apache-2.0
"""Model-level benchmark: HSTU training-step throughput (sequences/s) with the fused recops attention vs
the same model on the padded PyTorch reference attention, same batch, same run; the training step with
per-position negatives (fused sampled softmax, the reference recipe) vs the shared-negative step it replaced;
and SASRec / BERT4Rec on jagged_attention vs the same models on torch SDPA over the padded batch, with HSTU's step
on the same batch as a baseline (ML-1M configuration and length mix)."""

import torch

from ..data.sequences import leave_one_out, next_item_batches, synthetic_sequences, uniform_negatives
from ..models.sequential import HSTU, SeqConfig, build_model, next_item_loss, sampled_softmax_loss
from ..nn.attention import use_torch_dropout
from ..ops.jagged import lengths_to_offsets


def models_cases(device, quick):
    from . import Case

    data = synthetic_sequences(num_users=600 if quick else 2000, num_items=2000, mean_len=60, seed=0)
    split = leave_one_out(data, max_len=200)
    batch = next(next_item_batches(split.train, 128, generator=torch.Generator().manual_seed(0)))
    batch = {k: v.to(device) for k, v in batch.items()}
    num_seqs = batch["offsets"].numel() - 1
    cases = []
    for name, preset in (("HSTU (ML-1M: 2x1, D=50)", "hstu"), ("HSTU-large (8x2x25)", "hstu-large")):
        if quick and preset == "hstu-large":
            continue
        cfg = SeqConfig.preset(preset)
        torch.manual_seed(0)
        model = HSTU(data.num_items, cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas)
        negs = uniform_negatives(cfg.num_negatives, data.num_items, torch.Generator().manual_seed(1)).to(device)

        def step(model=model, opt=opt, cfg=cfg, negs=negs, reference=False):
            model.use_reference_attention(reference)
            out = model(batch["items"], batch["offsets"], batch["timestamps"])
            loss = sampled_softmax_loss(out, batch["targets"], model.item_vectors(), negs, cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        cases.append(Case("train step", f"{name}, B={num_seqs}, L={batch['items'].numel()}", {
            "recops": lambda step=step: step(reference=False),
            "padded_ref": lambda step=step: step(reference=True),
        }, sequences=num_seqs))
    # Negatives: the per-position fused step (default recipe) vs the shared-negative eager step it replaced.
    cfg = SeqConfig.preset("hstu")
    torch.manual_seed(0)
    model = HSTU(data.num_items, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    gen = torch.Generator().manual_seed(1)

    def loss_step(per_position: bool):
        out = model(batch["items"], batch["offsets"], batch["timestamps"])
        if per_position:
            loss = next_item_loss(out, batch["targets"], model.item_vectors(), cfg, gen)
        else:
            negs = uniform_negatives(cfg.num_negatives, data.num_items, gen).to(device)
            loss = sampled_softmax_loss(out, batch["targets"], model.item_vectors(), negs, cfg.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    cases.append(Case("train step, negatives", f"HSTU 2x1 D=50, M={cfg.num_negatives}, B={num_seqs}, "
                      f"L={batch['items'].numel()}, V={data.num_items}", {
                          "recops": lambda: loss_step(True),  # per position, fused
                          "shared_eager": lambda: loss_step(False),
                      }, sequences=num_seqs))
    cases += transformer_cases(device, quick)
    return cases


def ml1m_batch(device, batch_size=128, num_items=3706, seed=0):
    """A next-item batch with ML-1M's shape: B=128 histories of at least 20 items (median ~96, capped at 200)."""
    from .hstu import lengths_for

    g = torch.Generator().manual_seed(seed)
    lengths = lengths_for("ml1m", batch_size, 200, g)
    offsets = lengths_to_offsets(lengths)
    total = int(offsets[-1])
    batch = {"items": torch.randint(0, num_items, (total,), generator=g), "offsets": offsets,
             "targets": torch.randint(0, num_items, (total,), generator=g),
             "timestamps": torch.sort(torch.randint(0, 10**9, (total,), generator=g)).values}
    return {k: v.to(device) for k, v in batch.items()}, num_items


def transformer_cases(device, quick):
    """Training steps (forward, next-item loss, backward, AdamW) at the ML-1M configuration: each transformer on
    recops.ops.jagged_attention ("recops") against itself on padded SDPA and against HSTU on the same batch."""
    from . import Case

    batch, num_items = ml1m_batch(device)
    num_seqs = batch["offsets"].numel() - 1
    gen = torch.Generator().manual_seed(1)
    steps = {}
    for preset in ("hstu", "sasrec", "bert4rec"):
        cfg = SeqConfig.preset(preset)
        torch.manual_seed(0)
        model = build_model(num_items, cfg).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas)

        def step(model=model, opt=opt, cfg=cfg, padded=False, torch_dropout=False):
            if hasattr(model, "use_padded_sdpa"):
                model.use_padded_sdpa(padded)
            use_torch_dropout(model, torch_dropout)
            out, targets = model.training_outputs(batch, device, gen)
            loss = next_item_loss(out, targets, model.item_vectors(), cfg, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[preset] = step
    shape = f"ML-1M config 2 layers D=50, B={num_seqs}, L={batch['items'].numel()}"
    cases = []
    for name, preset in (("SASRec", "sasrec"), ("BERT4Rec", "bert4rec")):
        if quick and preset == "bert4rec":
            continue
        # before: the model as it was (padded SDPA, torch's dropout); padded_sdpa: only the attention swapped back
        cases.append(Case(f"train step, {name}", shape, {
            "recops": lambda s=steps[preset]: s(),
            "before_padded_sdpa_torch_dropout": lambda s=steps[preset]: s(padded=True, torch_dropout=True),
            "padded_sdpa": lambda s=steps[preset]: s(padded=True),
            "hstu_recops": steps["hstu"],
        }, sequences=num_seqs))
    return cases
