"""Checkpoints without pickle: trainable tensors and optimiser state in safetensors, the rest in JSON.

A checkpoint is a folder:
  model.safetensors      only the parameters that train (adapters, temporal heads, fusion); the
                         run's config and label set are in its metadata
  optimizer.safetensors  AdamW moments per parameter (keyed by parameter name) and the torch RNG state
  state.json             epoch, step, position in the epoch, best validation score, optimiser
                         hyper-parameters, and the learning-rate schedule's position (`LambdaLR.state_dict`)
A new checkpoint is written to FOLDER.tmp and fsynced; then FOLDER becomes FOLDER.old, FOLDER.tmp becomes
FOLDER, and FOLDER.old is removed. A kill at any point leaves either FOLDER complete, or (between the two
renames) no FOLDER and a complete FOLDER.old: `recover` puts that one back, so a killed run always resumes
from its last complete checkpoint. Files are read only through safetensors and JSON; anything else is
refused with a one-line `CheckpointError`, never unpickled.

Why the optimiser state is not `torch.save(optimizer.state_dict())` read back with
`torch.load(weights_only=True)`: that would still run the unpickler on a file from disk (a restricted
one, whose allow-list is torch's to change), where safetensors parses a JSON header and raw buffers and
has no code path that builds objects. The hand-written part is small (moments by parameter name, the
group settings in state.json), it survives a change in parameter order, and it lets one refusal message
cover every file of a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from ..errors import FinetrainError

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
FORMAT = "finetrain-adapters/1"


class CheckpointError(FinetrainError, ValueError):
    """A checkpoint that cannot be used: not safetensors, damaged, or not fitting the model it is loaded into."""


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(folder.name + suffix)


def _fsync_tree(folder: Path) -> None:
    """Flush a freshly written folder's files and the folder itself, so a rename publishes whole files."""
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(folder: Path) -> bool:
    """Finish what a killed `save` left: bring back FOLDER.old when FOLDER is gone; drop leftovers otherwise.

    FOLDER.old only exists without FOLDER between save's two renames, and it was the live, complete
    checkpoint until the first of them; FOLDER.tmp may be half written, so it is never used. Returns
    True when FOLDER.old was put back."""
    folder = Path(folder)
    old, tmp = _sibling(folder, ".old"), _sibling(folder, ".tmp")
    restored = False
    if not folder.exists() and (old / MODEL_FILE).is_file():
        try:
            os.replace(old, folder)
            restored = True
        except FileNotFoundError:  # another process of the same run got there first
            pass
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return restored


def _refusal(path: Path, exc: Exception) -> CheckpointError:
    """A one-line reason why a file was not read as safetensors, naming what it looks like."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        return CheckpointError(f"{path}: cannot read the checkpoint ({err.strerror})")
    pickled = head[:2] == b"PK" or head[:1] == b"\x80"  # torch.save's zip, or a bare pickle
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    kind = "it is a PyTorch/pickle file, not safetensors" if pickled else f"not a safetensors file ({reason})"
    return CheckpointError(
        f"{path}: refused: {kind}; finetrain reads checkpoints only as safetensors and never unpickles them "
        "(unpickling can run code); use a checkpoint written by finetrain"
    )


def unreadable_weights(exc: BaseException) -> bool:
    """Whether `exc` is torch's weights-only refusal of a pickle or a safetensors parse error."""
    import pickle

    return isinstance(exc, pickle.UnpicklingError) or type(exc).__name__ == "SafetensorError"


def refuse_pretrained(pretrained: str | None, exc: BaseException) -> CheckpointError:
    """One line for a `model.pretrained` file that open_clip could not read as plain weights.

    torch's own message goes on to explain how to load such a file unsafely; only what was found is kept."""
    import re

    text = str(exc)
    found = re.search(r"GLOBAL (\S+)", text)
    if type(exc).__name__ == "SafetensorError":
        why = f"not a readable safetensors file ({text.splitlines()[0] if text else 'damaged'})"
    else:
        why = ("a pickle that holds more than tensors" + (f" ({found.group(1)})" if found else "")
               + ", and unpickling it could run code")
    return CheckpointError(f"model.pretrained {pretrained}: refused: {why}; give a safetensors file "
                           "(or a .pt holding only a state dict of tensors)")


def read_tensors(path: Path) -> dict:
    """All tensors of a safetensors file on the CPU, or a one-line `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint folder is incomplete")
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, or OSError/ValueError on damaged files
        raise _refusal(path, exc) from None


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """name -> shape of every tensor in a safetensors file, from its header alone."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint folder is incomplete")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: list(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118 - not a mapping
    except Exception as exc:
        raise _refusal(path, exc) from None


def read_state(folder: Path) -> dict:
    path = Path(folder) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; the checkpoint folder is incomplete") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc}); the checkpoint is damaged") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint state (a JSON object was expected)")
    return state


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def save(folder: Path, model, cfg_json: str, labels, state: dict, optimizer=None, extraction: dict | None = None) -> None:
    """Write a checkpoint to FOLDER.tmp, fsync it, then switch it in (see the module docstring).
    `extraction` (`fineschema.ExtractSettings.to_dict()` of the training store) goes into the metadata, so
    `finetrain predict` extracts new videos as the training data was extracted."""
    folder = Path(folder)
    tmp = _sibling(folder, ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    net = _unwrap(model)
    named = {n: p for n, p in net.named_parameters() if p.requires_grad}
    tensors = {n: p.detach().cpu().contiguous() for n, p in named.items()}
    meta = {"format": FORMAT, "config": cfg_json, "labels": json.dumps(list(labels)),
            "extraction": json.dumps(extraction)}
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
    _fsync_tree(tmp)
    old = _sibling(folder, ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    _fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(folder: Path) -> dict:
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint folder is incomplete")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # SafetensorError, or OSError on damaged files
        raise _refusal(path, exc) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: not a finetrain checkpoint (format {meta.get('format')!r})")
    try:
        return {"config": json.loads(meta["config"]), "labels": json.loads(meta["labels"]),
                "extraction": json.loads(meta.get("extraction") or "null")}
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: damaged metadata ({exc}); use a checkpoint written by finetrain") from None


def load(folder: Path, model, optimizer=None, device="cpu") -> dict:
    """Load trainable tensors (strictly: same names and shapes) and, if given, the optimiser; return state."""
    folder = Path(folder)
    net = _unwrap(model)
    named = {n: p for n, p in net.named_parameters() if p.requires_grad}
    tensors = read_tensors(folder / MODEL_FILE)
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
    state = read_state(folder)
    if optimizer is not None:
        opt = read_tensors(folder / OPTIM_FILE)
        groups = state.get("param_groups")
        if not isinstance(groups, list) or "rng/torch" not in opt:
            raise CheckpointError(f"{folder}: holds no optimiser state to resume from (a `best` checkpoint?)")
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
