"""`make demo`: the whole job on an embedded dataset, end to end, on one machine.

It builds a small DFEW-layout dataset from real face photographs (`fineprep synth`), extracts it
into a store (`fineprep extract`), draws a contact sheet (`fineprep show`), writes descriptions with
a tiny random-weight LLaVA (`fineprep describe`; the text is meaningless, it exercises the plumbing),
and trains the tiny FineCLIPER config for a short run (`finetrain run`). Each step is the same CLI
a user runs; re-running skips what is already done.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def _tool(name: str) -> str:
    """The console script installed beside this interpreter (the project's .venv)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def _step(title: str, argv: list[str]) -> None:
    console.rule(f"[bold]{title}")
    console.print("$ " + " ".join(argv), style="dim")
    start = time.perf_counter()
    result = subprocess.run(argv, check=False)
    if result.returncode != 0:
        console.print(f"[red]step failed ({title}), exit code {result.returncode}; see the output above")
        raise typer.Exit(result.returncode)
    console.print(f"[green]done in {time.perf_counter() - start:.1f} s")


def main(
    out: Path = typer.Option(Path("demo"), help="Folder for the dataset, the store and the run."),
    clips_per_class: int = typer.Option(6, help="Synthetic clips per class (7 classes, 5 folds)."),
    train: bool = typer.Option(True, help="Finish with a short training run of the tiny config."),
    describe: bool = typer.Option(True, help="Write descriptions with the tiny random-weight LLaVA."),
) -> None:
    data, store, run = out / "data" / "dfew", out / "store", out / "run"
    fineprep, finetrain = _tool("fineprep"), _tool("finetrain")
    if not (data / "EmoLabel_DataSplit").exists():
        _step("1. a small DFEW-layout dataset from real faces",
              [fineprep, "synth", "--dataset", "dfew", "--out", str(data),
               "--clips-per-class", str(clips_per_class), "--seed", "0"])
    _step("2. extract: frames, landmarks, blendshapes, parsing -> Zarr + Parquet",
          [fineprep, "extract", "--dataset", "dfew", "--root", str(data), "--out", str(store),
           "--source", "original", "--frames", "8", "--size", "112", "--workers", "2"])
    _step("3. what is in the store", [fineprep, "stats", "--store", str(store)])
    sheet = out / "sheet.png"
    first = _first_ok_clip(store)
    _step("4. a contact sheet of one clip", [fineprep, "show", "--store", str(store), "--clip", first,
                                               "--out", str(sheet)])
    if describe:
        _step("5. descriptions (tiny random-weight LLaVA: meaningless text, real plumbing)",
              [fineprep, "describe", "--store", str(store), "--model", "tiny-random", "--engine", "hf",
               "--frames", "4", "--max-tokens", "24"])
    if train:
        _step("6. a short training run (tiny config, random-weight CLIP and descriptions: plumbing, not a result)",
              [finetrain, "run", "--store", str(store), "--config", "tiny", "--out", str(run), "--fold", "1",
               "optim.epochs=30", *(["data.random_descriptions=true"] if describe else [])])
    console.rule("[bold]where to look")
    console.print(f"store:          {store}/manifest.parquet and {store}/arrays.zarr")
    console.print(f"contact sheet:  {sheet}  (frames with parsing overlay and landmarks)")
    if describe:
        console.print(f"descriptions:   {store}/descriptions/")
    if train:
        console.print(f"training run:   {run}/  (metrics, selected checkpoint, test UAR/WAR)")


def _first_ok_clip(store: Path) -> str:
    from fineschema import read_manifest, tables

    for clip_id in read_manifest(store, statuses=[tables.STATUS_OK], columns=["clip_id"])["clip_id"].to_pylist():
        return clip_id
    raise typer.Exit("no clip was extracted successfully; see the summary above")


if __name__ == "__main__":
    typer.run(main)
