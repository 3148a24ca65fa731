"""Checkpoints without pickle: trainable tensors and optimiser state in safetensors, the rest in JSON.

A checkpoint is a folder:
  model.safetensors      only the parameters that train (adapters, temporal heads, fusion); the
                         run's config and label set are in its metadata
  optimizer.safetensors  AdamW moments per parameter (keyed by parameter name) and the torch RNG state
  state.json             epoch, step, position in the epoch, best validation score, optimiser hyper-parameters
Folders are written under a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
FORMAT = "finetrain-adapters/1"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model it is loaded into."""


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def save(folder: Path, model, cfg_json: str, labels, state: dict, optimizer=None) -> None:
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    net = _unwrap(model)
    named = {n: p for n, p in net.named_parameters() if p.requires_grad}
    tensors = {n: p.detach().cpu().contiguous() for n, p in named.items()}
    meta = {"format": FORMAT, "config": cfg_json, "labels": json.dumps(list(labels))}
    save_file(tensors, str(tmp / MODEL_FILE), metadata=meta)
    if optimizer is not None:
        ids = {id(p): n for n, p in named.items()}
        opt_tensors = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for key, value in optimizer.state.get(p, {}).items():
                    t = value if torch.is_tensor(value) else torch.tensor(value)
                    opt_tensors[f"state/{ids[id(p)]}/{key}"] = t.detach().cpu().contiguous()
        opt_tensors["rng/torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            opt_tensors["rng/cuda"] = torch.cuda.get_rng_state()
        save_file(opt_tensors, str(tmp / OPTIM_FILE), metadata={"format": FORMAT})
        state = {**state, "param_groups": [
            {k: v for k, v in g.items() if k != "params"} | {"names": [ids[id(p)] for p in g["params"]]}
            for g in optimizer.param_groups
        ]}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


def read_meta(folder: Path) -> dict:
    with safe_open(str(Path(folder) / MODEL_FILE), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: not a finetrain checkpoint (format {meta.get('format')!r})")
    return {"config": json.loads(meta["config"]), "labels": json.loads(meta["labels"])}


def load(folder: Path, model, optimizer=None, device="cpu") -> dict:
    """Load trainable tensors (strictly: same names and shapes) and, if given, the optimiser; return state."""
    folder = Path(folder)
    net = _unwrap(model)
    named = {n: p for n, p in net.named_parameters() if p.requires_grad}
    tensors = load_file(str(folder / MODEL_FILE), device="cpu")
    missing, extra = sorted(set(named) - set(tensors)), sorted(set(tensors) - set(named))
    if missing or extra:
        raise CheckpointError(
            f"{folder}: checkpoint does not match the model ({len(missing)} missing, {len(extra)} unexpected "
            f"tensors, e.g. {(missing + extra)[:2]}); was it trained with another model config?"
        )
    with torch.no_grad():
        for n, p in named.items():
            if p.shape != tensors[n].shape:
                raise CheckpointError(f"{folder}: {n} is {tuple(tensors[n].shape)}, model has {tuple(p.shape)}")
            p.copy_(tensors[n].to(p.device))
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    if optimizer is not None:
        opt = load_file(str(folder / OPTIM_FILE), device="cpu")
        groups = state["param_groups"]
        for group, saved in zip(optimizer.param_groups, groups, strict=True):
            for p, name in zip(group["params"], saved["names"], strict=True):
                prefix = f"state/{name}/"
                entry = {k[len(prefix):]: v for k, v in opt.items() if k.startswith(prefix)}
                if entry:
                    optimizer.state[p] = {k: (v if k == "step" else v.to(p.device)) for k, v in entry.items()}
            for k, v in saved.items():
                if k != "names":
                    group[k] = tuple(v) if k == "betas" else v
        torch.set_rng_state(opt["rng/torch"])
        if "rng/cuda" in opt and torch.cuda.is_available():
            torch.cuda.set_rng_state(opt["rng/cuda"])
    if hasattr(net, "train"):
        net.train(net.training)  # drop cached label embeddings
    return state
