"""Where the time of `finetrain predict` goes: the pipeline's extraction vs the model, per video.

Videos come from `fineprep synth` (DFEW layout, raw videos). For each video the in-process extraction
(`finetrain.evaluate.predict.extract_videos`: decode, detect, crop, landmarks, blendshapes, parsing) is timed,
then classification of the extracted arrays (`classify_arrays`: rendering, normalisation, model) for
two models side by side: the tiny test CLIP and ViT-B/16 with every stream (random backbone weights,
the same shapes and cost as the OpenAI weights, which cannot be downloaded here).

    python bench/predict.py --videos 4 --frames 16 --size 224 --threads 2

Prints a Markdown block for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def _model(name: str, frames: int):
    from fineschema.labels import BASIC7
    from finetrain.config import load_config
    from finetrain.model.model import build_model

    overrides = ["model.pretrained=null", f"data.frames={frames}", "data.num_workers=0"]
    if name != "tiny":
        overrides.append("model.streams=[frames,parsing,landmarks,blendshapes]")
    cfg = load_config(name, overrides)
    return build_model(cfg, BASIC7, frames).eval(), cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from fineprep.synth import make_dataset
    from finetrain.evaluate.predict import classify_arrays, extract_videos

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset("dfew", Path(tmp) / "dfew", clips_per_class=1, seed=0, size=256, frames_range=(40, 60))
        videos = sorted((root / "Clip" / "original").glob("*.mp4"))[: args.videos]
        extract_videos(videos[:1], args.frames, args.size)  # load the landmarker once before timing
        t0 = time.perf_counter()
        results = extract_videos(videos, args.frames, args.size)
        extract_s = (time.perf_counter() - t0) / len(videos)
    ok = [r for r in results if r.arrays is not None]
    arrays = {k: np.stack([r.arrays[k] for r in ok]) for k in ok[0].arrays}
    ids = [r.entry.clip_id for r in ok]
    rows = []
    for name in ("tiny", "dfew-b16"):
        model, cfg = _model(name, args.frames)
        classify_arrays(model, cfg, {k: v[:1] for k, v in arrays.items()}, ids[:1])  # warm-up
        t0 = time.perf_counter()
        classify_arrays(model, cfg, arrays, ids, batch_size=1)
        rows.append((name, cfg.model.backbone, ", ".join(model.streams), (time.perf_counter() - t0) / len(ids)))

    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    print(f"`python bench/predict.py --videos {args.videos} --frames {args.frames} --size {args.size} "
          f"--threads {args.threads}`; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, CPU only, {stamp}. {len(ok)} of {len(videos)} synth DFEW "
          f"videos (256 px, 40-60 frames) extracted.\n")
    print("| step | model | streams | seconds per video | vs extraction |")
    print("|---|---|---|---:|---:|")
    print(f"| extraction (decode, detect, crop, landmarks, parsing) | – | – | {extract_s:.2f} | 1.00 |")
    for name, backbone, streams, sec in rows:
        print(f"| classification (`{name}` config) | {backbone} | {streams} | {sec:.2f} | {sec / extract_s:.2f} |")


if __name__ == "__main__":
    main()
