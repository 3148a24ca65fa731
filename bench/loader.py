"""Clips per second the trainer's Dataset delivers: frames plus rendered parsing overlay and landmark
dots (and blendshapes), with training augmentation, through a DataLoader with 0, 1 and 2 workers.

    .venv/bin/python bench/loader.py [--store STORE] [--frames 16] [--size 224] [--clips 48]

Without --store it writes a toy store (random-noise frames, which compress worse than faces) of
`--clips` clips at the given frames/size into a temporary folder. Target: >= 50 clips/s per core.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import typer


def main(store: Path = typer.Option(None, help="An existing store (default: a toy store written here)."),
         frames: int = typer.Option(16), size: int = typer.Option(224), clips: int = typer.Option(48),
         image_size: int = typer.Option(224, help="Model input size the clips are resized to."),
         workers: str = typer.Option("0,1,2"), batch_size: int = typer.Option(8), repeats: int = typer.Option(2)):
    import torch

    from finetrain.config import DataConfig
    from finetrain.data import StoreDataset, StoreInfo
    from finetrain.toystore import write_toy_store

    torch.set_num_threads(1)
    tmp = None
    if store is None:
        tmp = tempfile.TemporaryDirectory()
        store = write_toy_store(Path(tmp.name) / "store", clips_per_class=max(1, clips // 7), frames=frames, size=size)
    info = StoreInfo.open(store)
    cfg = DataConfig(frames=frames)
    ds = StoreDataset(info, range(len(info)), image_size=image_size, frames=frames, train=True, data_cfg=cfg,
                      streams=("frames", "parsing", "landmarks", "blendshapes"))
    print(f"store {store}: {len(info)} clips, {info.frames} frames of {info.size} px -> {frames} x {image_size} px; "
          f"{os.cpu_count()} CPUs")
    for w in [int(x) for x in workers.split(",")]:
        best, best_cpu = 0.0, 0.0
        for r in range(repeats):
            ds.set_epoch(r)
            loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=w, shuffle=False,
                                                 persistent_workers=False)
            cpu0 = _cpu_seconds()
            start, n = time.perf_counter(), 0
            for batch in loader:
                n += batch["frames"].shape[0]
            del loader  # joins the workers, so their CPU time is counted
            wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
            best, best_cpu = max(best, n / wall), max(best_cpu, n / cpu)
        print(f"workers={w}: {best:.1f} clips/s wall, {best_cpu:.1f} clips per CPU-second (all processes)")
    _overlay_ratio(frames, image_size)
    if tmp is not None:
        tmp.cleanup()


def _overlay_ratio(frames: int, size: int, repeats: int = 10) -> None:
    """The parsing overlay by table lookup (what the Dataset uses) against a plain blend in torch."""
    import torch

    from finetrain.render import PALETTE, parsing_overlay

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
