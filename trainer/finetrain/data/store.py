"""Reading a fineprep store for training: the clip table, descriptions, and a torch Dataset.

`StoreInfo.open` validates the store against the contract (`fineschema.check_store`) and reads the
manifest once: every stored, labelled clip (ok, few_faces and no_face alike: the protocols score every
listed clip; frames without a measured face carry no overlay, dots or blendshape values), and, for the
counts a run reports, the listed clips that have no arrays (missing, corrupt, ...) with their status. `StoreDataset` opens the Zarr arrays lazily in each DataLoader worker (a Zarr handle
is never pickled), picks the clip's frames (`frame_positions`: one per segment, random in training),
applies one random crop, flip and colour jitter to its frames, parsing map and landmarks alike, and
renders the parsing overlay and landmark dots. Items carry uint8 images and their jitter factors;
`transforms.finalize` makes them float on the training device. Augmentation randomness comes from
(seed, epoch, clip), never from global state, so results do not depend on the number of workers or
processes and a resumed run sees the same data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from fineschema import (
    ExtractSettings,
    StoreError,
    check_store,
    choose_descriptions,
    description_counts,
    layout,
    read_manifest,
    tables,
)
from fineschema.labels import LABEL_SETS

from .chunks import ChunkReader
from .render import landmark_dots, parsing_overlay, parsing_palette
from .transforms import VISUAL_STREAMS


@dataclass
class StoreInfo:
    """What the trainer needs from a store: its attributes, its stored labelled clips (the clip table) and
    the listed clips without arrays (`unscored`: status and folds, for the protocol counts)."""

    root: Path
    attrs: dict
    labels: tuple[str, ...]
    clip_ids: list[str]
    store_index: np.ndarray
    label_index: np.ndarray
    train_folds: list[list[int]]
    test_folds: list[list[int]]
    # (clips, stored frames) bool: the stored frame is a source frame not stored just before it; False on
    # the repeats extract pads a clip shorter than its stored frame count with (`frame_positions`)
    distinct: np.ndarray
    descriptions: dict[str, str] = field(default_factory=dict)
    # descriptions written by a random-weight model (rows marked `random_weights`): meaningless text,
    # kept apart so training never uses them unless asked to (data.random_descriptions=true)
    random_descriptions: dict[str, str] = field(default_factory=dict)
    frames_warned: bool = field(default=False, repr=False, compare=False)  # `frames_for` warns once per store
    face_status: list[str] = field(default_factory=list)  # per clip: ok, few_faces or no_face
    unscored: list[dict] = field(default_factory=list)    # {clip_id, status, train_folds, test_folds}
    description_counts: dict[str, int] = field(default_factory=dict)  # fineschema.description_counts

    @property
    def settings(self) -> ExtractSettings:
        """The extraction settings that made the store (`fineschema.ExtractSettings`)."""
        return ExtractSettings.from_attrs(self.attrs)

    @property
    def frames(self) -> int:
        return int(self.attrs["frames"])

    @property
    def size(self) -> int:
        return int(self.attrs["size"])

    def __len__(self) -> int:
        return len(self.clip_ids)

    @classmethod
    def for_config(cls, root: str | Path, cfg) -> StoreInfo:
        """`open` with the description set a training config names (`cfg.data.descriptions_*`)."""
        return cls.open(root, cfg.data.descriptions_model, cfg.data.descriptions_prompt)

    @classmethod
    def open(cls, root: str | Path, descriptions_model: str | None = None,
             descriptions_prompt: str | None = None) -> StoreInfo:
        """Read the store; descriptions come from one (model, prompt) set: the one present, or the one
        named (`data.descriptions_model` / `data.descriptions_prompt`). Several present and none named:
        `fineschema.DescriptionChoiceError`, a one-line message listing them."""
        import zarr

        root = Path(root)
        check_store(root)
        attrs = dict(zarr.open_group(str(root / layout.ARRAYS_DIR), mode="r").attrs)
        labels = LABEL_SETS[attrs["label_set"]]
        manifest = read_manifest(root, columns=["clip_id", "label", "train_folds", "test_folds", "store_index",
                                                "frame_indices", "status"])  # read once: scored and unscored
        scored = pc.and_(pc.and_(pc.is_in(manifest["status"], value_set=pa.array(tables.STORED_STATUSES)),
                                 pc.is_valid(manifest["label"])),
                         pc.fill_null(pc.greater_equal(manifest["store_index"], 0), False))
        rows = manifest.filter(scored).to_pydict()
        position = {name: i for i, name in enumerate(labels)}
        unknown = sorted({lab for lab in rows["label"] if lab not in position})
        if unknown:
            raise StoreError(
                f"store {root}: labels {unknown} are not in its label set {attrs['label_set']!r} "
                f"({', '.join(labels)}); re-extract it, or fix the manifest's label column"
            )
        return cls(
            root=root,
            attrs=attrs,
            labels=tuple(labels),
            clip_ids=list(rows["clip_id"]),
            store_index=np.asarray(rows["store_index"], dtype=np.int64),
            label_index=np.asarray([position[lab] for lab in rows["label"]], dtype=np.int64),
            train_folds=[list(f or []) for f in rows["train_folds"]],
            test_folds=[list(f or []) for f in rows["test_folds"]],
            distinct=distinct_frames(rows["frame_indices"], int(attrs["frames"])),
            descriptions=read_descriptions(root, descriptions_model, descriptions_prompt, random_weights=False),
            random_descriptions=read_descriptions(root, descriptions_model, descriptions_prompt,
                                                  random_weights=True),
            face_status=list(rows["status"]),
            unscored=unscored_clips(manifest.filter(pc.invert(scored))),
            description_counts=description_counts(root, model=descriptions_model, prompt=descriptions_prompt),
        )


def unscored_clips(rest) -> list[dict]:
    """The manifest rows left out of the clip table (no arrays: missing, corrupt, error, ...; or no label)
    that some fold lists, each with its status (`no_label` for a stored clip without one)."""
    out = []
    for row in rest.select(["clip_id", "status", "train_folds", "test_folds"]).to_pylist():
        if not (row["train_folds"] or row["test_folds"]):
            continue
        status = row["status"] if row["status"] not in tables.STORED_STATUSES else "no_label"
        out.append({**row, "status": status, "train_folds": list(row["train_folds"] or []),
                    "test_folds": list(row["test_folds"] or [])})
    return out


def read_descriptions(root: str | Path, model: str | None = None, prompt: str | None = None,
                      random_weights: bool = False) -> dict[str, str]:
    """clip id -> refined description of one (model, prompt) set (`fineschema.choose_descriptions`).

    `random_weights` picks the rows a random-weight model wrote (True) or the others (False)."""
    rows, _ = choose_descriptions(root, model=model, prompt=prompt, random_weights=random_weights,
                                  keys=("data.descriptions_model", "data.descriptions_prompt"))
    texts = {clip: (row["refined_text"] or "").strip() for clip, row in rows.items()}
    return {clip: text for clip, text in texts.items() if text}


@lru_cache(maxsize=1)
def mirrored_blendshapes() -> np.ndarray:
    """Index that swaps every ...Left blendshape coefficient with its ...Right partner: what a horizontal
    flip of the face does to them (mediapipe names sides from the subject's point of view)."""
    names = layout.BLENDSHAPE_NAMES
    where = {n: i for i, n in enumerate(names)}
    index = np.arange(len(names))
    for i, name in enumerate(names):
        for side, other in (("Left", "Right"), ("Right", "Left")):
            if name.endswith(side):
                index[i] = where[name[: -len(side)] + other]
    index.flags.writeable = False
    return index


def distinct_frames(frame_indices: list, frames: int) -> np.ndarray:
    """(clips, frames) bool from the manifest's source index of each stored frame: True where a stored
    frame differs from the one before it. A clip without usable indices counts all its frames distinct."""
    out = np.ones((len(frame_indices), frames), dtype=bool)
    for i, source in enumerate(frame_indices):
        if source is not None and len(source) == frames:
            source = np.asarray(source)
            out[i, 1:] = source[1:] != source[:-1]
    return out


def frame_positions(total: int, wanted: int, rng: np.random.Generator | None,
                    distinct: np.ndarray | None = None) -> np.ndarray:
    """Which `wanted` of a clip's `total` stored frames to read, in time order.

    A store holding `wanted` frames or fewer gives all of them. Otherwise the clip's distinct stored
    frames (`distinct`, their positions; default all) are cut into `wanted` equal segments and one frame
    is taken from each: a random one in training (`rng`), the centre one otherwise. That is the public
    DFER loaders' sampling (TSN segments), over the frames the store holds; with an odd multiple of
    `wanted` stored (48 for 16) the centres are the frames a `wanted`-frame extract stores, and every
    segment holds the same number of frames (with a ratio that is no whole number, neighbouring
    segments can draw the same frame). A clip with fewer distinct frames than `wanted` (shorter than
    that in its source) repeats its last one, as the public loaders pad. The draw is `wanted` uniform
    numbers from `rng` whatever the clip, so it depends only on (seed, epoch, clip).
    """
    if wanted >= total:
        return np.arange(total)
    places = np.arange(total) if distinct is None else np.asarray(distinct, dtype=np.int64)
    draws = rng.random(wanted) if rng is not None else None
    n = len(places)
    if n <= wanted:
        return places[np.minimum(np.arange(wanted), n - 1)]
    lo, hi = np.linspace(0, n, wanted + 1)[:-1], np.linspace(0, n, wanted + 1)[1:]
    at = (lo + hi) / 2 if draws is None else np.floor(lo + draws * (hi - lo))
    return places[at.astype(np.int64).clip(0, n - 1)]


def retain_freed_memory() -> None:
    """Keep freed heap memory in this process (glibc only), so each clip's buffers reuse the last one's.

    A clip allocates a few dozen MB of 1-10 MB buffers. glibc hands buffers of that size to fresh
    mmap()s and returns the top of the heap to the system as soon as a little of it is free, so every
    clip would page-fault its memory anew (costs in BENCHMARKS.md, "Loader, 2026-12-01"). A fixed mmap
    threshold of 32 MB (glibc's largest) and a trim threshold of 256 MB keep them on the heap.
    The settings are per process (DataLoader workers inherit them) and only make freed memory wait
    for reuse.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def resize_frames(frames: np.ndarray, x0: int, y0: int, side: int, size: int, flip: bool) -> torch.Tensor:
    """(T,S,S,3) uint8 -> the square crop at (x0, y0) of `side` px, resized to `size` and mirrored when
    `flip`, as a contiguous (T,3,size,size) uint8 tensor.

    torch resizes channels-last uint8 with its vectorised bilinear kernel (antialiased when
    shrinking), numpy moves the channels first and torch mirrors the contiguous result: each step
    with whichever of the two measured faster (BENCHMARKS.md, "Numbers behind the loader's choices")."""
    crop = frames[:, y0:y0 + side, x0:x0 + side]
    if side != size:
        hwc = torch.from_numpy(np.array(crop)).permute(0, 3, 1, 2)  # channels-last (T,3,side,side)
        crop = F.interpolate(hwc, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=side > size).permute(0, 2, 3, 1).numpy()
    out = np.empty((crop.shape[0], 3, size, size), dtype=np.uint8)
    np.copyto(out, crop.transpose(0, 3, 1, 2))
    out = torch.from_numpy(out)
    return out.flip(-1) if flip else out


def resize_classes(classes: np.ndarray, x0: int, y0: int, side: int, size: int, flip: bool) -> np.ndarray:
    """(T,S,S) class map -> the same crop, resize and flip as `resize_frames` by nearest neighbour,
    (T,size,size): a gather of rows, then of columns, at torch's own nearest-neighbour positions."""
    rows = _nearest_source(side, size) + y0
    cols = _nearest_source(side, size) + x0
    return np.take(np.take(classes, rows, axis=1), cols[::-1] if flip else cols, axis=2)


@lru_cache(maxsize=64)
def _nearest_source(side: int, size: int) -> np.ndarray:
    """Source index of each of `size` outputs when torch's "nearest" mode resizes `side` pixels."""
    ramp = torch.arange(side, dtype=torch.float32).view(1, 1, side, 1)
    index = F.interpolate(ramp, size=(size, 1), mode="nearest").view(-1).numpy().astype(np.intp)
    index.flags.writeable = False
    return index


def arrays_for(streams) -> tuple[str, ...]:
    """The store arrays a set of streams reads: frames for any image stream (the overlay and the dots
    are drawn on them), face_found beside the parsing, the landmarks and the blendshapes (frames where
    the landmarker found no face carry no overlay, no dots and no blendshape values)."""
    wanted = {"frames": any(s in streams for s in VISUAL_STREAMS), "parsing": "parsing" in streams,
              "landmarks": "landmarks" in streams,
              "face_found": any(s in streams for s in ("parsing", "landmarks", "blendshapes")),
              "blendshapes": "blendshapes" in streams}
    return tuple(name for name, read in wanted.items() if read)


def frames_for(info: StoreInfo, wanted: int | None) -> int:
    """Frames per clip a run reads: `wanted` (data.frames; None: all the store holds), at most what the
    store holds. Asking for more than the store holds warns once and uses all of them: the clips stay
    valid, they just carry fewer frames and no temporal augmentation."""
    if wanted is None or int(wanted) <= info.frames:
        return int(wanted or info.frames)
    if not info.frames_warned:
        info.frames_warned = True
        warnings.warn(f"store {info.root} holds {info.frames} frames per clip, fewer than data.frames={wanted}: "
                      f"clips use all {info.frames} (extract with --frames {3 * int(wanted)} for temporal "
                      f"augmentation)", StoreFramesWarning, stacklevel=3)
    return info.frames


class StoreFramesWarning(UserWarning):
    """data.frames asks for more frames than the store holds (the run uses them all)."""


class StoreDataset(torch.utils.data.Dataset):
    """Clips of a store as model inputs; `rows` index the StoreInfo clip table."""

    def __init__(self, info: StoreInfo, rows, image_size: int, frames: int | None = None, train: bool = False,
                 data_cfg=None, streams=VISUAL_STREAMS + ("blendshapes",), tokenizer=None, seed: int = 0):
        from ..config import DataConfig

        self.info = info
        self.rows = np.asarray(rows, dtype=np.int64)
        self.image_size = int(image_size)
        self.frames = frames_for(info, frames)
        self.train = train
        self.cfg = data_cfg or DataConfig()
        self.streams = tuple(streams)
        self.tokenizer = tokenizer if "description" in self.streams else None
        self._arrays_needed = arrays_for(self.streams)
        self.seed = seed
        self.epoch = 0
        self._group = None

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_group"] = None  # each worker opens its own handle
        return state

    def _readers(self) -> dict[str, ChunkReader]:
        if self._group is None:
            import zarr

            retain_freed_memory()
            group = zarr.open_group(str(self.info.root / layout.ARRAYS_DIR), mode="r")
            self._group = {spec.name: ChunkReader(group[spec.name]) for spec in layout.ARRAYS}
        return self._group

    def labels(self) -> np.ndarray:
        return self.info.label_index[self.rows]

    def _read(self, si: int, pick: np.ndarray, names) -> dict[str, np.ndarray]:
        """The `pick`ed frames of clip `si` of each array in `names` (views when all frames are picked)."""
        readers = self._readers()
        whole = len(pick) == self.info.frames and bool((pick == np.arange(len(pick))).all())
        out = {}
        for name in names:
            clip = readers[name].read(si)
            out[name] = clip if whole else clip[pick]
        return out

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        si = int(self.info.store_index[row])
        rng = np.random.default_rng([self.seed, self.epoch, row]) if self.train else None
        pick = frame_positions(self.info.frames, self.frames, rng, np.flatnonzero(self.info.distinct[row]))
        need_pixels = "frames" in self._arrays_needed
        clip = self._read(si, pick, self._arrays_needed)
        item = {"label": int(self.info.label_index[row]), "row": row}
        flip = False
        found = np.array(clip["face_found"], dtype=bool) if "face_found" in clip else None
        if need_pixels:
            s = clip["frames"].shape[1]
            x0, y0, side, flip = self._crop(s, rng)
            frames = resize_frames(clip["frames"], x0, y0, side, self.image_size, flip)
            if "frames" in self.streams:
                item["frames"] = frames
            if "parsing" in self.streams:
                classes = resize_classes(clip["parsing"], x0, y0, side, self.image_size, flip)
                if not found.all():
                    classes[~found] = 0  # background, never painted: no overlay where nothing was measured
                parsing = torch.from_numpy(classes)
                palette = parsing_palette(tuple(self.info.attrs.get("parsing_classes", layout.PARSING_CLASSES)), flip)
                item["parsing"] = parsing_overlay(frames, parsing, self.cfg.overlay_alpha, palette)
            if "landmarks" in self.streams:
                pts = np.asarray(clip["landmarks"][..., :2], dtype=np.float32) * s
                pts = (pts - np.array([x0, y0], dtype=np.float32)) / side
                if flip:
                    pts[..., 0] = 1.0 - pts[..., 0]
                valid = torch.from_numpy(found)
                item["landmarks"] = landmark_dots(frames, torch.from_numpy(pts), valid, self.cfg.landmark_radius)
            strength = self.cfg.jitter if rng is not None else 0.0
            factors = rng.uniform(1 - strength, 1 + strength, size=3) if strength > 0 else np.ones(3)
            item["jitter"] = torch.tensor(factors, dtype=torch.float32)
        if "blendshapes" in self.streams:
            shapes = np.array(clip["blendshapes"], dtype=np.float32)
            item["blendshapes"] = torch.from_numpy(shapes[..., mirrored_blendshapes()] if flip else shapes)
            item["blendshapes_mask"] = torch.from_numpy(found)  # false: no face found, the zeros are no values
        if self.tokenizer is not None:
            text = self.info.descriptions.get(self.info.clip_ids[row], "")
            words = text.split()[: self.cfg.description_words]
            item["description"] = self.tokenizer([" ".join(words)])[0]
            item["has_description"] = bool(words)
        return item

    def _crop(self, s: int, rng):
        if rng is None:
            return 0, 0, s, False
        lo, hi = self.cfg.crop_scale
        side = int(round(s * float(np.sqrt(rng.uniform(lo, hi)))))
        side = min(max(side, 1), s)
        x0 = int(rng.integers(0, s - side + 1))
        y0 = int(rng.integers(0, s - side + 1))
        flip = bool(self.cfg.flip and rng.random() < 0.5)
        return x0, y0, side, flip


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Batches of one global, seeded order, cut into per-process slices.

    Step k of the global order is `order[k*B*W : (k+1)*B*W]`; process r takes its r-th slice of B.
    So W processes at batch B see exactly the samples one process at batch B*W sees, which is what
    makes a DDP run comparable with a single-process run. `start` skips batches already consumed
    (exact resume in the middle of an epoch).
    """

    def __init__(self, n: int, batch_size: int, world: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True):
        self.n, self.batch_size, self.world, self.rank = n, batch_size, world, rank
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _global(self) -> int:
        return self.batch_size * self.world

    def __len__(self) -> int:
        g = self._global()
        full = self.n // g
        if self.drop_last and full > 0:
            return full
        return -(-self.n // g)

    def __iter__(self):
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        g = self._global()
        for k in range(self.start, len(self)):
            chunk = order[k * g:(k + 1) * g]
            mine = chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            if len(mine):
                yield mine.tolist()
