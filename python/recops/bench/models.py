# SPDX-License-Identifier: Apache-2.0
"""Model-level benchmark: HSTU training-step throughput (sequences/s) with the fused recops attention vs
the same model on the padded PyTorch reference attention, same batch, same run; and the training step with
per-position negatives (fused sampled softmax, the reference recipe) vs the shared-negative step it replaced."""

import torch

from ..data.sequences import leave_one_out, next_item_batches, synthetic_sequences, uniform_negatives
from ..models.sequential import HSTU, SeqConfig, next_item_loss, sampled_softmax_loss


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
    return cases
