"""Kill-and-resume soak: SIGKILL `fineprep extract`, `fineprep describe` and `finetrain run` at seeded random
moments, resume each, and compare what the resumed run leaves with a run that was never killed.

    .venv/bin/python bench/soak.py --kills 20 --seed 0

Set-up (once): a small synthetic DFEW set (`fineprep synth`), then one clean run of each stage: extract
(4 frames, 64 px, batches of 2 clips, 1 worker), describe (`tiny-random`, `--engine hf`, 8 tokens) on a copy
of the clean store, and `finetrain run --config tiny` (3 epochs, a checkpoint every 2 steps) on the clean store.

Each kill: a fresh attempt of one stage (round-robin over the stages in a seeded order) is started in its own
process group and the whole group gets SIGKILL (the main process and Dask's workers at once, as a batch
scheduler or `kill -9 -PGID` does) either after a random delay within the clean run's wall time or as soon as
a chosen file appears (the k-th batch part, the k-th description part, the checkpoint's temporary folder, the
k-th logged step). It is then run again to the end and compared with the clean run:

  extract   manifest rows equal, store attributes equal, every array of every stored clip (ok, few_faces)
            bit-equal
  describe  the same set of described clips, one description row per clip
  train     test.json equal (UAR, WAR, per-class recall, confusion, selected epoch), one steps.jsonl row per step

A first kill point the process outran (it finished first) is drawn again, so every counted kill is a real
SIGKILL. With `--chain K` the runs resuming an attempt are killed too (K kills in all, each at a point ahead
of the work already done) before one runs to the end: fewer full runs per kill, one comparison per K kills.
Exit status 1 when any resumed result differs. Results go to stdout and, with --json, to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
STAGES = ("extract", "describe", "train")
EXTRACT = ["--dataset", "dfew", "--frames", "4", "--size", "64", "--batch-size", "2", "--workers", "1"]
DESCRIBE = ["--model", "tiny-random", "--engine", "hf", "--frames", "2", "--chunk", "2", "--max-tokens", "8",
            "--no-progress"]
TRAIN = ["--config", "tiny", "optim.epochs=3", "optim.batch_size=2", "run.checkpoint_every=2", "run.threads=1"]


@dataclass
class Attempt:
    stage: str
    points: list[str] = field(default_factory=list)     # "after 3.20 s", "batch part 3 appears", ...
    after_s: list[float] = field(default_factory=list)  # seconds from each start to its kill
    equal: bool = False
    detail: str = ""
    seconds: float = 0.0     # the whole attempt: killed runs, the resumed run, the comparison
    redraws: int = 0         # first kill points the process outran before one was hit


@dataclass
class Soak:
    seed: int
    attempts: list[Attempt] = field(default_factory=list)
    clean_s: dict[str, float] = field(default_factory=dict)
    setup_s: float = 0.0
    wall_s: float = 0.0


# ------------------------------------------------------------------------------------- processes
def _command(stage: str, work: Path, target: Path) -> list[str]:
    if stage == "extract":
        return [str(BIN / "fineprep"), "extract", *EXTRACT, "--root", str(work / "dataset"), "--out", str(target)]
    if stage == "describe":
        return [str(BIN / "fineprep"), "describe", "--store", str(target), *DESCRIBE]
    resume = ["--resume"] if (target / "config.yaml").is_file() else []
    return [str(BIN / "finetrain"), "run", "--store", str(work / "clean" / "store"), "--out", str(target),
            "--quiet", *TRAIN, *resume]


def _run(argv: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        r = subprocess.run(argv, env=ENV, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {r.returncode}; see {log}")
    return time.perf_counter() - t0


def _kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(200):  # the group's other members (Dask workers) are gone too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"processes of group {proc.pid} survived SIGKILL")


def _start_and_kill(argv: list[str], log: Path, ready) -> float | None:
    """Start `argv` in its own process group; SIGKILL the group when `ready(elapsed)` holds.
    Returns the seconds to the kill, or None when the process finished first."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, env=ENV, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.perf_counter()
    while proc.poll() is None:
        elapsed = time.perf_counter() - t0
        if ready(elapsed):
            _kill_group(proc)
            return elapsed
        time.sleep(0.003)
    return None


