"""Benchmark `fineprep extract` against a naive baseline and against the landmark model alone.

    .venv/bin/python bench/extract.py [--clips-per-class 4] [--frames 16] [--size 224] [--work DIR]

On one synth DFEW dataset (raw videos, `--source original`), in one run:
  * naive: the way public DFER preprocessing scripts work: one process, decode every frame, the
    landmarker in IMAGE mode on every frame, a JPEG folder and a landmark file per clip;
  * fineprep extract with 1 and with 2 Dask workers (wall time of the batches, cluster start apart);
  * floor: the landmarker alone (IMAGE mode, one process) on the very crops the store holds;
  * networks: the mesh and blendshape networks alone (LiteRT, one thread, what the landmark stage
    runs) on the same crops at the mesh's 256 px input: the landmark stage's own floor;
  * per-stage seconds summed over the workers, peak RSS per worker, bytes per clip on disk.
Our runs and the floor are repeated `--repeats` times and the fastest of each is kept (the naive
baseline, several times slower, runs once), so a burst of other load on a shared machine does not
decide a ratio.
Prints a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def naive(root: Path, videos: list[Path], out: Path, model: str) -> tuple[float, int, int]:
    """Sequential: every frame decoded, landmarks per frame in IMAGE mode, a JPEG per frame."""
    import cv2
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    cv2.setNumThreads(1)
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    lm = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model), running_mode=vision.RunningMode.IMAGE,
        num_faces=1, output_face_blendshapes=True))
    frames = 0
    for video in videos:
        folder = out / video.stem
        folder.mkdir(parents=True)
        cap = cv2.VideoCapture(str(video))
        marks = []
        k = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            k += 1
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            res = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            marks.append([(p.x, p.y, p.z) for p in res.face_landmarks[0]] if res.face_landmarks else
                         [(0.0, 0.0, 0.0)] * 478)
            cv2.imwrite(str(folder / f"{k:05d}.jpg"), bgr)
        cap.release()
        np.save(folder / "landmarks.npy", np.asarray(marks, dtype=np.float32))
        frames += k
    lm.close()
    return time.perf_counter() - start, frames, du(out)


def floor(store: Path, model: str) -> tuple[float, int]:
    """The landmark model alone on the stored crops: what no pipeline around it can beat (one process)."""
    import mediapipe as mp
    import pyarrow.parquet as pq
    import zarr
    from mediapipe.tasks.python import BaseOptions, vision

    m = pq.read_table(store / "manifest.parquet").to_pydict()
    ok = [i for i, s in zip(m["store_index"], m["status"], strict=True) if s == "ok"]
    crops = zarr.open_group(str(store / "arrays.zarr"), mode="r")["frames"][sorted(ok)]
    images = [mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(c))
              for clip in crops for c in clip]
    lm = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model), running_mode=vision.RunningMode.IMAGE,
        num_faces=1, output_face_blendshapes=True))
    lm.detect(images[0])  # warm-up
    start = time.perf_counter()
    for im in images:
        lm.detect(im)
    seconds = time.perf_counter() - start
    lm.close()
    return seconds, len(images)


def networks(store: Path, model: str) -> tuple[float, int]:
    """The mesh + blendshape networks alone on the stored crops (256 px, one thread): seconds, frames."""
    import cv2
    import pyarrow.parquet as pq
    import zarr

    from fineprep.extract.mesh import MESH_INPUT, MeshNet

    m = pq.read_table(store / "manifest.parquet").to_pydict()
    ok = [i for i, s in zip(m["store_index"], m["status"], strict=True) if s == "ok"]
    crops = zarr.open_group(str(store / "arrays.zarr"), mode="r")["frames"][sorted(ok)]
    rois = [cv2.resize(c, (MESH_INPUT, MESH_INPUT)) for clip in crops for c in clip]
    net = MeshNet(model, threads=1)
    net.blendshapes(net.mesh(rois[0])[0])  # warm-up
    start = time.perf_counter()
    for roi in rois:
        net.blendshapes(net.mesh(roi)[0])
    return time.perf_counter() - start, len(rois)


def ours(root: Path, store: Path, workers: int, frames: int, size: int, batch_size: int, second: bool = True) -> dict:
    from rich.console import Console

    from fineprep.extract.app import extract_dataset
    from fineprep.extract.config import ExtractConfig

    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    config = ExtractConfig(source="original", frames=frames, size=size, workers=workers, batch_size=batch_size,
                           second_detector=second)
    outcome = extract_dataset("dfew", root, store, config, console=Console(quiet=True))
    total = time.perf_counter() - start
    stages: dict[str, float] = {}
    rss: dict[int, float] = {}
    for rep in outcome.reports:
        for k, v in rep.seconds.items():
            stages[k] = stages.get(k, 0.0) + v
        rss[rep.pid] = max(rss.get(rep.pid, 0.0), rep.peak_rss_mb)
    return {"seconds": outcome.seconds, "total": total, "ok": outcome.ok, "stages": stages, "rss": rss,
            "bytes": du(store / "arrays.zarr")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips-per-class", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--min-frames", type=int, default=48, help="synth clip length range (DFEW's median is 70)")
    ap.add_argument("--max-frames", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2, help="runs of ours and of the floor; the fastest counts")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fineclip-bench/extract"))
    ap.add_argument("--no-second-detector", action="store_true", help="extract without CenterFace")
    args = ap.parse_args()
    os.environ.setdefault("GLOG_minloglevel", "2")

    from fineprep.extract.faces import resolve_landmarker
    from fineprep.synth import make_dataset

    work = args.work.resolve()
    root = make_dataset("dfew", work / "dfew", clips_per_class=args.clips_per_class, seed=0, size=256,
                        frames_range=(args.min_frames, args.max_frames))
    videos = sorted((root / "Clip" / "original").glob("*.mp4"))
    model = str(resolve_landmarker(None)[0])
    load_before = os.getloadavg()[0]

    naive_s, naive_frames, naive_bytes = naive(root, videos, work / "naive", model)
    one = two = None
    floor_s = nets_s = float("inf")
    for _ in range(args.repeats):
        second = not args.no_second_detector
        r1 = ours(root, work / "store-1", 1, args.frames, args.size, args.batch_size, second)
        r2 = ours(root, work / "store-2", 2, args.frames, args.size, args.batch_size, second)
        f_s, floor_frames = floor(work / "store-1", model)
        one = r1 if one is None or r1["seconds"] < one["seconds"] else one
        two = r2 if two is None or r2["seconds"] < two["seconds"] else two
        floor_s = min(floor_s, f_s)
        n_s, nets_frames = networks(work / "store-1", model)
        nets_s = min(nets_s, n_s)
    load_after = os.getloadavg()[0]

    n = len(videos)
    kept = one["ok"] * args.frames
    rate = lambda s: n / s  # noqa: E731
    lines = [
        "## extract",
        "",
        f"Command: `.venv/bin/python bench/extract.py --clips-per-class {args.clips_per_class} --frames {args.frames} "
        f"--size {args.size} --batch-size {args.batch_size} --repeats {args.repeats}"
        f"{' --no-second-detector' if args.no_second_detector else ''}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores visible, Python {platform.python_version()}; "
        f"load average {load_before:.1f} before / {load_after:.1f} after (the machine is shared).  ",
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Data: synth DFEW, {n} raw videos at 256x256, "
        f"{args.min_frames}-{args.max_frames} frames each ({naive_frames} source frames in all); "
        f"stored: {args.frames} frames per clip at {args.size}x{args.size}. Ours and the floor: fastest of "
        f"{args.repeats} runs.",
        "",
        "| run | seconds | clips/s | kept frames/s | source frames/s | vs naive |",
        "|---|---|---|---|---|---|",
        f"| naive (1 process, every frame, IMAGE mode, JPEG folders) | {naive_s:.1f} | {rate(naive_s):.2f} | - | "
        f"{naive_frames / naive_s:.0f} | 1.00x |",
    ]
    for name, r in (("fineprep extract, 1 worker", one), ("fineprep extract, 2 workers", two)):
        lines.append(f"| {name} | {r['seconds']:.1f} (+{r['total'] - r['seconds']:.1f} start) | "
                     f"{rate(r['seconds']):.2f} | {kept / r['seconds']:.0f} | {naive_frames / r['seconds']:.0f} | "
                     f"{naive_s / r['seconds']:.2f}x |")
    lines.append(f"| landmark model alone on the stored crops (floor, 1 process) | {floor_s:.1f} | "
                 f"{rate(floor_s):.2f} | {floor_frames / floor_s:.0f} | - | {naive_s / floor_s:.2f}x |")
    lines.append(f"| mesh + blendshape networks alone on the stored crops (LiteRT, 1 thread) | {nets_s:.1f} | "
                 f"{rate(nets_s):.2f} | {nets_frames / nets_s:.0f} | - | {naive_s / nets_s:.2f}x |")
    stages = one["stages"]
    busy = sum(stages.values())
    stage_ms, nets_ms = stages.get("landmarks", 0) / kept * 1e3, nets_s / nets_frames * 1e3
    lines += [
        "",
        "Per-stage seconds (1 worker, summed over batches): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(stages.items(), key=lambda kv: -kv[1]))
        + f"; sum {busy:.2f}. Landmark floor {floor_s:.2f} s; 1-worker wall / floor = "
        f"{one['seconds'] / floor_s:.2f}x, 2-worker wall / (floor / 2) = {two['seconds'] / (floor_s / 2):.2f}x. "
        f"Landmark stage {stage_ms:.1f} ms per kept frame against the networks' own {nets_ms:.1f} ms "
        f"({stage_ms / nets_ms:.2f}x) and mediapipe's landmarker's {floor_s / floor_frames * 1e3:.1f} ms.",
        f"Peak RSS per worker (MB): 1 worker {', '.join(f'{v:.0f}' for v in one['rss'].values())}; "
        f"2 workers {', '.join(f'{v:.0f}' for v in two['rss'].values())}.",
        f"Bytes per clip: store arrays {one['bytes'] / max(one['ok'], 1) / 1e3:.0f} kB "
        f"(frames, parsing, landmarks, blendshapes, face_found; Blosc: LZ4 for uint8, zstd for float32); "
        f"naive JPEG folder + landmarks "
        f"{naive_bytes / n / 1e3:.0f} kB.",
        "",
        "Targets: >= 7x naive clips/s on 2 cores: "
        + ("met" if naive_s / two["seconds"] >= 7 else "NOT met")
        + f" ({naive_s / two['seconds']:.1f}x); total within 1.5x of the landmark floor: "
        + ("met" if one["seconds"] / floor_s <= 1.5 else "NOT met")
        + f" ({one['seconds'] / floor_s:.2f}x, 1 worker); landmark stage within 1.2x of the networks: "
        + ("met" if stage_ms <= 1.2 * nets_ms else "NOT met") + f" ({stage_ms / nets_ms:.2f}x); "
        + "< 1.5 GB RSS per worker: "
        + ("met" if max(list(one["rss"].values()) + list(two["rss"].values())) < 1536 else "NOT met") + ".",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
