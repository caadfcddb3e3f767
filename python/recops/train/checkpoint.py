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
two-tower: {"family", "model", "config"} without a version) are recognised and read as this one.

A folder that cannot be read (a part missing, truncated or not what its name says, weights that do not fit the
config) raises ValueError "<file>: <problem>" naming the part, whatever the underlying library raised."""

import contextlib
import dataclasses
import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

FORMAT_VERSION = 2
FAMILIES = ("sequential", "ctr", "two_tower")
FILES = ("config.json", "model.pt", "optimizer.pt", "id_maps.npz", "metrics.json")  # what save may write


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
    if not isinstance(spec, dict):
        raise ValueError(f"not a recops checkpoint config (a JSON object), got {type(spec).__name__}")
    if "format_version" in spec:
        if not isinstance(spec["format_version"], int):
            raise ValueError(f"checkpoint format_version must be an int, got {spec['format_version']!r}")
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
    if not isinstance(out["family"], str) or out["family"] not in FAMILIES:
        raise ValueError(f"checkpoint family {out['family']!r} is not one of {FAMILIES}")
    return out


def find(path: str) -> str:
    """The checkpoint folder: `path` itself, or the one checkpoint inside a run folder (train --out)."""
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no checkpoint there (no such folder)")
    subs = sorted(d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, "config.json")))
    if not subs:
        raise ValueError(f"{path}: no checkpoint there (no config.json in it or in a subfolder)")
    if len(subs) > 1:
        raise ValueError(f"{path} holds checkpoints {subs}; pass one of them")
    return os.path.join(path, subs[0])


@contextlib.contextmanager
def _reading(file: str, problem: str):
    """Re-raise any failure inside as ValueError "<file>: missing" or "<file>: <problem> (<cause>)", chained to
    the original: what a damaged checkpoint part makes torch, numpy or json raise varies, the problem does not."""
    try:
        yield
    except FileNotFoundError as e:
        raise ValueError(f"{file}: missing") from e
    except Exception as e:
        cause = " ".join(str(e).split())
        cause = f"{type(e).__name__}: {cause[:200]}{'...' if len(cause) > 200 else ''}" if cause else type(e).__name__
        raise ValueError(f"{file}: {problem} ({cause})") from e


def _json(file: str):
    with _reading(file, "is not a JSON file"), open(file, encoding="utf-8") as f:
        return json.load(f)


def read_spec(path: str) -> dict:
    """The normalised config.json of the checkpoint folder `path` (no weights read)."""
    file = os.path.join(path, "config.json")
    raw = _json(file)
    try:
        return normalise_spec(raw)
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from None


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
    is of another family. Tensors only (weights_only=True), no pickled code. ValueError "<file>: <problem>" when
    a part is missing (config.json, model.pt), unreadable or truncated, or the weights do not fit the config."""
    spec = read_spec(path)
    if family is not None and spec["family"] != family:
        raise ValueError(f"{path} is a {spec['family']} checkpoint, not {family}")
    make_config, make_model = _BUILDERS[spec["family"]]
    with _reading(os.path.join(path, "config.json"), f"does not describe a {spec['family']} model"):
        config = make_config(spec["config"])
        model = make_model(spec["model"], config, spec)
    model = model.to(device)
    weights = os.path.join(path, "model.pt")
    with _reading(weights, "is not a readable torch file (truncated?)"):
        state = torch.load(weights, map_location=device, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{weights}: must hold a state_dict, got {type(state).__name__}")
    with _reading(weights, "does not match the model config.json describes"):
        model.load_state_dict(state)
    opt_path = os.path.join(path, "optimizer.pt")
    opt_state = None
    if os.path.exists(opt_path):
        with _reading(opt_path, "is not a readable torch file (truncated?)"):
            opt_state = torch.load(opt_path, map_location=device, weights_only=True)
    arrays = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".npz"):
            with _reading(os.path.join(path, name), "is not a readable .npz file (truncated?)"), \
                    np.load(os.path.join(path, name)) as z:
                arrays[name[:-4]] = {k: z[k] for k in z.files}
    metrics_path = os.path.join(path, "metrics.json")
    metrics = _json(metrics_path) if os.path.exists(metrics_path) else None
    return Checkpoint(path, spec["family"], spec["model"], model, config, spec, metrics, opt_state, arrays)
