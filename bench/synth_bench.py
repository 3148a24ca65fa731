"""Speed of `fineprep synth`: the OpenCV piecewise-affine warp against scikit-image's, side by side,
the error of interpolating maps between intensity levels, and the time to build small datasets.

Run: .venv/bin/python bench/synth_bench.py [--repeats 20]
Prints a Markdown block for BENCHMARKS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append((time.process_time() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    cv2.setNumThreads(1)  # with OMP_NUM_THREADS=1 set below before numpy/scipy load, CPU time = one core

    from skimage.transform import PiecewiseAffineTransform, warp

    from fineprep.synth import make_dataset
    from fineprep.synth.clips import control_points, face_frame
    from fineprep.synth.expressions import recipe
    from fineprep.synth.faces import identities
    from fineprep.synth.warp import PiecewiseAffineWarp

    rows = []
    for size in (256, 512):
        ident = identities(1, size)[0]  # the astronaut
        ff = face_frame(ident)
        src, n_fixed = control_points(ff, ident.mesh, size)
        disp = ff.field(ff.to_uv(src), recipe("surprise").actions, 1.25)
        disp[-n_fixed:] = 0
        dst = src + ff.to_px_delta(disp)
        pw = PiecewiseAffineWarp(size, size)
        ours = _median_ms(lambda pw=pw, ident=ident, src=src, dst=dst: pw.warp(ident.image, src, dst), args.repeats)

        def sk(ident=ident, src=src, dst=dst):
            tf = PiecewiseAffineTransform.from_estimate(dst, src)
            return warp(ident.image, tf, order=1, preserve_range=True)

        theirs = _median_ms(sk, max(3, args.repeats // 5))
        a = pw.warp(ident.image, src, dst).astype(np.float64)
        b = sk().astype(np.float64)
        inner = (slice(2, -2), slice(2, -2))
        diff = np.abs(a[inner] - b[inner])
        # Map interpolation between 7 exact levels (what a clip does) against exact maps.
        levels = np.linspace(0, 1, 7)
        errs = []
        for t in np.linspace(0, 1, 25):
            lo = min(int(t * 6), 5)
            f = t * 6 - lo
            m0 = pw.maps(src, src + ff.to_px_delta(levels[lo] * disp))
            m1 = pw.maps(src, src + ff.to_px_delta(levels[lo + 1] * disp))
            ex = pw.maps(src, src + ff.to_px_delta(t * disp))
            errs.append(np.hypot(m0[0] + (m1[0] - m0[0]) * f - ex[0], m0[1] + (m1[1] - m0[1]) * f - ex[1]))
        err = np.stack(errs)
        rows.append((size, len(src), ours, theirs, float(np.percentile(diff, 99.9)),
                     f"{np.percentile(err, 99.9):.2f} / {err.max():.1f}"))

    builds = []
    for dataset in ("dfew", "ferv39k", "mafw"):
        with tempfile.TemporaryDirectory() as tmp:
            make_dataset(dataset, Path(tmp) / "warm", clips_per_class=1, seed=1, size=256, frames_range=(4, 4))
            t, w = time.process_time(), time.perf_counter()
            root = make_dataset(dataset, Path(tmp) / dataset, clips_per_class=2, seed=0, size=256)
            secs, wall = time.process_time() - t, time.perf_counter() - w
            frames = sum(1 for _ in root.rglob("*.mp4"))
            shutil.rmtree(root)
        builds.append((dataset, frames, secs, wall))

    cpu = platform.processor() or platform.machine()
    print(f"Command: `.venv/bin/python bench/synth_bench.py --repeats {args.repeats}`; "
          f"{datetime.date.today()}; {cpu}, {os.cpu_count()} cores, one thread (CPU time).\n")
    print("| frame | control points | ours (cv2 remap) ms | scikit-image PiecewiseAffine ms | speed-up | "
          "99.9th pct abs diff, grey levels | map interpolation error px, 99.9th pct / max |")
    print("|---|---|---|---|---|---|---|")
    for size, npts, ours, theirs, d, worst in rows:
        print(f"| {size}x{size} | {npts} | {ours:.1f} | {theirs:.0f} | {theirs / ours:.0f}x | {d:.2f} | {worst} |")
    print("\n| dataset (2 clips/class, 256 px, 20-48 frames) | clips | build CPU s | build wall s |")
    print("|---|---|---|---|")
    for dataset, clips, secs, wall in builds:
        print(f"| {dataset} | {clips} | {secs:.2f} | {wall:.2f} |")
    print(f"\nLoad average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          "(times are CPU time of this single-threaded process, so other jobs on the machine inflate them little).")


if __name__ == "__main__":
    main()
