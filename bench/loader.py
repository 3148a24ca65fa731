"""Clips per second the trainer's Dataset delivers: frames plus rendered parsing overlay and landmark
dots (and blendshapes), with training augmentation, through a DataLoader with 0, 1 and 2 workers.

    .venv/bin/python bench/loader.py [--store STORE] [--frames 16] [--stored 48] [--size 224] [--clips 48]

Without --store it writes a toy store (`tests/toy_store.py`; random-noise frames, which compress worse
than faces) of `--clips` clips of `--stored` frames (default: `--frames`) at `--size` px into a temporary
folder. The Dataset reads `--frames` of them per clip (one per segment, random as in training), so
`--frames 16 --stored 48` measures what temporal augmentation costs against `--stored 16`.
Target: >= 50 clips/s per core.

The DataLoader is built as the trainer builds it (workers re-started every epoch, prefetch 2), once
with torch's default collate and once with the trainer's shared-memory batch pool, side by side. Each
epoch's rate counts the CPU time of all processes, worker start-up included; "steady" leaves out
start-up: it compares the epoch with one of a single batch per worker. Load averages are printed,
since other jobs on the machine slow memory-bound work even in CPU time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # toy_store, the trainer's test fixture


def main(store: Path = typer.Option(None, help="An existing store (default: a toy store written here)."),
         frames: int = typer.Option(16, help="Frames per clip the Dataset reads."),
         stored: int = typer.Option(None, help="Frames per clip of the toy store (default: --frames)."),
         size: int = typer.Option(224), clips: int = typer.Option(48),
         image_size: int = typer.Option(224, help="Model input size the clips are resized to."),
         workers: str = typer.Option("0,1,2"), batch_size: int = typer.Option(8), repeats: int = typer.Option(2)):
    import torch
    from toy_store import write_toy_store

    from finetrain.config import DataConfig
    from finetrain.data.store import StoreDataset, StoreInfo

    torch.set_num_threads(1)
    tmp = None
    if store is None:
        tmp = tempfile.TemporaryDirectory()
        store = write_toy_store(Path(tmp.name) / "store", clips_per_class=max(1, clips // 7), frames=stored or frames,
                                size=size)
    info = StoreInfo.open(store)
    cfg = DataConfig(frames=frames)
    ds = StoreDataset(info, range(len(info)), image_size=image_size, frames=frames, train=True, data_cfg=cfg,
                      streams=("frames", "parsing", "landmarks", "blendshapes"))
    print(f"store {store}: {len(info)} clips, {info.frames} frames of {info.size} px -> {frames} x {image_size} px; "
          f"{os.cpu_count()} CPUs; load average {_load()}")
    _steps(ds)
    from finetrain.data.batchpool import image_shapes

    shapes = image_shapes(ds)
    for w in [int(x) for x in workers.split(",")]:
        first = min(len(ds), batch_size * max(w, 1))
        rates = {}
        for mode in ("torch collate", "shared pool") if w else ("in-process",):
            pooled = shapes if mode == "shared pool" else {}
            # one loader per run, as the trainer keeps its loaders across epochs (workers restart)
            whole = _loader(ds, w, batch_size, pooled)
            head = _loader(torch.utils.data.Subset(ds, range(first)), w, batch_size, pooled)
            best, best_cpu, best_steady, start_cpu = 0.0, 0.0, 0.0, float("inf")
            for r in range(repeats):
                ds.set_epoch(r)
                n1, _, cpu1 = _epoch(head)
                n, wall, cpu = _epoch(whole)
                best, best_cpu = max(best, n / wall), max(best_cpu, n / cpu)
                if cpu > cpu1 and n > n1:
                    best_steady = max(best_steady, (n - n1) / (cpu - cpu1))
                start_cpu = min(start_cpu, cpu1 - n1 * cpu / n)
            rates[mode] = best_cpu
            print(f"workers={w}, {mode}: {best:.1f} clips/s wall, {best_cpu:.1f} clips per CPU-second (all "
                  f"processes, {len(ds)} clips); steady {best_steady:.1f} clips per CPU-second; start-up "
                  f"~{max(start_cpu, 0) * 1000:.0f} ms CPU")
            del whole, head
        if len(rates) == 2:
            print(f"workers={w}: shared pool / torch collate = {rates['shared pool'] / rates['torch collate']:.2f}x "
                  f"clips per CPU-second")
    _overlay_ratio(frames, image_size)
    print(f"load average {_load()}")
    if tmp is not None:
        tmp.cleanup()


def _loader(dataset, workers: int, batch_size: int, pooled: dict):
    """A trainer-like DataLoader: workers restarted every epoch, prefetch 2, pooled streams or none."""
    import torch

    from finetrain.data.batchpool import PooledDataLoader

    sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(dataset), batch_size, drop_last=False)
    return PooledDataLoader(dataset, batch_sampler=sampler, num_workers=workers, pooled=pooled)


def _epoch(loader) -> tuple[int, float, float]:
    """(clips, wall seconds, CPU seconds of all processes) of one epoch of `loader`."""
    cpu0 = _cpu_seconds()
    start, n, batch = time.perf_counter(), 0, None
    it = iter(loader)
    for batch in it:
        n += batch["frames"].shape[0]
    del batch, it  # joins the workers, so their CPU time is counted
    return n, time.perf_counter() - start, _cpu_seconds() - cpu0


def _steps(ds, clips: int = 24) -> None:
    """Median CPU ms per clip of each step of `StoreDataset.__getitem__`, and of the whole call."""
    import numpy as np
    import torch

    from finetrain.data.render import landmark_dots, parsing_overlay
    from finetrain.data.store import frame_positions, resize_classes, resize_frames

    times: dict[str, list[float]] = {}

    def step(name, fn, *args):
        start = time.process_time()
        out = fn(*args)
        times.setdefault(name, []).append(time.process_time() - start)
        return out

    names = ("frames", "parsing", "landmarks", "face_found", "blendshapes")
    size, cfg = ds.image_size, ds.cfg
    for i in [i % len(ds) for i in range(clips + 1)]:
        rng = np.random.default_rng([ds.seed, ds.epoch, i])
        pick = frame_positions(ds.info.frames, ds.frames, rng, np.flatnonzero(ds.info.distinct[i]))
        clip = step("read", ds._read, int(ds.info.store_index[i]), pick, names)
        s = clip["frames"].shape[1]
        crop = ds._crop(s, rng)
        frames = step("frames", resize_frames, clip["frames"], *crop[:3], size, crop[3])
        parsing = torch.from_numpy(step("parsing", resize_classes, clip["parsing"], *crop[:3], size, crop[3]))
        step("overlay", parsing_overlay, frames, parsing, cfg.overlay_alpha)
        pts = (clip["landmarks"][..., :2] * s - np.array(crop[:2], dtype=np.float32)) / crop[2]
        if crop[3]:
            pts[..., 0] = 1.0 - pts[..., 0]
        valid = torch.from_numpy(np.array(clip["face_found"]))
        step("dots", landmark_dots, frames, torch.from_numpy(pts), valid, cfg.landmark_radius)
        step("__getitem__", ds.__getitem__, i)
    med = {k: float(np.median(v[1:])) * 1000 for k, v in times.items()}  # the first call opens the store
    parts = " | ".join(f"{k} {v:.2f}" for k, v in med.items() if k != "__getitem__")
    print(f"in-process, median CPU ms per clip: {parts} | __getitem__ {med['__getitem__']:.2f} "
          f"({1000 / med['__getitem__']:.1f} clips per CPU-second)")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _overlay_ratio(frames: int, size: int, repeats: int = 10) -> None:
    """The parsing overlay by table lookup (what the Dataset uses) against a plain blend in torch."""
    import torch

    from finetrain.data.render import PALETTE, parsing_overlay

    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8, generator=g)
    cls = torch.randint(0, len(PALETTE), (frames, size, size), dtype=torch.uint8, generator=g)

    def blend():
        colours = PALETTE[cls.long()].permute(0, 3, 1, 2)
        mixed = (img.to(torch.int16) * 128 + colours * 128) >> 8
        return torch.where((cls > 0).unsqueeze(1), mixed.to(torch.uint8), img)

    assert torch.equal(blend(), parsing_overlay(img, cls))
    out = {}
    for name, fn in (("lookup table", lambda: parsing_overlay(img, cls)), ("torch blend", blend)):
        start = time.process_time()
        for _ in range(repeats):
            fn()
        out[name] = (time.process_time() - start) / repeats * 1000
    print(f"parsing overlay, {frames} x {size} px: lookup table {out['lookup table']:.1f} ms, torch blend "
          f"{out['torch blend']:.1f} ms CPU ({out['torch blend'] / out['lookup table']:.1f}x)")


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the DataLoader workers):
    a per-core rate that stays honest when other jobs share the machine."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    typer.run(main)
