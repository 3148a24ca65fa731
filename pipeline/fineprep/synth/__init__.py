"""Small datasets in the official DFEW / FERV39k / MAFW layouts, rendered from real face photographs.

`make_dataset` draws a plan from the seed (class, fold or split, identity and id of every clip),
renders each clip by warping a real face along its MediaPipe mesh with a class recipe, and writes
the dataset's own files (videos, face-crop frame folders, split files, label tables). The build goes
into a temporary sibling folder that is renamed into place at the end, so a dataset root is either
complete or absent; asking again for the same settings returns the existing root untouched.
A hidden `.synth.json` at the root records the settings and, per clip, identity, class, intensity,
fps and frame count. The `wild` scene (`wild.py`) puts the same faces small into wide, cut, degraded
footage with other people and writes `ground_truth.parquet` (`wild_truth.py`) beside the layout.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import wild, wild_truth
from .clips import render_clip
from .errors import SynthError
from .faces import identities
from .layouts import (
    DATASETS,
    PROVENANCE,
    WRITERS,
    plan,
    provenance,
    settings_of,
    video_path,
    write_provenance,
)

WILD_CROWD = 10  # synthetic identities bystanders are drawn from (the primary is never among its own crowd)

__all__ = ["DATASETS", "PROVENANCE", "SCENES", "SynthError", "make_dataset", "read_provenance"]


def read_provenance(root: Path) -> dict:
    return json.loads((Path(root) / PROVENANCE).read_text(encoding="utf-8"))


SCENES = ("face", "wild")


def make_dataset(dataset: str, out: Path, clips_per_class: int = 2, seed: int = 0, size: int = 256, *,
                 frames_range: tuple[int, int] = (20, 48), scene: str = "face", portraits: Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Write a synthetic `dataset` (dfew, ferv39k, mafw, folder) in its layout at `out`; return the root.

    `scene="face"`: one face fills each frame. `scene="wild"`: the same animated faces small in wide
    frames with other people, cuts and degraded shots (see `wild`), and `ground_truth.parquet` (see
    `wild_truth`) at the root; real portraits from the `portraits` folder join the bystanders.
    """
    dataset, scene = str(dataset).lower(), str(scene)
    frames = _check(dataset, clips_per_class, size, frames_range, scene, portraits)
    root = Path(out)
    wanted = settings_of(dataset, seed, size, clips_per_class, frames)
    crowd_pool = []
    if scene == "wild":
        crowd_pool = identities(WILD_CROWD, size) + wild.portraits(portraits, size)
        wanted["scene"] = scene
        wanted["portraits"] = sorted(i.name for i in crowd_pool if i.name.startswith("portrait:"))
    if _already_there(root, wanted, scene):
        return root
    planned = plan(dataset, clips_per_class, seed, size)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        clips, truth = _render_all(tmp, dataset, planned, seed, frames, scene, crowd_pool, progress)
        WRITERS[dataset][1](tmp, planned, np.random.default_rng([seed, 11]))
        if scene == "wild":
            wild_truth.write(tmp, truth)
        doc = provenance(dataset, seed, size, clips_per_class, frames, planned, clips)
        doc.update({k: v for k, v in wanted.items() if k not in doc})
        write_provenance(tmp, doc)
        if root.exists():
            root.rmdir()
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _check(dataset: str, clips_per_class: int, size: int, frames_range: tuple[int, int], scene: str,
           portraits: Path | None) -> tuple[int, int]:
    """Refuse settings that cannot make a dataset, before anything is written; the frames range as ints."""
    if dataset not in DATASETS:
        raise SynthError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if scene not in SCENES:
        raise SynthError(f"unknown scene {scene!r}; choose one of {', '.join(SCENES)}")
    lo, hi = int(frames_range[0]), int(frames_range[1])
    if not 2 <= lo <= hi:
        raise SynthError(f"frames range {lo},{hi} is not valid; give A,B with 2 <= A <= B")
    if clips_per_class < 1:
        raise SynthError(f"clips per class must be at least 1, got {clips_per_class}")
    if size < 64:
        raise SynthError(f"size {size} px is too small for a face mesh; use 64 or more")
    if portraits is not None and not Path(portraits).is_dir():
        raise SynthError(f"portraits folder {portraits} does not exist; give a folder of .jpg/.png portraits")
    return lo, hi


def _already_there(root: Path, wanted: dict, scene: str) -> bool:
    """True when `root` holds this very dataset already; refuses a root that holds anything else."""
    if (root / PROVENANCE).is_file():
        have = read_provenance(root)
        if {k: have.get(k) for k in wanted} == wanted and have.get("scene", "face") == scene:
            return True
        raise SynthError(f"{root} already holds a synthetic dataset made with other settings "
                         f"({ {k: have.get(k) for k in wanted} }); choose another --out or delete it")
    if root.exists() and not root.is_dir():
        raise SynthError(f"{root} is a file; give a folder for --out")
    if root.exists() and any(root.iterdir()):
        raise SynthError(f"{root} exists and is not empty; choose an empty or new folder for --out")
    return False


def _render_all(tmp: Path, dataset: str, planned: list, seed: int, frames: tuple[int, int], scene: str,
                crowd_pool: list, progress: Callable[[int, int], None] | None) -> tuple[dict, list[dict]]:
    """Render and write every planned clip's media; their provenance facts and the wild ground truth."""
    write_media = WRITERS[dataset][0]
    clips, truth = {}, []
    for done, p in enumerate(planned, start=1):
        rng = np.random.default_rng([seed, 1000 + p.index])
        if scene == "wild":
            clip, rows = wild.render_wild(p.identity, p.label, rng, frames, crowd_pool)
            path = video_path(dataset, p.clip_id)
            truth += [{"clip_id": p.clip_id, "path": path, **r} for r in rows]
        else:
            clip = render_clip(p.identity, p.label, rng, frames)
        write_media(tmp, p, clip)
        # Frames are on disk now; keep only what the provenance needs, so memory stays flat.
        clip.meta["frames"] = len(clip.frames)
        clip.frames, clip.crops = [], []
        clips[p.index] = clip
        if progress:
            progress(done, len(planned))
    return clips, truth
