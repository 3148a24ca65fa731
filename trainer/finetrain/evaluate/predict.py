"""Using a trained run: load its model, and classify video files end to end.

`load_model` rebuilds the model of a run from its checkpoint alone (config and label set are in the
safetensors metadata; the number of frames is the temporal head's size). `predict_videos` has each file
extracted by the pipeline (`extract_videos`, the trainer's one seam to `fineprep`) with the settings the
run's store was made with, and feeds the arrays through the same preprocessing as training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fineschema.limits import check_frames

from ..errors import FinetrainError
from ..rundir import BEST, RunDir

PIPELINE_HINT = "pip install 'fineclip[pipeline]'"


class PredictError(FinetrainError, ValueError):
    """A run or input that cannot be used for prediction; the message says what to do."""


class PipelineMissing(PredictError):
    """The `pipeline` extra (mediapipe, OpenCV) is not installed."""


def checkpoint_dir(run: str | Path, which: str = BEST) -> Path:
    """A run's `checkpoints/<which>` folder; a `--fold all` run folder is refused with its sub-runs named."""
    from ..train.checkpoint import MODEL_FILE

    top = RunDir(run)
    folder = top.checkpoint(which)
    if not (folder / MODEL_FILE).is_file():
        subs = [sub.root.name for sub in top.folds().values() if sub.checkpoints.is_dir()]
        hint = f"; this run has per-fold sub-runs ({', '.join(subs)}): pass one, e.g. {top / subs[0]}" \
            if subs else " (has training finished?)"
        raise PredictError(f"{run}: no checkpoint at {folder.relative_to(top.root)}{hint}")
    return folder


def pick_model_run(run: str | Path, fold: int | None = None) -> Path:
    """The folder holding the model to use: the run itself, or one fold of a `--fold all` run
    (`fold`, or the lowest fold when none is given)."""
    top = RunDir(run)
    if fold is None and top.has_model:
        return top.root
    subs = {k: sub.root for k, sub in top.folds().items() if sub.has_model}
    if fold is not None:
        if fold not in subs:
            raise PredictError(f"{run}: no model trained on fold {fold} (have: {sorted(subs) or 'none'})")
        return subs[fold]
    if not subs:
        raise PredictError(f"{run}: no trained model here (checkpoints/best) nor in fold<K>/ sub-runs")
    return subs[min(subs)]


def model_frames(folder: Path) -> int:
    """Frames the temporal heads were built for, read from the checkpoint's tensor shapes."""
    from ..train.checkpoint import MODEL_FILE, tensor_shapes

    for key, shape in tensor_shapes(Path(folder) / MODEL_FILE).items():
        if key.startswith("heads.") and key.endswith(".pos"):  # checked before any model is built with it
            return check_frames(int(shape[1]) - 1, f"{Path(folder) / MODEL_FILE}: {key}")
    raise PredictError(f"{folder}: checkpoint holds no temporal head")


def load_model(run: str | Path, labels: tuple[str, ...] | None = None, which: str = BEST, device: str = "cpu"):
    """(model in eval mode, config) of a run; `labels` replaces the run's class set (text side only).

    The frozen backbone is not in the checkpoint: it is rebuilt from its pretrained weights, or, for a
    random-weight backbone (`model.pretrained: null`, the tiny test model), from the run's seed, exactly
    as training built it.
    """
    from ..config import from_dict
    from ..model.model import build_model
    from ..train import checkpoint as ckpt
    from ..train.runtime import seed_everything

    folder = checkpoint_dir(run, which)
    meta = ckpt.read_meta(folder)
    cfg = from_dict(meta["config"])
    cfg.run.device = device
    seed_everything(cfg.run.seed)
    try:
        model = build_model(cfg, tuple(labels or meta["labels"]), model_frames(folder))
    except Exception as exc:
        if ckpt.unreadable_weights(exc):
            raise ckpt.refuse_pretrained(cfg.model.pretrained, exc) from None
        raise
    ckpt.load(folder, model)
    return model.to(device).eval(), cfg


def run_labels(run: str | Path, which: str = BEST) -> tuple[str, ...]:
    from ..train import checkpoint as ckpt

    return tuple(ckpt.read_meta(checkpoint_dir(run, which))["labels"])


