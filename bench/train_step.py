"""Time and peak memory of one optimiser step (forward, backward, AdamW) of FineCLIPER.

    .venv/bin/python bench/train_step.py                      # tiny config on CPU
    .venv/bin/python bench/train_step.py --config default --device cuda --batch 8 --frames 16

Random backbone weights (pretrained=None) and random inputs: speed and memory do not depend on the
weights. CPU-seconds per step (all threads) stay comparable when other jobs share the machine;
wall time does not. Peak memory is torch.cuda.max_memory_allocated on GPU, and the growth of the process's
peak RSS over the model build on CPU.
"""

from __future__ import annotations

import os
import resource
import time

import typer


def main(config: str = typer.Option("tiny"), device: str = typer.Option("cpu"),
         batch: int = typer.Option(8), frames: int = typer.Option(None, help="Frames per clip (default: config)."),
         steps: int = typer.Option(5), warmup: int = typer.Option(2), threads: int = typer.Option(2),
         streams: str = typer.Option(None, help="Comma-separated streams (default: config minus description)."),
         amp: str = typer.Option("auto")):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from fineschema.labels import BASIC7
    from finetrain.config import load_config
    from finetrain.model.losses import compute_loss
    from finetrain.model.model import build_model, count_parameters
    from finetrain.train.recipe import param_groups
    from finetrain.train.runtime import autocast

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    overrides = ["model.pretrained=null"]
    if streams:
        overrides.append(f"model.streams=[{streams}]")
    cfg = load_config(config, overrides)
    if not streams:
        cfg.model.streams = [s for s in cfg.model.streams if s != "description"]
    t = frames or cfg.data.frames or 16
    dev = torch.device(device)
    model = build_model(cfg, BASIC7, t).to(dev).train()
    trainable, total = count_parameters(model)
    opt = torch.optim.AdamW(param_groups(model), lr=1e-4)
    size = model.image_size
    data = {s: torch.randint(0, 256, (batch, t, 3, size, size), dtype=torch.uint8, device=dev)
            for s in model.streams if s in ("frames", "parsing", "landmarks")}
    data["blendshapes"] = torch.rand(batch, t, 52, device=dev)
    data["label"] = torch.randint(0, 7, (batch,), device=dev)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, cpu = [], []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start, cpu0 = time.perf_counter(), time.process_time()
        with autocast(dev, amp):
            out = model(data)
        loss, _ = compute_loss(out, data["label"], cfg.loss)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu0)
    times.sort()
    cpu.sort()
    if dev.type == "cuda":
        peak = f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB"
    else:
        peak = f"peak RSS growth {(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 2**20:.2f} GiB"
    print(f"{cfg.model.backbone} on {dev} ({torch.get_num_threads()} threads), streams {','.join(model.streams)}, "
          f"batch {batch} x {t} frames x {size} px: {trainable:,} trainable / {total:,} params; "
          f"step median {times[len(times) // 2]:.3f} s wall (min {times[0]:.3f}), "
          f"{cpu[len(cpu) // 2]:.3f} CPU-s; {peak}")


if __name__ == "__main__":
    typer.run(main)
