"""Where a run executes: device, bf16 autocast, seeds, the torchrun process group, and the seeded model.

Shared by the training recipe and by the commands that only evaluate (`crossdata`, `predict`), so that
none of them needs the training loop to pick a device or to build a model the way training built it.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..config import Config, ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto`: this process's GPU under torchrun (LOCAL_RANK), else the CPU; otherwise the named device."""
    if name == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
            return device
        return torch.device("cpu")
    return torch.device(name)


def autocasts_bf16(device: torch.device, amp: str) -> bool:
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def autocast(device: torch.device, amp: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocasts_bf16(device, amp))


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False


def init_distributed() -> tuple[int, int]:
    """(world size, rank); starts the process group when launched by torchrun (WORLD_SIZE > 1)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def gather_rows(x: torch.Tensor, world: int) -> torch.Tensor:
    """The rows of every process, in rank order; only this process's rows carry gradient.

    For a loss over the whole global batch (the zero-shot alignment): each process then computes the
    same loss, and its backward reaches only its own rows, so the gradients DDP averages are 1/world of
    the single-process gradient (the caller scales the loss by `world`)."""
    if world == 1:
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def seeded_model(cfg: Config, info) -> tuple[torch.nn.Module, torch.device, int, int]:
    """Seed, then build the model for the store's labels and frames on the run's device.

    Returns (model, device, trainable parameters, total parameters)."""
    from ..model.model import build_model, count_parameters

    device = resolve_device(cfg.run.device)
    seed_everything(cfg.run.seed)
    frames = min(cfg.data.frames or info.frames, info.frames)
    model = build_model(cfg, info.labels, frames).to(device)
    trainable, total = count_parameters(model)
    prepare_for_device(model, cfg, device)
    return model, device, trainable, total


def prepare_for_device(model, cfg: Config, device: torch.device) -> None:
    """Frozen weights in bf16 where the run autocasts to bf16 (`model.frozen_dtype`), and torch.compile."""
    bf16 = autocasts_bf16(device, cfg.optim.amp)
    dtype = cfg.model.frozen_dtype
    if dtype == "bfloat16" and not bf16:
        raise ConfigError(f"model.frozen_dtype=bfloat16 needs bf16 autocast (optim.amp=bf16, or auto on a GPU); "
                          f"this run has optim.amp={cfg.optim.amp} on {device.type}")
    if dtype == "bfloat16" or (dtype == "auto" and bf16):
        model.cast_frozen(torch.bfloat16)
    if cfg.model.compile:
        model.compile_towers()