# ------------------------------------------------------------------------------------------ arrays
def _array_dataset(arrays: dict[str, np.ndarray], clip_ids: list[str], model, cfg, frame_indices: list | None):
    """`StoreDataset` reading from arrays (N, T, ...) in memory instead of a Zarr group; `frame_indices`
    (each clip's source frame per stored frame, as the manifest keeps them) mark the padding repeats."""
    from ..data.chunks import ChunkReader
    from ..data.store import StoreDataset, StoreInfo, distinct_frames

    readers = {name: ChunkReader(a) for name, a in arrays.items()}  # plain indexing: numpy has no chunks

    class ArrayDataset(StoreDataset):
        def _readers(self):
            return readers

    frames, size = arrays["frames"].shape[1], arrays["frames"].shape[2]
    n = len(clip_ids)
    info = StoreInfo(root=None, attrs={"frames": frames, "size": size}, labels=model.labels, clip_ids=clip_ids,
                     store_index=np.arange(n), label_index=np.zeros(n, dtype=np.int64),
                     train_folds=[[] for _ in range(n)], test_folds=[[] for _ in range(n)],
                     distinct=distinct_frames(frame_indices or [None] * n, frames))
    return ArrayDataset(info, np.arange(len(clip_ids)), image_size=model.image_size, frames=cfg.data.frames,
                        train=False, data_cfg=cfg.data, streams=model.streams, tokenizer=model.tokenizer)


def classify_arrays(model, cfg, arrays: dict[str, np.ndarray], clip_ids: list[str], batch_size: int = 8,
                    frame_indices: list | None = None) -> np.ndarray:
    """Class probabilities (N, C) of clips given as store-layout arrays."""
    import torch

    dataset = _array_dataset(arrays, clip_ids, model, cfg, frame_indices)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for batch in loader:
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            out.append(torch.softmax(model(batch)["logits"].float(), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.labels)), np.float32)


# ------------------------------------------------------------------------------------------ videos
@dataclass
class VideoResult:
    path: str
    status: str
    error: str | None = None
    top: list[tuple[str, float]] | None = None
    face_found_ratio: float | None = None
    random_weights: bool = False  # the model's CLIP has random weights: the probabilities mean nothing

    def to_dict(self) -> dict:
        d = {"video": self.path, "status": self.status, "random_weights": self.random_weights}
        if self.error:
            d["error"] = self.error
        if self.top is not None:
            d["top"] = [{"label": name, "prob": round(p, 6)} for name, p in self.top]
            d["face_found_ratio"] = self.face_found_ratio
        return d


def extraction_settings(run: str | Path, which: str = BEST):
    """The extraction settings of the store the run was trained on, as its checkpoint keeps them
    (`fineschema.ExtractSettings`); a checkpoint without them is refused, naming what to do."""
    from fineschema import ExtractSettings, SettingsError

    from ..train import checkpoint as ckpt

    folder = checkpoint_dir(run, which)
    saved = ckpt.read_meta(folder).get("extraction")
    if not saved:
        raise PredictError(f"{folder}: the checkpoint records no extraction settings (its store recorded none, "
                           "or it predates them); train on a store written by `fineprep extract` to predict on videos")
    try:
        return ExtractSettings.from_dict(saved, f"{folder} extraction settings")  # bounded: fineschema.limits
    except SettingsError as exc:
        raise PredictError(str(exc)) from None


def _checked_models(settings, landmarker: Path | None, parser_weights: Path | None):
    """(landmarker path, parser weights) for `settings`, refused in one line where they differ from what
    made the training store: another landmarker or detector, or a learned parser's weights absent or other."""
    from fineprep.extract import faces, parsing

    try:
        model_path, sha = faces.resolve_landmarker(landmarker)
    except faces.ModelError as exc:
        raise PredictError(str(exc)) from None
    _same(f"{model_path} (the face_landmarker.task)", sha, settings.landmark_sha256,
          "pass the one it was made with: --landmarker PATH")
    _same(f"the face detector in {model_path}", faces.detector_sha256(model_path), settings.detector_sha256,
          "pass the bundle it was made with: --landmarker PATH")
    have = {d["name"]: d["sha256"] for d in faces.detector_records(model_path, settings.second_detector)}
    for want in settings.detectors:
        _same(f"detector {want['name']}", have.get(want["name"]), want["sha256"],
              "install the package version that ships the one it was made with")
    if settings.parser == "mesh":
        return model_path, None
    if parser_weights is None:
        raise PredictError(f"the model was trained on {settings.parser} parsing maps (weights sha256 "
                           f"{(settings.parser_weights_sha256 or '?')[:12]}...); pass those weights with --parser-weights PATH")
    _same(f"--parser-weights {parser_weights}", parsing.weights_sha256(parser_weights),
          settings.parser_weights_sha256, f"pass the {settings.parser} weights it was made with")
    return model_path, Path(parser_weights)


def _same(what: str, have: str | None, want: str | None, remedy: str) -> None:
    """Refuse, in one line, a model file whose sha256 is not the one the training store recorded."""
    if want and have != want:
        raise PredictError(f"{what} (sha256 {str(have)[:12]}...) is not what the training store was made with "
                           f"({want[:12]}...); {remedy}")