# ------------------------------------------------------------------------------------- kill points
def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def draw_point(rng: random.Random, stage: str, target: Path, clean_s: float, sizes: dict[str, int]):
    """(description, ready(elapsed) -> bool) of one random kill point; file points lie ahead of what the
    target already holds, so a resumed run is killed while it still has work to do."""
    if stage == "extract":
        have, total, what = _count(target / "parts", "batch-*.parquet"), sizes["batches"], "batch part"
    elif stage == "describe":
        have, total, what = _count(target / "descriptions", "part-*.parquet"), sizes["parts"], "description part"
    else:
        have, total, what = _lines(target / "steps.jsonl"), sizes["steps"], "logged step"
    if rng.random() < 0.5 or have + 1 > total - 1:
        delay = round(rng.uniform(0.05, 0.95) * clean_s, 2)
        return f"after {delay:.2f} s", lambda elapsed: elapsed >= delay
    if stage == "extract" and not (target / "arrays.zarr").exists() and rng.random() < 0.2:
        return "arrays.zarr appears", lambda _: (target / "arrays.zarr").exists()
    if stage == "train" and rng.random() < 0.3:
        return "checkpoint being written", lambda _: (target / "checkpoints" / "last.tmp").exists()
    k = rng.randint(have + 1, total - 1)
    if stage == "extract":
        return f"{what} {k} appears", lambda _: _count(target / "parts", "batch-*.parquet") >= k
    if stage == "describe":
        return f"{what} {k} appears", lambda _: _count(target / "descriptions", "part-*.parquet") >= k
    return f"{what} {k}", lambda _: _lines(target / "steps.jsonl") >= k


# ------------------------------------------------------------------------------------- comparisons
def compare_extract(clean: Path, got: Path) -> str:
    import pyarrow.parquet as pq
    import zarr

    a = sorted(pq.read_table(clean / "manifest.parquet").to_pylist(), key=lambda r: r["clip_id"])
    b = sorted(pq.read_table(got / "manifest.parquet").to_pylist(), key=lambda r: r["clip_id"])
    if a != b:
        diff = [ra["clip_id"] for ra, rb in zip(a, b, strict=False) if ra != rb] or ["row count"]
        return f"manifest differs ({len(a)} vs {len(b)} rows; first: {diff[0]})"
    ga, gb = zarr.open_group(str(clean / "arrays.zarr"), mode="r"), zarr.open_group(str(got / "arrays.zarr"), mode="r")
    if dict(ga.attrs) != dict(gb.attrs):
        return "store attributes differ"
    names = sorted(ga.array_keys())
    if names != sorted(gb.array_keys()):
        return f"arrays differ: {names} vs {sorted(gb.array_keys())}"
    ok = [r for r in a if r["status"] in ("ok", "few_faces")]  # the clips whose arrays are stored
    for name in names:
        for r in ok:
            i = r["store_index"]
            x, y = np.asarray(ga[name][i]), np.asarray(gb[name][i])
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return f"{name} of clip {r['clip_id']} differs"
    return ""


def _described(store: Path) -> list[str]:
    import pyarrow.parquet as pq

    folder = store / "descriptions"
    rows = [r for p in sorted(folder.glob("*.parquet")) for r in pq.read_table(p, columns=["clip_id", "status"])
            .to_pylist()] if folder.is_dir() else []
    return sorted(r["clip_id"] for r in rows if r["status"] == "ok")


def compare_describe(clean: Path, got: Path) -> str:
    a, b = _described(clean), _described(got)
    if len(set(b)) != len(b):
        return f"{len(b) - len(set(b))} clips described twice"
    if a != b:
        return f"described clips differ ({len(a)} clean, {len(b)} resumed)"
    return ""


def compare_train(clean: Path, got: Path) -> str:
    a, b = json.loads((clean / "test.json").read_text()), json.loads((got / "test.json").read_text())
    if a != b:
        keys = [k for k in a if a.get(k) != b.get(k)]
        return f"test.json differs in {keys}"
    steps = [json.loads(line)["step"] for line in (got / "steps.jsonl").read_text().splitlines() if line]
    if steps != list(range(1, len(steps) + 1)):
        return f"steps.jsonl rows are not one per step ({len(steps)} rows, {len(set(steps))} steps)"
    clean_steps = _lines(clean / "steps.jsonl")
    if len(steps) != clean_steps:
        return f"{len(steps)} steps logged, clean run {clean_steps}"
    return ""


COMPARE = {"extract": compare_extract, "describe": compare_describe, "train": compare_train}


