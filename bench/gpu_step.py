"""Clips/s, peak memory and MFU of one training step of a paper config, per memory/speed option.

    python bench/gpu_step.py --out OUT                     # dfew-b16 on cuda: plain, checkpointing, compile, both
    python bench/gpu_step.py --out OUT --smoke             # tiny config on CPU, two variants, one step each

A step is what the training recipe does per batch: forward under bf16 autocast (on GPU), the loss, backward and
AdamW. Random backbone weights (speed does not depend on them) and random float inputs already
normalised, so the loader and the uint8-to-float step are not in the time. Frozen weights are bf16 on
GPU (`model.frozen_dtype: auto`). FLOPs are counted once per config with torch's FlopCounterMode on the
plain model (forward and backward, no recomputation), so MFU = FLOPs / step time / the GPU's dense bf16
peak (from a table of known GPUs, or --peak-tflops); checkpointing's recomputation shows up as a lower
MFU. Each variant's result is written as soon as it is measured (OUT/gpu_step.json, OUT/gpu_step.md), so
a run cut short by a time limit keeps what it finished.

Imports only torch, open_clip, numpy and PyYAML beyond the project's model code: bench/gpu.sh runs it on
a machine with nothing but Python and torch, from the source tree (no install).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"finetrain": "trainer/finetrain", "fineprompts": "prompts", "fineschema": "schemas/fineschema"}
# fineschema.labels.BASIC7, spelled out: importing fineschema pulls in pyarrow, which the bare machine lacks
BASIC7 = ("happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear")
# dense bf16 peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
               "A100": 312.0, "L40S": 362.1, "L40": 181.0, "A10G": 70.0, "A10": 125.0, "L4": 121.0,
               "RTX 4090": 165.2, "RTX 6000 Ada": 364.2, "B200": 2250.0, "GH200": 989.4}
VARIANTS = {"plain": (False, False), "checkpointing": (True, False), "compile": (False, True),
            "checkpointing+compile": (True, True)}
DFEW_TRAIN_CLIPS = 8422  # a DFEW fold's training clips after the 10 % validation split (11,697 x 0.8 x 0.9)


def _project_on_path() -> None:
    """Import the project from the source tree when it is not installed (package names differ from folders)."""
    try:
        import finetrain  # noqa: F401
    except ImportError:
        links = Path(tempfile.mkdtemp(prefix="fineclip-src-"))
        for name, rel in SOURCES.items():
            (links / name).symlink_to(ROOT / rel)
        sys.path.insert(0, str(links))


def peak_tflops(device, given: float | None) -> float | None:
    import torch

    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def make_inputs(model, batch: int, frames: int, device) -> dict:
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    size = model.image_size
    data = {s: torch.randn(batch, frames, 3, size, size, generator=g).to(device)
            for s in model.streams if s in ("frames", "parsing", "landmarks")}
    if "blendshapes" in model.streams:
        data["blendshapes"] = torch.rand(batch, frames, 52, generator=g).to(device)
    if "description" in model.streams:
        text = "the brows draw together and the mouth corners fall while the eyes narrow slightly"
        texts = [text[i % 7:] for i in range(batch)]
        data["description"] = model.tokenizer(texts).to(device)
        data["has_description"] = torch.ones(batch, dtype=torch.bool, device=device)
    data["label"] = torch.arange(batch, device=device) % len(model.labels)
    return data


def build(config: str, checkpointing: bool, compiled: bool, device, frames: int, amp: str):
    import torch

    from finetrain.config import load_config
    from finetrain.model.model import build_model

    cfg = load_config(config, ["model.pretrained=null", f"optim.amp='{amp}'",
                               f"model.grad_checkpointing={str(checkpointing).lower()}"])
    torch.manual_seed(0)
    model = build_model(cfg, BASIC7, frames).to(device).train()
    if amp == "bf16" and device.type == "cuda" and cfg.model.frozen_dtype in ("auto", "bfloat16"):
        model.cast_frozen(torch.bfloat16)
    if compiled:
        model.compile_towers()
    return cfg, model


def step_fn(model, cfg, data, opt, device, amp: str):
    import torch

    from finetrain.model.losses import compute_loss

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            out = model(data)
        loss, _ = compute_loss(out, data["label"], cfg.loss)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def count_flops(model, cfg, data, device, amp: str) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            out = model(data)
        from finetrain.model.losses import compute_loss

        loss, _ = compute_loss(out, data["label"], cfg.loss)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def measure(args, name: str, flops: int | None) -> dict:
    import torch

    device = torch.device(args.device)
    checkpointing, compiled = VARIANTS[name]
    amp = "bf16" if device.type == "cuda" else "off"
    row = {"variant": name, "checkpointing": checkpointing, "compile": compiled}
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        cfg, model = build(args.config, checkpointing, compiled, device, args.frames, amp)
        data = make_inputs(model, args.batch, args.frames, device)
        if flops is None:
            flops = count_flops(model, cfg, data, device, amp)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        step = step_fn(model, cfg, data, opt, device, amp)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        row["warmup_s"] = round(time.perf_counter() - t0, 2)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        times.sort()
        median = times[len(times) // 2]
        peak = peak_tflops(device, args.peak_tflops)
        row.update(step_s=round(median, 4), clips_per_s=round(args.batch / median, 2), flops_per_step=flops,
                   mfu=round(flops / median / (peak * 1e12), 4) if peak else None,
                   peak_memory_gib=round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                   if device.type == "cuda" else None,
                   dfew_epoch_min=round(DFEW_TRAIN_CLIPS / (args.batch / median) / 60, 1)
                   if args.config.startswith("dfew") else None)
        del model, opt, data
    except Exception as exc:  # one failing variant (out of memory, a compile error) must not hide the others
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    finally:
        if compiled:
            torch._dynamo.reset()
    return row, flops


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"`{meta['config']}`, batch {meta['batch']} x {meta['frames']} frames on {meta['device_name']} "
             f"(torch {meta['torch']}, {meta['date']}); random weights and inputs, loader not included.", "",
             "| variant | clips/s | step (s) | peak memory (GiB) | MFU | DFEW fold epoch (min) | note |",
             "|---|---|---|---|---|---|---|"]
    def cell(r: dict, key: str, fmt: str = "{}") -> str:
        return fmt.format(r[key]) if r.get(key) is not None else "-"

    for r in rows:
        lines.append(f"| {r['variant']} | {cell(r, 'clips_per_s')} | {cell(r, 'step_s')} | "
                     f"{cell(r, 'peak_memory_gib')} | {cell(r, 'mfu', '{:.1%}')} | {cell(r, 'dfew_epoch_min')} | "
                     f"{r.get('error', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--config", default="dfew-b16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU, if not known")
    ap.add_argument("--smoke", action="store_true", help="tiny config on CPU, plain and checkpointing, 1 step")
    args = ap.parse_args(argv)
    if args.smoke:
        args.config, args.device, args.batch, args.frames = "tiny", "cpu", 2, 4
        args.steps, args.warmup, args.variants = 1, 1, "plain,checkpointing"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _project_on_path()
    import logging

    import torch

    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "no pretrained weights" line, per variant
    device = torch.device(args.device)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA device here; use --smoke (CPU) or --device cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"config": args.config, "batch": args.batch, "frames": args.frames, "steps": args.steps,
            "device": str(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
            "peak_tflops": peak_tflops(device, args.peak_tflops)}
    rows, flops = [], None
    for name in names:
        row, flops = measure(args, name, flops)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "gpu_step.json").write_text(json.dumps({**meta, "results": rows}, indent=1), encoding="utf-8")
        (args.out / "gpu_step.md").write_text(markdown(meta, rows), encoding="utf-8")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