def extract_config(settings, frames: int, parser_weights: Path | None, max_pixels: int | None = None):
    """fineprep's ExtractConfig with every setting that shaped the training store; `frames` is what the
    model reads (the centres of a store's segments are the frames a direct extract of that many stores)."""
    from fineprep.extract.config import ExtractConfig

    return ExtractConfig(frames=frames, size=settings.size, margin=settings.margin, smooth_sigma=settings.smooth_sigma,
                         parser=settings.parser, parser_weights=str(parser_weights) if parser_weights else None,
                         landmark_mode=settings.landmark_mode, crop_frame_sources=settings.crop_frame_sources,
                         face=settings.face, min_face=settings.min_face, cut_change=settings.cut_change,
                         min_found_ratio=settings.min_found_ratio, min_landmark_score=settings.min_landmark_score,
                         second_detector=settings.second_detector,
                         **({"max_pixels": int(max_pixels)} if max_pixels else {}))


def extract_videos(paths: list[Path], settings, frames: int, landmarker: Path | None = None,
                   parser_weights: Path | None = None, max_pixels: int | None = None):
    """Run the pipeline's per-clip extraction on each file (video, or a folder of frames) in this process,
    with `settings` (`fineschema.ExtractSettings`, the training store's) and `frames` per clip.

    The trainer's only use of `fineprep`: a new video has no store, and a model must see exactly the face
    crops, landmarks and parsing that `fineprep extract` stored for training, so the pipeline's own code
    makes them (a copy would drift). It is imported here, lazily, so the trainer installs and trains
    without the pipeline; when `fineprep` (the `pipeline` extra: mediapipe, OpenCV) is not installed,
    `PipelineMissing` says how to install it, and nothing else in `finetrain` needs it.

    Returns one `fineprep.extract.clip.ClipResult` per path, in order; failures come back with a status.
    """
    try:
        from fineprep.entries import ClipEntry
        from fineprep.extract import faces
        from fineprep.extract.clip import extract_clip
        from fineprep.extract.parsing import get_parser
    except ImportError as exc:
        raise PipelineMissing(
            f"predicting from video files needs the pipeline extra ({exc.name} is missing): {PIPELINE_HINT}"
        ) from None
    from rich.console import Console
    from rich.progress import Progress

    model_path, weights = _checked_models(settings, landmarker, parser_weights)
    config = extract_config(settings, frames, weights, max_pixels)
    models = faces.get_models(model_path)
    parser = get_parser(config.parser, config.parser_weights)
    results = []
    with models.tracker(config.landmark_mode) as tracker, Progress(console=Console(stderr=True), transient=True,
                                                                    disable=len(paths) < 2) as bar:
        task = bar.add_task("extracting", total=len(paths))
        for path in paths:
            path = Path(path).resolve()
            media = "frames" if path.is_dir() else "video"
            entry = ClipEntry(clip_id=path.name, dataset="folder", source_path=path.name, media=media)
            results.append(extract_clip(entry, path.parent, config, models, tracker, parser))
            bar.advance(task)
    return results


def predict_videos(run: str | Path, paths: list[Path], top_k: int = 3, which: str = BEST,
                   device: str = "cpu", landmarker: Path | None = None, fold: int | None = None,
                   parser_weights: Path | None = None, max_pixels: int | None = None) -> list[VideoResult]:
    """Top-k classes with probabilities for each video; a file that fails is reported, not fatal.
    For a `--fold all` run the model of `fold` is used (the lowest fold by default). Each video is
    extracted with the training store's settings (`extraction_settings`)."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise PredictError(f"no such file: {', '.join(missing)}")
    run = pick_model_run(run, fold)
    model, cfg = load_model(run, which=which, device=device)
    frames = model_frames(checkpoint_dir(run, which))
    settings = extraction_settings(run, which)
    results = extract_videos(list(paths), settings, frames, landmarker, parser_weights, max_pixels)
    random = cfg.model.pretrained is None
    out: list[VideoResult] = [VideoResult(str(p), r.status, r.error, random_weights=random)
                              for p, r in zip(paths, results, strict=True)]
    ok = [i for i, r in enumerate(results) if r.arrays is not None]
    if ok:
        arrays = {k: np.stack([results[i].arrays[k] for i in ok]) for k in results[ok[0]].arrays}
        probs = classify_arrays(model, cfg, arrays, [str(paths[i]) for i in ok],
                                frame_indices=[results[i].indices for i in ok])
        for row, i in enumerate(ok):
            order = np.argsort(-probs[row], kind="stable")[:top_k]
            out[i].top = [(model.labels[j], float(probs[row, j])) for j in order]
            out[i].face_found_ratio = results[i].face_found_ratio
    return out


def results_json(results: list[VideoResult]) -> str:
    return json.dumps([r.to_dict() for r in results], indent=1)
