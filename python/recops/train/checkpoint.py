# SPDX-License-Identifier: Apache-2.0
"""One checkpoint format for every model family: a folder with

- config.json: {"format_version": 2, "family": "sequential" | "ctr" | "two_tower", "model": the model kind its
  builder takes ("hstu", "sasrec", "dlrm", "logistic", "gnolr", "bce"), "config": the model config, and what
  else the family needs to rebuild the model ("num_items" for the sequential models)};
- model.pt: the state_dict (a fused embedding optimizer's state included), loaded with weights_only=True;
- optimizer.pt (optional): the dense optimizer's state_dict;
- id_maps.npz (optional, sequential): raw ids of the dense item / user ids;
- metrics.json (optional): the run's metrics, with the data spec `recops eval` re-reads.

The two layouts written before (sequential: config.json {"config", "num_items"} without a family; ranking and
two-tower: {"family", "model", "config"} without a version) are recognised and read as this one."""

import dataclasses
import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

FORMAT_VERSION = 2
FAMILIES = ("sequential", "ctr", "two_tower")


def _seq_config(raw: dict):
    from ..models.sequential import SeqConfig

    raw = dict(raw)
    raw["betas"] = tuple(raw["betas"])
    return SeqConfig(**raw)


def _seq_model(kind: str, cfg, spec: dict):
    from ..models.sequential import build_model

    return build_model(int(spec["num_items"]), cfg)


def _ctr_config(raw: dict):
    from ..models.dlrm import DLRMConfig

    return DLRMConfig.from_dict(raw)


def _ctr_model(kind: str, cfg, spec: dict):
    from .ctr import CTR_MODELS

    return _pick(CTR_MODELS, kind, "ctr")(cfg)


def _two_tower_config(raw: dict):
    from ..models.two_tower import TwoTowerConfig

    return TwoTowerConfig.from_dict(raw)


def _two_tower_model(kind: str, cfg, spec: dict):
    from ..models.two_tower import TWO_TOWER_MODELS

    return _pick(TWO_TOWER_MODELS, kind, "two_tower")(cfg)


def _pick(builders: Dict[str, Callable], kind: str, family: str):
    if kind not in builders:
        raise ValueError(f"checkpoint: family {family!r} has no model {kind!r} (one of {sorted(builders)})")
    return builders[kind]


# family -> (config dict -> config object, (kind, config, spec) -> model)
_BUILDERS: Dict[str, Tuple[Callable[[dict], Any], Callable[[str, Any, dict], torch.nn.Module]]] = {
    "sequential": (_seq_config, _seq_model),
    "ctr": (_ctr_config, _ctr_model),
    "two_tower": (_two_tower_config, _two_tower_model),
}


def config_dict(config) -> dict:
    """A model config as JSON-ready data (its to_dict() when it has one, else dataclasses.asdict)."""
    return config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)


def save(path: str, model: torch.nn.Module, family: str, kind: str, config, *, metrics: Optional[dict] = None,
         optimizer: Optional[torch.optim.Optimizer] = None, extra: Optional[Dict[str, Any]] = None,
         arrays: Optional[Dict[str, Dict[str, np.ndarray]]] = None) -> None:
    """Write `model` (rebuilt on load from `family`, `kind` and `config`) into the folder `path`. extra: more
    config.json fields the family's builder reads (sequential: num_items); arrays: name -> {key: array}, written
    as name.npz."""
    if family not in FAMILIES:
        raise ValueError(f"checkpoint.save: family must be one of {FAMILIES}, got {family!r}")
    os.makedirs(path, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(path, "model.pt"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
    spec = {"format_version": FORMAT_VERSION, "family": family, "model": kind, "config": config_dict(config),
            **(extra or {})}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(spec, f, indent=2)
    for name, values in (arrays or {}).items():
        np.savez(os.path.join(path, f"{name}.npz"), **values)
    if metrics is not None:
        with open(os.path.join(path, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)


def normalise_spec(spec: dict) -> dict:
    """config.json of any layout written so far, as the current layout (with "layout" saying which it was:
    "current", "legacy-sequential" or "legacy-family"); ValueError when it is none of them."""
    if "format_version" in spec:
        if spec["format_version"] > FORMAT_VERSION:
            raise ValueError(f"checkpoint format {spec['format_version']} is newer than this recops reads "
                             f"({FORMAT_VERSION})")
        out = dict(spec, layout="current")
    elif "family" in spec and "model" in spec and "config" in spec:  # ranking / two-tower, before the version
        out = dict(spec, format_version=FORMAT_VERSION, layout="legacy-family")
    elif "family" not in spec and "num_items" in spec and isinstance(spec.get("config"), dict) \
            and "model" in spec["config"]:  # sequential: the config names its model, no family
        out = {"format_version": FORMAT_VERSION, "family": "sequential", "model": spec["config"]["model"],
               "config": spec["config"], "num_items": spec["num_items"], "layout": "legacy-sequential"}
    else:
        raise ValueError("not a recops checkpoint config (no family, model and config)")
    if out["family"] not in FAMILIES:
        raise ValueError(f"checkpoint family {out['family']!r} is not one of {FAMILIES}")
    return out


def find(path: str) -> str:
    """The checkpoint folder: `path` itself, or the one checkpoint inside a run folder (train --out)."""
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    subs = sorted(d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, "config.json")))
    if len(subs) != 1:
        raise ValueError(f"{path} holds checkpoints {subs}; pass one of them")
    return os.path.join(path, subs[0])


def read_spec(path: str) -> dict:
    """The normalised config.json of the checkpoint folder `path` (no weights read)."""
    with open(os.path.join(path, "config.json")) as f:
        return normalise_spec(json.load(f))


@dataclasses.dataclass
class Checkpoint:
    path: str
    family: str
    kind: str                          # the model kind ("hstu", "dlrm", "gnolr", ...)
    model: torch.nn.Module
    config: Any                        # SeqConfig / DLRMConfig / TwoTowerConfig
    spec: dict                         # config.json in the current layout (plus "layout")
    metrics: Optional[dict]
    optimizer_state: Optional[dict]
    arrays: Dict[str, Dict[str, np.ndarray]]


def load(path: str, device="cpu", family: Optional[str] = None) -> Checkpoint:
    """Rebuild the model saved in `path` (any layout) on `device`; with `family`, ValueError when the checkpoint
    is of another family. Tensors only (weights_only=True), no pickled code."""
    spec = read_spec(path)
    if family is not None and spec["family"] != family:
        raise ValueError(f"{path} is a {spec['family']} checkpoint, not {family}")
    make_config, make_model = _BUILDERS[spec["family"]]
    config = make_config(spec["config"])
    model = make_model(spec["model"], config, spec).to(device)
    model.load_state_dict(torch.load(os.path.join(path, "model.pt"), map_location=device, weights_only=True))
    opt_path = os.path.join(path, "optimizer.pt")
    opt_state = torch.load(opt_path, map_location=device, weights_only=True) if os.path.exists(opt_path) else None
    arrays = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".npz"):
            with np.load(os.path.join(path, name)) as z:
                arrays[name[:-4]] = {k: z[k] for k in z.files}
    metrics = None
    if os.path.exists(os.path.join(path, "metrics.json")):
        with open(os.path.join(path, "metrics.json")) as f:
            metrics = json.load(f)
    return Checkpoint(path, spec["family"], spec["model"], model, config, spec, metrics, opt_state, arrays)