# ------------------------------------------------------------------------------------- the soak
def setup(work: Path, seed: int, soak: Soak, say) -> dict[str, int]:
    t0 = time.perf_counter()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _run([str(BIN / "fineprep"), "synth", "--dataset", "dfew", "--out", str(work / "dataset"),
          "--clips-per-class", "2", "--size", "128", "--frames-range", "12,20", "--seed", str(seed)],
         logs / "synth.log")
    clean = work / "clean"
    clean.mkdir()
    soak.clean_s["extract"] = _run(_command("extract", work, clean / "store"), logs / "clean-extract.log")
    shutil.copytree(clean / "store", clean / "described", ignore=shutil.ignore_patterns("descriptions"))
    soak.clean_s["describe"] = _run(_command("describe", work, clean / "described"), logs / "clean-describe.log")
    soak.clean_s["train"] = _run(_command("train", work, clean / "run"), logs / "clean-train.log")
    soak.setup_s = time.perf_counter() - t0
    sizes = {"batches": _count(clean / "store" / "parts", "batch-*.parquet"),
             "parts": _count(clean / "described" / "descriptions", "part-*.parquet"),
             "steps": _lines(clean / "run" / "steps.jsonl")}
    say(f"set-up {soak.setup_s:.0f} s; clean runs: " + ", ".join(f"{k} {v:.1f} s" for k, v in soak.clean_s.items())
        + f"; {sizes['batches']} batch parts, {sizes['parts']} description parts, {sizes['steps']} steps")
    return sizes


def attempt(work: Path, n: int, stage: str, rng: random.Random, soak: Soak, sizes: dict[str, int],
            kills: int) -> Attempt:
    """Kill a fresh run of `stage`, then (up to `kills` in all) each run that resumes it, then let one run
    to the end and compare with the clean run."""
    t0 = time.perf_counter()
    target = work / "attempts" / f"{n:03d}-{stage}"
    log = work / "logs" / f"{n:03d}-{stage}.log"
    result = Attempt(stage=stage)
    while not result.points:
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        if stage == "describe":
            shutil.copytree(work / "clean" / "store", target)
        point, ready = draw_point(rng, stage, target, soak.clean_s[stage], sizes)
        after = _start_and_kill(_command(stage, work, target), log, ready)
        if after is None:
            result.redraws += 1
            if result.redraws > 5:
                raise RuntimeError(f"{stage}: the process outran 6 kill points in a row; see {log}")
            continue
        result.points.append(point)
        result.after_s.append(round(after, 2))
    finished = False
    while len(result.points) < kills:
        point, ready = draw_point(rng, stage, target, soak.clean_s[stage], sizes)
        after = _start_and_kill(_command(stage, work, target), log, ready)
        if after is None:  # this resumed run got to the end first
            finished = True
            break
        result.points.append(point)
        result.after_s.append(round(after, 2))
    if not finished:
        _run(_command(stage, work, target), log)
    clean = work / "clean" / {"extract": "store", "describe": "described", "train": "run"}[stage]
    result.detail = COMPARE[stage](clean, target)
    result.equal = not result.detail
    result.seconds = round(time.perf_counter() - t0, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs in all, spread over the stages")
    ap.add_argument("--chain", type=int, default=1, help="kills per attempt: the fresh run and then up to "
                    "CHAIN-1 of the runs resuming it are killed before one runs to the end and is compared")
    ap.add_argument("--seed", type=int, default=0, help="seeds the data, the stage order and every kill point")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of extract,describe,train")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fineclip-soak"), help="scratch folder (emptied)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    if not stages or any(s not in STAGES for s in stages):
        ap.error(f"--stages takes a subset of {','.join(STAGES)}")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rng = random.Random(args.seed)
    soak = Soak(seed=args.seed)
    t0 = time.perf_counter()

    def say(text: str) -> None:
        print(text, flush=True)

    say(f"soak: {args.kills} kills over {', '.join(stages)}; seed {args.seed}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    sizes = setup(args.work, args.seed, soak, say)
    order = list(stages)
    rng.shuffle(order)
    done = 0
    while done < args.kills:
        n = len(soak.attempts) + 1
        stage = order[(n - 1) % len(order)]
        result = attempt(args.work, n, stage, rng, soak, sizes, min(args.chain, args.kills - done))
        soak.attempts.append(result)
        done += len(result.points)
        kills = "; ".join(f"{p} (at {a:.2f} s)" for p, a in zip(result.points, result.after_s, strict=True))
        say(f"{n:3d} {stage:8s} {len(result.points)} kill(s): {kills}"
            f"{f' [{result.redraws} outrun]' if result.redraws else ''} -> "
            f"{'equal' if result.equal else 'DIFFERS: ' + result.detail}  [{result.seconds:.0f} s]")
    soak.wall_s = round(time.perf_counter() - t0, 1)
    per_stage = {s: sum(len(a.points) for a in soak.attempts if a.stage == s) for s in stages}
    bad = [a for a in soak.attempts if not a.equal]
    say(f"kills per stage: {per_stage} ({done} in all, {len(soak.attempts)} resumed results); "
        f"{len(soak.attempts) - len(bad)} of {len(soak.attempts)} resumed results equal to the clean run; "
        f"wall {soak.wall_s:.0f} s (set-up {soak.setup_s:.0f} s); load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({**asdict(soak), "per_stage": per_stage}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
