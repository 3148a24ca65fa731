"""Cost per frame of the two face parsers: the mesh polygons (default) and FaceXFormer (learned, 11 classes).

    .venv/bin/python bench/parsing.py [--frames 16] [--size 224] [--repeats 3] [--threads 1,2] [--device cpu]

The crops are one real face (scikit-image's astronaut, public domain) repeated `--frames` times;
the mesh parser gets the landmarker's mesh of it. FaceXFormer runs with seeded random weights (its
cost does not depend on the values), one clip's frames per forward pass as in `fineprep extract`,
and one frame per pass for comparison; the fastest of `--repeats` runs is kept. Also timed: loading
a checkpoint into the parser (the once-per-worker cost), from a safetensors file written here.
Load averages are printed: other jobs on a shared machine slow a CPU forward pass a lot.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import typer


def face_crops(frames: int, size: int) -> np.ndarray:
    import cv2
    from skimage import data

    img = data.astronaut()  # RGB, the face at about x 150-260, y 30-160
    crop = cv2.resize(np.ascontiguousarray(img[0:230, 95:325]), (size, size), interpolation=cv2.INTER_AREA)
    return np.repeat(crop[None], frames, axis=0)


def best_of(repeats: int, fn) -> tuple[float, float]:
    """Fastest (wall seconds, CPU seconds of this process) of `repeats` runs. CPU time counts every
    thread, and on a busy machine it moves much less than the wall clock."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w0, time.process_time() - c0))
    return best


def peak_rss_mb() -> float:
    from fineprep.extract.batch import peak_rss_mb as peak

    return peak()


def main(frames: int = typer.Option(16), size: int = typer.Option(224), repeats: int = typer.Option(3),
         threads: str = typer.Option("1,2", help="torch CPU thread counts to try"),
         batches: str = typer.Option("16,4,1", help="frames per forward pass to try (capped at --frames)"),
         device: str = typer.Option(None, help="cpu or cuda (default: cuda when torch sees a GPU)")):
    import torch

    from fineprep.extract import faces, parsing
    from fineprep.extract.facexformer import FaceXFormer

    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    crops = face_crops(frames, size)
    models = faces.get_models(faces.resolve_landmarker(None)[0])
    with models.tracker("image") as tracker:
        got = tracker.run(list(crops), np.tile(np.array([0, 0, size, size], np.float32), (len(crops), 1)))
    marks, found = got.landmarks, got.score >= 0.5
    assert found.all(), "the mesh should find the astronaut's face"
    mesh = parsing.MeshParser()
    mesh.parse(crops, marks)
    wall, cpu = best_of(repeats, lambda: mesh.parse(crops, marks))
    rows = [("mesh", "cpu", 1, frames, wall / frames * 1e3, cpu / frames * 1e3)]

    torch.manual_seed(0)
    model = FaceXFormer.build(seed=0)
    fx = parsing.FaceXFormerParser(model=model, device=device)
    dev = fx.device.type
    counts = [int(x) for x in threads.split(",")] if dev == "cpu" else [torch.get_num_threads()]
    for n in counts:
        torch.set_num_threads(n)
        fx.parse(crops[:1])  # first call sets up the kernels
        for batch in dict.fromkeys(min(int(b), frames) for b in batches.split(",")):
            def run(batch=batch):
                for i in range(0, frames, batch):
                    fx.parse(crops[i:i + batch])
                if dev == "cuda":
                    torch.cuda.synchronize()
            wall, cpu = best_of(repeats, run)
            rows.append(("facexformer", dev, n, batch, wall / frames * 1e3, cpu / frames * 1e3))
    maps = fx.parse(crops[:2])
    assert maps.shape == (2, size, size) and maps.max() < 11

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "facexformer.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        mb = path.stat().st_size / 2**20
        load_s = best_of(1, lambda: parsing.FaceXFormerParser(path, device=device))[0]
        sha_s = best_of(1, lambda: parsing.weights_sha256(path))[0]

    print(f"crops: {frames} x {size}x{size}; torch {torch.__version__}; fastest of {repeats}")
    print("| parser | device | torch threads | frames per forward | wall ms per frame | CPU ms per frame |")
    print("|---|---|---|---|---|---|")
    for name, d, n, batch, wall_ms, cpu_ms in rows:
        print(f"| {name} | {d} | {n} | {batch} | {wall_ms:.1f} | {cpu_ms:.1f} |")
    print(f"checkpoint load into the parser: {load_s:.1f} s ({mb:.0f} MB safetensors); sha256 of it: {sha_s:.1f} s")
    print(f"peak RSS of this process (landmarker + parser + {frames}-frame forward): {peak_rss_mb():.0f} MB")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    typer.run(main)
